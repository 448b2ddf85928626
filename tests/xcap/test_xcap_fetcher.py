"""The XCAP fetcher task against httpx.MockTransport: every request is asserted."""

from __future__ import annotations

import itertools

import httpx
import pytest
import trio

from presencex.config import ConfigError, config_from_mapping
from presencex.presence.messages import RulesChanged
from presencex.xcap.fetcher import MAX_DOCUMENT_SIZE, XcapFetcher, fetcher_from_config
from presencex.xcap.uris import XcapServer

from .conftest import (
    ALICE,
    ALICE_RULES,
    RULES_V1,
    RULES_V2,
    TRUSTED,
    Deliveries,
    FakeXcap,
    running_fetcher,
    settle,
    wait_for,
)

PERIOD = 60.0


async def test_first_request_fetches_the_document_from_the_trusted_server(
    autojump_clock: trio.testing.MockClock,
) -> None:
    server, deliveries = FakeXcap(), Deliveries()
    etag = server.put(ALICE_RULES, RULES_V1)
    async with running_fetcher(server, deliveries, period=PERIOD) as fetcher:
        fetcher.request_nowait(ALICE, "pres-rules")
        assert await deliveries.next(within=1) == (
            ALICE,
            RulesChanged("pres-rules", RULES_V1, etag),
        )
        [seen] = server.seen
        assert (seen.method, seen.host, seen.path, seen.if_none_match) == (
            "GET",
            "xcap.example.org",
            "/xcap-root/pres-rules/users/sip:alice@example.com/index",
            None,
        )
        stats = fetcher.statistics()
        assert stats["fetches"] == 1
        assert stats["cached_documents"] == 1


async def test_second_request_is_answered_from_the_cache_without_http(
    autojump_clock: trio.testing.MockClock,
) -> None:
    server, deliveries = FakeXcap(), Deliveries()
    etag = server.put(ALICE_RULES, RULES_V1)
    async with running_fetcher(server, deliveries, period=PERIOD) as fetcher:
        fetcher.request_nowait(ALICE, "pres-rules")
        await deliveries.next(within=1)
        await settle(5)
        fetcher.request_nowait(ALICE, "pres-rules")
        assert await deliveries.next(within=0.001) == (
            ALICE,
            RulesChanged("pres-rules", RULES_V1, etag),
        )
        assert len(server.seen) == 1
        assert fetcher.statistics()["cache_hits"] == 1


async def test_revalidation_304_delivers_nothing_and_a_change_is_delivered(
    autojump_clock: trio.testing.MockClock,
) -> None:
    server, deliveries = FakeXcap(), Deliveries()
    etag1 = server.put(ALICE_RULES, RULES_V1)
    async with running_fetcher(server, deliveries, period=PERIOD) as fetcher:
        fetcher.request_nowait(ALICE, "pres-rules")
        await deliveries.next(within=1)
        start = trio.current_time()
        await settle(PERIOD + 1)
        assert [(s.path, s.if_none_match) for s in server.seen] == [
            (ALICE_RULES, None),
            (ALICE_RULES, etag1),
        ]
        assert server.seen[1].at - start == pytest.approx(PERIOD, abs=0.01)
        assert deliveries.drain() == []
        assert fetcher.statistics()["not_modified"] == 1

        etag2 = server.put(ALICE_RULES, RULES_V2)
        assert await deliveries.next(within=PERIOD + 1) == (
            ALICE,
            RulesChanged("pres-rules", RULES_V2, etag2),
        )
        assert server.seen[-1].if_none_match == etag1
        stats = fetcher.statistics()
        assert (stats["fetches"], stats["not_modified"], stats["changed"]) == (3, 1, 1)


