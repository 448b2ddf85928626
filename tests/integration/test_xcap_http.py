"""Issue 5 end to end, rules over HTTP: ``presencex serve`` with
``integrated_xcap_server = 0`` fetching pres-rules from Kamailio's
xcap_server on loopback (started by the tests), and never from anywhere else.

What is shown, each over real UDP to a server process:
- no document (404) → pending; a document PUT, then ``refreshWatchers … 0``
  → active with the filtered PIDF;
- changed documents are picked up by revalidation alone, and only the
  watchers whose state or view changed are told;
- the XCAP server stopped → SIP goes on (PUBLISH → NOTIFY, new SUBSCRIBEs
  answered at once) and the last good rules still hold, also for an actor
  started afresh from the cache;
- whatever SIP messages or documents name, no request reaches a host that is
  not in ``xcap_server`` (a recording HTTP listener on 127.0.0.2 and on
  another port of 127.0.0.1).

Figures (fetches, cache hits, NOTIFY latency after a change) are printed with
the prefix ``[issue 5 figures]``; run with ``-s`` to see them.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from presencex.bodies.pidf import DATA_MODEL_NS, tuple_statuses
from presencex.bodies.xmlparse import parse_xml
from presencex.sip.message import Request
from tests.integration.server import open_udp_peer, running_server
from tests.integration.xcap_support import (
    ALICE,
    PERSON_PIDF,
    RULES_TYPE,
    SERVICES_ONLY,
    HttpRecorder,
    Latencies,
    Seen,
    command_then_notifies,
    command_then_notify,
    ctl_async,
    document_stats,
    kamailio_xcap_server,
    notifies_within,
    open_http_recorder,
    publish,
    report,
    restart_on_same_port,
    skip_without_kamailio,
    sub_state,
    subscribe,
    xcap_delete,
    xcap_put,
)
from tests.presence.rules_docs import rule, ruleset
from tests.sipmsg import pidf, request_bytes
from tests.xcap.test_xcap_kamailio import KamailioXcap

BOB = "sip:bob@example.com"
CAROL = "sip:carol@example.com"
DAVE = "sip:dave@example.com"
ERIN = "sip:erin@example.com"
FRANK = "sip:frank@example.com"
PERIOD = 1.0  # xcap_revalidate_period where revalidation is under test
LONG_PERIOD = 60.0  # where only the refresh command may explain a NOTIFY


@pytest.fixture
def kamailio_xcap(tmp_path: Path) -> Iterator[KamailioXcap]:
    with kamailio_xcap_server(tmp_path) as server:
        yield server


def http_config(xcap_server: str, period: float, timeout: float = 1.0) -> str:
    return (
        "force_active = 0\nintegrated_xcap_server = 0\n"
        f'xcap_server = ["{xcap_server}"]\n'
        f"xcap_revalidate_period = {period}\nxcap_timeout = {timeout}\n"
        'xcapauth_userdel_reason = "probation;retry-after=30"\n'
    )


def shows_person(notify: Request) -> bool:
    return parse_xml(notify.body).find(f"{{{DATA_MODEL_NS}}}person") is not None


def alice_rules(carol_transformations: str | None = None, bob: str = "allow") -> bytes:
    """Bob may see services only; Carol what ``carol_transformations`` says."""
    carol = (
        rule("c", CAROL, "allow")
        if carol_transformations is None
        else rule("c", CAROL, "allow", carol_transformations)
    )
    return ruleset(rule("b", BOB, bob, SERVICES_ONLY), carol)


@pytest.mark.kamailio
@skip_without_kamailio
async def test_rules_over_http_refresh_revalidation_and_outage(
    tmp_path: Path, kamailio_xcap: KamailioXcap
) -> None:
    xcap = kamailio_xcap
    rules_url = xcap.uri("pres-rules", ALICE)
    # host:port form: the root is the default xcap_root_path, /xcap-root.
    config = http_config(f"127.0.0.1:{xcap.port}", PERIOD)
    with running_server(tmp_path, config) as server:
        sock = tmp_path / "ctl.sock"
        phone, bob, carol, dave, frank = [await open_udp_peer(server.port) for _ in range(5)]
        await phone.send(publish(phone, PERSON_PIDF))
        (published,), _ = await phone.collect(responses=1)
        assert published.status == 200

        # No document yet: Kamailio answers 404, no rules, so Bob is pending
        # and his NOTIFY has no body.
        await bob.send(subscribe(bob, BOB, "bob-1"))
        (ok,), (pending,) = await bob.collect(responses=1, notifies=1)
        assert ok.status == 200
        assert sub_state(pending).startswith("pending")
        assert pending.body == b""

        # A document allowing Bob (services only) and Carol (everything) is
        # PUT into Kamailio; refreshWatchers … 0 applies it.
        put_started = time.monotonic()
        await xcap_put(rules_url, alice_rules(), RULES_TYPE)
        active, _ = await command_then_notify(
            bob, sock, ("refreshWatchers", ALICE, "presence", "0")
        )
        refresh_latency = time.monotonic() - put_started
        assert sub_state(active).startswith("active")
        assert tuple_statuses(active.body) == {"phone": "open"}
        assert not shows_person(active), "provide-persons was not granted"

        await carol.send(subscribe(carol, CAROL, "carol-1"))
        _, (carol_first,) = await carol.collect(responses=1, notifies=1)
        assert sub_state(carol_first).startswith("active")
        assert shows_person(carol_first)

        # Changed documents, no command: revalidation (If-None-Match every
        # PERIOD) finds each change.  Carol's view narrows and widens; Bob's
        # decision is the same each time, so Bob is told nothing.
        revalidation = Latencies(f"PUT → NOTIFY by revalidation alone (period {PERIOD} s)")
        for i in range(4):
            narrow = i % 2 == 0
            started = time.monotonic()
            await xcap_put(rules_url, alice_rules(SERVICES_ONLY if narrow else None), RULES_TYPE)
            _, (changed,) = await carol.collect(notifies=1, within=5 * PERIOD + 5)
            revalidation.add(started)
            assert sub_state(changed).startswith("active")
            assert shows_person(changed) is not narrow
        assert await notifies_within(bob, 0.2) == []

        # Bob blocked, still without a command: terminated, rejected.  Carol's
        # view does not change, so she is told nothing.
        started = time.monotonic()
        await xcap_put(rules_url, alice_rules(bob="block"), RULES_TYPE)
        _, (rejected,) = await bob.collect(notifies=1, within=5 * PERIOD + 5)
        revalidation.add(started)
        assert sub_state(rejected) == "terminated;reason=rejected"
        # Unchanged since: revalidations get 304s, and nobody is told anything.
        unchanged = document_stats(sock)
        assert await notifies_within(carol, 2.5 * PERIOD) == []
        assert int(document_stats(sock)["not_modified"]) > int(unchanged["not_modified"])

        # Erin's rules allow Dave; Dave subscribes and leaves again, so Erin's
        # actor ends while her document stays cached.
        await xcap_put(xcap.uri("pres-rules", ERIN), ruleset(rule("d", DAVE, "allow")), RULES_TYPE)
        await dave.send(subscribe(dave, DAVE, "dave-1", ERIN))
        (dave_ok,), (dave_active,) = await dave.collect(responses=1, notifies=1)
        assert sub_state(dave_active).startswith("active")
        await dave.send(
            request_bytes(
                "SUBSCRIBE",
                ERIN,
                from_uri=DAVE,
                to_uri=ERIN,
                to_tag=dave_ok.to.tag,
                call_id="dave-1",
                cseq=2,
                expires=0,
                contact=f"sip:w@127.0.0.1:{dave.port}",
                via=f"SIP/2.0/UDP 127.0.0.1:{dave.port}",
            )
        )
        _, (dave_gone,) = await dave.collect(responses=1, notifies=1)
        assert sub_state(dave_gone).startswith("terminated")

        before = document_stats(sock)

        # The XCAP server goes away.  SIP goes on, at once.
        xcap.stop()
        await phone.send(publish(phone, tuple_id="laptop"))
        (laptop,), _ = await phone.collect(responses=1, within=2)
        assert laptop.status == 200
        _, (update,) = await carol.collect(notifies=1, within=2)
        assert tuple_statuses(update.body) == {"phone": "open", "laptop": "open"}

        # Revalidations fail meanwhile; an explicit refresh fails too.  None
        # of it revokes anything: the last good rules stay in force.
        await trio.sleep(2 * PERIOD)
        await ctl_async(sock, "refreshWatchers", ALICE, "presence", "0")
        assert await notifies_within(carol, 2.0) == []

        await carol.send(subscribe(carol, CAROL, "carol-2"))
        (again,), (carol_again,) = await carol.collect(responses=1, notifies=1, within=2)
        assert again.status == 200
        assert sub_state(carol_again).startswith("active")
        assert tuple_statuses(carol_again.body) == {"phone": "open", "laptop": "open"}
        await bob.send(subscribe(bob, BOB, "bob-2"))
        (bob_again,), (still_rejected,) = await bob.collect(responses=1, notifies=1, within=2)
        assert bob_again.status == 200
        assert sub_state(still_rejected) == "terminated;reason=rejected"

        # Erin's actor starts afresh; her rules come from the cache.
        await dave.send(subscribe(dave, DAVE, "dave-2", ERIN))
        _, (dave_back,) = await dave.collect(responses=1, notifies=1, within=2)
        assert sub_state(dave_back).startswith("active")

        # Frank has no cached document and the server is gone: his watcher is
        # answered at once and pending (no rules) once rules_wait is over.
        started = time.monotonic()
        await frank.send(subscribe(frank, DAVE, "frank-1", FRANK))
        (frank_ok,), _ = await frank.collect(responses=1, within=1)
        answered_in = time.monotonic() - started
        assert frank_ok.status == 200
        _, (frank_pending,) = await frank.collect(notifies=1, within=5)
        assert sub_state(frank_pending).startswith("pending")

        after = document_stats(sock)
        assert int(after["failures"]) > int(before["failures"])
        assert int(after["cache_hits"]) > int(before["cache_hits"])

        # The XCAP server comes back (same port, same database): a refresh
        # does not wait out the back-off, and changed rules apply again.
        # Carol's rule is gone: both her subscriptions end with the reason
        # xcapauth_userdel_reason gives.
        restart_on_same_port(xcap)
        await xcap_put(rules_url, ruleset(rule("b", BOB, "block")), RULES_TYPE)
        ended, _ = await command_then_notifies(
            carol, sock, ("refreshWatchers", ALICE, "presence", "0"), notifies=2
        )
        assert [sub_state(n) for n in ended] == ["terminated;reason=probation;retry-after=30"] * 2
        after = document_stats(sock)
        assert int(after["changed"]) >= 5
        report(
            f"rules over HTTP (Kamailio xcap_server): {_figures(after)}; "
            f"NOTIFY {refresh_latency * 1000:.0f} ms after PUT + `presencex ctl refreshWatchers`"
        )
        report(revalidation.summary())
        report(
            f"XCAP server down: SUBSCRIBE answered in {answered_in * 1000:.0f} ms, "
            f"first NOTIFY (pending) after rules_wait"
        )


def _figures(documents: dict[str, int | float]) -> str:
    names = ("requests", "fetches", "cache_hits", "not_modified", "changed", "failures")
    return ", ".join(f"{name} {documents.get(name)}" for name in names)


@pytest.mark.kamailio
@skip_without_kamailio
async def test_refresh_latency_over_http(tmp_path: Path, kamailio_xcap: KamailioXcap) -> None:
    """Revalidation is an hour away: every NOTIFY here is the refresh's doing."""
    xcap = kamailio_xcap
    rules_url = xcap.uri("pres-rules", ALICE)
    config = http_config(f"http://127.0.0.1:{xcap.port}/xcap-root", LONG_PERIOD)
    with running_server(tmp_path, config) as server:
        sock = tmp_path / "ctl.sock"
        phone, carol = await open_udp_peer(server.port), await open_udp_peer(server.port)
        await phone.send(publish(phone, PERSON_PIDF))
        await phone.collect(responses=1)
        await carol.send(subscribe(carol, CAROL, "carol-1"))
        _, (pending,) = await carol.collect(responses=1, notifies=1)
        assert sub_state(pending).startswith("pending")

        with_ctl = Latencies("PUT + `presencex ctl refreshWatchers … 0` → NOTIFY")
        command_only = Latencies("`presencex ctl refreshWatchers … 0` start → NOTIFY")
        in_process = Latencies("PUT + JSON-RPC refreshWatchers on the socket → NOTIFY")
        rpc_only = Latencies("JSON-RPC refreshWatchers … 0 sent → NOTIFY (server side)")
        for i in range(10):
            narrow = i % 2 == 1
            use_ctl = i < 5
            started = time.monotonic()
            await xcap_put(rules_url, alice_rules(SERVICES_ONLY if narrow else None), RULES_TYPE)
            # within < LONG_PERIOD: only the command can explain the NOTIFY.
            notify, command_latency = await command_then_notify(
                carol,
                sock,
                ("refreshWatchers", ALICE, "presence", "0"),
                in_process=not use_ctl,
                within=10,
            )
            (with_ctl if use_ctl else in_process).add(started)
            (command_only if use_ctl else rpc_only).samples.append(command_latency)
            assert sub_state(notify).startswith("active")
            assert shows_person(notify) is not narrow

        # The document deleted: no rules at all, so access is revoked (Kamailio
        # would keep it; RFC 5025 says no rule means no access).
        await xcap_delete(rules_url)
        revoked, _ = await command_then_notify(
            carol, sock, ("refreshWatchers", ALICE, "presence", "0")
        )
        assert sub_state(revoked) == "terminated;reason=probation;retry-after=30"

        documents = document_stats(sock)
        # One fetch for the first request, one per refresh (two if a kept-alive
        # connection Kamailio had closed must be retried); never revalidations.
        assert int(documents["not_modified"]) == 0
        report(f"refresh only (period {LONG_PERIOD:g} s): {_figures(documents)}")
        for figures in (with_ctl, command_only, in_process, rpc_only):
            report(figures.summary())


