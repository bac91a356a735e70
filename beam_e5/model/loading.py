"""Where model files come from: a Hugging Face Hub name, a local directory, or ``gs://``.

A ``gs://`` directory is copied once per worker process into a local cache. The copy is
guarded by a thread lock and an exclusive file lock, written to a temporary folder and
renamed into place, so concurrent threads and processes copy it once and nobody ever sees a
half-copied model.

Security defaults: only ``*.safetensors`` weights are accepted (pickle-based ``.bin``/``.pt``
files can run code when loaded) unless the user opts in with ``allow_pickle_weights``.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import shutil
import tempfile
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, NamedTuple, Optional

from beam_e5.errors import ConfigError, ModelUnreachable

LOG = logging.getLogger(__name__)

_COPY_LOCK = threading.Lock()
DEFAULT_CACHE_DIR = os.path.join(
    os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "beam_e5", "models")
PICKLE_WEIGHT_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")


def is_gcs(path: str) -> bool:
    return path.startswith("gs://")


@dataclass(frozen=True)
class ModelSource:
    """A validated model reference.

    ``kind`` is ``hub`` (a name for ``from_pretrained``), ``local`` (a directory) or ``gcs``.
    """

    ref: str
    kind: str
    revision: Optional[str] = None


def classify_model_ref(ref: str, revision: Optional[str] = None) -> ModelSource:
    """Decide what kind of reference ``ref`` is, failing early on impossible ones."""
    if not ref or not ref.strip():
        raise ConfigError("--model is empty; pass a Hugging Face name such as "
                          "intfloat/e5-small-v2, a local directory or a gs:// directory")
    if is_gcs(ref):
        return ModelSource(ref.rstrip("/"), "gcs", revision)
    if os.path.isdir(ref):
        return ModelSource(os.path.abspath(ref), "local", revision)
    if ref.startswith((".", "/", "~")) or os.sep in ref.strip("/").replace("/", "", 1):
        raise ModelUnreachable(f"model directory {ref!r} does not exist; check the path, or "
                               "pass a Hugging Face name like intfloat/e5-small-v2")
    return ModelSource(ref, "hub", revision)


class GcsObject(NamedTuple):
    path: str
    size: int
    updated: float  # last update time, seconds since the epoch


def list_gcs_files(prefix: str) -> list[GcsObject]:
    """Every object under ``prefix/`` (path, size, update time) via Beam's filesystem."""
    from apache_beam.io.filesystems import BeamIOError, FileSystems

    try:
        result = FileSystems.match([prefix.rstrip("/") + "/**"])[0]
    except BeamIOError as e:
        raise ModelUnreachable(f"cannot list {prefix}/ ({e}); check the bucket name and that "
                               "your Application Default Credentials (gcloud auth "
                               "application-default login, or the worker service account) "
                               "may read it") from e
    return [GcsObject(m.path, m.size_in_bytes, m.last_updated_in_seconds)
            for m in result.metadata_list]


def check_weight_files(names: list[str], where: str, allow_pickle_weights: bool) -> None:
    """Refuse directories whose only weights are pickle files, unless the user opted in."""
    has_safetensors = any(n.endswith(".safetensors") for n in names)
    pickled = [n for n in names if n.endswith(PICKLE_WEIGHT_SUFFIXES)]
    if has_safetensors or allow_pickle_weights:
        return
    if pickled:
        raise ConfigError(
            f"{where} holds only pickle weights ({', '.join(sorted(pickled)[:3])}), which can run "
            "arbitrary code when loaded. Convert them to safetensors (e.g. "
            "`model.save_pretrained(dir, safe_serialization=True)`) or, if you trust the "
            "source, pass --allow-pickle-weights.")
    raise ConfigError(f"{where} has no model weights (*.safetensors); is it a model directory?")


def _cache_dir_for(ref: str, cache_root: str) -> Path:
    digest = hashlib.sha256(ref.encode("utf-8")).hexdigest()[:16]
    return Path(cache_root) / f"{ref.rstrip('/').split('/')[-1]}-{digest}"


