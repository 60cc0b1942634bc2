"""The CPU reproduction: the remainders task, a Multiverse model and its autoregressive twin trained on it.

The Multiverse model is the default model; its twin ships beside it as the baseline of the comparison. Both are
rebuilt by `python -m multiverse.demo.reproduce --install`.
"""
from pathlib import Path

ASSETS = Path(__file__).resolve().parent.parent / "assets"
# The model `generate`, `serve`, `eval` and the Python API use when no --model is given.
DEFAULT_MODEL = ASSETS / "tiny-multiverse"
# Its autoregressive twin: same architecture, tokenizer, rows and steps, trained on the sequential twins.
BASELINE_MODEL = ASSETS / "tiny-autoregressive"
