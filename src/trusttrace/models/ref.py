"""A model as a user names it, read in one place: ``ModelRef.parse("MODEL@REVISION")``.

``parse`` reads the syntax only (``MODEL`` or ``MODEL@REVISION``; a path that exists is never split at its
``@``), so a config can check it the moment it is made. ``kind`` says what the name is, the first time it is
asked, from this machine alone (no network):

| kind | what |
|---|---|
| ``builtin`` | a built-in name (``models.assets``), e.g. ``smollm2-135m-instruct`` |
| ``gguf`` | a ``.gguf`` file |
| ``checkpoint`` | a folder with a ``config.json``: one checkpoint |
| ``series`` | a folder of checkpoint folders (``step0/``, ``step100/``, …) |
| ``hub`` | a Hugging Face Hub id, ``ORG/NAME`` |

A name that is none of these is refused with one of the messages below, wherever it was given: a path that
does not exist (``ModelNotFoundError``), a file that is not a ``.gguf`` one (``ModelError``), or a bare name
that is no built-in (``UnknownNameError``, with the nearest built-in name when one is close).
"""

from __future__ import annotations

import difflib
import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ..core.errors import ModelError, ModelNotFoundError, OptionError, UnknownNameError
from .assets import BUILTIN_MODELS
from .hub import looks_like_hub_id, looks_like_path

Kind = Literal["builtin", "gguf", "checkpoint", "series", "hub"]
KINDS_ON_DISK = ("gguf", "checkpoint", "series")
WHAT_A_MODEL_IS = ("Give a local series folder (one folder per checkpoint), a checkpoint folder, a .gguf file, a hub "
                   "id such as EleutherAI/pythia-70m, or a built-in name ({builtins}).")


def _on_disk(name: str) -> Path | None:
    """``name``'s path (``~`` expanded) when it exists; None when it names nothing here, or nothing a file system
    accepts (too long, a NUL, ``~user`` of no such user)."""
    try:
        path = Path(name).expanduser()
        return path if path.exists() else None
    except (OSError, ValueError, RuntimeError):
        return None


def split_revision(text: str, option: str = "--model") -> tuple[str, str | None]:
    """``MODEL@REVISION`` → (MODEL, REVISION); ``MODEL`` → (MODEL, None); a local path that exists is never
    split."""
    if "@" not in text or _on_disk(text) is not None:
        return text, None
    model, _, revision = text.rpartition("@")
    if not model or not revision or "/" in revision:
        raise OptionError(f"{option} {text!r} is neither an existing path nor MODEL@REVISION (e.g. "
                          "LLM360/Amber@ckpt_179).")
    return model, revision


@dataclass(frozen=True)
class ModelRef:
    """A model name (a built-in name, a path or a hub id) and the revision asked of it, if any."""

    name: str  # as given, without ``@REVISION``
    revision: str | None = None

    @classmethod
    def parse(cls, text: str, revision: str | None = None, option: str = "--model") -> ModelRef:
        """Read ``MODEL`` or ``MODEL@REVISION`` (``revision``: a ``--revision`` given beside it; the two must
        agree)."""
        name, at = split_revision(text, option)
        if at is not None and revision is not None and at != revision:
            raise OptionError(f"{option} {text!r} names revision {at!r} but --revision says {revision!r}; give one.")
        return cls(name, at if at is not None else revision)

    @property
    def pair(self) -> tuple[str, str | None]:
        """(name, revision): the key a model is loaded and cached under."""
        return self.name, self.revision

    @property
    def path(self) -> Path:
        return Path(self.name).expanduser()

    @functools.cached_property
    def kind(self) -> Kind:
        """What the name is (see the module docstring); refused, with what to give, when it is none of them."""
        return _kind_of(self.name)

    @property
    def single(self) -> bool:
        """One model rather than a series of checkpoints (a hub id may be either: its branches decide)."""
        return self.kind in ("builtin", "gguf", "checkpoint")

    def __str__(self) -> str:
        return self.name if self.revision is None else f"{self.name}@{self.revision}"


def _kind_of(name: str) -> Kind:
    if name in BUILTIN_MODELS:
        return "builtin"
    path = _on_disk(name)
    if path is not None and path.is_dir():
        return "checkpoint" if (path / "config.json").exists() else "series"
    if path is not None:
        if path.suffix == ".gguf":
            return "gguf"
        raise ModelError(f"Model {name!r} is a file but not a .gguf one. "
                         + WHAT_A_MODEL_IS.format(builtins=", ".join(BUILTIN_MODELS)))
    if looks_like_path(name) or not name.strip():
        raise ModelNotFoundError(f"Model {name!r}: no such folder or file ({_absolute(name)} does not exist). "
                                 + WHAT_A_MODEL_IS.format(builtins=", ".join(BUILTIN_MODELS)))
    if not looks_like_hub_id(name):
        close = difflib.get_close_matches(name, list(BUILTIN_MODELS), n=1, cutoff=0.6)
        what = f"a built-in name; did you mean {close[0]!r}?" if close else \
            "a built-in name, an existing path or a hub id (ORG/NAME)."
        raise UnknownNameError(f"Model {name!r} is not {what} "
                               + WHAT_A_MODEL_IS.format(builtins=", ".join(BUILTIN_MODELS)))
    return "hub"


def _absolute(name: str) -> str:
    try:
        return str(Path(name).expanduser().resolve())
    except (OSError, ValueError, RuntimeError):
        return name
