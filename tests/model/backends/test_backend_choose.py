"""The chooser: --backend names, the checks before the run, auto's choice and its fallback."""

import sys

import pytest
import torch

from beam_e5.errors import ConfigError
from beam_e5.model.backends import choose, onnxruntime_backend, openvino_backend, torch_backend
from beam_e5.model.backends.base import InferenceBackend, LoadRequest
from beam_e5.model.backends.onnxruntime_backend import OnnxRuntimeBackend
from beam_e5.model.config import EncoderConfig
from beam_e5.model.encoder import Encoder


class _Loaded(InferenceBackend):
    """What a fake loader returns: a backend that records its name and never runs."""

    def __init__(self, name: str, device: str = "cpu", precision: str = "float32") -> None:
        self.name, self.device, self.precision = name, device, precision
        self.label = f"fake, {precision}"

    @classmethod
    def load(cls, request, name):
        return cls(name)

    def embed(self, batch, pooling):
        raise AssertionError("not run here")


class _Calls(list):
    """(backend name, request) per load; ``fail`` makes the ONNX Runtime loader raise."""

    fail = False

    def names(self) -> list[str]:
        return [name for name, _ in self]


@pytest.fixture
def loads(monkeypatch) -> _Calls:
    """Every backend load, recorded; torch and ONNX Runtime never really load."""
    calls = _Calls()

    class Torch(_Loaded):
        @classmethod
        def load(cls, request, name="torch"):
            calls.append((name, request))
            return cls(name)

    class Onnx(OnnxRuntimeBackend):  # keeps OnnxRuntimeBackend.unsupported
        @classmethod
        def load(cls, request, name):
            calls.append((name, request))
            if calls.fail:
                raise RuntimeError("exporter crashed")
            return _Loaded(name)

    class OpenVino(openvino_backend.OpenVinoBackend):  # keeps OpenVinoBackend.unsupported
        load = Onnx.load

    monkeypatch.setattr(torch_backend, "TorchBackend", Torch)  # imported on use
    for name in ("onnx", "onnx-int8"):
        monkeypatch.setitem(choose.RUNTIMES, name, Onnx)
    monkeypatch.setitem(choose.RUNTIMES, "openvino", OpenVino)
    return calls


def _request(path: str, **options) -> LoadRequest:
    return LoadRequest(model=path, path=path, **options)


def test_the_backend_names():
    assert choose.BACKENDS == ("auto", "torch", "onnx", "onnx-int8", "openvino")
    assert all(issubclass(cls, InferenceBackend) for cls in choose.RUNTIMES.values())


def test_explicit_torch_loads_torch_without_reading_the_model_config(loads):
    backend = choose.load_backend(_request("/no/such/model", backend="torch"))
    assert backend.name == "torch" and loads.names() == ["torch"]


@pytest.mark.parametrize("name", ["onnx", "onnx-int8", "openvino"])
def test_explicit_runtimes_load_by_their_name(loads, tiny_models, name):
    path = tiny_models("bert", "e5-small-v2")
    assert choose.load_backend(_request(path, backend=name)).name == name
    assert loads.names() == [name]


def test_auto_on_cpu_takes_onnx_for_encoders(loads, tiny_models):
    path = tiny_models("bert", "e5-small-v2")
    assert choose.load_backend(_request(path, device="cpu")).name == "onnx"
    # whatever their size (weights over 2 GiB go to external data)
    assert choose.pick_backend("auto", "cpu", "xlm-roberta") == "onnx"


