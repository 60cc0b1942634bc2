"""The curator end to end against the scripted OpenAI-compatible server on 127.0.0.1 (real sockets)."""
from __future__ import annotations

import json
import shutil

import pytest
import torch

from curate_support import SAMPLE, config_dict, make_input, read_jsonl
from data_pipeline import curate
from data_pipeline.checks import check_sample, content_distance
from data_pipeline.config import ChecksConfig
from data_pipeline.scripted_server import ScriptedServer, ServerConfig
from data_pipeline.sentences import split_sentences
from multiverse.attention import layout
from multiverse.encode import encode_trace
from multiverse.structure import canonicalize, parse, sequential_twin
from multiverse.tiny import build_model, build_tokenizer

PARALLEL = "deepseek_thinking_trajectory_parallel"


@pytest.fixture(scope="module")
def run_ok(tmp_path_factory):
    """One fault-free run over 8 shortened sample rows; yields (inputs, result, server, out_dir)."""
    tmp = tmp_path_factory.mktemp("curate")
    rows = make_input(tmp / "in.jsonl", rows=8)
    with ScriptedServer(ServerConfig(max_seconds=120)) as server:
        result = curate(config_dict(tmp / "in.jsonl", tmp / "out", server.base_url))
        yield rows, result, server, tmp


def test_end_to_end_output_parses_and_passes_every_check(run_ok) -> None:
    rows, result, _, tmp = run_ok
    assert result.failed == [] and [r["id"] for r in result.curated] == [r["id"] for r in rows]
    nested = 0
    for row, rec in zip(rows, result.curated):
        text = rec[PARALLEL]
        assert canonicalize(text) == text  # canonical form
        doc = parse(text)
        blocks = list(doc.blocks())
        assert blocks, "the scripted grouping always yields blocks"
        nested += any(b.depth() > 1 for b in blocks)
        assert check_sample(text, row["deepseek_thinking_trajectory"], [], ChecksConfig()).ok
        assert rec["deepseek_thinking_trajectory_sequential"] == sequential_twin(text)
        assert rec["distance"] <= 0.2
        assert rec["deepseek_thinking_trajectory"] == row["deepseek_thinking_trajectory"]  # carried through
        assert rec.get("deepseek_attempt") == row.get("deepseek_attempt")
        prov = rec["provenance"]
        assert prov["model"] == "scripted" and set(prov["prompts"]) == {"steps", "dependencies", "rewrite"}
        assert prov["checks"]["answer"] == row["deepseek_thinking_trajectory"].rsplit("{", 1)[1].rstrip("}")
        assert "Alternatively" not in "".join(p.children[0].text[:14] for b in blocks for p in b.paths
                                              if p.children and hasattr(p.children[0], "text"))
    assert nested > 0
    on_disk = read_jsonl(tmp / "out" / "curated.jsonl")
    assert on_disk == result.curated


