"""A GGUF model's de-quantised copy, kept so that only its first load pays for de-quantising.

Loading a GGUF file (the built-in ``smollm2-135m-instruct``, or any ``.gguf``) de-quantises every tensor in
Python: 20–40 s for SmolLM2-135M, where a Hugging Face folder of the same weights loads in about a second.
So the first load (``models.load_model`` or ``models.peek_model``) saves what transformers de-quantised as
a Hugging Face folder, and every later load reads that folder instead of the GGUF:

    <cache>/<sha256 of the GGUF>/              model.safetensors (float32), config.json, tokenizer files,
                                                trusttrace-gguf.json (the GGUF, the versions that built it)
    <cache>/<sha256 of the GGUF>.sha256.json   its record: every file's size and sha256 (``trusttrace.core.files``)
    <cache>/stat/<hash of the GGUF's path>.json size, mtime, ctime and inode of the GGUF → its sha256

Where it is: ``$TRUSTTRACE_GGUF_CACHE`` when set, else ``gguf/`` in trusttrace's cache (``$TRUSTTRACE_CACHE``
or ``~/.cache/trusttrace``). ``TRUSTTRACE_GGUF_CACHE=off`` (or ``0``, ``false``, ``no``) turns it off: every
load de-quantises the GGUF again, and nothing is written. Delete the folder freely; it is rebuilt on use.

- **Keyed by the bytes.** The key is the GGUF's sha256, so a changed GGUF never meets the old copy. Hashing
  is skipped only when the GGUF's size, mtime, ctime and inode all equal those recorded with the hash (any
  write to a file changes its ctime; a file moved into place has another inode).
- **Exact.** The weights are saved in float32, the dtype transformers de-quantises to, and a load in any
  dtype casts them from there as the direct load does: the tensors are bit-identical to the direct load's.
  The folder is built again when the transformers or gguf version differs from the one that built it,
  since their conversion of a GGUF may change between versions.
- **Never half.** The folder is built in a hidden sibling and renamed into place (``_io.atomic_path``): a
  killed build leaves only the hidden folder (removed an hour later), and of two processes building at once
  the second one's rename fails and its copy is dropped. Each use compares the files' names and sizes with
  the record (no hashing of hundreds of MB); a folder that differs is deleted and rebuilt, with a warning.
- **Identity.** The model is still the GGUF: ``ModelInfo.source`` is ``gguf``, ``ModelInfo.path`` the
  GGUF file, and ``ModelInfo.weights_sha256`` its sha256.
- **Size.** float32 takes 4 bytes a parameter: 540 MB for SmolLM2-135M, 28 GB for a 7B model.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core.caches import cache_folder
from ..core.files import atomic_path, read_record, sha256_file
from .files import Source, transformers_call

log = logging.getLogger(__name__)

ENV = "TRUSTTRACE_GGUF_CACHE"
META = "trusttrace-gguf.json"
FORMAT = "trusttrace-gguf-cache/1"
STALE_SECONDS = 3600  # a hidden build folder this old belongs to a killed build (a build takes a minute)
MISSING = "missing"


@dataclass(frozen=True)
class Dequantized:
    """Where a GGUF's de-quantised copy is (None when the cache is off or cannot be written), and its key."""

    folder: Path | None
    gguf_sha256: str


def cache_root() -> Path | None:
    """The cache folder (see the module docstring), None when ``$TRUSTTRACE_GGUF_CACHE`` turns it off."""
    return cache_folder(ENV, "gguf", "the de-quantised GGUF models", "de-quantise on every load")


def _versions() -> dict[str, str]:
    """The versions of the packages that convert a GGUF (a copy built under other versions is built again)."""
    found = {}
    for package in ("transformers", "gguf"):
        try:
            found[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            found[package] = "not installed"  # transformers then refuses the GGUF and names the package
    return found


# ---------------------------------------------------------------- the key


def _stamp(path: Path) -> dict[str, int]:
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "ctime_ns": st.st_ctime_ns, "inode": st.st_ino}


def gguf_sha256(gguf: Path, root: Path | None = None) -> str:
    """sha256 of the GGUF's bytes; with ``root``, remembered under ``root/stat`` while the file is unchanged."""
    if root is None:
        return sha256_file(gguf)
    resolved = str(gguf.resolve())
    memo = root / "stat" / f"{hashlib.sha256(resolved.encode()).hexdigest()[:32]}.json"
    stamp = _stamp(gguf)
    try:
        known: Any = json.loads(memo.read_text(encoding="utf-8"))
    except FileNotFoundError:
        known = None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        log.info("%s is unreadable (%s); hashing %s again", memo, err, gguf)
        known = None
    if (isinstance(known, dict) and known.get("path") == resolved and known.get("stamp") == stamp
            and isinstance(known.get("sha256"), str)):
        return str(known["sha256"])
    sha = sha256_file(gguf)
    if _stamp(gguf) == stamp:  # not rewritten while it was read
        with atomic_path(memo, record=False) as tmp:
            tmp.write_text(json.dumps({"path": resolved, "stamp": stamp, "sha256": sha}) + "\n", encoding="utf-8")
    return sha


# ---------------------------------------------------------------- checking a folder


