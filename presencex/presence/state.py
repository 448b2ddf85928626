"""One presentity's state and every rule about it: pure, synchronous logic.

Facts and invariants:
- ``handle(msg, now)`` returns effects in the order they must happen; a
  ``Persist`` effect must be committed before any ``Reply`` after it, so a
  2xx only ever backs committed state.
- ``now`` is wall-clock epoch seconds (the unit of the store's ``expires``).
- Publications of one event keep arrival order in their dict (a modify moves
  to the end): aggregation takes them oldest first and the newest wins an id.
- At most one NOTIFY per subscription is outstanding; a change while one is
  in flight marks the subscription dirty and the current state goes out when
  the answer arrives.  Bodies are full state (winfo: a full list), so nothing
  is lost by coalescing, and a dead watcher costs one NOTIFY until Timer F.
- SUBSCRIBE is answered 200, never 202: RFC 6665 §8.3.1 deprecates 202, and
  Kamailio answers 200 too.
"""

from __future__ import annotations

import hashlib
import heapq
import logging
import sys
from collections.abc import Iterable
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import assert_never
from urllib.parse import quote

from presencex.auth.rules import Decision, RuleSet, evaluate, parse_rules
from presencex.bodies.pidf import pidf_sphere, validate_pidf
from presencex.bodies.watcherinfo import WatcherEntry
from presencex.bodies.xmlparse import BodyError
from presencex.events.base import EventPackage, WatcherView
from presencex.events.registry import Registry
from presencex.presence.messages import (
    Effect,
    Expire,
    FetchDocument,
    Message,
    NotifyAnswered,
    Persist,
    PersistLater,
    PublicationsLoaded,
    Publish,
    Query,
    Refresh,
    ReloadPublications,
    Reply,
    RulesChanged,
    SendNotify,
    Subscribe,
)
from presencex.sip.build import build_request, new_tag
from presencex.sip.errors import SipError
from presencex.sip.message import Request
from presencex.sip.uri import parse_name_addr, parse_uri
from presencex.store.records import DialogKey, Publication, Subscription, SubscriptionStatus
from presencex.store.writer import (
    DropPublication,
    DropSubscription,
    PutPublication,
    PutSubscription,
    PutWatcher,
    StoreOp,
)
from presencex.transport.peer import Peer

log = logging.getLogger(__name__)

# A presence NOTIFY does not persist its CSeq each time (that would be one
# write per NOTIFY); every CSEQ_PERSIST_EVERY-th does, and a reload skips
# CSEQ_RELOAD_GAP ahead, so CSeq never goes backwards after a restart.
CSEQ_PERSIST_EVERY = 256
CSEQ_RELOAD_GAP = 2 * CSEQ_PERSIST_EVERY


@dataclass(frozen=True, slots=True)
class StateConfig:
    registry: Registry
    force_active: bool = False
    min_expires: int = 30
    max_expires: int = 3600
    default_expires: int = 3600
    server_header: str = "presencex"
    # What a watcher whose access was revoked is told (Kamailio's
    # xcapauth_userdel_reason), e.g. "probation;retry-after=30".
    xcapauth_userdel_reason: str = "probation"
    enable_sphere_check: bool = False
    pidf_manipulation: bool = False
    # How long a new watcher's first NOTIFY waits for the rules to arrive
    # before it goes out as pending: long enough for the table or a cached
    # fetch, short enough to count as "immediately" (RFC 6665 §4.2.1.2).
    rules_wait: float = 2.0
    max_subscriptions: int = 1000
    max_publications: int = 100


@dataclass(slots=True)
class Watch:
    record: Subscription
    in_flight: int | None = None  # CSeq of the outstanding NOTIFY
    dirty: bool = False
    # How this watcher's last transition is reported to winfo (RFC 3858 §4.4).
    winfo_event: str = "subscribe"
    # Winfo subscriptions only: changes not yet sent, and whether the next
    # NOTIFY must carry the full list (the first one, RFC 3857 §5.2).
    winfo_pending: dict[str, WatcherEntry] | None = None  # made on first use
    winfo_full: bool = True
    # Authorization: the decision this watcher's view follows (None with
    # force_active or no rules), and whether its first NOTIFY waits for rules.
    decision: Decision | None = None
    held: bool = False
    # A fetch (Expires: 0, RFC 6665 §3.3.6) waiting for its documents: never
    # persisted, ended by its one NOTIFY.
    fetch: bool = False


@dataclass(frozen=True, slots=True)
class _Shown:
    """An aggregate to show in place of the current one: the state with a
    removed publication's goodbye, built once for all its watchers.  A box,
    because the aggregate itself may be None (no stored body parses)."""

    aggregate: bytes | None


