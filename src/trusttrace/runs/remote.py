"""Run folders at an fsspec URL (``s3://…``, ``gs://…``, ``file://…``, ``memory://…``).

Work happens in a local mirror of the run folder (under ``$TRUSTTRACE_CACHE/remote-runs/``); what the run
needs to resume (``manifest.json``, ``parts/``) is pulled from the URL first, and each finished piece is
pushed back as soon as it is written, so the URL always holds complete files: a piece is uploaded under a
temporary name and then moved where the file system supports it (object stores write whole objects anyway).
Each file travels with its record (``<name>.sha256.json``, see ``integrity``), so a resumed run checks what
it pulled as it checks local files.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
from pathlib import Path

from ..core.caches import default_cache_dir
from ..core.errors import OptionError, OutputError
from ..core.files import RECORD_SUFFIX, record_path
from ..core.runlock import LOCK_NAME

log = logging.getLogger(__name__)


def is_url(location: str | Path) -> bool:
    """Whether ``location`` names an fsspec URL rather than a local path."""
    return "://" in str(location)


class RunFolder:
    """A run folder at ``url`` with its local mirror ``local``."""

    def __init__(self, url: str, local: Path | None = None) -> None:
        try:
            import fsspec
        except ImportError as err:  # pragma: no cover - fsspec comes with huggingface_hub
            raise OptionError("A URL run folder needs fsspec: `pip install fsspec` "
                              "(and s3fs/gcsfs for s3/gs).") from err
        self.url = url.rstrip("/")
        try:
            self.fs, self.root = fsspec.core.url_to_fs(self.url)
        except (ImportError, ValueError) as err:
            raise OutputError(f"--out {url!r}: fsspec cannot open it ({err}). Install the file system's package "
                             "(s3fs for s3://, gcsfs for gs://) or use a local path.") from err
        digest = hashlib.sha256(self.url.encode()).hexdigest()[:16]
        self.local = local or default_cache_dir() / "remote-runs" / digest

    def reset(self) -> None:
        """Empty the local mirror, so that only what the URL holds counts as done (its lock stays: the run
        that resets it holds it)."""
        if not self.local.is_dir():
            return
        for entry in self.local.iterdir():
            if entry.name == LOCK_NAME:
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)

    def _remote(self, relative: str) -> str:
        return f"{self.root.rstrip('/')}/{relative}"

    def pull(self, *relatives: str, folders: tuple[str, ...] = ()) -> None:
        """Copy these files, and every file under these folders, from the URL into the mirror (when present)."""
        self.local.mkdir(parents=True, exist_ok=True)
        wanted = list(relatives)
        for folder in folders:
            base = self._remote(folder)
            if self.fs.exists(base):
                wanted += [f"{folder}/{Path(p).name}" for p in self.fs.ls(base, detail=False)]
        wanted += [f"{relative}{RECORD_SUFFIX}" for relative in relatives]  # each file's record, where it has one
        for relative in wanted:
            remote = self._remote(relative)
            if self.fs.exists(remote) and not self.fs.isdir(remote):
                target = self.local / relative
                target.parent.mkdir(parents=True, exist_ok=True)
                self.fs.get_file(remote, str(target))

    def push(self, *relatives: str) -> None:
        """Upload these files (or folders' files) of the mirror to the URL, each complete or not at all."""
        for relative in relatives:
            source = self.local / relative
            files = sorted(p for p in source.rglob("*") if p.is_file()) if source.is_dir() else \
                [source, record_path(source)]  # a file, then the record of its size and sha256
            for path in files:
                if not path.is_file():
                    continue
                rel = path.relative_to(self.local).as_posix()
                final = self._remote(rel)
                self.fs.makedirs(final.rsplit("/", 1)[0], exist_ok=True)
                tmp = f"{final}.uploading"
                self.fs.put_file(str(path), tmp)
                self.fs.mv(tmp, final)
