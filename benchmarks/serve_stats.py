"""Timing of streamed answers for benchmarks/serve.py: percentiles and the gaps between a stream's chunks."""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field


def pct(values: list[float], q: float) -> float | None:
    """The q-quantile (nearest rank) rounded to ms; None when nothing was measured."""
    if not values:
        return None
    values = sorted(values)
    return round(values[min(len(values) - 1, int(q * len(values)))], 4)


@dataclass
class StreamTimes:
    """Arrival times of one stream's chunks that carried text (perf_counter seconds)."""

    began: float = field(default_factory=time.perf_counter)
    chunks: list[float] = field(default_factory=list)

    def chunk(self) -> None:
        self.chunks.append(time.perf_counter())

    @property
    def ttft(self) -> float | None:
        return self.chunks[0] - self.began if self.chunks else None

    def gaps(self) -> list[float]:
        return [b - a for a, b in zip(self.chunks, self.chunks[1:])]


def gap_summary(streams: list[StreamTimes], window: tuple[float, float] | None = None) -> dict:
    """Per stream: its longest gap between chunks, its median gap and their ratio; then p50/p99/max over the
    streams (a stall shows as a longest gap many times the median). With a window (perf_counter seconds), also
    the longest gap that ends inside it and the longest outside it, each over the stream's median: what happened
    while something (a long prompt's prefill) ran, beside the noise floor of the same streams."""
    longest, median, ratio, inside, outside = [], [], [], [], []
    for s in streams:
        gaps = s.gaps()
        if len(gaps) < 2:
            continue
        top, mid = max(gaps), statistics.median(gaps)
        longest.append(top)
        median.append(mid)
        ratio.append(top / mid if mid > 0 else float("inf"))
        if window is not None and mid > 0:
            ends = s.chunks[1:]
            within = [g for g, t in zip(gaps, ends) if window[0] <= t <= window[1]]
            beyond = [g for g, t in zip(gaps, ends) if not window[0] <= t <= window[1]]
            inside += [max(within) / mid] if within else []
            outside += [max(beyond) / mid] if beyond else []
    spread = lambda xs: {"p50": pct(xs, 0.5), "p99": pct(xs, 0.99), "max": pct(xs, 1.0)}  # noqa: E731
    out = {"streams": len(longest), "longest_gap_s": spread(longest), "median_gap_s": spread(median),
           "longest_over_median": spread(ratio)}
    if window is not None:
        out["in_window_longest_over_median"] = spread(inside)
        out["outside_window_longest_over_median"] = spread(outside)
    return out
