"""The ``presence.winfo`` event (RFC 3857), bodies in watcherinfo (RFC 3858).

Facts:
- A winfo subscription is about the watchers of another event of the same
  presentity (``presence.winfo`` → ``presence``): its body is made from the
  actor's subscriptions, not from publications, and the state hands
  ``render`` the entries. The presentity's other events (``dialog``,
  ``dialog;sla``…) are listed too, each in a watcher-list of its own with
  its ``package`` (RFC 3858 §4.2 allows several lists in one document), so
  the owner sees who watches its busy lamp as well as its presence.
- Only the presentity itself may watch its watchers (RFC 3857 §5.1 leaves
  the policy to the server; anyone else gets 403 unless a rule allows it).
- ``version`` starts at 0 and increases by one per NOTIFY of the subscription
  (RFC 3858 §4.1); the first NOTIFY and any after a coalesced burst carry the
  full list, single changes a partial one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from presencex.bodies import watcherinfo
from presencex.events.base import WatcherView


@dataclass(slots=True)
class WatcherInfoPackage:
    watched_event: str | None = "presence"
    name: str = "presence.winfo"
    publish_types: tuple[str, ...] = ()
    notify_type: str = watcherinfo.WATCHERINFO_CONTENT_TYPE
    versioned: bool = True
    authorized: bool = False

    def validate(self, body: bytes) -> None:
        raise ValueError("presence.winfo is not publishable")

    def aggregate(self, bodies: Sequence[bytes], presentity: str) -> bytes | None:
        return None

    def removed(self, body: bytes) -> bytes | None:
        return None

    def empty_body(self, presentity: str) -> bytes | None:
        return None

    def render(self, aggregate: bytes | None, view: WatcherView) -> bytes | None:
        return watcherinfo.build_watcherinfo(
            version=view.version,
            state="full" if view.full else "partial",
            resource=view.presentity,
            package=self.watched_event or "presence",
            watchers=view.watchers,
        )