def stage_gcs_model(ref: str, cache_root: str = DEFAULT_CACHE_DIR) -> str:
    """Copy a ``gs://`` model directory to local disk once per machine; return the path.

    Safe under threads (``_COPY_LOCK``) and processes (``fcntl`` lock on a sibling file).
    A complete copy is marked by ``.complete``; anything else is discarded and redone.
    """
    from apache_beam.io.filesystems import FileSystems

    target = _cache_dir_for(ref, cache_root)
    marker = target / ".complete"
    if marker.exists():
        return str(target)
    with machine_lock(target, _COPY_LOCK):
        if marker.exists():
            return str(target)
        files = list_gcs_files(ref)
        if not files:
            raise ConfigError(f"no objects under {ref}/; check the path and that the "
                              "worker's service account can list the bucket")
        tmp = Path(tempfile.mkdtemp(prefix=".staging-", dir=str(target.parent)))
        base = ref.rstrip("/") + "/"
        for path, _size, _updated in files:
            rel = path[len(base):]
            dest = tmp / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            with FileSystems.open(path) as src, open(dest, "wb") as out:
                shutil.copyfileobj(src, out, length=8 << 20)
        (tmp / ".complete").write_text(ref)
        if target.exists():
            shutil.rmtree(target)
        os.rename(tmp, target)
        LOG.info("beam-e5: staged %s (%d files) to %s", ref, len(files), target)
    return str(target)


@contextmanager
def machine_lock(target: Path, thread_lock: threading.Lock) -> Iterator[None]:
    """Held by one thread of one process on this machine at a time, for building ``target``
    once: ``thread_lock`` among this process's threads, an ``fcntl`` lock on the sibling file
    ``<target>.lock`` among processes (workers of one machine share its cache). Creates
    ``target``'s folder; raises ``OSError`` where that folder cannot be written."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with thread_lock, open(str(target) + ".lock", "w") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)


def read_model_file_text(source: ModelSource, rel: str) -> Optional[str]:
    """Text of a small file in the model directory, or None if absent.

    For hub names only the local Hugging Face cache is consulted: resolving a profile never
    touches the network.
    """
    if source.kind == "local":
        path = os.path.join(source.ref, rel)
        return Path(path).read_text(encoding="utf-8") if os.path.isfile(path) else None
    if source.kind == "gcs":
        from apache_beam.io.filesystems import FileSystems

        path = f"{source.ref}/{rel}"
        if not FileSystems.exists(path):
            return None
        with FileSystems.open(path) as f:
            return f.read().decode("utf-8")
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - transformers always brings huggingface_hub
        return None
    cached = try_to_load_from_cache(source.ref, rel, revision=source.revision)
    if isinstance(cached, str) and os.path.isfile(cached):
        return Path(cached).read_text(encoding="utf-8")
    return None


def check_safetensors_headers(paths: list[Path]) -> None:
    """Open each safetensors file's header (cheap: no tensor data is read)."""
    from safetensors import safe_open

    for path in paths:
        try:
            with safe_open(str(path), framework="numpy") as f:  # the header only: no torch
                f.keys()
        except Exception as e:  # safetensors raises its own error types
            raise ConfigError(f"{path} is not a valid safetensors file ({e}); the model "
                              "directory is corrupt or half-copied: download it again") from e


TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "sentencepiece.bpe.model",
                   "tokenizer.model", "spiece.model", "spm.model")


def _json_file(source: ModelSource, rel: str) -> Any:
    text = read_model_file_text(source, rel)
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError as e:
        raise ConfigError(f"{source.ref}/{rel} is not valid JSON ({e}); the model directory is "
                          "corrupt or half-copied: copy it again") from e


