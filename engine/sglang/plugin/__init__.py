"""SGLang plugin `multiverse`: exact Multiverse fork/merge on a stock SGLang 0.5.23 (no fork of SGLang).

    SGLANG_PLUGINS=multiverse python -m sglang.launch_server --model-path M \\
        --radix-cache-backend multiverse --page-size 1

Registers the radix-cache backend `multiverse` (cache.py: merges reuse the children's KV), an AROUND hook on
ForwardBatch.init_new (positions.py: the core's positions) and a BEFORE hook on ServerArgs.check_server_args
(checks.py: what it cannot serve is refused at start-up). Loaded by SGLang's plugin loader in every server
process through the entry point `multiverse` of the group `sglang.srt.plugins`. Imports only SGLang and the
core, so `pip install --no-deps -e .` into an SGLang environment is enough.
"""
from __future__ import annotations

import logging
import os
import sys
from typing import Any

from engine.sglang.plugin.checks import SGLANG_VERSION, check_server_args, plugin_wanted, version_problem

__all__ = ["SGLANG_VERSION", "check_version", "register", "resolved"]
log = logging.getLogger(__name__)


def check_version(found: str) -> None:
    problem = version_problem(found)
    if problem:
        raise RuntimeError(problem)


def resolved(args: Any) -> Any:
    """SGLang's resolved view of ServerArgs (page size, attention backend as the server will use them)."""
    try:
        from sglang.srt.arg_groups.overrides import resolving_view

        return resolving_view(args)
    except Exception:  # noqa: BLE001 - not a ServerArgs (or no SGLang): its attributes as they are
        return args


def _before_check_server_args(server_args: Any, *args: Any, **kwargs: Any) -> None:
    """Runs first in SGLang's check_server_args (resolution is done by then), so our refusal is what is shown."""
    check_server_args(resolved(server_args))


def register() -> None:
    """The entry point: called once per SGLang process by its plugin loader (which logs and swallows an
    Exception, so a wrong version exits the process instead: one line naming both versions)."""
    import sglang

    problem = version_problem(sglang.__version__)
    if problem:
        if plugin_wanted(os.environ, sys.argv):
            raise SystemExit(problem)
        log.warning("%s; the plugin is not registered", problem)
        return
    from sglang.srt.mem_cache.registry import get_radix_cache_factory, register_radix_cache_backend
    from sglang.srt.plugins.hook_registry import HookRegistry, HookType

    from engine.sglang.plugin.cache import make_factory
    from engine.sglang.plugin.positions import init_new_hook

    if get_radix_cache_factory("multiverse") is None:
        register_radix_cache_backend("multiverse", make_factory())
    HookRegistry.register(
        "sglang.srt.model_executor.forward_batch_info.ForwardBatch.init_new", init_new_hook, HookType.AROUND
    )
    HookRegistry.register("sglang.srt.server_args.ServerArgs.check_server_args", _before_check_server_args, HookType.BEFORE)
