"""Token-budget micro-batching on hand-built length lists."""

import pytest

from beam_e5.batching import plan_micro_batches
from beam_e5.errors import ConfigError


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
    plan = plan_micro_batches(lengths, max_batch_tokens=300, max_batch_size=100)
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
