"""SGLang's `logit_bias` and `ebnf` sampling keys on `multiverse serve`'s /generate, as logits processors.

So `multiverse serve` stands in for SGLang where the SGLang client sends the decoding controls (engine/sglang):
`logit_bias` ({"token id": bias}) is added to the logits after the grammar's mask, as SGLang does; `ebnf` is an
xgrammar grammar (engine/grammar.py writes the structure's) compiled with the served tokenizer, and a token the
grammar cannot take next is masked. The grammar ends where xgrammar accepts a stop token (the model's EOS ids).
A grammar xgrammar cannot compile is a 400 naming the key. xgrammar is the `grammar` extra.
"""
from __future__ import annotations

from typing import Any

import torch

from engine.server.errors import APIError


class BiasProcessor:
    """logits[V] + bias at the given ids (SGLang's logit_bias; ids outside the vocabulary are refused)."""

    def __init__(self, bias: dict[str, float], vocab_size: int) -> None:
        self.ids, self.values = [], []
        for key, value in bias.items():
            if not key.isdigit() or int(key) >= vocab_size:
                raise APIError(400, f"logit_bias: key {key!r} is not a token id in [0, {vocab_size - 1}]", "logit_bias")
            self.ids.append(int(key))
            self.values.append(float(value))

    def __call__(self, visible: list[int], logits: torch.Tensor) -> torch.Tensor:
        out = logits.clone()
        out[self.ids] += torch.tensor(self.values, dtype=logits.dtype, device=logits.device)
        return out


class GrammarProcessor:
    """Masks what the grammar cannot take next. It follows the generated ids: the first call sees the prompt
    (`visible` = prompt), every later one the prompt plus the ids generated so far (one sequence, no forks)."""

    def __init__(self, xgr: Any, compiled: Any, vocab_size: int) -> None:
        self.xgr, self.matcher, self.vocab_size = xgr, xgr.GrammarMatcher(compiled), vocab_size
        self.seen: int | None = None

    def __call__(self, visible: list[int], logits: torch.Tensor) -> torch.Tensor:
        if self.seen is None:
            self.seen = len(visible)
        for token in visible[self.seen :]:
            if not self.matcher.accept_token(token):  # never: the mask below allowed it
                raise RuntimeError(f"ebnf: the grammar refused generated token {token} at index {self.seen}")
            self.seen += 1
        out = logits.clone()
        if not self.matcher.is_terminated():
            mask = self.xgr.allocate_token_bitmask(1, self.vocab_size)
            self.matcher.fill_next_token_bitmask(mask)
            self.xgr.apply_token_bitmask_inplace(out[None], mask)
        return out


class Constraints:
    """Per server: the xgrammar compiler for the served tokenizer (built on the first `ebnf`), and the processors
    of one /generate input."""

    def __init__(self, tokenizer: Any, vocab_size: int, eos_ids: frozenset[int]) -> None:
        self.tokenizer, self.vocab_size, self.eos_ids = tokenizer, vocab_size, eos_ids
        self._compiler: Any = None

    def processors(self, ebnf: str | None, logit_bias: dict[str, float] | None) -> tuple:
        out: list = []
        if ebnf is not None:
            out.append(self._grammar(ebnf))
        if logit_bias:
            out.append(BiasProcessor(logit_bias, self.vocab_size))
        return tuple(out)

    def _grammar(self, ebnf: str) -> GrammarProcessor:
        try:
            import xgrammar as xgr
        except ImportError as err:
            raise APIError(400, "ebnf: this server has no xgrammar (pip install 'multiverse[grammar]')", "ebnf") from err
        if self._compiler is None:
            info = xgr.TokenizerInfo.from_huggingface(self.tokenizer, vocab_size=self.vocab_size,
                                                      stop_token_ids=sorted(self.eos_ids))
            self._compiler = xgr.GrammarCompiler(info)
        try:
            compiled = self._compiler.compile_grammar(ebnf)
        except RuntimeError as err:
            raise APIError(400, f"ebnf: xgrammar cannot compile it: {str(err).splitlines()[-1]}", "ebnf") from err
        return GrammarProcessor(xgr, compiled, self.vocab_size)
