"""Shared helpers for the XCAP tests: a delivery recorder and a fake XCAP server."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import trio
from trio.testing import wait_all_tasks_blocked

from presencex.presence.messages import RulesChanged
from presencex.xcap.fetcher import XcapFetcher
from presencex.xcap.uris import XcapServer

TRUSTED = XcapServer("http", "xcap.example.org", None, None)
ALICE = "sip:alice@example.com"
ALICE_RULES = "/xcap-root/pres-rules/users/sip:alice@example.com/index"
RULES_V1 = b'<ruleset xmlns="urn:ietf:params:xml:ns:common-policy"><rule id="a"/></ruleset>'
RULES_V2 = b'<ruleset xmlns="urn:ietf:params:xml:ns:common-policy"><rule id="b"/></ruleset>'


class Deliveries:
    """The ``deliver`` callable: records every message and hands it to the test."""

    def __init__(self) -> None:
        self.all: list[tuple[str, RulesChanged]] = []
        self._send, self._receive = trio.open_memory_channel[tuple[str, RulesChanged]](1000)

    def __call__(self, user: str, message: RulesChanged) -> None:
        self.all.append((user, message))
        self._send.send_nowait((user, message))

    async def next(self, within: float = 30.0) -> tuple[str, RulesChanged]:
        with trio.fail_after(within):
            return await self._receive.receive()

    def drain(self) -> list[tuple[str, RulesChanged]]:
        out = []
        while True:
            try:
                out.append(self._receive.receive_nowait())
            except trio.WouldBlock:
                return out


@dataclass
class Seen:
    method: str
    host: str
    path: str
    if_none_match: str | None
    at: float


@dataclass
class FakeXcap:
    """Whole-document XCAP server behind httpx.MockTransport, keyed by (host, path).

    Every request the fetcher makes is recorded, for whatever host it was
    meant: a request to an untrusted host shows up here and fails the test.
    """

    documents: dict[tuple[str, str], tuple[bytes, str]] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)
    down: bool = False
    delay: Callable[[httpx.Request], float] = lambda request: 0.0
    override: Callable[[httpx.Request], httpx.Response | None] = lambda request: None
    _counter: int = 0

    def put(self, path: str, body: bytes, host: str = TRUSTED.host) -> str:
        self._counter += 1
        etag = f'"e{self._counter}"'
        self.documents[(host, path)] = (body, etag)
        return etag

    def delete(self, path: str, host: str = TRUSTED.host) -> None:
        del self.documents[(host, path)]

    def paths(self) -> list[str]:
        return [s.path for s in self.seen]

    async def handle(self, request: httpx.Request) -> httpx.Response:
        self.seen.append(
            Seen(
                request.method,
                request.url.host,
                request.url.raw_path.decode(),
                request.headers.get("If-None-Match"),
                trio.current_time(),
            )
        )
        if self.down:
            raise httpx.ConnectError("connection refused", request=request)
        delay = self.delay(request)
        if delay:
            await trio.sleep(delay)
        response = self.override(request)
        if response is not None:
            return response
        found = self.documents.get((request.url.host, request.url.raw_path.decode()))
        if found is None:
            return httpx.Response(404)
        body, etag = found
        if request.headers.get("If-None-Match") == etag:
            return httpx.Response(304, headers={"ETag": etag})
        return httpx.Response(
            200, content=body, headers={"ETag": etag, "Content-Type": "application/auth-policy+xml"}
        )


@asynccontextmanager
async def running_fetcher(
    server: FakeXcap,
    deliveries: Callable[[str, RulesChanged], None],
    servers: tuple[XcapServer, ...] = (TRUSTED,),
    **options: Any,
) -> AsyncIterator[XcapFetcher]:
    async with httpx.AsyncClient(transport=httpx.MockTransport(server.handle)) as client:
        fetcher = XcapFetcher(servers, deliver=deliveries, client=client, **options)
        async with trio.open_nursery() as nursery:
            await nursery.start(fetcher.serve)
            yield fetcher
            nursery.cancel_scope.cancel()


async def settle(seconds: float = 0.0) -> None:
    """Let time pass (autojump clock) and every task run until it waits."""
    if seconds:
        await trio.sleep(seconds)
    await wait_all_tasks_blocked()


async def wait_for(predicate: Callable[[], bool], within: float = 10.0, step: float = 0.01) -> None:
    """Poll a condition (statistics have no change event), bounded by ``within``."""
    with trio.fail_after(within):
        while not predicate():  # noqa: ASYNC110 - nothing to wait on but the figures
            await trio.sleep(step)
