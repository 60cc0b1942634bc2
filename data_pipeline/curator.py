"""One sample through every stage, with regenerate-until-valid.

Stages: steps (LLM) -> dependencies (LLM) -> grouping (networkx) -> rewrite (LLM, one call per block, in
parallel) -> assemble -> checks. A rejected reply goes back to its stage with the reason appended to the
conversation; a failed check goes back to the stage it names (rewrite, for the blocks it names). Each stage
(each block, for rewrite) is asked at most `run.max_attempts` times; then the sample fails with every reason.
The outcome depends only on the sample and the replies, never on timing, so a resumed run reproduces it.
"""
from __future__ import annotations

import asyncio
import dataclasses
from dataclasses import dataclass, field
from typing import Any

from multiverse.tags import TAGS

from data_pipeline import schemas
from data_pipeline.assemble import BlockText, render
from data_pipeline.checks import CheckResult, Failure, check_sample, content_distance
from data_pipeline.config import CurateConfig
from data_pipeline.grouping import Block, Item, blocks_of, plan
from data_pipeline.llm import LLM, EndpointError, ReplyError
from data_pipeline.prompts import Prompt
from data_pipeline.sample import Sample
from data_pipeline.sentences import numbered, split_sentences
from data_pipeline.steps import Step, edges_from_reply, outline_text, steps_from_reply


class StageFailed(Exception):
    def __init__(self, stage: str, reason: str, retryable: bool = False) -> None:
        super().__init__(reason)
        self.stage, self.reason, self.retryable = stage, reason, retryable


@dataclass
class _Conversation:
    """The running chat of one stage (or one block's rewrite) and how often it was asked."""

    name: str
    messages: list[dict[str, str]]
    attempts: int = 0
    last_reply: str = ""
    rejections: list[str] = field(default_factory=list)


@dataclass
class _State:
    sample: Sample
    sentences: list[str]
    round_: int = 0
    chats: list[_Conversation] = field(default_factory=list)  # in creation order: steps, dependencies, blocks
    check_rejections: list[dict[str, str]] = field(default_factory=list)
    attempts: dict[str, int] = field(default_factory=dict)
    distance: float | None = None  # of the latest assembled trace (failed samples report it too)
    usage: dict[str, int] = field(default_factory=lambda: {"calls": 0, "prompt_tokens": 0, "completion_tokens": 0})

    def spend(self, reply: Any) -> None:
        """Count a reply (cached or fresh) towards the sample's token usage."""
        if reply is not None:
            self.usage["calls"] += 1
            self.usage["prompt_tokens"] += reply.prompt_tokens
            self.usage["completion_tokens"] += reply.completion_tokens

    def rejections(self) -> list[dict[str, str]]:
        """Every rejection, grouped by conversation in a fixed order (never in the order concurrent calls
        finished), then the failed checks: the same list on every run with the same replies."""
        out = [{"stage": c.name, "reason": r} for c in self.chats for r in c.rejections]
        return out + self.check_rejections


