"""The bad-input walk: every mistake a hostile-but-fair new user makes, run through the CLI and classified.

Each ``Case`` builds its inputs in a scratch folder, runs one command with typer's ``CliRunner`` and says
what must follow: ``refuse`` (a message and a non-zero exit, the output folder left as it was) or ``works``
(exit 0, and a check of what was written). An outcome is one of

    ok         the case behaved as promised
    traceback  an exception other than the CLI's own exit reached the user (or "internal error" was printed)
    silent     exit 0 where a refusal was due, or a run that "worked" wrote wrong, empty or stale output
    corrupt    a refusal that changed the folder, or a rerun whose table differs from an intact run's
    refused    a case that should work was refused

``docs/errors.md`` lists the cases with their exit code, a fragment of their message and what is left on
disk; ``tests/user_errors/test_errors.py`` checks both agree. Run this file to print the counts
(``python tests/user_errors/walk.py``): it also runs against an older checkout (``PYTHONPATH=<checkout>/src``),
which is how the before/after counts in issue 14's note were taken.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import sys
import tempfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from typer.testing import CliRunner

from trusttrace.core.files import write_json_atomic
from trusttrace.testing import make_tokenizer, save_tiny, write_planted_data_dir

FAST = ["--controls", "none", "--analyses", "probe", "--limit", "40", "-q"]


@dataclass
class Ctx:
    """The shared inputs: a tiny series, models of other widths and shapes, data, a finished run, vectors."""

    root: Path
    series: Path = field(init=False)
    one: Path = field(init=False)  # a single checkpoint folder (32 wide)
    wide: Path = field(init=False)  # a 64-wide model
    gpt2: Path = field(init=False)
    data: Path = field(init=False)
    base: Path = field(init=False)  # a finished trace of the series (toxicity)
    vec32: Path = field(init=False)
    vec64: Path = field(init=False)

    def build(self, invoke: Callable[[list[str]], Any]) -> Ctx:
        self.series = self.root / "series"
        for i, step in enumerate((0, 10, 100)):
            save_tiny(self.series / f"step{step}", "llama", seed=i)
        self.one = self.series / "step100"
        self.wide = save_tiny(self.root / "wide", "llama", seed=5, hidden=64)
        self.gpt2 = save_tiny(self.root / "gpt2", "gpt2", seed=6)
        self.data = write_planted_data_dir(self.root / "data", rows=120)
        self.base = self.root / "base"
        done = invoke(["trace", "--model", str(self.series), "--out", str(self.base), "--dimensions", "toxicity",
                       "--data-dir", str(self.data), *FAST])
        assert done.exit_code == 0, done.output
        done = invoke(["vectors", "build", str(self.base), "--dimension", "toxicity"])
        assert done.exit_code == 0, done.output
        self.vec32 = self.base / "vectors" / "step100" / "toxicity.safetensors"
        wide_run = self.root / "wide-run"
        done = invoke(["trace", "--model", str(self.wide), "--out", str(wide_run), "--dimensions", "toxicity",
                       "--data-dir", str(self.data), *FAST])
        assert done.exit_code == 0, done.output
        done = invoke(["vectors", "build", str(wide_run), "--dimension", "toxicity"])
        assert done.exit_code == 0, done.output
        self.vec64 = next((wide_run / "vectors").glob("*/toxicity.safetensors"))
        return self


class Skip(Exception):
    """A case this machine cannot set up (no tmpfs mount, no setpriv): reported as skipped, never as ok."""


HOLDER = ("import sys, time\nfrom trusttrace.core.runlock import hold\nwith hold(sys.argv[1], 'trace'):\n"
          "    print('held', flush=True)\n    time.sleep(120)\n")


@dataclass
class Scratch:
    """One case's own folder, and the output path its command writes to."""

    dir: Path
    ctx: Ctx
    cleanups: list[Callable[[], None]] = field(default_factory=list)  # run after the command, whatever happened

    def holder(self, folder: Path) -> int:
        """Another trusttrace process holding ``folder`` until the case ends; its pid."""
        import subprocess

        proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder)], stdout=subprocess.PIPE, text=True)
        self.cleanups.append(lambda: (proc.kill(), proc.wait()))
        if proc.stdout is None or proc.stdout.readline().strip() != "held":  # a trusttrace without runlock
            raise Skip("no other process could hold the folder (this trusttrace has no trusttrace.core.runlock)")
        return proc.pid

    def small_disk(self, name: str, kilobytes: int) -> Path:
        """A tmpfs of ``kilobytes`` mounted at ``name`` for the case (a full disk); Skip where mounting is not
        permitted (not root, or a container without CAP_SYS_ADMIN)."""
        import subprocess

        where = self.dir / name
        where.mkdir(parents=True)
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={kilobytes}k", "tmpfs", str(where)],
                              capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise Skip(f"cannot mount a small tmpfs here ({done.stderr.strip()[:120]})")
        self.cleanups.append(lambda: subprocess.run(["umount", "-l", str(where)], check=False))
        return where

    @property
    def out(self) -> Path:
        return self.dir / "out"

    def file(self, name: str, content: str | bytes) -> Path:
        path = self.dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
        return path

    def csv(self, name: str, rows: list[tuple[Any, Any]] | None = None, text: str | None = None) -> Path:
        if text is None:
            frame = pd.DataFrame(rows or [], columns=["statement", "label"])
            text = frame.to_csv(index=False)
        return self.file(name, text)

    def copy_base(self) -> Path:
        shutil.copytree(self.ctx.base, self.out)
        return self.out


def noise(n: int) -> bytes:
    """``n`` random-looking bytes, the same in every run (so that each message is the same too)."""
    return random.Random(n).randbytes(n)


def planted(n: int = 40, one_class: bool = False) -> list[tuple[str, int]]:
    rows = []
    for i in range(n):
        y = 1 if one_class else i % 2
        rows.append((f"w{i % 37} w{(i * 7) % 37} {'good' if y else 'bad'}", y))
    return rows


Argv = Callable[[Scratch], list[str]]
Check = Callable[[Scratch, str], str | None]  # (scratch, output) -> a problem, or None


@dataclass(frozen=True)
class Case:
    id: str
    area: str
    mistake: str
    argv: Argv
    expect: str = "refuse"  # refuse | works
    # refuse: nothing (no --out created) | unchanged (the folder as it was) | resumable (what was done is intact,
    # and `verify` says what a rerun still has to do: a full disk, a refused permission)
    disk: str = "nothing"
    check: Check | None = None  # what must hold afterwards (works, and refuse where given)
    prefix: tuple[str, ...] = ()  # run as a process, under this prefix (e.g. setpriv): "" runs it in-process
    process: bool = False  # run `python -m trusttrace` in a process (the real entry point, signals, stdout)


CASES: list[Case] = []


def case(id: str, area: str, mistake: str, expect: str = "refuse", disk: str = "nothing",
         check: Check | None = None, prefix: tuple[str, ...] = (), process: bool = False) -> Callable[[Argv], Argv]:
    def register(argv: Argv) -> Argv:
        CASES.append(Case(id, area, mistake, argv, expect, disk, check, prefix, process or bool(prefix)))
        return argv

    return register


def trace_file(s: Scratch, path: Path | str, *extra: str) -> list[str]:
    return ["trace", "--model", str(s.ctx.one), "--out", str(s.out), "--dimensions", str(path),
            "--data-dir", str(s.ctx.data), *FAST, *extra]


def trace_series(s: Scratch, *extra: str, out: Path | None = None) -> list[str]:
    return ["trace", "--model", str(s.ctx.series), "--out", str(out or s.out), "--dimensions", "toxicity",
            "--data-dir", str(s.ctx.data), *FAST, *extra]


