"""Unit tests of the curator's parts: sentences, steps and edges, grouping, cache, journal, config, prompts."""
from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from data_pipeline.cache import ResponseCache, cache_key
from data_pipeline.config import ConfigError, GroupingConfig, from_dict, load_config
from data_pipeline.grouping import Block, Sentences, blocks_of, independent_runs, plan
from data_pipeline.llm import ReplyError, parse_json_reply
from data_pipeline.prompts import load_prompt
from data_pipeline.schemas import STEPS
from data_pipeline.sentences import split_sentences
from data_pipeline.steps import Step, edges_from_reply, steps_from_reply
from data_pipeline.store import Journal


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet="ab .!?\n\t$x", max_size=300))
def test_sentence_split_is_lossless(text: str) -> None:
    assert "".join(split_sentences(text)) == text


def test_sentence_split_cuts_after_punctuation_and_newlines() -> None:
    assert split_sentences("One. Two!\nThree? four") == ["One. ", "Two!\n", "Three? ", "four"]


def _reply(*spans: tuple[int, int, list[tuple[int, int]]]) -> dict:
    return {"steps": [{"summary": "s", "first": a, "last": b,
                       "substeps": [{"summary": "t", "first": x, "last": y} for x, y in subs]} for a, b, subs in spans]}


def test_steps_must_tile_every_sentence() -> None:
    steps = steps_from_reply(_reply((1, 4, [(1, 2), (3, 4)]), (5, 9, [])), 9)
    assert [(s.id, s.first, s.last) for s in steps] == [("S1", 0, 4), ("S2", 4, 9)]
    assert [s.id for s in steps[0].substeps] == ["S1.1", "S1.2"]
    with pytest.raises(ReplyError, match="unassigned"):
        steps_from_reply(_reply((1, 4, []), (6, 9, [])), 9)
    with pytest.raises(ReplyError, match="overlaps"):
        steps_from_reply(_reply((1, 4, []), (4, 9, [])), 9)
    with pytest.raises(ReplyError, match="must end at sentence 10"):
        steps_from_reply(_reply((1, 4, []), (5, 9, [])), 10)
    with pytest.raises(ReplyError, match="substeps of S1"):
        steps_from_reply(_reply((1, 4, [(1, 2), (4, 4)]), (5, 9, [])), 9)


def test_edges_are_lifted_to_siblings_and_must_point_back() -> None:
    steps = steps_from_reply(_reply((1, 4, [(1, 2), (3, 4)]), (5, 6, []), (7, 9, [])), 9)
    edges = edges_from_reply({"dependencies": [{"step": "S3", "needs": ["S1.2"]}, {"step": "S1.2", "needs": ["S1.1"]}]},
                             steps)
    assert edges == {("S1", "S3"), ("S1.1", "S1.2")}
    with pytest.raises(ReplyError, match="does not come before"):
        edges_from_reply({"dependencies": [{"step": "S1", "needs": ["S2"]}]}, steps)
    with pytest.raises(ReplyError, match="unknown step id 'S7'"):
        edges_from_reply({"dependencies": [{"step": "S7", "needs": []}]}, steps)


def _chain(n: int) -> tuple[Step, ...]:
    return tuple(Step(f"S{i}", "x", i - 1, i) for i in range(1, n + 1))


def test_runs_use_the_transitive_closure_and_the_path_limit() -> None:
    steps = _chain(5)
    runs = independent_runs(steps, frozenset({("S1", "S3"), ("S3", "S4")}), max_paths=8)
    assert [[s.id for s in r] for r in runs] == [["S1", "S2"], ["S3"], ["S4", "S5"]]
    runs = independent_runs(steps, frozenset(), max_paths=2)
    assert [[s.id for s in r] for r in runs] == [["S1", "S2"], ["S3", "S4"], ["S5"]]


def test_plan_nests_substep_blocks_inside_paths() -> None:
    s1 = Step("S1", "a", 0, 4, (Step("S1.1", "a1", 0, 2), Step("S1.2", "a2", 2, 4)))
    s2 = Step("S2", "b", 4, 6)
    s3 = Step("S3", "c", 6, 8)
    items = plan((s1, s2, s3), frozenset({("S2", "S3")}), GroupingConfig())
    assert isinstance(items[0], Block) and items[1] == Sentences(6, 8)
    outer = items[0]
    assert [m.step.id for m in outer.members] == ["S1", "S2"]
    inner = outer.members[0].items[0]
    assert isinstance(inner, Block) and [m.step.id for m in inner.members] == ["S1.1", "S1.2"]
    assert [b.id for b in blocks_of(items)] == ["B1", "B2"]
    flat = plan((s1, s2, s3), frozenset({("S2", "S3")}), GroupingConfig(nested=False))
    assert outer.members[0].items != flat[0].members[0].items


