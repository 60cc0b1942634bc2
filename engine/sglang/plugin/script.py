"""Scripted decoding on a SGLang server: a custom logit processor that lets each request write only the next
token of a target sequence (the server-side twin of engine/script.py, used by the exactness tests).

`script_table` maps a digest of the ids a branch sees (SPEC §3: the core's mask of the target) to the token it
must write; the client sends the table in `custom_params`, the server's processor looks the request's own ids
up (`origin_input_ids + output_ids`, which are exactly what the branch sees). A miss writes `fallback` (EOS).
Imports neither SGLang nor the engine: SGLang loads the class by reference (module + name) from this package.
"""
from __future__ import annotations

import hashlib
import json
from array import array
from collections.abc import Sequence
from typing import Any

import torch

from multiverse.attention import StructureRules, dense_mask

TABLE, FALLBACK = "multiverse_script", "multiverse_fallback"


def script_key(ids: Sequence[int]) -> str:
    return hashlib.blake2b(array("q", ids).tobytes(), digest_size=10).hexdigest()


def script_table(target: Sequence[int], prompt_len: int, tokenizer: Any, rules: StructureRules | None = None) -> dict[str, int]:
    ids = list(target)
    visible = dense_mask(ids, tokenizer, rules=rules or StructureRules())  # [L, L] True = may attend
    return {script_key([ids[i] for i in visible[j, :j].nonzero().flatten().tolist()]): ids[j] for j in range(prompt_len, len(ids))}


def script_params(target: Sequence[int], prompt_len: int, tokenizer: Any, rules: StructureRules | None = None) -> tuple[str, dict]:
    """(custom_logit_processor, custom_params) of one request that must follow `target`."""
    return ScriptedLogits.to_str(), {TABLE: script_table(target, prompt_len, tokenizer, rules), FALLBACK: tokenizer.eos_token_id}


class ScriptedLogits:
    """SGLang's custom-logit-processor call shape: (logits [rows, vocab], one params dict per row) -> logits."""

    def __call__(self, logits: torch.Tensor, custom_param_list: list[dict[str, Any]] | None = None) -> torch.Tensor:
        for row, params in enumerate(custom_param_list or []):
            req = params["__req__"]
            seen = list(req.origin_input_ids) + list(req.output_ids)
            token = params[TABLE].get(script_key(seen), params[FALLBACK])
            logits[row].fill_(float("-inf"))
            logits[row, token] = 0.0
        return logits

    @classmethod
    def to_str(cls) -> str:
        """SGLang's wire form: a pickle of the class BY REFERENCE (protocol 2 GLOBAL), hex in JSON."""
        ref = b"\x80\x02c" + f"{cls.__module__}\n{cls.__qualname__}\n".encode() + b"."
        return json.dumps({"callable": ref.hex()})
