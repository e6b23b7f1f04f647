import pandas as pd
import pytest
from typer.testing import CliRunner

from trusttrace.cli import app
from trusttrace.runs.tables import best_alphas
from trusttrace.steer.job import SteerConfig
from trusttrace.steering.vector import SteeringVector


def test_steer_sweeps_sources_on_a_separate_target(tiny_series, data_dir, tmp_path):
    out = tmp_path / "steer"
    res = CliRunner().invoke(app, [
        "steer", "--source", str(tiny_series), "--target", str(tiny_series / "step100"), "--dimension", "privacy",
        "--select", "all", "--layers", "1", "--alphas", "-4,4", "--limit", "20", "--data-dir", str(data_dir),
        "--dtype", "float32", "--positions", "all", "--out", str(out)])
    assert res.exit_code == 0, res.output
    table = pd.read_csv(out / "steering.csv")
    controls = {"unsteered", "prompt", "random", "random-0", "random-1", "random-2"}
    assert set(table.source_revision) == {"self", "step0", "step10", "step100"} | controls
    steered = table[(table.source_revision == "step0") & (table.metric == "perplexity")]
    assert len(steered) == 2 and (steered.value != table[(table.source_revision == "unsteered")
                                                        & (table.metric == "perplexity")].value.iloc[0]).all()
    cos = table[(table.source_revision == "self") & (table.metric == "cosine_to_self")].value
    assert cos.iloc[0] == pytest.approx(1.0)
    p = table[(table.metric == "accuracy_p_mcnemar") & (table.source_revision == "step0")]
    assert len(p) == 2 and p.value.between(0, 1).all() and p.spec.str.contains("items 1→0").all()
    assert not (table.source_revision.eq("unsteered") & table.metric.str.endswith("p_mcnemar")).any()
    best = pd.read_csv(out / "best.csv")
    assert list(best.source_revision) == ["unsteered", "prompt", "self", "step0", "step10", "step100"]
    assert best.beats_random.iloc[2:].notna().all()  # every vector was tested against the random directions
    wide = table.pivot_table(index=["source_revision", "layer", "alpha"], columns="metric", values="value")
    shares = wide[["accuracy_improved", "accuracy_unchanged", "accuracy_worsened"]].dropna()
    assert len(shares) == 4 * 2 + 3 * 2 + 1 and (shares.sum(axis=1) - 1).abs().max() < 1e-12  # they partition
    pooled = table[(table.source_revision == "random") & (table.metric == "accuracy_ci_low")]
    assert len(pooled) == 2 and (pooled.n == 3 * 20).all()  # two α, three draws of 20 items
    assert wide.loc[("step0", 1, 4.0), "accuracy_p_vs_random"] <= 1
    assert wide.loc[("unsteered", -1, 0.0), "accuracy_detectable"] > 0 or \
        table[table.metric == "accuracy_detectable"].spec.str.startswith(("at chance", "at its bound")).all()
    corr = pd.read_csv(out / "correlation.csv")  # three sources: probe accuracy against the effect
    assert set(corr.alpha) == {-4.0, 4.0} and corr.n_sources.eq(3).all()
    assert (out / "source" / "results.csv").exists() and (out / "target" / "results.csv").exists()
    written = sorted(p.relative_to(out / "vectors").as_posix() for p in (out / "vectors").rglob("*.safetensors"))
    assert written == ["self/privacy.safetensors", "step0/privacy.safetensors", "step10/privacy.safetensors",
                       "step100/privacy.safetensors"]
    vector = SteeringVector.load(out / "vectors" / "step10" / "privacy.safetensors")
    assert vector.meta["revision"] == "step10" and vector.meta["dimension"] == "privacy"
    assert "vectors" in res.output  # the command says where they went


def test_best_alpha_respects_the_perplexity_budget():
    rows = []
    for src, alpha, tox, ppl in [("unsteered", 0, 0.10, 10.0), ("a", -1, 0.05, 12.0), ("a", -2, 0.01, 30.0),
                                 ("b", -1, 0.20, 50.0)]:
        rows += [(src, 1, alpha, "toxicity", "toxic_ratio", tox), (src, 1, alpha, "general", "perplexity", ppl)]
    table = pd.DataFrame(rows, columns=["source_revision", "layer", "alpha", "dimension", "metric", "value"])
    best = best_alphas(table, "toxicity", 1.33).set_index("source_revision")
    assert best.loc["a", "alpha"] == -1 and best.loc["a", "toxic_ratio"] == 0.05  # α=-2 breaks the budget
    assert not best.loc["b", "within_budget"]


