"""A live terminal view of one request's branches, side by side, fed by `MultiverseLM.stream()` events."""
from __future__ import annotations

from rich.columns import Columns
from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from engine.events import BranchClosed, BranchOpened, Event, Finished, Merged, Restarted, Tokens
from engine.result import RequestOutput


class BranchView:
    """Text per branch label; open paths render as columns under the root's panel."""

    def __init__(self, tail_chars: int = 600) -> None:
        self.tail_chars = tail_chars
        self.text: dict[str, str] = {"": ""}
        self.state: dict[str, str] = {"": "decoding"}
        self.order: list[str] = [""]

    def apply(self, event: Event) -> None:
        if isinstance(event, Restarted):
            self.__init__(self.tail_chars)  # preempted for memory: the request starts over
        elif isinstance(event, BranchOpened):
            self.text[event.label], self.state[event.label] = "", "decoding"
            self.order.append(event.label)
        elif isinstance(event, Tokens):
            self.text[event.label] = self.text.get(event.label, "") + event.text
        elif isinstance(event, BranchClosed):
            self.state[event.label] = event.reason
        elif isinstance(event, Merged):
            for child in event.children:
                self.state[child] = "merged"
        elif isinstance(event, Finished):
            self.state[""] = event.output.finish_reason

    def render(self) -> RenderableType:
        panels = [self._panel(label) for label in self.order[1:]]  # merged paths stay, dimmed
        root = self._panel("")
        return Group(root, Columns(panels, equal=True, expand=True)) if panels else root

    def _panel(self, label: str) -> Panel:
        body = self.text[label][-self.tail_chars :]
        title = f"path {label}" if label else "main"
        style = "green" if self.state[label] == "decoding" else "dim"
        return Panel(Text(body), title=title, subtitle=self.state[label], border_style=style)


def stats_table(out: RequestOutput) -> Table:
    s = out.stats
    table = Table(title="stats", show_header=False)
    rows = [
        ("finish reason", out.finish_reason),
        ("generated tokens", str(s.generated_tokens)),
        ("forced tokens", str(s.forced_tokens)),
        ("critical path", str(s.critical_path)),
        ("degree of parallelism", f"{s.degree_of_parallelism:.2f}"),
        ("forks / merges", f"{s.num_forks} / {s.num_merges}"),
        ("<Parallel> kept / drawn", f"{s.fork_accepted} / {s.fork_proposals}"),
        ("fallbacks", ", ".join(s.fallbacks) or "-"),
        ("wall time", f"{s.wall_time_s:.2f} s"),
        ("tokens/s", f"{s.tokens_per_s:.1f}"),
    ]
    for key, value in rows:
        table.add_row(key, value)
    return table
