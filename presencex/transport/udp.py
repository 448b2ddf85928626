"""The UDP listener: one task per socket, datagrams to the hub."""

from __future__ import annotations

import logging
import socket

import trio

from presencex.transport.hub import Hub
from presencex.transport.peer import Peer

log = logging.getLogger(__name__)

# The largest datagram there is; anything SIP sends fits.
MAX_DATAGRAM = 65535
# Datagrams handled per wake-up before other tasks get a turn: large enough
# to amortise the scheduler, small enough that actors are not starved and
# inboxes do not fill from one burst (they hold 256).
BURST = 64
# A burst of a few thousand requests must not be dropped by the kernel while
# the server is busy: ask for a large receive buffer (the kernel caps it).
SOCKET_BUFFER = 4 * 1024 * 1024


def open_udp_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
        try:
            sock.setsockopt(socket.SOL_SOCKET, option, SOCKET_BUFFER)
        except OSError:
            log.debug("could not enlarge UDP buffer %s", option)
    sock.bind((host, port))
    sock.setblocking(False)
    return sock


async def serve_udp(
    hub: Hub,
    host: str,
    port: int,
    *,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Listen on host:port; ``task_status.started`` gets the bound "udp:h:p"."""
    raw = open_udp_socket(host, port)
    bound_port = raw.getsockname()[1]
    local = f"udp:{host}:{bound_port}" if ":" not in host else f"udp:[{host}]:{bound_port}"
    hub.udp_sockets[local] = raw
    hub.listen_hosts[local] = (host, bound_port)
    task_status.started(local)
    # Read with the non-blocking socket directly and wait on trio only when
    # the kernel queue is empty: under load this drains a burst per wake-up
    # instead of paying a scheduler round trip per datagram.
    with raw:
        while True:
            await trio.lowlevel.wait_readable(raw)
            for _ in range(BURST):
                try:
                    data, address = raw.recvfrom(MAX_DATAGRAM)
                except BlockingIOError:
                    break
                except (ConnectionResetError, ConnectionRefusedError):
                    # ICMP port unreachable from an earlier send: the NOTIFY's
                    # Timer F reports it.
                    continue
                if not data.strip():
                    continue  # CRLF keep-alive (RFC 5626 §4.4.1)
                hub.on_bytes(data, Peer("udp", address[0], address[1], local))
            else:
                # A full burst: let actors and the store run before reading on.
                await trio.lowlevel.checkpoint()
