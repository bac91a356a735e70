"""Pooling and normalisation on hand-built tensors."""

import torch

from beam_e5.model.pooling import (
    cls_pool,
    l2_normalize,
    last_token_pool,
    mean_pool,
    pool,
)

# batch of 2, seq 3, dim 2
HIDDEN = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]],
                       [[5.0, 6.0], [7.0, 8.0], [9.0, 10.0]]])


def test_mean_pool_ignores_padding():
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    out = mean_pool(HIDDEN, mask)
    assert torch.allclose(out, torch.tensor([[2.0, 3.0], [7.0, 8.0]]))


def test_mean_pool_computes_in_float32_for_half_inputs():
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    out = mean_pool(HIDDEN.to(torch.bfloat16), mask)
    assert out.dtype == torch.float32
    assert torch.allclose(out, torch.tensor([[2.0, 3.0], [7.0, 8.0]]))


def test_cls_pool_takes_first_position():
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    assert torch.equal(cls_pool(HIDDEN, mask), torch.tensor([[1.0, 2.0], [5.0, 6.0]]))


def test_last_token_pool_right_padding():
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    assert torch.equal(last_token_pool(HIDDEN, mask), torch.tensor([[3.0, 4.0], [9.0, 10.0]]))


def test_last_token_pool_left_padding():
    mask = torch.tensor([[0, 1, 1], [0, 0, 1]])
    assert torch.equal(last_token_pool(HIDDEN, mask), torch.tensor([[100.0, 100.0], [9.0, 10.0]]))


def test_last_token_pool_mixed_rows():
    mask = torch.tensor([[1, 0, 0], [0, 1, 1]])
    assert torch.equal(last_token_pool(HIDDEN, mask), torch.tensor([[1.0, 2.0], [9.0, 10.0]]))


def test_l2_normalize_rows_and_zero_row():
    v = torch.tensor([[3.0, 4.0], [0.0, 0.0]])
    out = l2_normalize(v)
    assert torch.allclose(out, torch.tensor([[0.6, 0.8], [0.0, 0.0]]))


def test_pool_dispatch():
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    assert torch.equal(pool("cls", HIDDEN, mask), cls_pool(HIDDEN, mask))
    assert torch.equal(pool("last", HIDDEN, mask), last_token_pool(HIDDEN, mask))


def test_one_torch_thread_pools_the_same_bits_as_two():
    """The encoder's inference thread pools on one torch thread where another runtime runs
    the model (``InferenceBackend.pool_threads``): a batch large enough for torch to split
    over its threads must give the same bits on one thread."""
    from concurrent.futures import ThreadPoolExecutor

    from beam_e5.model.pooling import pooled_vectors

    generator = torch.Generator().manual_seed(0)
    hidden = torch.randn(32, 256, 384, generator=generator)
    mask = (torch.arange(256)[None, :] < torch.randint(1, 257, (32, 1), generator=generator)
            ).to(torch.int64)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        two = pooled_vectors("mean", hidden, mask)
        with ThreadPoolExecutor(1, initializer=torch.set_num_threads, initargs=(1,)) as one:
            assert one.submit(torch.get_num_threads).result() == 1
            single = one.submit(pooled_vectors, "mean", hidden, mask).result()
        assert torch.get_num_threads() == 2  # the count is the calling thread's
    finally:
        torch.set_num_threads(before)
    assert torch.equal(single, two)
