"""Run folders: one place for every path, what a folder holds, and refusing to mix settings."""

import json

import pandas as pd
import pytest

from trusttrace.runs.layout import (
    DemoLayout,
    PretrainLayout,
    RunLayout,
    SteerLayout,
    TraceLayout,
    record_settings,
    refuse_other_settings,
    report_for,
    safe_name,
)


def test_paths_nest_and_names_are_safe(tmp_path):
    demo = DemoLayout(tmp_path)
    assert demo.pretrain.trace.results_csv == tmp_path / "pretrain" / "trace" / "results.csv"
    assert demo.steer("toxicity").vectors.vector("org/rev", "toxicity") == (
        tmp_path / "steer-toxicity" / "vectors" / "org%2Frev" / "toxicity.safetensors")
    assert TraceLayout(tmp_path).activation("org/rev", "fairness").parent.name == safe_name("org/rev") == "org%2Frev"
    assert safe_name("proxy:step0") == "proxy%3Astep0"  # no colon in a file name: some file systems refuse it
    assert SteerLayout(tmp_path).part("step/1", 3, -2.0).name == "step%2F1__L3__a-2.csv"
    assert report_for(tmp_path).root == tmp_path / "report"
    assert report_for(tmp_path / "x.csv", 2).root == tmp_path / "report-compare"


@pytest.mark.parametrize("name", ["step100", "ckpt_000", "toxicity", "main", "step1000-tokens4B", "v1.2+local"])
def test_plain_names_are_kept(name):
    assert safe_name(name) == name


HOSTILE = ["../../x/PWNED", "..", ".", "", "/etc/passwd", "a/b", "a__b", "a%2Fb", "step10:a", "step10__a",
           "x'><img src=x onerror=alert(1)>", "nul\0byte", "tab\there", "é", "e\u0301", ".hidden", "~",
           "x" * 300, "x" * 299 + "y", "%" * 100, "ü" * 200]


def test_hostile_names_become_one_safe_file_name_each(tmp_path):
    names = [h.encode().decode("unicode_escape") if "\\" in h else h for h in HOSTILE]
    encoded = [safe_name(n) for n in names]
    assert len(set(encoded)) == len(set(names))  # never two names on one file
    for name, file_name in zip(names, encoded):
        assert "/" not in file_name and "\0" not in file_name and file_name not in (".", "..")
        assert not file_name.startswith(".") and 0 < len(file_name.encode()) <= 120 + 33
        path = tmp_path / "run" / file_name
        path.parent.mkdir(exist_ok=True)
        path.write_text(name)  # a name the file system takes, inside the folder
        assert path.resolve().parent == (tmp_path / "run").resolve()


def test_names_one_file_system_takes_for_one_are_refused():
    from trusttrace.core.errors import UnknownNameError
    from trusttrace.runs.layout import check_distinct

    check_distinct(["step10:a", "step10__a", "org/b", "org__b"], "checkpoints")  # distinct file names
    with pytest.raises(UnknownNameError, match="'Step10' and 'step10'"):
        check_distinct(["Step10", "step10"], "checkpoints")


def _results(folder):
    folder.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"step": [0], "dimension": ["toxicity"], "layer": [0], "metric": ["accuracy"], "value": [0.5],
                  "revision": ["step0"], "commit": [""]}).to_csv(folder / "results.csv", index=False)


def test_what_a_folder_holds(tmp_path):
    assert RunLayout(tmp_path / "missing").kind == "empty" and RunLayout(tmp_path / "missing").trace() is None
    _results(tmp_path / "trace")
    assert RunLayout(tmp_path / "trace").kind == "trace"
    assert RunLayout(tmp_path / "trace").trace() == TraceLayout(tmp_path / "trace")
    pre = PretrainLayout(tmp_path / "demo" / "pretrain")
    pre.checkpoints_dir.mkdir(parents=True)
    _results(pre.trace.root)
    steer = SteerLayout(tmp_path / "demo" / "steer-toxicity")
    steer.root.mkdir()
    steer.steering_csv.write_text("source_revision\n")
    demo = RunLayout(tmp_path / "demo")  # a demo-shaped folder reads as one even without demo_config.json
    assert demo.kind == "demo" and demo.trace() == pre.trace and demo.pretrain() == pre
    assert list(demo.steers()) == ["steer-toxicity"] and RunLayout(steer.root).kind == "steer"
    assert RunLayout(pre.root).kind == "pretrain" and RunLayout(pre.root).trace() == pre.trace
    (tmp_path / "probe").mkdir()
    (tmp_path / "probe" / "manifest.json").write_text(json.dumps({"analysis": {}}))
    assert RunLayout(tmp_path / "probe").kind == "probe"


def test_other_settings_are_refused_with_the_differences(tmp_path):
    path = tmp_path / "run" / "settings.json"
    record_settings(path, {"seed": 0, "layers": (1, 2)}, "a sweep")
    record_settings(path, {"seed": 0, "layers": (1, 2)}, "a sweep")  # the same: fine (tuples read back as lists)
    with pytest.raises(ValueError, match=r"holds a sweep made with other settings \(seed: 0 → 1\)"):
        record_settings(path, {"seed": 1, "layers": (1, 2)}, "a sweep")


def test_a_manifest_of_the_flat_format_still_guards_its_folder(tmp_path):
    """Folders traced before the configs were nested keep their settings in the flat config."""
    layout = TraceLayout(tmp_path)
    layout.write_manifest({"config": {"model": "m", "seed": 0, "protocol": "cv"},
                           "datasets": {"toxicity": {"sha256": "a" * 64}}})

    def check_resume(settings: dict, datasets: dict) -> None:  # what resume.resume_trace does with a finished run
        refuse_other_settings(layout.root, layout.settings_diff(settings, datasets), "a run")

    check_resume({"model": "m", "seed": 0, "protocol": "cv"}, {"toxicity": "a" * 64})
    with pytest.raises(ValueError, match="protocol: 'cv' → 'paper-code'"):
        check_resume({"model": "m", "seed": 0, "protocol": "paper-code"}, {"toxicity": "a" * 64})
    with pytest.raises(ValueError, match="dataset toxicity"):
        check_resume({"model": "m", "seed": 0, "protocol": "cv"}, {"toxicity": "b" * 64})
