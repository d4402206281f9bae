"""CRC32C, the checksum GCS keeps of every object, as the base64 text its JSON API uses.

Callers reach these through the module (``checksums._crc32c_of(...)``), not by importing the names, so that a test
can replace one here and every upload and download sees it.
"""

from __future__ import annotations

import base64

import google_crc32c


def _crc32c_b64(checksum: google_crc32c.Checksum) -> str:
    return base64.b64encode(checksum.digest()).decode("ascii")


def _crc32c_of(data: bytes) -> str:
    return _crc32c_b64(google_crc32c.Checksum(data))


def _update_crc(checksum: google_crc32c.Checksum, data: bytes) -> None:
    """Add ``data`` to the running CRC32C of an upload (a seam the tests use to simulate a wrong checksum)."""
    checksum.update(data)