class Curator:
    def __init__(self, cfg: CurateConfig, llm: LLM, prompts: dict[str, Prompt]) -> None:
        self.cfg, self.llm, self.prompts = cfg, llm, prompts

    async def curate(self, sample: Sample, round_: int = 0) -> dict[str, Any]:
        """The journal entry of one sample: status "ok" with its record, or "failed" with its reasons.
        `round_`: how many times the sample was tried before (a --retry-failed run asks afresh)."""
        state = _State(sample, split_sentences(sample.trace), round_=round_)
        try:
            _check_input(sample)
            record, result = await self._run(state)
        except Exception as err:  # noqa: BLE001 - a bug must not sink the run; the sample is retried next run
            if not isinstance(err, StageFailed):
                err = StageFailed("internal", f"internal error: {type(err).__name__}: {err}", retryable=True)
            reasons = state.rejections() + [{"stage": err.stage, "reason": err.reason}]
            return {"id": sample.id, "index": sample.index, "input": sample.digest, "round": round_,
                    "status": "failed", "stage": err.stage, "retryable": err.retryable, "reasons": reasons,
                    "attempts": state.attempts, "distance": state.distance, "usage": state.usage}
        return {"id": sample.id, "index": sample.index, "input": sample.digest, "round": round_, "status": "ok",
                "record": record, "distance": result.distance, "reasons": state.rejections(),
                "attempts": state.attempts, "usage": state.usage}

    async def _run(self, state: _State) -> tuple[dict[str, Any], CheckResult]:
        steps_chat = self._chat(state, "steps", question=state.sample.question, count=str(len(state.sentences)),
                                sentences=numbered(state.sentences))
        steps = await self._ask(state, steps_chat, lambda obj: steps_from_reply(obj, len(state.sentences)))
        deps_chat = self._chat(state, "dependencies", question=state.sample.question, steps=outline_text(steps))
        edges = await self._ask(state, deps_chat, lambda obj: edges_from_reply(obj, steps))
        items = plan(steps, edges, self.cfg.grouping)
        blocks = blocks_of(items)
        chats = {b.id: self._rewrite_chat(state, b) for b in blocks}
        texts: dict[str, BlockText] = {}
        rewrites: dict[str, dict[int, str]] = {}
        todo = [b.id for b in blocks]
        while True:
            await self._rewrite(state, [b for b in blocks if b.id in todo], chats, texts, rewrites)
            parallel, result = self._assemble(state, items, blocks, texts, rewrites)
            state.distance = result.distance
            if result.ok:
                return self._record(state, parallel, result, steps, blocks), result
            todo = self._route(state, result, chats, blocks, rewrites)

    # ------------------------------------------------------------------ LLM stages
    def _chat(self, state: _State, name: str, **values: str) -> _Conversation:
        chat = _Conversation(name, self.prompts[name.split(":")[0]].messages(**values))
        state.chats.append(chat)
        return chat

    async def _ask(self, state: _State, chat: _Conversation, accept: Any) -> Any:
        """Ask until `accept(json)` returns without ReplyError, at most max_attempts times in all."""
        stage = chat.name.split(":")[0]
        while True:
            self._count(state, chat)
            try:
                obj, reply = await self.llm.ask_json(
                    chat.messages, stage, schemas.BY_STAGE[stage], chat.attempts, state.round_)
                state.spend(reply)
                chat.last_reply = reply.text
                return accept(obj)
            except ReplyError as err:
                state.spend(err.usage)
                chat.last_reply = err.reply or chat.last_reply
                self._reject(chat, err.reason)
            except EndpointError as err:
                raise StageFailed(stage, f"endpoint failure: {err}", retryable=err.retryable) from err

    def _count(self, state: _State, chat: _Conversation) -> None:
        stage = chat.name.split(":")[0]
        if chat.attempts >= self.cfg.run.max_attempts:
            last = chat.rejections[-1] if chat.rejections else "none recorded"
            raise StageFailed(stage, f"{chat.name}: no valid result after {chat.attempts} attempts "
                                     f"(last reason: {last})")
        chat.attempts += 1
        state.attempts[stage] = max(state.attempts.get(stage, 0), chat.attempts)

    def _reject(self, chat: _Conversation, reason: str) -> None:
        """Record the reason and append it to the conversation, so the next attempt sees it."""
        stage = chat.name.split(":")[0]
        chat.rejections.append(reason)
        chat.messages = chat.messages + self.prompts[stage].retry_turns(chat.last_reply, reason)

    def _rewrite_chat(self, state: _State, block: Block) -> _Conversation:
        first = block.members[0].step.first
        context = "".join(state.sentences[max(0, first - 3):first]).strip() or "(the block opens the trace)"
        return self._chat(state, f"rewrite:{block.id}", question=state.sample.question, context=context,
                          count=str(len(block.members)), paths=_paths_text(block, state.sentences))

    async def _rewrite(self, state: _State, blocks: list[Block], chats: dict[str, _Conversation],
                       texts: dict[str, BlockText], rewrites: dict[str, dict[int, str]]) -> None:
        async def one(block: Block) -> None:
            texts[block.id], rewrites[block.id] = await self._ask(
                state, chats[block.id], lambda obj: _accept_rewrite(obj, block))

        # Every block runs to its end (no cancelling on a sibling's failure), and the failure reported is
        # the first in block order: which blocks fail must not depend on timing.
        outcomes = await asyncio.gather(*(one(b) for b in blocks), return_exceptions=True)
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome

    # ------------------------------------------------------------------ assembly and checks
    def _assemble(self, state: _State, items: tuple[Item, ...], blocks: list[Block],
                  texts: dict[str, BlockText], rewrites: dict[str, dict[int, str]]) -> tuple[str, CheckResult]:
        merged = {k: v for bid in sorted(rewrites) for k, v in rewrites[bid].items()}
        try:
            parallel = render(items, state.sentences, merged, texts, self.cfg.output.wrap_think)
        except ValueError as err:  # StructureError: reported as the grammar check's failure
            return "", CheckResult((Failure("grammar", f"the assembled trace does not parse: {err}"),), None, None)
        result = check_sample(parallel, state.sample.trace, [b.id for b in blocks], self.cfg.checks)
        return parallel, self._local_content(result, state, blocks, rewrites)

    def _local_content(self, result: CheckResult, state: _State, blocks: list[Block],
                       rewrites: dict[str, dict[int, str]]) -> CheckResult:
        """Add a content failure for each block whose own text changed more than max_block_distance:
        a block can lose most of its sentences while the whole trace stays under max_distance."""
        limit = self.cfg.checks.max_block_distance
        extra = []
        for b in blocks:
            change = _block_change(b, state.sentences, rewrites.get(b.id, {}), "content", "")
            if change > limit:
                extra.append(Failure("content", f"the rewrites change {change:.2f} of this block's text "
                                                f"(more than {limit}); keep every sentence's content", b.id))
        return dataclasses.replace(result, failures=result.failures + tuple(extra)) if extra else result

    def _route(self, state: _State, result: CheckResult, chats: dict[str, _Conversation],
               blocks: list[Block], rewrites: dict[str, dict[int, str]]) -> list[str]:
        """Send each failure back to the blocks to blame; returns the blocks to rewrite again."""
        if not blocks:
            raise StageFailed("checks", "; ".join(f.reason for f in result.failures))
        reasons: dict[str, list[str]] = {}
        for f in result.failures:
            state.check_rejections.append({"stage": f"checks:{f.kind}", "reason": f.reason})
            for bid, why in self._blame(f, result.answer or "", state, blocks, rewrites):
                reasons.setdefault(bid, []).append(why)
        for bid, why in reasons.items():
            self._reject(chats[bid], "; ".join(why))
        return list(reasons)

    def _blame(self, f: Failure, answer: str, state: _State, blocks: list[Block],
               rewrites: dict[str, dict[int, str]]) -> list[tuple[str, str]]:
        """(block, reason) pairs: the named block; for content and answer failures, the blocks whose
        rewrites changed the most or lost the answer; otherwise every block."""
        if f.block is not None:
            return [(f.block, f.reason)]
        if f.kind not in ("content", "answer"):
            return [(b.id, f.reason) for b in blocks]
        changes = [(_block_change(b, state.sentences, rewrites.get(b.id, {}), f.kind, answer), b.id) for b in blocks]
        worst = max(changes)
        blamed = [(bid, f"{f.reason}. This block's rewrites change {c:.2f} of its text") for c, bid in changes
                  if c > self.cfg.checks.max_distance or (c == worst[0] and c > 0)]
        return blamed or [(b.id, f.reason) for b in blocks]

    def _record(self, state: _State, parallel: str, result: CheckResult, steps: tuple[Step, ...],
                blocks: list[Block]) -> dict[str, Any]:
        from multiverse.structure import sequential_twin

        record = dict(state.sample.row)
        record["id"] = state.sample.id
        record["deepseek_thinking_trajectory_parallel"] = parallel
        record["deepseek_thinking_trajectory_sequential"] = sequential_twin(parallel)
        record["distance"] = round(float(result.distance or 0.0), 6)
        record["provenance"] = {
            "model": self.llm.cfg.model,
            "sampling": self.llm.cfg.sampling(),
            "prompts": {stage: p.version for stage, p in sorted(self.prompts.items())},
            "attempts": {k: state.attempts.get(k, 0) for k in ("steps", "dependencies", "rewrite")},
            "rejections": len(state.rejections()),
            "sentences": len(state.sentences),
            "steps": len(steps),
            "substeps": sum(len(s.substeps) for s in steps),
            "blocks": len(blocks),
            "checks": {"grammar": True, "agreement": True, "content_distance": record["distance"],
                       "max_distance": self.cfg.checks.max_distance, "answer": result.answer or ""},
        }
        return record


