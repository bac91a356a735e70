"""Model profiles: how each encoder family wants its text prefixed and its output pooled.

A :class:`ModelProfile` is resolved once, before the pipeline starts, from the model name
or directory, and travels to the workers frozen. Resolution order (later wins):

1. the family rule matched from the model name (E5, E5 instruct, e5-mistral, GTE, BGE);
2. a sentence-transformers configuration found in the model directory
   (``modules.json``, ``1_Pooling/config.json``, ``config_sentence_transformers.json`` prompts,
   ``sentence_bert_config.json`` ``max_seq_length``);
3. the user's explicit overrides (``--query-prefix``, ``--passage-prefix``, ``--pooling``,
   ``--max-length``).

An unknown model with no configuration gets mean pooling and no prefix, and one log line
says so. Vectors are always L2-normalised: everything downstream compares them by cosine.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
from dataclasses import dataclass
from typing import Any, Callable, Literal, Optional

from beam_e5.errors import ConfigError

LOG = logging.getLogger(__name__)

Pooling = Literal["mean", "cls", "last"]
Role = Literal["query", "passage"]
POOLINGS: tuple[str, ...] = ("mean", "cls", "last")
ROLES: tuple[str, ...] = ("query", "passage")

DEFAULT_MAX_LENGTH = 512
DEFAULT_E5_TASK = "Given a web search query, retrieve relevant passages that answer the query"
BGE_EN_QUERY_INSTRUCTION = "Represent this sentence for searching relevant passages: "
BGE_ZH_QUERY_INSTRUCTION = "为这个句子生成表示以用于检索相关文章："


@dataclass(frozen=True)
class ModelProfile:
    """Everything about a model that decides what text it sees and how vectors come out."""

    family: str
    query_prefix: str
    passage_prefix: str
    pooling: Pooling
    max_length: int
    append_eos: bool = False  # decoder embedders (e5-mistral) pool the final EOS token
    source: str = "name"  # what decided it: name | sentence-transformers | default | user

    def __post_init__(self) -> None:
        if self.pooling not in POOLINGS:
            raise ConfigError(
                f"pooling {self.pooling!r} is not supported; use one of {', '.join(POOLINGS)}"
            )
        if not isinstance(self.max_length, int) or self.max_length < 2:
            raise ConfigError(
                f"max_length must be an integer >= 2, got {self.max_length!r}; "
                "pass --max-length N with the model's sequence limit (512 for BERT-size encoders)"
            )

    def prefix(self, role: Role) -> str:
        """The text put in front of every input for ``role``."""
        if role == "query":
            return self.query_prefix
        if role == "passage":
            return self.passage_prefix
        raise ConfigError(f"role must be 'query' or 'passage', got {role!r}")

    def as_dict(self) -> dict[str, Any]:
        """Field values with their own types (numbers stay numbers), for manifests."""
        return dataclasses.asdict(self)

    def as_metadata(self) -> dict[str, str]:
        """Flat string form, for Parquet key-value metadata."""
        return {k: str(v) for k, v in self.as_dict().items()}


@dataclass(frozen=True)
class ProfileOverrides:
    """The user's explicit choices; ``None`` means 'use the profile's value'."""

    query_prefix: Optional[str] = None
    passage_prefix: Optional[str] = None
    pooling: Optional[str] = None
    max_length: Optional[int] = None
    instruction: Optional[str] = None  # the task for E5 instruct models
    family: Optional[str] = None  # a FAMILIES name: the recipe, whatever the model is called

    def __post_init__(self) -> None:
        if self.family is not None and self.family not in FAMILIES:
            raise ConfigError(f"unknown model profile {self.family!r}; --profile takes one of "
                              f"{', '.join(FAMILIES)} (or leave it out to pick by model name)")

    def is_empty(self) -> bool:
        return all(v is None for v in dataclasses.astuple(self))


def _instruct_query_prefix(task: str) -> str:
    return f"Instruct: {task}\nQuery: "


def _model_basename(model: str) -> str:
    return model.rstrip("/").split("/")[-1].lower()


# --profile NAME -> a model name that the name rules below map to that family
FAMILIES = {"e5": "e5", "e5-instruct": "e5-instruct", "e5-mistral": "e5-mistral",
            "gte": "gte-base", "bge": "bge-", "bge-zh": "bge-zh", "generic": ""}


def profile_from_name(model: str, instruction: Optional[str] = None) -> Optional[ModelProfile]:
    """The family profile for a model name or directory name, or ``None`` if unknown.

    Matches the last path component, so ``intfloat/e5-base-v2``, ``/models/e5-base-v2`` and
    ``gs://bucket/models/e5-base-v2`` resolve alike.
    """
    name = _model_basename(model)
    task = instruction or DEFAULT_E5_TASK
    if "e5-mistral" in name:
        return ModelProfile("e5-mistral", _instruct_query_prefix(task), "", "last",
                            DEFAULT_MAX_LENGTH, append_eos=True)
    if re.search(r"e5-.*instruct", name):
        return ModelProfile("e5-instruct", _instruct_query_prefix(task), "", "mean",
                            DEFAULT_MAX_LENGTH)
    if re.search(r"(^|[-_])e5([-_]|$)", name):
        return ModelProfile("e5", "query: ", "passage: ", "mean", DEFAULT_MAX_LENGTH)
    if re.match(r"gte-(small|base|large)", name):
        return ModelProfile("gte", "", "", "mean", DEFAULT_MAX_LENGTH)
    if name.startswith("bge-"):
        instr = BGE_ZH_QUERY_INSTRUCTION if "-zh" in name else BGE_EN_QUERY_INSTRUCTION
        return ModelProfile("bge", instruction or instr, "", "cls", DEFAULT_MAX_LENGTH)
    return None


@dataclass(frozen=True)
class SentenceTransformersConfig:
    """What a sentence-transformers model directory says about itself."""

    pooling: Optional[Pooling] = None
    query_prompt: Optional[str] = None
    passage_prompt: Optional[str] = None
    max_seq_length: Optional[int] = None
    tokenizer_max_length: Optional[int] = None

    def found_anything(self) -> bool:
        return any(v is not None for v in dataclasses.astuple(self))


def _pooling_from_st(cfg: dict) -> Optional[Pooling]:
    if cfg.get("pooling_mode_lasttoken"):
        return "last"
    if cfg.get("pooling_mode_cls_token"):
        return "cls"
    if cfg.get("pooling_mode_mean_tokens"):
        return "mean"
    return None


ReadJson = Callable[[str], Optional[dict]]


def read_st_config(read_json: ReadJson) -> SentenceTransformersConfig:
    """Read a sentence-transformers configuration through ``read_json(relative_path)``.

    ``read_json`` returns the parsed JSON of a file in the model directory, or ``None`` if
    the file does not exist; it lets the same code read local, ``gs://`` and cached hub
    directories.
    """
    modules = read_json("modules.json") or []
    pooling: Optional[Pooling] = None
    for module in modules if isinstance(modules, list) else []:
        kind = str(module.get("type", ""))
        if kind.endswith("Pooling"):
            pool_cfg = read_json(f"{module.get('path', '1_Pooling')}/config.json") or {}
            pooling = _pooling_from_st(pool_cfg)
    prompts = (read_json("config_sentence_transformers.json") or {}).get("prompts") or {}
    st_cfg = read_json("sentence_bert_config.json") or {}
    tok_cfg = read_json("tokenizer_config.json") or {}
    tok_max = tok_cfg.get("model_max_length")
    return SentenceTransformersConfig(
        pooling=pooling,
        query_prompt=prompts.get("query"),
        passage_prompt=prompts.get("passage", prompts.get("document")),
        max_seq_length=st_cfg.get("max_seq_length"),
        tokenizer_max_length=int(tok_max) if isinstance(tok_max, (int, float)) and tok_max < 1e9
        else None,
    )


def default_max_length(st: SentenceTransformersConfig) -> int:
    """sentence-transformers ``max_seq_length`` if given, else min(tokenizer limit, 512)."""
    if st.max_seq_length:
        return int(st.max_seq_length)
    if st.tokenizer_max_length:
        return min(st.tokenizer_max_length, DEFAULT_MAX_LENGTH)
    return DEFAULT_MAX_LENGTH


def resolve_profile(
    model: str,
    st: SentenceTransformersConfig = SentenceTransformersConfig(),
    overrides: ProfileOverrides = ProfileOverrides(),
) -> ModelProfile:
    """Combine the name rule, the directory's sentence-transformers config and overrides.

    ``overrides.family`` (``--profile``) picks the family instead of the model's name, for
    a fine-tuned or renamed copy (``/models/my-ft-model`` trained from e5-base-v2).
    """
    name = model if overrides.family is None else FAMILIES[overrides.family]
    by_name = profile_from_name(name, overrides.instruction) if name else None  # "" = generic
    if by_name is None:
        base = ModelProfile("generic", "", "", st.pooling or "mean", default_max_length(st),
                            source="sentence-transformers" if st.found_anything() else "default")
        if not st.found_anything() and overrides.family is None:
            LOG.warning(
                "beam-e5: model %r matches no known family (e5, gte, bge) and has no "
                "sentence-transformers config: using mean pooling, no prefix, max length %d. "
                "Pass --pooling/--query-prefix/--passage-prefix to change this.",
                model, base.max_length)
    else:
        base = by_name if overrides.family is None else dataclasses.replace(by_name,
                                                                            source="user")
        if st.found_anything():
            base = dataclasses.replace(
                base,
                pooling=st.pooling or base.pooling,
                max_length=default_max_length(st),
                source="sentence-transformers",
            )
    if st.query_prompt is not None and overrides.instruction is None:
        base = dataclasses.replace(base, query_prefix=st.query_prompt)
    if st.passage_prompt is not None:
        base = dataclasses.replace(base, passage_prefix=st.passage_prompt)
    return apply_overrides(base, overrides)


def apply_overrides(profile: ModelProfile, overrides: ProfileOverrides) -> ModelProfile:
    changes: dict[str, object] = {}
    if overrides.query_prefix is not None:
        changes["query_prefix"] = overrides.query_prefix
    if overrides.passage_prefix is not None:
        changes["passage_prefix"] = overrides.passage_prefix
    if overrides.pooling is not None:
        changes["pooling"] = overrides.pooling
    if overrides.max_length is not None:
        changes["max_length"] = overrides.max_length
    if not changes:
        return profile
    return dataclasses.replace(profile, source="user", **changes)


def json_reader_for_dir(read_text: Callable[[str], Optional[str]]) -> ReadJson:
    """Turn a 'read file text or None' function into a JSON reader for read_st_config."""

    def read_json(rel: str) -> Optional[dict]:
        text = read_text(rel)
        if text is None:
            return None
        try:
            return json.loads(text)
        except json.JSONDecodeError as e:
            raise ConfigError(f"model file {rel} is not valid JSON ({e}); "
                              "re-download or re-export the model directory") from e

    return read_json
