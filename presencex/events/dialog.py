"""The ``dialog`` event (RFC 4235) and its shared-line forms ``dialog;sla`` and
``dialog;ma`` (draft-anil-sipping-bla), bodies in dialog-info.

Facts:
- Every device of a line (or the phone of a BLF key) PUBLISHes its dialogs;
  the aggregate is one ``dialog-info`` document of the AOR with every dialog
  once, ``state="full"``, newest publication winning a dialog id.
- ``version`` counts NOTIFYs per subscription (RFC 4235 §4.1), so it is set in
  ``render`` from the subscription's counter, which survives restarts.
- With nothing published the document is empty: the line is idle, which is
  what a busy-lamp field must show (no body would leave the lamp unknown).
- presence_xml adds ``dialog;sla``; ``dialog`` is what Kamailio's
  presence_dialoginfo adds and what IP phones subscribe to for BLF.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from presencex.bodies import dialoginfo
from presencex.events.base import WatcherView


@dataclass(slots=True)
class DialogPackage:
    name: str = "dialog"
    publish_types: tuple[str, ...] = (dialoginfo.DIALOGINFO_CONTENT_TYPE,)
    notify_type: str = dialoginfo.DIALOGINFO_CONTENT_TYPE
    versioned: bool = True
    watched_event: str | None = None
    authorized: bool = False

    def validate(self, body: bytes) -> None:
        dialoginfo.validate_dialoginfo(body)

    def aggregate(self, bodies: Sequence[bytes], presentity: str) -> bytes | None:
        return dialoginfo.aggregate_dialoginfo(bodies, presentity, 0)

    def removed(self, body: bytes) -> bytes | None:
        # A device that stops publishing has no dialogs: the aggregate of the
        # others says so, nothing extra to show.
        return None

    def empty_body(self, presentity: str) -> bytes | None:
        return dialoginfo.aggregate_dialoginfo((), presentity, 0)

    def render(self, aggregate: bytes | None, view: WatcherView) -> bytes | None:
        if aggregate is None:
            return dialoginfo.aggregate_dialoginfo((), view.presentity, view.version)
        # Only the version differs between watchers: rewritten in the bytes,
        # not by parsing the shared aggregate again for each of them.
        return dialoginfo.with_version(aggregate, view.version)
