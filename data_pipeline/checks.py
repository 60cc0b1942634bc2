"""The checks every curated sample must pass; a failure names its kind and, where it can, the block to redo.

- grammar: the trace parses with the core parser (multiverse.structure);
- agreement: every block has as many outlines as paths, none empty, and no path opens by linking itself to a
  sibling ("Alternatively, ...") or names another path ("Path 2");
- content: normalised edit distance between the sequential twin and the original trace, whitespace runs
  collapsed first, at most `max_distance` (the paper's 0.2 by default);
- answer: the original's final answer (last \\boxed{...}, else the "Final Answer" line) survives in the twin.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from rapidfuzz.distance import Levenshtein

from multiverse.structure import Block, StructureError, Text, parse, sequential_twin

from data_pipeline.config import ChecksConfig

_PATH_NAME = re.compile(r"\bPath \d+(?:\.\d+)*\b")
_FINAL_LINE = re.compile(r"\*\*\[?Final Answer\]?\*\*\s*[:\n]*\s*(.+)")


@dataclass(frozen=True)
class Failure:
    kind: str  # grammar | agreement | content | answer
    reason: str
    block: str | None = None  # the block to redo (None: the curator finds the blocks to blame)


@dataclass(frozen=True)
class CheckResult:
    failures: tuple[Failure, ...]
    distance: float | None  # None when the trace did not parse
    answer: str | None  # the final answer that was looked for (None: the original has none)

    @property
    def ok(self) -> bool:
        return not self.failures


def normalise(text: str) -> str:
    return " ".join(text.split())


def content_distance(twin: str, original: str) -> float:
    """Normalised Levenshtein distance in [0, 1] (edits / length of the longer text), whitespace collapsed."""
    return float(Levenshtein.normalized_distance(normalise(twin), normalise(original)))


def final_answer(text: str) -> str | None:
    """The content of the last \\boxed{...} (braces balanced), else the text after a "Final Answer" header."""
    start = text.rfind("\\boxed{")
    if start >= 0:
        depth, i = 0, start + len("\\boxed")
        for j in range(i, len(text)):
            depth += {"{": 1, "}": -1}.get(text[j], 0)
            if depth == 0:
                return text[i + 1 : j].strip() or None
    m = None
    for m in _FINAL_LINE.finditer(text):
        pass
    return m.group(1).strip() if m else None


def check_sample(parallel: str, original: str, block_ids: list[str], cfg: ChecksConfig) -> CheckResult:
    """All checks on one assembled trace; `block_ids` name the blocks in document order (outer first)."""
    try:
        doc = parse(parallel)
        twin = sequential_twin(parallel)
    except StructureError as err:
        return CheckResult((Failure("grammar", f"the assembled trace does not parse: {err}"),), None, None)
    failures = _agreement(list(doc.blocks()), block_ids, cfg)
    distance = content_distance(twin, original)
    if distance > cfg.max_distance:
        failures.append(Failure("content", f"the rewritten trace differs too much from the original (content "
                                           f"distance {distance:.3f} > {cfg.max_distance}); change fewer words"))
    answer = final_answer(original) if cfg.check_answer else None
    if answer is not None and normalise(answer).replace(" ", "") not in normalise(twin).replace(" ", ""):
        failures.append(Failure("answer", f"the final answer {answer!r} of the original is no longer in the trace; "
                                           "keep it exactly"))
    return CheckResult(tuple(failures), distance, answer)


def _agreement(blocks: list[Block], block_ids: list[str], cfg: ChecksConfig) -> list[Failure]:
    failures: list[Failure] = []
    words = "|".join(re.escape(w) for w in cfg.sibling_openers)
    openers = re.compile(rf"^(?:{words})\b" if words else r"(?!)")  # (?!) never matches
    for k, block in enumerate(blocks):
        bid = block_ids[k] if k < len(block_ids) else None
        if len(block.goal.outlines) != len(block.paths):
            failures.append(Failure("agreement", f"{len(block.goal.outlines)} outlines for {len(block.paths)} paths", bid))
        for outline, path in zip(block.goal.outlines, block.paths):
            own = "".join(c.text for c in path.children if isinstance(c, Text)).strip()
            if not outline.text.strip():
                failures.append(Failure("agreement", f"outline {outline.label} is empty", bid))
            if not own and not any(isinstance(c, Block) for c in path.children):
                failures.append(Failure("agreement", f"path {path.label} is empty", bid))
            if (m := openers.match(own)) is not None and m.group(0):
                failures.append(Failure("agreement", f"path {path.label} opens with {m.group(0)!r}, which refers to "
                                                   "a sibling path; rewrite its first sentence", bid))
            if (m := _PATH_NAME.search(own)) is not None:
                failures.append(Failure("agreement", f"path {path.label} mentions {m.group(0)!r}; paths cannot "
                                                   "see each other", bid))
    return failures