@lru_cache(maxsize=65536)
def local_contact(presentity: str, local: str) -> str:
    """Our Contact for a dialog: it carries the presentity, so in-dialog
    requests (sent to it, RFC 3261 §12.2.1.1) route to the right actor
    without a global dialog table."""
    transport, _, hostport = local.partition(":")
    return f"<sip:{quote(presentity, safe='')}@{hostport};transport={transport}>"


class PresentityState:
    # One per presentity with state, tens of thousands at once: no __dict__.
    __slots__ = (
        "_aggregates",
        "_last_pub_seq",
        "_sphere_memo",
        "_timer_seq",
        "_timers",
        "config",
        "manipulation",
        "manipulation_known",
        "manipulation_requested",
        "publications",
        "rules",
        "rules_known",
        "rules_requested",
        "uri",
        "watches",
    )

    def __init__(self, uri: str, config: StateConfig) -> None:
        self.uri = uri
        self.config = config
        self.watches: dict[DialogKey, Watch] = {}
        self.publications: dict[str, dict[str, Publication]] = {}
        self._aggregates: dict[str, bytes | None] = {}
        # The presence aggregate's sphere and the aggregate it was read from.
        self._sphere_memo: tuple[bytes, str | None] | None = None
        self._timers: list[tuple[float, int, str, object]] = []
        self._timer_seq = 0
        self._last_pub_seq = 0
        # pres-rules (RFC 5025) and pidf-manipulation (RFC 4827) documents,
        # as the document source last delivered them.
        self.rules: RuleSet | None = None
        self.rules_known = False
        self.rules_requested = False
        self.manipulation: bytes | None = None
        self.manipulation_known = False
        self.manipulation_requested = False

    # -- life cycle -------------------------------------------------------

    def empty(self) -> bool:
        return not self.watches and not self.publications

    def next_deadline(self) -> float | None:
        return self._timers[0][0] if self._timers else None

    def load(
        self, publications: Iterable[Publication], subscriptions: Iterable[Subscription], now: float
    ) -> list[Effect]:
        """Reinstall state read from the store after a restart and tell every
        watcher the current state (RFC 6665 allows a fresh NOTIFY)."""
        for pub in sorted(publications, key=lambda p: p.seq):
            self.publications.setdefault(pub.event, {})[pub.etag] = pub
            self._last_pub_seq = max(self._last_pub_seq, pub.seq)
            self._schedule(pub.expires_at, "pub", (pub.event, pub.etag))
        effects: list[Effect] = []
        for sub in subscriptions:
            watch = Watch(replace(sub, local_cseq=sub.local_cseq + CSEQ_RELOAD_GAP))
            self.watches[sub.key] = watch
            self._schedule(sub.expires_at, "sub", sub.key)
        for watch in self.watches.values():
            if self._needs_rules(watch.record.event):
                self._hold(watch, now)
            else:
                effects.extend(self._notify(watch, now))
        if any(w.held for w in self.watches.values()):
            effects.extend(self._request_rules())
        if self.watches:
            effects.extend(self._request_manipulation())
        return effects

    # -- dispatch ----------------------------------------------------------

    def handle(self, msg: Message, now: float) -> list[Effect]:
        match msg:
            case Publish():
                try:
                    return self._publish(msg, now)
                except (SipError, BodyError) as exc:
                    return [_error_reply(msg.request, msg.peer, exc)]
            case Subscribe():
                try:
                    return self._subscribe(msg, now)
                except (SipError, BodyError) as exc:
                    return [_error_reply(msg.request, msg.peer, exc)]
            case NotifyAnswered():
                return self._notify_answered(msg, now)
            case Expire():
                return self._expire(now)
            case Refresh():
                effects = self._refresh(msg, now)
                if msg.reply is not None:
                    msg.reply({"presentity": self.uri, "event": msg.event, "type": msg.kind})
                return effects
            case RulesChanged():
                return self._document_changed(msg, now)
            case PublicationsLoaded():
                return self._publications_loaded(msg, now)
            case Query():
                if msg.what == "subscriptions":
                    msg.reply([_describe_sub(w.record, now) for w in self.watches.values()])
                else:
                    msg.reply(
                        [
                            {"event": p.event, "etag": p.etag, "expires": int(p.expires_at - now)}
                            for pubs in self.publications.values()
                            for p in pubs.values()
                        ]
                    )
                return []
            case _:
                assert_never(msg)

    # -- PUBLISH (RFC 3903) -------------------------------------------------

    def _expires(self, request: Request) -> int:
        expires = request.expires
        if expires is None:
            return self.config.default_expires
        if 0 < expires < self.config.min_expires:
            raise SipError(
                423, "Interval Too Brief", (("Min-Expires", str(self.config.min_expires)),)
            )
        return min(expires, self.config.max_expires)

    def _publish(self, msg: Publish, now: float) -> list[Effect]:
        request = msg.request
        package = self._package(msg.event)
        if not package.publish_types:
            raise SipError(489, "Bad Event", (("Allow-Events", self.config.registry.allow_events),))
        expires = self._expires(request)
        if_match = request.headers.get("SIP-If-Match")
        body = request.body
        if body:
            content_type = request.content_type
            if content_type not in package.publish_types:
                raise SipError(
                    415, "Unsupported Media Type", (("Accept", ", ".join(package.publish_types)),)
                )
            package.validate(body)
        pubs = self.publications.get(msg.event, {})
        if if_match is None:
            if not body:
                raise SipError(400, "Initial PUBLISH without body")
            if expires == 0:
                raise SipError(400, "Initial PUBLISH with Expires 0")
            if sum(map(len, self.publications.values())) >= self.config.max_publications:
                raise SipError(403, "Forbidden: too many publications for this presentity")
            old = None
        else:
            old = pubs.get(if_match)
            if old is None:
                raise SipError(412, "Conditional Request Failed")
        if expires == 0:
            assert old is not None
            return self._remove_publication(old, now, request, msg.peer)
        etag = new_tag()
        pub = Publication(
            presentity=self.uri,
            event=msg.event,
            etag=etag,
            expires_at=now + expires,
            received_at=now,
            body=body if body else old.body if old is not None else b"",
            sender=str(msg.peer),
            seq=self._next_pub_seq(now),
        )
        ops: list[StoreOp] = [PutPublication(pub)]
        events = self.publications.setdefault(msg.event, {})
        if old is not None:
            del events[old.etag]
            ops.insert(0, DropPublication(self.uri, msg.event, old.etag))
        events[etag] = pub
        self._schedule(pub.expires_at, "pub", (msg.event, etag))

        def undo() -> None:
            kept = self.publications.setdefault(pub.event, {})
            kept.pop(pub.etag, None)
            if old is not None:
                kept[old.etag] = old
            if not kept:
                del self.publications[pub.event]
            self._aggregates.pop(pub.event, None)

        effects: list[Effect] = [
            Persist(tuple(ops), undo),
            Reply(request, msg.peer, 200, None, (("SIP-ETag", etag), ("Expires", str(expires)))),
        ]
        if body:  # a refresh changes nothing a watcher sees (RFC 3903 §4.2)
            self._aggregates.pop(msg.event, None)
            if msg.event == "presence" and self.config.enable_sphere_check and self.rules:
                # The sphere may have moved: some watchers' decisions with it.
                effects.extend(self._reauthorize(now))
            effects.extend(self._notify_event(msg.event, now))
        return effects

    def _next_pub_seq(self, now: float) -> int:
        # Microseconds since the epoch: increasing across restarts too, which
        # a plain counter would not be.
        self._last_pub_seq = max(self._last_pub_seq + 1, int(now * 1_000_000))
        return self._last_pub_seq

    def _remove_publication(
        self, pub: Publication, now: float, request: Request | None, peer: Peer | None
    ) -> list[Effect]:
        events = self.publications[pub.event]
        del events[pub.etag]
        if not events:
            del self.publications[pub.event]
        self._aggregates.pop(pub.event, None)
        op = DropPublication(self.uri, pub.event, pub.etag)
        effects: list[Effect] = []
        if request is not None and peer is not None:
            effects += [Persist((op,)), Reply(request, peer, 200, None, (("Expires", "0"),))]
        else:
            effects.append(PersistLater((op,)))
        package = self._package(pub.event)
        goodbye = package.removed(pub.body)
        effects.extend(self._notify_event(pub.event, now, extra=goodbye))
        return effects

    def _bodies(self, event: str, pubs: dict[str, Publication]) -> list[bytes]:
        """Bodies to aggregate, oldest first.  The pidf-manipulation document
        is permanent state (RFC 4827): it goes first, so a device publishing
        the same id overrides it."""
        bodies = [p.body for p in pubs.values()]
        if event == "presence" and self.manipulation is not None:
            bodies.insert(0, self.manipulation)
        return bodies

    def _aggregate(self, event: str) -> bytes | None:
        if event in self._aggregates:
            return self._aggregates[event]
        bodies = self._bodies(event, self.publications.get(event, {}))
        package = self._package(event)
        body = package.aggregate(bodies, self.uri) if bodies else None
        self._aggregates[event] = body
        return body

    # -- SUBSCRIBE / NOTIFY (RFC 6665) -------------------------------------

    def _subscribe(self, msg: Subscribe, now: float) -> list[Effect]:
        request = msg.request
        package = self._package(msg.event)
        expires = self._expires(request)
        to_tag = request.to.tag
        if to_tag is None:
            return self._initial_subscribe(msg, package, expires, now)
        key = DialogKey(request.call_id, to_tag, request.from_.tag or "")
        watch = self.watches.get(key)
        if watch is None:
            raise SipError(481, "Subscription Does Not Exist")
        record = watch.record
        if record.event != msg.event:
            raise SipError(489, "Bad Event", (("Allow-Events", record.event),))
        cseq = request.cseq[0]
        if cseq <= record.remote_cseq:
            raise SipError(500, "CSeq Out of Order")
        if expires == 0:
            del self.watches[key]
            return [
                Persist((DropSubscription(key),)),
                Reply(request, msg.peer, 200, None, (("Expires", "0"),)),
                *self._final_notify(watch, now, "timeout"),
                *self._watcher_list_changed(watch, now),
            ]
        contacts = request.headers.get_all("Contact")
        record = replace(
            record,
            remote_cseq=cseq,
            expires_at=now + expires,
            # A refresh may change the remote target (RFC 6665 §4.1.2.1).
            contact=parse_contact(contacts[0]) if contacts else record.contact,
            source=str(msg.peer),
            updated_at=now,
        )
        watch.record = record
        self._schedule(record.expires_at, "sub", key)
        return [
            Persist((PutSubscription(record),)),
            Reply(
                request,
                msg.peer,
                200,
                None,
                (("Expires", str(expires)), ("Contact", record.local_contact)),
            ),
            *self._notify(watch, now),
        ]

    def _initial_subscribe(
        self, msg: Subscribe, package: EventPackage, expires: int, now: float
    ) -> list[Effect]:
        request = msg.request
        accept = request.headers.get_all("Accept")
        if accept and not _accepts(accept, package.notify_type):
            raise SipError(406, "Not Acceptable", (("Accept", package.notify_type),))
        contacts = request.headers.get_all("Contact")
        if not contacts:
            raise SipError(400, "Missing Contact header")
        from_ = request.from_
        if not from_.tag:
            raise SipError(400, "Missing From tag")
        event_header = request.event
        if len(self.watches) >= self.config.max_subscriptions:
            raise SipError(403, "Forbidden: too many subscriptions to this presentity")
        key = DialogKey(request.call_id, new_tag(), from_.tag)
        identity = msg.identity or aor_of(from_.uri)
        if package.watched_event is not None and identity != self.uri:
            # RFC 3857 §5.1: watcher information is the presentity's own business.
            raise SipError(403, "Forbidden: only the presentity may watch its watchers")
        needs_rules = self._needs_rules(msg.event)
        decision: Decision | None = None
        status: SubscriptionStatus = "active"
        if needs_rules:
            status = "pending"
            if self.rules_known:
                decision = self._evaluate(from_.uri, now)
                status = _status_for(decision)
        record = Subscription(
            key=key,
            presentity=self.uri,
            event=msg.event,
            event_id=event_header.id if event_header is not None else None,
            watcher_uri=from_.uri,
            # Usually the presentity itself: share that string.
            to_uri=self.uri if request.to.uri == self.uri else request.to.uri,
            remote_cseq=request.cseq[0],
            local_cseq=0,
            contact=parse_contact(contacts[0]),
            route_set=_route_set(request),
            expires_at=now + expires,
            status=status,
            reason=None,
            version=0,
            local_socket=msg.peer.local,
            local_contact=local_contact(self.uri, msg.peer.local),
            # Many watchers share a peer (a proxy, a load generator): one string.
            source=sys.intern(str(msg.peer)),
            user_agent=sys.intern(request.headers.get("User-Agent") or ""),
            updated_at=now,
        )
        watch = Watch(record, decision=decision)
        reply = Reply(
            request,
            msg.peer,
            200,
            None,
            (("Expires", str(expires)), ("Contact", record.local_contact)),
            to_tag=key.to_tag,
        )
        if status == "terminated":
            # RFC 5025 §3.2.1 block: refused, and remembered as refused.
            return [
                Persist(
                    (
                        PutWatcher(
                            self.uri, record.watcher_uri, msg.event, "terminated", "rejected", now
                        ),
                    )
                ),
                reply,
                *self._final_notify(watch, now, "rejected"),
            ]
        if expires == 0:
            # A fetch (RFC 6665 §3.3.6): one NOTIFY with the state, nothing
            # kept; documents not known yet are waited for (rules_wait).
            unknown_rules = needs_rules and not self.rules_known
            if unknown_rules or self._waits_for_manipulation(msg.event):
                watch.fetch = True
                self._hold(watch, now)
                self.watches[key] = watch
                fetching: list[Effect] = [reply]
                if unknown_rules:
                    fetching.extend(self._request_rules())
                if package.authorized:
                    fetching.extend(self._request_manipulation())
                return fetching
            return [reply, *self._fetch_notify(watch, now)]
        self.watches[key] = watch
        self._schedule(record.expires_at, "sub", key)
        ops: list[StoreOp] = [PutSubscription(record)]
        if status != "active":
            # Kamailio's watchers table: who asked and is not (yet) allowed.
            ops.append(PutWatcher(self.uri, record.watcher_uri, msg.event, status, None, now))

        def undo() -> None:
            self.watches.pop(key, None)

        effects: list[Effect] = [Persist(tuple(ops), undo), reply]
        if needs_rules and not self.rules_known:
            self._hold(watch, now)
            effects.extend(self._request_rules())
        elif self._waits_for_manipulation(msg.event):
            # The permanent state is part of what the first NOTIFY must say.
            self._hold(watch, now)
        else:
            effects.extend(self._notify(watch, now))
        if package.authorized:
            effects.extend(self._request_manipulation())
        effects.extend(self._watcher_list_changed(watch, now))
        return effects

    def _body_for(self, watch: Watch, now: float) -> bytes | None:
        record = watch.record
        if record.status != "active":
            return None
        package = self._package(record.event)
        if package.watched_event is not None:
            return self._winfo_body(watch, package.watched_event, package, now)
        view = WatcherView(record.watcher_uri, self.uri, record.version, watch.decision)
        return package.render(self._aggregate(record.event), view)

    # -- watcher information (RFC 3857) -------------------------------------

    def _winfo_body(
        self, watch: Watch, watched: str, package: EventPackage, now: float
    ) -> bytes | None:
        full = watch.winfo_full
        if full:
            # The watched event's watchers first, then those of the
            # presentity's other events (never other winfo subscriptions).
            watches = sorted(
                (w for w in self.watches.values() if not self._is_winfo(w)),
                key=lambda w: w.record.event != watched,
            )
            entries = tuple(self._winfo_entry(w, now, watched) for w in watches)
        else:
            entries = tuple(watch.winfo_pending.values()) if watch.winfo_pending else ()
        watch.winfo_pending = None
        watch.winfo_full = False
        record = watch.record
        view = WatcherView(record.watcher_uri, self.uri, record.version, None, entries, full)
        return package.render(None, view)

    def _winfo_entry(self, watch: Watch, now: float, watched: str) -> WatcherEntry:
        record = watch.record
        return WatcherEntry(
            id=_watcher_id(record.key),
            status=record.status,
            event=watch.winfo_event,
            uri=aor_of(record.watcher_uri),
            expiration=max(0, int(record.expires_at - now))
            if record.status != "terminated"
            else None,
            package=None if record.event == watched else record.event,
        )

    def _is_winfo(self, watch: Watch) -> bool:
        return self._package(watch.record.event).watched_event is not None

    def _watcher_list_changed(self, watch: Watch, now: float) -> list[Effect]:
        """Tell the presentity's winfo subscribers what became of this watcher."""
        if self._is_winfo(watch):
            return []
        effects: list[Effect] = []
        for other in self.watches.values():
            if other.record.status != "active" or other is watch:
                continue
            watched = self._package(other.record.event).watched_event
            if watched is None:
                continue
            entry = self._winfo_entry(watch, now, watched)
            if other.winfo_pending is None:
                other.winfo_pending = {}
            other.winfo_pending[entry.id] = entry
            effects.extend(self._notify(other, now))
        return effects

    def _notify(self, watch: Watch, now: float, shown: _Shown | None = None) -> list[Effect]:
        """The current state to one watcher (or ``shown`` in its place), or
        mark it dirty if one is in flight: the current state goes out then.
        A held watcher (first NOTIFY waiting for its documents) gets nothing
        yet: its release sends the state as it is then."""
        if watch.held:
            return []
        if watch.fetch:
            return self._fetch_notify(watch, now)
        if watch.in_flight is not None:
            watch.dirty = True
            return []
        record = watch.record
        if shown is not None and record.status == "active":
            view = WatcherView(record.watcher_uri, self.uri, record.version, watch.decision)
            body = self._package(record.event).render(shown.aggregate, view)
        else:
            body = self._body_for(watch, now)
        remaining = max(0, int(record.expires_at - now))
        state = f"{record.status};expires={remaining}"
        return self._send(watch, state, body)

    def _fetch_notify(self, watch: Watch, now: float) -> list[Effect]:
        """The one NOTIFY of a fetch: the state as this watcher may see it."""
        self.watches.pop(watch.record.key, None)
        return self._final_notify(watch, now, "timeout", self._body_for(watch, now))

    def _final_notify(
        self, watch: Watch, now: float, reason: str, body: bytes | None = None
    ) -> list[Effect]:
        record = replace(watch.record, status="terminated", reason=reason)
        watch.record = record
        # RFC 6665 reasons and RFC 3858 winfo events share their names.
        watch.winfo_event = reason.split(";", 1)[0]
        watch.in_flight = None  # the final NOTIFY goes out whatever is pending
        return self._send(watch, f"terminated;reason={reason}", body)

    def _send(self, watch: Watch, state: str, body: bytes | None) -> list[Effect]:
        record = watch.record
        cseq = record.local_cseq + 1
        package = self._package(record.event)
        version = record.version + (1 if package.versioned and body is not None else 0)
        record = replace(record, local_cseq=cseq, version=version)
        watch.record = record
        watch.in_flight = cseq
        watch.dirty = False
        event = record.event if record.event_id is None else f"{record.event};id={record.event_id}"
        headers: list[tuple[str, str]] = [("Route", route) for route in record.route_set]
        headers += [
            ("Max-Forwards", "70"),
            ("From", f"<{record.to_uri}>;tag={record.key.to_tag}"),
            ("To", f"<{record.watcher_uri}>;tag={record.key.from_tag}"),
            ("Call-ID", record.key.call_id),
            ("CSeq", f"{cseq} NOTIFY"),
            ("Contact", record.local_contact),
            ("Event", event),
            ("Subscription-State", state),
            ("Server", self.config.server_header),
        ]
        if body is not None:
            headers.append(("Content-Type", package.notify_type))
        request = build_request("NOTIFY", record.contact, headers, body or b"")
        target = _next_hop(record)
        effects: list[Effect] = [
            SendNotify(record.key, cseq, request, target, record.source, record.local_socket)
        ]
        if record.status != "terminated" and (package.versioned or cseq % CSEQ_PERSIST_EVERY == 0):
            effects.append(PersistLater((PutSubscription(record),)))
        return effects

    def _notify_event(self, event: str, now: float, extra: bytes | None = None) -> list[Effect]:
        """The event's state to its active watchers; ``extra`` (a removed
        publication's goodbye) is aggregated after the live bodies."""
        effects: list[Effect] = []
        shown: _Shown | None = None
        for watch in self.watches.values():
            if watch.record.event == event and watch.record.status == "active":
                if extra is not None and shown is None:
                    # Once for all watchers, and only if one is there: an
                    # aggregate parses every body, a render is a filter.
                    package = self._package(event)
                    bodies = [*self._bodies(event, self.publications.get(event, {})), extra]
                    shown = _Shown(package.aggregate(bodies, self.uri))
                effects.extend(self._notify(watch, now, shown))
        return effects

    def _notify_answered(self, msg: NotifyAnswered, now: float) -> list[Effect]:
        watch = self.watches.get(msg.key)
        if watch is None or watch.in_flight != msg.cseq:
            return []
        watch.in_flight = None
        # RFC 6665 §4.2.2: 481 means the subscription is gone; a timeout
        # (Timer F, reported as 408) means the watcher is unreachable.
        if msg.status in (408, 481):
            log.info(
                "NOTIFY to %s answered %d: subscription %s removed",
                watch.record.watcher_uri,
                msg.status,
                msg.key.call_id,
            )
            del self.watches[msg.key]
            watch.record = replace(watch.record, status="terminated")
            watch.winfo_event = "timeout"
            return [
                PersistLater((DropSubscription(msg.key),)),
                *self._watcher_list_changed(watch, now),
            ]
        if watch.dirty:
            return self._notify(watch, now)
        return []

    # -- timers -------------------------------------------------------------

    def _schedule(self, when: float, kind: str, key: object) -> None:
        self._timer_seq += 1
        heapq.heappush(self._timers, (when, self._timer_seq, kind, key))

    def _expire(self, now: float) -> list[Effect]:
        effects: list[Effect] = []
        while self._timers and self._timers[0][0] <= now:
            when, _, kind, key = heapq.heappop(self._timers)
            if kind == "rules":
                assert isinstance(key, DialogKey)
                held = self.watches.get(key)
                # Released already (its documents came) or gone: stale entry.
                if held is not None and held.held:
                    # The documents did not come in time: pending it is.
                    effects.extend(self._release(held, now))
            elif kind == "sub":
                assert isinstance(key, DialogKey)
                watch = self.watches.get(key)
                # A refreshed subscription has a later expiry; this entry is stale.
                if watch is None or watch.record.expires_at > when:
                    continue
                del self.watches[key]
                effects.append(PersistLater((DropSubscription(key),)))
                effects.extend(self._final_notify(watch, now, "timeout"))
                effects.extend(self._watcher_list_changed(watch, now))
            else:
                assert isinstance(key, tuple)
                event, etag = key
                pub = self.publications.get(event, {}).get(etag)
                if pub is None or pub.expires_at > when:
                    continue
                effects.extend(self._remove_publication(pub, now, None, None))
        return effects

    # -- authorization (RFC 4745, RFC 5025) ----------------------------------

    def _needs_rules(self, event: str) -> bool:
        return not self.config.force_active and self._package(event).authorized

    def _request_rules(self, revalidate: bool = False) -> list[Effect]:
        # One fetch for all watchers; the wait is each held watcher's own
        # (_hold), since the answer may stay owed for as long as the XCAP
        # server is down.
        if self.rules_requested and not revalidate:
            return []
        self.rules_requested = True
        return [FetchDocument("pres-rules", revalidate)]

    def _waits_for_manipulation(self, event: str) -> bool:
        return (
            self.config.pidf_manipulation
            and not self.manipulation_known
            and self._package(event).authorized
        )

    def _request_manipulation(self, revalidate: bool = False) -> list[Effect]:
        if not self.config.pidf_manipulation or (self.manipulation_requested and not revalidate):
            return []
        self.manipulation_requested = True
        return [FetchDocument("pidf-manipulation", revalidate)]

    def _hold(self, watch: Watch, now: float) -> None:
        """Hold a new watcher's first NOTIFY until its documents come, and at
        most rules_wait: every held watcher gets its own timer, because the
        one fetch may stay unanswered far longer than any one wait."""
        watch.held = True
        self._schedule(now + self.config.rules_wait, "rules", watch.record.key)

    def _ready(self, watch: Watch) -> bool:
        """Whether every document a held watcher's first NOTIFY waits for is known."""
        event = watch.record.event
        unknown_rules = self._needs_rules(event) and not self.rules_known
        return not unknown_rules and not self._waits_for_manipulation(event)

    def _release(self, watch: Watch, now: float) -> list[Effect]:
        watch.held = False
        return self._notify(watch, now)

    def _sphere(self) -> str | None:
        if not self.config.enable_sphere_check:
            return None
        aggregate = self._aggregate("presence")
        if aggregate is None:
            return None
        # Parsed once per aggregate, not once per watcher judged.  Keyed by
        # the cached aggregate object itself, so whatever drops that (a
        # publish, a removal, a new manipulation document) drops this too.
        memo = self._sphere_memo
        if memo is None or memo[0] is not aggregate:
            memo = self._sphere_memo = (aggregate, pidf_sphere(aggregate))
        return memo[1]

    def _evaluate(self, watcher_uri: str, now: float) -> Decision:
        return evaluate(
            self.rules,
            watcher=aor_of(watcher_uri),
            presentity=self.uri,
            now=now,
            sphere=self._sphere(),
            check_sphere=self.config.enable_sphere_check,
        )

    def _document_changed(self, msg: RulesChanged, now: float) -> list[Effect]:
        if msg.auid == "pres-rules":
            rules: RuleSet | None = None
            if msg.document is not None:
                try:
                    rules = parse_rules(msg.document)
                except BodyError as exc:
                    # A broken document grants nothing: as if there were none.
                    log.warning("pres-rules of %s refused: %s", self.uri, exc)
            self.rules = rules
            self.rules_known = True
            return self._reauthorize(now)
        if msg.auid == "pidf-manipulation":
            document = msg.document
            if document is not None:
                try:
                    validate_pidf(document)
                except BodyError as exc:
                    log.warning("pidf-manipulation of %s refused: %s", self.uri, exc)
                    document = None
            self.manipulation_known = True
            effects: list[Effect] = []
            if document != self.manipulation:
                self.manipulation = document
                self._aggregates.pop("presence", None)
                effects = self._notify_event("presence", now)
            for watch in list(self.watches.values()):
                if watch.held and self._ready(watch):
                    effects.extend(self._release(watch, now))
            return effects
        return []

    def _reauthorize(self, now: float) -> list[Effect]:
        effects: list[Effect] = []
        for watch in list(self.watches.values()):
            if self._needs_rules(watch.record.event):
                decision = self._evaluate(watch.record.watcher_uri, now)
                effects.extend(self._apply_decision(watch, decision, now))
        return effects

    def _apply_decision(self, watch: Watch, decision: Decision, now: float) -> list[Effect]:
        """Move one watcher to what the rules now say, and tell it (RFC 5025 §3.2.1)."""
        record = watch.record
        old, new = record.status, _status_for(decision)
        held = watch.held
        if held and self._ready(watch):
            # Its first NOTIFY goes out below, with the decision applied.
            watch.held = False
        if new == "terminated":
            return self._end(watch, now, "rejected")
        if watch.fetch:
            watch.decision = decision
            watch.record = replace(record, status=new)
            return self._notify(watch, now)
        if old == "active" and new == "pending":
            # RFC 6665 forbids active → pending: access revoked ends it.
            return self._end(watch, now, self.config.xcapauth_userdel_reason)
        view_changed = _view(decision) != _view(watch.decision)
        watch.decision = decision
        if old == "pending" and new == "active":
            watch.record = replace(record, status="active", updated_at=now)
            watch.winfo_event = "approved"
            watcher = PutWatcher(self.uri, record.watcher_uri, record.event, "active", None, now)
            return [
                PersistLater((PutSubscription(watch.record), watcher)),
                *self._notify(watch, now),
                *self._watcher_list_changed(watch, now),
            ]
        if held or (new == "active" and view_changed):
            return self._notify(watch, now)
        return []

    def _end(self, watch: Watch, now: float, reason: str) -> list[Effect]:
        record = watch.record
        del self.watches[record.key]
        status_reason = reason.split(";", 1)[0]
        ops: tuple[StoreOp, ...] = (
            DropSubscription(record.key),
            PutWatcher(
                self.uri, record.watcher_uri, record.event, "terminated", status_reason, now
            ),
        )
        return [
            PersistLater(ops),
            *self._final_notify(watch, now, reason),
            *self._watcher_list_changed(watch, now),
        ]

    def _refresh(self, msg: Refresh, now: float) -> list[Effect]:
        """refreshWatchers with Kamailio's types: 0 rules, 1 published state
        in the database, 2 pidf-manipulation document."""
        if msg.kind == 0:
            # Rules this actor holds must be re-read even with no watcher
            # needing them now: the next watcher would be judged by stale ones.
            if self.rules_requested or any(
                self._needs_rules(w.record.event) for w in self.watches.values()
            ):
                return self._request_rules(revalidate=True)
            return []
        if msg.kind == 1:
            return [ReloadPublications(msg.event)]
        return self._request_manipulation(revalidate=True)

    def _publications_loaded(self, msg: PublicationsLoaded, now: float) -> list[Effect]:
        events: dict[str, Publication] = {}
        for pub in sorted(msg.publications, key=lambda p: p.seq):
            if pub.expires_at > now:
                events[pub.etag] = pub
                self._schedule(pub.expires_at, "pub", (pub.event, pub.etag))
        if events:
            self.publications[msg.event] = events
        else:
            self.publications.pop(msg.event, None)
        self._aggregates.pop(msg.event, None)
        return self._notify_event(msg.event, now)

    def _package(self, event: str) -> EventPackage:
        package = self.config.registry.get(event)
        if package is None:
            raise SipError(489, "Bad Event", (("Allow-Events", self.config.registry.allow_events),))
        return package


