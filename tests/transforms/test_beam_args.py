"""Beam's ``load_model_args`` / ``inference_args`` translated into beam-e5's settings: the pure
functions with hand-built dicts, then what ``E5TextEmbeddings`` makes of them."""

import shutil

import numpy as np
import pytest
import torch

from beam_e5.errors import ConfigError
from beam_e5.model.profiles import ProfileOverrides
from beam_e5.transforms.beam_args import (
    OutputArgs,
    inference_options,
    load_model_options,
    model_normalizes,
)
from beam_e5.transforms.rag import E5TextEmbeddings

# -- pure functions --------------------------------------------------------------------------


def test_load_model_args_map_onto_encoder_fields():
    assert load_model_options({"device": "CPU", "trust_remote_code": False, "revision": "abc",
                               "cache_folder": "/c", "backend": "onnx"}) == {
        "device": "cpu", "trust_remote_code": False, "revision": "abc",
        "model_cache_dir": "/c", "backend": "onnx"}
    assert load_model_options({"device": "cuda:0"}) == {"device": "cuda"}
    assert load_model_options({"torch_dtype": torch.bfloat16}) == {"dtype": "bfloat16"}
    assert load_model_options({"model_kwargs": {"torch_dtype": "float16"}}) == {"dtype": "float16"}
    assert load_model_options({}) == {}


@pytest.mark.parametrize("args,message", [
    ({"device": "mps"}, "device 'mps'"),
    ({"torch_dtype": torch.int8}, "torch_dtype torch.int8"),
    ({"model_kwargs": {"attn_implementation": "eager"}}, "key 'attn_implementation'"),
    ({"token": "hf_x"}, "load_model_args key 'token'"),
])
def test_load_model_args_without_a_meaning_are_refused_by_name(args, message):
    with pytest.raises(ConfigError, match=message):
        load_model_options(args)


def test_inference_args_split_into_encoder_options_and_output():
    got = inference_options({"batch_size": 32, "prompt_name": "document",
                             "convert_to_numpy": False, "normalize_embeddings": True,
                             "show_progress_bar": False, "precision": "float32",
                             "output_value": "sentence_embedding"})
    assert dict(got.options) == {"max_batch_size": 32, "role": "passage"}
    assert got.output == OutputArgs(convert_to_numpy=False, convert_to_tensor=False)
    assert (got.prompt, got.normalize) == (None, True)
    assert inference_options({"prompt": "query: "}).prompt == "query: "
    assert inference_options({}) == inference_options({"convert_to_numpy": True})


@pytest.mark.parametrize("args,message", [
    ({"precision": "int8"}, "precision='int8'"),
    ({"output_value": "token_embeddings"}, "output_value='token_embeddings'"),
    ({"prompt_name": "classification"}, "prompt_name 'classification'"),
    ({"truncate_dim": 128}, "inference_args key 'truncate_dim'"),
])
def test_inference_args_without_a_meaning_are_refused_by_name(args, message):
    with pytest.raises(ConfigError, match=message):
        inference_options(args)


def test_output_conversion_follows_sentence_transformers():
    vectors = np.arange(6, dtype=np.float32).reshape(2, 3)
    assert OutputArgs().convert(vectors) is vectors
    tensor = OutputArgs(convert_to_tensor=True).convert(vectors)
    assert type(tensor) is torch.Tensor and tuple(tensor.shape) == (2, 3)
    rows = OutputArgs(convert_to_numpy=False).convert(vectors)
    assert [type(r) for r in rows] == [torch.Tensor, torch.Tensor]
    assert rows[1].tolist() == [3.0, 4.0, 5.0]


def test_model_normalizes_reads_modules_json():
    st = [{"idx": 0, "type": "sentence_transformers.models.Transformer"},
          {"idx": 1, "type": "sentence_transformers.models.Pooling"}]
    assert not model_normalizes(st)
    assert model_normalizes(st + [{"idx": 2, "type": "sentence_transformers.models.Normalize"}])
    assert not model_normalizes(None)


# -- E5TextEmbeddings --------------------------------------------------------------------------


def test_beam_arguments_reach_the_encoder_config(minilm_dir):
    e5 = ProfileOverrides(family="e5")
    emb = E5TextEmbeddings(minilm_dir, ["text"], 64, load_model_args={
        "device": "cpu", "torch_dtype": "float32", "cache_folder": "/tmp/beam-e5-cache"},
        inference_args={"batch_size": 16, "prompt_name": "query"}, overrides=e5,
        min_batch_size=8, max_batch_size=64, large_model=True)
    cfg = emb.spec.config
    assert (emb.columns, cfg.overrides.max_length, cfg.device, cfg.dtype) == (
        ["text"], 64, "cpu", "float32")
    assert (cfg.model_cache_dir, cfg.max_batch_size, cfg.role) == ("/tmp/beam-e5-cache", 16,
                                                                   "query")
    assert emb.spec.prefix == "query: "
    handler = emb.get_model_handler()
    # the attribute names of Beam's _SentenceTransformerModelHandler
    assert (handler.model_name, handler._max_seq_length, handler._min_batch_size,
            handler._max_batch_size, handler._large_model) == (minilm_dir, 64, 8, 64, True)
    assert handler._load_model_args["device"] == "cpu"
    assert handler.batch_elements_kwargs() == {"min_batch_size": 8, "max_batch_size": 64}
    assert not handler.share_model_across_processes()
    prompted = E5TextEmbeddings(minilm_dir, inference_args={"prompt": "Represent: "})
    assert prompted.spec.prefix == "Represent: "


def test_one_setting_given_twice_is_refused(minilm_dir):
    with pytest.raises(ConfigError, match="device is set twice"):
        E5TextEmbeddings(minilm_dir, device="cuda", load_model_args={"device": "cpu"})
    with pytest.raises(ConfigError, match="contradicts inference_args prompt_name"):
        E5TextEmbeddings(minilm_dir, role="passage", inference_args={"prompt_name": "query"})
    with pytest.raises(ConfigError, match="embeds text"):
        E5TextEmbeddings(minilm_dir, ["img"], image_model=True)


def test_normalize_false_only_where_the_model_normalises_itself(minilm_dir, tiny_models,
                                                                tmp_path):
    # MiniLM ends with a Normalize module: sentence-transformers returns unit vectors anyway
    E5TextEmbeddings(minilm_dir, inference_args={"normalize_embeddings": False})
    path = shutil.copytree(tiny_models("bert", "e5-small-v2"), tmp_path / "e5-small-v2")
    (path / "modules.json").write_text(
        '[{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"}]')
    with pytest.raises(ConfigError, match="has no Normalize module"):
        E5TextEmbeddings(str(path), inference_args={"normalize_embeddings": False})


def test_large_model_has_no_effect_in_beams_own_mltransform_handler(minilm_dir):
    """What the docstring says of Beam 2.77: MLTransform's _TextEmbeddingHandler does not
    forward share_model_across_processes, so large_model=True shares nothing there either."""
    from apache_beam.ml.transforms.base import _TextEmbeddingHandler
    from apache_beam.ml.transforms.embeddings.huggingface import SentenceTransformerEmbeddings

    beams = SentenceTransformerEmbeddings(minilm_dir, ["text"], large_model=True)
    assert beams.get_model_handler().share_model_across_processes()  # the inner one would
    assert not _TextEmbeddingHandler(beams).share_model_across_processes()  # what runs
