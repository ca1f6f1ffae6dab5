"""The API's thread pool (api/threads.py): a call's result or its very exception comes back
to the caller's loop, the caller's context variables (the acting user) are the call's, and
more calls than threads all finish, each on a pool thread, never on the loop's."""

from __future__ import annotations

import asyncio
import contextvars
import threading
import time

import pytest

from api import threads
from api.threads import in_thread

acting: contextvars.ContextVar[str] = contextvars.ContextVar("acting", default="nobody")


def test_a_result_and_an_exception_come_back_as_they_are() -> None:
    class Refused(Exception):
        pass

    def refuse() -> None:
        raise Refused("no")

    def stop() -> None:
        raise StopIteration

    async def main() -> None:
        assert await in_thread(lambda a, b=0: a + b, 2, b=3) == 5
        with pytest.raises(Refused, match="no"):
            await in_thread(refuse)
        with pytest.raises(RuntimeError, match="StopIteration"):  # a Future cannot hold it
            await in_thread(stop)
    asyncio.run(main())


def test_the_callers_context_variables_are_the_calls() -> None:
    async def one(name: str) -> tuple[str, str]:
        acting.set(name)
        await asyncio.sleep(0)
        return name, await in_thread(acting.get)

    async def main() -> list[tuple[str, str]]:
        return await asyncio.gather(*(one(f"user-{n}") for n in range(30)))
    assert all(mine == seen for mine, seen in asyncio.run(main()))
    assert acting.get() == "nobody"  # a call's context is a copy: nothing leaks back


def test_more_calls_than_threads_all_finish_off_the_loop() -> None:
    loop_thread: list[int] = []
    ran_on: set[int] = set()
    lock = threading.Lock()

    def work(n: int) -> int:
        time.sleep(0.01)
        with lock:
            ran_on.add(threading.get_ident())
        return n

    async def main() -> list[int]:
        loop_thread.append(threading.get_ident())
        return await asyncio.gather(*(in_thread(work, n) for n in range(3 * threads.POOL_THREADS)))
    assert asyncio.run(main()) == list(range(3 * threads.POOL_THREADS))
    assert loop_thread[0] not in ran_on
    assert 1 < len(ran_on) <= threads.POOL_THREADS


def test_a_cancelled_caller_leaves_its_call_to_finish() -> None:
    done = threading.Event()

    def slow() -> None:
        time.sleep(0.05)
        done.set()

    async def main() -> None:
        task = asyncio.ensure_future(in_thread(slow))
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    asyncio.run(main())
    assert done.wait(2)  # the write it stood for is not cut off midway
