"""Non-INVITE transactions with time stepped by hand (RFC 3261 §17)."""

from __future__ import annotations

import pytest

from presencex.sip.build import make_response, serialize
from presencex.sip.message import Request, Response
from presencex.sip.parse import parse_message
from presencex.sip.transaction import (
    Absorb,
    ClientTransactions,
    NewRequest,
    Resend,
    Retransmit,
    ServerTransactions,
    TimedOut,
)
from tests.sip import samples


def _request(data: bytes) -> Request:
    msg = parse_message(data)
    assert isinstance(msg, Request)
    return msg


def _response(data: bytes) -> Response:
    msg = parse_message(data)
    assert isinstance(msg, Response)
    return msg


# -- server --------------------------------------------------------------------


def test_retransmission_while_processing_is_absorbed_then_answered_again() -> None:
    st = ServerTransactions()
    req = _request(samples.LINPHONE_SUBSCRIBE)
    assert st.receive(req, False, 0.0) == NewRequest()
    assert st.receive(req, False, 0.1) == Absorb()
    wire = serialize(make_response(req, 202, to_tag="t"))
    st.respond(req, wire, 202, False, 0.2)
    # §17.2.2 Completed: the same response, no NewRequest.
    assert st.receive(req, False, 0.7) == Resend(wire)
    assert st.receive(req, False, 20.0) == Resend(wire)
    assert len(st) == 1


def test_timer_j_expiry_forgets_the_transaction() -> None:
    st = ServerTransactions(t1=0.5)
    req = _request(samples.PUBLISH)
    st.receive(req, False, 10.0)
    st.respond(req, b"SIP/2.0 200 OK\r\n\r\n", 200, False, 10.0)
    assert st.next_deadline() == pytest.approx(10.0 + 32.0)
    st.on_timer(41.9)
    assert len(st) == 1
    st.on_timer(42.0)
    assert len(st) == 0
    assert st.next_deadline() is None
    # After Timer J the same bytes are a new request again.
    assert st.receive(req, False, 43.0) == NewRequest()


def test_reliable_transport_drops_at_once() -> None:
    st = ServerTransactions()
    req = _request(samples.ZOIPER_SUBSCRIBE)
    assert st.receive(req, True, 0.0) == NewRequest()
    st.respond(req, b"x", 200, True, 0.1)
    assert len(st) == 0
    assert st.next_deadline() is None


def test_unanswered_request_is_forgotten_after_64_t1() -> None:
    st = ServerTransactions(t1=0.5)
    req = _request(samples.PUBLISH)
    st.receive(req, False, 0.0)
    assert st.next_deadline() == 32.0
    st.on_timer(32.0)
    assert len(st) == 0


def test_different_branch_method_or_sent_by_are_different_transactions() -> None:
    st = ServerTransactions()
    req = _request(samples.LINPHONE_SUBSCRIBE)
    assert st.receive(req, False, 0.0) == NewRequest()
    other_branch = _request(samples.LINPHONE_SUBSCRIBE.replace(b"Rb;rport", b"Rc;rport"))
    assert st.receive(other_branch, False, 0.0) == NewRequest()
    other_host = _request(samples.LINPHONE_SUBSCRIBE.replace(b"1.20:5060", b"1.21:5060"))
    assert st.receive(other_host, False, 0.0) == NewRequest()
    # Default port: "host" and "host:5060" are the same sent-by (§18.2.1).
    same = _request(samples.LINPHONE_SUBSCRIBE.replace(b"192.168.1.20:5060;", b"192.168.1.20;"))
    assert st.receive(same, False, 0.0) == Absorb()
    assert len(st) == 3


def test_rfc2543_matching_without_magic_cookie() -> None:
    st = ServerTransactions()
    old = samples.LINPHONE_SUBSCRIBE.replace(b"branch=z9hG4bK.7xq1Gd3Rb", b"branch=1")
    req = _request(old)
    assert st.receive(req, False, 0.0) == NewRequest()
    assert st.receive(_request(old), False, 0.1) == Absorb()
    st.respond(req, b"resp", 200, False, 0.2)
    assert st.receive(_request(old), False, 0.3) == Resend(b"resp")
    # A new CSeq is a new transaction even with the same non-cookie branch.
    newer = _request(old.replace(b"CSeq: 20", b"CSeq: 21"))
    assert st.receive(newer, False, 0.4) == NewRequest()
    no_branch = old.replace(b";branch=1", b"")
    assert st.receive(_request(no_branch), False, 0.5) == NewRequest()
    assert st.receive(_request(no_branch), False, 0.6) == Absorb()


def test_ack_and_cancel_pass_through_untracked() -> None:
    st = ServerTransactions()
    for method in (b"ACK", b"CANCEL"):
        data = samples.LINPHONE_SUBSCRIBE.replace(b"SUBSCRIBE", method)
        req = _request(data)
        assert st.receive(req, False, 0.0) == NewRequest()
        assert st.receive(req, False, 0.0) == NewRequest()
        st.respond(req, b"x", 200, False, 0.0)
    assert len(st) == 0