def test_reply_json_is_checked_against_the_schema() -> None:
    assert parse_json_reply('```json\n{"steps": [{"summary": "a", "first": 1, "last": 2}]}\n```', STEPS)
    prose = 'Sure, here it is: {"steps": [{"summary": "a {b}", "first": 1, "last": 2}]} Hope it helps {:)}'
    assert parse_json_reply(prose, STEPS)["steps"][0]["summary"] == "a {b}"
    fenced = 'The steps:\n```json\n{"steps": [{"summary": "a", "first": 1, "last": 2}]}\n```\nDone.'
    assert parse_json_reply(fenced, STEPS)["steps"][0]["last"] == 2
    with pytest.raises(ReplyError, match="not valid JSON"):
        parse_json_reply('{"steps": [', STEPS)
    with pytest.raises(ReplyError, match="steps/0"):
        parse_json_reply('{"steps": [{"summary": "a", "first": 0, "last": 2}]}', STEPS)


def test_cache_is_keyed_by_everything_that_changes_a_reply(tmp_path) -> None:
    msgs = [{"role": "user", "content": "hi"}]
    k = cache_key("m", msgs, {"temperature": 0.0}, 1)
    assert k != cache_key("m2", msgs, {"temperature": 0.0}, 1)
    assert k != cache_key("m", msgs, {"temperature": 0.5}, 1)
    assert k != cache_key("m", msgs, {"temperature": 0.0}, 2)
    assert k != cache_key("m", [{"role": "user", "content": "hi!"}], {"temperature": 0.0}, 1)
    cache = ResponseCache(tmp_path)
    assert cache.get(k) is None
    cache.put(k, "reply", (12, 3))
    assert ResponseCache(tmp_path).get(k) == {"key": k, "reply": "reply", "usage": [12, 3]}
    (tmp_path / k[:2] / f"{k}.json").write_text('{"key": "', encoding="utf-8")  # torn file: a miss
    assert cache.get(k) is None


def test_journal_drops_a_torn_tail_and_keeps_the_latest_entry(tmp_path) -> None:
    j = Journal(tmp_path)
    j.append({"id": "a", "index": 0, "status": "ok", "input": "d1"})
    j.append({"id": "b", "index": 1, "status": "failed", "retryable": True})
    j.append({"id": "c", "index": 2, "status": "failed", "retryable": False})
    j.close()
    with open(tmp_path / "journal.jsonl", "a", encoding="utf-8") as f:
        f.write('{"id": "d", "ind')
    j = Journal(tmp_path)
    assert j.done("a", "d1") and not j.done("a", "d2")  # a changed input row is curated again
    assert not j.done("b") and j.done("c") and not j.done("c", retry_failed=True) and "d" not in j.entries
    assert (j.tries("a"), j.tries("d")) == (1, 0)
    j.append({"id": "b", "index": 1, "status": "ok"})
    j.append({"id": "c", "index": 2, "status": "ok", "round": 1})
    j.close()
    j = Journal(tmp_path)
    assert j.entries["b"]["status"] == "ok" and j.entries["c"]["status"] == "ok" and j.tries("c") == 2
    j.close()
    lines = (tmp_path / "journal.jsonl").read_text().splitlines()
    assert all(json.loads(line) for line in lines)


