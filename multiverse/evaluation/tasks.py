"""Benchmark tasks: where the problems come from and how their fields map to (id, question, gold answer).

A named task loads from a local jsonl/parquet file (`--data-dir`, else the copies shipped in `multiverse/data`,
or any file with the same fields) or from its Hugging Face hub data set; `remainders` is generated (the default model's own task: the
held-out split of `multiverse.demo.remainders`, the rows `python -m multiverse.demo.reproduce` evaluates); any other
local file is a task through a field map (`question=problem,answer=solution_short,id=uid`).
GPQA-Diamond is multiple choice: the four options are shuffled with a per-question seed and the gold is a letter.
Kinds: "math" (competition answers), "word" (word problems: a last-number answer is accepted), "choice".
"""
from __future__ import annotations

import json
import os
import random
from dataclasses import dataclass
from typing import Any

from multiverse.errors import UsageError

KINDS = ("math", "word", "choice")


@dataclass(frozen=True)
class Problem:
    id: str
    question: str  # what the model is asked (options included for multiple choice)
    answer: str  # gold answer: LaTeX/number, or a letter A-D for multiple choice
    kind: str  # "math" | "word" | "choice"
    suffix: str | None = None  # the task's own prompt suffix when the protocol names none (remainders: "")


@dataclass(frozen=True)
class Task:
    name: str
    kind: str
    hub: str | None  # hub data set id used when no local file is given
    hub_config: str | None = None
    split: str = "test"
    local: str | None = None  # file name under the data directory


TASKS: dict[str, Task] = {
    "aime24": Task("aime24", "math", "HuggingFaceH4/aime_2024", None, "train", "aime24.jsonl"),
    "aime25": Task("aime25", "math", "math-ai/aime25", None, "test", "aime25.jsonl"),
    "math500": Task("math500", "math", "HuggingFaceH4/MATH-500", None, "test", "math500.jsonl"),
    "gpqa_diamond": Task("gpqa_diamond", "choice", "Idavidrein/gpqa", "gpqa_diamond", "train", "gpqa_diamond.jsonl"),
    "gsm8k_sample": Task("gsm8k_sample", "word", "openai/gsm8k", "main", "test", "gsm8k_test_sample.jsonl"),
    "remainders": Task("remainders", "word", None),
}
REMAINDERS_DEFAULT_SIZE = 50
LETTERS = "ABCD"


def is_file_task(spec: str) -> bool:
    return spec.endswith((".jsonl", ".json", ".parquet")) or os.sep in spec


def task_name(spec: str) -> str:
    """The name records carry: the registry name, or a file's stem."""
    return os.path.splitext(os.path.basename(spec))[0] if is_file_task(spec) else spec


def parse_fields(spec: str | None) -> dict[str, str]:
    """`question=problem,answer=ans[,id=uid]` -> {"question": "problem", ...}."""
    fields = {"question": "question", "answer": "answer"}
    for part in filter(None, (spec or "").split(",")):
        key, eq, value = part.partition("=")
        if not eq or key.strip() not in ("question", "answer", "id") or not value.strip():
            raise UsageError(f"--field {spec}: expected question=COLUMN,answer=COLUMN[,id=COLUMN], got {part!r}")
        fields[key.strip()] = value.strip()
    return fields


def load_task(name: str, path: str | None = None, data_dir: str | None = None, limit: int | None = None) -> list[Problem]:
    """Problems of a named task from `path`, else `data_dir/<local file>` when it exists, else the package's copy
    (multiverse/data), else the hub."""
    if name not in TASKS:
        raise UsageError(f"unknown task {name!r}; choose from {', '.join(TASKS)}, or give a .jsonl/.parquet file")
    task = TASKS[name]
    if name == "remainders":
        return remainders_problems(limit or REMAINDERS_DEFAULT_SIZE)
    rows = _rows(task, path, data_dir)
    problems = [_problem(task, row, i) for i, row in enumerate(rows)]
    return problems[:limit] if limit is not None else problems


