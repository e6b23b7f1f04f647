"""Every user error of issue 14 (data, options, outputs, report) answered with its own error type and a
message that names the value, what is allowed and the fix; at the CLI exit 2, with the folders left as they
were. The tiny series of ``trusttrace.testing`` stands in for a model: each refusal comes before one loads.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from trusttrace.cli import _shared, app
from trusttrace.core.errors import (
    DataFileError,
    DataFileNotFoundError,
    OptionError,
    OutputError,
    RunFolderError,
    UnknownNameError,
)
from trusttrace.data.datasets import dataset_names, load_datasets
from trusttrace.demo.job import DemoConfig
from trusttrace.models.checkpoints import CheckpointSeries
from trusttrace.report import ReportConfig, run_report
from trusttrace.runs.outputs import check_output, start_over
from trusttrace.steer.job import SteerConfig
from trusttrace.testing import planted_statements
from trusttrace.training.pretrain import PretrainConfig

runner = CliRunner()


def cli(*argv: str | Path) -> tuple[int, str]:
    """Exit code and the output as one line (rich wraps long messages)."""
    res = runner.invoke(app, [str(a) for a in argv])
    return res.exit_code, " ".join(res.output.split())


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() if p.is_file() else b"<dir>" for p in sorted(folder.rglob("*"))}


def statements_csv(path: Path, labels: list[int] | None = None) -> Path:
    text, planted = planted_statements(40, seed=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"statement": text, "label": planted if labels is None else labels * 40}).to_csv(path, index=False)
    return path


# ---------------------------------------------------------------- data


def test_two_files_with_one_stem_are_refused_naming_both(tmp_path):
    a, b = statements_csv(tmp_path / "a" / "data.csv"), statements_csv(tmp_path / "b" / "data.csv")
    with pytest.raises(DataFileError, match=r"Two datasets would both be named 'data'.*a/data.csv.*b/data.csv"):
        dataset_names([str(a), str(b)])
    mine = statements_csv(tmp_path / "x" / "toxicity.csv")
    with pytest.raises(DataFileError, match=r"both be named 'toxicity': 'toxicity' \(built-in toxicity\)"):
        dataset_names(["toxicity", str(mine)])
    assert dataset_names(["toxicity", "toxigen", str(a), str(a)]) == {"toxicity": "toxicity", "data": str(a)}


def test_a_missing_file_is_not_an_unknown_dimension(tmp_path):
    for name in ("x/missing.csv", "missing.jsonl", str(tmp_path / "gone.tsv")):
        with pytest.raises(DataFileNotFoundError, match=f"Dataset file '{name}' does not exist"):
            dataset_names([name])
    with pytest.raises(UnknownNameError, match="Unknown dimension 'honesty'. Choose from reliability"):
        dataset_names(["honesty"])
    with pytest.raises(DataFileError, match="is a folder"):
        dataset_names([str(tmp_path)])


def test_a_one_class_file_is_refused_when_it_loads(tmp_path):
    path = statements_csv(tmp_path / "ones.csv", labels=[1])
    with pytest.raises(DataFileError, match=r"ones.csv: all 40 rows of dataset 'ones' have label 1.*both labels"):
        load_datasets([str(path)])


def test_cli_data_errors_come_before_anything_is_written(tiny_series, tmp_path):
    a, b = statements_csv(tmp_path / "a" / "data.csv"), statements_csv(tmp_path / "b" / "data.csv")
    ones = statements_csv(tmp_path / "ones.csv", labels=[1])
    out = tmp_path / "run"
    for dims, message in ((f"{a},{b}", "Two datasets would both be named 'data'"),
                          ("toxicity,x/toxicity.csv", "Dataset file 'x/toxicity.csv' does not exist"),
                          (str(ones), "have label 1, so a probe cannot tell the labels apart"),
                          (",,", "--dimensions ',,': give 'all' or comma-separated dimensions")):
        code, output = cli("trace", "--model", tiny_series, "--out", out, "--dimensions", dims, "--limit", "20")
        assert code == 2 and message in output, output
        assert not out.exists()


# ---------------------------------------------------------------- revisions and selectors


def test_a_local_series_takes_revisions_naming_its_folders(tiny_series):
    series = CheckpointSeries.resolve(str(tiny_series), ["step10", "step0"])
    assert series.names == ["step10", "step0"] and series.source == "local"
    with pytest.raises(UnknownNameError, match=r"--revisions 'step0,step999': \['step999'\] not in the series of .* "
                                               r"which has step0, step10, step100"):
        CheckpointSeries.resolve(str(tiny_series), ["step0", "step999"])
    with pytest.raises(OptionError, match="is one checkpoint, which has no revisions"):
        CheckpointSeries.resolve(str(tiny_series / "step0"), ["main"])


@pytest.mark.parametrize("selector,error,message", [
    (",,", OptionError, "an empty checkpoint name"), ("step0,,step10", OptionError, "an empty checkpoint name"),
    ("step0,step0", OptionError, r"names \['step0'\] more than once"), ("first:", OptionError, "'' is not a positive"),
    ("first:0", OptionError, "'0' is not a positive whole number; e.g. first:4"), ("log:x", OptionError, "'x' is not"),
    ("every:-1", OptionError, "'-1' is not"), ("last:²", OptionError, "'²' is not"),
    ("first:" + "9" * 30, OptionError, "larger than any series"), ("step5", UnknownNameError, "which has step0"),
])
def test_malformed_selectors_are_refused(tiny_series, selector, error, message):
    with pytest.raises(error, match=message):
        CheckpointSeries.resolve(str(tiny_series)).select(selector)


def test_cli_checkpoints_refuses_unknown_revisions_and_empty_selectors(tiny_series, tmp_path):
    code, output = cli("checkpoints", tiny_series, "--revisions", "step0,step999")
    assert code == 2 and "['step999'] not in the series" in output and "which has step0, step10, step100" in output
    code, output = cli("checkpoints", tiny_series, "--revisions", "step100,step0")
    assert code == 0 and "2 checkpoints (local)" in output
    code, output = cli("checkpoints", tiny_series, "--select", ",,")
    assert code == 2 and "--select ',,': an empty checkpoint name" in output
    out = tmp_path / "run"
    code, output = cli("trace", "--model", tiny_series, "--out", out, "--select", ",,", "--dimensions", "toxicity")
    assert code == 2 and "an empty checkpoint name" in output and not out.exists()


# ---------------------------------------------------------------- option parsers


@pytest.mark.parametrize("parse,message", [
    (lambda: _shared.numbers("1,x", "--layers", int), ("--layers '1,x': 'x' is not an integer; give comma-separated "
                                                      "values, e.g. 12,14")),
    (lambda: _shared.numbers("nan", "--alphas", float), "'nan' is not a finite number; e.g. -2,-1,1,2"),
    (lambda: _shared.numbers(",,", "--alphas", float), "give at least one value"),
    (lambda: _shared.gigabytes("lots"), "--cache-budget 'lots': give a size such as 50GB"),
    (lambda: _shared.gigabytes("1" * 400 + "TB"), "too large to be a size"),
    (lambda: _shared.sigma("wide"), "--mi-sigma 'wide' is neither a number nor 'median'; e.g. --mi-sigma 50"),
    (lambda: _shared.sigma("nan"), "positive finite number"), (lambda: _shared.sigma("-1"), "positive finite"),
    (lambda: _shared.transfer_pairs("reliability"), "give TRAIN:TEST"),
    (lambda: _shared.dimensions(" , "), "give 'all' or comma-separated dimensions"),
])
def test_option_parsers_raise_option_errors(parse, message):
    with pytest.raises(OptionError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse()


def test_non_finite_settings_are_refused_before_they_are_recorded(tmp_path):
    with pytest.raises(OptionError, match=r"steer: ppl_budget = nan holds nan, which is not a finite number"):
        SteerConfig(source="m", target="m", dimension="toxicity", out=str(tmp_path), ppl_budget=math.nan)
    with pytest.raises(OptionError, match="ppl_budget = -1.0 must be above 0"):
        SteerConfig(source="m", target="m", dimension="toxicity", out=str(tmp_path), ppl_budget=-1.0)
    with pytest.raises(OptionError, match=r"alphas = \(1.0, inf\) holds inf"):
        SteerConfig(source="m", target="m", dimension="toxicity", out=str(tmp_path), alphas=(1.0, math.inf))
    with pytest.raises(OptionError, match="demo: alphas"):
        DemoConfig(alphas=(math.nan,))
    with pytest.raises(OptionError, match="pretrain: lr = nan"):
        PretrainConfig(out=str(tmp_path), lr=math.nan)
    code, output = cli("steer", "--source", "m", "--target", "m", "--dimension", "toxicity", "--out",
                       tmp_path / "s", "--ppl-budget", "nan")
    assert code == 2 and "ppl_budget = nan" in output and not (tmp_path / "s").exists()


# ---------------------------------------------------------------- outputs


def test_outputs_that_cannot_be_written_are_refused(tmp_path, monkeypatch):
    file = tmp_path / "file.txt"
    file.write_text("mine")
    with pytest.raises(OutputError, match=r"--out '.*file.txt' is a file, not a folder"):
        check_output(file)
    with pytest.raises(OutputError, match=r"lies under .*file.txt, which is a file"):
        check_output(file / "run")
    monkeypatch.setattr("trusttrace.runs.outputs.os.access", lambda path, mode: False)  # root writes anywhere
    with pytest.raises(OutputError, match=r"\(its first existing parent .*\) is not writable by this user"):
        check_output(tmp_path / "new" / "run")
    assert check_output("s3://bucket/run") == Path("s3://bucket/run")


def test_cli_outputs_are_checked_before_anything_loads(tiny_series, tmp_path):
    file = tmp_path / "file.txt"
    file.write_text("mine")
    for out, message in ((file, "is a file, not a folder"), (file / "run", "which is a file")):
        code, output = cli("trace", "--model", tiny_series, "--out", out, "--dimensions", "toxicity")
        assert code == 2 and message in output, output
        code, output = cli("pretrain", "--out", out, "--steps", "2")
        assert code == 2 and message in output, output
    assert file.read_text() == "mine"


def trace_folder(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "manifest.json").write_text("{}")
    (folder / "results.csv").write_text("step,dimension,layer,metric,value\n0,toxicity,0,accuracy,0.9\n")
    (folder / "parts").mkdir()
    return folder


def test_overwrite_removes_only_a_run_folder_of_its_own_kind(tmp_path, monkeypatch):
    run = trace_folder(tmp_path / "run")
    start_over(run, False, ("trace",))
    assert (run / "results.csv").is_file()  # without the flag: nothing removed
    start_over(run, True, ("trace", "probe"))
    assert not run.exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    start_over(empty, True, ("trace",))
    mine = trace_folder(tmp_path / "mine")
    (mine / "thesis.tex").write_text("years of work")
    before = snapshot(mine)
    with pytest.raises(OutputError, match=r"is not a trusttrace run folder \(it holds thesis.tex\)"):
        start_over(mine, True, ("trace",))
    assert snapshot(mine) == before
    with pytest.raises(OutputError, match="holds a trace run, and this command makes a steer folder"):
        start_over(trace_folder(tmp_path / "other"), True, ("steer",))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    home = trace_folder(tmp_path / "home")
    with pytest.raises(OutputError, match="your home folder"):
        start_over("~", True, ("trace",))
    assert home.is_dir()
    source = trace_folder(tmp_path / "source")
    with pytest.raises(OutputError, match="which this command reads"):
        start_over(source, True, ("probe", "trace"), inputs=(source,))
    assert source.is_dir()


def test_cli_overwrite_refuses_a_foreign_folder_and_leaves_it(tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    run = trace_folder(tmp_path / "run")
    code, output = cli("probe", run, "--out", mine, "--overwrite")
    assert code == 2 and "is not a trusttrace run folder (it holds notes.txt), so it is left as it is" in output
    assert (mine / "notes.txt").read_text() == "keep"
    code, output = cli("report", run, "--out", mine, "--overwrite", "--no-png")
    assert code == 2 and "notes.txt" in output and (mine / "notes.txt").read_text() == "keep"
    code, output = cli("report", run, "--no-png")
    assert code == 0 and (run / "report" / "index.html").is_file()
    (run / "report" / "stale.png").write_text("")  # a report folder holds index.html, figures/, tables/ only
    code, output = cli("report", run, "--no-png", "--overwrite")
    assert code == 2 and "stale.png" in output
    (run / "report" / "stale.png").unlink()
    code, output = cli("report", run, "--no-png", "--overwrite")
    assert code == 0 and (run / "report" / "index.html").is_file() and (run / "results.csv").is_file()


# ---------------------------------------------------------------- report


def test_report_refuses_an_empty_folder_and_a_malformed_table(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    code, output = cli("report", empty, "--no-png")
    assert code == 2 and "Nothing to report in" in output and "trace, probe, steer, pretrain or demo" in output
    assert list(empty.iterdir()) == []
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "results.csv").write_text("step,dimension,metric\n0,toxicity,accuracy\n")
    with pytest.raises(RunFolderError, match=r"bad/results.csv lacks column\(s\) \['layer', 'value'\]"):
        run_report(ReportConfig((str(bad),), png=False))
    (bad / "results.csv").write_text("step,dimension,layer,metric,value\n0,toxicity,zero,accuracy,0.9\n")
    with pytest.raises(RunFolderError, match=r"results.csv, data row 1: layer 'zero' is not a whole number ≥ 0"):
        run_report(ReportConfig((str(bad),), png=False))
    assert sorted(p.name for p in bad.iterdir()) == ["results.csv"]
    file = tmp_path / "file.txt"
    file.write_text("mine")
    code, output = cli("report", trace_folder(tmp_path / "run"), "--out", file, "--no-png")
    assert code == 2 and "is a file, not a folder" in output and file.read_text() == "mine"


def test_report_refuses_a_nan_budget(tmp_path):
    steer = tmp_path / "steer"
    steer.mkdir()
    rows = [(source, layer, alpha, dim, metric, value) for source, layer, alpha in
            (("unsteered", -1, 0.0), ("self", 1, -2.0), ("self", 1, 2.0))
            for dim, metric, value in (("toxicity", "toxic_ratio", 0.4), ("general", "perplexity", 10.0))]
    table = pd.DataFrame(rows, columns=["source_revision", "layer", "alpha", "dimension", "metric", "value"])
    table.to_csv(steer / "steering.csv", index=False)
    (steer / "steer_config.json").write_text('{"ppl_budget": NaN}')
    with pytest.raises(RunFolderError, match=r"steer_config.json: ppl_budget nan is not a positive finite number"):
        run_report(ReportConfig((str(steer),), png=False))
    (steer / "steer_config.json").write_text(json.dumps({"ppl_budget": 1.5}))
    assert run_report(ReportConfig((str(steer),), png=False)).page.is_file()
    table[table.metric != "perplexity"].to_csv(steer / "steering.csv", index=False)
    with pytest.raises(RunFolderError, match=r"steering.csv: no perplexity rows \(dimension 'toxicity'\)"):
        run_report(ReportConfig((str(steer),), png=False, overwrite=True))


@pytest.mark.skipif(os.name != "posix", reason="file modes")
def test_permissions_are_read_not_assumed(tmp_path):
    """As a normal user a read-only parent is refused; as root (who writes anywhere) it is writable."""
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    try:
        if os.geteuid() == 0:
            assert check_output(locked / "run") == locked / "run"
        else:
            with pytest.raises(OutputError, match="is not writable"):
                check_output(locked / "run")
    finally:
        locked.chmod(0o755)
