"""The XCAP fetcher: one task that fetches, caches and revalidates documents.

Facts and invariants:
- One task per server process owns the ``httpx.AsyncClient`` and the
  ``DocumentCache``.  Actors call ``request_nowait`` (it only queues and wakes
  the task); answers and changes go back through ``deliver`` as
  ``RulesChanged``.  A full inbox (``trio.WouldBlock``) keeps the message in an
  outbox, retried with a short back-off; a newer message for the same
  document replaces it, since it carries the whole current document.
- Trusted servers only (RFC 4825 §6: the XCAP root is configuration, not
  something a SIP message or a document may name).  Every URI is built from a
  root in ``servers`` or ``domain_servers`` and the AOR as one percent-encoded
  path segment, and is checked to still name that host.  Redirects are not
  followed (a 3xx is a failure) and proxy variables in the environment are
  ignored, so no request ever leaves for another host.
- Which server holds a user's documents: the server that ``domain_servers``
  maps the AOR's domain to, if any; otherwise the servers are tried in order
  and the first that answers 200 (or 304) is remembered for the whole domain.
  While a domain has no remembered server, a 404 moves on to the next server
  and the document counts as missing only when every server said 404; a
  failure of any of them makes the attempt a failure.  This differs from
  "the first that answers 404 wins" on purpose: a server that is up but not
  the domain's would otherwise pin the domain to itself and revoke its rules.
  Once a domain has a server, its failures are failures; another server's
  404 could not be trusted to mean "no rules".
- Every fetch is bounded: httpx timeouts and ``trio.move_on_after(timeout)``
  per server tried, at most ``MAX_CONCURRENT_FETCHES`` at once, so a slow
  server delays only its own documents and never SIP traffic.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import AsyncGenerator, Mapping, Sequence
from dataclasses import dataclass
from typing import cast

import httpx
import trio

from presencex.config import Config, ConfigError
from presencex.presence.messages import RulesChanged
from presencex.xcap.cache import (
    PIDF_MANIPULATION,
    PRES_RULES,
    Deliver,
    DocumentCache,
    DocumentKey,
    Outbox,
    split_aor,
)
from presencex.xcap.uris import XcapServer, document_uri

logger = logging.getLogger(__name__)


# Enough that one slow server does not serialise the others, few enough that a
# burst of new presentities does not open hundreds of connections at once.
MAX_CONCURRENT_FETCHES = 8
# pres-rules and pidf-manipulation documents are a few KB; a bigger answer is
# a broken or hostile server, not rules worth holding in memory.
MAX_DOCUMENT_SIZE = 1 << 20
# Entries kept (two per presentity with pidf_manipulation); each holds one
# small document.
MAX_DOCUMENTS = 20_000
# Actors ask when they start and on subscriptions; a subscription lives up
# to max_expires (3600 s by default), so keep revalidating for two of those
# after the last request, or for ten periods if that is longer.
KEEP_FOR = 7200.0
# The first retry after a failure; it doubles up to max_backoff.
MIN_BACKOFF = 1.0


@dataclass(frozen=True, slots=True)
class _Document:
    document: bytes
    etag: str | None


@dataclass(frozen=True, slots=True)
class _NotModified:
    pass


@dataclass(frozen=True, slots=True)
class _Missing:
    pass


@dataclass(frozen=True, slots=True)
class _Failed:
    reason: str


_Outcome = _Document | _NotModified | _Missing | _Failed


class XcapFetcher:
    def __init__(
        self,
        servers: Sequence[XcapServer],
        *,
        deliver: Deliver,
        root_path: str = "/xcap-root",
        documents: Mapping[str, tuple[str, str]] | None = None,
        period: float = 60.0,
        timeout: float = 3.0,
        client: httpx.AsyncClient | None = None,
        domain_servers: Mapping[str, XcapServer] | None = None,
        max_backoff: float = 300.0,
        min_backoff: float = MIN_BACKOFF,
        max_documents: int = MAX_DOCUMENTS,
        keep_for: float | None = None,
        max_concurrent: int = MAX_CONCURRENT_FETCHES,
    ) -> None:
        if not servers and not domain_servers:
            raise ValueError("the XCAP fetcher needs at least one trusted server")
        if timeout <= 0 or max_concurrent < 1:
            raise ValueError("timeout must be positive and max_concurrent at least 1")
        self._servers = tuple(servers)
        self._domain_servers = {d.lower(): s for d, s in (domain_servers or {}).items()}
        self._deliver = deliver
        self._root_path = root_path
        self._documents = dict(
            documents
            if documents is not None
            else {
                PRES_RULES: ("pres-rules", "index"),
                PIDF_MANIPULATION: ("pidf-manipulation", "index"),
            }
        )
        self._timeout = timeout
        self._client = client
        self._max_concurrent = max_concurrent
        self._cache = DocumentCache(
            period=period,
            keep_for=keep_for if keep_for is not None else max(10 * period, KEEP_FOR),
            max_documents=max_documents,
            min_backoff=min_backoff,
            max_backoff=max_backoff,
        )
        self._requests: dict[DocumentKey, bool] = {}  # queued; value: revalidate
        self._outbox = Outbox(deliver)
        self._discovered: dict[str, XcapServer] = {}  # domain -> server that answered
        self._wakeup = trio.Event()
        self._in_flight = 0
        self._requests_seen = 0
        self._fetches = 0

    # -- the interface actors use -------------------------------------------

    def request_nowait(self, user: str, auid: str, *, revalidate: bool = False) -> None:
        """Queue a request for the task; raises ValueError for an unknown auid."""
        if auid not in self._documents:
            raise ValueError(f"unknown document {auid!r}; known: {', '.join(self._documents)}")
        key = (user, auid)
        self._requests[key] = self._requests.get(key, False) or revalidate
        self._requests_seen += 1
        self._wakeup.set()

    def statistics(self) -> dict[str, int | float]:
        cache = self._cache
        return {
            "requests": self._requests_seen,
            "fetches": self._fetches,
            "cache_hits": cache.cache_hits,
            "not_modified": cache.not_modified,
            "changed": cache.changed,
            "failures": cache.failures,
            "cached_documents": len(cache),
            "evicted": cache.evicted,
            "deliveries": self._outbox.deliveries,
            "pending_deliveries": len(self._outbox),
            "in_flight": self._in_flight,
        }

    # -- the task ------------------------------------------------------------

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with contextlib.AsyncExitStack() as stack:
            client = self._client
            if client is None:
                client = await stack.enter_async_context(
                    httpx.AsyncClient(
                        timeout=httpx.Timeout(self._timeout),
                        follow_redirects=False,
                        # HTTP(S)_PROXY from the environment would be a host
                        # nobody listed in xcap_server.
                        trust_env=False,
                        limits=httpx.Limits(max_connections=2 * self._max_concurrent),
                    )
                )
            nursery = await stack.enter_async_context(trio.open_nursery())
            task_status.started()
            await self._loop(client, nursery)

    async def _loop(self, client: httpx.AsyncClient, nursery: trio.Nursery) -> None:
        while True:
            now = trio.current_time()
            self._take_requests(now)
            self._outbox.flush(now)
            while self._in_flight < self._max_concurrent:
                entry = self._cache.pop_due(now)
                if entry is None:
                    break
                etag = entry.etag if entry.known and entry.document is not None else None
                self._in_flight += 1
                nursery.start_soon(self._fetch, client, entry.user, entry.auid, etag)
            # With every slot busy a due entry waits for a fetch to finish
            # (which wakes us); otherwise the heap's head is in the future.
            due = (
                self._cache.next_deadline() if self._in_flight < self._max_concurrent else math.inf
            )
            deadline = min(due, self._outbox.next_deadline())
            with trio.move_on_at(deadline):
                await self._wakeup.wait()
            self._wakeup = trio.Event()

    def _take_requests(self, now: float) -> None:
        requests, self._requests = self._requests, {}
        for (user, auid), revalidate in requests.items():
            if split_aor(user) is None:
                logger.info("%s: not a sip: AOR, so it has no %s document", user, auid)
                self._outbox.post((user, auid), RulesChanged(auid, None, None))
                continue
            answer = self._cache.request(user, auid, now, revalidate=revalidate)
            if answer is not None:
                self._outbox.post((user, auid), answer)

    # -- one fetch -----------------------------------------------------------

    async def _fetch(
        self, client: httpx.AsyncClient, user: str, auid: str, etag: str | None
    ) -> None:
        key = (user, auid)
        try:
            try:
                outcome = await self._fetch_document(client, user, auid, etag)
            except Exception as exc:
                # A bug must not end the task that serves every presentity.
                logger.exception("fetching %s of %s", auid, user)
                outcome = _Failed(f"{type(exc).__name__}: {exc}")
            now = trio.current_time()
            match outcome:
                case _Document(document, tag):
                    message = self._cache.on_document(key, document, tag, now)
                case _Missing():
                    message = self._cache.on_document(key, None, None, now)
                case _NotModified():
                    message = self._cache.on_not_modified(key, now)
                case _Failed(reason):
                    message = None
                    retry = self._cache.on_failure(key, now)
                    if retry is not None:
                        failures, delay = retry
                        # The first failure is news; the rest of a long outage is not.
                        level = logging.WARNING if failures == 1 else logging.DEBUG
                        logger.log(
                            level,
                            "XCAP %s of %s: %s; keeping what we had, retry #%d in %.0f s",
                            auid,
                            user,
                            reason,
                            failures,
                            delay,
                        )
            if message is not None:
                self._outbox.post(key, message)
        finally:
            self._in_flight -= 1
            self._wakeup.set()

    async def _fetch_document(
        self, client: httpx.AsyncClient, user: str, auid: str, etag: str | None
    ) -> _Outcome:
        parts = split_aor(user)
        assert parts is not None, "checked when the request was taken"
        scheme, username, domain = parts
        xui = f"{scheme}:{username}@{domain}"
        uri_auid, document = self._documents[auid]
        pinned = self._domain_servers.get(domain) or self._discovered.get(domain)
        candidates = (pinned,) if pinned is not None else self._servers
        failure: _Failed | None = None
        for server in candidates:
            url = document_uri(server.root(self._root_path), uri_auid, xui, document)
            outcome = await self._get(client, server, url, etag)
            match outcome:
                case _Failed():
                    failure = outcome
                    continue
                case _Missing() if pinned is None:
                    continue  # discovering: another server may hold this domain
                case _Missing():
                    return outcome
                case _Document() | _NotModified():
                    if pinned is None:
                        logger.info("XCAP documents of %s are on %s", domain, server)
                        self._discovered[domain] = server
                    return outcome
        return failure if failure is not None else _Missing()

    async def _get(
        self, client: httpx.AsyncClient, server: XcapServer, url: str, etag: str | None
    ) -> _Outcome:
        target = httpx.URL(url)
        if not _same_origin(target, server):
            # Cannot happen with document_uri's quoting; kept because this is
            # the one promise the fetcher must never break.
            return _Failed(f"refused {url}: not the trusted server {server}")
        headers = {"If-None-Match": etag} if etag is not None else {}
        with trio.move_on_after(self._timeout):
            for attempt in (1, 2):
                self._fetches += 1
                try:
                    async with client.stream(
                        "GET", target, headers=headers, follow_redirects=False
                    ) as response:
                        return await _outcome(response, url)
                except httpx.RemoteProtocolError as exc:
                    # A kept-alive connection the server closed just before we
                    # reused it (Kamailio's xcap_server closes after every reply
                    # without "Connection: close").  GET is idempotent (RFC 9110
                    # §9.2.2): once more, on a fresh connection.
                    if attempt == 2:
                        return _Failed(f"{url}: {type(exc).__name__}: {exc}")
                except httpx.HTTPError as exc:
                    return _Failed(f"{url}: {type(exc).__name__}: {exc or 'no detail'}")
        return _Failed(f"{url}: no answer within {self._timeout:g} s")


_DEFAULT_PORTS = {"http": 80, "https": 443}


def _same_origin(target: httpx.URL, server: XcapServer) -> bool:
    return (
        target.scheme == server.scheme
        and target.host == server.host.lower()
        and (target.port or _DEFAULT_PORTS.get(target.scheme, 0))
        == (server.port or _DEFAULT_PORTS.get(server.scheme, 0))
    )


async def _outcome(response: httpx.Response, url: str) -> _Outcome:
    status = response.status_code
    if status == 200:
        body = bytearray()
        # httpx annotates aiter_bytes as an AsyncIterator but it is an async
        # generator; closing it when we stop early keeps the finaliser quiet.
        stream = cast(AsyncGenerator[bytes, None], response.aiter_bytes())
        async with contextlib.aclosing(stream) as chunks:
            async for chunk in chunks:
                body += chunk
                if len(body) > MAX_DOCUMENT_SIZE:
                    return _Failed(f"{url}: document larger than {MAX_DOCUMENT_SIZE} bytes")
        return _Document(bytes(body), response.headers.get("ETag"))
    if status == 304:
        return _NotModified()
    if status == 404:
        return _Missing()
    if response.is_redirect:
        where = response.headers.get("Location", "?")
        return _Failed(f"{url}: {status} redirect to {where} not followed (trusted servers only)")
    return _Failed(f"{url}: HTTP {status} {response.reason_phrase}")


def fetcher_from_config(config: Config, deliver: Deliver) -> XcapFetcher:
    """The fetcher ``integrated_xcap_server = 0`` asks for."""
    # config._check already refuses every configuration that reaches here
    # without servers; this guards callers that build a Config by hand
    # (dataclasses.replace, tests), for which a fetcher of no server would
    # fail every fetch silently.
    if not config.xcap_server:
        raise ConfigError(
            "xcap_server",
            "is required when integrated_xcap_server = 0: list the trusted XCAP servers "
            '(xcap_server = ["xcap.example.org"])',
        )
    return XcapFetcher(
        config.xcap_server,
        deliver=deliver,
        root_path=config.xcap_root_path,
        documents={
            PRES_RULES: (config.xcap_pres_rules_auid, config.xcap_pres_rules_document),
            PIDF_MANIPULATION: (
                config.xcap_pidf_manipulation_auid,
                config.xcap_pidf_manipulation_document,
            ),
        },
        period=config.xcap_revalidate_period,
        timeout=config.xcap_timeout,
    )
