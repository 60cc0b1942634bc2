"""SGLang plugin `multiverse`: exact Multiverse fork/merge on a stock SGLang 0.5.23 (no fork of SGLang).

    SGLANG_PLUGINS=multiverse python -m sglang.launch_server --model-path M \\
        --radix-cache-backend multiverse --page-size 1

Registers the radix-cache backend `multiverse` (cache.py: merges reuse the children's KV) and an AROUND hook
on ForwardBatch.init_new (positions.py: the core's positions). Loaded by SGLang's plugin loader in every server
process through the entry point `multiverse` of the group `sglang.srt.plugins`. Imports only SGLang and the
core, so `pip install --no-deps -e .` into an SGLang environment is enough.
"""
from __future__ import annotations

SGLANG_VERSION = "0.5.23"  # the version whose internals the cache subclass and the hook were written against


def check_version(found: str) -> None:
    if found != SGLANG_VERSION:
        raise RuntimeError(
            f"the multiverse SGLang plugin needs sglang=={SGLANG_VERSION}, found sglang {found}: "
            f'install it with pip install "multiverse[sglang]" (which pins it)'
        )


def register() -> None:
    """The entry point: called once per SGLang process by its plugin loader."""
    import sglang
    from sglang.srt.mem_cache.registry import get_radix_cache_factory, register_radix_cache_backend
    from sglang.srt.plugins.hook_registry import HookRegistry, HookType

    check_version(sglang.__version__)
    from engine.sglang.plugin.cache import make_factory
    from engine.sglang.plugin.positions import init_new_hook

    if get_radix_cache_factory("multiverse") is None:
        register_radix_cache_backend("multiverse", make_factory())
    HookRegistry.register(
        "sglang.srt.model_executor.forward_batch_info.ForwardBatch.init_new", init_new_hook, HookType.AROUND
    )
