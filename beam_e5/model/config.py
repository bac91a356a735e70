"""The encoder's configuration: one frozen, validated object, resolved before the pipeline runs.

``EncoderConfig`` holds what the user asked for. ``EncoderConfig.resolve()`` checks the model
source (exists, safe weights), reads the model's own configuration and returns an
``EncoderSpec``: the config plus the frozen :class:`~beam_e5.model.profiles.ModelProfile`. The spec
is what ships to the workers.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
from dataclasses import dataclass, field
from typing import Any, Optional

from beam_e5.errors import ConfigError, ModelUnreachable
from beam_e5.model.backends.choose import BACKENDS, check_backend_supported
from beam_e5.model.loading import (
    DEFAULT_CACHE_DIR,
    ModelSource,
    classify_model_ref,
    preflight_model_source,
    read_model_file_text,
)
from beam_e5.model.profiles import (
    POOLINGS,
    ROLES,
    ModelProfile,
    ProfileOverrides,
    json_reader_for_dir,
    read_st_config,
    resolve_profile,
)

LOG = logging.getLogger(__name__)

DEVICES = ("auto", "cpu", "cuda")
DTYPES = ("auto", "float32", "float16", "bfloat16")


@dataclass(frozen=True)
class EncoderConfig:
    """What to embed with and how. Every field maps to a CLI flag of the same name."""

    model: str
    role: str = "passage"
    revision: Optional[str] = None
    overrides: ProfileOverrides = field(default_factory=ProfileOverrides)
    device: str = "auto"
    dtype: str = "auto"
    max_batch_tokens: int = 8192
    max_batch_size: int = 256
    beam_batch_size: int = 512
    trust_remote_code: bool = False
    allow_pickle_weights: bool = False
    model_cache_dir: str = DEFAULT_CACHE_DIR
    torch_threads: int = 0  # 0: let torch decide (one per core)
    backend: str = "auto"  # auto | torch | onnx | onnx-int8 | openvino (CPU runtimes)

    def __post_init__(self) -> None:
        if isinstance(self.model, os.PathLike):
            object.__setattr__(self, "model", os.fspath(self.model))
        if self.role not in ROLES:
            raise ConfigError(f"--role must be 'passage' (corpus documents) or 'query' "
                              f"(queries, symmetric tasks), got {self.role!r}")
        if self.device not in DEVICES:
            raise ConfigError(f"--device must be one of {', '.join(DEVICES)}, got {self.device!r}")
        if self.dtype not in DTYPES:
            raise ConfigError(f"--dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        if self.device == "cpu" and self.dtype == "float16":
            raise ConfigError("--dtype float16 is not supported on CPU; use float32 or bfloat16")
        pooling = self.overrides.pooling
        if pooling is not None and pooling not in POOLINGS:
            raise ConfigError(f"--pooling must be one of {', '.join(POOLINGS)}, got {pooling!r}")
        max_len = self.overrides.max_length
        if max_len is not None and max_len < 2:
            raise ConfigError(f"--max-length must be >= 2, got {max_len}")
        for name in ("max_batch_tokens", "max_batch_size", "beam_batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be a positive integer, "
                                  f"got {value!r}")
        if self.backend not in BACKENDS:
            raise ConfigError(f"--backend must be one of {', '.join(BACKENDS)}, "
                              f"got {self.backend!r}")
        if self.backend in ("onnx", "onnx-int8") and self.dtype not in ("auto", "float32"):
            raise ConfigError(f"--backend {self.backend} computes in float32 (int8 weights "
                              f"for onnx-int8); drop --dtype {self.dtype} or use --backend torch")
        if self.backend == "openvino" and self.dtype == "float16":
            raise ConfigError("--backend openvino computes in float32 or bfloat16 (on CPUs with "
                              "bf16 instructions); drop --dtype float16 or use --backend torch")
        if self.torch_threads < 0:
            raise ConfigError(f"--torch-threads must be >= 0, got {self.torch_threads}")

    def source(self) -> ModelSource:
        return classify_model_ref(self.model, self.revision)

    def resolve(self) -> "EncoderSpec":
        """Validate the model source and resolve its profile; fails before the pipeline."""
        source = self.source()
        preflight_model_source(source, self.allow_pickle_weights)
        # memoised: config.json serves the profile, the dim, the model type and the weight
        # size, and on gs:// every read is a request
        read_json = functools.lru_cache(maxsize=None)(
            json_reader_for_dir(lambda rel: read_model_file_text(source, rel)))
        st = read_st_config(read_json)
        profile = resolve_profile(self.model, st, self.overrides)
        dim = model_dim(source, read_json)
        check_backend_supported(self.backend, model_type(read_json), self.device)
        if profile.max_length > self.max_batch_tokens:
            raise ConfigError(
                f"--max-batch-tokens {self.max_batch_tokens} is smaller than the max length "
                f"{profile.max_length}; raise --max-batch-tokens or lower --max-length")
        # what the encoder will really use, so the manifest records what ran
        profile = cap_max_length(self.model, profile, self.overrides.max_length,
                                 model_length_limit(st.tokenizer_max_length, read_json))
        return EncoderSpec(self, source, profile, dim)

    def resolve_where_reachable(self) -> "EncoderSpec | EncoderConfig":
        """:meth:`resolve` now if the model can be reached from this machine, else ``self``.

        What Python code building a pipeline uses (``EmbedTexts``, ``E5TextEmbeddings``): a
        model that is reachable is checked now, so a wrong one fails before the pipeline
        starts; one that is not reachable from here (:class:`~beam_e5.errors.ModelUnreachable`:
        a path that exists only on the workers, a hub name without network) is logged and
        resolved on each worker by :func:`resolve_on_worker`, with the same checks. The CLI
        calls :meth:`resolve` and stops early instead.
        """
        try:
            return self.resolve()
        except ModelUnreachable as e:
            LOG.warning("beam-e5: the model %r is not reachable from this machine (%s); it will "
                        "be resolved and checked on the workers", self.model, e)
            return self


def resolve_on_worker(encoder: "EncoderSpec | EncoderConfig") -> "EncoderSpec":
    """The spec a worker builds its encoder from: ``encoder`` itself if it was resolved when
    the pipeline was built, else resolved here (a failure names the model)."""
    if isinstance(encoder, EncoderSpec):
        return encoder
    try:
        return encoder.resolve()
    except ConfigError as e:
        raise ConfigError(f"beam-e5 could not resolve the model {encoder.model!r} on this "
                          f"worker: {e}") from e


# encoders with learned absolute positions: max_position_embeddings bounds the length
# (RoBERTa-style models reserve the first 2 positions for padding)
_ABSOLUTE_POSITIONS = {"bert": 0, "distilbert": 0, "electra": 0, "roberta": 2,
                       "xlm-roberta": 2, "camembert": 2, "mpnet": 2}


def model_length_limit(tokenizer_max_length: Optional[int], read_json) -> Optional[int]:
    """The most tokens the model takes: the tokenizer's ``model_max_length`` and, for
    encoders with absolute positions, ``max_position_embeddings`` (None if unbounded)."""
    limits = [tokenizer_max_length] if tokenizer_max_length else []
    cfg = read_json("config.json") or {}
    offset = _ABSOLUTE_POSITIONS.get(cfg.get("model_type"))
    positions = cfg.get("max_position_embeddings")
    if offset is not None and isinstance(positions, int) and positions > offset:
        limits.append(positions - offset)
    return min(limits) if limits else None


def cap_max_length(model: str, profile: ModelProfile, requested: Optional[int],
                   limit: Optional[int]) -> ModelProfile:
    """The profile with the max length the encoder will really use (what the manifest
    records); an explicit ``--max-length`` beyond the model's limit is an error."""
    if limit is None or profile.max_length <= limit:
        return profile
    if requested is not None:
        raise ConfigError(f"--max-length {requested} exceeds what {model} takes ({limit} "
                          f"tokens); pass --max-length {limit} or less")
    return dataclasses.replace(profile, max_length=limit)