def parse_contact(value: str, header: str = "Contact") -> str:
    """The URI of a Contact or Record-Route value, checked now: it is where
    NOTIFYs will go, so a URI we cannot send to is the SUBSCRIBE's fault
    (400 naming the header), not a failure later in the transport."""
    uri = parse_name_addr(value, header).uri
    target = parse_uri(uri, f"{header} URI")
    if target.scheme not in ("sip", "sips") or not target.host:
        raise SipError(400, f"Bad {header} header: not a SIP URI we can send to")
    return uri


def _route_set(request: Request) -> tuple[str, ...]:
    routes = tuple(request.headers.get_all("Record-Route"))
    for route in routes:
        parse_contact(route, "Record-Route")
    return routes


def _next_hop(record: Subscription) -> str:
    if record.route_set:
        return parse_contact(record.route_set[0])
    return record.contact


def _status_for(decision: Decision | None) -> SubscriptionStatus:
    """RFC 5025 §3.2.1: no rule or confirm → pending; allow and polite-block
    → active (polite-block shows a neutral document); block → refused."""
    handling = decision.sub_handling if decision is not None else None
    if handling in ("allow", "polite-block"):
        return "active"
    if handling == "block":
        return "terminated"
    return "pending"


def _view(decision: Decision | None) -> object:
    return None if decision is None else (decision.sub_handling, decision.transformations)


def _watcher_id(key: DialogKey) -> str:
    """A stable, opaque id for one subscription in winfo documents: the
    dialog identifiers themselves are not the watcher's business to see."""
    digest = hashlib.blake2s(
        f"{key.call_id}\x00{key.to_tag}\x00{key.from_tag}".encode(), digest_size=8
    )
    return "w" + digest.hexdigest()


def _accepts(accept: list[str], media_type: str) -> bool:
    major = media_type.split("/", 1)[0]
    for item in accept:
        value = item.split(";", 1)[0].strip().lower()
        if value in (media_type, "*/*", f"{major}/*"):
            return True
    return False


def _error_reply(request: Request, peer: Peer, exc: SipError | BodyError) -> Reply:
    if isinstance(exc, BodyError):
        return Reply(request, peer, 400, f"Bad body: {exc}")
    return Reply(request, peer, exc.status, exc.reason, exc.headers)


def _describe_sub(record: Subscription, now: float) -> dict[str, object]:
    return {
        "watcher": record.watcher_uri,
        "event": record.event,
        "status": record.status,
        "expires": int(record.expires_at - now),
        "call_id": record.key.call_id,
        "contact": record.contact,
    }


def aor_of(uri: str) -> str:
    return parse_uri(uri).aor
