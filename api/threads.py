"""The thread pool the API's blocking calls (the engine's reads and writes) run in.

Starlette's `run_in_threadpool` goes through anyio: a capacity limiter, a cancel scope,
a lookup of the running async library and a task-local variable on every call; asyncio's
`run_in_executor` through a `concurrent.futures` Future (a lock and a condition each) and
the chaining of two futures. Per request that was more of the event loop's time than the
request's routing. `in_thread` hands the call, with the caller's context variables (the
acting user, a duplicate confirmation, the cause of an automation's write), to a thread
of a small pool of its own, and the thread settles the caller's asyncio future on its
loop (`call_soon_threadsafe`) when the call returns or raises.

Every handler of the API hands its engine call over this way. Two waits keep anyio's:
an export's stream waiting for its next chunk (api/export.py: when the client goes away,
anyio lets that read return before the stream's end tells the producer to stop, so no
thread is left waiting on a pipe nobody fills) and the automations runner's stop at
shutdown; neither is on a request's hot path.

The pool holds at most as many threads as anyio's default limiter allows at once (40),
started as calls find none idle, shared by every app of the process; calls beyond them
queue in order. The threads are daemons: the server waits for its requests to finish
before it exits, so none is left in a call then. A request cancelled meanwhile leaves its
call to finish in its thread (its write commits or rolls back whole), as with anyio's.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import Callable
from queue import SimpleQueue
from typing import Any, TypeVar

T = TypeVar("T")

#: threads at most, as anyio's default capacity limiter
POOL_THREADS = 40

_Job = tuple[asyncio.AbstractEventLoop, "asyncio.Future[Any]", contextvars.Context,
             Callable[..., Any], tuple[Any, ...], dict[str, Any]]


class _Pool:
    def __init__(self, size: int):
        self.size = size
        self.jobs: SimpleQueue[_Job] = SimpleQueue()
        self.threads = 0
        self.idle = 0
        self.lock = threading.Lock()

    def submit(self, job: _Job) -> None:
        self.jobs.put(job)
        if self.idle < self.jobs.qsize() and self.threads < self.size:
            with self.lock:
                if self.threads < self.size:
                    self.threads += 1
                    threading.Thread(target=self._work, name=f"kartoteka-api-{self.threads}",
                                     daemon=True).start()

    def _work(self) -> None:
        jobs = self.jobs
        while True:
            with self.lock:
                self.idle += 1
            loop, future, context, fn, args, kwargs = jobs.get()
            with self.lock:
                self.idle -= 1
            try:
                result = context.run(fn, *args, **kwargs)
            except BaseException as error:  # the caller's to see, as the call's own
                _settle_soon(loop, future, None, error)
            else:
                _settle_soon(loop, future, result, None)
            del loop, future, context, fn, args, kwargs  # nothing kept while idle


def _settle_soon(loop: asyncio.AbstractEventLoop, future: asyncio.Future[Any], result: Any,
                 error: BaseException | None) -> None:
    try:
        loop.call_soon_threadsafe(_settle, future, result, error)
    except RuntimeError:  # the loop is closed: nobody waits for the answer
        pass


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.cancelled():
        return
    if isinstance(error, StopIteration):  # which a Future refuses to hold
        raise_error = RuntimeError(f"the call raised StopIteration: {error}")
        raise_error.__cause__ = error
        future.set_exception(raise_error)
    elif error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


_pool = _Pool(POOL_THREADS)


async def in_thread(fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """`fn(*args, **kwargs)` in the pool, with the caller's context variables."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()
    _pool.submit((loop, future, contextvars.copy_context(), fn, args, kwargs))
    return await future