async def test_404_means_no_document_once_and_a_new_document_is_delivered(
    autojump_clock: trio.testing.MockClock,
) -> None:
    server, deliveries = FakeXcap(), Deliveries()
    async with running_fetcher(server, deliveries, period=PERIOD) as fetcher:
        fetcher.request_nowait(ALICE, "pres-rules")
        assert await deliveries.next(within=1) == (ALICE, RulesChanged("pres-rules", None, None))
        await settle(3 * PERIOD + 1)
        assert deliveries.drain() == []  # still 404: nothing new
        assert len(server.seen) == 4
        etag = server.put(ALICE_RULES, RULES_V1)
        assert await deliveries.next(within=PERIOD + 1) == (
            ALICE,
            RulesChanged("pres-rules", RULES_V1, etag),
        )
        server.delete(ALICE_RULES)
        assert await deliveries.next(within=PERIOD + 1) == (
            ALICE,
            RulesChanged("pres-rules", None, None),
        )
        assert fetcher.statistics()["changed"] == 2


async def test_server_down_keeps_the_last_good_copy_and_backs_off(
    autojump_clock: trio.testing.MockClock,
) -> None:
    server, deliveries = FakeXcap(), Deliveries()
    etag = server.put(ALICE_RULES, RULES_V1)
    async with running_fetcher(
        server, deliveries, period=PERIOD, max_backoff=20.0, keep_for=10_000.0
    ) as fetcher:
        fetcher.request_nowait(ALICE, "pres-rules")
        await deliveries.next(within=1)
        server.down = True
        await settle(PERIOD + 100)
        assert deliveries.drain() == []
        attempts = [s.at for s in server.seen[1:]]
        gaps = [round(b - a, 3) for a, b in itertools.pairwise(attempts)]
        assert gaps[:6] == [1.0, 2.0, 4.0, 8.0, 16.0, 20.0]
        assert set(gaps[5:]) == {20.0}
        assert fetcher.statistics()["failures"] == len(attempts)

        # Nothing blocks: a request is answered at once with the last good copy.
        fetcher.request_nowait(ALICE, "pres-rules")
        assert await deliveries.next(within=0.001) == (
            ALICE,
            RulesChanged("pres-rules", RULES_V1, etag),
        )
        # Back up and unchanged: revalidated with the old tag, nothing delivered.
        server.down = False
        await settle(21)
        assert server.seen[-1].if_none_match == etag
        assert deliveries.drain() == []
        assert fetcher.statistics()["not_modified"] == 1


async def test_no_answer_is_invented_before_the_first_definitive_one(
    autojump_clock: trio.testing.MockClock,
) -> None:
    server, deliveries = FakeXcap(down=True), Deliveries()
    etag = server.put(ALICE_RULES, RULES_V1)
    async with running_fetcher(server, deliveries, period=PERIOD) as fetcher:
        fetcher.request_nowait(ALICE, "pres-rules")
        await settle(10)
        fetcher.request_nowait(ALICE, "pres-rules")  # still owed, still nothing
        await settle(10)
        assert deliveries.all == []
        assert fetcher.statistics()["failures"] == 5  # at 0, 1, 3, 7 and 15 s; next at 31
        server.down = False
        assert await deliveries.next(within=12) == (
            ALICE,
            RulesChanged("pres-rules", RULES_V1, etag),
        )
        assert deliveries.drain() == []


async def test_a_slow_server_is_bounded_and_other_fetches_complete(
    autojump_clock: trio.testing.MockClock,
) -> None:
    server, deliveries = FakeXcap(), Deliveries()
    server.put(ALICE_RULES, RULES_V1)
    bob_rules = "/xcap-root/pres-rules/users/sip:bob@example.com/index"
    server.put(bob_rules, RULES_V2)
    server.delay = lambda request: 1000.0 if "alice" in request.url.path else 0.0
    async with running_fetcher(server, deliveries, period=PERIOD, timeout=3.0) as fetcher:
        start = trio.current_time()
        fetcher.request_nowait(ALICE, "pres-rules")
        fetcher.request_nowait("sip:bob@example.com", "pres-rules")
        user, message = await deliveries.next(within=1)
        assert (user, message.document) == ("sip:bob@example.com", RULES_V2)
        assert trio.current_time() - start < 0.01
        await settle(3.5)
        assert fetcher.statistics()["failures"] == 1  # alice's, after 3 s
        assert fetcher.statistics()["in_flight"] == 0
        assert deliveries.drain() == []
        server.delay = lambda request: 0.0
        _, message = await deliveries.next(within=5)
        assert message.document == RULES_V1