def _block_change(block: Block, sentences: list[str], rewrites: dict[int, str], kind: str, answer: str) -> float:
    """How much a block's rewrites changed its own text (normalised distance); for an answer failure,
    1.0 when the block's original text held the answer and its rewritten text does not."""
    own = [k for m in block.members for k in block.own_sentences(m)]
    before = "".join(sentences[k] for k in own)
    after = " ".join(rewrites.get(k, sentences[k]) for k in own)
    if kind == "answer":
        return float(_squash(answer) in _squash(before) and _squash(answer) not in _squash(after))
    return content_distance(after, before)


def _squash(text: str) -> str:
    return "".join(text.split())


def _check_input(sample: Sample) -> None:
    for tag in TAGS:
        at = sample.trace.find(tag)
        if at >= 0:
            raise StageFailed("input", f"the original trace already contains the structure tag {tag} at "
                                       f"character {at}; it cannot be restructured")
    if not sample.trace.strip():
        raise StageFailed("input", "the trace is empty")


def _paths_text(block: Block, sentences: list[str]) -> str:
    parts = []
    for i, member in enumerate(block.members, start=1):
        parts.append(f"Path {i} (step {member.step.id}: {member.step.summary})")
        for it in member.items:
            if isinstance(it, Block):
                parts.append(f"(a nested parallel block of {len(it.members)} paths runs here, rewritten on its "
                             "own; its sentences, for reading only, never in \"rewrites\":)")
                parts.append(_nested_text(it, sentences))
            else:
                parts.append(numbered(sentences, it.first, it.last))
    return "\n".join(parts)


