"""Evaluation harness: tasks, grading, backends (native, sglang, openai), metrics with standard errors,
records with resume, the paper's budget-control sweep and paired speed measurements."""
from multiverse.evaluation.extraction import extract_letter, extract_math
from multiverse.evaluation.grading import Grade, grade, graded_text, is_correct
from multiverse.evaluation.tasks import TASKS, Problem, load_file, load_task

__all__ = [
    "TASKS", "Grade", "Problem", "extract_letter", "extract_math", "grade", "graded_text", "is_correct", "load_file",
    "load_task",
]