def load_file(path: str, fields: dict[str, str], kind: str = "math", limit: int | None = None) -> list[Problem]:
    """Any local file as a task; a missing field names the file, the line and the field."""
    if kind not in KINDS:
        raise UsageError(f"--task-kind {kind}: choose from {', '.join(KINDS)}")
    if not os.path.isfile(path):
        raise UsageError(f"--tasks {path}: no such file")
    problems = []
    for line, row in _read_rows(path):
        get = lambda key: row.get(fields[key]) if key in fields else None  # noqa: E731
        for key in ("question", "answer"):
            if get(key) in (None, ""):
                raise UsageError(f"{path}:{line}: field {fields[key]!r} ({key}) is missing or empty (has {sorted(row)})")
        pid = str(get("id")) if get("id") not in (None, "") else str(line)
        answer = str(get("answer")).strip()
        problems.append(Problem(pid, str(get("question")), answer.upper() if kind == "choice" else answer, kind))
        if limit is not None and len(problems) >= limit:
            break
    return problems


def _read_rows(path: str) -> list[tuple[int, dict[str, Any]]]:
    if path.endswith(".parquet"):
        import datasets

        return [(i + 1, dict(r)) for i, r in enumerate(datasets.load_dataset("parquet", data_files=path, split="train"))]
    rows = []
    with open(path, encoding="utf-8") as f:
        for i, text in enumerate(f, 1):
            if not text.strip():
                continue
            try:
                row = json.loads(text)
            except json.JSONDecodeError as err:
                raise UsageError(f"{path}:{i}: not JSON ({err.msg} at column {err.colno})") from err
            if not isinstance(row, dict):
                raise UsageError(f"{path}:{i}: a line must hold a JSON object")
            rows.append((i, row))
    return rows


def remainders_problems(n: int) -> list[Problem]:
    """The default model's task: the first n held-out remainder problems (multiverse.demo.remainders)."""
    from multiverse.demo.remainders import held_out_rows

    # both shipped models were trained on bare questions: no suffix
    return [Problem(f"remainders-{i}", r["question"], r["deepseek_attempt"], "word", suffix="")
            for i, r in enumerate(held_out_rows(n))]


def local_file(name: str, data_dir: str | None) -> str | None:
    """The local copy a named task reads: `data_dir/<file>`, else the package's own copy (multiverse/data, so
    the benchmarks work offline), else None (the hub, or generated)."""
    from multiverse.data import DATA_DIR

    task = TASKS[name]
    for folder in (data_dir, DATA_DIR):  # --data-dir first, then the package's own copies
        if folder is not None and task.local and os.path.exists(os.path.join(folder, task.local)):
            return os.path.join(folder, task.local)
    return None


def _rows(task: Task, path: str | None, data_dir: str | None) -> list[dict[str, Any]]:
    path = path if path is not None else local_file(task.name, data_dir)
    if path is not None:
        if not os.path.exists(path):
            raise UsageError(f"{task.name}: no such file {path}")
        return [row for _, row in _read_rows(path)]
    import datasets

    return list(datasets.load_dataset(task.hub, task.hub_config, split=task.split))


def _field(row: dict[str, Any], names: tuple[str, ...], task: str, index: int) -> str:
    for name in names:
        if row.get(name) not in (None, ""):
            return str(row[name])
    raise UsageError(f"{task} row {index}: none of the fields {names} is present (has {sorted(row)})")


def _problem(task: Task, row: dict[str, Any], index: int) -> Problem:
    pid = str(row.get("id", row.get("unique_id", row.get("Record ID", index))))
    if task.kind == "choice":
        return _choice_problem(task, row, index, pid)
    question = _field(row, ("problem", "question", "Problem"), task.name, index)
    answer = _field(row, ("answer", "Answer"), task.name, index)
    if task.name == "gsm8k_sample" and "####" in answer:
        answer = answer.split("####")[-1].strip()
    return Problem(pid, question, answer, task.kind)


def _choice_problem(task: Task, row: dict[str, Any], index: int, pid: str) -> Problem:
    stem = _field(row, ("Question", "question"), task.name, index)
    correct = _field(row, ("Correct Answer", "correct_answer"), task.name, index).strip()
    wrong = [_field(row, (f"Incorrect Answer {k}", f"incorrect_answer_{k}"), task.name, index).strip() for k in (1, 2, 3)]
    options = [correct, *wrong]
    random.Random(f"{task.name}:{pid}").shuffle(options)
    listed = "\n".join(f"({letter}) {text}" for letter, text in zip(LETTERS, options))
    return Problem(pid, f"{stem}\n\n{listed}", LETTERS[options.index(correct)], "choice")