def test_auto_on_gpu_takes_torch(loads, tiny_models, monkeypatch):
    monkeypatch.setattr(choose, "gpu_driver_present", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    path = tiny_models("bert", "e5-small-v2")
    assert choose.load_backend(_request(path)).name == "torch"
    assert choose.pick_backend("auto", "cuda", "bert") == "torch"


def test_auto_takes_torch_for_decoder_models(loads, tiny_models):
    path = tiny_models("mistral", "e5-mistral-7b-instruct")
    assert choose.load_backend(_request(path, device="cpu")).name == "torch"
    assert choose.pick_backend("auto", "cpu", "mistral") == "torch"


def test_auto_takes_openvino_for_bf16_on_cpu_where_installed(loads, tiny_models):
    path = tiny_models("bert", "e5-small-v2")
    assert choose.load_backend(_request(path, device="cpu", dtype="bfloat16")).name == \
        "openvino"
    assert choose.pick_backend("auto", "cpu", "bert", fp32=False, bf16=True) == "openvino"
    # not for decoder models, nor on GPUs, nor for float16
    assert choose.pick_backend("auto", "cpu", "mistral", fp32=False, bf16=True) == "torch"
    assert choose.pick_backend("auto", "cuda", "bert", fp32=False, bf16=True) == "torch"
    assert choose.pick_backend("auto", "cpu", "bert", fp32=False) == "torch"


def test_auto_takes_torch_for_bf16_where_openvino_is_not_installed(loads, tiny_models,
                                                                   monkeypatch):
    monkeypatch.setattr(openvino_backend, "openvino_available", lambda: False)
    path = tiny_models("bert", "e5-small-v2")
    assert choose.load_backend(_request(path, device="cpu", dtype="bfloat16")).name == "torch"
    assert loads.names() == ["torch"]


def test_auto_takes_torch_where_onnx_runtime_is_not_installed(loads, tiny_models,
                                                              monkeypatch):
    monkeypatch.setattr(onnxruntime_backend, "onnx_available", lambda: False)
    path = tiny_models("bert", "e5-small-v2")
    assert choose.load_backend(_request(path, device="cpu")).name == "torch"
    assert loads.names() == ["torch"]


def test_auto_falls_back_to_torch_when_its_choice_fails_to_load(loads, tiny_models,
                                                                caplog):
    loads.fail = True
    path = tiny_models("bert", "e5-small-v2")
    assert choose.load_backend(_request(path, device="cpu")).name == "torch"
    assert loads.names() == ["onnx", "torch"]
    assert "the onnx backend failed for" in caplog.text and "exporter crashed" in caplog.text


def test_an_explicit_choice_that_fails_to_load_is_an_error(loads, tiny_models):
    loads.fail = True
    with pytest.raises(RuntimeError, match="exporter crashed"):
        choose.load_backend(_request(tiny_models("bert", "e5-small-v2"), backend="onnx"))
    assert loads.names() == ["onnx"]


def test_torch_threads_are_set_before_torch_loads(tiny_models, monkeypatch):
    calls = []
    monkeypatch.setattr(torch, "set_num_threads", lambda n: calls.append(("threads", n)))
    real_load = torch_backend.load_hf_model

    def load(request, dtype):
        calls.append(("load", str(dtype)))
        return real_load(request, dtype)

    monkeypatch.setattr(torch_backend, "load_hf_model", load)
    path = tiny_models("bert", "e5-small-v2")
    assert choose.load_backend(_request(path, backend="torch", threads=3)).name == "torch"
    # and a runtime's graph build (on a cache miss) takes --torch-threads too
    torch_backend.load_fp32_model(_request(path, threads=2))
    assert calls == [("threads", 3), ("load", "torch.float32"), ("threads", 2),
                     ("load", "torch.float32")]


def test_device_auto_without_a_gpu_driver_is_the_cpu_without_asking_torch(monkeypatch):
    monkeypatch.setattr(choose, "gpu_driver_present", lambda: False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: pytest.fail("torch was asked"))
    monkeypatch.delitem(sys.modules, "torch")  # as in a worker that never imported it
    assert choose.device_and_dtype("auto", "auto") == ("cpu", "float32")
    assert choose.device_and_dtype("auto", "bfloat16") == ("cpu", "bfloat16")
    assert choose.device_and_dtype("cpu", "auto") == ("cpu", "float32")
    assert "torch" not in sys.modules


def test_device_auto_asks_torch_where_it_is_already_imported(monkeypatch):
    """No driver file found, but torch is loaded (a Jetson the list misses, say): asking it
    costs nothing, so it decides."""
    monkeypatch.setattr(choose, "gpu_driver_present", lambda: False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert choose.device_and_dtype("auto", "auto") == ("cuda", "bfloat16")


def test_an_explicit_runtime_loads_without_resolving_the_device(loads, tiny_models, monkeypatch):
    monkeypatch.setattr(choose, "device_and_dtype", lambda *a: pytest.fail("device resolved"))
    path = tiny_models("bert", "e5-small-v2")
    assert choose.load_backend(_request(path, backend="onnx", device="auto")).name == "onnx"


def test_device_auto_with_a_gpu_driver_asks_torch(monkeypatch):
    monkeypatch.setattr(choose, "gpu_driver_present", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # a driver, no usable GPU
    assert choose.device_and_dtype("auto", "auto") == ("cpu", "float32")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    assert choose.device_and_dtype("auto", "auto") == ("cuda", "float16")
    with pytest.raises(ConfigError, match="no CUDA GPU"):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
        choose.device_and_dtype("cuda", "auto")


@pytest.mark.parametrize("name,requested,how", [
    ("onnx", "auto", "default on CPU; --backend torch for PyTorch"),
    ("torch", "auto", "--backend auto"),
    ("onnx-int8", "onnx-int8", "--backend onnx-int8"),
    ("openvino", "auto", "--dtype bfloat16 on CPU; --backend torch for PyTorch"),
    ("openvino", "openvino", "--backend openvino"),
])
def test_the_log_line_says_how_the_backend_was_chosen(name, requested, how):
    assert choose.describe_backend(_Loaded(name), requested) == \
        f"the {name} backend (fake, float32; {how})"


@pytest.mark.parametrize("backend,model_type,device,message", [
    ("onnx", "bert", "cuda", "runs on CPU only"),
    ("onnx-int8", "mistral", "cpu", "supports encoder models .* not model_type 'mistral'"),
    ("openvino", "bert", "cuda", "runs on CPU only"),
    ("openvino", "mistral", "cpu", "--backend openvino supports encoder models"),
])
def test_checks_before_the_run(backend, model_type, device, message):
    with pytest.raises(ConfigError, match=message):
        choose.check_backend_supported(backend, model_type, device)
    for anything in ("auto", "torch"):  # auto falls back to torch wherever onnx cannot run
        choose.check_backend_supported(anything, model_type, device)


def test_onnx_runtime_missing_is_refused_before_the_run(monkeypatch):
    monkeypatch.setattr(onnxruntime_backend, "onnx_available", lambda: False)
    with pytest.raises(ConfigError, match="needs ONNX Runtime and onnxscript"):
        choose.check_backend_supported("onnx", "bert", "cpu")


def test_openvino_missing_is_refused_before_the_run(monkeypatch):
    monkeypatch.setattr(openvino_backend, "openvino_available", lambda: False)
    with pytest.raises(ConfigError, match=r"pip install 'beam-e5\[openvino\]'"):
        choose.check_backend_supported("openvino", "bert", "cpu")


def test_decoder_models_are_refused_before_the_run(tiny_models):
    path = tiny_models("mistral", "e5-mistral-7b-instruct")
    with pytest.raises(ConfigError, match="use --backend torch"):
        EncoderConfig(path, backend="onnx").resolve()


@pytest.mark.parametrize("kwargs,message", [
    (dict(backend="onnx", dtype="bfloat16"), "computes in float32"),
    (dict(backend="openvino", dtype="float16"), "float32 or bfloat16"),
    (dict(backend="tensorrt"), "--backend must be one of"),
])
def test_bad_backend_options_are_refused(minilm_dir, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        EncoderConfig(minilm_dir, **kwargs).resolve()


def test_onnx_on_cuda_is_refused(minilm_dir):
    with pytest.raises(ConfigError, match="CPU only"):
        EncoderConfig(minilm_dir, backend="onnx", device="cuda").resolve()


def test_only_the_approximate_backend_enters_the_signature(minilm_dir):
    # fp32 backends compute one function (cosine >= 0.99999, tested per backend): snapshots
    # carry over between them
    same = {EncoderConfig(minilm_dir, backend=b).resolve().signature()
            .get("backend", "-") for b in ("auto", "torch", "onnx", "openvino")}
    assert same == {"-"}
    # --dtype stays out, for every backend (bf16 within cosine 0.9999 of fp32: see config.py)
    assert EncoderConfig(minilm_dir, backend="openvino", dtype="bfloat16").resolve() \
        .signature() == EncoderConfig(minilm_dir, backend="torch").resolve().signature()
    assert EncoderConfig(minilm_dir, backend="onnx-int8").resolve().signature()["backend"] == \
        "onnx-int8"


def test_auto_picks_onnx_on_cpu_and_torch_where_onnx_cannot_run(minilm_dir, tiny_models,
                                                                 onnx_cache, caplog):
    caplog.set_level("INFO", logger="beam_e5")
    enc = Encoder.load(EncoderConfig(minilm_dir, model_cache_dir=onnx_cache).resolve())
    assert isinstance(enc.backend, OnnxRuntimeBackend) and enc.backend.name == "onnx"
    # the log line that names the backend says it is ONNX Runtime and how to get torch
    assert "with the onnx backend (ONNX Runtime, fp32; default on CPU; --backend torch" \
        in caplog.text
    mistral = tiny_models("mistral", "e5-mistral-7b-instruct")
    assert Encoder.load(EncoderConfig(mistral, model_cache_dir=onnx_cache).resolve()
                        ).backend.name == "torch"
    bf16 = EncoderConfig(minilm_dir, dtype="bfloat16", device="cpu", model_cache_dir=onnx_cache)
    assert Encoder.load(bf16.resolve()).backend.name == "openvino"


def test_auto_falls_back_to_torch_when_the_graph_cannot_be_built(minilm_dir, tmp_path,
                                                                  monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("exporter crashed")

    monkeypatch.setattr(onnxruntime_backend, "ensure_graph", broken)
    enc = Encoder.load(EncoderConfig(minilm_dir, model_cache_dir=str(tmp_path)).resolve())
    assert enc.backend.name == "torch" and enc.encode(["still embeds"])[0].shape == (1, 384)
    with pytest.raises(RuntimeError, match="exporter crashed"):  # explicit onnx: no fallback
        Encoder.load(EncoderConfig(minilm_dir, backend="onnx",
                                   model_cache_dir=str(tmp_path)).resolve())
