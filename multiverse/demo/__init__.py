"""The tiny end-to-end reproduction: toy Multiverse data, a CPU-sized model trained on it, the default model."""
from pathlib import Path

# The model `multiverse generate` uses when no --model is given (rebuilt by `python -m multiverse.demo.build`).
DEFAULT_MODEL = Path(__file__).resolve().parent.parent / "assets" / "tiny-multiverse"
