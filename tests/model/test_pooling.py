"""Pooling and normalisation on hand-built arrays."""

import numpy as np

from beam_e5.model.pooling import (
    cls_pool,
    l2_normalize,
    last_token_pool,
    mean_pool,
    pool,
    pooled_vectors,
)

# batch of 2, seq 3, dim 2
HIDDEN = np.array([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]],
                   [[5.0, 6.0], [7.0, 8.0], [9.0, 10.0]]], dtype=np.float32)


def test_mean_pool_ignores_padding():
    mask = np.array([[1, 1, 0], [1, 1, 1]])
    out = mean_pool(HIDDEN, mask)
    np.testing.assert_allclose(out, [[2.0, 3.0], [7.0, 8.0]], rtol=1e-6)


def test_mean_pool_computes_in_float32_for_half_inputs():
    mask = np.array([[1, 1, 0], [1, 1, 1]])
    out = mean_pool(HIDDEN.astype(np.float16), mask)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [[2.0, 3.0], [7.0, 8.0]], rtol=1e-6)


def test_mean_pool_of_a_row_without_real_tokens_is_zero_not_nan():
    out = mean_pool(HIDDEN, np.array([[0, 0, 0], [1, 0, 0]]))
    np.testing.assert_array_equal(out, [[0.0, 0.0], [5.0, 6.0]])


def test_cls_pool_takes_first_position():
    mask = np.array([[1, 1, 0], [1, 1, 1]])
    np.testing.assert_array_equal(cls_pool(HIDDEN, mask), [[1.0, 2.0], [5.0, 6.0]])


def test_last_token_pool_right_padding():
    mask = np.array([[1, 1, 0], [1, 1, 1]])
    np.testing.assert_array_equal(last_token_pool(HIDDEN, mask), [[3.0, 4.0], [9.0, 10.0]])


def test_last_token_pool_left_padding():
    mask = np.array([[0, 1, 1], [0, 0, 1]])
    np.testing.assert_array_equal(last_token_pool(HIDDEN, mask),
                                  [[100.0, 100.0], [9.0, 10.0]])


def test_last_token_pool_mixed_rows():
    mask = np.array([[1, 0, 0], [0, 1, 1]])
    np.testing.assert_array_equal(last_token_pool(HIDDEN, mask), [[1.0, 2.0], [9.0, 10.0]])


def test_l2_normalize_rows_and_zero_row():
    v = np.array([[3.0, 4.0], [0.0, 0.0]], dtype=np.float32)
    np.testing.assert_allclose(l2_normalize(v), [[0.6, 0.8], [0.0, 0.0]], rtol=1e-6)


def test_pool_dispatch():
    mask = np.array([[1, 1, 0], [1, 1, 1]])
    np.testing.assert_array_equal(pool("cls", HIDDEN, mask), cls_pool(HIDDEN, mask))
    np.testing.assert_array_equal(pool("last", HIDDEN, mask), last_token_pool(HIDDEN, mask))
    np.testing.assert_array_equal(pool("mean", HIDDEN, mask), mean_pool(HIDDEN, mask))


def test_pooled_vectors_are_unit_float32_rows():
    mask = np.array([[1, 1, 0], [1, 1, 1]])
    for kind in ("mean", "cls", "last"):
        out = pooled_vectors(kind, HIDDEN, mask)
        assert out.dtype == np.float32 and out.shape == (2, 2)
        np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, rtol=1e-6)
