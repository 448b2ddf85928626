"""The actor inbox: bounded, one receiver, cancellable waits."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from presencex.presence.inbox import Inbox


async def test_full_inbox_refuses_and_order_is_kept() -> None:
    inbox = Inbox[int](2)
    inbox.send_nowait(1)
    inbox.send_nowait(2)
    with pytest.raises(trio.WouldBlock):
        inbox.send_nowait(3)
    assert len(inbox) == 2
    assert inbox.receive_nowait() == 1
    assert await inbox.receive() == 2
    with pytest.raises(trio.WouldBlock):
        inbox.receive_nowait()


async def test_receiver_wakes_on_send_and_wait_can_be_cancelled(
    autojump_clock: trio.testing.MockClock,
) -> None:
    inbox = Inbox[str](4)
    got: list[str] = []

    async def receiver() -> None:
        got.append(await inbox.receive())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(receiver)
        await trio.testing.wait_all_tasks_blocked()
        inbox.send_nowait("hello")
    assert got == ["hello"]

    with trio.move_on_after(5) as scope:
        await inbox.receive()
    assert scope.cancelled_caught
    # The cancelled wait left no stale waiter behind: a new one works.
    inbox.send_nowait("again")
    assert await inbox.receive() == "again"