# ---------------------------------------------------------------- data files


@case("data-missing", "data", "a dataset file that does not exist")
def _(s): return trace_file(s, s.dir / "nope" / "mine.csv")
@case("data-empty", "data", "an empty file (0 bytes)")
def _(s): return trace_file(s, s.file("d/empty.csv", ""))
@case("data-header-only", "data", "a header and no rows")
def _(s): return trace_file(s, s.csv("d/header.csv", text="statement,label\n"))
@case("data-no-statement", "data", "no statement column")
def _(s): return trace_file(s, s.csv("d/cols.csv", text="text,label\n" + "a good,1\nb bad,0\n" * 10))
@case("data-no-label", "data", "no label column")
def _(s): return trace_file(s, s.csv("d/nolabel.csv", text="statement,y\n" + "a good,1\nb bad,0\n" * 10))
@case("data-label-text", "data", "labels written as yes/no")
def _(s): return trace_file(s, s.csv("d/yesno.csv", text="statement,label\n" + "a good,yes\nb bad,no\n" * 10))
@case("data-label-2", "data", "a label 2")
def _(s): return trace_file(s, s.csv("d/two.csv", [*planted(30), ("w1 w2 good", 2)]))
@case("data-label-blank", "data", "a blank label")
def _(s): return trace_file(s, s.csv("d/blank.csv", text="statement,label\n" + "a good,1\nb bad,0\n" * 10 + "c,\n"))
@case("data-statement-blank", "data", "a blank statement")
def _(s): return trace_file(s, s.csv("d/nostat.csv", text="statement,label\n" + "a good,1\nb bad,0\n" * 10 + ",1\n"))
@case("data-one-class", "data", "every label the same")
def _(s): return trace_file(s, s.csv("d/one.csv", planted(40, one_class=True)))
@case("data-too-few", "data", "fewer rows than probes need")
def _(s): return trace_file(s, s.csv("d/few.csv", planted(4)))
@case("data-binary", "data", "random bytes named .csv")
def _(s): return trace_file(s, s.file("d/bin.csv", bytes(range(256)) * 40))
@case("data-utf16", "data", "UTF-16 with a BOM", expect="works", check=lambda s, o: _has_results(s))
def _(s): return trace_file(s, s.file("d/u16.csv", pd.DataFrame(planted(), columns=["statement", "label"])
                                      .to_csv(index=False).encode("utf-16")))
@case("data-latin1", "data", "Latin-1 bytes that are not UTF-8")
def _(s): return trace_file(s, s.file("d/latin.csv", ("statement,label\n" + "caf\xe9 good,1\nna\xefve bad,0\n" * 10)
                                      .encode("latin-1")))
@case("data-utf8-bom", "data", "UTF-8 with a BOM", expect="works", check=lambda s, o: _has_results(s))
def _(s): return trace_file(s, s.file("d/bom.csv", "\ufeff" + pd.DataFrame(planted(), columns=["statement", "label"])
                                      .to_csv(index=False)))
@case("data-jsonl-broken", "data", "a JSONL line that is not JSON")
def _(s): return trace_file(s, s.file("d/bad.jsonl", "".join(json.dumps({"statement": t, "label": y}) + "\n"
                                                             for t, y in planted(20)) + "{oops\n"))
@case("data-jsonl-list", "data", "JSONL lines that are lists, not objects")
def _(s): return trace_file(s, s.file("d/list.jsonl", "".join(json.dumps([t, y]) + "\n" for t, y in planted(20))))
@case("data-suffix", "data", "an unsupported suffix (.txt)")
def _(s): return trace_file(s, s.file("d/rows.txt", "a good,1\n"))
@case("data-dir-as-file", "data", "a folder given as a dataset file")
def _(s):
    (s.dir / "d" / "folder.csv").mkdir(parents=True)
    return trace_file(s, s.dir / "d" / "folder.csv")
@case("data-stem-collision", "data", "two files with the same name in different folders")
def _(s):
    a, b = s.csv("a/data.csv", planted()), s.csv("b/data.csv", planted())
    return trace_file(s, f"{a},{b}")
@case("data-builtin-collision", "data", "a file named like a built-in dimension")
def _(s): return trace_file(s, f"toxicity,{s.csv('x/toxicity.csv', planted())}")
@case("data-unknown-name", "data", "an unknown dimension name")
def _(s): return trace_file(s, "honesty")
@case("data-empty-list", "data", "--dimensions with nothing in it")
def _(s): return trace_file(s, ",")
@case("data-quotes", "data", "an unbalanced quote")
def _(s): return trace_file(s, s.csv("d/quote.csv", text='statement,label\n"a good,1\nb bad,0\n' + "c good,1\n" * 12))
@case("data-float-labels", "data", "labels written 0.0/1.0", expect="works", check=lambda s, o: _has_results(s))
def _(s): return trace_file(s, s.csv("d/float.csv", [(t, float(y)) for t, y in planted()]))
@case("data-nan-statement", "data", "the text NaN as a statement", expect="works", check=lambda s, o: _has_results(s))
def _(s): return trace_file(s, s.csv("d/nan.csv", [*planted(), ("NaN", 1), ("null", 0)]))
@case("data-huge-statement", "data", "a 1 MB statement")
def _(s): return trace_file(s, s.csv("d/huge.csv", [(" ".join(["w1"] * 250_000) + " good", 1), *planted()]))
@case("data-long-statement", "data", "a statement longer than the model's 128 positions")
def _(s): return trace_file(s, s.csv("d/long.csv", [(" ".join(["w2"] * 300) + " good", 1), *planted()]))
@case("data-long-truncated", "data", "the same with --max-tokens 64", expect="works",
      check=lambda s, o: _has_results(s) or (None if "truncated" in o.lower() else "no truncation warning"))
def _(s): return trace_file(s, s.csv("d/long.csv", [(" ".join(["w2"] * 300) + " good", 1), *planted()]),
                            "--max-tokens", "64")
@case("data-long-gpt2", "data", "a long statement on a GPT-2-shaped model (learned positions)")
def _(s):
    argv = trace_file(s, s.csv("d/long.csv", [(" ".join(["w2"] * 300) + " good", 1), *planted()]))
    argv[argv.index("--model") + 1] = str(s.ctx.gpt2)
    return argv
@case("data-max-tokens-zero", "data", "--max-tokens 0")
def _(s): return trace_file(s, "toxicity", "--max-tokens", "0")
@case("data-dir-missing", "data", "--data-dir that does not exist")
def _(s):
    argv = trace_file(s, "toxicity")
    argv[argv.index("--data-dir") + 1] = str(s.dir / "no-such-data")
    return argv
@case("data-limit-small", "data", "--limit below 10")
def _(s): return [*trace_file(s, "toxicity"), "--limit", "5"]
@case("data-limit-negative", "data", "--limit -1")
def _(s): return [*trace_file(s, "toxicity"), "--limit", "-1"]
@case("data-group-blank", "data", "a blank group id")
def _(s): return trace_file(s, s.csv("d/grp.csv", text="statement,label,group\n" +
                                     "".join(f"w{i} good,1,g{i}\nw{i} bad,0,\n" for i in range(10))))
@case("data-utf8-garbage-jsonl", "data", "a .jsonl of random bytes")
def _(s): return trace_file(s, s.file("d/rand.jsonl", noise(4000)))


def _has_results(s: Scratch) -> str | None:
    path = s.out / "results.csv"
    if not path.is_file():
        return "no results.csv"
    frame = pd.read_csv(path)
    return None if len(frame) else "an empty results table"


# ---------------------------------------------------------------- models and checkpoints