def test_provisional_is_not_recorded() -> None:
    st = ServerTransactions()
    req = _request(samples.PUBLISH)
    st.receive(req, False, 0.0)
    st.respond(req, b"100", 100, False, 0.0)
    assert st.receive(req, False, 0.1) == Absorb()


# -- client --------------------------------------------------------------------

BRANCH = "z9hG4bKnashds8"


def _run_timers(ct: ClientTransactions, until: float) -> list[tuple[float, str, object]]:
    """Step time from deadline to deadline, as a transport loop would."""
    fired: list[tuple[float, str, object]] = []
    while (deadline := ct.next_deadline()) is not None and deadline <= until:
        fired += [(deadline, branch, event) for branch, event in ct.on_timer(deadline)]
    return fired


def test_timer_e_schedule_then_timer_f() -> None:
    ct = ClientTransactions(t1=0.5, t2=4.0)
    ct.start(BRANCH, samples.NOTIFY, False, 0.0)
    fired = _run_timers(ct, 100.0)
    times = [t for t, _, event in fired if isinstance(event, Retransmit)]
    # §17.1.2.2: intervals 0.5, 1, 2, 4, 4, ... until Timer F at 64*T1 = 32 s.
    assert times == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert all(event == Retransmit(samples.NOTIFY) for _, _, event in fired[:-1])
    assert fired[-1] == (32.0, BRANCH, TimedOut())
    assert len(ct) == 0
    assert ct.next_deadline() is None


def test_reliable_never_retransmits_but_times_out() -> None:
    ct = ClientTransactions()
    ct.start(BRANCH, samples.NOTIFY, True, 5.0)
    assert ct.next_deadline() == 37.0
    assert ct.on_timer(36.9) == []
    assert ct.on_timer(37.0) == [(BRANCH, TimedOut())]


def test_final_response_ends_transaction() -> None:
    ct = ClientTransactions()
    ct.start(BRANCH, samples.NOTIFY, False, 0.0)
    assert ct.receive(_response(samples.OK_200), 0.2) == BRANCH
    assert len(ct) == 0
    assert ct.on_timer(100.0) == []
    # A retransmitted 200 no longer matches anything.
    assert ct.receive(_response(samples.OK_200), 0.3) is None


def test_481_is_a_final_response_too() -> None:
    ct = ClientTransactions()
    ct.start("z9hG4bKnashds9", samples.NOTIFY, False, 0.0)
    assert ct.receive(_response(samples.NOT_EXIST_481), 0.2) == "z9hG4bKnashds9"


def test_provisional_moves_timer_e_to_t2() -> None:
    ct = ClientTransactions(t1=0.5, t2=4.0)
    ct.start(BRANCH, samples.NOTIFY, False, 0.0)
    assert ct.on_timer(0.5) == [(BRANCH, Retransmit(samples.NOTIFY))]
    trying = _response(samples.OK_200.replace(b"200 OK", b"100 Trying"))
    assert ct.receive(trying, 0.6) is None
    times = [t for t, _, event in _run_timers(ct, 40.0) if isinstance(event, Retransmit)]
    assert times == [1.5, 5.5, 9.5, 13.5, 17.5, 21.5, 25.5, 29.5]


def test_response_must_match_branch_and_method() -> None:
    ct = ClientTransactions()
    ct.start(BRANCH, samples.NOTIFY, False, 0.0)
    wrong_method = _response(samples.OK_200.replace(b"2 NOTIFY", b"2 SUBSCRIBE"))
    assert ct.receive(wrong_method, 0.1) is None
    wrong_branch = _response(samples.OK_200.replace(BRANCH.encode(), b"z9hG4bKother"))
    assert ct.receive(wrong_branch, 0.1) is None
    assert len(ct) == 1


def test_cancel_and_many_transactions() -> None:
    ct = ClientTransactions()
    for i in range(1000):
        ct.start(f"z9hG4bK{i}", samples.NOTIFY, i % 2 == 0, i * 0.001)
    assert len(ct) == 1000
    for i in range(0, 1000, 3):
        ct.cancel(f"z9hG4bK{i}")
    assert ct.next_deadline() == pytest.approx(0.5 + 0.001)
    events = ct.on_timer(1000.0)
    timed_out = {branch for branch, event in events if isinstance(event, TimedOut)}
    assert len(timed_out) == 1000 - len(range(0, 1000, 3))
    assert len(ct) == 0


def test_late_tick_fires_everything_due_in_order() -> None:
    ct = ClientTransactions(t1=0.5, t2=4.0)
    ct.start(BRANCH, samples.NOTIFY, False, 0.0)
    events = ct.on_timer(4.0)
    assert [type(event) for _, event in events] == [Retransmit, Retransmit, Retransmit]
    assert ct.next_deadline() == 7.5
