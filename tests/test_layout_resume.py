"""The resumable scan (multiverse.attention.LayoutScan): extended piece by piece, at random split points, it
gives exactly layout() of the whole row, which on well-formed traces is the naive SPEC reference; a copy
resumes independently."""
from __future__ import annotations

import random
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from naive_layout import naive_layout  # noqa: E402

from multiverse.attention import LayoutScan, StructureRules, layout  # noqa: E402
from multiverse.encode import encode_trace  # noqa: E402
from multiverse.synthetic import SyntheticShape, synthetic_trace  # noqa: E402
from multiverse.tags import StructureVocab, TagIds  # noqa: E402


def nested_ids(tok, seed: int) -> list[int]:
    shape = SyntheticShape(max_depth=1 + seed % 3, max_paths=1 + seed % 4, block_chance=0.7)
    return encode_trace(synthetic_trace(seed, 2 + seed % 4, shape), tok)


def pieces(ids: list[int], rng: random.Random) -> list[list[int]]:
    cuts = sorted(rng.sample(range(1, len(ids)), k=min(len(ids) - 1, rng.randint(1, 12))))
    return [ids[a:b] for a, b in zip([0] + cuts, cuts + [len(ids)])]


def scan_in_pieces(tok, ids: list[int], rng: random.Random, rules: StructureRules | None = None):
    """Per-token positions and hidden-range tuples, scanned piece by piece (a copy taken at every cut)."""
    scan, positions, hidden = LayoutScan(tok, rules), [], []
    for piece in pieces(ids, rng):
        scan = scan.copy()  # resume from a snapshot, as a server resumes from a stored state
        pos, runs = scan.extend(piece)
        positions += pos
        assert runs[0][0] == len(hidden) and runs[-1][1] == len(hidden) + len(piece)
        for a, b, h in runs:
            hidden += [h] * (b - a)
    assert scan.length == len(ids)
    return positions, hidden


def ranges_of(lay, i: int) -> tuple:
    return tuple((lo, hi) for lo, hi in zip(lay.hidden_lo[i].tolist(), lay.hidden_hi[i].tolist()) if hi > lo)


@pytest.mark.parametrize("seed", range(16))
def test_pieces_equal_the_whole_row_and_the_naive_reference(tok, seed: int) -> None:
    rng = random.Random(seed)
    ids = nested_ids(tok, seed)
    positions, hidden = scan_in_pieces(tok, ids, rng)
    lay = layout(ids, tok)
    assert positions == lay.positions.tolist()
    assert hidden == [ranges_of(lay, i) for i in range(len(ids))]
    want_pos, visible = naive_layout(ids, TagIds.from_tokenizer(tok))
    assert positions == want_pos
    for q in rng.sample(range(len(ids)), k=20):  # hidden ranges are exactly the naive reference's blanked keys
        blank = [k for k in range(q) if not visible[q, k]]
        assert blank == [k for lo, hi in hidden[q] for k in range(lo, hi)]


@pytest.mark.parametrize("rules", [StructureRules(True, 2, None), StructureRules(True, None, 1), StructureRules(False)])
def test_pieces_follow_the_structure_rules(tok, rules: StructureRules) -> None:
    for seed in range(6):
        ids = nested_ids(tok, seed + 3)
        positions, hidden = scan_in_pieces(tok, ids, random.Random(seed), rules)
        lay = layout(ids, tok, rules=rules)
        assert positions == lay.positions.tolist() and hidden == [ranges_of(lay, i) for i in range(len(ids))]


def test_malformed_rows_scan_like_layout(tok) -> None:
    """Non-strict scans never raise; random tag soup scanned in pieces still equals layout()."""
    v = StructureVocab.from_tokenizer(tok)
    rng = random.Random(7)
    alphabet = list(v.tags.all()) + tok("1: 2: a b", add_special_tokens=False)["input_ids"]
    for _ in range(40):
        ids = [rng.choice(alphabet) for _ in range(rng.randint(2, 120))]
        positions, hidden = scan_in_pieces(tok, ids, rng)
        lay = layout(ids, tok)
        assert positions == lay.positions.tolist() and hidden == [ranges_of(lay, i) for i in range(len(ids))]


def test_a_copy_resumes_independently(tok) -> None:
    ids = nested_ids(tok, 5)
    cut = len(ids) // 2
    scan = LayoutScan(tok)
    scan.extend(ids[:cut])
    fork = scan.copy()
    scan.extend([7] * 5)  # the original goes elsewhere; the copy must not see it
    pos, _ = fork.extend(ids[cut:])
    assert pos == layout(ids, tok).positions.tolist()[cut:]
    assert scan.length == cut + 5 and fork.length == len(ids)
