"""Text out of the engine: stop strings cut at their first occurrence in the new text, clean vs raw text,
incremental decoding that never re-decodes the whole text, and streams that never show what a stop cuts."""
from __future__ import annotations

import pytest

from engine.api import MultiverseLM
from engine.detok import IncrementalText
from engine.params import SamplingParams
from engine.script import ScriptedProcessor
from multiverse.tags import TagIds
from multiverse.tiny import IM_END, build_model

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: tiny models run on one thread


@pytest.fixture(scope="module")
def lm(tok):
    return MultiverseLM(build_model(tok, hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1, seed=6), tok)


def forced(tok, prompt_ids: list[int], ids: list[int], **kw) -> SamplingParams:
    target = prompt_ids + ids + [tok.eos_token_id]
    return SamplingParams(temperature=0, logits_processors=[ScriptedProcessor(target, len(prompt_ids), tok)], **kw)


def test_a_stop_cuts_at_its_first_occurrence_in_the_new_text(lm, tok):
    p_ids = tok("Question:")["input_ids"]
    ids = tok("x44 more")["input_ids"]  # "x", "44", ...: the stop "4" completes inside the token "44"
    assert [tok.decode([i]) for i in ids[:2]] == ["x", "44"]
    (out,) = lm.generate([p_ids], forced(tok, p_ids, ids, stop=["4"]))
    assert out.finish_reason == "stop" and out.text == "x" and out.raw_text == "x" and out.token_ids == ids[:2]
    (kept,) = lm.generate([p_ids], forced(tok, p_ids, ids, stop=["4"], include_stop_str_in_output=True))
    assert kept.text == "x4"


def test_clean_text_drops_special_tokens_but_keeps_the_structure_tags(lm, tok):
    tags = TagIds.from_tokenizer(tok)
    im_end = tok.convert_tokens_to_ids(IM_END)
    p_ids = tok("Question:")["input_ids"]
    ids = [tags.think_open] + tok("x")["input_ids"] + [im_end] + tok("44")["input_ids"] + [tags.think_close]
    (out,) = lm.generate([p_ids], forced(tok, p_ids, ids))
    assert out.token_ids == ids + [tok.eos_token_id]
    assert out.text == "<Think>x44</Think>"
    assert out.raw_text == "<Think>x<|im_end|>44</Think><|endoftext|>"


def test_incremental_decoding_reads_a_short_window_and_equals_the_full_decode(lm, tok):
    text = "é€ ok. " + "The answer is 42. We need to find the value of x such that x + 3 = 7. " * 8
    ids = tok(text)["input_ids"]
    sizes: list[int] = []

    def decode(window: list[int]) -> str:
        sizes.append(len(window))
        return lm.codec.clean(window)

    inc = IncrementalText(decode)
    deltas = [inc.push([t]) for t in ids]
    assert all("\ufffd" not in d for d in deltas) and "".join(deltas) == tok.decode(ids) == text
    assert len(ids) > 150 and max(sizes) <= 8  # a window of a few tokens, not the text so far


def test_a_stream_with_holdback_never_shows_what_the_stop_cuts(lm, tok):
    """As a server streams: after each step, a finished request gets finish(final text), a running one the text
    of its new ids minus the holdback."""
    p_ids = tok("Question:")["input_ids"]
    ids = tok("The answer is 42. We need x")["input_ids"]
    request = lm.submit(p_ids, forced(tok, p_ids, ids, stop=[". We"]))
    assert request.holdback == len(". We") - 1
    streams = {h: IncrementalText(lm.codec.clean, holdback=h) for h in (0, request.holdback)}
    shown = {h: [""] for h in streams}
    while lm.has_work():
        finished = lm.step()
        for h, inc in streams.items():
            if request in finished:
                shown[h].append(shown[h][-1] + inc.finish(request.output.text))
            elif request.root is not None:
                shown[h].append(shown[h][-1] + inc.push(request.root.tokens[len(p_ids) + len(inc.ids) :]))
    final = request.output.text
    assert final == "The answer is 42" and lm.scheduler.stops == {}
    assert all(final.startswith(text) for text in shown[request.holdback]) and shown[request.holdback][-1] == final
    assert not all(final.startswith(text) for text in shown[0])  # without the holdback it showed the cut "."
