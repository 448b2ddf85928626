"""kill -9 in the middle of a load run: nothing acknowledged is lost.

A SIPp subscribe load runs in the background while two tracked clients send
initial PUBLISHes and SUBSCRIBEs, each to its own presentity, and record every
2xx.  The server is killed with SIGKILL at a random moment, restarted, and
then every acknowledged publication and subscription must be in the
database, every acknowledged watcher must be NOTIFYd again, and sqlite must
pass its integrity check.
"""

from __future__ import annotations

import random
import shutil
import sqlite3
from pathlib import Path

import pytest
import trio

from presencex.loadtest.runner import scenario_path, sipp_command, sipp_process, write_users
from presencex.sip.message import Request, Response
from tests.integration.server import UdpPeer, free_port, open_udp_peer, running_server
from tests.sipmsg import pidf, request_bytes

RATE = 400  # tracked requests per second, per client
DURATION = 3.0  # upper bound of the tracked run


async def _tracked_run(peer: UdpPeer, method: str, acked: dict[str, str], stop: trio.Event) -> int:
    """Send ``method`` requests to fresh presentities until ``stop``; record
    call-id -> (etag or to-tag) of each 2xx.  Returns how many were sent."""
    sent = 0

    async def receive() -> None:
        while True:
            try:
                msg = await peer.receive(within=30)
            except trio.TooSlowError:
                return
            if isinstance(msg, Response) and msg.status == 200 and msg.cseq[1] == method:
                acked[msg.call_id] = (
                    msg.headers.get("SIP-ETag") or "" if method == "PUBLISH" else msg.to.tag or ""
                )
            elif isinstance(msg, Request) and msg.method == "NOTIFY":
                await peer.answer(msg)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(receive)
        with trio.move_on_after(DURATION):
            while not stop.is_set():
                user = f"{method.lower()}{sent}"
                aor = f"sip:{user}@example.com"
                common = {
                    "call_id": f"{method}-{sent}",
                    "expires": 3600,
                    "via": f"SIP/2.0/UDP 127.0.0.1:{peer.port}",
                    "contact": f"sip:c@127.0.0.1:{peer.port}",
                }
                if method == "PUBLISH":
                    data = request_bytes(
                        method,
                        aor,
                        from_uri=aor,
                        to_uri=aor,
                        body=pidf(aor, "t"),
                        content_type="application/pidf+xml",
                        **common,  # type: ignore[arg-type]
                    )
                else:
                    data = request_bytes(
                        method,
                        aor,
                        from_uri="sip:w@example.com",
                        to_uri=aor,
                        **common,  # type: ignore[arg-type]
                    )
                await peer.send(data)
                sent += 1
                await trio.sleep(1 / RATE)
        nursery.cancel_scope.cancel()
    return sent


@pytest.mark.sipp
@pytest.mark.slow
async def test_kill_9_during_load_loses_nothing_acknowledged(tmp_path: Path) -> None:
    sipp = shutil.which("sipp")
    if sipp is None:
        pytest.skip("SIPp is not installed (Debian package sip-tester)")
    with running_server(tmp_path) as server:
        work = tmp_path / "sipp"
        work.mkdir()
        users = write_users(work / "users.csv", 500)
        cmd = sipp_command(
            sipp,
            scenario_path("subscribe"),
            target=f"127.0.0.1:{server.port}",
            local_port=free_port(),
            transport="u1",
            rate=200,
            calls=2000,
            timeout=20,
            injection=users,
            keys={"domain": "example.com"},
            rtt=False,
            pin_cpu=None,
        )
        publisher = await open_udp_peer(server.port)
        watcher = await open_udp_peer(server.port)
        published: dict[str, str] = {}
        subscribed: dict[str, str] = {}
        stop = trio.Event()
        with sipp_process(cmd, work):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_tracked_run, publisher, "PUBLISH", published, stop)
                nursery.start_soon(_tracked_run, watcher, "SUBSCRIBE", subscribed, stop)
                await trio.sleep(random.uniform(0.8, 2.0))
                server.kill9()
                stop.set()
                await trio.sleep(0.3)  # late answers, if any, were sent before death
                nursery.cancel_scope.cancel()
        acked_pubs, acked_subs = dict(published), dict(subscribed)
        assert acked_pubs, "the load never got a PUBLISH acknowledged"
        assert acked_subs, "the load never got a SUBSCRIBE acknowledged"

        with sqlite3.connect(server.db_path) as db:
            assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            etags = {row[0] for row in db.execute("SELECT etag FROM presentity")}
            dialogs = {
                (row[0], row[1]) for row in db.execute("SELECT callid, to_tag FROM active_watchers")
            }
        lost_pubs = [c for c, etag in acked_pubs.items() if etag not in etags]
        lost_subs = [c for c, tag in acked_subs.items() if (c, tag) not in dialogs]
        print(
            f"acknowledged before kill -9: {len(acked_pubs)} PUBLISH, {len(acked_subs)} "
            f"SUBSCRIBE; lost after restart: {len(lost_pubs)} / {len(lost_subs)}"
        )
        assert lost_pubs == []
        assert lost_subs == []

        # After the restart every acknowledged watcher is told the current state.
        server.start()
        notified: set[str] = set()
        with trio.move_on_after(20):
            while not set(acked_subs) <= notified:
                msg = await watcher.receive(within=20)
                if isinstance(msg, Request) and msg.method == "NOTIFY":
                    notified.add(msg.call_id)
                    await watcher.answer(msg)
        assert set(acked_subs) <= notified
