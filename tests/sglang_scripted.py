"""A served native engine that follows test scripts, for the SGLang client's CI tests against `multiverse serve`.

`ScriptedServedLM` is the engine behind the server: every request it gets follows the union of the current
scripts (keyed by the ids a branch sees, so any request of any target finds its next token). `scripted_jobs`
turns trace bodies into prompts, native params (with the script as a logits processor) and that union.
"""
from __future__ import annotations

from dataclasses import replace

from engine.native import NativeEngine
from engine.params import SamplingParams
from engine.script import ScriptedProcessor
from multiverse.attention import StructureRules
from multiverse.encode import encode_trace


class ScriptUnion:
    """One logits processor following many scripts: the union of their (visible ids -> next token) tables."""

    def __init__(self, procs: list[ScriptedProcessor], fallback: int) -> None:
        self.next = {k: v for p in procs for k, v in p.next.items()}
        self.fallback = fallback

    def __call__(self, visible_ids, logits):  # noqa: ANN001, ANN204 - the engine's processor signature
        out = logits.new_full(logits.shape, float("-inf"))
        out[self.next.get(tuple(visible_ids), self.fallback)] = 0.0
        return out


class ScriptedServedLM(NativeEngine):
    """The served engine: every request it gets follows the union of the test's scripts."""

    script: ScriptUnion | None = None

    def _prepare(self, prompt, params, sink):  # noqa: ANN001, ANN202
        params = params or SamplingParams()
        if self.script is not None:
            params = replace(params, logits_processors=(self.script,))
        return super()._prepare(prompt, params, sink)


def scripted_jobs(tok, bodies: list[str], raw: bool = False, **kw) -> tuple[list, list, ScriptUnion]:  # noqa: ANN001
    """Prompts ("Question i: ...") and greedy native params following `bodies`, and the union for the server."""
    prompts, params, procs = [], [], []
    for i, body in enumerate(bodies):
        prompt = tok(f"Question {i}: what is 12 * 12?")["input_ids"]
        ids = tok(body, add_special_tokens=False)["input_ids"] if raw else encode_trace(body, tok)
        target = prompt + ids + [tok.eos_token_id]
        proc = ScriptedProcessor(target, len(prompt), tok, StructureRules(max_paths=kw.get("max_paths")))
        prompts.append(prompt)
        procs.append(proc)
        params.append(SamplingParams(temperature=0, logprobs=True, logits_processors=[proc], **kw))
    return prompts, params, ScriptUnion(procs, tok.eos_token_id)