def tokenizer_vocab_size(source: ModelSource, names: list[str]) -> Optional[int]:
    """Highest token id + 1 that the tokenizer files can produce (None if unknown, e.g. a
    sentencepiece model)."""
    ids: list[int] = []
    if "tokenizer.json" in names:
        tok = _json_file(source, "tokenizer.json") or {}
        vocab = (tok.get("model") or {}).get("vocab")
        if isinstance(vocab, dict):
            ids += [v for v in vocab.values() if isinstance(v, int)]
        elif isinstance(vocab, list):
            ids.append(len(vocab) - 1)
        ids += [t["id"] for t in tok.get("added_tokens") or [] if isinstance(t.get("id"), int)]
    elif "vocab.txt" in names:
        text = read_model_file_text(source, "vocab.txt") or ""
        ids.append(len(text.splitlines()) - 1)
    elif "vocab.json" in names:
        vocab = _json_file(source, "vocab.json") or {}
        ids += [v for v in vocab.values() if isinstance(v, int)]
    if "added_tokens.json" in names:
        ids += [v for v in (_json_file(source, "added_tokens.json") or {}).values()
                if isinstance(v, int)]
    return max(ids) + 1 if ids else None


def check_tokenizer(source: ModelSource, names: list[str]) -> None:
    """The tokenizer is there and fits the model: a half-copied directory (weights without
    tokenizer files) would load a fallback tokenizer and embed every word as [UNK]."""
    where = source.ref
    if not any(n in names for n in TOKENIZER_FILES):
        raise ConfigError(
            f"{where} has no tokenizer files (one of {', '.join(TOKENIZER_FILES[:3])}, ...): "
            "is it half-copied? Copy the whole model directory (save_pretrained() of both the "
            "model and its tokenizer)")
    size = tokenizer_vocab_size(source, names)
    config = _json_file(source, "config.json") or {}
    table = config.get("vocab_size")
    if size is not None and isinstance(table, int) and size > table:
        raise ConfigError(
            f"the tokenizer in {where} has token ids up to {size - 1}, but the model's "
            f"embedding table has {table} rows (config.json vocab_size): the tokenizer files "
            "belong to another model. Copy the model directory again, tokenizer included")


def preflight_model_source(source: ModelSource, allow_pickle_weights: bool) -> None:
    """Checks that can run before the pipeline: the directory exists, is readable and has
    safe, well-formed weights."""
    if source.kind == "local":
        paths = list(Path(source.ref).rglob("*"))
        unreadable = [p for p in paths if p.is_file() and not os.access(p, os.R_OK)]
        if unreadable:
            raise ConfigError(f"cannot read {unreadable[0]} (permission denied); fix the file "
                              "permissions or run as a user that can read the model")
        names = [str(p.relative_to(source.ref)) for p in paths]
        if "config.json" not in names:
            raise ConfigError(f"{source.ref} has no config.json; point --model at a directory "
                              "written by save_pretrained() or downloaded from the Hub")
        check_weight_files(names, source.ref, allow_pickle_weights)
        check_safetensors_headers([p for p in paths if p.suffix == ".safetensors"])
        check_tokenizer(source, names)
    elif source.kind == "gcs":
        files = list_gcs_files(source.ref)
        if not files:
            raise ConfigError(f"no objects under {source.ref}/; check the path and that your "
                              "Application Default Credentials can read the bucket")
        base = source.ref + "/"
        names = [f.path[len(base):] for f in files]
        if "config.json" not in names:
            raise ConfigError(f"{source.ref}/ has no config.json; upload the whole directory "
                              "written by save_pretrained()")
        check_weight_files(names, source.ref, allow_pickle_weights)
        check_tokenizer(source, names)


KEY_SUFFIXES = (".safetensors", ".bin", ".json", ".txt", ".model")


