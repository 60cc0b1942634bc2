"""engine/shared_prefix.py against its naive reference: one softmax over a shared prefix read once and each
row's own suffix equals each row gathering its whole table; the prefix is found only where it is real."""
from __future__ import annotations

import pytest
import torch

from engine import shared_prefix


def _tables(prefix: range, suffix_lengths: list[int], first_free: int) -> list[torch.Tensor]:
    out, nxt = [], first_free
    for n in suffix_lengths:
        out.append(torch.tensor(list(prefix) + list(range(nxt, nxt + n))))
        nxt += n + 3  # rows' own slots are not adjacent to each other
    return out


@pytest.mark.parametrize("heads, kv_heads", [(4, 4), (4, 2), (6, 1)])
@pytest.mark.parametrize("lengths", [[5, 5, 5], [1, 7, 3, 2]])
def test_attend_equals_each_row_gathering_its_whole_table(heads, kv_heads, lengths):
    gen = torch.Generator().manual_seed(len(lengths) * heads + kv_heads)
    dim, slots = 8, 200
    k = torch.randn(kv_heads, slots, dim, generator=gen)
    v = torch.randn(kv_heads, slots, dim, generator=gen)
    query = torch.randn(len(lengths), heads, dim, generator=gen)
    tables = _tables(range(10, 40), lengths, first_free=60)
    found = shared_prefix.common_prefix(tables, [30] * len(lengths), min_saved=1)
    assert found == (10, 40)
    suffixes = [t[30:] for t in tables]
    padded = torch.nn.utils.rnn.pad_sequence(suffixes, batch_first=True)
    real = torch.arange(padded.shape[1])[None, :] < torch.tensor(lengths)[:, None]
    mask = None if min(lengths) == max(lengths) else torch.zeros(real.shape).masked_fill_(~real, float("-inf"))
    want = shared_prefix.gathered_reference(query, k, v, tables, dim**-0.5)
    for prefix in [(10, 40), torch.arange(10, 40)]:  # a slice of the pool, or a table gathered once
        got = shared_prefix.attend(query, k, v, prefix, padded, mask, dim**-0.5)
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_common_prefix_is_found_only_where_the_tables_share_one_run():
    tables = _tables(range(0, 64), [4, 4], first_free=100)
    assert shared_prefix.common_prefix(tables, [64, 64], min_saved=64) == (0, 64)
    assert shared_prefix.common_prefix(tables, [64, 64], min_saved=65) is None  # saves 64 copies: below the bar
    assert shared_prefix.common_prefix(tables, [40, 64], min_saved=1) == (0, 40)  # the smaller inherited length
    assert shared_prefix.common_prefix(tables[:1], [64], min_saved=1) is None  # one row: nothing to share
    assert shared_prefix.common_prefix(tables, [0, 64], min_saved=1) is None  # a root row inherits nothing
    holey = [torch.cat([t[:10], t[11:]]) for t in tables]  # slot 10 missing: not one run, so a table
    assert torch.equal(shared_prefix.common_prefix(holey, [60, 60], min_saved=1), holey[0][:60])
    differ = [tables[0], torch.cat([tables[1][:30], tables[1][30:] + 500])]  # rows part at slot 30
    assert shared_prefix.common_prefix(differ, [64, 64], min_saved=1) is None
