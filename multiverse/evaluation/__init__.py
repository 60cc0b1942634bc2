"""Evaluation harness: tasks, grading, backends (native, sglang, openai), metrics with standard errors,
records with resume, the paper's budget-control sweep and paired speed measurements.

The names below load on first use: `multiverse eval` imports its cli module, and checks its flags, without paying
for grading's math-verify/sympy import."""
from __future__ import annotations

import importlib
from typing import Any

_HOMES = {
    "extract_letter": "extraction", "extract_math": "extraction", "Grade": "grading", "grade": "grading",
    "graded_text": "grading", "is_correct": "grading", "TASKS": "tasks", "Problem": "tasks", "load_file": "tasks",
    "load_task": "tasks",
}


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module 'multiverse.evaluation' has no attribute {name!r}")
    return getattr(importlib.import_module(f"multiverse.evaluation.{_HOMES[name]}"), name)


__all__ = sorted(_HOMES)
