"""The one place trusttrace talks to the Hugging Face Hub: calls whose failures say what to do, checkpoint
snapshots and their deletion (trusttrace's own cache folders are ``core.caches``)."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from ..core.errors import ModelError, ModelNotFoundError, UnknownNameError

T = TypeVar("T")

# Weights and what loading needs; pickle weights (*.bin) only when asked for.
SNAPSHOT_PATTERNS = ("*.json", "*.safetensors", "*.model", "*.txt", "*.tiktoken")


HUB_ID = re.compile(r"[\w.-]+/[\w.-]+")  # ORG/NAME


def looks_like_hub_id(ref: str) -> bool:
    """Whether ``ref`` has the form of a hub id (ORG/NAME); says nothing of whether it exists."""
    return HUB_ID.fullmatch(ref) is not None


def looks_like_path(ref: str) -> bool:
    """Whether ``ref`` reads as a filesystem path rather than a hub id (ORG/NAME) or a built-in name.

    A path: it starts with ``./``, ``../``, ``/`` or ``~``, has more than one ``/`` (a hub id has one), or its
    first part exists here (``runs/smol`` beside a ``runs/`` folder).
    """
    if ref.startswith(("./", "../", "/", "~", ".\\")) or ref in (".", ".."):
        return True
    if ref.count("/") > 1 or "\\" in ref:
        return True
    head = ref.split("/", 1)[0]
    return "/" in ref and Path(head).exists()


def hub_call(what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Call a huggingface_hub function; turn its failures into errors that say what to do.

    A missing revision becomes an UnknownNameError, a gated repository a ModelError, a missing one a
    ModelNotFoundError (all ValueErrors); anything else (no network, a proxy, HTTP
    errors of whichever HTTP client huggingface_hub uses) becomes a ConnectionError.
    """
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError, RevisionNotFoundError

    try:
        return fn(*args, **kwargs)
    except RevisionNotFoundError as err:
        raise UnknownNameError(f"{what}: the revision does not exist. `trusttrace checkpoints REPO` lists the "
                         "revisions trusttrace knows of.") from err
    except GatedRepoError as err:
        raise ModelError(f"{what}: the repository is gated; accept its terms on the hub and log in "
                         "(`hf auth login`).") from err
    except RepositoryNotFoundError as err:
        raise ModelNotFoundError(f"{what}: no such repository on the hub (or it is private: log in with "
                         "`hf auth login`). Check the model id.") from err
    except Exception as err:  # network and HTTP errors; their classes depend on the installed HTTP client
        raise ConnectionError(f"{what} failed ({type(err).__name__}: {err}). Check the network, or use a local "
                              "folder or files already in the Hugging Face cache (HF_HUB_OFFLINE=1).") from err


def commit_of(folder: str | Path) -> str | None:
    """The commit a ``snapshot_download`` folder holds (its name), or None for any other folder."""
    name = Path(folder).name
    return name if re.fullmatch(r"[0-9a-f]{40}", name) else None


def fetch_checkpoint(
    repo_id: str, revision: str | None = None, *, cache_dir: str | Path | None = None, allow_pickle: bool = False,
    weights: bool = True,
) -> tuple[Path, str | None]:
    """Download one revision of a hub model (weights, config, tokenizer) and return (folder, commit).

    Only safetensors weights are fetched unless ``allow_pickle``; none without ``weights`` (the config and
    tokenizer, to check inputs before a run).
    """
    from huggingface_hub import snapshot_download

    patterns = [*SNAPSHOT_PATTERNS, "*.bin"] if allow_pickle else list(SNAPSHOT_PATTERNS)
    if not weights:
        patterns = [p for p in patterns if p not in ("*.safetensors", "*.bin")]
    folder = Path(hub_call(f"Downloading {repo_id}@{revision or 'main'}", snapshot_download, repo_id,
                           revision=revision, cache_dir=cache_dir, allow_patterns=patterns))
    return folder, commit_of(folder)


def is_cached(repo_id: str, revision: str | None, cache_dir: str | Path | None = None) -> bool:
    """Whether the Hugging Face cache already holds this revision (no network)."""
    from huggingface_hub import snapshot_download

    try:
        snapshot_download(repo_id, revision=revision, cache_dir=cache_dir, local_files_only=True)
    except OSError:  # not in the cache yet (LocalEntryNotFoundError is an OSError)
        return False
    return True


def delete_revision(commit: str, cache_dir: str | Path | None = None) -> str:
    """Delete one downloaded revision from the Hugging Face cache; return the size freed, as text."""
    from huggingface_hub import scan_cache_dir

    strategy = scan_cache_dir(cache_dir).delete_revisions(commit)
    strategy.execute()
    return str(strategy.expected_freed_size_str)
