"""The presentity actor: a thin loop around ``PresentityState``.

Receive, ``effects = state.handle(msg, now)``, perform the effects in order:
commit what a reply backs, reply, send NOTIFYs.  Timers come from the state's
next deadline.  A bug while handling one message answers 500 and is logged
with the Call-ID; the actor and the server go on.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol, assert_never

import trio

from presencex.presence.inbox import Inbox
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
    ReloadPublications,
    Reply,
    SendNotify,
    Subscribe,
)
from presencex.presence.state import PresentityState
from presencex.sip.build import make_response
from presencex.sip.message import Request, Response
from presencex.store.records import Publication
from presencex.store.writer import StoreError, StoreOp
from presencex.transport.peer import Peer

log = logging.getLogger(__name__)

# Messages an actor handles back to back before giving other tasks a turn.
ACTOR_BURST = 32


class Sender(Protocol):
    """What the transport offers actors: sends that never block."""

    def send_response(self, request: Request, response: Response, peer: Peer) -> None: ...

    def send_notify(self, effect: SendNotify, on_final: Callable[[int], None]) -> None: ...


class Store(Protocol):
    async def commit(self, ops: tuple[StoreOp, ...]) -> None: ...

    def submit_nowait(self, ops: tuple[StoreOp, ...]) -> None: ...


class Clock(Protocol):
    def now(self) -> float: ...

    def to_trio(self, when: float) -> float: ...


class DocumentSource(Protocol):
    """Where an actor's pres-rules and pidf-manipulation documents come from.

    ``request_nowait`` never blocks and never awaits; the answer arrives later
    as ``RulesChanged`` on the presentity's inbox.  Every request is answered
    once the document is known (``document=None``: there is none); with
    ``revalidate=True`` (refreshWatchers) the source first re-reads it.  Do not
    request in response to a ``RulesChanged``: that would loop.
    """

    def request_nowait(self, user: str, auid: str, *, revalidate: bool = False) -> None: ...


class NoDocuments:
    """With force_active and no pidf_manipulation nothing is ever fetched."""

    def request_nowait(self, user: str, auid: str, *, revalidate: bool = False) -> None:
        log.debug("no document source configured for %s of %s", auid, user)


async def _no_reload(uri: str, event: str) -> tuple[Publication, ...]:
    return ()


@dataclass(slots=True)
class ActorEnv:
    sender: Sender
    store: Store
    clock: Clock
    notify_answered: Callable[[str, SendNotify, int], None]
    on_error: Callable[[], None] = lambda: None
    request_done: Callable[[], None] = lambda: None
    documents: DocumentSource = field(default_factory=NoDocuments)
    reload: Callable[[str, str], Awaitable[tuple[Publication, ...]]] = _no_reload


async def run_actor(
    state: PresentityState,
    inbox: Inbox[Message],
    env: ActorEnv,
    on_idle: Callable[[str], bool],
    initial: list[Effect] | None = None,
) -> None:
    """Serve one presentity until it holds nothing; ``on_idle`` unregisters
    it from the router (synchronously, so no message can slip in between)."""
    if initial:
        await _perform(state, initial, env)
    burst = 0
    while True:
        deadline = state.next_deadline()
        msg: Message
        if deadline is not None and env.clock.to_trio(deadline) <= trio.current_time():
            msg = Expire()
        else:
            try:
                # Take what is already queued without a scheduler round trip;
                # yield every ACTOR_BURST messages so one busy presentity
                # cannot starve the others.
                msg = inbox.receive_nowait()
                burst += 1
                if burst >= ACTOR_BURST:
                    burst = 0
                    await trio.lowlevel.checkpoint()
            except trio.WouldBlock:
                burst = 0
                if deadline is None:
                    msg = await inbox.receive()
                else:
                    msg = Expire()
                    with trio.move_on_at(env.clock.to_trio(deadline)):
                        msg = await inbox.receive()
        await _handle(state, msg, env)
        if state.empty() and on_idle(state.uri):
            return


async def _handle(state: PresentityState, msg: Message, env: ActorEnv) -> None:
    # The message itself when it is a request (one the router counts in
    # flight), so both paths below share one check and mypy narrows it.
    incoming: Publish | Subscribe | None = msg if isinstance(msg, Publish | Subscribe) else None
    try:
        effects = state.handle(msg, env.clock.now())
    except Exception:
        env.on_error()
        if incoming is not None:
            request = incoming.request
            log.exception("error handling %s Call-ID %s", request.method, request.call_id)
            _reply_500(request, incoming.peer, env)
            env.request_done()
        else:
            log.exception("error handling %s for %s", type(msg).__name__, state.uri)
        return
    try:
        await _perform(state, effects, env)
    except Exception:
        # A bug past the state (a send that raised): log it, keep the actor.
        env.on_error()
        log.exception("error performing effects for %s", state.uri)
    finally:
        if incoming is not None:
            env.request_done()


async def _perform(state: PresentityState, effects: list[Effect], env: ActorEnv) -> None:
    failed = False
    # NOTIFYs not sent because a commit before them failed.
    unsent: list[SendNotify] = []
    for effect in effects:
        match effect:
            case Persist(ops, undo):
                try:
                    await env.store.commit(ops)
                except StoreError as exc:
                    # Nothing after this may claim success: the 2xx would back
                    # state that is not on disk.
                    log.error("store commit failed for %s: %s", state.uri, exc)
                    failed = True
                    if undo is not None:
                        undo()
            case PersistLater(ops):
                env.store.submit_nowait(ops)
            case Reply():
                if failed and effect.status < 300:
                    env.sender.send_response(
                        effect.request,
                        make_response(effect.request, 500, "Database Error"),
                        effect.peer,
                    )
                    continue
                response = make_response(
                    effect.request,
                    effect.status,
                    effect.reason,
                    to_tag=effect.to_tag,
                    headers=effect.headers,
                )
                env.sender.send_response(effect.request, response, effect.peer)
            case SendNotify():
                if failed:
                    # Not sent: the state must not wait for its answer.
                    unsent.append(effect)
                    continue
                env.sender.send_notify(effect, _answer_callback(env, state.uri, effect))
            case FetchDocument(auid, revalidate):
                env.documents.request_nowait(state.uri, auid, revalidate=revalidate)
            case ReloadPublications(event):
                publications = await env.reload(state.uri, event)
                await _handle(state, PublicationsLoaded(event, publications), env)
            case _:
                assert_never(effect)
    # Answer the unsent NOTIFYs here, after the rest of this message's
    # effects, rather than through the router and our own inbox: a full inbox
    # must not lose the answer, or the subscription would stay marked in
    # flight and get no NOTIFY again.  Handling it clears the mark and sends
    # the current state if it changed meanwhile.
    for effect in unsent:
        await _handle(state, NotifyAnswered(effect.key, effect.cseq, 500), env)


def _answer_callback(env: ActorEnv, uri: str, effect: SendNotify) -> Callable[[int], None]:
    def answered(status: int) -> None:
        env.notify_answered(uri, effect, status)

    return answered


def _reply_500(request: Request, peer: Peer, env: ActorEnv) -> None:
    env.sender.send_response(request, make_response(request, 500, "Server Internal Error"), peer)
