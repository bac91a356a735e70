"""PyTorch: any model, on CPU or CUDA, in float32, bfloat16 or float16."""

from __future__ import annotations

import logging

import numpy as np
import torch

from beam_e5.errors import ConfigError
from beam_e5.model.backends.base import InferenceBackend, LoadRequest, PaddedBatch
from beam_e5.model.hardware import bound_onednn_cache
from beam_e5.model.profiles import Pooling

LOG = logging.getLogger(__name__)

__all__ = ["TorchBackend", "load_fp32_model", "load_hf_model", "pick_device", "pick_dtype",
           "torch_pooled_vectors"]


def pick_device(requested: str) -> torch.device:
    """``auto`` takes CUDA when present; an explicit ``cuda`` without a GPU is an error."""
    if requested == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda was requested but no CUDA GPU is visible to this "
                          "worker; use --device auto or cpu, or run on GPU workers")
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)


def pick_dtype(requested: str, device: torch.device) -> torch.dtype:
    """fp32 on CPU; on CUDA bf16 where supported, else fp16, unless told otherwise."""
    if requested != "auto":
        return getattr(torch, requested)
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def load_hf_model(request: LoadRequest, dtype: torch.dtype) -> torch.nn.Module:
    """The transformers model in ``dtype``, with SDPA attention where the model has it;
    safetensors weights only unless ``allow_pickle_weights``."""
    from transformers import AutoModel

    kwargs = dict(revision=request.revision, trust_remote_code=request.trust_remote_code,
                  dtype=dtype, use_safetensors=None if request.allow_pickle_weights else True)
    try:
        return AutoModel.from_pretrained(request.path, attn_implementation="sdpa", **kwargs)
    except (ValueError, ImportError) as e:
        if "sdpa" not in str(e).lower() and "attn" not in str(e).lower():
            raise
        LOG.info("beam-e5: %s has no SDPA attention; using the default", request.model)
        return AutoModel.from_pretrained(request.path, **kwargs)


def load_fp32_model(request: LoadRequest) -> torch.nn.Module:
    """The fp32 transformers model that the CPU runtimes' graphs are built from (on a cache
    miss only: a worker whose graph is cached never imports torch), with ``--torch-threads``
    for the build."""
    if request.threads:
        torch.set_num_threads(request.threads)
    return load_hf_model(request, torch.float32)


def torch_pooled_vectors(kind: Pooling, hidden: torch.Tensor,
                         attention_mask: torch.Tensor) -> torch.Tensor:
    """:func:`beam_e5.model.pooling.pooled_vectors` for tensors, on their device (a GPU pools
    there, so only the vectors cross to the host): the same rule, in float32."""
    mask = attention_mask.to(torch.float32)
    if kind == "mean":
        summed = (hidden.to(torch.float32) * mask.unsqueeze(-1)).sum(dim=1)
        pooled = summed / mask.sum(dim=1, keepdim=True).clamp(min=1e-9)
    elif kind == "cls":
        pooled = hidden[:, 0].to(torch.float32)
    else:  # "last": the highest position whose mask is 1, for left or right padding
        positions = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)
        last = torch.where(mask.bool(), positions, torch.full_like(positions, -1))
        rows = torch.arange(hidden.shape[0], device=hidden.device)
        pooled = hidden[rows, last.amax(dim=1).clamp(min=0)].to(torch.float32)
    return pooled / pooled.norm(p=2, dim=-1, keepdim=True).clamp(min=1e-12)


class TorchBackend(InferenceBackend):
    """A transformers model on a torch device; pools on that device."""

    name = "torch"

    def __init__(self, model: torch.nn.Module, device: torch.device, dtype: torch.dtype) -> None:
        self.model = model
        self._device = device
        self.device = device.type
        # on a GPU a small batch leaves the device idle, so calls are dear; not re-measured
        # with bench/bench_call_cost.py (these are the planner's earlier prices)
        self.call_overhead_tokens = 2048 if device.type == "cuda" else 32
        self.precision = str(dtype).removeprefix("torch.")
        self.label = f"PyTorch, {self.precision}"

    @classmethod
    def load(cls, request: LoadRequest, name: str = "torch") -> "TorchBackend":
        if request.threads:
            torch.set_num_threads(request.threads)
        device = pick_device(request.device)
        dtype = pick_dtype(request.dtype, device)
        if device.type == "cpu" and dtype == torch.bfloat16:
            bound_onednn_cache()
        return cls(load_hf_model(request, dtype).eval().to(device), device, dtype)

    def embed(self, batch: PaddedBatch, pooling: Pooling) -> np.ndarray:
        input_ids = torch.from_numpy(batch.input_ids).to(self._device, non_blocking=True)
        mask = torch.from_numpy(batch.attention_mask).to(self._device, non_blocking=True)
        with torch.inference_mode():
            hidden = self.model(input_ids=input_ids, attention_mask=mask).last_hidden_state
            return torch_pooled_vectors(pooling, hidden, mask).cpu().numpy()
