"""The durable records of presence state: one publication, one subscription.

Facts:
- Times are wall-clock epoch seconds (float in memory, int in sqlite, as
  Kamailio's ``expires`` columns are absolute unix times).
- A subscription is keyed by its dialog: (call_id, to_tag, from_tag), the
  UNIQUE key of Kamailio's ``active_watchers``.
- A publication is keyed by (presentity, event, etag), the UNIQUE key of
  Kamailio's ``presentity`` table (username, domain, event, etag).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

SubscriptionStatus = Literal["active", "pending", "terminated", "waiting"]

# Kamailio's numbering of active_watchers.status / watchers.status
# (presence/subscribe.h), so a table shared with Kamailio reads the same.
STATUS_CODES: dict[str, int] = {"active": 1, "pending": 2, "terminated": 3, "waiting": 4}
STATUS_NAMES: dict[int, SubscriptionStatus] = {
    1: "active",
    2: "pending",
    3: "terminated",
    4: "waiting",
}


@dataclass(frozen=True, slots=True)
class Publication:
    presentity: str  # AOR, "sip:alice@example.com"
    event: str  # canonical event name, "presence" or "dialog;sla"
    etag: str
    expires_at: float
    received_at: float
    body: bytes
    sender: str  # the publisher's Contact or source address, for logs
    # Arrival order within the presentity: aggregation puts newer ones last.
    seq: int = 0


@dataclass(frozen=True, slots=True)
class DialogKey:
    call_id: str
    to_tag: str  # ours
    from_tag: str  # the watcher's


@dataclass(frozen=True, slots=True)
class Subscription:
    key: DialogKey
    presentity: str  # AOR of the Request-URI
    event: str  # canonical event name
    event_id: str | None  # Event header "id" parameter (RFC 6665 §8.2.1)
    watcher_uri: str  # From URI (AOR)
    to_uri: str  # To URI as the watcher wrote it
    remote_cseq: int
    local_cseq: int  # CSeq of the last NOTIFY we sent in this dialog
    contact: str  # watcher's Contact URI: NOTIFY target
    route_set: tuple[str, ...]  # from Record-Route, in the order NOTIFY uses it
    expires_at: float
    status: SubscriptionStatus
    reason: str | None
    version: int  # body version counter (winfo, dialog-info), survives restarts
    local_socket: str  # "udp:127.0.0.1:5060": where the SUBSCRIBE arrived
    local_contact: str  # our Contact in the dialog
    source: str  # "tcp:127.0.0.1:40000": where it came from, for TCP reuse
    user_agent: str = ""
    updated_at: float = 0.0
