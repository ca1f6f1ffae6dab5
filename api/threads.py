"""The thread pool the API's blocking calls (the engine's reads and writes) run in.

Starlette's `run_in_threadpool` goes through anyio: a capacity limiter, a cancel scope,
a lookup of the running async library and a task-local variable on every call — more of
the event loop's time than the rest of a create's routing and answer. `in_thread` hands
the call to a plain `concurrent.futures` pool through asyncio's own `run_in_executor`,
with the caller's context variables (the acting user, a duplicate confirmation, the
cause of an automation's write), as `asyncio.to_thread` does. The pool holds as many
threads as anyio's default limiter allows at once (40), made as they are needed, shared
by every app of the process. A request cancelled meanwhile leaves its call to finish in
its thread (its write commits or rolls back whole), as with anyio's.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")

#: threads at most, as anyio's default capacity limiter
POOL_THREADS = 40

_pool: ThreadPoolExecutor | None = None
_made = threading.Lock()


def _the_pool() -> ThreadPoolExecutor:
    global _pool
    if _pool is None:
        with _made:
            if _pool is None:
                _pool = ThreadPoolExecutor(POOL_THREADS, thread_name_prefix="kartoteka-api")
    return _pool


async def in_thread(fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """`fn(*args, **kwargs)` in the pool, with the caller's context variables."""
    call = functools.partial(contextvars.copy_context().run, fn, *args, **kwargs)
    return await asyncio.get_running_loop().run_in_executor(_the_pool(), call)
