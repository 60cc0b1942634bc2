"""The data files that ship with the package: benchmark copies, example traces and a few s1K-1.1 rows.

`multiverse eval` reads a named task's file from `DATA_DIR` when `--data-dir` is not given (so AIME24/25, MATH500
and the GSM8K sample need no hub access); `multiverse check`, `multiverse curate` and the tests read the traces and
rows from here. Sources, commits and licences: README.md in this folder.
"""
from pathlib import Path

DATA_DIR = Path(__file__).resolve().parent
EXAMPLES_DIR = DATA_DIR / "multiverse_examples"  # Multiverse-format traces from the project website
S1K_SAMPLE = DATA_DIR / "s1k11_sample.jsonl"  # the first 10 rows of s1K-1.1 (question + thinking trajectory)
