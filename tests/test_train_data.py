"""Training data: config loading, row loading, mixing order, segment-wise encoding and truncation."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from multiverse.encode import encode_trace
from multiverse.data import EXAMPLES_DIR
from multiverse.tiny import build_tokenizer
from training.config import ConfigError, DataConfig, load_config
from training.data import Example, load_examples, wrap_think
from training.encoding import IGNORE, EncodeStats, encode_all, encode_example, fit
from training.mixing import STAGES, curriculum, mix
from training.tiny_assets import synthetic_rows, write_jsonl

EXAMPLES = EXAMPLES_DIR  # shipped in multiverse/data


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer()


# ---------------------------------------------------------------- config
def test_config_yaml_and_overrides(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("model: {name_or_path: m}\ndata: {multiverse: d.jsonl, prompt: {answer_prefix: 'A: '}}\n")
    cfg = load_config(f, ["train.max_steps=7", "data.packing=true", "data.fields.question=problem"])
    assert cfg.train.max_steps == 7 and cfg.data.packing is True
    assert cfg.data.fields.question == "problem" and cfg.data.prompt.answer_prefix == "A: "
    assert cfg.data.prompt.multiverse_suffix == " Think step by step and in parallel before answering."


@pytest.mark.parametrize(
    "text, needle",
    [
        ("model: {name_or_path: m, colour: red}\ndata: {multiverse: d}", "model: unknown key(s) colour"),
        ("model: {name_or_path: m}\ndata: {multiverse: d, mixing: random}", "data.mixing must be one of"),
        ("data: {multiverse: d}", "model.name_or_path is required"),
        ("model: {name_or_path: m}\ndata: {multiverse: d}\ntrain: {micro_batch_size: 0}", "micro_batch_size"),
    ],
)
def test_config_errors_name_the_key(tmp_path: Path, text: str, needle: str) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        load_config(f)


# ---------------------------------------------------------------- rows
def test_rows_from_jsonl_and_parquet_agree(tmp_path: Path) -> None:
    rows = synthetic_rows(6)
    jsonl = write_jsonl(rows, tmp_path / "rows.jsonl")
    import datasets

    parquet = tmp_path / "rows.parquet"
    datasets.Dataset.from_list(rows).to_parquet(str(parquet))
    a = load_examples(DataConfig(multiverse=str(jsonl)), baseline=False)
    b = load_examples(DataConfig(multiverse=str(parquet)), baseline=False)
    assert [e.trace for e in a[0]] == [e.trace for e in b[0]]
    mv, ar = a
    assert len(mv) == len(ar) == 6 and {e.kind for e in mv} == {"multiverse"} and {e.kind for e in ar} == {"autoregressive"}
    assert all(e.trace.startswith("<Think>") and e.trace.endswith("</Think>") for e in mv + ar)


def test_baseline_uses_sequential_twins(tmp_path: Path) -> None:
    jsonl = write_jsonl(synthetic_rows(4), tmp_path / "rows.jsonl")
    mv, _ = load_examples(DataConfig(multiverse=str(jsonl)), baseline=True)
    assert all(e.kind == "autoregressive" and "<Parallel>" not in e.trace and "<Path>" not in e.trace for e in mv)


def test_missing_field_names_row_and_field(tmp_path: Path) -> None:
    rows = synthetic_rows(3)
    del rows[2]["question"]
    jsonl = write_jsonl(rows, tmp_path / "rows.jsonl")
    with pytest.raises(ConfigError, match=r"rows.jsonl#2: field 'question' is missing"):
        load_examples(DataConfig(multiverse=str(jsonl)), baseline=False)


# ---------------------------------------------------------------- mixing
def test_curriculum_eight_stages_in_order() -> None:
    mv = [("m", i) for i in range(100)]
    ar = [("a", i) for i in range(100)]
    order = curriculum(mv, ar, seed=42)
    sizes = [round(a * 100) + round(m * 100) for a, m, _ in STAGES]
    assert len(order) == sum(sizes) == 800
    stages, start = [], 0
    for n in sizes:
        stages.append(order[start : start + n])
        start += n
    shares = [Counter(kind for kind, _ in s)["m"] / len(s) for s in stages]
    assert shares == [0.0, 0.0, 0.1, 0.5, 0.5, 0.9, 1.0, 1.0]
    assert set(stages[3]).isdisjoint(stages[4]) and len(set(stages[3]) | set(stages[4])) == 200  # the two halves
    assert sorted(stages[6]) == sorted(mv) and curriculum(mv, ar, seed=42) == order
    assert curriculum(mv, ar, seed=1) != order


def test_shuffled_mixing_and_errors() -> None:
    mv, ar = list(range(10)), list(range(10, 25))
    out = mix(mv, ar, "shuffled", seed=3)
    assert sorted(out) == list(range(25)) and out != list(range(25))
    with pytest.raises(ValueError, match="needs both Multiverse and autoregressive rows"):
        mix(mv, [], "curriculum", seed=0)


# ---------------------------------------------------------------- encoding
def _example(kind: str = "multiverse", n: int = 1) -> Example:
    row = synthetic_rows(3)[n]
    trace = row["deepseek_thinking_trajectory_parallel" if kind == "multiverse" else "deepseek_thinking_trajectory"]
    return Example(row["question"], wrap_think(trace), row["deepseek_attempt"], kind, "t#0")


def test_encoding_labels_only_assistant_tokens(tokenizer) -> None:
    cfg = DataConfig()
    ex = _example()
    s = encode_example(ex, tokenizer, cfg)
    ids, labels = s["input_ids"], s["labels"]
    n_prompt = labels.index(next(t for t in labels if t != IGNORE))
    prompt = tokenizer.decode(ids[:n_prompt])
    assert prompt.endswith("<|im_start|>assistant\n") and ex.question + cfg.prompt.multiverse_suffix in prompt
    assert labels[:n_prompt] == [IGNORE] * n_prompt and labels[n_prompt:] == ids[n_prompt:]
    trace_ids = encode_trace(ex.trace, tokenizer)
    assert ids[n_prompt : n_prompt + len(trace_ids)] == trace_ids  # paths start with the engine's fork prefix
    tail = tokenizer.decode(ids[n_prompt + len(trace_ids) :])
    assert tail == "\n\nAnswer: " + ex.attempt + "<|im_end|>\n"


def test_loss_on_forced_false_drops_exactly_the_tokens_the_engine_forces(tokenizer) -> None:
    """Every <Path> LABEL ":" and <Conclusion> loses its label; every other target keeps it; ids are unchanged."""
    from multiverse.encode import fork_prefix_ids
    from multiverse.tags import StructureVocab

    ex = _example()
    full = encode_example(ex, tokenizer, DataConfig())
    cut = encode_example(ex, tokenizer, DataConfig(loss_on_forced=False))
    assert cut["input_ids"] == full["input_ids"]
    ids = full["input_ids"]
    vocab = StructureVocab.from_tokenizer(tokenizer)
    want = [False] * len(ids)
    for i, t in enumerate(ids):
        if t == vocab.tags.conclusion_open:
            want[i] = True
        elif t == vocab.tags.path_open:
            label = tokenizer.decode(ids[i + 1 : i + 8]).split(":")[0]
            n = len(fork_prefix_ids(label, vocab))
            assert ids[i : i + n] == fork_prefix_ids(label, vocab)
            want[i : i + n] = [True] * n
    dropped = [a != IGNORE and b == IGNORE for a, b in zip(full["labels"], cut["labels"])]
    assert dropped == want and sum(want) > 0
    assert all(b in (a, IGNORE) for a, b in zip(full["labels"], cut["labels"]))
    ar = _example("autoregressive")  # no forced tokens in a sequential trace
    assert encode_example(ar, tokenizer, DataConfig(loss_on_forced=False)) == encode_example(ar, tokenizer, DataConfig())


def test_autoregressive_prompt_suffix(tokenizer) -> None:
    cfg = DataConfig()
    s = encode_example(_example("autoregressive"), tokenizer, cfg)
    text = tokenizer.decode(s["input_ids"])
    assert cfg.prompt.autoregressive_suffix + "<|im_end|>" in text and "in parallel before" not in text


def test_block_size_truncation_really_applies(tokenizer) -> None:
    full = encode_example(_example(), tokenizer, DataConfig())
    cut_cfg = DataConfig(block_size=len(full["input_ids"]) // 2)
    stats = EncodeStats()
    cut = fit(full, cut_cfg, stats)
    assert cut is not None and len(cut["input_ids"]) == cut_cfg.block_size and stats.truncated == 1
    assert cut["input_ids"] == full["input_ids"][: cut_cfg.block_size]
    assert fit(full, DataConfig(block_size=10, truncation="drop"), stats) is None and stats.dropped_too_long == 1
    assert fit(full, DataConfig(block_size=10), stats) is None and stats.dropped_no_target == 1  # prompt only


def test_reference_traces_encode(tokenizer, tmp_path: Path) -> None:
    rows = [
        {"question": f"q{i}", "deepseek_thinking_trajectory_parallel": p.read_text(), "deepseek_attempt": "42"}
        for i, p in enumerate(sorted(EXAMPLES.glob("*.xml"))[:3])
    ]
    jsonl = write_jsonl(rows, tmp_path / "ref.jsonl")
    cfg = DataConfig(multiverse=str(jsonl), mixing="multiverse_only", block_size=2048)
    mv, _ = load_examples(cfg, baseline=False)
    stats = EncodeStats()
    for ex in mv:
        s = fit(encode_example(ex, tokenizer, cfg), cfg, stats)
        assert s is not None and len(s["input_ids"]) == 2048  # long traces are cut to block_size
    assert stats.truncated == 3


def test_malformed_trace_errors_or_is_skipped(tokenizer) -> None:
    good = _example()
    bad = Example("q", "<Think><Parallel><Goal><Outline>1: a</Outline></Goal></Think>", "", "multiverse", "f.jsonl#7")
    with pytest.raises(ConfigError, match=r"f.jsonl#7: malformed Multiverse trace"):
        encode_all([good, bad], tokenizer, DataConfig(), progress=False)
    samples, stats = encode_all([good, bad], tokenizer, DataConfig(on_bad_row="skip"), progress=False)
    assert len(samples) == 1 and stats.skipped_bad == 1
