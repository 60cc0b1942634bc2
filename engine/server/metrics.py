"""Prometheus metrics of one server instance (its own registry: two servers in a process never mix).

Updated from two threads, which prometheus_client allows: the engine thread (engine state after each step,
per-request token counts, time to first token) and the event loop (HTTP requests by route and status).
"""
from __future__ import annotations

import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self, num_pages: int, page_size: int = 1, kv: Any = None) -> None:
        """`kv`: the engine's KVPlan (engine/kv_memory.py) when it owns its memory, for bytes and the largest request."""
        r = self.registry = CollectorRegistry()
        p = "multiverse"
        self.requests = Counter(f"{p}_http_requests", "HTTP requests answered, by route and status", ["route", "status"], registry=r)
        self.running = Gauge(f"{p}_requests_running", "requests decoding now", registry=r)
        self.waiting = Gauge(f"{p}_requests_waiting", "requests waiting for admission", registry=r)
        self.kv_used = Gauge(f"{p}_kv_pages_used", "KV pool pages in use", registry=r)
        self.kv_total = Gauge(f"{p}_kv_pages_total", "KV pool pages", registry=r)
        self.kv_total.set(num_pages)
        Gauge(f"{p}_kv_capacity_tokens", "KV token slots (pages x page size)", registry=r).set(num_pages * page_size)
        if kv is not None:
            Gauge(f"{p}_kv_capacity_bytes", "KV pool memory", registry=r).set(kv.nbytes)
            Gauge(f"{p}_kv_max_request_tokens", "longest request the KV pool can hold", registry=r).set(kv.max_request_tokens)
        self.prompt_tokens = Counter(f"{p}_prompt_tokens", "prompt tokens of finished requests", registry=r)
        self.generation_tokens = Counter(f"{p}_generation_tokens", "tokens sampled over all branches", registry=r)
        self.forks = Counter(f"{p}_forks", "blocks forked into parallel paths", registry=r)
        self.merges = Counter(f"{p}_merges", "blocks merged back", registry=r)
        self.aborts = Counter(f"{p}_aborts", "requests aborted (client gone, shutdown)", registry=r)
        self.finish = Counter(f"{p}_finished_requests", "finished engine requests by engine finish reason", ["reason"], registry=r)
        self.in_flight = Gauge(f"{p}_requests_in_flight", "requests the server holds: preparing, waiting or running", registry=r)
        self.rejections = Counter(f"{p}_rejected_requests", "requests refused at the front door, by reason "
                                  "(queue_full: 503, body_too_large: 413)", ["reason"], registry=r)
        self.ttft = Histogram(f"{p}_time_to_first_token_seconds", "submission to first sampled token", buckets=_LATENCY_BUCKETS, registry=r)
        self.e2e = Histogram(f"{p}_request_latency_seconds", "submission to finish", buckets=_LATENCY_BUCKETS, registry=r)

    # engine thread
    def engine_state(self, running: int, waiting: int, pages_used: int) -> None:
        self.running.set(running)
        self.waiting.set(waiting)
        self.kv_used.set(pages_used)

    def aborted(self) -> None:
        self.aborts.inc()

    def finished(self, job: Any, output: Any) -> None:
        now = time.perf_counter()
        self.prompt_tokens.inc(len(output.prompt_token_ids))
        self.generation_tokens.inc(output.stats.generated_tokens)
        self.forks.inc(output.stats.num_forks)
        self.merges.inc(output.stats.num_merges)
        self.finish.labels(output.finish_reason).inc()
        if output.stats.generated_tokens:
            self.ttft.observe((job.first_at or now) - job.submitted_at)
        self.e2e.observe(now - job.submitted_at)

    # event loop
    def rejected(self, reason: str) -> None:
        self.rejections.labels(reason).inc()

    def answered(self, route: str, status: int) -> None:
        self.requests.labels(route, str(status)).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
