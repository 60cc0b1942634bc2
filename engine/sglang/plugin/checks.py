"""Start-up checks of the plugin: the SGLang version, and the server arguments it cannot serve exactly.

Pure functions over a version string, the environment and a ServerArgs-like object (attribute access only, no
SGLang import), so they are tested without SGLang and with SGLang's own ServerArgs where it is installed.
`register` (the plugin's entry point) runs them where SGLang first calls into the plugin: the version when
the plugin is loaded, the arguments when SGLang's `ServerArgs.check_server_args` starts (in the launching
process, after the arguments are resolved and before any scheduler starts) and again when the cache is built (scheduler processes).
"""
from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from typing import Any

SGLANG_VERSION = "0.5.23"  # the version whose internals the cache subclass and the hook were written against
BACKEND = "multiverse"  # --radix-cache-backend value
# attention backends that force a page size other than 1 (SGLang 0.5.23 resolves the page size from them)
PAGED_BACKENDS = {"trtllm_mha": "Blackwell's default MHA backend", "trtllm_mla": "an MLA backend",
                  "flashmla": "an MLA backend", "cutedsl_mla": "an MLA backend", "hpc_ops": "an HPC-Ops backend"}
DETERMINISTIC_RADIX = {"fa3", "fa4", "triton", "ascend"}  # backends that keep the radix cache in deterministic mode


def version_problem(found: str) -> str | None:
    if found == SGLANG_VERSION:
        return None
    return (f"the multiverse SGLang plugin needs sglang=={SGLANG_VERSION}, found sglang {found}: "
            f'install it with pip install "multiverse[sglang]" (which pins it)')


def plugin_wanted(env: Mapping[str, str], argv: Sequence[str]) -> bool:
    """Whether this SGLang was started to serve Multiverse: SGLANG_PLUGINS names the plugin, or the command line
    selects its cache. (Else an installed but unused plugin must not stop an unrelated server.)"""
    named = {x.strip() for x in env.get("SGLANG_PLUGINS", "").split(",")}
    words = " ".join(argv).replace("=", " ")
    return BACKEND in named or f"--radix-cache-backend {BACKEND}" in " ".join(shlex.split(words))


def backends(args: Any) -> set[str]:
    names = ("attention_backend", "prefill_attention_backend", "decode_attention_backend")
    return {b for b in (getattr(args, n, None) for n in names) if b}


def server_args_problems(args: Any, selected: bool | None = None) -> list[str]:
    """What in these server arguments the multiverse cache cannot serve exactly (empty when all is well);
    `selected`: whether the multiverse cache is in use (None: as --radix-cache-backend says)."""
    if not (selected if selected is not None else getattr(args, "radix_cache_backend", None) == BACKEND):
        return []
    out = []
    paged = sorted(b for b in backends(args) if b in PAGED_BACKENDS)
    page = getattr(args, "page_size", None)  # None: not resolved yet (SGLang then picks 1 unless a backend forces more)
    if page not in (1, None) or (paged and page != 1):
        why = f" (the attention backend {paged[0]}, {PAGED_BACKENDS[paged[0]]}, forces it)" if paged else ""
        got = page if page is not None else "larger than 1"
        out.append(
            f"--radix-cache-backend {BACKEND} requires --page-size 1 (got {got}){why}: a merge hands each "
            "path its own slots, which a page shared by two paths cannot express; on Blackwell pass "
            "--attention-backend flashinfer (or triton), on Hopper fa3 or flashinfer"
        )
    if (getattr(args, "dp_size", 1) or 1) > 1:
        out.append(
            f"--radix-cache-backend {BACKEND} does not support --dp-size {args.dp_size}: the calls of one Multiverse "
            "request (its paths and their merge) must meet in one radix cache, and no load-balance method keeps them "
            "on one replica; use --tp-size to span GPUs, or run one server per replica with its own client"
        )
    if getattr(args, "speculative_algorithm", None):
        out.append(
            f"--radix-cache-backend {BACKEND} does not support --speculative-algorithm {args.speculative_algorithm}: "
            "draft and verify passes would get positions and visibility the plugin does not lay out"
        )
    deterministic_off = sorted(backends(args) - DETERMINISTIC_RADIX)
    if getattr(args, "enable_deterministic_inference", False) and deterministic_off:
        out.append(
            f"--enable-deterministic-inference turns SGLang's radix cache off with the attention backend "
            f"{deterministic_off[0]}, and --radix-cache-backend {BACKEND} needs it: pass --attention-backend fa3 "
            "(Hopper) or triton (Blackwell)"
        )
    elif getattr(args, "disable_radix_cache", False) or getattr(args, "enable_hierarchical_cache", False):
        out.append(f"--radix-cache-backend {BACKEND} needs the radix cache on and not hierarchical "
                   "(--disable-radix-cache and --enable-hierarchical-cache are not supported)")
    return out


def check_server_args(args: Any, selected: bool | None = None) -> None:
    """Raise ValueError with every problem of `server_args_problems`, one per line."""
    problems = server_args_problems(args, selected)
    if problems:
        raise ValueError("\n".join(problems))