# -- trusted servers only ---------------------------------------------------------


async def test_untrusted_hosts_are_never_contacted(tmp_path: Path) -> None:
    """Only the xcap_server entry is asked, whatever SIP messages, documents
    or redirects name; both decoys record every request they get."""
    async with (
        open_http_recorder("127.0.0.2") as decoy,
        open_http_recorder("127.0.0.1") as decoy_port,
    ):

        def trusted_answer(request: Seen) -> tuple[int, dict[str, str], bytes]:
            if "redirect" in request.target:
                # A trusted server may still point elsewhere: not followed.
                return 302, {"Location": f"{decoy.base}{request.target}"}, b""
            if request.target.startswith("/xcap-root/pres-rules/users/sip:alice@"):
                return 200, {"ETag": '"r1"', "Content-Type": RULES_TYPE}, hostile_rules(decoy)
            return 404, {}, b""

        async with open_http_recorder("127.0.0.1", trusted_answer) as trusted:
            config = (
                "force_active = 0\npidf_manipulation = 1\nintegrated_xcap_server = 0\n"
                f'xcap_server = ["{trusted.base}/xcap-root"]\n'
                "xcap_revalidate_period = 0.5\nxcap_timeout = 0.5\n"
            )
            with running_server(tmp_path, config) as server:
                sock = tmp_path / "ctl.sock"
                await send_hostile_messages(server.port, decoy, decoy_port)
                for target in (
                    f"sip:mallory@{decoy.host}:{decoy.port}",
                    f"sip:mallory@127.0.0.1:{decoy_port.port}",
                    ALICE,
                ):
                    for kind in ("0", "2"):
                        await ctl_async(sock, "refreshWatchers", target, "presence", kind)
                # Several revalidation periods, with retries and back-off.
                await trio.sleep(2.5)
                documents = document_stats(sock)

        assert_only_trusted_asked(trusted, decoy, decoy_port)
        report(
            f"untrusted hosts: {len(trusted.seen)} requests to the trusted server, "
            f"{decoy.connections} + {decoy_port.connections} connections to the decoys; "
            f"{_figures(documents)}"
        )


