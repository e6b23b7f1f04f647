import pytest

from trusttrace.models.checkpoints import (
    AMBER_REVISIONS,
    PYTHIA_STEPS,
    CheckpointSeries,
    log_spaced_indices,
    step_of,
)


def test_catalogs():
    amber = CheckpointSeries.resolve("LLM360/Amber")
    assert amber.source == "catalog" and len(amber) == 360 == len(AMBER_REVISIONS)
    assert amber.names[0] == "ckpt_000" and amber.names[-1] == "ckpt_359"
    pythia = CheckpointSeries.resolve("EleutherAI/pythia-70m")
    assert len(pythia) == 154 and pythia.names[:5] == ["step0", "step1", "step2", "step4", "step8"]
    assert pythia.names[-1] == "step143000" and PYTHIA_STEPS[11] == 1000


@pytest.mark.parametrize("name,step", [("step1000-tokens4B", 1000), ("ckpt_179", 179), ("checkpoint-500", 500),
                                       ("main", None), ("step_20", 20)])
def test_step_of(name, step):
    assert step_of(name) == step


def test_selectors():
    s = CheckpointSeries.resolve("LLM360/Amber")
    assert s.select("first:3").names == ["ckpt_000", "ckpt_001", "ckpt_002"]
    assert s.select("last:2").names == ["ckpt_358", "ckpt_359"]
    assert s.select("every:120").names == ["ckpt_000", "ckpt_120", "ckpt_240"]
    assert s.select("ckpt_179, ckpt_000").names == ["ckpt_179", "ckpt_000"]
    assert s.select("all") is s and s.select(None) is s
    picked = s.select("log:10")
    assert len(picked) == 10 and picked.names[0] == "ckpt_000" and picked.names[-1] == "ckpt_359"
    steps = [c.step for c in picked]
    assert steps == sorted(set(steps))


@pytest.mark.parametrize("n", [1, 2, 5, 16, 154, 400])
def test_log_spacing_is_distinct_and_includes_ends(n):
    idx = log_spaced_indices(list(PYTHIA_STEPS), n)
    assert len(idx) == min(n, 154) and len(set(idx)) == len(idx) and idx == sorted(idx)
    assert idx[-1] == 153 and (n == 1 or idx[0] == 0)


@pytest.mark.parametrize("bad", ["first:0", "every:x", "log:-2", "ckpt_999"])
def test_bad_selector_explains(bad):
    with pytest.raises(ValueError, match="Selector"):
        CheckpointSeries.resolve("LLM360/Amber").select(bad)


def test_local_series_sorted_by_step(tiny_series):
    s = CheckpointSeries.resolve(str(tiny_series))
    assert s.source == "local" and s.names == ["step0", "step10", "step100"]
    assert [c.step for c in s] == [0, 10, 100] and all(c.revision is None for c in s)


def test_local_folder_without_steps(tmp_path):
    (tmp_path / "final").mkdir()
    (tmp_path / "final" / "config.json").write_text("{}")
    with pytest.raises(ValueError, match="step number"):
        CheckpointSeries.from_local(tmp_path)


def test_single_checkpoint_and_explicit_revisions(tiny_models):
    assert CheckpointSeries.resolve(str(tiny_models["gpt2"])).source == "single"
    s = CheckpointSeries.resolve("allenai/OLMo-1B", ["step20000-tokens84B", "main"])
    assert s.names == ["step20000-tokens84B", "main"] and s.checkpoints[0].step == 20000