async def test_concurrent_fetches_are_bounded(autojump_clock: trio.testing.MockClock) -> None:
    server, deliveries = FakeXcap(), Deliveries()
    server.delay = lambda request: 1.0
    async with running_fetcher(server, deliveries, period=PERIOD, max_concurrent=3) as fetcher:
        for i in range(7):
            fetcher.request_nowait(f"sip:u{i}@example.com", "pres-rules")
        await settle(0.5)
        assert len(server.seen) == 3
        for _ in range(7):
            await deliveries.next(within=5)
        assert {round(s.at) for s in server.seen} == {0, 1, 2}


async def test_a_user_of_an_untrusted_domain_is_looked_up_on_the_trusted_server_only(
    autojump_clock: trio.testing.MockClock,
) -> None:
    server, deliveries = FakeXcap(), Deliveries()
    evil = "/xcap-root/pres-rules/users/sip:mallory@evil.example/index"
    server.put(evil, b"<evil/>", host="evil.example")
    async with running_fetcher(server, deliveries, period=PERIOD) as fetcher:
        fetcher.request_nowait("sip:mallory@evil.example", "pres-rules")
        fetcher.request_nowait("sip:x@evil.example:80/xcap-root/../..", "pres-rules")
        got = {await deliveries.next(within=1) for _ in range(2)}
        assert got == {
            ("sip:mallory@evil.example", RulesChanged("pres-rules", None, None)),
            ("sip:x@evil.example:80/xcap-root/../..", RulesChanged("pres-rules", None, None)),
        }
        await settle(3 * PERIOD)
        assert server.seen
        assert {s.host for s in server.seen} == {"xcap.example.org"}


async def test_a_redirect_to_another_host_is_not_followed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    server, deliveries = FakeXcap(), Deliveries()
    server.put(ALICE_RULES, b"<evil/>", host="evil.example")
    server.override = lambda request: (
        httpx.Response(302, headers={"Location": f"http://evil.example{ALICE_RULES}"})
        if request.url.host == TRUSTED.host
        else None
    )
    async with running_fetcher(server, deliveries, period=PERIOD) as fetcher:
        fetcher.request_nowait(ALICE, "pres-rules")
        await settle(30)
        assert deliveries.all == []
        assert {s.host for s in server.seen} == {"xcap.example.org"}
        assert fetcher.statistics()["failures"] == len(server.seen) > 1


async def test_explicit_revalidation_fetches_at_once_and_answers_unchanged(
    autojump_clock: trio.testing.MockClock,
) -> None:
    server, deliveries = FakeXcap(), Deliveries()
    etag = server.put(ALICE_RULES, RULES_V1)
    async with running_fetcher(server, deliveries, period=PERIOD) as fetcher:
        fetcher.request_nowait(ALICE, "pres-rules")
        await deliveries.next(within=1)
        await settle(10)
        fetcher.request_nowait(ALICE, "pres-rules", revalidate=True)
        assert await deliveries.next(within=0.001) == (
            ALICE,
            RulesChanged("pres-rules", RULES_V1, etag),
        )
        assert [s.if_none_match for s in server.seen] == [None, etag]
        stats = fetcher.statistics()
        assert (stats["not_modified"], stats["cache_hits"]) == (1, 0)


async def test_a_full_inbox_is_retried_and_the_update_kept(
    autojump_clock: trio.testing.MockClock,
) -> None:
    server, deliveries = FakeXcap(), Deliveries()
    etag = server.put(ALICE_RULES, RULES_V1)
    refusals = [1, 1, 1]

    def deliver(user: str, message: RulesChanged) -> None:
        if refusals:
            refusals.pop()
            raise trio.WouldBlock
        deliveries(user, message)

    async with running_fetcher(server, deliver, period=PERIOD) as fetcher:
        fetcher.request_nowait(ALICE, "pres-rules")
        assert await deliveries.next(within=1) == (
            ALICE,
            RulesChanged("pres-rules", RULES_V1, etag),
        )
        assert refusals == []
        assert fetcher.statistics()["pending_deliveries"] == 0


