"""Every message a presentity actor receives, and every effect it asks for.

Messages arrive on the actor's inbox; effects are what ``state.handle``
returns for the loop to perform, in order.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from presencex.sip.message import Request
from presencex.store.records import DialogKey, Publication
from presencex.store.writer import StoreOp
from presencex.transport.peer import Peer


@dataclass(frozen=True, slots=True)
class Publish:
    request: Request
    peer: Peer
    event: str
    identity: str = ""  # the sender's AOR: asserted by a trusted proxy, or From


@dataclass(frozen=True, slots=True)
class Subscribe:
    request: Request
    peer: Peer
    event: str
    identity: str = ""  # the watcher's AOR: asserted by a trusted proxy, or From


@dataclass(frozen=True, slots=True)
class NotifyAnswered:
    """The final outcome of a NOTIFY: its status, 408 when Timer F fired."""

    key: DialogKey
    cseq: int
    status: int


@dataclass(frozen=True, slots=True)
class Expire:
    """Sent by the actor loop to itself when the state's deadline is reached."""


@dataclass(frozen=True, slots=True)
class Refresh:
    """refreshWatchers: ``kind`` 0 rules changed, 1 state changed in the
    database, 2 pidf-manipulation document changed (Kamailio's meaning)."""

    event: str
    kind: int
    reply: Callable[[dict[str, object]], None] | None = None


@dataclass(frozen=True, slots=True)
class RulesChanged:
    """A document for this presentity arrived or changed (XCAP or table)."""

    auid: str
    document: bytes | None
    etag: str | None


@dataclass(frozen=True, slots=True)
class Query:
    """Control-socket introspection, answered through ``reply``."""

    what: Literal["subscriptions", "publications"]
    reply: Callable[[object], None]


@dataclass(frozen=True, slots=True)
class PublicationsLoaded:
    """refreshWatchers type 1: the event's publications as the database holds them."""

    event: str
    publications: tuple[Publication, ...]


Message = (
    Publish
    | Subscribe
    | NotifyAnswered
    | Expire
    | Refresh
    | RulesChanged
    | Query
    | PublicationsLoaded
)


@dataclass(frozen=True, slots=True)
class Reply:
    request: Request
    peer: Peer
    status: int
    reason: str | None = None
    headers: tuple[tuple[str, str], ...] = ()
    to_tag: str | None = None


@dataclass(frozen=True, slots=True)
class SendNotify:
    key: DialogKey
    cseq: int
    request: Request
    target: str  # the URI to send to: first route, or the remote target
    source: str  # where the subscription came from, for TCP connection reuse
    local: str  # the local socket the dialog lives on


@dataclass(frozen=True, slots=True)
class Persist:
    """Commit before the effects that follow it (a 2xx backs what it says).
    If the commit fails, ``undo`` takes back what the state already did, so
    memory never holds what was not acknowledged."""

    ops: tuple[StoreOp, ...]
    undo: Callable[[], None] | None = None


@dataclass(frozen=True, slots=True)
class PersistLater:
    """Bookkeeping that need not hold up a reply (NOTIFY CSeq, versions)."""

    ops: tuple[StoreOp, ...]


@dataclass(frozen=True, slots=True)
class FetchDocument:
    """Ask the document source (xcap table or XCAP fetcher) for a document of
    this presentity; the answer comes back as ``RulesChanged``."""

    auid: str  # "pres-rules" | "pidf-manipulation"
    revalidate: bool = False


@dataclass(frozen=True, slots=True)
class ReloadPublications:
    """Re-read the event's publications from the database (refreshWatchers 1)."""

    event: str


Effect = Reply | SendNotify | Persist | PersistLater | FetchDocument | ReloadPublications
