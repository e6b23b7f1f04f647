"""Proxy-tuned rows in a steer sweep: the same numbers as ``evaluate``, resumed from parts/, options checked."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from typer.testing import CliRunner

from trusttrace.cli import app
from trusttrace.core.errors import OptionError
from trusttrace.evaluate import EvaluateConfig, run_evaluate
from trusttrace.evaluate.suite import SuiteConfig
from trusttrace.steer import job as sweep
from trusttrace.steer.job import SteerConfig
from trusttrace.testing import save_tiny


@pytest.fixture(scope="module")
def tuned_base(tmp_path_factory):
    root = tmp_path_factory.mktemp("proxy_models")
    return save_tiny(root / "tuned", "llama", seed=5), save_tiny(root / "base", "llama", seed=6)


def _metrics(table: pd.DataFrame) -> pd.Series:
    """name → value for the suite's own rows (not the sweep's tests and cosines)."""
    tests = ("_p_mcnemar", *(f"_{share}{end}" for share in ("improved", "unchanged", "worsened")
                            for end in ("", "_ci_low", "_ci_high")))
    own = table[~table.metric.str.endswith(tests) & (table.metric != "cosine_to_self")]
    return own.set_index(["dimension", "metric"]).value.sort_index()


def _evaluate(model, data_dir, **proxy) -> pd.Series:
    suite = SuiteConfig(dimensions=("privacy",), limit=20, data_dir=str(data_dir), perplexity_source="statements")
    return _metrics(run_evaluate(EvaluateConfig(str(model), suite=suite, dtype="float32", **proxy)).table)


def test_sweep_holds_proxy_rows_equal_to_evaluate_and_resumes(tiny_series, tuned_base, data_dir, tmp_path,
                                                             monkeypatch):
    tuned, base = tuned_base
    out = tmp_path / "steer"
    args = ["steer", "--source", str(tiny_series), "--revisions", "step0", "--target", str(tiny_series / "step100"),
            "--dimension", "privacy", "--layers", "1", "--alphas", "4", "--limit", "20", "--data-dir", str(data_dir),
            "--dtype", "float32", "--perplexity", "statements", "--out", str(out),
            "--proxy-tuned", str(tuned), "--proxy-base", str(base), "--proxy-betas", "0,1",
            "--random-vectors", "0", "--baseline-prompt", "none"]  # the proxy rows alone, beside the vectors
    calls = []
    real = sweep.run_suite
    monkeypatch.setattr(sweep, "run_suite", lambda *a, **k: calls.append(a[0].info.ref) or real(*a, **k))
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert len(calls) == 6  # unsteered, self, step0 at α 4, step0 proxy-tuned at β 0 and 1, the tuned model
    table = pd.read_csv(out / "steering.csv")
    assert list(dict.fromkeys(table.source_revision)) == ["unsteered", "self", "step0", "proxy:step0", "tuned"]
    proxy = table[table.source_revision == "proxy:step0"]
    assert set(proxy.alpha) == {0.0, 1.0} and proxy.layer.eq(-1).all() and "cosine_to_self" not in set(proxy.metric)
    for source, alpha, want in [
        ("proxy:step0", 1.0, _evaluate(tiny_series / "step0", data_dir, proxy_tuned=str(tuned),
                                       proxy_base=str(base), beta=1.0)),
        ("proxy:step0", 0.0, _evaluate(tiny_series / "step0", data_dir)),  # β = 0: the checkpoint alone
        ("tuned", 0.0, _evaluate(tuned, data_dir)),
    ]:
        got = _metrics(table[(table.source_revision == source) & (table.alpha == alpha)])
        pd.testing.assert_series_equal(got, want, check_exact=False, atol=1e-5, rtol=1e-5)
    p = table[(table.metric == "accuracy_p_mcnemar") & table.source_revision.isin(["proxy:step0", "tuned"])]
    assert len(p) == 3 and p.value.between(0, 1).all() and p.spec.str.contains("against unsteered").all()
    best = pd.read_csv(out / "best.csv")
    assert set(best.source_revision) == {"unsteered", "self", "step0", "proxy:step0", "tuned"}
    pick = best.set_index("source_revision").loc["proxy:step0"]  # the best β within the perplexity budget
    assert not pick.within_budget or (pick.layer == -1 and pick.alpha in (0.0, 1.0))
    settings = json.loads((out / "steer_config.json").read_text())
    assert settings["proxy_tuned"] == str(tuned) and settings["proxy_betas"] == [0.0, 1.0]

    calls.clear()
    res = CliRunner().invoke(app, args)  # everything is in parts/: nothing is evaluated again
    assert res.exit_code == 0, res.output
    assert calls == []
    pd.testing.assert_frame_equal(pd.read_csv(out / "steering.csv"), table)

    res = CliRunner().invoke(app, ["report", str(out), "--no-png"])  # the report draws the proxy rows too
    assert res.exit_code == 0, res.output
    assert "proxy:step0" in next((out / "report").glob("*.html")).read_text()

    other = [a if a != "0,1" else "0.5" for a in args]  # other proxy settings: refused, the folder kept
    res = CliRunner().invoke(app, other)
    assert res.exit_code == 2 and "proxy_betas" in res.output
    assert calls == [] and (out / "steering.csv").exists()


def test_half_given_proxy_options_are_refused(tiny_series, data_dir, tmp_path):
    common = ["steer", "--source", str(tiny_series), "--target", str(tiny_series / "step100"),
              "--dimension", "privacy", "--data-dir", str(data_dir), "--out", str(tmp_path / "o")]
    for extra, says in [(["--proxy-tuned", "t"], "--proxy-tuned needs --proxy-base"),
                        (["--proxy-base", "b"], "--proxy-base needs --proxy-tuned"),
                        (["--proxy-betas", "1"], "--proxy-betas 1 without --proxy-tuned"),
                        (["--proxy-tuned", "t", "--proxy-base", "b", "--proxy-betas", "1,x"], "'x' is not a number")]:
        res = CliRunner().invoke(app, [*common, *extra])
        assert res.exit_code == 2 and says in res.output, (extra, res.output)
    assert not (tmp_path / "o").exists()


def test_steer_config_proxy_settings():
    plain = SteerConfig(source="s", target="t", dimension="privacy", out="o")
    assert "proxy_tuned" not in plain.settings()  # folders from before the option still resume
    with pytest.raises(OptionError, match="--proxy-base needs --proxy-tuned"):
        SteerConfig(source="s", target="t", dimension="privacy", out="o", proxy_base="b")
    with pytest.raises(OptionError, match="proxy_betas"):
        SteerConfig(source="s", target="t", dimension="privacy", out="o", proxy_tuned="a", proxy_base="b",
                    proxy_betas=(float("nan"),))
    with pytest.raises(OptionError, match="at least one strength"):
        SteerConfig(source="s", target="t", dimension="privacy", out="o", proxy_tuned="a", proxy_base="b",
                    proxy_betas=())
    config = SteerConfig(source="org/m@c1", target="org/chat", dimension="privacy", out="o", proxy_tuned="org/chat",
                         proxy_base="org/m@c9", proxy_betas=(0.5, 1.0))
    assert config.settings()["proxy_betas"] == (0.5, 1.0)
    names = [name for name, _, _ in sweep.proxy_jobs(["c1"], "org/m", (0.5, 1.0), "org/chat", config.target_model)]
    assert names == ["proxy:c1", "proxy:c1"]  # the tuned model is the target: no row set of its own
