"""Record factories for the store tests (a module, not conftest, so tests import it)."""

from __future__ import annotations

from presencex.store.records import DialogKey, Publication, Subscription


def make_publication(n: int = 1, **changes: object) -> Publication:
    fields: dict[str, object] = {
        "presentity": "sip:alice@example.com",
        "event": "presence",
        "etag": f"etag-{n}",
        "expires_at": 2_000_000_000.0 + n,
        "received_at": 1_700_000_000.0 + n,
        "body": b"<presence xmlns='urn:ietf:params:xml:ns:pidf'/>\x00\xff",
        "sender": "sip:alice@192.0.2.1:5060",
        "seq": n,
    }
    fields.update(changes)
    return Publication(**fields)


def make_subscription(n: int = 1, **changes: object) -> Subscription:
    fields: dict[str, object] = {
        "key": DialogKey(call_id=f"call-{n}@192.0.2.2", to_tag=f"ours-{n}", from_tag=f"theirs-{n}"),
        "presentity": "sip:alice@example.com",
        "event": "presence",
        "event_id": f"id{n}",
        "watcher_uri": "sips:bob@example.org",
        "to_uri": "sip:alice@example.com;x=1",
        "remote_cseq": 7 + n,
        "local_cseq": 3 + n,
        "contact": "sip:bob@192.0.2.2:5070;transport=tcp",
        "route_set": ("<sip:p1.example.net;lr>", '"Edge, Proxy" <sip:p2.example.net;lr;x="a,b">'),
        "expires_at": 2_000_000_100.0 + n,
        "status": "pending",
        "reason": "probation",
        "version": 4,
        "local_socket": "tcp:192.0.2.10:5060",
        "local_contact": "sip:presence@192.0.2.10:5060;transport=tcp",
        "source": "tcp:192.0.2.2:40123",
        "user_agent": "Phone/1.0",
        "updated_at": 1_700_000_050.0,
    }
    fields.update(changes)
    return Subscription(**fields)
