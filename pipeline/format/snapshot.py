"""The two snapshot formats nats-server produces, and how to tell them apart from the first bytes.

V1 (servers <= 2.14) is an S2-framed tar of the file-store directory; V2 (>= 2.15) an S2-framed NATSARC1 message
archive (protocol reference §3).
"""

from __future__ import annotations

V1 = "V1"  # S2-framed tar of the file-store directory (servers <= 2.14)
V2 = "V2"  # S2-framed NATSARC1 message archive (servers >= 2.15)
FIRST_V2_VERSION = (2, 15, 0)


def format_for_version(version: tuple[int, int, int]) -> str:
    return V2 if version >= FIRST_V2_VERSION else V1


def detect_snapshot_format(data: bytes) -> str | None:
    """V1 or V2 from the first bytes of an S2/Snappy framed snapshot, or None if more bytes are needed.

    The V2 archive starts with the magic ``NATSARC1``; S2 always starts a block with a literal, so reading the
    first literal of the first data chunk is enough (no decompressor needed).
    """
    pos = 0
    while pos + 4 <= len(data):
        ctype = data[pos]
        clen = int.from_bytes(data[pos + 1 : pos + 4], "little")
        body = data[pos + 4 : pos + 4 + clen]
        if ctype == 0x01:  # uncompressed chunk: 4-byte CRC, then data
            payload = body[4:]
        elif ctype == 0x00:  # compressed chunk: CRC, uvarint decoded length, then S2 tags
            block = body[4:]
            i = 0
            while i < len(block) and block[i] & 0x80:
                i += 1
            i += 1
            if i >= len(block):
                return None
            tag = block[i]
            if tag & 0x03 != 0:
                return V1  # starts with a copy: cannot be the NATSARC1 magic
            n = tag >> 2
            i += 1
            if n >= 60:
                extra = n - 59
                n = int.from_bytes(block[i : i + extra], "little")
                i += extra
            payload = block[i : i + n + 1]
        elif ctype == 0xFF or 0x80 <= ctype <= 0xFE:  # stream identifier, padding, skippable
            if len(body) < clen:
                return None
            pos += 4 + clen
            continue
        else:
            return V1
        if len(payload) < 8:
            return None
        return V2 if payload[:8] == b"NATSARC1" else V1
    return None
