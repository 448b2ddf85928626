"""A presentity actor's inbox: a bounded queue with one receiver.

Why not ``trio.open_memory_channel``: a memory channel is built for many
senders and receivers (ordered dicts of waiting tasks, a deque, statistics,
two channel objects) and costs about 2 KB even when empty.  An actor lives as
long as its presentity has state, so tens of thousands of them sit idle at
once; this inbox costs a list and one slot.  Semantics match what the router
and the actor use: ``send_nowait`` raises ``trio.WouldBlock`` when full,
``receive_nowait`` raises it when empty, ``receive`` waits.

``send_nowait(item, force=True)`` ignores the bound.  It is for internal
answers (a NOTIFY's outcome) that must never be lost: a lost answer would
leave its subscription waiting forever.  They stay bounded all the same,
since each NOTIFY is answered once and a subscription has at most one in
flight (plus its final one), so the overshoot is at most a few per
subscription the presentity holds.
"""

from __future__ import annotations

from typing import Generic, TypeVar

import trio

T = TypeVar("T")


class Inbox(Generic[T]):
    __slots__ = ("_items", "_size", "_waiter")

    def __init__(self, size: int) -> None:
        # A list, not a deque: an empty deque costs 600 bytes and inboxes
        # hold a handful of messages, so pop(0) is cheap.
        self._items: list[T] = []
        self._size = size
        self._waiter: trio.lowlevel.Task | None = None

    def __len__(self) -> int:
        return len(self._items)

    def send_nowait(self, item: T, *, force: bool = False) -> None:
        """Queue ``item``; raise ``trio.WouldBlock`` when full unless ``force``."""
        if not force and len(self._items) >= self._size:
            raise trio.WouldBlock
        self._items.append(item)
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            trio.lowlevel.reschedule(waiter)

    def receive_nowait(self) -> T:
        if not self._items:
            raise trio.WouldBlock
        return self._items.pop(0)

    async def receive(self) -> T:
        if self._items:
            await trio.lowlevel.checkpoint()
            return self._items.pop(0)
        assert self._waiter is None, "an inbox has one receiver"
        self._waiter = trio.lowlevel.current_task()

        def abort(_: trio.lowlevel.RaiseCancelT) -> trio.lowlevel.Abort:
            self._waiter = None
            return trio.lowlevel.Abort.SUCCEEDED

        await trio.lowlevel.wait_task_rescheduled(abort)
        return self._items.pop(0)
