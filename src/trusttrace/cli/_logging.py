"""Where a command's log goes: the console, and the run folder's ``log.txt`` (``RunLog``)."""

from __future__ import annotations

import io
import logging
import os
from pathlib import Path

from rich.console import Console
from rich.logging import RichHandler

console = Console(stderr=True)  # messages, warnings and bars: standard output is left to tables

NOISY_LOGGERS = ("transformers", "huggingface_hub", "accelerate", "urllib3", "filelock", "choreographer", "kaleido",
                 "logistro", "ray")


class RunLog(logging.FileHandler):
    """A run folder's log. Records wait in memory until the run has written something into its folder (after
    validating its inputs), then go to the file: a command refused before that leaves nothing on disk, not
    even a log. The log is never appended to through a symbolic link, and a log that cannot be written (a
    full disk, a link) is given up with one warning rather than a traceback per line."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, encoding="utf-8", delay=True)
        self.waiting: list[logging.LogRecord] = []
        self.ready = False
        self.broken = False

    def _open(self) -> io.TextIOWrapper:
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
        return os.fdopen(os.open(self.baseFilename, flags, 0o666), "a", encoding="utf-8")

    def _folder_started(self) -> bool:
        """Whether the run wrote into its folder yet (anything but the lock and the log itself)."""
        from ..core.runlock import LOCK_NAME

        if not self.ready:
            folder = Path(self.baseFilename).parent
            try:
                self.ready = any(p.name not in (LOCK_NAME, "log.txt") for p in folder.iterdir())
            except OSError:
                return False
        return self.ready

    def emit(self, record: logging.LogRecord) -> None:
        if self.broken:
            return
        if not self._folder_started():
            self.waiting.append(record)
            return
        for early in self.waiting:
            super().emit(early)
        self.waiting.clear()
        super().emit(record)

    def handleError(self, record: logging.LogRecord) -> None:
        import sys

        if self.broken:
            return
        self.broken = True
        err = sys.exc_info()[1]
        console.print(f"[yellow]warning:[/] the run's log {self.baseFilename} cannot be written ({err}); the run "
                      "goes on without it.", highlight=False)


def setup_logging(quiet: bool, log_file: Path | None = None) -> None:
    """Log to the console (warnings only when ``quiet``) and to the run's ``log.txt``."""
    root = logging.getLogger()
    root.handlers.clear()
    root.setLevel(logging.INFO)
    console_handler = RichHandler(console=console, show_path=False, show_time=False)
    console_handler.setLevel(logging.WARNING if quiet else logging.INFO)
    root.addHandler(console_handler)
    if log_file is not None:
        file_handler = RunLog(log_file)
        file_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root.addHandler(file_handler)
    for noisy in NOISY_LOGGERS:
        logging.getLogger(noisy).setLevel(logging.ERROR)


