"""The control socket: JSON-RPC 2.0 over a UNIX stream socket, one request per line.

Facts:
- The socket file is created with mode 0600 and peers of other users are
  refused (SO_PEERCRED): the control socket can change who sees presence.
- A stale socket file (nobody answers on it) is replaced; a live one means
  another server runs there, and start-up stops rather than steal it; a path
  that is not a socket is never deleted.
- Commands reach presentity actors as messages (``Refresh``, ``Query``);
  nothing here touches actor state.  Replies come back on a channel carried
  in the message, with a bounded wait.
- ``refreshWatchers(pres_uri, event, type)``: Kamailio's meaning of type:
  0 authorization rules changed, 1 published state changed in the database,
  2 the pidf-manipulation document changed.  The seed spells the command
  ``refreshWatchers``; ``presence.refreshWatchers`` is accepted too.
- A client gets ``IDLE_TIMEOUT`` seconds for each command line and
  ``SEND_TIMEOUT`` for each reply, and at most ``MAX_CONNECTIONS`` are served
  at once; past that a new one gets an error line and is closed.  A client
  that goes away mid-command only ends its own connection.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import stat
import struct
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, Literal

import trio

from presencex.presence.messages import Message, Query, Refresh
from presencex.sip.uri import parse_uri

log = logging.getLogger(__name__)

# One command line; a JSON-RPC request is a few hundred bytes.
MAX_LINE = 65536
# How long a command waits for an actor's answer before reporting a timeout.
REPLY_TIMEOUT = 5.0
# How long a client may take to send one complete command line.  ``ctl``
# sends its line at once; a client silent for this long is stuck or hostile
# and would otherwise hold its connection (and a slot) forever.
IDLE_TIMEOUT = 30.0
# How long a reply may wait for the client to read it, for the same reason.
SEND_TIMEOUT = 10.0
# Connections served at once.  ``ctl`` opens one per command and closes it,
# so a handful is plenty; the cap keeps a flood of connections from eating
# file descriptors the SIP transports need.
MAX_CONNECTIONS = 32

Handler = Callable[[list[Any]], Awaitable[object]]


class RpcError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class ControlServer:
    def __init__(
        self,
        path: str,
        *,
        deliver: Callable[[str, Message], None],
        presentities: Callable[[], list[str]],
        stats: Callable[[], dict[str, object]],
        cleanup: Callable[[], Awaitable[object]],
    ) -> None:
        self.path = path
        self.deliver = deliver
        self.presentities = presentities
        self.stats = stats
        self.cleanup = cleanup
        self.methods: dict[str, Handler] = {
            "refreshWatchers": self._refresh_watchers,
            "updateWatchers": self._update_watchers,
            "presentity_list": self._presentity_list,
            "subscriptions": partial(self._query, "subscriptions"),
            "publications": partial(self._query, "publications"),
            "cleanup": self._cleanup,
            "stats": self._stats,
        }

    async def serve(self, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
        sock = bind_unix_socket(self.path)
        listener = trio.SocketListener(trio.socket.from_stdlib_socket(sock))
        limiter = trio.CapacityLimiter(MAX_CONNECTIONS)
        task_status.started(self.path)
        try:
            await trio.serve_listeners(partial(self._connection, limiter), [listener])
        finally:
            with contextlib.suppress(OSError):
                os.unlink(self.path)

    async def _connection(self, limiter: trio.CapacityLimiter, stream: trio.SocketStream) -> None:
        async with stream:
            try:
                limiter.acquire_nowait()
            except trio.WouldBlock:
                log.warning("control: %d connections open, refusing another", MAX_CONNECTIONS)
                with contextlib.suppress(trio.BrokenResourceError):
                    await _send(stream, _error_line(None, -32000, "too many control connections"))
                return
            try:
                await self._session(stream)
            except trio.BrokenResourceError:
                # The client went away (EPIPE, ECONNRESET).  serve_listeners
                # lets a handler's exception crash the server, so it ends here.
                log.debug("control client disconnected")
            finally:
                limiter.release()

    async def _session(self, stream: trio.SocketStream) -> None:
        if not _peer_allowed(stream.socket):
            await _send(stream, _error_line(None, -32001, "permission denied"))
            return
        buffer = bytearray()
        while True:
            line: bytes | None = None
            try:
                with trio.move_on_after(IDLE_TIMEOUT) as idle:
                    line = await _receive_line(stream, buffer)
            except _LineTooLong:
                await _send(stream, _error_line(None, -32600, "request line too long"))
                return
            if idle.cancelled_caught:
                log.info("control client sent no command line within %s s; closing", IDLE_TIMEOUT)
                return
            if line is None:
                return
            if line.strip() and not await _send(stream, await self.dispatch(line)):
                return

    async def dispatch(self, line: bytes) -> bytes:
        try:
            request = json.loads(line)
        except ValueError:
            return _error_line(None, -32700, "parse error: not JSON")
        if not isinstance(request, dict) or not isinstance(request.get("method"), str):
            return _error_line(None, -32600, "invalid request: needs a 'method' string")
        rpc_id = request.get("id")
        method = request["method"].removeprefix("presence.")
        params = request.get("params", [])
        if isinstance(params, dict):
            params = list(params.values())
        if not isinstance(params, list):
            return _error_line(rpc_id, -32602, "params must be a list")
        handler = self.methods.get(method)
        if handler is None:
            known = ", ".join(sorted(self.methods))
            return _error_line(rpc_id, -32601, f"unknown method {method}; known: {known}")
        try:
            result = await handler(params)
        except RpcError as exc:
            return _error_line(rpc_id, exc.code, exc.message)
        except Exception as exc:
            log.exception("control command %s failed", method)
            return _error_line(rpc_id, -32603, f"internal error: {exc}")
        return (json.dumps({"jsonrpc": "2.0", "id": rpc_id, "result": result}) + "\n").encode()

    # -- methods ---------------------------------------------------------

    async def _ask(self, uri: str, make: Callable[[Callable[[Any], None]], Message]) -> object:
        send, receive = trio.open_memory_channel[object](1)
        try:
            self.deliver(uri, make(send.send_nowait))
        except trio.WouldBlock:
            raise RpcError(-32000, f"the actor of {uri} is overloaded; try again") from None
        with trio.move_on_after(REPLY_TIMEOUT):
            return await receive.receive()
        raise RpcError(-32000, f"no answer from the actor of {uri} within {REPLY_TIMEOUT} s")

    async def _refresh_watchers(self, params: list[Any]) -> object:
        if len(params) not in (2, 3):
            raise RpcError(-32602, "usage: refreshWatchers PRES_URI EVENT [TYPE 0|1|2]")
        uri = _aor(params[0])
        event = str(params[1])
        kind = _int(params[2]) if len(params) == 3 else 0
        if kind not in (0, 1, 2):
            raise RpcError(
                -32602, "TYPE must be 0 (rules), 1 (published state) or 2 (pidf-manipulation)"
            )
        return await self._ask(uri, lambda reply: Refresh(event, kind, reply))

    async def _update_watchers(self, params: list[Any]) -> object:
        """``updateWatchers PRES_URI EVENT``: refreshWatchers of type 0 (rules)."""
        if len(params) != 2:
            raise RpcError(-32602, "usage: updateWatchers PRES_URI EVENT")
        return await self._refresh_watchers([*params, 0])

    async def _presentity_list(self, params: list[Any]) -> object:
        return sorted(self.presentities())

    async def _query(
        self, what: Literal["subscriptions", "publications"], params: list[Any]
    ) -> object:
        """``subscriptions PRES_URI`` / ``publications PRES_URI``: the actor's list."""
        if len(params) != 1:
            raise RpcError(-32602, f"usage: {what} PRES_URI")
        uri = _aor(params[0])
        if uri not in self.presentities():
            return []  # no actor: asking would start one just to answer []
        return await self._ask(uri, lambda reply: Query(what, reply))

    async def _cleanup(self, params: list[Any]) -> object:
        return await self.cleanup()

    async def _stats(self, params: list[Any]) -> object:
        return self.stats()


