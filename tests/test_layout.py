"""Run folders: one place for every path, what a folder holds, and refusing to mix settings."""

import json

import pandas as pd
import pytest

from trusttrace.layout import (
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
        tmp_path / "steer-toxicity" / "vectors" / "org__rev" / "toxicity.safetensors")
    assert TraceLayout(tmp_path).activation("org/rev", "fairness").parent.name == safe_name("org/rev") == "org__rev"
    assert safe_name("proxy:step0") == "proxy__step0"  # no colon in a file name: some file systems refuse it
    assert SteerLayout(tmp_path).part("step/1", 3, -2.0).name == "step__1__L3__a-2.csv"
    assert report_for(tmp_path).root == tmp_path / "report"
    assert report_for(tmp_path / "x.csv", 2).root == tmp_path / "report-compare"


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
