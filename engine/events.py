"""Events of `MultiverseLM.stream()`: enough to draw every branch side by side as it grows."""
from __future__ import annotations

from dataclasses import dataclass

from engine.result import RequestOutput


@dataclass(frozen=True)
class BranchOpened:
    request_id: int
    label: str  # the new path's label
    parent: str  # the forking branch ("" = root)


@dataclass(frozen=True)
class Tokens:
    request_id: int
    label: str  # the branch that got them ("" = root)
    token_ids: tuple[int, ...]
    text: str
    forced: bool  # placed by the engine (fork prefix, <Conclusion>, closing </Path>)


@dataclass(frozen=True)
class BranchClosed:
    request_id: int
    label: str
    reason: str  # path_end | eos | stop | length | ...


@dataclass(frozen=True)
class Merged:
    request_id: int
    label: str  # the parent that continues with <Conclusion>
    children: tuple[str, ...]


@dataclass(frozen=True)
class Restarted:
    request_id: int  # preempted for memory; its branches start again (same seed, same output)


@dataclass(frozen=True)
class Finished:
    request_id: int
    output: RequestOutput


Event = BranchOpened | Tokens | BranchClosed | Merged | Restarted | Finished
