"""The fetcher and the table against a real XCAP server: Kamailio's xcap_server on loopback.

Kamailio (xhttp + xcap_server + db_sqlite, tests/xcap/kamailio-xcap.cfg) runs
as a subprocess on a free 127.0.0.1 TCP port with a fresh sqlite database.
Documents are PUT with httpx, the way an XCAP client would.
"""

from __future__ import annotations

import shutil
import socket
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import trio

from presencex.presence.messages import RulesChanged
from presencex.store.schema import create_sql
from presencex.xcap.fetcher import XcapFetcher
from presencex.xcap.table import XcapTable
from presencex.xcap.uris import XcapServer

from .conftest import RULES_V1, RULES_V2, Deliveries, wait_for

KAMAILIO = shutil.which("kamailio") or shutil.which("kamailio", path="/usr/sbin:/usr/local/sbin")
CONFIG = Path(__file__).with_name("kamailio-xcap.cfg")
SCHEMA = Path("/usr/share/kamailio/db_sqlite")
PERIOD = 0.3

pytestmark = [
    pytest.mark.kamailio,
    pytest.mark.skipif(KAMAILIO is None, reason="the kamailio binary is not installed"),
]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class KamailioXcap:
    """One Kamailio process serving XCAP; ``stop`` is idempotent."""

    def __init__(self, workdir: Path) -> None:
        assert KAMAILIO is not None
        self.workdir = workdir
        self.db = workdir / "kamailio.db"
        conn = sqlite3.connect(self.db)
        try:
            scripts = [SCHEMA / "standard-create.sql", SCHEMA / "presence-create.sql"]
            if all(s.exists() for s in scripts):
                for script in scripts:
                    conn.executescript(script.read_text())
            else:  # the same tables, as presencex makes them
                conn.executescript(create_sql())
        finally:
            conn.close()
        (workdir / "run").mkdir()
        self.log_path = workdir / "kamailio.log"
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        for _ in range(3):  # another process may take the free port first
            self.port = free_port()
            if self._start(KAMAILIO):
                return
        raise RuntimeError(f"Kamailio did not serve XCAP; log:\n{self.log_path.read_text()}")

    def _start(self, binary: str) -> bool:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    binary,
                    "-DD",
                    "-E",
                    "-f",
                    str(CONFIG),
                    "-Y",
                    str(self.workdir / "run"),
                    "-m",
                    "32",
                    "-M",
                    "8",
                    "-A",
                    f"XCAP_PORT={self.port}",
                    "-A",
                    f'XCAP_DB_URL="sqlite://{self.db}"',
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.process = None
                return False
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return True
            except OSError:
                time.sleep(0.05)
        self.stop()
        return False

    @property
    def server(self) -> XcapServer:
        return XcapServer("http", "127.0.0.1", self.port, None)

    def uri(self, auid: str, user: str) -> str:
        return f"http://127.0.0.1:{self.port}/xcap-root/{auid}/users/{user}/index"

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@pytest.fixture(scope="module")
def kamailio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KamailioXcap]:
    server = KamailioXcap(tmp_path_factory.mktemp("kamailio-xcap"))
    try:
        yield server
    finally:
        server.stop()


async def put(client: httpx.AsyncClient, url: str, body: bytes, content_type: str) -> str:
    response = await client.put(url, content=body, headers={"Content-Type": content_type})
    assert response.status_code == 200, response.text
    etag = response.headers["ETag"]
    assert etag
    return etag


RULES = "application/auth-policy+xml"


def http_client() -> httpx.AsyncClient:
    """The test's own XCAP client.  Kamailio closes every connection after its
    reply (set_reply_close), so no connection is kept for reuse."""
    return httpx.AsyncClient(
        trust_env=False, timeout=3, limits=httpx.Limits(max_keepalive_connections=0)
    )


async def test_kamailio_is_a_real_xcap_server(kamailio: KamailioXcap) -> None:
    """What the fetcher relies on, checked on the server itself."""
    url = kamailio.uri("pres-rules", "sip:probe@example.com")
    with trio.fail_after(10):
        async with http_client() as client:
            assert (await client.get(url)).status_code == 404
            etag = await put(client, url, RULES_V1, RULES)
            got = await client.get(url)
            assert (got.status_code, got.content, got.headers["ETag"]) == (200, RULES_V1, etag)
            assert (await client.get(url, headers={"If-None-Match": etag})).status_code == 304
            assert await put(client, url, RULES_V2, RULES) != etag