def trace_model(s: Scratch, model: str, *extra: str) -> list[str]:
    return ["trace", "--model", model, "--out", str(s.out), "--dimensions", "toxicity", "--data-dir",
            str(s.ctx.data), *FAST, *extra]


@case("model-missing-path", "models", "a mistyped local path (./…)")
def _(s): return trace_model(s, str(s.dir / "no-such-model"))
@case("model-missing-relative", "models", "a relative path with several parts that does not exist")
def _(s): return trace_model(s, "runs/models/mine")
@case("model-no-weights", "models", "a model folder with a config but no weights")
def _(s):
    folder = s.dir / "noweights"
    shutil.copytree(s.ctx.one, folder)
    for f in folder.glob("*.safetensors"):
        f.unlink()
    return trace_model(s, str(folder))
@case("model-pickle-only", "models", "a folder holding only pickle weights (pytorch_model.bin)")
def _(s):
    folder = s.dir / "pickle"
    shutil.copytree(s.ctx.one, folder)
    (folder / "model.safetensors").rename(folder / "pytorch_model.bin")
    return trace_model(s, str(folder))
@case("model-empty-folder", "models", "an empty folder")
def _(s):
    (s.dir / "empty").mkdir()
    return trace_model(s, str(s.dir / "empty"))
@case("model-text-file", "models", "a text file given as the model")
def _(s): return trace_model(s, str(s.file("notes.txt", "hello")))
@case("model-bad-gguf", "models", "random bytes named .gguf")
def _(s): return trace_model(s, str(s.file("m.gguf", noise(2048))))
@case("model-bad-config", "models", "a config.json that is not JSON")
def _(s):
    folder = s.dir / "badcfg"
    shutil.copytree(s.ctx.one, folder)
    (folder / "config.json").write_text("{not json")
    return trace_model(s, str(folder))
@case("model-truncated-weights", "models", "truncated model.safetensors")
def _(s):
    folder = s.dir / "trunc"
    shutil.copytree(s.ctx.one, folder)
    w = folder / "model.safetensors"
    w.write_bytes(w.read_bytes()[:5000])
    return trace_model(s, str(folder))
@case("model-series-empty", "models", "a series folder with no checkpoints in it")
def _(s):
    (s.dir / "series").mkdir()
    (s.dir / "series" / "README").write_text("nothing here")
    return trace_model(s, str(s.dir / "series"))
@case("model-remote-code", "models", "a model whose config needs remote code")
def _(s):
    folder = s.dir / "remote"
    shutil.copytree(s.ctx.one, folder)
    cfg = json.loads((folder / "config.json").read_text())
    cfg["auto_map"] = {"AutoConfig": "configuration_x.XConfig", "AutoModelForCausalLM": "modeling_x.XForCausalLM"}
    cfg["model_type"] = "x-custom"
    (folder / "config.json").write_text(json.dumps(cfg))
    return trace_model(s, str(folder))
@case("model-bad-blocks", "models", "--blocks naming no module")
def _(s): return trace_model(s, str(s.ctx.one), "--blocks", "model.nowhere")
@case("model-builtin-typo", "models", "a misspelt built-in name")
def _(s): return trace_model(s, "smollm2-135m")
@case("model-device-cuda", "models", "--device cuda on a machine without one")
def _(s): return trace_model(s, str(s.ctx.one), "--device", "cuda:7")
@case("model-rev-slash", "models", "MODEL@REV with an empty revision")
def _(s): return trace_model(s, "org/name@")
@case("model-revisions-local", "models", "--revisions naming checkpoints of a local series", expect="works",
      check=lambda s, o: _revisions_are(s, {"step0", "step100"}))
def _(s): return trace_series(s, "--revisions", "step0,step100")
@case("model-revisions-unknown", "models", "--revisions naming a checkpoint the series lacks")
def _(s): return trace_series(s, "--revisions", "step0,step999")
@case("checkpoints-unknown", "models", "`checkpoints --revisions` naming a missing checkpoint")
def _(s): return ["checkpoints", str(s.ctx.series), "--revisions", "step0,step999"]
@case("select-commas", "models", "--select ,,")
def _(s): return trace_series(s, "--select", ",,")
@case("select-zero", "models", "--select first:0")
def _(s): return trace_series(s, "--select", "first:0")
@case("select-word", "models", "--select every:x")
def _(s): return trace_series(s, "--select", "every:x")
@case("select-negative", "models", "--select log:-1")
def _(s): return trace_series(s, "--select", "log:-1")
@case("select-unknown-name", "models", "--select naming a checkpoint the series lacks")
def _(s): return trace_series(s, "--select", "step5")
@case("select-kind", "models", "--select with an unknown kind")
def _(s): return trace_series(s, "--select", "middle:2")
@case("select-and-revisions", "models", "MODEL@REV together with --revisions")
def _(s): return trace_model(s, f"{s.ctx.series}@step0", "--revisions", "step10")


def _revisions_are(s: Scratch, names: set[str]) -> str | None:
    problem = _has_results(s)
    if problem:
        return problem
    found = set(pd.read_csv(s.out / "results.csv").revision.astype(str))
    return None if found == names else f"revisions {sorted(found)}, not {sorted(names)}"


# ---------------------------------------------------------------- vectors, steering, evaluation


def evaluate(s: Scratch, vector: Path | str | None, *extra: str, model: Path | None = None) -> list[str]:
    argv = ["evaluate", "--model", str(model or s.ctx.one), "--dimensions", "toxicity", "--limit", "4",
            "--data-dir", str(s.ctx.data), "--perplexity", "statements", "--out", str(s.out), "-q"]
    if vector is not None:
        argv += ["--vector", str(vector), "--layer", "1"]
    return [*argv, *extra]


def steer(s: Scratch, *extra: str, source: Path | None = None, target: Path | None = None) -> list[str]:
    return ["steer", "--source", str(source or s.ctx.one), "--target", str(target or s.ctx.one), "--dimension",
            "toxicity", "--out", str(s.out), "--layers", "1", "--alphas", "1", "--limit", "4", "--source-limit",
            "40", "--data-dir", str(s.ctx.data), "--perplexity", "statements", "-q", *extra]


def vector_bytes(s: Scratch, name: str, content: bytes) -> Path:
    return s.file(name, content)


@case("vector-missing", "vectors", "evaluate --vector that does not exist")
def _(s): return evaluate(s, s.dir / "nope.safetensors")
@case("vector-truncated", "vectors", "evaluate --vector truncated")
def _(s): return evaluate(s, vector_bytes(s, "t.safetensors", s.ctx.vec32.read_bytes()[:300]))
@case("vector-garbage-header", "vectors", "evaluate --vector with a garbage header")
def _(s): return evaluate(s, vector_bytes(s, "g.safetensors", (200).to_bytes(8, "little") + b"{" * 200 + b"\0" * 64))
@case("vector-random", "vectors", "evaluate --vector of random bytes")
def _(s): return evaluate(s, vector_bytes(s, "r.safetensors", noise(4096)))
@case("vector-text", "vectors", "evaluate --vector that is a text file")
def _(s): return evaluate(s, s.file("v.safetensors", "layer_1: 0.1 0.2 0.3\n"))
@case("vector-hidden-size", "vectors", "evaluate --vector from a 64-wide model on a 32-wide one")
def _(s): return evaluate(s, s.ctx.vec64)
@case("vector-hidden-size-allow", "vectors", "the same with --allow-mismatch")
def _(s): return evaluate(s, s.ctx.vec64, "--allow-mismatch")
@case("vector-layer-range", "vectors", "evaluate --layer beyond the model's blocks")
def _(s):
    argv = evaluate(s, s.ctx.vec32)
    argv[argv.index("--layer") + 1] = "9"
    return argv
