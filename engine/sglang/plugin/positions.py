"""The position hook: RoPE positions of every forward follow the core's layout (SPEC §4), not the row index.

An AROUND hook on `ForwardBatch.init_new`: SGLang builds the batch, then each request's positions are replaced.
Extend: positions[prefix_len:prefix_len+extend_len] of `layout(request ids)` (paths restart at g+1, a
<Conclusion> sits at max(path end)+1). Decode: the client ends a request at every fork and merge point, so
within one decode stretch positions rise by one per token: position = index + offset, where offset is the
(layout position - index) of the request's last extended token (kept on the request).
"""
from __future__ import annotations

from typing import Any

import torch

from engine.sglang.plugin.structure import rules_from, sequence_layout, vocab_for

OFFSET = "_multiverse_offset"  # attribute on sglang's Req: layout position minus row index


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
            ids = (list(r.origin_input_ids) + list(r.output_ids))[: pre + ext]
            if len(ids) < pre + ext:  # not this request's tokens (e.g. an aborted stub): leave SGLang's
                pos += list(range(pre, pre + ext))
                continue
            lay = sequence_layout(ids, vocab, rules_from(r.sampling_params.custom_params)).positions
            setattr(r, OFFSET, int(lay[-1]) - (len(ids) - 1))
            pos += lay[pre : pre + ext].tolist()
    else:
        return ret
    if len(pos) != ret.positions.numel():
        raise RuntimeError(f"multiverse position hook: {len(pos)} positions for {ret.positions.numel()} tokens ({mode})")
    ret.positions = torch.tensor(pos, dtype=ret.positions.dtype, device=ret.positions.device)
    return ret