async def test_fetcher_gets_the_document_and_picks_up_changes_by_revalidation(
    kamailio: KamailioXcap,
) -> None:
    user = "sip:alice@example.com"
    url = kamailio.uri("pres-rules", user)
    deliveries = Deliveries()
    fetcher = XcapFetcher([kamailio.server], deliver=deliveries, period=PERIOD, timeout=2.0)
    with trio.fail_after(20):
        async with (
            http_client() as client,
            trio.open_nursery() as nursery,
        ):
            etag1 = await put(client, url, RULES_V1, RULES)
            await nursery.start(fetcher.serve)
            fetcher.request_nowait(user, "pres-rules")
            assert await deliveries.next() == (user, RulesChanged("pres-rules", RULES_V1, etag1))
            fetcher.request_nowait(user, "pres-rules")  # answered from the cache
            assert await deliveries.next(within=0.5) == (
                user,
                RulesChanged("pres-rules", RULES_V1, etag1),
            )

            # Revalidated with If-None-Match: Kamailio answers 304, nothing is delivered.
            await wait_for(lambda: fetcher.statistics()["not_modified"] >= 2)
            assert deliveries.drain() == []

            # A change is picked up without any command.
            etag2 = await put(client, url, RULES_V2, RULES)
            assert await deliveries.next(within=5) == (
                user,
                RulesChanged("pres-rules", RULES_V2, etag2),
            )
            # And a deleted document becomes "no document".
            assert (await client.delete(url)).status_code == 200
            assert await deliveries.next(within=5) == (user, RulesChanged("pres-rules", None, None))
            nursery.cancel_scope.cancel()
    stats = fetcher.statistics()
    assert stats["cache_hits"] == 1
    assert stats["changed"] == 2
    assert stats["failures"] == 0
    assert stats["fetches"] == stats["not_modified"] + 3


async def test_a_missing_document_is_none(kamailio: KamailioXcap) -> None:
    deliveries = Deliveries()
    fetcher = XcapFetcher([kamailio.server], deliver=deliveries, period=PERIOD, timeout=2.0)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(fetcher.serve)
            fetcher.request_nowait("sip:nobody@example.com", "pidf-manipulation")
            assert await deliveries.next() == (
                "sip:nobody@example.com",
                RulesChanged("pidf-manipulation", None, None),
            )
            nursery.cancel_scope.cancel()


async def test_the_table_reads_what_kamailio_wrote(kamailio: KamailioXcap) -> None:
    """Integrated mode: Kamailio's xcap_server writes the xcap table, XcapTable reads it."""
    user = "sip:carol@example.com"
    deliveries = Deliveries()
    table = XcapTable(str(kamailio.db), "xcap", deliver=deliveries)
    with trio.fail_after(10):
        async with (
            http_client() as client,
            trio.open_nursery() as nursery,
        ):
            etag = await put(client, kamailio.uri("pres-rules", user), RULES_V1, RULES)
            await put(
                client,
                kamailio.uri("pidf-manipulation", user),
                b"<presence/>",
                "application/pidf+xml",
            )
            await nursery.start(table.serve)
            table.request_nowait(user, "pres-rules")
            _, message = await deliveries.next()
            # The table keeps the tag without the HTTP quotes.
            assert message == RulesChanged("pres-rules", RULES_V1, etag.strip('"'))
            table.request_nowait(user, "pidf-manipulation")
            assert (await deliveries.next())[1].document == b"<presence/>"
            etag2 = await put(client, kamailio.uri("pres-rules", user), RULES_V2, RULES)
            table.request_nowait(user, "pres-rules", revalidate=True)  # refreshWatchers
            assert (await deliveries.next())[1] == RulesChanged(
                "pres-rules", RULES_V2, etag2.strip('"')
            )
            nursery.cancel_scope.cancel()


async def test_kamailio_stopped_keeps_the_old_copy_and_nothing_blocks(tmp_path: Path) -> None:
    kamailio = KamailioXcap(tmp_path)
    try:
        user = "sip:dave@example.com"
        deliveries = Deliveries()
        fetcher = XcapFetcher(
            [kamailio.server],
            deliver=deliveries,
            period=PERIOD,
            timeout=1.0,
            min_backoff=0.1,
            max_backoff=0.5,
        )
        with trio.fail_after(20):
            async with http_client() as client:
                etag = await put(client, kamailio.uri("pres-rules", user), RULES_V1, RULES)
            async with trio.open_nursery() as nursery:
                await nursery.start(fetcher.serve)
                fetcher.request_nowait(user, "pres-rules")
                assert (await deliveries.next())[1].etag == etag
                await trio.to_thread.run_sync(kamailio.stop)
                await wait_for(lambda: fetcher.statistics()["failures"] >= 3)
                assert deliveries.drain() == []
                # A request is still answered at once, with the last good copy.
                start = trio.current_time()
                fetcher.request_nowait(user, "pres-rules")
                assert await deliveries.next(within=0.5) == (
                    user,
                    RulesChanged("pres-rules", RULES_V1, etag),
                )
                assert trio.current_time() - start < 0.5
                nursery.cancel_scope.cancel()
    finally:
        kamailio.stop()