def test_bad_steer_config():
    with pytest.raises(ValueError, match="dimension"):
        SteerConfig(source="s", target="t", dimension="honesty", out="o")
    with pytest.raises(ValueError, match="at least one layer"):
        SteerConfig(source="s", target="t", dimension="privacy", out="o", layers=())


def test_source_can_name_one_revision(tmp_path):
    config = SteerConfig(source="LLM360/Amber@ckpt_179", target="LLM360/AmberChat", dimension="toxicity", out="o")
    assert config.source_model == "LLM360/Amber" and config.source_revisions == ("ckpt_179",)
    assert config.settings()["source"] == "LLM360/Amber" and config.settings()["revisions"] == ("ckpt_179",)
    folder = tmp_path / "run@2"
    folder.mkdir()
    assert SteerConfig(source=str(folder), target="t", dimension="toxicity", out="o").source_model == str(folder)
    with pytest.raises(ValueError, match="use one"):
        SteerConfig(source="m@a", target="t", dimension="toxicity", out="o", revisions=("b",))
    with pytest.raises(ValueError, match="MODEL@REVISION"):
        SteerConfig(source="m@", target="t", dimension="toxicity", out="o")
    with pytest.raises(ValueError, match="perplexity source"):
        SteerConfig(source="m", target="t", dimension="toxicity", out="o", perplexity_source="wiki")


def test_best_alpha_takes_only_vectors_that_beat_random():
    rows = []
    for src, alpha, tox, ppl, effect, p in [("unsteered", 0, 0.40, 10.0, None, None),
                                            ("a", -1, 0.30, 11.0, -0.10, 0.01), ("a", -2, 0.20, 12.0, -0.05, 0.30),
                                            ("b", -1, 0.35, 11.0, +0.02, 0.01), ("b", -2, 0.25, 12.0, -0.02, 0.60)]:
        rows += [(src, 1, alpha, "toxicity", "toxic_ratio", tox), (src, 1, alpha, "general", "perplexity", ppl)]
        if effect is not None:
            rows += [(src, 1, alpha, "toxicity", "toxic_ratio_effect_vs_random", effect),
                     (src, 1, alpha, "toxicity", "toxic_ratio_p_vs_random", p)]
    table = pd.DataFrame(rows, columns=["source_revision", "layer", "alpha", "dimension", "metric", "value"])
    best = best_alphas(table, "toxicity", 1.33).set_index("source_revision")
    assert best.loc["a", "alpha"] == -1 and best.loc["a", "beats_random"]  # α −2 is lower, but not beyond random
    assert best.loc["b", "beats_random"] == False and pd.isna(best.loc["b", "alpha"])
    assert "random directions" in best.loc["b", "why"] and best.loc["b", "within_budget"]


def test_a_source_that_is_the_target_is_evaluated_once(tiny_series, data_dir, tmp_path, monkeypatch):
    from trusttrace.steer import job as sweep

    steered = []
    real = sweep.run_suite

    def counted(lm, config, steering, judges):
        steered.append(None if steering is None else (steering.vector.meta.get("revision"), steering.alpha))
        return real(lm, config, steering, judges)

    monkeypatch.setattr(sweep, "run_suite", counted)
    model = str(tiny_series / "step100")
    result = sweep.run_steer(SteerConfig(
        source=model, target=model, dimension="privacy", out=str(tmp_path / "s"), layers=(1,), alphas=(-4.0, 4.0),
        limit=20, data_dir=str(data_dir), dtype="float32", positions="all", random_vectors=1))
    table = result.table
    (source,) = set(table.source_revision) - {"self", "unsteered", "prompt", "random", "random-0"}
    # unsteered, prompt, the one vector at two α, one random draw at two α: the source's rows are self's
    assert len(steered) == 6 and sum(s is not None and s[0] != "random-0" for s in steered) == 2
    def rows(name):
        return table[table.source_revision == name].drop(columns="source_revision").reset_index(drop=True)
    pd.testing.assert_frame_equal(rows(source), rows("self"))
    assert len(rows(source)) > 0 and rows(source).metric.str.endswith("_p_vs_random").any()
    parts = tmp_path / "s" / "parts"
    for alpha in ("-4", "+4"):  # both names have their part and outcomes, as a resumed sweep needs
        assert (parts / f"{source}__L1__a{alpha}.items.csv").read_text() == \
            (parts / f"self__L1__a{alpha}.items.csv").read_text()