def check_device_here(config: "EncoderConfig", runner: Optional[str]) -> None:
    """``--device cuda`` on a runner that embeds in this process needs a GPU here.

    ``runner`` is Beam's ``--runner`` (None: the DirectRunner); remote runners (Dataflow,
    Flink, ...) are not checked: their workers, not the launcher, have the GPU.
    """
    if config.device != "cuda":
        return
    name = runner or ""
    if name and not any(local in name.lower() for local in ("direct", "prism")):
        return
    import torch

    if not torch.cuda.is_available():
        raise ConfigError("--device cuda was requested but this machine has no CUDA GPU and "
                          f"the {name or 'DirectRunner'} embeds here; use --device auto or cpu, "
                          "or run on GPU workers (--runner DataflowRunner ...)")


def model_dim(source: ModelSource, read_json) -> int:
    """The embedding size, from the model's config.json (``hidden_size``, or ``d_model``)."""
    cfg = read_json("config.json")
    if cfg is None and source.kind == "hub":
        from transformers import AutoConfig  # asks the Hub for config.json only

        try:
            cfg = AutoConfig.from_pretrained(source.ref, revision=source.revision).to_dict()
        except OSError as e:
            error = ConfigError if hub_answered_no(e) else ModelUnreachable
            raise error(
                f"cannot read the config of {source.ref!r} from the Hugging Face Hub ({e}); "
                "check the name and network, or download the model and pass its directory "
                "to --model") from e
    for key in ("hidden_size", "d_model", "dim"):
        if cfg and isinstance(cfg.get(key), int):
            return int(cfg[key])
    raise ConfigError(f"{source.ref}: config.json has no hidden_size; is this a text encoder?")


