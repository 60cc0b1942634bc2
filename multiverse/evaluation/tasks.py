"""Benchmark tasks: where the problems come from and how their fields map to (question, gold answer).

Each task loads from a local jsonl/parquet file (the project's `../shared/data` copies, or any file with the
same fields) or from its Hugging Face hub data set. GPQA-Diamond is multiple choice: the four options are
shuffled with a per-question seed (reproducible) and the gold answer becomes a letter.
"""
from __future__ import annotations

import os
import random
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Problem:
    id: str
    question: str  # what the model is asked (options included for multiple choice)
    answer: str  # gold answer: LaTeX/number, or a letter A-D for multiple choice
    kind: str  # "math" | "choice"


@dataclass(frozen=True)
class Task:
    name: str
    kind: str
    hub: str  # hub data set id used when no local file is given
    hub_config: str | None
    split: str
    local: str  # file name under the data directory


TASKS: dict[str, Task] = {
    "aime24": Task("aime24", "math", "HuggingFaceH4/aime_2024", None, "train", "aime24.jsonl"),
    "aime25": Task("aime25", "math", "math-ai/aime25", None, "test", "aime25.jsonl"),
    "math500": Task("math500", "math", "HuggingFaceH4/MATH-500", None, "test", "math500.jsonl"),
    "gpqa_diamond": Task("gpqa_diamond", "choice", "Idavidrein/gpqa", "gpqa_diamond", "train", "gpqa_diamond.jsonl"),
    "gsm8k_sample": Task("gsm8k_sample", "math", "openai/gsm8k", "main", "test", "gsm8k_test_sample.jsonl"),
}

LETTERS = "ABCD"


def load_task(name: str, path: str | None = None, data_dir: str | None = None, limit: int | None = None) -> list[Problem]:
    """Problems of a task from `path`, else `data_dir/<local file>` when it exists, else the hub."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; choose from {', '.join(TASKS)}")
    task = TASKS[name]
    rows = _rows(task, path, data_dir)
    problems = [_problem(task, row, i) for i, row in enumerate(rows)]
    return problems[:limit] if limit is not None else problems


def _rows(task: Task, path: str | None, data_dir: str | None) -> list[dict[str, Any]]:
    import datasets

    if path is None and data_dir is not None and os.path.exists(os.path.join(data_dir, task.local)):
        path = os.path.join(data_dir, task.local)
    if path is not None:
        if not os.path.exists(path):
            raise FileNotFoundError(f"{task.name}: no such file {path}")
        fmt = "parquet" if path.endswith(".parquet") else "json"
        return list(datasets.load_dataset(fmt, data_files=path, split="train"))
    return list(datasets.load_dataset(task.hub, task.hub_config, split=task.split))


def _field(row: dict[str, Any], names: tuple[str, ...], task: str, index: int) -> str:
    for name in names:
        if row.get(name) not in (None, ""):
            return str(row[name])
    raise ValueError(f"{task} row {index}: none of the fields {names} is present (has {sorted(row)})")


def _problem(task: Task, row: dict[str, Any], index: int) -> Problem:
    pid = str(row.get("id", row.get("unique_id", row.get("Record ID", index))))
    if task.kind == "choice":
        return _choice_problem(task, row, index, pid)
    question = _field(row, ("problem", "question", "Problem"), task.name, index)
    answer = _field(row, ("answer", "Answer"), task.name, index)
    if task.name == "gsm8k_sample" and "####" in answer:
        answer = answer.split("####")[-1].strip()
    return Problem(pid, question, answer, "math")


def _choice_problem(task: Task, row: dict[str, Any], index: int, pid: str) -> Problem:
    stem = _field(row, ("Question", "question"), task.name, index)
    correct = _field(row, ("Correct Answer", "correct_answer"), task.name, index).strip()
    wrong = [_field(row, (f"Incorrect Answer {k}", f"incorrect_answer_{k}"), task.name, index).strip() for k in (1, 2, 3)]
    options = [correct, *wrong]
    random.Random(f"{task.name}:{pid}").shuffle(options)
    listed = "\n".join(f"({letter}) {text}" for letter, text in zip(LETTERS, options))
    return Problem(pid, f"{stem}\n\n{listed}", LETTERS[options.index(correct)], "choice")
