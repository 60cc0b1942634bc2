"""Run the app on uvicorn: in the foreground (the CLI; signals stop it gracefully) or in a thread (tests,
benchmarks). The listening socket is bound first, before any model loads, and handed to uvicorn.

Graceful shutdown: stop admitting (new requests get 503), let running requests finish for up to
`shutdown_timeout_s` (uvicorn drains the open connections), abort what is left, stop the engine thread.
"""
from __future__ import annotations

import logging
import socket
import threading
import time
from typing import Any

import uvicorn

from engine.server.app import ServerState, build_app
from engine.server.config import ServerConfig
from engine.server.engine_client import EngineClient
from engine.server.metrics import Metrics
from multiverse.errors import UsageError

BACKLOG = 2048  # pending connections the kernel queues (uvicorn's default; a backlog of 5 reset streams)
log = logging.getLogger("multiverse.serve")


def bind(host: str, port: int, backlog: int = BACKLOG) -> socket.socket:
    """A listening socket on host:port (0 = any free port); UsageError when the address is taken."""
    try:
        family, _, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as err:
        raise UsageError(f"--host {host}: cannot resolve ({err.strerror})") from err
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as err:
        sock.close()
        raise UsageError(f"--port {port}: cannot listen on {host}:{port} ({err.strerror})") from err
    sock.listen(backlog)
    sock.set_inheritable(True)
    return sock


class _Uvicorn(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, on_exit: Any) -> None:
        super().__init__(config)
        self.on_exit = on_exit

    def handle_exit(self, sig: int, frame: Any) -> None:  # SIGINT/SIGTERM: stop admitting, then drain
        if not self.should_exit:
            log.info("shutting down: no new requests; running ones may finish for %ss", self.config.timeout_graceful_shutdown)
        self.on_exit()
        super().handle_exit(sig, frame)
        self._captured_signals.clear()  # uvicorn would re-raise the signal and kill us before the engine stops


class Server:
    def __init__(self, lm: Any, config: ServerConfig, sock: socket.socket) -> None:
        self.sock, self.config = sock, config
        host, port = sock.getsockname()[:2]
        self.url = f"http://{host}:{port}"
        pool = lm.scheduler.pool  # the SGLang client's counts slots only (no KVPlan): capacity in pages and tokens
        metrics = Metrics(pool.num_pages, pool.page_size, getattr(lm, "kv", None))
        self.client = EngineClient(lm, metrics)
        self.state = ServerState.build(lm, config, self.client, metrics)
        uv = uvicorn.Config(
            build_app(self.state), log_level="warning", access_log=False, lifespan="off", backlog=BACKLOG,
            timeout_graceful_shutdown=config.shutdown_timeout_s,
        )
        self.uvicorn = _Uvicorn(uv, on_exit=self.client.stop_admitting)
        self._thread: threading.Thread | None = None

    def run(self) -> None:
        """Serve in this thread until a signal (or `should_exit`); then shut down gracefully."""
        self.client.start()
        try:
            self.uvicorn.run(sockets=[self.sock])
        finally:
            self.client.close()  # aborts anything still running, then stops the engine thread
            self.state.offload.close()
            self.sock.close()
            log.info("stopped; KV pages in use: %d", self.state.lm.pool.num_used)

    def start(self, timeout: float | None = None) -> "Server":
        """Serve from a background thread; returns once uvicorn accepts connections. Waits on readiness: as long
        as the serving thread lives (a loaded machine only makes it slower), or at most `timeout` seconds."""
        self._thread = threading.Thread(target=self.run, name="multiverse-http", daemon=True)
        self._thread.start()
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.uvicorn.started:
            if not self._thread.is_alive():
                raise RuntimeError("the server did not start (its thread ended)")
            if deadline is not None and time.monotonic() > deadline:
                raise RuntimeError(f"the server did not start within {timeout} s")
            time.sleep(0.01)
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """Graceful shutdown of a started server (what SIGTERM does in the foreground)."""
        self.client.stop_admitting()
        self.uvicorn.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)