def test_end_to_end_writes_dataset_report_and_histogram(run_ok) -> None:
    import datasets

    _, result, _, tmp = run_ok
    out = tmp / "out"
    ds = datasets.load_from_disk(str(out / "dataset"))
    assert ds[PARALLEL] == [r[PARALLEL] for r in result.curated]
    report = json.loads((out / "report.json").read_text())
    assert report["converted"] == 8 and report["failed"] == 0 and report["missing"] == 0
    assert report["stages"]["checks"]["passed"] == 8
    assert (out / "distance_histogram.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    s = report["structure"]
    assert s["traces"] == 8 and s["parallelism"]["mean"] > 1.5 and max(map(int, s["nesting_depth"])) == 2
    assert 0 < s["tokens_in_paths"] < s["tokens"]


def test_output_feeds_the_trainer(run_ok) -> None:
    """The trainer's own loading, encoding and collator accept the rows, and a tiny model trains on them."""
    from training.collator import CollatorConfig, MultiverseCollator
    from training.config import DataConfig
    from training.data import load_rows, multiverse_examples
    from training.encoding import encode_all

    _, _, _, tmp = run_ok
    tok = build_tokenizer()
    cfg = DataConfig(multiverse=str(tmp / "out" / "dataset"), block_size=3072)
    rows = load_rows(cfg.multiverse, cfg)
    samples, stats = encode_all(multiverse_examples(rows, cfg.multiverse, cfg, twin=False), tok, cfg, progress=False)
    assert stats.samples == 8
    for rec in rows[:3]:
        layout(encode_trace(rec[PARALLEL], tok), tok, strict=True)  # full traces are structurally exact
    short = [{k: v[:640] for k, v in s.items()} for s in samples[:2]]  # a cut inside a block is allowed
    batch = MultiverseCollator(tok, CollatorConfig(pad_id=tok.pad_token_id))(short)
    batch.pop("mask_stats")
    model = build_model(tok)
    mask = batch.pop("attention_mask")
    out = model(**batch, attention_mask=torch.where(mask, 0.0, float("-inf")))
    assert torch.isfinite(out.loss)
    out.loss.backward()


def test_a_rerun_costs_no_calls_and_gives_the_same_output(run_ok) -> None:
    _, result, server, tmp = run_ok
    before = server.requests
    first = (tmp / "out" / "curated.jsonl").read_bytes()
    rerun = curate(config_dict(tmp / "in.jsonl", tmp / "out", server.base_url))  # everything journaled
    assert server.requests == before and rerun.curated == result.curated
    for name in ("journal.jsonl", "curated.jsonl", "failed.jsonl"):
        (tmp / "out" / name).unlink()
    shutil.rmtree(tmp / "out" / "dataset")
    again = curate(config_dict(tmp / "in.jsonl", tmp / "out", server.base_url))  # journal gone, cache kept
    assert server.requests == before
    assert again.report["calls"]["cache_hits"] > 0 and again.report["calls"]["requests"] == 0
    assert (tmp / "out" / "curated.jsonl").read_bytes() == first


def test_faults_at_30_percent_lose_no_sample(tmp_path) -> None:
    rows = make_input(tmp_path / "in.jsonl", rows=10)
    server_cfg = ServerConfig(fault_rate=0.3, timeout_sleep=1.2, seed=7, max_seconds=150)
    with ScriptedServer(server_cfg) as server:
        cfg = config_dict(tmp_path / "in.jsonl", tmp_path / "out", server.base_url,
                          llm={"timeout": 0.6}, run={"concurrency": 8, "max_attempts": 4})
        result = curate(cfg)
    assert set(server.faults) == {"429", "500", "timeout", "truncated", "broken", "lost"}
    ids = [r["id"] for r in result.curated] + [f["id"] for f in result.failed]
    assert sorted(ids) == sorted(r["id"] for r in rows)  # every sample converted or failed, none twice
    for f in result.failed:
        assert f["reasons"] and all(r["reason"] for r in f["reasons"])
    originals = {r["id"]: r["deepseek_thinking_trajectory"] for r in rows}
    for rec in result.curated:
        assert check_sample(rec[PARALLEL], originals[rec["id"]], [], ChecksConfig()).ok
    report = result.report
    assert report["calls"]["retries"] > 0 and report["converted"] + report["failed"] == 10
    assert sum(c["regenerated"] for c in report["stages"].values()) > 0


# ---------------------------------------------------------------------------- the content check
def _faithful(text: str, paths: int = 3) -> str:
    """A parallel version of `text` that keeps every sentence: the middle third split into paths."""
    s = split_sentences(text)
    a, b = len(s) // 3, 2 * len(s) // 3
    size = max(1, (b - a) // paths)
    chunks = [s[a + k * size: a + (k + 1) * size if k < paths - 1 else b] for k in range(paths)]
    outlines = "".join(f"<Outline>{k + 1}: part {k + 1}</Outline>" for k in range(paths))
    body = "".join(f"<Path>{k + 1}: {''.join(c).strip()}</Path>" for k, c in enumerate(chunks))
    block = f"<Parallel><Goal>{outlines}</Goal>{body}<Conclusion>done</Conclusion></Parallel>\n"
    return "<Think>" + "".join(s[:a]) + block + "".join(s[b:]) + "</Think>"


def _trace() -> str:
    return json.loads(SAMPLE.read_text(encoding="utf-8").splitlines()[2])["deepseek_thinking_trajectory"]


def test_content_check_accepts_a_faithful_rewrite() -> None:
    original = _trace()
    parallel = _faithful(original)
    result = check_sample(parallel, original, [], ChecksConfig(sibling_openers=()))
    assert result.ok and result.distance is not None and result.distance < 0.01
    flagged = check_sample(parallel, original, [], ChecksConfig(sibling_openers=("Similarly",)))
    assert [f.kind for f in flagged.failures] == ["agreement"]  # this split opens a path with "Similarly"


@pytest.mark.parametrize("change", ["drop", "invent"])
def test_content_check_rejects_lost_or_invented_content(change: str) -> None:
    original = _trace()
    s = split_sentences(original)
    if change == "drop":  # a quarter of the sentences vanish
        edited = "".join(x for k, x in enumerate(s) if k % 4 != 1)
    else:  # new reasoning, a quarter of the length, inserted in the middle
        filler = "Suppose instead that the function were periodic with period seven, then every term repeats. "
        extra = filler * (len(original) // (4 * len(filler)) + 1)
        edited = "".join(s[: len(s) // 2]) + extra + "".join(s[len(s) // 2:])
    assert content_distance(edited, original) > 0.2
    result = check_sample(_faithful(edited), original, [], ChecksConfig())
    assert not result.ok and any(f.kind == "content" for f in result.failures)


def test_answer_check_rejects_a_lost_final_answer() -> None:
    original = "We compute the total of both parts.\n\n**Final Answer**\n\\boxed{12}"
    ok = check_sample("<Think>" + original + "</Think>", original, [], ChecksConfig())
    assert ok.ok and ok.answer == "12"
    lost = original.replace("\\boxed{12}", "\\boxed{13}")
    bad = check_sample("<Think>" + lost + "</Think>", original, [], ChecksConfig(max_distance=0.5))
    assert [f.kind for f in bad.failures] == ["answer"]
