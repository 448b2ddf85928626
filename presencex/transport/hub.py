"""The transport hub: bytes in and out of every socket, and the transaction layer.

Facts and invariants:
- Sends never block the caller: UDP uses the socket's non-blocking
  ``sendto``; TCP queues on a bounded per-connection channel drained by that
  connection's writer task.  A connection whose queue is full is closed (a
  peer that does not read cannot stall the server).
- Responses go where RFC 3261 §18.2.2 and RFC 3581 say: on TCP back on the
  connection the request came on; on UDP to the source address, and to the
  source port when the Via asks for ``rport``, else to the Via's port.
- Retransmitted requests are absorbed or answered again by
  ``ServerTransactions`` before the router sees them; NOTIFYs run a client
  transaction (Timer E on UDP, Timer F → 408 to whoever sent it).
- Malformed input gets 400 with the parser's reason when the message carries
  what a response needs (Via, From, To, Call-ID, CSeq); otherwise it is
  dropped and the peer logged.
"""

from __future__ import annotations

import errno
import logging
import re
import socket
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import trio

from presencex.presence.messages import SendNotify
from presencex.sip.build import make_response, new_branch, serialize
from presencex.sip.errors import SipError
from presencex.sip.headers import Headers, split_outside
from presencex.sip.message import Request, Response
from presencex.sip.parse import parse_message
from presencex.sip.transaction import (
    ClientTransactions,
    NewRequest,
    Resend,
    Retransmit,
    ServerTransactions,
    TimedOut,
)
from presencex.sip.uri import parse_uri
from presencex.transport.peer import Peer, parse_peer

log = logging.getLogger(__name__)

# Timers are checked on a tick rather than one wake-up per transaction: T1 is
# 500 ms, so 20 ms of lateness is invisible, and one tick serves 50,000
# transactions.
TICK = 0.02
# Messages queued for one TCP connection before it is judged stuck.
TCP_QUEUE = 1024
# The largest UDP payload over IPv4 (65,535 - 8 UDP - 20 IP header bytes).
MAX_UDP_PAYLOAD = 65507


@dataclass(slots=True)
class HubStatistics:
    requests: dict[str, int]
    responses_sent: dict[str, int]
    notifies_sent: int
    notifies_retransmitted: int
    notifies_failed: int
    notifies_timed_out: int
    malformed: int
    retransmissions_absorbed: int
    tcp_connections: int
    server_transactions: int
    client_transactions: int


class Connection:
    """One TCP connection: a writer task drains ``queue``."""

    def __init__(self, conn_id: int, remote: tuple[str, int], local: str) -> None:
        self.id = conn_id
        self.remote = remote
        self.local = local
        self.send_channel, self.receive_channel = trio.open_memory_channel[bytes](TCP_QUEUE)
        self.closed = False
        # Set by the connection's tasks: closing cancels them, so a peer that
        # stopped reading cannot keep a writer blocked in send_all.
        self.cancel_scope: trio.CancelScope | None = None

    def send_nowait(self, data: bytes) -> bool:
        if self.closed:
            return False
        try:
            self.send_channel.send_nowait(data)
        except (trio.WouldBlock, trio.ClosedResourceError, trio.BrokenResourceError):
            log.warning("TCP connection to %s:%d is not reading: closed", *self.remote)
            self.close()
            return False
        return True

    def close(self) -> None:
        self.closed = True
        self.send_channel.close()
        if self.cancel_scope is not None:
            self.cancel_scope.cancel()


RequestHandler = Callable[[Request, Peer], None]


@dataclass(slots=True)
class _Outgoing:
    peer: Peer
    on_final: Callable[[int], None]


