"""`native` and `sglang` backends: MultiverseLM decodes, and its Stats (the core's SPEC §7 counts) are the counts."""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from multiverse.errors import CommandError
from multiverse.evaluation.backends.base import Decoding, Generation, Prompt


class NativeBackend:
    def __init__(
        self,
        model: Any,
        tokenizer: Any = None,
        device: str | None = None,
        backend: str = "native",
        url: str | None = None,
        parallel: bool = True,
        lm: Any = None,
        logits_processors: Sequence[Any] = (),
        client: dict[str, Any] | None = None,
        **engine_options: Any,
    ) -> None:
        """`engine_options` go to MultiverseLM (native: num_pages, kv_memory_fraction, ...)."""
        from engine.api import MultiverseLM

        self.name, self.url, self.parallel, self.engine_options = backend, url, parallel, engine_options
        self.logits_processors = tuple(logits_processors)  # added to every request (scripted structures in tests)
        if lm is None:
            options: dict[str, Any] = {"device": device, "parallel": parallel, **engine_options}
            if backend != "native":  # the SGLang client's options (timeout_s, call_tokens, retries)
                options.update(backend=backend, url=url, **(client or {}))
            else:  # the threads `multiverse eval --threads` (or the caller) set stay as they are
                import torch

                options["threads"] = torch.get_num_threads()
            try:
                lm = MultiverseLM(model, tokenizer, **options)
            except (ValueError, OSError) as err:  # unknown backend, unreachable server
                raise CommandError(f"--backend {backend}: {err}") from err
        self.lm = lm
        self.tokenizer = lm.tokenizer
        self.context = engine_context(lm)

    def generate(
        self, prompts: Sequence[Prompt], decodings: Sequence[Decoding], in_flight: int | None = None
    ) -> Iterator[tuple[int, Generation]]:
        """Keep up to `in_flight` requests in the engine (all when None), step it, yield each request the step it
        finishes (its record is written then) and submit the next in its place: no batch waits for its slowest."""
        from engine.request import Phase

        window = in_flight or max(1, len(prompts))
        waiting = list(range(len(prompts)))[::-1]  # popped from the end: prompt order
        pending: dict[int, Any] = {}
        try:
            while waiting or pending:
                while waiting and len(pending) < window:
                    i = waiting.pop()
                    pending[i] = self.lm.submit(prompts[i], self._params(decodings[i]), raw=True)  # text: --no-chat, as is
                self.lm.step()
                for i, request in list(pending.items()):
                    if request.phase is Phase.FINISHED:
                        del pending[i]
                        yield i, to_generation(request.output)
        finally:
            for request in pending.values():  # an error or an early stop: nothing stays in the engine
                self.lm.scheduler.abort(request.request_id)

    def generate_all(self, prompts: Sequence[Prompt], decodings: Sequence[Decoding]) -> list[Generation]:
        outs = self.lm.generate(list(prompts), [self._params(d) for d in decodings], raw=True)
        return [to_generation(o) for o in outs]

    def _params(self, d: Decoding) -> Any:
        from engine.params import SamplingParams

        return SamplingParams(
            max_new_tokens=d.max_new_tokens,
            max_critical_tokens=d.max_critical_tokens,
            temperature=d.temperature,
            top_p=d.top_p,
            seed=d.seed,
            logits_processors=self.logits_processors,
            **d.controls,
        )

    def sequential(self) -> "NativeBackend":
        from engine.api import MultiverseLM

        import torch

        lm = MultiverseLM(self.lm.model, self.lm.tokenizer, parallel=False, threads=torch.get_num_threads(),
                          **self.engine_options)  # same KV options, the threads the run has
        return NativeBackend(None, backend=self.name, url=self.url, parallel=False, lm=lm)

    def describe(self) -> dict[str, Any]:
        kv = getattr(self.lm, "kv", None)  # the start-up line of the engine's KV pool (native)
        return {"backend": self.name, "url": self.url, "parallel": self.parallel, "device": str(self.lm.device),
                "context_length": self.context.length, "context_source": self.context.source,
                "kv": kv.describe() if kv is not None else None}


def engine_context(lm: Any) -> Any:
    """The SGLang server's context length when there is one, else the model's config, else the tokenizer's."""
    from multiverse.evaluation.context import Context, from_model

    server = getattr(lm, "server", None)
    length = server.info.get("context_length") if server is not None and isinstance(getattr(server, "info", None), dict) else None
    if isinstance(length, int) and length > 0:
        return Context(length, "the SGLang server's context_length")
    return from_model(getattr(lm, "model", None), lm.tokenizer)


def to_generation(out: Any) -> Generation:
    s = out.stats
    tree = [{"label": b.label, "depth": b.depth, "tokens": b.num_tokens, "finish_reason": b.finish_reason,
             "mean_entropy": b.mean_entropy, "max_entropy": b.max_entropy} for b in out.tree]
    return Generation(
        raw_text=out.raw_text,  # special tokens kept (the engine's raw decode)
        finish_reason=out.finish_reason,
        generated_tokens=s.generated_tokens,
        forced_tokens=s.forced_tokens,
        critical_path=s.critical_path,
        degree_of_parallelism=s.degree_of_parallelism,
        num_forks=s.num_forks,
        fallbacks=tuple(s.fallbacks),
        wall_s=s.wall_time_s,
        tree=tree,
        token_ids=list(out.token_ids),
        fork_proposals=s.fork_proposals,
        fork_accepted=s.fork_accepted,
        entropies=[round(h, 5) for h in out.entropies if h is not None],
    )
