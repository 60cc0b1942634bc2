"""The position hook: RoPE positions of every forward follow the core's layout (SPEC §4), not the row index.

An AROUND hook on `ForwardBatch.init_new`: SGLang builds the batch, then each request's positions are replaced.
Extend: positions [prefix_len, prefix_len + extend_len) of the request's layout (paths restart at g+1, a
<Conclusion> sits at max(path end)+1), read from the RequestLayout the cache made at match time and extended
by the tokens it lacks, so an extend costs O(its tokens). Decode: the client ends a request at every fork and
merge point, so within one decode stretch positions rise by one per token: position = index + offset, where
offset is the (layout position - index) of the request's last extended token (kept on the request).
"""
from __future__ import annotations

from typing import Any

import torch

from engine.sglang.plugin.request_layout import LAYOUT, RequestLayout, ids_between
from engine.sglang.plugin.structure import rules_from, vocab_for
from multiverse.tags import StructureVocab

OFFSET = "_multiverse_offset"  # attribute on sglang's Req: layout position minus row index


def extend_positions(req: Any, pre: int, ext: int, vocab: StructureVocab) -> list[int] | None:
    """Layout positions of the request's tokens [pre, pre + ext); None when they are not its ids (a stub)."""
    if ext <= 0 or len(req.origin_input_ids) + len(req.output_ids) < pre + ext:
        return None
    rules = rules_from(req.sampling_params.custom_params)
    lay = getattr(req, LAYOUT, None)
    if lay is None or lay.rules != rules or lay.start > pre:  # no match made it (rare): scan from token 0
        lay = RequestLayout.of(ids_between(req, 0, pre + ext), vocab, rules)
        setattr(req, LAYOUT, lay)
    if lay.end < pre + ext:
        lay.extend(ids_between(req, lay.end, pre + ext))
    positions = lay.position_slice(pre, pre + ext)
    setattr(req, OFFSET, positions[-1] - (pre + ext - 1))
    return positions


def init_new_hook(original: Any, cls: Any, batch: Any, model_runner: Any, *args: Any, **kwargs: Any) -> Any:
    ret = original(cls, batch, model_runner, *args, **kwargs)
    mode = ret.forward_mode
    if ret.positions is None or mode.is_idle() or not getattr(batch, "reqs", None):
        return ret
    vocab = vocab_for(model_runner.server_args.tokenizer_path or model_runner.server_args.model_path)
    if mode.is_decode():
        seq = batch.seq_lens_cpu.tolist()
        pos = [n - 1 + getattr(r, OFFSET, 0) for r, n in zip(batch.reqs, seq)]
    elif mode.is_extend():
        pos = []
        for r, pre, ext in zip(batch.reqs, batch.prefix_lens, batch.extend_lens):
            got = extend_positions(r, pre, ext, vocab)
            pos += list(range(pre, pre + ext)) if got is None else got  # not its tokens: leave SGLang's
    else:
        return ret
    if len(pos) != ret.positions.numel():
        raise RuntimeError(f"multiverse position hook: {len(pos)} positions for {ret.positions.numel()} tokens ({mode})")
    ret.positions = torch.tensor(pos, dtype=ret.positions.dtype, device=ret.positions.device)
    return ret
