"""The pure cache: what to fetch when, what to deliver; the outbox; AORs."""

from __future__ import annotations

import pytest
import trio

from presencex.presence.messages import RulesChanged
from presencex.xcap.cache import DocumentCache, Outbox, split_aor

ALICE = "sip:alice@example.com"
KEY = (ALICE, "pres-rules")


def make_cache(**overrides: float) -> DocumentCache:
    options: dict[str, float] = {
        "period": 60.0,
        "keep_for": 600.0,
        "max_documents": 100,
        "min_backoff": 1.0,
        "max_backoff": 300.0,
    }
    options.update(overrides)
    return DocumentCache(
        period=options["period"],
        keep_for=options["keep_for"],
        max_documents=int(options["max_documents"]),
        min_backoff=options["min_backoff"],
        max_backoff=options["max_backoff"],
    )


def fetched(
    cache: DocumentCache, now: float, body: bytes | None, etag: str | None
) -> RulesChanged | None:
    entry = cache.pop_due(now)
    assert entry is not None
    assert entry.key == KEY
    return cache.on_document(KEY, body, etag, now)


def test_first_request_is_fetched_then_answered_from_cache() -> None:
    cache = make_cache()
    assert cache.request(ALICE, "pres-rules", 0.0) is None
    assert cache.next_deadline() == 0.0
    assert fetched(cache, 0.0, b"<r/>", '"1"') == RulesChanged("pres-rules", b"<r/>", '"1"')
    assert cache.request(ALICE, "pres-rules", 5.0) == RulesChanged("pres-rules", b"<r/>", '"1"')
    assert cache.cache_hits == 1
    assert cache.pop_due(59.0) is None
    assert cache.next_deadline() == 60.0


def test_revalidation_delivers_only_changes() -> None:
    cache = make_cache()
    cache.request(ALICE, "pres-rules", 0.0)
    fetched(cache, 0.0, b"<r/>", '"1"')
    entry = cache.pop_due(60.0)
    assert entry is not None
    assert entry.etag == '"1"'
    assert cache.on_not_modified(KEY, 60.0) is None
    assert cache.not_modified == 1
    # Same tag and bytes in a 200 (a server that ignores If-None-Match): nothing new.
    assert fetched(cache, 120.0, b"<r/>", '"1"') is None
    assert fetched(cache, 180.0, b"<r2/>", '"2"') == RulesChanged("pres-rules", b"<r2/>", '"2"')
    # A new tag alone counts as a change: the actor decides what changed.
    assert fetched(cache, 240.0, b"<r2/>", '"3"') is not None
    assert cache.changed == 2


def test_404_is_none_once_and_a_later_document_is_delivered() -> None:
    cache = make_cache()
    cache.request(ALICE, "pres-rules", 0.0)
    assert fetched(cache, 0.0, None, None) == RulesChanged("pres-rules", None, None)
    assert fetched(cache, 60.0, None, None) is None
    assert cache.request(ALICE, "pres-rules", 61.0) == RulesChanged("pres-rules", None, None)
    assert fetched(cache, 120.0, b"<r/>", '"1"') == RulesChanged("pres-rules", b"<r/>", '"1"')
    assert fetched(cache, 180.0, None, None) == RulesChanged("pres-rules", None, None)


def test_failures_back_off_exponentially_up_to_the_cap() -> None:
    cache = make_cache(max_backoff=10.0)
    cache.request(ALICE, "pres-rules", 0.0)
    now, delays = 0.0, []
    for _ in range(6):
        entry = cache.pop_due(now)
        assert entry is not None
        outcome = cache.on_failure(KEY, now)
        assert outcome is not None
        delays.append(outcome[1])
        assert cache.pop_due(now + outcome[1] - 0.001) is None
        now += outcome[1]
    assert delays == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    # Still unknown: a plain request is owed, not answered with a guess.
    assert cache.request(ALICE, "pres-rules", now) is None
    assert fetched(cache, now, b"<r/>", '"1"') is not None
    entry = cache.get(KEY)
    assert entry is not None
    assert entry.failures == 0


def test_failure_keeps_the_last_good_copy() -> None:
    cache = make_cache()
    cache.request(ALICE, "pres-rules", 0.0)
    fetched(cache, 0.0, b"<r/>", '"1"')
    assert cache.pop_due(60.0) is not None
    assert cache.on_failure(KEY, 60.0) == (1, 1.0)
    assert cache.request(ALICE, "pres-rules", 60.5) == RulesChanged("pres-rules", b"<r/>", '"1"')


def test_explicit_revalidation_fetches_now_and_answers_even_if_unchanged() -> None:
    cache = make_cache()
    cache.request(ALICE, "pres-rules", 0.0)
    fetched(cache, 0.0, b"<r/>", '"1"')
    assert cache.request(ALICE, "pres-rules", 10.0, revalidate=True) is None
    assert cache.pop_due(10.0) is not None
    assert cache.on_not_modified(KEY, 10.0) == RulesChanged("pres-rules", b"<r/>", '"1"')
    # Answered once; the next revalidation is a period later and silent.
    assert cache.pop_due(69.0) is None
    assert cache.pop_due(70.0) is not None
    assert cache.on_not_modified(KEY, 70.0) is None


