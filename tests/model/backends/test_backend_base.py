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


def test_each_backend_prices_a_call_and_says_who_pools(backends):
    """The planner's price of a call is the backend's; torch keeps its threads where it runs
    the model, and pools on one thread where ONNX Runtime does."""
    assert {name: (b.call_overhead_tokens, b.pool_threads) for name, b in backends.items()} == {
        "torch": (32, None), "onnx": (8, 1)}


def test_the_encoders_inference_thread_takes_the_backends_torch_threads(backends):
    import torch

    from beam_e5.model.encoder import Encoder
    from beam_e5.model.tokenizer import TokenizerInfo

    class Tok:  # only what Encoder.__init__ reads
        info = TokenizerInfo(0, None, 100, "right", 512, False, "fake")

    spec = type("Spec", (), {"profile": type("P", (), {"max_length": 512}), "prefix": "",
                             "dim": 32})()
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        for backend, threads in ((backends["onnx"], 1), (backends["torch"], 2)):
            encoder = Encoder(spec=spec, tokenizer=Tok(), backend=backend)
            assert encoder._inference_thread.submit(torch.get_num_threads).result() == threads
            assert torch.get_num_threads() == 2  # the caller's count is left as it was
    finally:
        torch.set_num_threads(before)