@case("vector-no-layer", "vectors", "evaluate --vector without --layer")
def _(s): return [a for a in evaluate(s, s.ctx.vec32) if a not in ("--layer", "1")]
@case("vector-alpha-nan", "vectors", "evaluate --alpha nan")
def _(s): return evaluate(s, s.ctx.vec32, "--alpha", "nan")
@case("proxy-half", "vectors", "evaluate --proxy-tuned without --proxy-base")
def _(s): return evaluate(s, None, "--proxy-tuned", str(s.ctx.one))
@case("proxy-beta-alone", "vectors", "evaluate --beta without the proxy models")
def _(s): return evaluate(s, None, "--beta", "2")
@case("proxy-beta-nan", "vectors", "evaluate --beta nan")
def _(s): return evaluate(s, None, "--proxy-tuned", str(s.ctx.one), "--proxy-base", str(s.ctx.one), "--beta", "nan")
@case("proxy-with-vector", "vectors", "evaluate --vector with --proxy-tuned")
def _(s): return evaluate(s, s.ctx.vec32, "--proxy-tuned", str(s.ctx.one), "--proxy-base", str(s.ctx.one))
@case("proxy-vocabulary", "vectors", "evaluate --proxy-tuned with another vocabulary")
def _(s):
    other = save_tiny(s.dir / "other", "llama", seed=4)
    tok = make_tokenizer()
    tok.add_tokens(["extra"])
    tok.save_pretrained(other)
    return evaluate(s, None, "--proxy-tuned", str(other), "--proxy-base", str(s.ctx.one))
@case("evaluate-long-passage", "vectors", "evaluate --perplexity-file with a passage longer than the context")
def _(s):
    text = s.file("ppl.txt", "w1 w2 w3\n" + " ".join(["w4"] * 300) + "\n")
    return [*evaluate(s, None, model=s.ctx.gpt2), "--perplexity-file", str(text)]
@case("vector-works", "vectors", "evaluate with a fitting vector", expect="works",
      check=lambda s, o: None if (s.out / "evaluate.csv").is_file() else "no evaluate.csv")
def _(s): return evaluate(s, s.ctx.vec32)
@case("steer-hidden-size", "vectors", "steer from a 64-wide source onto a 32-wide target")
def _(s): return steer(s, source=s.ctx.wide)
@case("steer-hidden-size-allow", "vectors", "the same with --allow-mismatch")
def _(s): return steer(s, "--allow-mismatch", source=s.ctx.wide)
@case("steer-alphas-word", "vectors", "steer --alphas abc")
def _(s): return [*steer(s), "--alphas", "abc"]
@case("steer-alphas-nan", "vectors", "steer --alphas nan")
def _(s): return [*steer(s), "--alphas", "nan"]
@case("steer-layers-word", "vectors", "steer --layers abc")
def _(s): return [*steer(s), "--layers", "abc"]
@case("steer-layers-range", "vectors", "steer --layers beyond the target's blocks")
def _(s): return [*steer(s), "--layers", "9"]
@case("steer-ppl-budget-nan", "vectors", "steer --ppl-budget nan")
def _(s): return [*steer(s), "--ppl-budget", "nan"]
@case("steer-ppl-budget-negative", "vectors", "steer --ppl-budget -1")
def _(s): return [*steer(s), "--ppl-budget", "-1"]
@case("steer-proxy-half", "vectors", "steer --proxy-tuned without --proxy-base")
def _(s): return [*steer(s), "--proxy-tuned", str(s.ctx.one)]
@case("steer-proxy-betas-alone", "vectors", "steer --proxy-betas without the proxy models")
def _(s): return [*steer(s), "--proxy-betas", "0.5,1"]
@case("steer-dimension", "vectors", "steer --dimension honesty")
def _(s):
    argv = steer(s)
    argv[argv.index("--dimension") + 1] = "honesty"
    return argv
@case("export-missing", "vectors", "vectors export of a file that does not exist")
def _(s): return ["vectors", "export", str(s.dir / "nope.safetensors"), "--format", "lm-eval", "--out",
                  str(s.out / "v.pt")]
@case("export-random", "vectors", "vectors export of random bytes")
def _(s): return ["vectors", "export", str(s.file("r.safetensors", noise(999))), "--format", "lm-eval", "--out",
                  str(s.out / "v.pt")]
@case("import-random-pt", "vectors", "vectors import of random bytes named .pt")
def _(s): return ["vectors", "import", str(s.file("r.pt", noise(999))), "--out", str(s.out / "v.safetensors")]
@case("import-text-gguf", "vectors", "vectors import of a text file named .gguf")
def _(s): return ["vectors", "import", str(s.file("r.gguf", "hello")), "--out", str(s.out / "v.safetensors")]
@case("import-garbage-npz", "vectors", "vectors import of a broken .npz")
def _(s): return ["vectors", "import", str(s.file("r.npz", b"PK\x03\x04" + noise(300))), "--out",
                  str(s.out / "v.safetensors")]
@case("import-unknown-suffix", "vectors", "vectors import of a .txt")
def _(s): return ["vectors", "import", str(s.file("r.txt", "1 2 3")), "--out", str(s.out / "v.safetensors")]
@case("build-not-a-run", "vectors", "vectors build on a folder that is not a trace")
def _(s):
    (s.dir / "plain").mkdir()
    (s.dir / "plain" / "notes.txt").write_text("x")
    return ["vectors", "build", str(s.dir / "plain"), "--dimension", "toxicity", "--out", str(s.out)]
@case("build-missing", "vectors", "vectors build on a folder that does not exist")
def _(s): return ["vectors", "build", str(s.dir / "nowhere"), "--dimension", "toxicity", "--out", str(s.out)]
@case("build-dimension", "vectors", "vectors build of a dimension the run did not trace")
def _(s): return ["vectors", "build", str(s.ctx.base), "--dimension", "privacy", "--out", str(s.out)]


# ---------------------------------------------------------------- options


@case("opt-cache-budget", "options", "--cache-budget abc")
def _(s): return trace_series(s, "--cache-budget", "abc")
@case("opt-mi-sigma", "options", "--mi-sigma abc")
def _(s): return trace_series(s, "--mi-sigma", "abc")
@case("opt-transfer-colon", "options", "--transfer without TRAIN:TEST")
def _(s): return trace_series(s, "--transfer", "toxicity")
@case("opt-transfer-same", "options", "--transfer toxicity:toxicity")
def _(s): return trace_series(s, "--transfer", "toxicity:toxicity")
@case("opt-folds", "options", "--folds 1")
def _(s): return trace_series(s, "--folds", "1")
@case("opt-seeds", "options", "--seeds 0")
def _(s): return trace_series(s, "--seeds", "0")
@case("opt-controls", "options", "--controls bogus")
def _(s): return [*trace_series(s), "--controls", "bogus"]
@case("opt-prefetch", "options", "--prefetch -1")
def _(s): return trace_series(s, "--prefetch", "-1")
@case("opt-analyses", "options", "--analyses bogus")
def _(s): return [*trace_series(s), "--analyses", "bogus"]
@case("opt-mi-samples", "options", "--mi-max-samples 0")
def _(s): return [*trace_series(s), "--analyses", "mi", "--mi-max-samples", "0"]
@case("opt-dtype", "options", "--dtype fp64")
def _(s): return trace_series(s, "--dtype", "fp64")
@case("opt-pretrain-steps", "options", "pretrain --steps 0")
def _(s): return ["pretrain", "--out", str(s.out), "--steps", "0"]
@case("opt-pretrain-checkpoints", "options", "pretrain --checkpoints log:x")
def _(s): return ["pretrain", "--out", str(s.out), "--steps", "10", "--checkpoints", "log:x"]
@case("opt-pretrain-heads", "options", "pretrain --hidden-size 30 --heads 4 (not divisible)")
def _(s): return ["pretrain", "--out", str(s.out), "--steps", "10", "--hidden-size", "30", "--heads", "4"]
@case("opt-pretrain-corpus", "options", "pretrain --corpus that does not exist")
def _(s): return ["pretrain", "--out", str(s.out), "--steps", "10", "--corpus", str(s.dir / "nope.txt")]
@case("opt-phases-no-mi", "options", "phases on a run traced without MI")
def _(s): return ["phases", str(s.ctx.base), "--smooth", "0"]


