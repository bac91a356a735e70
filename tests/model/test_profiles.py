"""Model profile resolution: family rules, sentence-transformers configs, overrides."""

import json
import logging

import pytest

from beam_e5.errors import ConfigError
from beam_e5.model.profiles import (
    BGE_EN_QUERY_INSTRUCTION,
    ProfileOverrides,
    SentenceTransformersConfig,
    profile_from_name,
    read_st_config,
    resolve_profile,
)


@pytest.mark.parametrize("name", ["intfloat/e5-small", "intfloat/e5-base-v2",
                                  "intfloat/e5-large-v2", "intfloat/multilingual-e5-large",
                                  "/models/e5-small-v2", "gs://b/models/multilingual-e5-base/"])
def test_e5_family(name):
    p = profile_from_name(name)
    assert (p.family, p.query_prefix, p.passage_prefix, p.pooling) == (
        "e5", "query: ", "passage: ", "mean")
    assert p.prefix("passage") == "passage: " and p.prefix("query") == "query: "


def test_e5_instruct_family():
    p = profile_from_name("intfloat/multilingual-e5-large-instruct")
    assert p.family == "e5-instruct" and p.pooling == "mean"
    assert p.query_prefix.startswith("Instruct: Given a web search query")
    assert p.query_prefix.endswith("\nQuery: ")
    assert p.passage_prefix == ""


def test_e5_mistral_last_token_and_custom_task():
    p = profile_from_name("intfloat/e5-mistral-7b-instruct", instruction="Find similar bugs")
    assert p.pooling == "last" and p.append_eos
    assert p.query_prefix == "Instruct: Find similar bugs\nQuery: "


@pytest.mark.parametrize("name", ["thenlper/gte-small", "thenlper/gte-base", "gte-large"])
def test_gte_family(name):
    p = profile_from_name(name)
    assert (p.family, p.query_prefix, p.passage_prefix, p.pooling) == ("gte", "", "", "mean")


def test_bge_family():
    p = profile_from_name("BAAI/bge-small-en-v1.5")
    assert p.pooling == "cls" and p.query_prefix == BGE_EN_QUERY_INSTRUCTION
    assert p.passage_prefix == ""
    assert profile_from_name("BAAI/bge-large-zh-v1.5").query_prefix.startswith("为这个句子")


@pytest.mark.parametrize("name", ["sentence-transformers/all-MiniLM-L6-v2", "bert-base-uncased",
                                  "some/e5x-model", "mye5"])
def test_unknown_names(name):
    assert profile_from_name(name) is None


def test_unknown_model_without_config_logs_once(caplog):
    with caplog.at_level(logging.WARNING):
        p = resolve_profile("my-org/mystery-encoder")
    assert (p.family, p.pooling, p.query_prefix, p.passage_prefix) == ("generic", "mean", "", "")
    assert p.max_length == 512
    assert len([r for r in caplog.records if "matches no known family" in r.message]) == 1


def _dir_reader(tmp_path):
    def read_json(rel):
        path = tmp_path / rel
        return json.loads(path.read_text()) if path.exists() else None
    return read_json


def test_reads_sentence_transformers_directory(tmp_path):
    (tmp_path / "1_Pooling").mkdir()
    (tmp_path / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling",
         "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize",
         "type": "sentence_transformers.models.Normalize"}]))
    (tmp_path / "1_Pooling" / "config.json").write_text(json.dumps(
        {"pooling_mode_cls_token": True, "pooling_mode_mean_tokens": False}))
    (tmp_path / "config_sentence_transformers.json").write_text(json.dumps(
        {"prompts": {"query": "Q> ", "document": "D> "}}))
    (tmp_path / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 384}))
    st = read_st_config(_dir_reader(tmp_path))
    assert st == SentenceTransformersConfig(pooling="cls", query_prompt="Q> ",
                                            passage_prompt="D> ", max_seq_length=384)
    p = resolve_profile(str(tmp_path), st)
    assert (p.pooling, p.query_prefix, p.passage_prefix, p.max_length, p.source) == (
        "cls", "Q> ", "D> ", 384, "sentence-transformers")


def test_directory_config_keeps_family_prefixes(tmp_path):
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 1024}))
    st = read_st_config(_dir_reader(tmp_path))
    p = resolve_profile("/m/e5-base-v2", st)
    assert p.query_prefix == "query: " and p.max_length == 512  # min(tokenizer limit, 512)


def test_tokenizer_limit_below_512(tmp_path):
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 128}))
    assert resolve_profile("/m/unknown", read_st_config(_dir_reader(tmp_path))).max_length == 128


def test_lasttoken_pooling_read_from_st_config(tmp_path):
    (tmp_path / "1_Pooling").mkdir()
    (tmp_path / "modules.json").write_text(json.dumps([
        {"path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]))
    (tmp_path / "1_Pooling" / "config.json").write_text(json.dumps(
        {"pooling_mode_lasttoken": True}))
    assert read_st_config(_dir_reader(tmp_path)).pooling == "last"


def test_overrides_win():
    p = resolve_profile("intfloat/e5-small-v2", overrides=ProfileOverrides(
        query_prefix="", passage_prefix="doc: ", pooling="cls", max_length=128))
    assert (p.query_prefix, p.passage_prefix, p.pooling, p.max_length, p.source) == (
        "", "doc: ", "cls", 128, "user")


def test_bad_override_pooling_is_config_error():
    with pytest.raises(ConfigError, match="pooling"):
        resolve_profile("intfloat/e5-small-v2", overrides=ProfileOverrides(pooling="max"))


def test_bad_role():
    with pytest.raises(ConfigError, match="role"):
        profile_from_name("intfloat/e5-small-v2").prefix("document")


@pytest.mark.parametrize("family,query,passage,pooling", [
    ("e5", "query: ", "passage: ", "mean"),
    ("gte", "", "", "mean"),
    ("bge", BGE_EN_QUERY_INSTRUCTION, "", "cls"),
    ("e5-mistral", "Instruct: ", "", "last"),
    ("generic", "", "", "mean"),
])
def test_profile_flag_picks_the_recipe_of_a_renamed_model(family, query, passage, pooling, caplog):
    with caplog.at_level(logging.WARNING):
        p = resolve_profile("/models/my-finetuned-model", overrides=ProfileOverrides(family=family))
    assert p.query_prefix.startswith(query) and (query or p.query_prefix == "")
    assert (p.passage_prefix, p.pooling) == (passage, pooling)
    assert "matches no known family" not in caplog.text  # the user said what it is
    # and the flag beats the name: an e5-named directory forced to gte gets no prefix
    forced = resolve_profile("intfloat/e5-base-v2", overrides=ProfileOverrides(family="gte"))
    assert forced.family == "gte" and forced.passage_prefix == "" and forced.source == "user"


def test_unknown_profile_is_a_config_error_that_lists_the_choices():
    with pytest.raises(ConfigError, match="unknown model profile 'e6'.*e5, e5-instruct"):
        ProfileOverrides(family="e6")
