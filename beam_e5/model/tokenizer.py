"""The tokenizer, loaded once per worker process, without transformers where it can be.

transformers builds a fast tokenizer from the model's files (``tokenizer.json``,
``tokenizer_config.json``, ...; version 5 rebuilds the normaliser and post-processor from the
tokenizer class and its config) and runs each call through the ``tokenizers.Tokenizer`` it
built, with truncation and padding switched off. The first load of a model directory on a
machine does that and saves the backend it built, with the few ids the encoder reads, in
the artefact cache (``<model cache dir>/tokenizers/``); later loads read that snapshot with
``tokenizers`` alone (0.02 s for all-MiniLM-L6-v2) instead of importing transformers (0.7 s
of every worker's start, +39 MiB resident) and building it again, and tokenise through the
same Rust pipeline: the same ids and offsets (``tests/model/test_tokenizer.py``).

The snapshot is keyed by the directory's files (names, sizes, mtimes: as the graph cache;
``*.py`` and ``*.tiktoken`` too) and the transformers and tokenizers versions, and written
atomically once it has been read back and given transformers' ids and offsets on probe
texts. transformers is used every time for a hub name (which transformers resolves), for a
tokenizer with no fast backend, for a class that tokenises in Python of its own (remote
code), for a backend with a Python-defined part (which cannot be saved) and for a snapshot
that fails the probe texts: there the backend alone is not what transformers runs.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from abc import ABC, abstractmethod
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Optional, Sequence

from beam_e5.model.loading import (
    DEFAULT_CACHE_DIR,
    machine_lock,
    weights_key,
    write_json_atomically,
)

LOG = logging.getLogger(__name__)

# the snapshot's build: once per machine (with an fcntl lock among processes), so that the
# worker processes of a cold machine do not each import transformers to build the same file
_SNAPSHOT_LOCK = threading.Lock()

SNAPSHOT_FORMAT = 1
# transformers' methods between ``tokenizer(texts)`` and the backend's ``encode_batch``: a
# class that overrides one of them tokenises differently from its backend alone
_CALL_PATH = ("__call__", "_call_one", "_encode_plus", "encode_plus", "batch_encode_plus",
              "set_truncation_and_padding", "prepare_for_tokenization",
              "_switch_to_input_mode", "_get_padding_truncation_strategies", "_convert_encoding")
# the files a tokenizer may be built from, whose names, sizes and times key its snapshot
# (remote code, tiktoken vocabularies, BPE codes, chat templates); not the weights, which a
# hub model's snapshot folder gets only later, when transformers fetches them there
_TOKENIZER_SUFFIXES = (".json", ".txt", ".model", ".py", ".tiktoken", ".codes", ".spm",
                       ".vocab", ".tokenizer", ".jinja")
# checked on the snapshot read back before it is saved: special-token text, accents, CJK,
# emoji, blanks
_PROBES = ("Hello World", "", "  ", "[CLS] <s> </s> [SEP] <pad> [PAD] <unk> <mask>",
           "naïve café Straße", "東京都の人口", "Привет", "tab\tline\nend",
           "emoji \U0001F600\U0001F44D\U0001F3FD ZWJ \U0001F468\u200d\U0001F469",
           "e\u0301 \u200b\u00ad x" * 40)

__all__ = ["HfTokenizer", "SnapshotTokenizer", "TextTokenizer", "TokenizerInfo",
           "load_tokenizer", "same_tokens", "snapshot_path"]


@dataclass(frozen=True)
class TokenizerInfo:
    """What the encoder reads of a tokenizer besides its ids."""

    pad_token_id: Optional[int]
    eos_token_id: Optional[int]
    unk_token_id: Optional[int]
    padding_side: str  # "right" or "left"
    model_max_length: int  # transformers' value (a huge sentinel where the model sets none)
    split_special_tokens: bool  # special-token text in a document is split, not matched
    name: str  # the transformers class that built it, for the log

    @classmethod
    def of(cls, tokenizer: Any) -> "TokenizerInfo":
        """Read from a loaded transformers tokenizer."""
        limit = getattr(tokenizer, "model_max_length", None)
        return cls(tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.unk_token_id,
                   getattr(tokenizer, "padding_side", "right") or "right",
                   int(limit) if isinstance(limit, int) else 10**30,
                   bool(getattr(tokenizer, "split_special_tokens", False)),
                   type(tokenizer).__name__)


class TextTokenizer(ABC):
    """Texts to token ids (and character offsets where ``is_fast``): what the encoder asks."""

    info: TokenizerInfo
    is_fast: bool

    @abstractmethod
    def ids(self, texts: Sequence[str], special_tokens: bool = True) -> list[list[int]]:
        """Each text's token ids, with the model's special tokens ([CLS] ... [SEP]) or not."""

    def ids_and_offsets(self, texts: Sequence[str]
                        ) -> tuple[list[list[int]], list[list[tuple[int, int]]]]:
        """Each text's ids without special tokens and each token's (start, end) characters."""
        raise NotImplementedError(f"{type(self).__name__} has no character offsets")

    @abstractmethod
    def decode(self, ids: Sequence[int]) -> str:
        """The text of ``ids``, special tokens left out (to inspect what the model reads;
        transformers' optional clean-up of spaces is not applied)."""


class SnapshotTokenizer(TextTokenizer):
    """The ``tokenizers.Tokenizer`` transformers built, run as transformers runs it."""

    is_fast = True

    def __init__(self, backend: Any, info: TokenizerInfo) -> None:
        backend.no_truncation()
        backend.no_padding()
        backend.encode_special_tokens = info.split_special_tokens
        self.backend = backend
        self.info = info

    @classmethod
    def from_json(cls, backend_json: str, info: TokenizerInfo) -> "SnapshotTokenizer":
        from tokenizers import Tokenizer

        return cls(Tokenizer.from_str(backend_json), info)

    def ids(self, texts: Sequence[str], special_tokens: bool = True) -> list[list[int]]:
        return [e.ids for e in self.backend.encode_batch(list(texts),
                                                         add_special_tokens=special_tokens)]

    def ids_and_offsets(self, texts: Sequence[str]
                        ) -> tuple[list[list[int]], list[list[tuple[int, int]]]]:
        encodings = self.backend.encode_batch(list(texts), add_special_tokens=False)
        return [e.ids for e in encodings], [e.offsets for e in encodings]

    def decode(self, ids: Sequence[int]) -> str:
        return self.backend.decode(list(ids), skip_special_tokens=True)


class HfTokenizer(TextTokenizer):
    """A transformers tokenizer used as it is (a slow one has no offsets)."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.info = TokenizerInfo.of(tokenizer)
        self.is_fast = bool(getattr(tokenizer, "is_fast", False))

    def ids(self, texts: Sequence[str], special_tokens: bool = True) -> list[list[int]]:
        return [list(x) for x in self.tokenizer(list(texts), add_special_tokens=special_tokens,
                                                verbose=False)["input_ids"]]

    def ids_and_offsets(self, texts: Sequence[str]
                        ) -> tuple[list[list[int]], list[list[tuple[int, int]]]]:
        if not self.is_fast:
            return super().ids_and_offsets(texts)
        enc = self.tokenizer(list(texts), add_special_tokens=False, return_offsets_mapping=True,
                             return_attention_mask=False, return_token_type_ids=False,
                             verbose=False)
        return enc["input_ids"], [[tuple(o) for o in row] for row in enc["offset_mapping"]]

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=True)


def snapshot_path(model_path: str, cache_dir: str, trust_remote_code: bool) -> Optional[Path]:
    """Where the snapshot of a local model directory's tokenizer lives; None for a hub name."""
    if not Path(model_path).is_dir():
        return None
    try:
        versions = [metadata.version("transformers"), metadata.version("tokenizers")]
    except metadata.PackageNotFoundError:
        return None
    files = weights_key(str(model_path), None, _TOKENIZER_SUFFIXES)
    key = hashlib.sha256(json.dumps([SNAPSHOT_FORMAT, files, versions, trust_remote_code])
                         .encode()).hexdigest()[:16]
    return Path(cache_dir) / "tokenizers" / f"{Path(model_path).name or 'model'}-{key}.json"


def load_tokenizer(model_path: str, revision: Optional[str] = None,
                   trust_remote_code: bool = False,
                   cache_dir: str = DEFAULT_CACHE_DIR) -> TextTokenizer:
    """The model's tokenizer: from its snapshot when there is one, else built by transformers
    (and, for a local directory whose tokenizer the backend alone runs, saved as a snapshot:
    by one process of a machine at a time, the others then read what it saved)."""
    target = snapshot_path(model_path, cache_dir, trust_remote_code)
    if target is None:
        return _built(model_path, revision, trust_remote_code, None)
    existed = target.is_file()
    if existed and (snapshot := _read_snapshot(target)) is not None:
        return snapshot
    with ExitStack() as held:
        try:
            held.enter_context(machine_lock(target, _SNAPSHOT_LOCK))
        except OSError as e:  # a cache that cannot be written: build here, save nothing
            LOG.warning("beam-e5: cannot save the tokenizer snapshot in %s (%s)",
                        target.parent, e)
            return _built(model_path, revision, trust_remote_code, None)
        if not existed and target.is_file():  # another process saved it while we waited
            if (snapshot := _read_snapshot(target)) is not None:
                return snapshot
        return _built(model_path, revision, trust_remote_code, target)


def _read_snapshot(target: Path) -> Optional[SnapshotTokenizer]:
    """The snapshot saved at ``target``; None (and a warning) where it cannot be read."""
    try:
        saved = json.loads(target.read_text(encoding="utf-8"))
        return SnapshotTokenizer.from_json(saved["backend"], TokenizerInfo(**saved["info"]))
    except Exception as e:  # noqa: BLE001 - tokenizers raises plain Exception; rebuilt
        LOG.warning("beam-e5: the tokenizer snapshot %s is unreadable (%s: %s); "
                    "building it again", target, type(e).__name__, e)
        return None


def _built(model_path: str, revision: Optional[str], trust_remote_code: bool,
           target: Optional[Path]) -> TextTokenizer:
    """The tokenizer transformers builds, saved as a snapshot at ``target`` (None: not
    saved) where its backend alone runs it and reads back the same."""
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(model_path, revision=revision,
                                       trust_remote_code=trust_remote_code)
    if target is None or not backend_alone_runs(hf):
        return HfTokenizer(hf)
    info = TokenizerInfo.of(hf)
    try:  # a Python-defined part (a custom pre-tokenizer) cannot be serialised
        backend_json = hf.backend_tokenizer.to_str()
        snapshot = SnapshotTokenizer.from_json(backend_json, info)
    except Exception as e:  # noqa: BLE001 - tokenizers raises plain Exception
        LOG.info("beam-e5: tokenizer of %s not saved (%s); transformers loads it each time",
                 model_path, e)
        return HfTokenizer(hf)
    if not same_tokens(snapshot, HfTokenizer(hf), _PROBES):
        LOG.warning("beam-e5: the saved tokenizer of %s does not tokenise as transformers does; "
                    "transformers loads it each time", model_path)
        return HfTokenizer(hf)
    try:
        write_json_atomically(target, {"info": asdict(info), "backend": backend_json})
    except OSError as e:  # a read-only cache: this worker still runs, the next one builds
        LOG.warning("beam-e5: cannot save the tokenizer snapshot in %s (%s)", target.parent, e)
    return snapshot


def same_tokens(a: TextTokenizer, b: TextTokenizer, texts: Sequence[str]) -> bool:
    """Do ``a`` and ``b`` give ``texts`` the same ids (with and without special tokens) and
    the same offsets?"""
    return (a.ids(texts) == b.ids(texts)
            and a.ids_and_offsets(texts) == b.ids_and_offsets(texts))


def backend_alone_runs(tokenizer: Any) -> bool:
    """Does ``tokenizer(texts)`` run nothing but its ``tokenizers`` backend? True for a fast
    tokenizer whose class keeps transformers' call path as it is."""
    if not getattr(tokenizer, "is_fast", False) or getattr(tokenizer, "_tokenizer", None) is None:
        return False
    from transformers.tokenization_utils_tokenizers import TokenizersBackend

    if not isinstance(tokenizer, TokenizersBackend):
        return False
    return all(getattr(type(tokenizer), name, None) is getattr(TokenizersBackend, name, None)
               for name in _CALL_PATH)