def _nested_text(block: Block, sentences: list[str]) -> str:
    """A nested block's sentences, indented and marked so they cannot pass for the outer block's own."""
    first = min(m.step.first for m in block.members)
    last = max(m.step.last for m in block.members)
    return "\n".join(f"    | {line}" for line in numbered(sentences, first, last).splitlines())


def _accept_rewrite(obj: dict[str, Any], block: Block) -> tuple[BlockText, dict[int, str]]:
    n = len(block.members)
    if len(obj["outlines"]) != n:
        raise ReplyError(f"the block has {n} paths but the reply gives {len(obj['outlines'])} outlines")
    own = {k for m in block.members for k in block.own_sentences(m)}
    rewrites: dict[int, str] = {}
    for rw in obj["rewrites"]:
        k = rw["sentence"] - 1
        if k not in own:
            raise ReplyError(f"sentence {rw['sentence']} is not one of this block's own sentences")
        rewrites[k] = rw["text"]
    texts = [obj.get("goal", ""), obj["conclusion"], *obj["outlines"], *rewrites.values()]
    for text in texts:
        for tag in TAGS:
            if tag in text:
                raise ReplyError(f"the reply contains the structure tag {tag}; write plain text only")
    return BlockText(obj.get("goal", ""), tuple(obj["outlines"]), obj["conclusion"]), rewrites