def weights_key(model_path: str, commit_hash: Optional[str],
                suffixes: tuple[str, ...] = KEY_SUFFIXES) -> str:
    """A cheap identity of the weights this worker loads: the names, sizes and mtimes of the
    directory's files that end in one of ``suffixes``.

    A hub model (no local directory) is identified by its resolved commit instead.
    """
    digest = hashlib.sha256()
    path = Path(model_path)
    if path.is_dir():
        for f in sorted(path.rglob("*")):
            if f.is_file() and f.suffix in suffixes:
                st = f.stat()
                digest.update(f"{f.relative_to(path)}:{st.st_size}:{st.st_mtime_ns}\n".encode())
        digest.update(str(path.resolve()).encode())
    else:
        digest.update(f"hub:{model_path}@{commit_hash or 'unknown'}".encode())
    return digest.hexdigest()[:24]


def write_json_atomically(path: Path, content: Any, prefix: str = ".writing-") -> None:
    """``content`` as JSON at ``path``, through a temporary file beside it renamed into place
    (readable by every user: a cache shared by workers of another user). Raises OSError (the
    temporary file removed) where the folder cannot be made or written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=prefix, dir=str(path.parent))
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(content, f)
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide it from workers of another user
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def local_model_path(source: ModelSource, cache_root: str = DEFAULT_CACHE_DIR) -> str:
    """A path or hub name that ``from_pretrained`` can open on this worker."""
    if source.kind == "gcs":
        return stage_gcs_model(source.ref, cache_root)
    return source.ref


# What a worker leaves on the Hub when it fetches a hub model's configuration and tokenizer:
# weights in every format, exported graphs, archives, and every subfolder (a worker reads the
# top level; sentence-transformers' module folders are read where the job is launched).
# transformers fetches the weights itself, only where torch runs or a graph is built.
HUB_SKIPPED_FILES = ("*/*", "*.safetensors", "*.bin", "*.pt", "*.pth", "*.ckpt", "*.h5",
                     "*.msgpack", "*.onnx", "*.onnx_data", "*.onnx.data", "*.gguf", "*.ot",
                     "*.tflite", "*.pb", "*.npz", "*.xml", "*.zip", "*.tar", "*.gz")


def hub_files_dir(repo_id: str, revision: Optional[str] = None) -> Optional[str]:
    """A local folder of a hub model's files but its weights (configuration, tokenizer files
    of any kind, remote code) at the commit that ``revision`` names (the branch's newest
    where online, the cached one offline, as transformers resolves it), fetched by
    ``huggingface_hub`` into its cache where missing: the Hub cache's snapshot folder, named
    by the commit. Read from there, the config and the tokenizer load without importing
    transformers (or torch, which it imports). None where it cannot be had (not cached
    offline, a network error): transformers then resolves the name as before."""
    try:
        from huggingface_hub import snapshot_download

        folder = Path(snapshot_download(repo_id, revision=revision,
                                        ignore_patterns=list(HUB_SKIPPED_FILES)))
    except Exception as e:  # noqa: BLE001 - huggingface_hub's errors are many; fall back
        LOG.info("beam-e5: %s's files not fetched with huggingface_hub (%s: %s); "
                 "transformers loads them", repo_id, type(e).__name__, e)
        return None
    return str(folder) if (folder / "config.json").is_file() else None


def hub_commit(files_dir: str) -> Optional[str]:
    """The commit of a Hub cache snapshot folder (its name: 40 hex digits); None otherwise."""
    name = Path(files_dir).name
    return name if len(name) == 40 and all(c in "0123456789abcdef" for c in name) else None


def cached_hub_commit(repo_id: str, revision: Optional[str] = None) -> Optional[str]:
    """The commit whose ``config.json`` the Hub cache holds for ``revision`` (what
    transformers just loaded); None where it holds none."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - transformers always brings huggingface_hub
        return None
    if Path(repo_id).is_dir():
        return None
    try:
        cached = try_to_load_from_cache(repo_id, "config.json", revision=revision)
    except Exception:  # noqa: BLE001 - not a repo id (a path): no commit
        return None
    return hub_commit(str(Path(cached).parent)) if isinstance(cached, str) else None