# ---------------------------------------------------------------- outputs


@case("out-is-file", "outputs", "--out that is a file", disk="unchanged")
def _(s):
    s.file("out", "keep me")
    return trace_series(s)
@case("out-under-file", "outputs", "--out under a file", disk="unchanged")
def _(s):
    s.file("out", "keep me")
    return trace_series(s, out=s.out / "run")
@case("out-unwritable", "outputs", "--out where nothing can be written")
def _(s): return trace_series(s, out=Path("/proc/trusttrace-walk/run"))
@case("report-out-unwritable", "outputs", "report --out where nothing can be written")
def _(s): return ["report", str(s.ctx.base), "--out", "/proc/trusttrace-walk/report", "--no-png"]
@case("report-out-file", "outputs", "report --out that is a file", disk="unchanged")
def _(s):
    s.file("out", "keep me")
    return ["report", str(s.ctx.base), "--out", str(s.out), "--no-png"]
@case("evaluate-out-file", "outputs", "evaluate --out that is a file", disk="unchanged")
def _(s):
    s.file("out", "keep me")
    return evaluate(s, None)
@case("steer-out-file", "outputs", "steer --out that is a file", disk="unchanged")
def _(s):
    s.file("out", "keep me")
    return steer(s)
@case("pretrain-out-file", "outputs", "pretrain --out that is a file", disk="unchanged")
def _(s):
    s.file("out", "keep me")
    return ["pretrain", "--out", str(s.out), "--steps", "10"]
@case("out-other-settings", "outputs", "a finished folder rerun with other settings", disk="unchanged")
def _(s):
    s.copy_base()
    return [*trace_series(s), "--limit", "30"]
@case("out-overwrite", "outputs", "the same with --overwrite", expect="works",
      check=lambda s, o: _limit_is(s, 30))
def _(s):
    s.copy_base()
    return [*trace_series(s), "--limit", "30", "--overwrite"]
@case("out-overwrite-bad-data", "outputs", "--overwrite with a data file that is refused", disk="unchanged")
def _(s):
    s.copy_base()
    argv = [*trace_series(s), "--overwrite"]
    argv[argv.index("--dimensions") + 1] = str(s.csv("d/one.csv", planted(40, one_class=True)))
    return argv
@case("out-overwrite-foreign", "outputs", "--overwrite on a folder trusttrace did not write", disk="unchanged")
def _(s):
    s.file("out/thesis.tex", "years of work")
    return trace_series(s, "--overwrite")
@case("out-after-error", "outputs", "a rerun after an error, following the error's advice", expect="works",
      check=lambda s, o: _has_results(s))
def _(s):
    bad = s.csv("d/long.csv", [(" ".join(["w2"] * 300) + " good", 1), *planted()])
    first = CliRunner().invoke(_app(), trace_file(s, bad), env={"COLUMNS": "300"})
    s.dir.joinpath("first-exit").write_text(str(first.exit_code))
    return trace_file(s, bad, "--max-tokens", "64")
@case("out-foreign-files", "outputs", "--out a folder holding other files", disk="unchanged")
def _(s):
    s.file("out/thesis.tex", "years of work")
    return trace_series(s)


def _limit_is(s: Scratch, limit: int) -> str | None:
    problem = _has_results(s)
    if problem:
        return problem
    manifest = json.loads((s.out / "manifest.json").read_text())
    found = manifest.get("settings", {}).get("limit")
    return None if found == limit else f"the folder still holds limit {found}"


# ---------------------------------------------------------------- damaged and stale runs


def _same_as_base(s: Scratch) -> str | None:
    problem = _has_results(s)
    if problem:
        return problem
    cols = ["revision", "dimension", "layer", "metric", "value"]
    a = pd.read_csv(s.ctx.base / "results.csv")[cols].sort_values(cols[:4]).reset_index(drop=True)
    b = pd.read_csv(s.out / "results.csv")[cols].sort_values(cols[:4]).reset_index(drop=True)
    if len(a) != len(b):
        return f"{len(b)} rows, not {len(a)}"
    diff = (a.value - b.value).abs().max()
    return None if diff < 1e-9 else f"values differ from an intact run by {diff:g}"


