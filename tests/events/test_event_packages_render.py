"""What each event package renders for one watcher, without the state machine."""

from __future__ import annotations

from presencex.auth.rules import Decision, Provide, Transformations
from presencex.bodies.dialoginfo import aggregate_dialoginfo, dialog_states
from presencex.bodies.pidf import offline_pidf, pidf_ids
from presencex.bodies.xmlparse import parse_xml
from presencex.events.base import WatcherView
from presencex.events.dialog import DialogPackage
from presencex.events.presence import PresencePackage

ALICE = "sip:alice@example.com"
BOB = "sip:bob@example.com"

BLF_RINGING = b"""<?xml version="1.0"?>
<dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info" version="4" state="full" entity="sip:alice@example.com">
  <dialog id="d1" direction="recipient"><state>early</state></dialog>
</dialog-info>
"""

PIDF = b"""<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="sip:alice@example.com">
<tuple id="t1"><status><basic>open</basic></status></tuple>
<tuple id="t2"><status><basic>closed</basic></status></tuple>
</presence>"""


def view(version: int = 0, decision: Decision | None = None) -> WatcherView:
    return WatcherView(watcher=BOB, presentity=ALICE, version=version, decision=decision)


def test_dialog_render_sets_each_subscriptions_version() -> None:
    package = DialogPackage()
    aggregate = package.aggregate([BLF_RINGING], ALICE)
    assert aggregate is not None
    for version in (0, 1, 17):
        body = package.render(aggregate, view(version))
        assert body is not None
        root = parse_xml(body)
        assert (root.get("version"), root.get("state"), root.get("entity")) == (
            str(version),
            "full",
            ALICE,
        )
        assert dialog_states(body) == {"d1": "early"}


def test_dialog_render_of_nothing_is_the_idle_document_with_the_version() -> None:
    body = DialogPackage().render(None, view(3))
    assert body == aggregate_dialoginfo((), ALICE, 3)
    assert parse_xml(body).get("version") == "3"


def test_presence_render_filters_per_decision_and_polite_block_is_offline() -> None:
    package = PresencePackage()
    aggregate = package.aggregate([PIDF], ALICE)
    assert aggregate is not None
    assert package.render(aggregate, view()) == aggregate  # force_active: no rules
    only_t1 = Transformations(services=Provide(occurrence_ids=frozenset({"t1"})))
    allow = Decision(sub_handling="allow", transformations=only_t1, matched_rule_ids=())
    filtered = package.render(aggregate, view(decision=allow))
    assert filtered is not None
    assert pidf_ids(filtered) == {"t1": "tuple"}
    assert package.render(aggregate, view(decision=allow)) == filtered  # from the cache
    polite = Decision(sub_handling="polite-block", transformations=only_t1, matched_rule_ids=())
    assert package.render(aggregate, view(decision=polite)) == offline_pidf(ALICE)
