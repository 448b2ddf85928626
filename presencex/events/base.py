"""The event-package interface: what every SIP event package implements.

presence_xml "constructs and adds 3 events" to the presence module; here each
is an object satisfying ``EventPackage`` and the registry holds the enabled
ones.  The actor and state code only ever talk to this interface, so adding an
event touches ``events/`` and ``bodies/`` and nothing else.

Facts:
- ``name`` is the canonical event name with its distinguishing parameters
  (``dialog;sla``), the key of subscriptions and publications.
- ``aggregate`` merges the live publications of one presentity, oldest first,
  into one document (or None when there is nothing to say).
- ``render`` turns that aggregate into the body one subscription receives:
  the place for per-watcher filtering (authorization) and per-subscription
  version numbers.  It must not re-parse when nothing needs changing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from presencex.bodies.watcherinfo import WatcherEntry

if TYPE_CHECKING:
    from presencex.auth.rules import Decision


@dataclass(frozen=True, slots=True)
class WatcherView:
    """What a package may know of the one subscription it renders for."""

    watcher: str
    presentity: str
    version: int
    decision: Decision | None  # None: force_active, no rules consulted
    # Watcher-info packages only: the entries to list, and whether the list
    # is the full state or only what changed since the last NOTIFY.
    watchers: tuple[WatcherEntry, ...] = ()
    full: bool = True


class EventPackage(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def publish_types(self) -> tuple[str, ...]:
        """Content types accepted in PUBLISH; empty when the event is not publishable."""
        ...

    @property
    def notify_type(self) -> str:
        """The Content-Type of NOTIFY bodies, which a SUBSCRIBE's Accept must allow."""
        ...

    @property
    def versioned(self) -> bool:
        """True when the body carries a per-subscription version that must increase."""
        ...

    @property
    def watched_event(self) -> str | None:
        """For watcher-info packages (presence.winfo → "presence"): the event
        whose watchers the body lists, from the actor's subscriptions rather
        than from publications.  None for every other package."""
        ...

    @property
    def authorized(self) -> bool:
        """True when pres-rules decide who may watch (presence); False: any watcher is active."""
        ...

    def validate(self, body: bytes) -> None:
        """Raise BodyError with a reason if the body is not a valid document."""
        ...

    def aggregate(self, bodies: Sequence[bytes], presentity: str) -> bytes | None: ...

    def removed(self, body: bytes) -> bytes | None:
        """What watchers are shown of a publication that was removed or expired."""
        ...

    def empty_body(self, presentity: str) -> bytes | None:
        """The NOTIFY body when nothing is published (None: no body)."""
        ...

    def render(self, aggregate: bytes | None, view: WatcherView) -> bytes | None: ...