def _damage(path: Path, how: str) -> None:
    data = bytearray(path.read_bytes())
    if how == "truncate":
        path.write_bytes(bytes(data[: len(data) // 2]))
    else:  # overwrite 4 KB of tensor data near the end with other numbers
        start = max(len(data) - 6000, len(data) // 2)
        data[start:start + 4096] = bytes((b * 37 + 11) % 256 for b in data[start:start + 4096])
        path.write_bytes(bytes(data))


@case("damaged-part", "damaged", "a truncated parts/<revision>.csv, then a rerun", expect="works", check=lambda s, o:
      _same_as_base(s))
def _(s):
    _damage(s.copy_base() / "parts" / "step10.csv", "truncate")
    return trace_series(s)
@case("damaged-activations-truncated", "damaged", "a truncated activations file, then a rerun", expect="works",
      check=lambda s, o: _same_as_base(s))
def _(s):
    _damage(s.copy_base() / "activations" / "step10" / "toxicity.safetensors", "truncate")
    (s.out / "parts" / "step10.csv").unlink()
    return trace_series(s)
@case("damaged-activations-overwritten", "damaged", "4 KB of an activations file overwritten, then a rerun",
      expect="works", check=lambda s, o: _same_as_base(s))
def _(s):
    _damage(s.copy_base() / "activations" / "step10" / "toxicity.safetensors", "overwrite")
    (s.out / "parts" / "step10.csv").unlink()
    return trace_series(s)
@case("damaged-probe", "damaged", "probe on a run whose activations were overwritten")
def _(s):
    _damage(s.copy_base() / "activations" / "step10" / "toxicity.safetensors", "overwrite")
    return ["probe", str(s.out), "--out", str(s.dir / "refit"), "--controls", "none", "--analyses", "probe", "-q"]
@case("damaged-results", "damaged", "a truncated results.csv, then a rerun", expect="works",
      check=lambda s, o: _same_as_base(s))
def _(s):
    _damage(s.copy_base() / "results.csv", "truncate")
    return trace_series(s)
@case("damaged-results-deleted", "damaged", "results.csv and .parquet deleted, then a rerun", expect="works",
      check=lambda s, o: _same_as_base(s))
def _(s):
    s.copy_base()
    (s.out / "results.csv").unlink()
    (s.out / "results.parquet").unlink()
    return trace_series(s)
@case("damaged-report", "damaged", "report on a run whose results.csv was truncated", disk="unchanged")
def _(s):
    _damage(s.copy_base() / "results.csv", "truncate")
    (s.out / "results.parquet").unlink()
    return ["report", str(s.out), "--no-png"]
@case("report-malformed", "damaged", "report on a results.csv with the wrong columns", disk="unchanged")
def _(s):
    s.file("out/results.csv", "a,b\n1,2\n")
    return ["report", str(s.out), "--no-png"]
@case("report-empty", "damaged", "report on an empty folder", disk="unchanged")
def _(s):
    s.out.mkdir()
    return ["report", str(s.out), "--no-png"]
@case("report-missing", "damaged", "report on a folder that does not exist")
def _(s): return ["report", str(s.out), "--no-png"]
@case("regenerated-weights", "damaged", "new weights saved under an old checkpoint name, then a rerun",
      expect="works", check=lambda s, o: _changed_step(s, "step10"))
def _(s):
    series = s.dir / "series"
    shutil.copytree(s.ctx.series, series)
    run = s.out
    first = CliRunner().invoke(_app(), ["trace", "--model", str(series), "--out", str(run), "--dimensions",
                                        "toxicity", "--data-dir", str(s.ctx.data), *FAST])
    assert first.exit_code == 0, first.output
    shutil.copytree(run / "activations", s.dir / "before")
    shutil.rmtree(series / "step10")
    save_tiny(series / "step10", "llama", seed=99)
    return ["trace", "--model", str(series), "--out", str(run), "--dimensions", "toxicity", "--data-dir",
            str(s.ctx.data), *FAST]
@case("verify-intact", "damaged", "verify on an intact run", expect="works", check=lambda s, o: None)
def _(s): return ["verify", str(s.copy_base())]
@case("verify-damaged", "damaged", "verify on a run with a damaged activations file", disk="unchanged")
def _(s):
    _damage(s.copy_base() / "activations" / "step10" / "toxicity.safetensors", "overwrite")
    return ["verify", str(s.out)]
@case("verify-not-a-run", "damaged", "verify on a folder that is not a run", disk="unchanged")
def _(s):
    s.file("out/notes.txt", "x")
    return ["verify", str(s.out)]


def _changed_step(s: Scratch, step: str) -> str | None:
    """Only ``step``'s activations were extracted again (planted labels read 1.0 from any weights, so the
    activations, not the accuracies, tell old weights from new)."""
    problem = _has_results(s)
    if problem:
        return problem
    before, after = snapshot(s.dir / "before") or {}, snapshot(s.out / "activations") or {}
    changed = sorted({k.split("/")[0] for k in before if k.endswith(".safetensors") and before[k] != after.get(k)})
    return None if changed == [step] else f"activations changed for {changed or 'no checkpoint'}, not [{step}]"


# ---------------------------------------------------------------- hostile inputs (issue 23)

HTML_NAME = "x'><img src=x onerror=alert(1)>"  # a file name a browser would run as script, were it not escaped
def _unprivileged() -> tuple[str, ...]:
    """The prefix that makes root obey file modes (setpriv, dropping every capability); none for another user,
    whom the modes bind anyway. A root whose setpriv cannot drop them gets none: the cases then Skip."""
    import subprocess

    if os.geteuid() != 0:
        return ()
    prefix = ("setpriv", "--inh-caps=-all", "--ambient-caps=-all", "--bounding-set=-all", "--")
    if shutil.which("setpriv") is None or subprocess.run([*prefix, "true"], capture_output=True,
                                                          check=False).returncode != 0:
        return ("root-without-setpriv",)
    return prefix


PRIV = _unprivileged()  # the permission cases: root bound by file modes
LONG = "n" * 300  # a name longer than any file system allows (255 bytes)


def _tiny_pretrain(s: Scratch, out: Path, *extra: str) -> list[str]:
    corpus = s.file("corpus.txt", "".join(f"line {i} of a small corpus with words w{i % 50} and w{i % 7}.\n\n"
                                          for i in range(400)))
    return ["pretrain", "--out", str(out), "--corpus", str(corpus), "--steps", "4", "--checkpoints", "0,2,4",
            "--hidden-size", "32", "--layers", "2", "--heads", "2", "--intermediate-size", "64", "--vocab-size", "300",
            "--seq-len", "32", "--batch-size", "2", "--precision", "fp32", "--device", "cpu", "-q", *extra]


def _hostile_table(s: Scratch, dimension: str, steps: int = 1) -> Path:
    """A tidy results table (the report's plain-CSV input) whose dimension and revisions are ``dimension``."""
    rows = [{"step": step, "dimension": dimension, "layer": layer, "metric": metric, "value": value,
             "revision": f"{dimension}@{step}", "model": dimension}
            for step in range(steps) for layer in range(3)
            for metric, value in (("accuracy", 0.6 + 0.1 * layer), ("mi_tx", 5.0 - step), ("mi_ty", 0.1 * step))]
    return s.csv("hostile.csv", text=pd.DataFrame(rows).to_csv(index=False))


def _hostile_trace(s: Scratch, dimension: str) -> Path:
    """A trace folder whose results hold MI rows over steps of a dimension named ``dimension``."""
    from trusttrace.runs.tables import RESULT_COLUMNS

    frame = pd.read_csv(_hostile_table(s, dimension, steps=5))
    for col in RESULT_COLUMNS:
        if col not in frame:
            frame[col] = ""
    s.out.mkdir()
    frame[RESULT_COLUMNS].to_csv(s.out / "results.csv", index=False)
    (s.out / "manifest.json").write_text(json.dumps({"settings": {}, "checkpoints": {}}))
    return s.out


def _page_is_escaped(page: Path) -> str | None:
    if not page.is_file():
        return f"no {page}"
    text = page.read_text(encoding="utf-8")
    raw = [bad for bad in ("<img src=x", "onerror=alert(1)>") if bad in text]
    return f"{page} holds {raw} unescaped" if raw else None


def _victim_kept(s: Scratch, name: str = "victim.txt") -> str | None:
    victim = s.dir / name
    return None if victim.read_text() == "mine" else f"{victim} was overwritten"


def _link(path: Path, target: Path) -> None:
    if path.exists() or path.is_symlink():
        shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.symlink_to(target)


@case("lock-second-writer", "hostile", "trace into a folder another trusttrace process is writing", disk="unchanged")
def _(s):
    s.copy_base()
    s.holder(s.out)
    return trace_series(s)
@case("lock-overwrite", "hostile", "--overwrite of a folder another process is writing", disk="unchanged")
def _(s):
    s.copy_base()
    s.holder(s.out)
    return trace_series(s, "--overwrite")
@case("lock-inside", "hostile", "steer --out inside a folder another process is writing")
def _(s):
    s.holder(s.dir)
    return steer(s)
@case("lock-report-while-writing", "hostile", "report on a run another process is still writing", expect="works",
      check=lambda s, o: None if (s.out / "report" / "index.html").is_file() else "no report")
def _(s):
    s.copy_base()
    s.holder(s.out)
    return ["report", str(s.out), "--no-png"]
@case("name-dataset-html", "hostile", "a dataset file named like HTML with a script handler", expect="works",
      check=lambda s, o: _has_results(s) or _page_is_escaped(s.out / "report" / "index.html"))
def _(s):
    first = CliRunner().invoke(_app(), trace_file(s, s.csv(f"d/{HTML_NAME}.csv", planted())), env={"COLUMNS": "300"})
    assert first.exit_code == 0, first.output
    return ["report", str(s.out), "--no-png"]
@case("name-dataset-dots", "hostile", "a dataset file named ...csv (its name is '..')", expect="works",
      check=lambda s, o: _has_results(s))
def _(s): return trace_file(s, s.csv("d/...csv", planted()))
@case("name-dataset-long", "hostile", "a dataset file whose name is 250 characters", expect="works",
      check=lambda s, o: _has_results(s))
def _(s): return trace_file(s, s.csv(f"d/{'d' * 250}.csv", planted()))
@case("name-report-traversal", "hostile", "report on a table whose dimension is ../../x/PWNED and HTML",
      expect="works", check=lambda s, o: _page_is_escaped(s.out / "index.html"))
def _(s): return ["report", str(_hostile_table(s, f"../../x/PWNED{HTML_NAME}", steps=3)), "--out", str(s.out),
                  "--no-png"]
@case("name-phases-traversal", "hostile", "phases on a run whose dimension is ../../x/PWNED", expect="works",
      check=lambda s, o: None if any((s.out / "mi").glob("*.html")) else "no figures in mi/")
def _(s): return ["phases", str(_hostile_trace(s, "../../x/PWNED")), "--smooth", "1"]
@case("name-revision-collision", "hostile", "checkpoint folders step10:a and step10__a", expect="works",
      check=lambda s, o: _revisions_are(s, {"step10:a", "step10__a"}))
def _(s):
    save_tiny(s.dir / "series" / "step10:a", "llama", seed=1)
    save_tiny(s.dir / "series" / "step10__a", "llama", seed=2)
    return trace_model(s, str(s.dir / "series"))
@case("name-model-html", "hostile", "a model folder and checkpoint named like HTML, then a report", expect="works",
      check=lambda s, o: _has_results(s) or _page_is_escaped(s.out / "report" / "index.html"))
def _(s):
    series = s.dir / f"m{HTML_NAME}"
    save_tiny(series / f"step1{HTML_NAME}", "llama", seed=1)
    save_tiny(series / "step2", "llama", seed=2)
    first = CliRunner().invoke(_app(), trace_model(s, str(series)), env={"COLUMNS": "300"})
    assert first.exit_code == 0, first.output
    return ["report", str(s.out), "--no-png"]
@case("name-case-collision", "hostile", "checkpoint folders Step10 and step10 (one file on macOS)")
def _(s):
    save_tiny(s.dir / "series" / "Step10", "llama", seed=1)
    save_tiny(s.dir / "series" / "step10", "llama", seed=2)
    return trace_model(s, str(s.dir / "series"))
@case("link-log", "hostile", "a run folder whose log.txt links to a file of the user's", disk="unchanged",
      check=lambda s, o: _victim_kept(s))
def _(s):
    _link(s.copy_base() / "log.txt", s.file("victim.txt", "mine"))
    return trace_series(s)
@case("link-activations", "hostile", "a run folder whose activations/step10 links to a folder of the user's",
      disk="unchanged", check=lambda s, o: _victim_kept(s, "mine/victim.txt"))
def _(s):
    s.file("mine/victim.txt", "mine")
    _link(s.copy_base() / "activations" / "step10", s.dir / "mine")
    (s.out / "parts" / "step10.csv").unlink()
    return trace_series(s)
@case("link-report-table", "hostile", "a report folder whose tables/results.csv links to a file of the user's",
      disk="unchanged", check=lambda s, o: _victim_kept(s))
def _(s):
    _link(s.copy_base() / "report" / "tables" / "results.csv", s.file("victim.txt", "mine"))
    return ["report", str(s.out), "--no-png"]
@case("input-vectors-into-activations", "hostile", "vectors build RUN --out RUN/activations", disk="unchanged")
def _(s):
    return ["vectors", "build", str(s.copy_base()), "--dimension", "toxicity", "--out", str(s.out / "activations")]
@case("input-export-onto-itself", "hostile", "vectors export V --out V", disk="unchanged")
def _(s):
    vector = s.file("out", s.ctx.vec32.read_bytes())
    return ["vectors", "export", str(vector), "--format", "numpy", "--out", str(vector)]
@case("input-import-onto-itself", "hostile", "vectors import X --out X", disk="unchanged")
def _(s):
    vector = s.file("out", noise(300))
    return ["vectors", "import", str(vector), "--out", str(vector)]
@case("input-probe-into-activations", "hostile", "probe RUN --out RUN/activations", disk="unchanged")
def _(s): return ["probe", str(s.copy_base()), "--out", str(s.out / "activations"), "--controls", "none",
                  "--analyses", "probe", "-q"]
@case("input-report-into-run", "hostile", "report RUN --out RUN/parts", disk="unchanged")
def _(s): return ["report", str(s.copy_base()), "--out", str(s.out / "parts"), "--no-png"]
@case("env-disk-full-trace", "environment", "trace --out on a disk that fills up", disk="resumable")
def _(s): return trace_series(s, out=s.small_disk("disk", 96) / "run")
@case("env-disk-full-report", "environment", "report --out on a disk that fills up", disk="resumable")
def _(s): return ["report", str(s.ctx.base), "--out", str(s.small_disk("disk", 256) / "report"), "--no-png"]
@case("env-disk-full-pretrain", "environment", "pretrain --out on a disk that fills up", disk="resumable")
def _(s): return _tiny_pretrain(s, s.small_disk("disk", 256) / "run")
def _bound_by_modes() -> None:
    if PRIV == ("root-without-setpriv",):
        raise Skip("root here cannot drop its capabilities (no working setpriv): file modes do not bind it")


@case("env-permission-trace", "environment", "a rerun into a run whose parts/ folder this user may not write",
      prefix=PRIV, disk="resumable")
def _(s):
    _bound_by_modes()
    s.copy_base()
    (s.out / "parts" / "step10.csv").unlink()  # as a run killed before its last part leaves it
    (s.out / "parts" / "step10.csv.sha256.json").unlink()
    (s.out / "parts").chmod(0o555)
    s.cleanups.append(lambda: (s.out / "parts").chmod(0o755))
    return trace_series(s)
@case("env-permission-report", "environment", "report on a run whose results this user may not read", prefix=PRIV,
      disk="unchanged")
def _(s):
    _bound_by_modes()
    s.copy_base()
    (s.out / "results.parquet").unlink()
    (s.out / "results.csv").chmod(0o000)
    s.cleanups.append(lambda: (s.out / "results.csv").chmod(0o644))
    return ["report", str(s.out), "--no-png"]
@case("env-permission-pretrain", "environment", "pretrain --corpus this user may not read", prefix=PRIV)
def _(s):
    _bound_by_modes()
    argv = _tiny_pretrain(s, s.out)
    (s.dir / "corpus.txt").chmod(0o000)
    return argv
@case("env-name-too-long-trace", "environment", "trace --out with a 300-character name")
def _(s): return trace_series(s, out=s.dir / LONG)
@case("env-name-too-long-report", "environment", "report --out with a 300-character name")
def _(s): return ["report", str(s.ctx.base), "--out", str(s.dir / LONG), "--no-png"]
@case("env-name-too-long-pretrain", "environment", "pretrain --out with a 300-character name")
def _(s): return _tiny_pretrain(s, s.dir / LONG)


def _traced_copy(s: Scratch) -> Path:
    """A copy of the tiny series, traced into the case's --out (its activations kept aside as before/)."""
    series = s.dir / "series"
    shutil.copytree(s.ctx.series, series)
    first = CliRunner().invoke(_app(), trace_model(s, str(series)), env={"COLUMNS": "300"})
    assert first.exit_code == 0, first.output
    shutil.copytree(s.out / "activations", s.dir / "before")
    return series


def _stale_redone(s: Scratch, output: str, name: str) -> str | None:
    return _changed_step(s, "step10") or (None if f"step10: {name} changed" in output else f"no warning naming {name}")


@case("stale-tokenizer", "hostile", "a checkpoint's tokenizer.json changed, then a rerun", expect="works",
      check=lambda s, o: _stale_redone(s, o, "tokenizer.json"))
def _(s):
    tokenizer = _traced_copy(s) / "step10" / "tokenizer.json"
    tok = json.loads(tokenizer.read_text())
    vocab = tok["model"]["vocab"]
    vocab["good"], vocab["bad"] = vocab["bad"], vocab["good"]  # the same statements, other embeddings
    tokenizer.write_text(json.dumps(tok))
    return trace_model(s, str(s.dir / "series"))
@case("stale-config", "hostile", "a checkpoint's config.json changed, then a rerun", expect="works",
      check=lambda s, o: _stale_redone(s, o, "config.json"))
def _(s):
    config = _traced_copy(s) / "step10" / "config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "rms_norm_eps": 0.5}))
    return trace_model(s, str(s.dir / "series"))


def _killed_before_the_last(s: Scratch) -> Path:
    """A copy of the base run as a kill before step100's part leaves it: no part, no record, not finished."""
    run = s.copy_base()
    for path in (run / "parts" / "step100.csv", run / "parts" / "step100.csv.sha256.json"):
        path.unlink()
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["checkpoints"].pop("step100", None)
    manifest.pop("finished", None)
    write_json_atomic(run / "manifest.json", manifest)  # with its record, as the run itself writes it
    return run


@case("verify-unfinished", "damaged", "verify on a run killed before its last checkpoint", disk="unchanged")
def _(s): return ["verify", str(_killed_before_the_last(s))]
@case("verify-being-written", "damaged", "verify on a run another trusttrace process is writing", disk="unchanged")
def _(s):
    s.copy_base()
    s.holder(s.out)
    return ["verify", str(s.out)]
@case("verify-then-rerun", "damaged", "a rerun of the killed run, as verify advises", expect="works",
      check=lambda s, o: _same_as_base(s))
def _(s):
    _killed_before_the_last(s)
    return trace_series(s)


# ---------------------------------------------------------------- running and classifying


def _app() -> Any:
    from trusttrace.cli import app

    return app


def snapshot(path: Path) -> dict[str, str] | None:
    """Every file under ``path`` with its sha256 (None when ``path`` does not exist; its text when a file).

    ``log.txt`` is left out: a run folder's log records every attempt, refused ones included. A path the file
    system cannot even name (a name too long) reads as None."""
    try:
        path.exists()
    except OSError:
        return None
    if path.is_file():
        return {".": hashlib.sha256(path.read_bytes()).hexdigest()}
    if not path.exists():
        return None
    return {p.relative_to(path).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*")) if p.is_file() and p.name != "log.txt"}


@dataclass
class Outcome:
    case: Case
    exit_code: int
    output: str
    verdict: str  # ok | traceback | silent | corrupt | refused | skipped
    why: str = ""


def _outside(s: Scratch, target: Path) -> dict[str, str]:
    """Every file of the case's folder that is not under its output (``target``), with its sha256."""
    found = snapshot(s.dir) or {}
    prefix = target.relative_to(s.dir).as_posix() + "/" if s.dir in target.parents else None
    mounts = ({p.relative_to(s.dir).as_posix() + "/" for p in s.dir.iterdir() if p.is_mount()}
              if s.dir.is_dir() else set())
    return {k: v for k, v in found.items() if not (prefix and (k + "/").startswith(prefix))
            and not any(k.startswith(m) for m in mounts)}


def _invoke(c: Case, argv: list[str]) -> tuple[int, str, BaseException | None]:
    """Run the command: in this process (typer's runner), or as `python -m trusttrace` under the case's prefix."""
    if not c.process:
        result = CliRunner().invoke(_app(), argv, env={"COLUMNS": "300"})
        return result.exit_code, result.output, result.exception
    import subprocess

    env = {**os.environ, "COLUMNS": "300"}
    done = subprocess.run([*c.prefix, sys.executable, "-m", "trusttrace", *argv], capture_output=True, text=True,
                          env=env, timeout=600, check=False)
    return done.returncode, done.stdout + done.stderr, None


def run_case(c: Case, ctx: Ctx, scratch_root: Path) -> Outcome:
    folder = scratch_root / c.id
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    s = Scratch(folder, ctx)
    try:
        return _run(c, s)
    finally:
        for cleanup in reversed(s.cleanups):
            cleanup()


def _run(c: Case, s: Scratch) -> Outcome:
    try:
        argv = c.argv(s)
    except Skip as why:
        return Outcome(c, -1, "", "skipped", str(why))
    target = s.out if "--out" not in argv else Path(argv[argv.index("--out") + 1])
    before, outside = snapshot(target), _outside(s, target)
    exit_code, raw, exception = _invoke(c, argv)
    output = " ".join(raw.split())
    crashed = exception is not None and not isinstance(exception, SystemExit)
    if crashed or "Traceback" in raw or "internal error" in output:
        why = repr(exception) if crashed else output[-300:]
        return Outcome(c, exit_code, output, "traceback", why)
    escaped = sorted(set(_outside(s, target).items()) ^ set(outside.items()))
    if escaped:
        return Outcome(c, exit_code, output, "corrupt", f"files changed outside {target}: {escaped[:3]}")
    if c.expect == "refuse":
        if exit_code == 0:
            return Outcome(c, 0, output, "silent", "exit 0")
        after = snapshot(target)
        if c.disk != "resumable" and after != before:
            return Outcome(c, exit_code, output, "corrupt", f"{target} changed")
        problem = (c.check(s, output) if c.check else None) or (_resumable(target) if c.disk == "resumable" else None)
        if problem:
            return Outcome(c, exit_code, output, "corrupt", problem)
        return Outcome(c, exit_code, output, "ok")
    if exit_code != 0:
        return Outcome(c, exit_code, output, "refused", output[-300:])
    problem = c.check(s, output) if c.check else None
    if problem:
        verdict = "corrupt" if c.area == "damaged" else "silent"
        return Outcome(c, 0, output, verdict, problem)
    return Outcome(c, 0, output, "ok")


def _resumable(folder: Path) -> str | None:
    """After a failure the machine caused: nothing half-written under ``folder`` (no temporary file left), and
    for a run folder, `verify` finds nothing damaged: it lists what a rerun still has to do (exit 3,
    incomplete) or finds the run complete (exit 0)."""
    if not folder.exists():
        return None
    leftovers = [p.name for p in folder.rglob("*") if ".tmp-" in p.name]
    if leftovers:
        return f"temporary files left behind: {leftovers[:3]}"
    result = CliRunner().invoke(_app(), ["verify", str(folder)], env={"COLUMNS": "300"})
    said = " ".join(result.output.split())
    if result.exit_code not in (0, 2, 3) or (result.exit_code == 2 and "is not a run folder" not in said):
        return f"verify after the failure: exit {result.exit_code}: {said[-300:]}"
    return None


def build_context(root: Path) -> Ctx:
    runner = CliRunner()
    return Ctx(root).build(lambda argv: runner.invoke(_app(), argv, env={"COLUMNS": "300"}))


def main() -> None:  # pragma: no cover - run by hand for the before/after counts
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["TRUSTTRACE_CACHE"] = str(Path(tmp) / "cache")
        ctx = build_context(Path(tmp) / "ctx")
        outcomes = [run_case(c, ctx, Path(tmp) / "cases") for c in CASES]
    for o in outcomes:
        if o.verdict != "ok":
            print(f"{o.verdict:10} {o.case.id:32} exit {o.exit_code}  {o.why[:200]}")
    counts = Counter(o.verdict for o in outcomes)
    print(json.dumps({"inputs": len(outcomes), **{k: counts.get(k, 0) for k in
                                                   ("ok", "traceback", "silent", "corrupt", "refused", "skipped")}}))


if __name__ == "__main__":  # pragma: no cover
    sys.path.insert(0, str(Path(__file__).parent))
    main()
