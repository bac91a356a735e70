"""The backend interface: every runtime gives the same vectors for the same padded batch."""

import numpy as np
import pytest

from beam_e5.model.backends.base import InferenceBackend, LoadRequest, PaddedBatch
from beam_e5.model.backends.onnxruntime_backend import OnnxRuntimeBackend
from beam_e5.model.backends.torch_backend import TorchBackend
from beam_e5.model.encoder import pad_batch


@pytest.fixture(scope="module")
def backends(tiny_models, tmp_path_factory) -> dict[str, InferenceBackend]:
    path = tiny_models("bert", "e5-small-v2")
    request = LoadRequest(model=path, path=path, device="cpu",
                          cache_dir=str(tmp_path_factory.mktemp("onnx-cache")))
    return {"torch": TorchBackend.load(request),
            "onnx": OnnxRuntimeBackend.load(request, "onnx")}


@pytest.fixture(scope="module")
def batch() -> PaddedBatch:
    # [CLS] ... [SEP] rows of different lengths, so the padding and the mask matter
    return pad_batch([[101, 7592, 2088, 102], [101, 4248, 102], [101, 1996, 4248, 2829, 4419,
                                                                  102]], pad_id=0)


def test_what_each_backend_says_it_is(backends):
    assert {name: (b.name, b.device, b.precision, b.label) for name, b in backends.items()} == {
        "torch": ("torch", "cpu", "float32", "PyTorch, float32"),
        "onnx": ("onnx", "cpu", "float32", "ONNX Runtime, fp32")}


@pytest.mark.parametrize("pooling", ["mean", "cls", "last"])
def test_torch_and_onnx_runtime_give_the_same_vectors(backends, batch, pooling):
    torch_vectors = backends["torch"].embed(batch, pooling)
    onnx_vectors = backends["onnx"].embed(batch, pooling)
    for vectors in (torch_vectors, onnx_vectors):
        assert isinstance(vectors, np.ndarray) and vectors.dtype == np.float32
        assert vectors.shape == (3, 32)
        np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(onnx_vectors, torch_vectors, atol=1e-5)


def test_a_row_does_not_depend_on_its_batch(backends, batch):
    """Padding is masked out: a row alone gives the vector it gives among longer rows."""
    alone = pad_batch([batch.input_ids[1, :3].tolist()], pad_id=0)
    for backend in backends.values():
        np.testing.assert_allclose(backend.embed(alone, "mean")[0],
                                   backend.embed(batch, "mean")[1], atol=1e-5)


def test_each_backend_prices_a_call(backends):
    """The planner's price of a call is the backend's."""
    assert {name: b.call_overhead_tokens for name, b in backends.items()} == {
        "torch": 32, "onnx": 8}


def test_the_torch_backend_pools_by_the_cpu_runtimes_rule(batch):
    """The torch backend pools tensors on its device, the CPU runtimes NumPy arrays: the same
    rule, checked on hand-built and random states, right- and left-padded."""
    import torch

    from beam_e5.model.backends.torch_backend import torch_pooled_vectors
    from beam_e5.model.pooling import pooled_vectors

    hidden = np.array([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]],
                       [[5.0, 6.0], [7.0, 8.0], [9.0, 10.0]]], dtype=np.float32)
    rng = np.random.default_rng(0)
    random = rng.standard_normal((5, 7, 16)).astype(np.float32)
    lengths = np.array([0, 7, 3, 1, 5])  # a row without real tokens too
    right = (np.arange(7)[None, :] < lengths[:, None]).astype(np.int64)
    left = right[:, ::-1].copy()
    cases = [(hidden, np.array([[1, 1, 0], [1, 1, 1]])), (hidden, np.array([[0, 1, 1], [1, 0, 0]])),
             (random, right), (random, left)]
    for states, mask in cases:
        for kind in ("mean", "cls", "last"):
            ours = pooled_vectors(kind, states, mask)
            theirs = torch_pooled_vectors(kind, torch.from_numpy(states), torch.from_numpy(mask))
            assert ours.dtype == np.float32
            np.testing.assert_allclose(ours, theirs.numpy(), rtol=1e-6, atol=1e-7)
            bf16 = torch.from_numpy(states).to(torch.bfloat16)
            np.testing.assert_allclose(
                pooled_vectors(kind, bf16.float().numpy(), mask),
                torch_pooled_vectors(kind, bf16, torch.from_numpy(mask)).numpy(), atol=1e-6)
