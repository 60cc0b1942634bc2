"""Waiting for non-streaming results while watching the connection: a client that goes away aborts its jobs."""
from __future__ import annotations

import asyncio

from fastapi import Request

from engine.server.engine_client import Done, Failed, JobHandle
from engine.server.offload import disconnected


async def wait_all_or_disconnect(handles: list[JobHandle], request: Request) -> list[Done | Failed] | None:
    """Every job's result, or None as soon as the client disconnects. Every handle is closed on the way out,
    so unfinished jobs are aborted (their KV freed at once) whichever way this returns or is cancelled."""
    results = asyncio.ensure_future(asyncio.gather(*(h.result() for h in handles)))
    results.add_done_callback(lambda f: f.cancelled() or f.exception())  # a cancelled wait's outcome is read, not logged
    gone = asyncio.ensure_future(disconnected(request))
    try:
        done, _ = await asyncio.wait({results, gone}, return_when=asyncio.FIRST_COMPLETED)
        return list(results.result()) if results in done else None
    finally:
        gone.cancel()
        results.cancel()
        for handle in handles:
            handle.close()