# the Hub was reached and said no: a wrong name, revision or file, or a gated repository
_HUB_REFUSALS = ("RepositoryNotFoundError", "RevisionNotFoundError", "RemoteEntryNotFoundError",
                 "GatedRepoError", "DisabledRepoError")


def hub_answered_no(error: BaseException) -> bool:
    """Did the Hub answer (the model is reachable, and wrong), rather than not answer (no
    network, offline mode: the model may still be reachable from the workers)?"""
    seen: Optional[BaseException] = error
    while seen is not None:
        if any(c.__name__ in _HUB_REFUSALS for c in type(seen).__mro__):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def model_type(read_json) -> Optional[str]:
    """``model_type`` from config.json (``bert``, ``xlm-roberta``, ``mistral``...), if known."""
    cfg = read_json("config.json")
    return cfg.get("model_type") if cfg else None


@dataclass(frozen=True)
class EncoderSpec:
    """A resolved, immutable description of the encoder a worker must build."""

    config: EncoderConfig
    source: ModelSource
    profile: ModelProfile
    dim: int

    @property
    def prefix(self) -> str:
        return self.profile.prefix(self.config.role)  # type: ignore[arg-type]

    def signature(self) -> dict[str, Any]:
        """What decides the vectors: used in file metadata and for incremental re-embedding.

        Values keep their JSON types (``dim`` is a number); Parquet metadata stringifies them.
        """
        return {
            "model": self.config.model,
            "revision": self.config.revision or "",
            "role": self.config.role,
            "prefix": self.prefix,
            "dim": self.dim,
            **{f"profile.{k}": v for k, v in self.profile.as_dict().items()},
            # torch, onnx and openvino compute the same function in fp32 (cosine >= 0.99999,
            # tested), so only the approximate int8 backend enters the signature (and older
            # snapshots match);
            # nor does --dtype: bf16/fp16 vectors stay within cosine 0.999 of fp32 (tested;
            # mean 0.9999), so a snapshot may mix them as it mixes CPU and GPU workers
            **({"backend": self.config.backend} if self.config.backend == "onnx-int8" else {}),
        }
