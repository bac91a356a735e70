"""Beam's embedding-manager arguments, translated into beam-e5's.

Beam's ``SentenceTransformerEmbeddings`` / ``HuggingfaceTextEmbeddings`` pass
``load_model_args`` to ``SentenceTransformer(...)`` and ``inference_args`` to
``model.encode(...)``. ``E5TextEmbeddings`` takes the same dicts; the functions here say
what each key becomes (an :class:`~beam_e5.model.config.EncoderConfig` field, or how the
vectors are returned) and refuse, naming it, a key that has no meaning here. Pure
functions: the README's swap table is this module in words.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from beam_e5.errors import ConfigError

# sentence-transformers ``device`` -> --device
_DEVICES = {"cpu": "cpu", "cuda": "cuda", "cuda:0": "cuda", "gpu": "cuda", "auto": "auto"}
# torch dtypes by name (str(torch.float16) == "torch.float16") -> --dtype
_DTYPES = {"float32": "float32", "float": "float32", "float16": "float16", "half": "float16",
           "bfloat16": "bfloat16", "auto": "auto"}
# sentence-transformers ``prompt_name`` -> --role
_PROMPT_ROLES = {"query": "query", "passage": "passage", "document": "passage"}


@dataclass(frozen=True)
class OutputArgs:
    """How ``encode()`` returns the vectors (sentence-transformers' defaults)."""

    convert_to_numpy: bool = True
    convert_to_tensor: bool = False

    def convert(self, vectors: Any) -> Any:
        """``vectors`` (float32 ``(n, dim)``) the way ``SentenceTransformer.encode`` returns
        them: a torch tensor (``convert_to_tensor``), a numpy array (``convert_to_numpy``,
        the default) or a list of 1-d tensors (both False)."""
        if not self.convert_to_tensor and self.convert_to_numpy:
            return vectors
        import torch

        tensor = torch.from_numpy(vectors)
        return tensor if self.convert_to_tensor else list(tensor)


@dataclass(frozen=True)
class InferenceArgs:
    """``inference_args`` split into what changes the encoder and how vectors come back."""

    options: Mapping[str, Any]  # EncoderConfig fields (max_batch_size, role)
    prompt: Any  # a literal prefix for the role (``prompt=``), or None
    output: OutputArgs
    normalize: Any  # normalize_embeddings as given (None: not given)


def _key_error(what: str, key: str, allowed: list[str]) -> ConfigError:
    return ConfigError(f"E5TextEmbeddings: {what} key {key!r} has no meaning in beam-e5; it takes "
                       f"{', '.join(allowed)} (see the README's swap table)")


def _dtype_name(value: Any) -> str:
    name = str(value).removeprefix("torch.")
    if name not in _DTYPES:
        raise ConfigError(f"E5TextEmbeddings: load_model_args torch_dtype {value!r} is not one of "
                          "float32, float16, bfloat16, 'auto'")
    return _DTYPES[name]


LOAD_MODEL_KEYS = ["device", "torch_dtype", "model_kwargs", "trust_remote_code", "revision",
                   "cache_folder", "backend"]


def load_model_options(args: Mapping[str, Any]) -> dict[str, Any]:
    """``load_model_args`` -> EncoderConfig fields. ``model_kwargs`` may hold ``torch_dtype``
    (or ``dtype``) only; ``cache_folder`` is where beam-e5 stages ``gs://`` models and caches
    ONNX graphs (hub downloads stay in the Hugging Face cache, ``HF_HOME``)."""
    out: dict[str, Any] = {}
    for key, value in args.items():
        if key == "device":
            device = str(value).lower()
            if device not in _DEVICES:
                raise ConfigError(f"E5TextEmbeddings: load_model_args device {value!r} is not "
                                  "one of cpu, cuda, cuda:0, auto")
            out["device"] = _DEVICES[device]
        elif key == "torch_dtype":
            out["dtype"] = _dtype_name(value)
        elif key == "model_kwargs":
            for inner, v in dict(value).items():
                if inner not in ("torch_dtype", "dtype"):
                    raise _key_error("load_model_args model_kwargs", inner, ["torch_dtype"])
                out["dtype"] = _dtype_name(v)
        elif key in ("trust_remote_code", "revision", "backend"):
            out[key] = value
        elif key == "cache_folder":
            out["model_cache_dir"] = str(value)
        else:
            raise _key_error("load_model_args", key, LOAD_MODEL_KEYS)
    return out


INFERENCE_KEYS = ["batch_size", "convert_to_numpy", "convert_to_tensor",
                  "normalize_embeddings", "prompt", "prompt_name", "show_progress_bar",
                  "precision='float32'", "output_value='sentence_embedding'"]
_FIXED = {"precision": "float32", "output_value": "sentence_embedding"}


def inference_options(args: Mapping[str, Any]) -> InferenceArgs:
    """``inference_args`` (``SentenceTransformer.encode`` keywords) -> what beam-e5 does:
    ``batch_size`` is the texts per forward pass (``max_batch_size``), ``prompt_name``
    ``query``/``passage``/``document`` the role, ``prompt`` a literal prefix for it (and,
    as in sentence-transformers, ``prompt`` wins over ``prompt_name``'s prefix);
    ``show_progress_bar`` is accepted and does nothing (progress goes to the log)."""
    options: dict[str, Any] = {}
    output: dict[str, bool] = {}
    for key, value in args.items():
        if key == "batch_size":
            options["max_batch_size"] = value
        elif key == "prompt_name":
            if value not in _PROMPT_ROLES:
                raise ConfigError(f"E5TextEmbeddings: inference_args prompt_name {value!r}: "
                                  "beam-e5 knows query, passage and document; pass "
                                  "prompt='...' for a literal prefix")
            options["role"] = _PROMPT_ROLES[value]
        elif key in ("convert_to_numpy", "convert_to_tensor"):
            output[key] = bool(value)
        elif key in _FIXED and value != _FIXED[key]:
            raise ConfigError(f"E5TextEmbeddings: inference_args {key}={value!r}: beam-e5 "
                              f"returns {key} {_FIXED[key]!r} only")
        elif key not in ("prompt", "normalize_embeddings", "show_progress_bar", *_FIXED):
            raise _key_error("inference_args", key, INFERENCE_KEYS)
    return InferenceArgs(options, args.get("prompt"), OutputArgs(**output),
                         args.get("normalize_embeddings"))


def model_normalizes(modules_json: Any) -> bool:
    """Does a sentence-transformers ``modules.json`` end the pipeline with ``Normalize``?"""
    return isinstance(modules_json, list) and any(
        str(m.get("type", "")).endswith("Normalize") for m in modules_json if isinstance(m, dict))