async def test_the_first_server_that_has_the_domain_is_remembered(
    autojump_clock: trio.testing.MockClock,
) -> None:
    other = XcapServer("http", "xcap2.example.org", 8080, "/root")
    server, deliveries = FakeXcap(), Deliveries()
    server.put("/root/pres-rules/users/sip:alice@example.com/index", RULES_V1, host=other.host)
    async with running_fetcher(
        server, deliveries, servers=(TRUSTED, other), period=PERIOD
    ) as fetcher:
        fetcher.request_nowait(ALICE, "pres-rules")
        assert (await deliveries.next(within=1))[1].document == RULES_V1
        assert [s.host for s in server.seen] == ["xcap.example.org", "xcap2.example.org"]
        fetcher.request_nowait("sip:bob@example.com", "pres-rules")
        assert (await deliveries.next(within=1))[1].document is None
        assert server.seen[-1].host == "xcap2.example.org"
        assert len(server.seen) == 3
        # Another domain still walks the list; 404 everywhere is "no document".
        fetcher.request_nowait("sip:carol@example.net", "pres-rules")
        assert (await deliveries.next(within=1))[1].document is None
        assert [s.host for s in server.seen[3:]] == ["xcap.example.org", "xcap2.example.org"]


async def test_a_404_while_another_server_fails_is_not_taken_as_no_document(
    autojump_clock: trio.testing.MockClock,
) -> None:
    other = XcapServer("http", "xcap2.example.org", None, None)
    server, deliveries = FakeXcap(), Deliveries()
    server.override = lambda request: (
        httpx.Response(503) if request.url.host == TRUSTED.host else None
    )
    async with running_fetcher(
        server, deliveries, servers=(TRUSTED, other), period=PERIOD
    ) as fetcher:
        fetcher.request_nowait(ALICE, "pres-rules")
        await settle(5)
        assert deliveries.all == []
        assert fetcher.statistics()["failures"] >= 2


async def test_a_domain_mapping_sends_that_domain_to_its_server_only(
    autojump_clock: trio.testing.MockClock,
) -> None:
    mapped = XcapServer("https", "xcap.example.net", None, "/xcap")
    server, deliveries = FakeXcap(), Deliveries()
    path = "/xcap/pres-rules/users/sip:carol@example.net/index"
    server.put(path, RULES_V1, host=mapped.host)
    async with running_fetcher(
        server, deliveries, period=PERIOD, domain_servers={"Example.NET": mapped}
    ) as fetcher:
        fetcher.request_nowait("sip:carol@example.net", "pres-rules")
        assert (await deliveries.next(within=1))[1].document == RULES_V1
        assert [(s.host, s.path) for s in server.seen] == [("xcap.example.net", path)]


async def test_pidf_manipulation_and_configured_document_names(
    autojump_clock: trio.testing.MockClock,
) -> None:
    server, deliveries = FakeXcap(), Deliveries()
    oma = "/xcap-root/org.openmobilealliance.pres-rules/users/sip:alice@example.com/pres-rules"
    pidf = "/xcap-root/pidf-manipulation/users/sip:alice@example.com/index"
    server.put(oma, RULES_V1)
    server.put(pidf, b"<presence/>")
    documents = {
        "pres-rules": ("org.openmobilealliance.pres-rules", "pres-rules"),
        "pidf-manipulation": ("pidf-manipulation", "index"),
    }
    async with running_fetcher(server, deliveries, period=PERIOD, documents=documents) as fetcher:
        fetcher.request_nowait(ALICE, "pres-rules")
        fetcher.request_nowait(ALICE, "pidf-manipulation")
        got = {(await deliveries.next(within=1))[1] for _ in range(2)}
        assert {(m.auid, m.document) for m in got} == {
            ("pres-rules", RULES_V1),
            ("pidf-manipulation", b"<presence/>"),
        }
        assert sorted(server.paths()) == sorted([oma, pidf])
        with pytest.raises(ValueError, match="unknown document"):
            fetcher.request_nowait(ALICE, "resource-lists")


async def test_an_oversized_document_is_a_failure(autojump_clock: trio.testing.MockClock) -> None:
    server, deliveries = FakeXcap(), Deliveries()
    server.put(ALICE_RULES, b"x" * (MAX_DOCUMENT_SIZE + 1))
    async with running_fetcher(server, deliveries, period=PERIOD) as fetcher:
        fetcher.request_nowait(ALICE, "pres-rules")
        await settle(0.5)
        assert deliveries.all == []
        assert fetcher.statistics()["failures"] == 1


