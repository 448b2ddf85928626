"""TCP: a listener, one reader and one writer task per connection.

Incoming connections are registered by their remote address so NOTIFYs to a
watcher reuse the connection its SUBSCRIBE came on.  Outgoing connections
are opened on demand by the hub; messages queue while the connect runs.
"""

from __future__ import annotations

import logging

import trio

from presencex.sip.parse import StreamFramer
from presencex.transport.hub import Connection, Hub
from presencex.transport.peer import Peer

log = logging.getLogger(__name__)

READ_SIZE = 65536
# An idle client connection is closed after this long (SIP clients refresh
# well within an hour and reconnect when they need to).
IDLE_TIMEOUT = 3600.0
CONNECT_TIMEOUT = 5.0
FLUSH_TIMEOUT = 1.0
FAULT_GRACE = 1.0
# A send that cannot progress this long (peer not reading, window full)
# ends the connection; NOTIFY transactions over it then fail and retry.
SEND_TIMEOUT = 10.0


async def serve_tcp(
    hub: Hub,
    host: str,
    port: int,
    *,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    listeners = await trio.open_tcp_listeners(port, host=host)
    bound_port = listeners[0].socket.getsockname()[1]
    local = f"tcp:{host}:{bound_port}" if ":" not in host else f"tcp:[{host}]:{bound_port}"
    hub.listen_hosts[local] = (host, bound_port)
    task_status.started(local)

    async def accepted(stream: trio.SocketStream) -> None:
        try:
            address = stream.socket.getpeername()
        except OSError:
            # Reset between accept and here: nothing to serve.
            await stream.aclose()
            return
        conn = Connection(hub.new_connection_id(), (address[0], address[1]), local)
        hub.register(conn)
        await _serve_connection(hub, conn, stream)

    await trio.serve_listeners(accepted, listeners)


async def connect_and_serve(hub: Hub, conn: Connection) -> None:
    try:
        with trio.fail_after(CONNECT_TIMEOUT):
            stream = await trio.open_tcp_stream(conn.remote[0], conn.remote[1])
    except (OSError, trio.TooSlowError) as exc:
        log.info("TCP connect to %s:%d failed: %s", *conn.remote, exc)
        hub.unregister(conn)
        return
    await _serve_connection(hub, conn, stream)


async def _serve_connection(hub: Hub, conn: Connection, stream: trio.SocketStream) -> None:
    try:
        async with stream, trio.open_nursery() as nursery:
            conn.cancel_scope = nursery.cancel_scope
            nursery.start_soon(_write, conn, stream)
            if await _read(hub, conn, stream):
                # Requests framed before the fault are still being served:
                # their answers get a moment to use this connection.
                await trio.sleep(FAULT_GRACE)
            # What is queued (the answer to the last request, or to a stream
            # that could not be framed) still goes out, for a bounded time.
            conn.closed = True
            conn.send_channel.close()
            nursery.cancel_scope.deadline = trio.current_time() + FLUSH_TIMEOUT
    except* (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as group:
        # except*: trio reports what the reader or writer raised inside the
        # nursery as an ExceptionGroup, and a plain except would let a peer's
        # reset escape to the listener and stop the whole server.
        log.debug("TCP connection %s:%d ended: %s", *conn.remote, group.exceptions[0])
    finally:
        hub.unregister(conn)


async def _read(hub: Hub, conn: Connection, stream: trio.SocketStream) -> bool:
    """Read until the peer is done (False) or the stream cannot be framed (True)."""
    framer = StreamFramer(hub.max_message_size)
    peer = Peer("tcp", conn.remote[0], conn.remote[1], conn.local, conn.id)
    while True:
        with trio.move_on_after(IDLE_TIMEOUT) as idle:
            data = await stream.receive_some(READ_SIZE)
        if idle.cancelled_caught or not data:
            return False
        messages = framer.feed(data)
        if framer.take_pings():
            # RFC 5626 §3.5.1: a CRLF CRLF ping is answered with a CRLF pong.
            conn.send_nowait(b"\r\n")
        for message in messages:
            hub.on_bytes(message, peer)
        if framer.failure is not None:
            # A stream that cannot be framed cannot be resynchronised: the
            # message gets its 400/513 if it says where to, then the
            # connection is closed (RFC 3261 §18.3).
            hub.answer_malformed(framer.failed_head, peer, framer.failure)
            log.info("closing TCP connection from %s: %s", peer, framer.failure.reason)
            return True


async def _write(conn: Connection, stream: trio.SocketStream) -> None:
    async for data in conn.receive_channel:
        with trio.move_on_after(SEND_TIMEOUT) as stalled:
            await stream.send_all(data)
        if stalled.cancelled_caught:
            # A peer that stops reading but keeps its side alive (pings keep
            # the reader busy) would hold NOTIFYs here until the queue fills.
            log.info("TCP connection to %s:%d not reading: closed", *conn.remote)
            conn.close()
            return
