"""The resumable scan (multiverse.attention.LayoutScan): extended piece by piece, at random split points, it
gives exactly layout() of the whole row, which on well-formed traces is the naive SPEC reference; a copy
resumes independently; the state after a block built from its children's own scans (merge_children, what the
SGLang plugin does at a merge) continues exactly like the scan of the merged row."""
from __future__ import annotations

import random
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from naive_layout import naive_layout  # noqa: E402

from multiverse.attention import LayoutScan, StructureRules, layout  # noqa: E402
from multiverse.attention.resume import merge_children  # noqa: E402
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


def scan_of(tok, ids: list[int]) -> LayoutScan:
    scan = LayoutScan(tok)
    scan.extend(ids)
    return scan


def block_paths(ids: list[int], t: TagIds, first: int, c: int) -> list[tuple[int, int]]:
    """(start, end) of the block's paths between its first <Path> and its <Conclusion>, by balanced tags."""
    starts, depth = [], 0
    for i in range(first, c):
        if ids[i] == t.path_open:
            starts += [i] if depth == 0 else []
            depth += 1
        elif ids[i] == t.path_close:
            depth -= 1
    return list(zip(starts, [s - 1 for s in starts[1:]] + [c - 1]))


@pytest.mark.parametrize("seed", range(10))
def test_a_block_merged_from_its_childrens_scans_continues_like_the_row(tok, seed: int) -> None:
    """At every merge of a nested trace: the children's sequences (prefix + path k, as a server caches them)
    scanned on their own and merged, then extended by the rest of the row, give layout()'s positions and hidden
    ranges of that rest, which are the naive reference's."""
    ids = nested_ids(tok, seed)
    lay, t = layout(ids, tok), TagIds.from_tokenizer(tok)
    want_pos, visible = naive_layout(ids, t)
    merges = 0
    for c in (i for i in range(1, len(ids)) if ids[i] == t.conclusion_open and ids[i - 1] == t.path_close):
        whole = scan_of(tok, ids[:c])
        block = whole.open_block()
        if block is None or block[1] < 2:
            continue  # a block that fell back, or one path: nothing to merge
        spans = block_paths(ids, t, block[0], c)
        children = [scan_of(tok, ids[: block[0]] + ids[s : e + 1]) for s, e in spans]
        starts = [s for s, _ in spans[1:]]
        merged = merge_children(children[0], children[1:], starts, c)
        assert merged is not None and merged.length == whole.length and merged.last_hidden == whole.last_hidden
        pos, runs = merged.extend(ids[c:])
        assert pos == lay.positions.tolist()[c:] == want_pos[c:]
        hidden = [h for a, b, h in runs for _ in range(a, b)]
        assert hidden == [ranges_of(lay, i) for i in range(c, len(ids))]
        for q in range(c, len(ids), 7):
            assert [k for k in range(q) if not visible[q, k]] == [k for lo, hi in hidden[q - c] for k in range(lo, hi)]
        assert merge_children(children[0], children[2:], starts[1:], c) is None  # a path missing: refused
        merges += 1
    assert merges >= 1 or seed % 4 == 0  # max_paths 1 (seed % 4 == 0) never forks two paths