async def test_documents_nobody_asks_for_any_more_stop_being_revalidated(
    autojump_clock: trio.testing.MockClock,
) -> None:
    server, deliveries = FakeXcap(), Deliveries()
    server.put(ALICE_RULES, RULES_V1)
    async with running_fetcher(server, deliveries, period=PERIOD, keep_for=3 * PERIOD) as fetcher:
        fetcher.request_nowait(ALICE, "pres-rules")
        await deliveries.next(within=1)
        await settle(10 * PERIOD)
        assert len(server.seen) == 4  # at 0, 60, 120, 180; dropped at 240
        assert fetcher.statistics()["cached_documents"] == 0


async def test_serve_makes_and_closes_its_own_client() -> None:
    """A real httpx client on loopback: a refused connection is a bounded failure."""
    with trio.socket.socket() as probe:
        await probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again: nothing listens there
    deliveries = Deliveries()
    fetcher = XcapFetcher(
        [XcapServer("http", "127.0.0.1", port, None)], deliver=deliveries, timeout=1.0
    )
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            await nursery.start(fetcher.serve)
            fetcher.request_nowait(ALICE, "pres-rules")
            await wait_for(lambda: fetcher.statistics()["failures"] >= 1)
            nursery.cancel_scope.cancel()
    assert fetcher.statistics()["failures"] >= 1
    assert deliveries.all == []


def test_a_configuration_without_xcap_server_is_refused() -> None:
    with pytest.raises(ConfigError, match="xcap_server") as info:
        config_from_mapping({"integrated_xcap_server": 0})
    assert info.value.key == "xcap_server"
    forced = config_from_mapping({"integrated_xcap_server": 0, "force_active": 1})
    with pytest.raises(ConfigError, match="xcap_server"):
        fetcher_from_config(forced, lambda user, message: None)


async def test_fetcher_from_config_uses_the_configured_servers_and_names(
    autojump_clock: trio.testing.MockClock,
) -> None:
    config = config_from_mapping(
        {
            "integrated_xcap_server": 0,
            "xcap_server": ["xcap.example.org"],
            "xcap_root_path": "/services",
            "xcap_pres_rules_auid": "org.openmobilealliance.pres-rules",
            "xcap_pres_rules_document": "pres-rules",
            "xcap_revalidate_period": 30,
        }
    )
    deliveries = Deliveries()
    fetcher = fetcher_from_config(config, deliveries)
    server = FakeXcap()
    async with httpx.AsyncClient(transport=httpx.MockTransport(server.handle)) as client:
        fetcher._client = client
        async with trio.open_nursery() as nursery:
            await nursery.start(fetcher.serve)
            fetcher.request_nowait(ALICE, "pres-rules")
            await deliveries.next(within=1)
            await settle(31)
            nursery.cancel_scope.cancel()
    assert (
        server.paths()
        == ["/services/org.openmobilealliance.pres-rules/users/sip:alice@example.com/pres-rules"]
        * 2
    )


async def test_a_connection_closed_by_the_server_is_retried_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    server, deliveries = FakeXcap(), Deliveries()
    etag = server.put(ALICE_RULES, RULES_V1)
    closed = [1]

    def close_once(request: httpx.Request) -> httpx.Response | None:
        if closed:
            closed.pop()
            raise httpx.RemoteProtocolError("Server disconnected without sending a response.")
        return None

    server.override = close_once
    async with running_fetcher(server, deliveries, period=PERIOD) as fetcher:
        fetcher.request_nowait(ALICE, "pres-rules")
        assert (await deliveries.next(within=1))[1].etag == etag
        stats = fetcher.statistics()
        assert (stats["fetches"], stats["failures"]) == (2, 0)
        # Twice in a row is a failure like any other.
        server.override = always_closed
        await settle(PERIOD + 0.5)
        assert fetcher.statistics()["failures"] == 1
        assert fetcher.statistics()["fetches"] == 4


def always_closed(request: httpx.Request) -> httpx.Response | None:
    raise httpx.RemoteProtocolError("closed", request=request)
