"""The registry of enabled event packages: what the server accepts.

Facts:
- An Event header names a package and parameters; ``dialog;sla`` and
  ``dialog;ma`` are distinct events from ``dialog`` (draft-anil-sipping-bla),
  other parameters (``id``) identify subscriptions, not events.
- ``allow_events`` lists exactly the enabled events, for 489 answers
  (RFC 6665 §8.2.2).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from presencex.events.base import EventPackage
from presencex.sip.uri import EventHeader

# Event parameters that make a different event rather than a subscription id.
_DISTINGUISHING_PARAMS = ("sla", "ma")


def event_name(event: EventHeader) -> str:
    name = event.package
    for param in _DISTINGUISHING_PARAMS:
        # Names are lower-cased by parse_event; ``sla`` usually has no value,
        # so presence, not event.param()'s value, is what counts.
        if any(key == param for key, _ in event.params):
            name += f";{param}"
    return name


class Registry:
    def __init__(self, packages: Iterable[EventPackage]) -> None:
        self._packages: dict[str, EventPackage] = {}
        for package in packages:
            if package.name in self._packages:
                raise ValueError(f"event {package.name} registered twice")
            if not package.notify_type:
                raise ValueError(f"event {package.name} has no NOTIFY content type")
            self._packages[package.name] = package
        self.allow_events = ", ".join(self._packages)

    def get(self, name: str) -> EventPackage | None:
        return self._packages.get(name)

    def lookup(self, event: EventHeader) -> EventPackage | None:
        return self._packages.get(event_name(event))

    def __iter__(self) -> Iterator[EventPackage]:
        return iter(self._packages.values())

    def names(self) -> tuple[str, ...]:
        return tuple(self._packages)
