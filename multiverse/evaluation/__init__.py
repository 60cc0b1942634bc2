"""Evaluation harness: AIME24/25, MATH500, GPQA-Diamond (and a GSM8K sample); accuracy, parallelism, speedup."""
from multiverse.evaluation.grading import extract_answer, extract_choice, is_correct
from multiverse.evaluation.runner import EvalConfig, evaluate
from multiverse.evaluation.tasks import TASKS, Problem, load_task

__all__ = ["TASKS", "EvalConfig", "Problem", "evaluate", "extract_answer", "extract_choice", "is_correct", "load_task"]
