"""The ``presence`` event package (RFC 3856), bodies in PIDF (RFC 3863).

Facts:
- Publications are merged by ``bodies.pidf.aggregate_pidf``: every tuple,
  person and device once, the newest publication winning an id.
- A removed or expired publication is shown once with its tuples closed, so
  watchers are never left with stale state (what Kamailio and OpenSIPS do).
- With no publication the NOTIFY has no body, unless
  ``force_dummy_presence`` asks for a canned "offline" document.
- Authorization filtering (RFC 5025 §3.3) happens per watcher in ``render``;
  results are cached per aggregate and transformation set, because many
  watchers of one presentity usually share the same rules.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from presencex.auth.transform import filter_pidf
from presencex.bodies import pidf
from presencex.events.base import WatcherView

# Enough for every presentity active in a NOTIFY burst to share its filtered
# bodies between watchers; cleared wholesale past it (cheap, rarely hit).
FILTER_CACHE_SIZE = 1024


@dataclass(slots=True)
class PresencePackage:
    force_dummy_presence: bool = False
    name: str = "presence"
    publish_types: tuple[str, ...] = (pidf.PIDF_CONTENT_TYPE,)
    notify_type: str = pidf.PIDF_CONTENT_TYPE
    versioned: bool = False
    watched_event: str | None = None
    authorized: bool = True
    _filtered: dict[tuple[bytes, object], bytes] = field(default_factory=dict)

    def validate(self, body: bytes) -> None:
        pidf.validate_pidf(body)

    def aggregate(self, bodies: Sequence[bytes], presentity: str) -> bytes | None:
        return pidf.aggregate_pidf(bodies, presentity)

    def removed(self, body: bytes) -> bytes | None:
        return pidf.closed_pidf(body)

    def empty_body(self, presentity: str) -> bytes | None:
        return pidf.offline_pidf(presentity) if self.force_dummy_presence else None

    def render(self, aggregate: bytes | None, view: WatcherView) -> bytes | None:
        body = aggregate if aggregate is not None else self.empty_body(view.presentity)
        decision = view.decision
        if decision is None or body is None:
            return body
        if decision.sub_handling == "polite-block":
            return pidf.neutral_pidf(view.presentity)
        # bytes cache their hash, so the key costs one hash per aggregate.
        key = (body, decision.transformations)
        cached = self._filtered.get(key)
        if cached is None:
            if len(self._filtered) > FILTER_CACHE_SIZE:
                self._filtered.clear()
            cached = filter_pidf(body, decision.transformations)
            self._filtered[key] = cached
        return cached