def hostile_rules(decoy: HttpRecorder) -> bytes:
    """Rules that name the decoy: an OMA external list and a plain URI."""
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<cr:ruleset xmlns:cr="urn:ietf:params:xml:ns:common-policy"'
        ' xmlns:pr="urn:ietf:params:xml:ns:pres-rules"'
        ' xmlns:ocp="urn:oma:xml:xdm:common-policy">'
        '<cr:rule id="x"><cr:conditions><ocp:external-list>'
        f'<ocp:entry anc="{decoy.base}/xcap-root/resource-lists/users/sip:alice@example.com/'
        'index/~~/resource-lists/list%5b@name=%22friends%22%5d"/>'
        "</ocp:external-list></cr:conditions>"
        "<cr:actions><pr:sub-handling>allow</pr:sub-handling></cr:actions></cr:rule>"
        f'<cr:rule id="y"><cr:conditions><cr:identity><cr:one id="sip:x@{decoy.host}"/>'
        "</cr:identity></cr:conditions>"
        "<cr:actions><pr:sub-handling>allow</pr:sub-handling></cr:actions></cr:rule>"
        "</cr:ruleset>"
    ).encode()


async def send_hostile_messages(port: int, decoy: HttpRecorder, decoy_port: HttpRecorder) -> None:
    peer = await open_udp_peer(port)
    evil = f"{decoy.host}:{decoy.port}"
    evil_local = f"127.0.0.1:{decoy_port.port}"
    xcap_hints = [
        ("Call-Info", f"<{decoy.base}/xcap-root>;purpose=xcap"),
        ("Call-Info", f"<{decoy_port.base}/xcap-root>;purpose=xcap"),
    ]
    presentities = [
        f"sip:mallory@{evil}",
        f"sip:mallory@{evil};transport=tcp",
        f"sips:mallory@{evil_local}",
        f"sip:mallory%40{decoy.host}@example.com",
        f"sip:x@{decoy.host}@example.com",
        "sip:redirect@example.com",
        ALICE,
    ]
    for n, presentity in enumerate(presentities):
        await peer.send(
            request_bytes(
                "SUBSCRIBE",
                presentity,
                from_uri=f"sip:eve@{evil}",
                to_uri=presentity,
                call_id=f"hostile-{n}",
                expires=600,
                contact=f"sip:w@127.0.0.1:{peer.port}",
                via=f"SIP/2.0/UDP 127.0.0.1:{peer.port}",
                extra=xcap_hints,
            )
        )
    # A publication whose document names the decoy, for a presentity there.
    body = pidf(f"sip:mallory@{evil}", "t", contact=f"{decoy.base}/xcap-root/pres-rules")
    await peer.send(
        request_bytes(
            "PUBLISH",
            f"sip:mallory@{evil}",
            from_uri=f"sip:mallory@{evil}",
            to_uri=f"sip:mallory@{evil}",
            body=body,
            content_type="application/pidf+xml",
            expires=600,
            via=f"SIP/2.0/UDP 127.0.0.1:{peer.port}",
            extra=xcap_hints,
        )
    )
    statuses: list[int] = []
    with trio.move_on_after(5):
        while len(statuses) < len(presentities) + 1:
            responses, _ = await peer.collect(responses=1, within=5)
            statuses.extend(r.status for r in responses)
    # Each was answered (accepted or refused) and none stalled the server.
    assert len(statuses) == len(presentities) + 1, statuses