class Hub:
    def __init__(
        self,
        *,
        t1: float = 0.5,
        t2: float = 4.0,
        max_message_size: int = 65535,
        max_headers: int = 200,
    ) -> None:
        self.server_transactions = ServerTransactions(t1=t1)
        self.client_transactions = ClientTransactions(t1=t1, t2=t2)
        self.max_message_size = max_message_size
        self.max_headers = max_headers
        self.on_request: RequestHandler = lambda request, peer: None
        self.udp_sockets: dict[str, socket.socket] = {}
        self.listen_hosts: dict[str, tuple[str, int]] = {}
        self.connections: dict[int, Connection] = {}
        self.by_remote: dict[tuple[str, int], Connection] = {}
        self._outgoing: dict[str, _Outgoing] = {}
        self._next_conn_id = 0
        self._nursery: trio.Nursery | None = None
        self.requests: Counter[str] = Counter()
        self.responses_sent: Counter[str] = Counter()
        self.notifies_sent = 0
        self.notifies_retransmitted = 0
        self.notifies_failed = 0
        self.notifies_timed_out = 0
        self.malformed = 0
        self.absorbed = 0
        self.server_header = "presencex"

    async def serve_timers(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            while True:
                await trio.sleep(TICK)
                self.on_timer(trio.current_time())

    def on_timer(self, now: float) -> None:
        self.server_transactions.on_timer(now)
        for branch, action in self.client_transactions.on_timer(now):
            outgoing = self._outgoing.get(branch)
            if outgoing is None:
                continue
            if isinstance(action, Retransmit):
                self.notifies_retransmitted += 1
                self._send(action.data, outgoing.peer)
            elif isinstance(action, TimedOut):
                del self._outgoing[branch]
                self.notifies_timed_out += 1
                outgoing.on_final(408)

    # -- incoming --------------------------------------------------------------

    def on_bytes(self, data: bytes, peer: Peer) -> None:
        """One whole message (a datagram, or one framed off a stream)."""
        try:
            msg = parse_message(data, max_size=self.max_message_size, max_headers=self.max_headers)
        except SipError as exc:
            self.malformed += 1
            self.answer_malformed(data, peer, exc)
            return
        now = trio.current_time()
        if isinstance(msg, Response):
            self._on_response(msg, now)
            return
        self.requests[msg.method] += 1
        msg = _stamp_via(msg, peer)
        verdict = self.server_transactions.receive(msg, peer.reliable, now)
        if isinstance(verdict, NewRequest):
            try:
                self.on_request(msg, peer)
            except Exception:
                log.exception("error routing %s Call-ID %s", msg.method, msg.call_id)
                self.send_response(msg, make_response(msg, 500, "Server Internal Error"), peer)
        elif isinstance(verdict, Resend):
            self.absorbed += 1
            self._send(verdict.data, peer)
        else:
            self.absorbed += 1

    def _on_response(self, response: Response, now: float) -> None:
        branch = self.client_transactions.receive(response, now)
        if branch is None:
            return
        outgoing = self._outgoing.pop(branch, None)
        if outgoing is None:
            return
        if response.status >= 300:
            self.notifies_failed += 1
        outgoing.on_final(response.status)

    def answer_malformed(self, data: bytes, peer: Peer, exc: SipError) -> None:
        """Answer what could not be parsed or framed, if it says where to."""
        response = error_response_bytes(data, exc.status, exc.reason)
        if response is None:
            log.info("dropped unanswerable message from %s: %s", peer, exc.reason)
            return
        log.info("answered %d %s to %s", exc.status, exc.reason, peer)
        self.responses_sent[f"{exc.status // 100}xx"] += 1
        self._send(response, peer)

    # -- outgoing --------------------------------------------------------------

    def send_response(self, request: Request, response: Response, peer: Peer) -> None:
        # Every response the server makes, 500s included, names it: here once
        # rather than at each place a response is built.
        headers = Headers.trusted((*response.headers.items, ("Server", self.server_header)))
        data = serialize(Response(response.status, response.reason, headers, response.body))
        self.responses_sent[f"{response.status // 100}xx"] += 1
        if response.status >= 200:
            self.server_transactions.respond(
                request, data, response.status, peer.reliable, trio.current_time()
            )
        if peer.transport == "udp":
            via = request.top_via
            port = peer.port if via.has_rport else (via.port or 5060)
            self._send(data, Peer("udp", peer.host, port, peer.local))
        else:
            self._send(data, peer)

    def send_notify(self, effect: SendNotify, on_final: Callable[[int], None]) -> None:
        try:
            target = parse_uri(effect.target)
        except SipError:
            # Checked when the subscription was made; a record from an older
            # database may still hold one we cannot use: the watcher is
            # unreachable, as if Timer F had fired.
            log.warning("NOTIFY target %r unusable", effect.target)
            self.notifies_failed += 1
            on_final(408)
            return
        transport = target.transport
        if transport not in ("udp", "tcp"):
            transport = "tcp" if transport == "tls" else "udp"
        port = target.port or 5060
        host = target.host.strip("[]")
        peer = Peer(transport, host, port, effect.local)
        if transport == "tcp":
            source = parse_peer(effect.source)
            # Reuse the connection the SUBSCRIBE came on (RFC 5923-style reuse;
            # clients behind NAT accept nothing else).
            if source is not None and source.transport == "tcp":
                conn = self.by_remote.get((source.host, source.port))
                if conn is not None and not conn.closed:
                    peer = Peer("tcp", source.host, source.port, conn.local, conn.id)
        branch = new_branch()
        data = self._with_via(effect.request, peer, branch)
        if transport == "udp" and len(data) > MAX_UDP_PAYLOAD:
            # RFC 3261 §18.1.1: what a datagram cannot carry goes over a
            # congestion-controlled transport, to the same address.
            peer = Peer("tcp", host, port, effect.local)
            data = self._with_via(effect.request, peer, branch)
        now = trio.current_time()
        self.client_transactions.start(branch, data, peer.reliable, now)
        self._outgoing[branch] = _Outgoing(peer, on_final)
        self.notifies_sent += 1
        if not self._send(data, peer):
            self.client_transactions.cancel(branch)
            del self._outgoing[branch]
            self.notifies_failed += 1
            on_final(503)

    def _with_via(self, request: Request, peer: Peer, branch: str) -> bytes:
        """The request's bytes with our Via on top, naming the transport it goes by."""
        via_host, via_port = self.listen_hosts.get(self._local_for(peer), ("127.0.0.1", 5060))
        via = (
            f"SIP/2.0/{peer.transport.upper()} {_hostport(via_host, via_port)};"
            f"branch={branch};rport"
        )
        return serialize(
            Request(
                request.method,
                request.uri,
                Headers((("Via", via), *request.headers.items)),
                request.body,
            )
        )

    def _local_for(self, peer: Peer) -> str:
        if peer.local.startswith(peer.transport + ":"):
            return peer.local
        for local in self.listen_hosts:
            if local.startswith(peer.transport + ":"):
                return local
        return peer.local

    def _send(self, data: bytes, peer: Peer) -> bool:
        if peer.transport == "udp":
            sock = self.udp_sockets.get(peer.local) or next(iter(self.udp_sockets.values()), None)
            if sock is None:
                log.warning("no UDP socket to send to %s", peer)
                return False
            try:
                sock.sendto(data, (peer.host, peer.port))
            except BlockingIOError:
                # A full socket buffer drops this datagram; Timer E resends
                # NOTIFYs and the client resends its request.
                return True
            except OSError as exc:
                if exc.errno in (errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH):
                    return False
                log.warning("UDP send to %s failed: %s", peer, exc)
                return False
            return True
        conn = self.connections.get(peer.connection) if peer.connection else None
        if conn is None or conn.closed:
            conn = self.by_remote.get((peer.host, peer.port))
        if conn is None or conn.closed:
            conn = self._connect(peer)
            if conn is None:
                return False
        return conn.send_nowait(data)

    # -- TCP connections ----------------------------------------------------

    def new_connection_id(self) -> int:
        self._next_conn_id += 1
        return self._next_conn_id

    def register(self, conn: Connection) -> None:
        self.connections[conn.id] = conn
        self.by_remote[conn.remote] = conn

    def unregister(self, conn: Connection) -> None:
        conn.close()
        self.connections.pop(conn.id, None)
        if self.by_remote.get(conn.remote) is conn:
            del self.by_remote[conn.remote]

    def _connect(self, peer: Peer) -> Connection | None:
        if self._nursery is None:
            return None
        from presencex.transport.tcp import connect_and_serve

        local = self._local_for(peer)
        conn = Connection(self.new_connection_id(), (peer.host, peer.port), local)
        self.register(conn)
        self._nursery.start_soon(connect_and_serve, self, conn)
        return conn

    def statistics(self) -> HubStatistics:
        return HubStatistics(
            requests=dict(self.requests),
            responses_sent=dict(self.responses_sent),
            notifies_sent=self.notifies_sent,
            notifies_retransmitted=self.notifies_retransmitted,
            notifies_failed=self.notifies_failed,
            notifies_timed_out=self.notifies_timed_out,
            malformed=self.malformed,
            retransmissions_absorbed=self.absorbed,
            tcp_connections=len(self.connections),
            server_transactions=len(self.server_transactions),
            client_transactions=len(self.client_transactions),
        )


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _stamp_via(request: Request, peer: Peer) -> Request:
    """RFC 3261 §18.2.1 ``received`` and RFC 3581 ``rport`` on the top Via,
    so the response carries them and goes back to where the request came from."""
    via = request.top_via
    need_received = via.host.strip("[]") != peer.host
    if not need_received and not via.has_rport:
        return request
    items = list(request.headers.items)
    for index, (name, value) in enumerate(items):
        if name == "Via":
            first, *others = split_outside(value, ",", angles=False)[0]
            comma, rest = ("," if others else ""), ",".join(others)
            first = re.sub(r";\s*(received|rport)(=[^;,]*)?", "", first, flags=re.IGNORECASE)
            first += f";received={peer.host}"
            if via.has_rport:
                first += f";rport={peer.port}"
            items[index] = (name, first + comma + rest)
            break
    # Only the top Via's text changed: keep what the parser already read of
    # the other headers (From, To, CSeq…) instead of parsing them again.
    memo = {key: value for key, value in request._parsed.items() if key != "Via"}
    return Request(request.method, request.uri, Headers.trusted(tuple(items)), request.body, memo)


_COPY = ("via", "v", "from", "f", "to", "t", "call-id", "i", "cseq")


def error_response_bytes(data: bytes, status: int, reason: str) -> bytes | None:
    """A response to a request we could not parse, from its raw header lines,
    or None when it lacks what a response needs (or was itself a response)."""
    # CRLFs before the start line are skipped, as parse_message skips them.
    head = data.lstrip(b"\r\n").split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0]
    lines = head.decode("latin-1").replace("\r\n", "\n").split("\n")
    version = lines[0].rsplit(" ", 1)[-1]
    # A request line of any SIP version (a 505 for SIP/3.0 is an answer too),
    # however broken before it; never a status line: responses get no answer.
    if lines[0].upper().startswith("SIP/") or not version.upper().startswith("SIP/"):
        return None
    copied: dict[str, str] = {}
    vias: list[str] = []
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        key = name.strip().lower()
        if not colon or key not in _COPY:
            continue
        canonical = {"v": "via", "f": "from", "t": "to", "i": "call-id"}.get(key, key)
        if canonical == "via":
            vias.append(value.strip())
        else:
            copied.setdefault(canonical, value.strip())
    if not vias or len(copied) < 4:
        return None
    # Reason phrases may not hold CR or LF (RFC 3261 §25.1 Reason-Phrase).
    reason = re.sub(r"[\r\n]+", " ", reason)[:200]
    out = [f"SIP/2.0 {status} {reason}"]
    out += [f"Via: {v}" for v in vias]
    out += [
        f"From: {copied['from']}",
        f"To: {copied['to']}",
        f"Call-ID: {copied['call-id']}",
        f"CSeq: {copied['cseq']}",
        "Content-Length: 0",
        "",
        "",
    ]
    return "\r\n".join(out).encode("utf-8", "replace")