def test_config_errors_name_the_key_and_the_file(tmp_path, monkeypatch) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("run:\n  concurency: 3\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"c\.yaml, line 2: run: unknown key\(s\) concurency \(did you mean concurrency\?\)"):
        load_config(path)
    with pytest.raises(ConfigError, match="checks.max_distance"):
        from_dict({"checks": {"max_distance": 2}})
    cfg = load_config(None, ["run.concurrency=3", "checks.sibling_openers=[Also]"])
    assert cfg.run.concurrency == 3 and cfg.checks.sibling_openers == ("Also",)
    monkeypatch.delenv("OPENAI_MODEL", raising=False)
    with pytest.raises(ConfigError, match="OPENAI_MODEL"):
        from_dict({}).llm.resolved()
    monkeypatch.setenv("OPENAI_MODEL", "m")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    resolved = from_dict({}).llm.resolved()
    assert (resolved.model, resolved.base_url) == ("m", "http://127.0.0.1:9/v1")


def test_user_prompts_are_loaded_and_checked(tmp_path) -> None:
    (tmp_path / "steps.yaml").write_text("system: s\nuser: 'see {{sentencez}}'\nretry: 'r {{reason}}'\n")
    prompt = load_prompt("steps", tmp_path)
    with pytest.raises(ConfigError, match=r"\{\{sentencez\}\}"):
        prompt.messages(question="q", sentences="x", count="1")
    builtin = load_prompt("steps")
    assert "[1] a" in builtin.messages(question="q", sentences="[1] a", count="1")[1]["content"]
    assert len(builtin.version) == 12


def test_stats_cli_on_reference_traces(capsys) -> None:
    """`multiverse curate --stats` reads the reference's own XML traces and reports their parallelism."""
    from multiverse.cli import main

    from curate_support import EXAMPLES

    files = [str(EXAMPLES / f"{k}.xml") for k in (2, 4, 5)]
    assert main(["curate", "--stats", *files]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["traces"] == 3 and summary["unparsable"] == 0
    assert 1.0 < summary["parallelism"]["min"] <= summary["parallelism"]["mean"] < 2.5
    assert summary["blocks_per_trace"]["min"] >= 1 and 0 < summary["fraction_in_paths"] < 1


def test_inputs_from_parquet_carry_every_field_and_check_names(tmp_path) -> None:
    import datasets

    from data_pipeline.config import InputConfig
    from data_pipeline.inputs import load_rows, to_samples

    rows = [{"question": "q1", "deepseek_thinking_trajectory": "t1", "solution": "s1"},
            {"question": "q2", "deepseek_thinking_trajectory": "t2", "solution": "s2"}]
    datasets.Dataset.from_list(rows).to_parquet(str(tmp_path / "in.parquet"))
    cfg = InputConfig(source=str(tmp_path / "in.parquet"))
    samples = to_samples(load_rows(cfg), cfg)
    assert [(s.id, s.question, s.trace, s.row["solution"]) for s in samples] == [
        ("row-0", "q1", "t1", "s1"), ("row-1", "q2", "t2", "s2")]
    with pytest.raises(ConfigError, match="no field 'trace'"):
        to_samples(rows, InputConfig(trace_field="trace"))
    with pytest.raises(ConfigError, match="share the id 'a'"):
        to_samples([dict(rows[0], id="a"), dict(rows[1], id="a")], cfg)
    with pytest.raises(ConfigError, match="does not exist"):
        load_rows(InputConfig(source=str(tmp_path / "missing.jsonl")))


def test_strict_schemas_close_every_object_and_require_every_property() -> None:
    from data_pipeline.schemas import BY_STAGE, strict

    def objects(node):
        if isinstance(node, dict):
            if node.get("type") == "object":
                yield node
            for v in node.values():
                yield from objects(v)

    for schema in BY_STAGE.values():
        closed = list(objects(strict(schema)))
        assert closed and all(o["additionalProperties"] is False and o["required"] == list(o["properties"])
                              for o in closed)
    assert "substeps" not in STEPS["properties"]["steps"]["items"]["required"]  # the local schema stays lenient


def test_failure_reasons_keep_quoted_names_apart_and_blank_numbers() -> None:
    from data_pipeline.report import reason_kind

    assert reason_kind("unknown step id 'S7'") != reason_kind("unknown step id 'S8'")
    assert reason_kind('missing "goal" at 3') != reason_kind('missing "conclusion" at 3')
    assert reason_kind("no valid result after 4 attempts") == reason_kind("no valid result after 2 attempts")
    assert reason_kind("sentence 17 is not one of this block's own") == "sentence N is not one of this block's own"


def test_the_outer_rewrite_prompt_shows_its_nested_blocks_sentences() -> None:
    from data_pipeline.curator import _paths_text

    s1 = Step("S1", "a", 0, 4, (Step("S1.1", "a1", 0, 2), Step("S1.2", "a2", 2, 4)))
    items = plan((s1, Step("S2", "b", 4, 6)), frozenset(), GroupingConfig())
    sentences = [f"Fact number {k}. " for k in range(6)]
    text = _paths_text(items[0], sentences)
    assert all(f"Fact number {k}." in text for k in range(6))  # nested sentences 0-3 included
    assert "\n[1] " not in text and "    | [1] Fact number 0." in text  # marked as not the block's own


def test_rate_limiter_waits_for_requests_and_tokens_to_leave_the_window() -> None:
    from data_pipeline.ratelimit import Booking, RateLimiter

    now = [100.0]
    lim = RateLimiter(rpm=2, tpm=None, window=10.0, clock=lambda: now[0])
    lim._booked.extend([Booking(95.0, 1), Booking(99.0, 1)])
    assert lim._wait(now[0], 1) == pytest.approx(5.0)  # the first booking leaves at 105
    lim = RateLimiter(rpm=None, tpm=100, window=10.0, clock=lambda: now[0])
    lim._booked.extend([Booking(92.0, 60), Booking(97.0, 30)])
    assert lim._wait(now[0], 10) == 0.0
    assert lim._wait(now[0], 20) == pytest.approx(2.0)  # 60 must leave first
    assert lim._wait(now[0], 80) == pytest.approx(7.0)  # both must leave
    lim.settle(lim._booked[0], 10)  # the reply's usage was smaller than booked
    assert lim._wait(now[0], 50) == 0.0
    assert RateLimiter(None, 100, 10.0)._wait(0.0, 500) == 0.0  # an oversized request still runs into an empty window


def test_the_sample_config_dry_runs_on_the_shipped_rows(monkeypatch, capsys) -> None:
    """The README's `curate --dry-run` example: the 10 s1K rows in multiverse/data, no hub, no endpoint."""
    from pathlib import Path

    from multiverse.cli import main

    monkeypatch.chdir(Path(__file__).resolve().parent.parent)  # the config names the file from the repository root
    for name in ("OPENAI_BASE_URL", "OPENAI_MODEL"):
        monkeypatch.delenv(name, raising=False)
    assert main(["curate", "--config", "data_pipeline/configs/s1k_sample.yaml", "--dry-run", "--json"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["dry_run"] and report["samples"] == 10 and report["calls"] > 10
