"""Where a request came from and where an answer goes: plain data.

A ``Peer`` is how the transport layer names the other end of a message, so
presence code can remember it (for TCP connection reuse) without holding a
socket.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Peer:
    transport: str  # "udp" | "tcp"
    host: str
    port: int
    local: str  # the listening socket it arrived on, "udp:127.0.0.1:5060"
    connection: int = 0  # TCP connection id, 0 for UDP

    @property
    def reliable(self) -> bool:
        return self.transport != "udp"

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.transport}:{host}:{self.port}"


def parse_peer(text: str, local: str = "") -> Peer | None:
    """Read back ``str(peer)``; None when the text is not of that form."""
    transport, _, rest = text.partition(":")
    host, _, port = rest.rpartition(":")
    if transport not in ("udp", "tcp") or not port.isdigit() or not host:
        return None
    return Peer(transport, host.strip("[]"), int(port), local)