def _sizes(entry: Any) -> dict[str, Any] | None:
    files = entry.get("files") if isinstance(entry, dict) else None
    if not isinstance(files, dict):
        return None
    return {name: sub.get("size") for name, sub in files.items() if isinstance(sub, dict)}


def why_unusable(folder: Path) -> str:
    """Why ``folder`` cannot be used as it is ('' when it can, ``MISSING`` when it is absent): its files'
    names and sizes differ from its record, the record is unreadable, or other versions built it."""
    if not folder.is_dir():
        return MISSING
    try:
        record = read_record(folder)
    except ValueError as err:
        return str(err)
    if record is None:
        return "it has no record of its files (a copy made by hand, or by an older trusttrace)"
    found = {p.relative_to(folder).as_posix(): p.stat().st_size for p in folder.rglob("*") if p.is_file()}
    recorded = [s for s in (_sizes(record), _sizes(record.get("replaces"))) if s is not None]
    if found not in recorded:
        want = recorded[0] if recorded else {}
        differ = sorted(name for name in set(found) | set(want) if found.get(name) != want.get(name))
        return f"its files differ from its record in name or size ({', '.join(differ) or 'the record is empty'})"
    try:
        meta = json.loads((folder / META).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        return f"its {META} is unreadable ({err})"
    now = _versions()
    if meta.get("format") != FORMAT or meta.get("versions") != now:
        return (f"it was built by {meta.get('format')} with {meta.get('versions')}, and this is {FORMAT} with "
                f"{now}")
    return ""


# ---------------------------------------------------------------- building a folder


def _discard(folder: Path) -> None:
    """Move ``folder`` out of the way (one rename, so no reader sees it half deleted), then delete it."""
    gone = folder.with_name(f".{folder.name}.old-{os.getpid()}")
    try:
        os.replace(folder, gone)
    except FileNotFoundError:  # another process discarded it first
        return
    shutil.rmtree(gone)


def _remove_stale_builds(folder: Path) -> None:
    for old in folder.parent.glob(f".{folder.name}.*"):
        if old.is_dir() and time.time() - old.stat().st_mtime > STALE_SECONDS:
            log.info("removing %s, left by a killed build", old)
            shutil.rmtree(old, ignore_errors=True)


def save_dequantized(gguf: Path, out: Path, *, trust_remote_code: bool = False) -> None:
    """De-quantise ``gguf`` (float32, on the CPU) and save it, with its tokenizer, as a Hugging Face folder."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    src = Source("gguf", str(gguf.parent), gguf.name)
    kwargs: dict[str, Any] = {"gguf_file": gguf.name, "trust_remote_code": trust_remote_code}
    tokenizer = transformers_call(f"Loading {gguf}'s tokenizer", src, AutoTokenizer.from_pretrained, src.path,
                                  **kwargs)
    model = transformers_call(f"De-quantising {gguf}", src, AutoModelForCausalLM.from_pretrained, src.path,
                              quantization_config=GgufConfig(dequantize=True), dtype=torch.float32, **kwargs)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def _build(gguf: Path, folder: Path, sha: str, trust_remote_code: bool) -> None:
    _remove_stale_builds(folder)
    start = time.perf_counter()
    with atomic_path(folder) as tmp:
        save_dequantized(gguf, tmp, trust_remote_code=trust_remote_code)
        meta = {"format": FORMAT, "gguf": str(gguf.resolve()), "gguf_sha256": sha, "dtype": "float32",
                "versions": _versions(), "build_seconds": round(time.perf_counter() - start, 1)}
        (tmp / META).write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
    log.info("saved the de-quantised %s in %s (%.1f s)", gguf.name, folder, time.perf_counter() - start)


def dequantized(gguf: Path, *, trust_remote_code: bool = False) -> Dequantized:
    """The de-quantised copy of ``gguf``, built on first use (see the module docstring).

    A cache that cannot be written (a read-only home, a full disk) is reported in a warning that names the
    fix, and the GGUF is then loaded directly (``folder`` None).
    """
    root = cache_root()
    if root is None:
        return Dequantized(None, gguf_sha256(gguf))
    try:
        root.mkdir(parents=True, exist_ok=True)
        sha = gguf_sha256(gguf, root)
    except OSError as err:
        log.warning("Cannot write the GGUF cache %s (%s): %s is de-quantised on every load. Set %s to a "
                    "writable folder, or to off to silence this.", root, err, gguf.name, ENV)
        return Dequantized(None, gguf_sha256(gguf))
    folder = root / sha
    why = why_unusable(folder)
    if not why:
        log.debug("using the de-quantised copy of %s in %s", gguf, folder)
        return Dequantized(folder, sha)
    if why != MISSING:
        log.warning("The de-quantised copy of %s in %s is not used: %s. Rebuilding it (once; ~30 s for "
                    "SmolLM2-135M).", gguf.name, folder, why)
        _discard(folder)
    try:
        _build(gguf, folder, sha, trust_remote_code)
    except OSError as err:
        if not why_unusable(folder):  # another process published its copy first
            log.info("using the de-quantised copy of %s another process saved in %s", gguf.name, folder)
            return Dequantized(folder, sha)
        log.warning("Cannot save the de-quantised %s in %s (%s): it is de-quantised on every load. Free space "
                    "there, set %s to a writable folder, or set it to off.", gguf.name, folder, err, ENV)
        return Dequantized(None, sha)
    return Dequantized(folder, sha)