def assert_only_trusted_asked(
    trusted: HttpRecorder, decoy: HttpRecorder, decoy_port: HttpRecorder
) -> None:
    assert decoy.connections == 0, decoy.seen
    assert decoy_port.connections == 0, decoy_port.seen
    assert trusted.seen, "the fetcher never asked the trusted server"
    targets = {request.target for request in trusted.seen}
    assert {request.method for request in trusted.seen} == {"GET"}
    for target in targets:
        auid, _, rest = target.removeprefix("/xcap-root/").partition("/users/")
        assert auid in ("pres-rules", "pidf-manipulation"), target
        assert rest.endswith("/index"), target
        assert "/" not in rest.removesuffix("/index"), target
    # The presentity on the decoy's host had its documents asked of the
    # trusted server, by AOR: the host in the URI is a name, not a server.
    assert f"/xcap-root/pres-rules/users/sip:mallory@{decoy.host}/index" in targets
    assert "/xcap-root/pres-rules/users/sip:redirect@example.com/index" in targets


@pytest.mark.kamailio
@skip_without_kamailio
async def test_refresh_reaches_rules_held_without_watchers(
    tmp_path: Path, kamailio_xcap: KamailioXcap
) -> None:
    xcap = kamailio_xcap
    rules_url = xcap.uri("pres-rules", ALICE)
    await xcap_put(rules_url, ruleset(rule("b", BOB, "allow")), RULES_TYPE)
    config = http_config(f"127.0.0.1:{xcap.port}", LONG_PERIOD)
    with running_server(tmp_path, config) as server:
        sock = tmp_path / "ctl.sock"
        phone, bob = await open_udp_peer(server.port), await open_udp_peer(server.port)
        # The publication keeps Alice's actor, and the rules it read, alive.
        await phone.send(publish(phone))
        await phone.collect(responses=1)
        await bob.send(subscribe(bob, BOB, "bob-1"))
        (ok,), (active,) = await bob.collect(responses=1, notifies=1)
        assert sub_state(active).startswith("active")
        await bob.send(
            request_bytes(
                "SUBSCRIBE",
                ALICE,
                from_uri=BOB,
                to_uri=ALICE,
                to_tag=ok.to.tag,
                call_id="bob-1",
                cseq=2,
                expires=0,
                contact=f"sip:w@127.0.0.1:{bob.port}",
                via=f"SIP/2.0/UDP 127.0.0.1:{bob.port}",
            )
        )
        await bob.collect(responses=1, notifies=1)

        # Bob is blocked now, and the change is announced.
        await xcap_put(rules_url, ruleset(rule("b", BOB, "block")), RULES_TYPE)
        await ctl_async(sock, "refreshWatchers", ALICE, "presence", "0")
        await bob.send(subscribe(bob, BOB, "bob-2"))
        _, (again,) = await bob.collect(responses=1, notifies=1)
        assert sub_state(again) == "terminated;reason=rejected"
