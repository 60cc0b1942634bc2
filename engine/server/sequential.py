"""Decode one request without forking while its prompt keeps the Multiverse layout (for SGLang's /generate).

SGLang never forks inside a request; a Multiverse client that speaks /generate forks and merges itself with
token ids. So the native engine must (a) lay the prompt out with the core's positions and mask (a merge sent as
prefix + path 1 + ... + path n is then exact) and (b) never fork while decoding: `</Goal>` is written as text.

The engine has no per-request switch for (b) yet (engine-wide `parallel=False` would also lay the prompt out
causally), so this adapter gives the request's root scanner rules with `parallel=False` each time the request
(re)starts; the prompt layout still uses the request's own rules. Drop it once SamplingParams has the switch.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any

from engine.request import Request


def decode_sequentially(request: Request) -> Request:
    start = request.start

    def start_without_forks(vocab: Any) -> Any:
        root = start(vocab)
        root.state.rules = replace(root.state.rules, parallel=False)
        return root

    request.start = start_without_forks  # type: ignore[method-assign] - per instance, restarts included
    return request
