"""merge="refresh" (engine/refresh.py): after the merge the engine computes exactly what a sequential model sees
(one causal forward over the final ids at positions 0..L-1); before it, exactly the reuse run's tokens."""
from __future__ import annotations

import pytest
import torch

from engine.api import MultiverseLM
from engine.params import SamplingParams
from multiverse.demo import DEFAULT_MODEL
from multiverse.evaluation.protocol import EvalConfig
from multiverse.evaluation.runner import build_prompt
from multiverse.evaluation.tasks import load_task


@pytest.fixture(scope="module")
def lm(one_thread):
    return MultiverseLM(str(DEFAULT_MODEL), check_integrity=True)


def test_refresh_conclusion_reads_the_paths_causally(lm):
    prompts = [build_prompt(p, EvalConfig(), lm.tokenizer) for p in load_task("remainders", limit=2)]
    params = dict(max_new_tokens=1500, temperature=0, logprobs=True)
    reuse = lm.generate(prompts, SamplingParams(**params))
    fresh = lm.generate(prompts, SamplingParams(**params, merge="refresh"))
    conclusion = lm.vocab.tags.conclusion_open
    for a, b in zip(reuse, fresh):
        assert b.stats.num_merges == b.stats.merges_recomputed == 1 and b.stats.merges_exact == 0
        cut = b.token_ids.index(conclusion)
        assert a.token_ids[:cut] == b.token_ids[:cut]  # the paths are decoded as before
        assert b.stats.merge_prefill_tokens == [cut - b.token_ids.index(lm.vocab.tags.goal_close) - 1]
        ids = b.prompt_token_ids + b.token_ids
        with torch.no_grad():
            logp = torch.log_softmax(lm.model(torch.tensor([ids])).logits[0].float(), -1)  # plain causal, positions 0..L-1
        n = len(b.prompt_token_ids)
        after = [i for i in range(cut + 1, len(b.token_ids)) if b.logprobs[i] is not None]
        assert after  # the conclusion and the answer were sampled after the refresh
        want = torch.tensor([float(logp[n + i - 1, b.token_ids[i]]) for i in after])
        assert torch.allclose(torch.tensor([b.logprobs[i] for i in after]), want, atol=1e-4)
    assert lm.pool.num_used == 0
