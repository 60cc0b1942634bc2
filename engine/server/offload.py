"""CPU work of a request (tokenizing a prompt, decoding a finished answer) runs on a bounded pool of threads,
never on the event loop, so `/health` and every stream keep moving while a long prompt is tokenized.

The Rust tokenizers release the GIL while they work. A client that disconnects while its work waits or runs
is answered 499 at once: queued work never starts, started work finishes in its thread and is dropped, and
nothing is submitted to the engine.
"""
from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from fastapi import Request

from engine.server.errors import APIError

T = TypeVar("T")


class ClientGone(APIError):
    def __init__(self) -> None:
        super().__init__(499, "the client closed the connection")


class Offload:
    def __init__(self, workers: int) -> None:
        self.pool = ThreadPoolExecutor(workers, thread_name_prefix="multiverse-cpu")

    async def run(self, request: Request | None, fn: Callable[..., T], *args: Any) -> T:
        """fn(*args) on a worker thread. With a request, ClientGone as soon as its client disconnects."""
        work = asyncio.get_running_loop().run_in_executor(self.pool, functools.partial(fn, *args))
        if request is None:
            return await work
        gone = asyncio.ensure_future(disconnected(request))
        try:
            done, _ = await asyncio.wait({work, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
            if not work.done():
                work.cancel()  # a queued job never starts; a running one ends unobserved
        if gone in done:
            raise ClientGone()
        return work.result()

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)


async def disconnected(request: Request) -> None:
    """Returns when the ASGI server reports http.disconnect (the body was read already)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass
