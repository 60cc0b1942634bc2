"""The server's stable-prefix tracker on hand-written event sequences: nesting, siblings, restarts."""
from __future__ import annotations

from engine.events import BranchClosed, BranchOpened, Merged, Restarted, Tokens
from engine.server.stable import StableOrder


def tokens(label, *ids):
    return Tokens(0, label, tuple(ids), "", False)


def run(events):
    """What take() returned after each event."""
    order, out = StableOrder(), []
    for event in events:
        order = order.apply(event)
        out.append(order.take())
    return out


def test_path_two_waits_for_path_one_and_nested_blocks_come_in_order():
    steps = run([
        tokens("", 1, 2),
        BranchOpened(0, "1", ""), BranchOpened(0, "2", ""),
        tokens("2", 20), tokens("1", 10),  # path 2 writes first: held until path 1 closes
        BranchOpened(0, "1.1", "1"), BranchOpened(0, "1.2", "1"),
        tokens("1.2", 120), tokens("1.1", 110), BranchClosed(0, "1.1", "path_end"),
        BranchClosed(0, "1.2", "path_end"), Merged(0, "1", ("1.1", "1.2")), tokens("1", 11),
        BranchClosed(0, "1", "path_end"), tokens("2", 21), BranchClosed(0, "2", "path_end"),
        Merged(0, "", ("1", "2")), tokens("", 3),
    ])
    assert steps[4] == [10] and steps[3] == []
    assert steps[8] == [110] and steps[9] == [120]
    assert sum(steps, []) == [1, 2, 10, 110, 120, 11, 20, 21, 3]


def test_a_restart_replays_without_delivering_twice():
    first = [tokens("", 1, 2, 3)]
    replay = [Restarted(0), tokens("", 1, 2), tokens("", 3, 4)]
    steps = run(first + replay)
    assert sum(steps, []) == [1, 2, 3, 4] and steps[2] == [] and steps[3] == [4]


def test_labels_reused_by_a_second_block_map_to_the_new_branches():
    block = lambda base: [BranchOpened(0, "1", ""), tokens("1", base), BranchClosed(0, "1", "path_end"),  # noqa: E731
                          Merged(0, "", ("1",)), tokens("", base + 1)]
    assert sum(run([tokens("", 0)] + block(10) + block(20)), []) == [0, 10, 11, 20, 21]