class _LineTooLong(Exception):
    """A client sent more than MAX_LINE bytes without a newline."""


async def _receive_line(stream: trio.abc.ReceiveStream, buffer: bytearray) -> bytes | None:
    """The next line of ``stream`` without its newline, taken from the front of
    ``buffer`` (which keeps what follows it); None at the end of the stream."""
    while (end := buffer.find(b"\n")) < 0:
        if len(buffer) > MAX_LINE:
            raise _LineTooLong
        data = await stream.receive_some(MAX_LINE)
        if not data:
            return None
        buffer += data
    line = bytes(buffer[:end])
    del buffer[: end + 1]
    return line


async def _send(stream: trio.abc.SendStream, data: bytes) -> bool:
    """Send ``data``; False if the client did not take it within SEND_TIMEOUT."""
    with trio.move_on_after(SEND_TIMEOUT):
        await stream.send_all(data)
        return True
    log.info("control client did not read its reply within %s s; closing", SEND_TIMEOUT)
    return False


def _aor(value: object) -> str:
    try:
        return parse_uri(str(value)).aor
    except Exception:
        raise RpcError(
            -32602, f"{value!r} is not a SIP URI such as sip:alice@example.com"
        ) from None


def _int(value: object) -> int:
    try:
        return int(str(value))
    except ValueError:
        raise RpcError(-32602, f"{value!r} is not a number") from None


def _error_line(rpc_id: object, code: int, message: str) -> bytes:
    body = {"jsonrpc": "2.0", "id": rpc_id, "error": {"code": code, "message": message}}
    return (json.dumps(body) + "\n").encode()


def _peer_allowed(sock: trio.socket.SocketType) -> bool:
    """Only our own user (or root) may command the server."""
    try:
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except OSError:
        return False
    _pid, uid, _gid = struct.unpack("3i", creds)
    return uid in (0, os.getuid())


def bind_unix_socket(path: str) -> socket.socket:
    if os.path.lexists(path):
        mode = os.lstat(path).st_mode
        if not stat.S_ISSOCK(mode):
            raise OSError(f"control_socket {path} exists and is not a socket; not replacing it")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(path)
        except (ConnectionRefusedError, FileNotFoundError):
            os.unlink(path)  # stale: its server is gone
        else:
            raise OSError(f"another server is listening on control_socket {path}")
        finally:
            probe.close()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)  # the file is born 0600: no window where others may connect
    try:
        sock.bind(path)
    except OSError as exc:
        sock.close()
        # The bare error ("[Errno 20] Not a directory") does not say which
        # path; the operator reads this at start-up.
        raise OSError(exc.errno, f"cannot bind control_socket {path}: {exc.strerror}") from exc
    finally:
        os.umask(old)
    os.chmod(path, 0o600)
    sock.listen(16)
    sock.setblocking(False)
    return sock
