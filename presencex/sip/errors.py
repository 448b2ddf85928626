"""The one exception family of the sans-IO SIP core.

The transport turns a ``SipError`` into a response (RFC 3261 §8.2, §21):
``status`` and ``reason`` go on the status line, ``headers`` are added to it
(``Allow-Events`` on 489, ``Min-Expires`` on 423, ``Retry-After`` on 503).
The reason phrase says what is wrong ("Bad CSeq header"), because a peer's
log line is often all an operator has when a phone misbehaves.
"""

from __future__ import annotations


class SipError(Exception):
    """A SIP request cannot be handled as sent; answer it with ``status``."""

    def __init__(self, status: int, reason: str, headers: tuple[tuple[str, str], ...] = ()) -> None:
        super().__init__(status, reason)
        self.status = status
        self.reason = reason
        self.headers = headers

    def __str__(self) -> str:
        return f"{self.status} {self.reason}"

    def __repr__(self) -> str:
        return f"SipError({self.status!r}, {self.reason!r}, {self.headers!r})"