def test_revalidation_during_a_fetch_fetches_again_afterwards() -> None:
    cache = make_cache()
    cache.request(ALICE, "pres-rules", 0.0)
    fetched(cache, 0.0, b"<r/>", '"1"')
    assert cache.pop_due(60.0) is not None  # in flight
    assert cache.request(ALICE, "pres-rules", 60.1, revalidate=True) is None
    assert cache.pop_due(60.1) is None  # not twice at once
    assert cache.on_not_modified(KEY, 60.2) == RulesChanged("pres-rules", b"<r/>", '"1"')
    # ...and once more at once: the fetch under way may predate the change.
    assert cache.pop_due(60.2) is not None
    assert cache.on_document(KEY, b"<r2/>", '"2"', 60.3) == RulesChanged(
        "pres-rules", b"<r2/>", '"2"'
    )


def test_idle_documents_are_dropped_instead_of_revalidated() -> None:
    cache = make_cache(keep_for=100.0)
    cache.request(ALICE, "pres-rules", 0.0)
    fetched(cache, 0.0, b"<r/>", '"1"')
    assert cache.pop_due(60.0) is not None
    cache.on_not_modified(KEY, 60.0)
    assert cache.pop_due(120.0) is None  # last asked 120 s ago
    assert len(cache) == 0
    assert cache.evicted == 1
    # Asked again: a fresh entry, fetched and answered.
    assert cache.request(ALICE, "pres-rules", 130.0) is None
    assert fetched(cache, 130.0, b"<r/>", '"1"') is not None


def test_size_is_bounded_least_recently_asked_first_but_not_in_flight() -> None:
    cache = make_cache(max_documents=2)
    cache.request("sip:a@x", "pres-rules", 0.0)
    cache.request("sip:b@x", "pres-rules", 1.0)
    assert cache.pop_due(1.0) is not None  # a is in flight
    cache.request("sip:c@x", "pres-rules", 2.0)
    assert len(cache) == 2
    assert cache.get(("sip:a@x", "pres-rules")) is not None
    assert cache.get(("sip:b@x", "pres-rules")) is None
    # A result for an entry that was dropped is ignored.
    assert cache.on_document(("sip:b@x", "pres-rules"), b"x", None, 3.0) is None


def test_304_without_a_known_document_is_a_failure() -> None:
    cache = make_cache()
    cache.request(ALICE, "pres-rules", 0.0)
    assert cache.pop_due(0.0) is not None
    assert cache.on_not_modified(KEY, 0.0) is None
    assert cache.failures == 1


def test_the_heap_stays_proportional_to_the_entries() -> None:
    cache = make_cache()
    cache.request(ALICE, "pres-rules", 0.0)
    fetched(cache, 0.0, b"<r/>", '"1"')
    for i in range(1000):
        cache.request(ALICE, "pres-rules", float(i), revalidate=True)
    assert len(cache._heap) <= 4 * len(cache) + 64


def test_bad_parameters_are_refused() -> None:
    with pytest.raises(ValueError, match="positive"):
        make_cache(period=0.0)
    with pytest.raises(ValueError, match="max_documents"):
        make_cache(max_documents=0)


@pytest.mark.parametrize(
    ("uri", "parts"),
    [
        ("sip:alice@example.com", ("sip", "alice", "example.com")),
        ("sips:Alice@Example.COM:5061;transport=tls", ("sips", "Alice", "example.com")),
        ("sip:bob@[2001:db8::1]:5060", ("sip", "bob", "[2001:db8::1]")),
        ("sip:example.com", None),
        ("tel:+15551234", None),
        ("sip:a/../b@example.com", None),
        ("sip:a@evil.example/x", None),
        ("sip:x@evil.example:80/xcap-root/../..", None),
        ("sip:x@[::1", None),
        ("", None),
    ],
)
def test_split_aor(uri: str, parts: tuple[str, str, str] | None) -> None:
    assert split_aor(uri) == parts


def test_outbox_retries_a_full_inbox_and_keeps_only_the_newest() -> None:
    got: list[RulesChanged] = []
    full = [True, True]

    def deliver(user: str, message: RulesChanged) -> None:
        if full:
            full.pop()
            raise trio.WouldBlock
        got.append(message)

    outbox = Outbox(deliver)
    outbox.post(KEY, RulesChanged("pres-rules", b"1", None))
    outbox.flush(0.0)
    assert got == []
    assert outbox.next_deadline() == pytest.approx(0.02)
    outbox.post(KEY, RulesChanged("pres-rules", b"2", None))  # replaces, due at once
    outbox.flush(0.0)
    assert got == []
    outbox.flush(0.01)
    assert got == []
    outbox.flush(0.02)
    assert got == [RulesChanged("pres-rules", b"2", None)]
    assert len(outbox) == 0
    assert outbox.deliveries == 1


def test_outbox_drops_a_message_whose_delivery_raises_a_bug(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def deliver(user: str, message: RulesChanged) -> None:
        raise RuntimeError("router bug")

    outbox = Outbox(deliver)
    outbox.post(KEY, RulesChanged("pres-rules", None, None))
    outbox.flush(0.0)
    assert len(outbox) == 0
    assert "router bug" in caplog.text
