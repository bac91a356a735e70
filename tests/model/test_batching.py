"""Token-budget micro-batching on hand-built length lists."""

import pytest

from beam_e5.errors import ConfigError
from beam_e5.model.batching import MicroBatch, finish_tokens, plan_micro_batches, split_tail


def test_every_index_once_and_budget_respected():
    lengths = [5, 300, 12, 12, 90, 1, 512, 40, 40, 7]
    plan = plan_micro_batches(lengths, max_batch_tokens=600, max_batch_size=100)
    seen = sorted(i for b in plan for i in b.indices)
    assert seen == list(range(len(lengths)))
    for b in plan:
        assert b.width == max(lengths[i] for i in b.indices)
        assert b.padded_tokens <= 600 or len(b.indices) == 1


def test_sorted_longest_first_and_little_padding():
    lengths = [10, 100, 11, 99, 12, 98]
    plan = plan_micro_batches(lengths, max_batch_tokens=300, max_batch_size=100,
                              batch_overhead_tokens=16)
    assert [sorted(b.indices) for b in plan] == [[1, 3, 5], [0, 2, 4]]
    assert [b.width for b in plan] == [100, 12]


def test_overlong_item_gets_its_own_batch():
    plan = plan_micro_batches([1000, 3, 3], max_batch_tokens=100, max_batch_size=10)
    assert plan[0].indices == (0,)
    assert plan[1].indices == (1, 2)


def test_max_batch_size_caps_rows():
    plan = plan_micro_batches([2] * 10, max_batch_tokens=10_000, max_batch_size=4)
    assert [len(b.indices) for b in plan] == [4, 4, 2]


def test_deterministic_ties_by_index():
    plan = plan_micro_batches([5, 5, 5], max_batch_tokens=10, max_batch_size=10)
    assert [b.indices for b in plan] == [(0, 1), (2,)]


def test_empty_input_and_zero_lengths():
    assert plan_micro_batches([], 10, 10) == []
    plan = plan_micro_batches([0, 0], 10, 10)
    assert plan[0].width == 1


@pytest.mark.parametrize("tokens,size", [(0, 1), (1, 0)])
def test_invalid_budget(tokens, size):
    with pytest.raises(ConfigError):
        plan_micro_batches([1], tokens, size)


def _cost(plan, overhead):
    return sum(b.padded_tokens + overhead for b in plan)


def _brute_force_best(lengths, budget, size, overhead):
    """Every split of the sorted list into consecutive runs (small n only)."""
    import itertools

    srt = sorted(lengths, reverse=True)
    n = len(srt)
    best = None
    for mask in itertools.product([0, 1], repeat=n - 1):
        cuts = [0] + [i + 1 for i, m in enumerate(mask) if m] + [n]
        runs = [srt[a:b] for a, b in zip(cuts, cuts[1:])]
        if any(len(r) > size or (len(r) > 1 and len(r) * max(r[0], 1) > budget) for r in runs):
            continue
        cost = sum(len(r) * max(r[0], 1) + overhead for r in runs)
        best = cost if best is None else min(best, cost)
    return best


@pytest.mark.parametrize("seed", range(8))
def test_plan_is_optimal_against_brute_force(seed):
    import random

    rng = random.Random(seed)
    lengths = [rng.choice([1, 3, 8, 20, 50, 120, 256]) + rng.randint(0, 5) for _ in range(11)]
    for overhead in (0, 16, 200):
        plan = plan_micro_batches(lengths, max_batch_tokens=600, max_batch_size=6,
                                  batch_overhead_tokens=overhead)
        assert _cost(plan, overhead) == _brute_force_best(lengths, 600, 6, overhead)


def test_overhead_trades_padding_for_fewer_batches():
    lengths = [100, 90, 80, 70, 60, 50]
    free = plan_micro_batches(lengths, 10_000, 100, batch_overhead_tokens=0)
    costly = plan_micro_batches(lengths, 10_000, 100, batch_overhead_tokens=1000)
    assert len(free) == 6 and len(costly) == 1


def test_finish_tokens_follows_the_streams_taking_the_next_batch():
    plan = [MicroBatch((0, 1), 10), MicroBatch((2,), 10), MicroBatch((3,), 5)]
    assert finish_tokens(plan, 1) == 35
    assert finish_tokens(plan, 2) == 20  # 20 on one stream; 10 then 5 on the other
    assert finish_tokens(plan, 2, batch_overhead_tokens=3) == 23
    assert finish_tokens([], 2) == 0


def test_the_last_call_alone_on_a_stream_is_cut_in_two():
    """300 windows of 256 tokens, 16 a call: 19 calls, the last alone on one of two
    streams; cut, the streams end within a few rows of each other."""
    lengths = [256] * 300
    plan = plan_micro_batches(lengths, 4096, 1000, 150)
    assert [len(b.indices) for b in plan] == [16] * 18 + [12]
    split = split_tail(plan, lengths, 2, 150)
    assert [len(b.indices) for b in split] == [16] * 17 + [8, 8, 6, 6]
    assert sorted(i for b in split for i in b.indices) == list(range(300))
    assert finish_tokens(split, 2, 150) < finish_tokens(plan, 2, 150)
    ideal = (sum(lengths) + 150 * len(split)) / 2
    assert finish_tokens(split, 2, 150) - ideal <= 8 * 256


def test_a_halfs_width_is_its_own_longest_row():
    lengths = [40, 40, 30, 20, 10, 10]
    plan = [MicroBatch((0, 1, 2), 40), MicroBatch((3, 4, 5), 20)]
    split = split_tail(plan, lengths, 2)
    assert [(b.indices, b.width) for b in split] == [
        ((0, 1), 40), ((2,), 30), ((3, 4), 20), ((5,), 10)]


def test_a_plan_that_already_ends_together_is_kept():
    lengths = [100] * 8
    plan = plan_micro_batches(lengths, 400, 100)  # two calls of 4: one per stream
    assert split_tail(plan, lengths, 2, 8) is plan
    assert split_tail(plan, lengths, 1) is plan  # one stream: nothing to balance
    single_rows = [MicroBatch((0,), 100), MicroBatch((1,), 100), MicroBatch((2,), 100)]
    assert split_tail(single_rows, lengths, 2) is single_rows  # rows cannot be cut
