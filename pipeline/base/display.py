"""Text for people: credentials taken out of URLs, and names from archives and servers made safe for a terminal.

Two kinds of text reach a terminal that jsarchive did not write itself:

- **URLs with credentials.** ``-s nats://user:pw@host``, ``$NATS_URL``, a natscli context's ``url``, a token URL
  (``tls://TOKEN@host``) or ``--metrics-push https://user:pw@gateway``. Their secrets are replaced by ``***``
  wherever they would be printed. The user name is kept, as nats.go's ``ConnectedUrlRedacted`` keeps it (its
  ``url.Redacted`` replaces only the password); a URL with a user but no password is a NATS token, so all of it
  is hidden (``nats://***@host``), which nats.go does not do.
- **Names from an archive or a server.** Stream, consumer and server names, subjects, server versions and the
  error text built from them come from manifests anyone with write access to the bucket can craft, and from
  servers. nats-server 2.15.1 accepts ESC, BEL, DEL, C1 and bidi controls in stream names and subjects (it
  refuses NUL and path separators; nats-py refuses whitespace, newlines included, in any subject, so also in
  ``$JS.API.STREAM.CREATE.<name>``), and a planted manifest can hold anything. Every character
  Python does not call printable (controls, format characters such as bidi overrides, line separators, spaces
  other than U+0020) is shown as a Python-style escape (``\\x1b``, ``\\n``, ``\\u202e``), so a name can neither
  rewrite the terminal nor spoof a line of output. Backslashes are left alone: a printable name looks exactly as
  it was typed, and ``\\n`` in the output is a newline in the name or a backslash and an ``n`` (the JSON output
  tells them apart).

JSON output stays JSON and keeps the exact names: ``--json`` is ASCII-only (``json.dumps``'s ``ensure_ascii``), so
every control character in it is already a ``\\uXXXX`` escape; ``cat``'s JSON lines keep UTF-8 text and go through
:func:`json_safe`, which writes the non-printable characters ``json.dumps`` leaves raw as the same escapes.
"""

from __future__ import annotations

import re

REDACTED = "***"

# scheme://userinfo@ in running text. The userinfo runs to the last "@" before whitespace, "/" or ",", so a
# password with a raw "@" (nats-py splits at the last one) is hidden whole, and a server list splits at commas.
_URL_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)(?P<userinfo>[^\s/,]*)@")
# user:password@host without a scheme (nats-py takes "-s alice:pw@host"), standing as a word of its own.
_BARE_USERINFO = re.compile(r"""(?<![^\s,'"(=])(?P<user>[^\s:/@,'"]*):(?P<secret>[^\s/,'"]+)@(?=[^\s@])""")

_SHORT_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _hide(userinfo: str) -> str:
    user, sep, _secret = userinfo.partition(":")
    return f"{user}:{REDACTED}" if sep else REDACTED


def redact_url(url: str) -> str:
    """One server URL (with or without a scheme) without its password or token: ``nats://alice:***@host:4222``."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    userinfo, at, host = rest.rpartition("@")
    if not at:
        return url
    return f"{scheme}{sep}{_hide(userinfo)}@{host}"


def redact_servers(servers: str | None) -> str:
    """A comma-separated server list (``-s``, ``$NATS_URL``, a context's ``url``) with every URL redacted."""
    if not servers:
        return ""
    return ",".join(redact_url(s.strip()) for s in servers.split(","))


def redact_text(text: str) -> str:
    """Any text with the credentials of every ``scheme://user:pw@``, ``scheme://token@`` and bare ``user:pw@host``
    in it replaced. (A bare ``token@host`` cannot be told from an e-mail address and is left alone.)"""
    if "@" not in text:
        return text
    text = _URL_USERINFO.sub(lambda m: f"{m['scheme']}{_hide(m['userinfo'])}@", text)
    return _BARE_USERINFO.sub(lambda m: f"{m['user']}:{REDACTED}@", text)


def _escape_char(ch: str) -> str:
    short = _SHORT_ESCAPES.get(ch)
    if short:
        return short
    cp = ord(ch)
    if cp < 0x100:
        return f"\\x{cp:02x}"
    if cp < 0x10000:
        return f"\\u{cp:04x}"
    return f"\\U{cp:08x}"


def escape_control(text: str) -> str:
    """``text`` with every non-printable character (U+0020 excepted) written as a visible escape."""
    if text.isprintable():
        return text
    return "".join(ch if ch == " " or ch.isprintable() else _escape_char(ch) for ch in text)


def safe(text: object) -> str:
    """What the CLI prints for a line or a table cell: credentials redacted, control characters escaped."""
    return escape_control(redact_text(str(text)))


def _json_escape(ch: str) -> str:
    cp = ord(ch)
    if cp < 0x10000:
        return f"\\u{cp:04x}"
    cp -= 0x10000  # JSON has no astral escape: a UTF-16 surrogate pair
    return f"\\u{0xD800 + (cp >> 10):04x}\\u{0xDC00 + (cp & 0x3FF):04x}"


def json_safe(document: str) -> str:
    """A JSON document from ``json.dumps`` with DEL, C1 controls and the other non-printable characters that
    ``json.dumps`` leaves raw written as ``\\uXXXX``: the same JSON value, nothing a terminal acts on.

    Only for ``json.dumps`` output: it escapes C0 controls and quotes itself, and never writes these characters
    outside a string, so replacing them cannot change the value. A raw newline is indentation (``indent=2``),
    never part of a string, and stays.
    """
    if document.isprintable():
        return document
    return "".join(ch if ch in " \n" or ch.isprintable() else _json_escape(ch) for ch in document)
