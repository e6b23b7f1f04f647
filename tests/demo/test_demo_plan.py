"""The demo's time-budget plan: budgets parsed, plans priced and chosen, the plan kept across reruns."""

import json
import time

import pytest
from typer.testing import CliRunner

from trusttrace.cli import app
from trusttrace.core.errors import OptionError
from trusttrace.core.progress import Progress
from trusttrace.demo import job as demo
from trusttrace.demo import plan as demo_plan
from trusttrace.demo.job import DemoConfig, run_demo
from trusttrace.demo.plan import PLANS, PlanSize, Throughput, at, choose, estimate, measure, parse_budget
from trusttrace.testing import write_text_corpus


@pytest.mark.parametrize(("text", "seconds"), [("15m", 900.0), ("900s", 900.0), ("900", 900.0), ("1h", 3600.0),
                                               ("1.5H", 5400.0), (" 2m ", 120.0), ("none", None)])
def test_budgets_are_read_in_seconds(text, seconds):
    assert parse_budget(text) == seconds


@pytest.mark.parametrize("text", ["abc", "-5m", "0", "nan", "infm", "15min", ""])
def test_a_budget_that_is_no_time_is_refused_with_examples(text):
    with pytest.raises(OptionError, match="15m"):
        parse_budget(text)


def speeds(scale: float) -> dict[str, Throughput]:
    """Throughputs of a machine ``scale`` times slower than a reference one."""
    def two(a, b):
        return (a * scale, b * scale)

    return {"small": Throughput("small", 0.25 * scale, two(1.5, 3), two(0.7, 1.5), 20, 0.2 * scale, 0.01 * scale),
            "compact": Throughput("compact", 0.06 * scale, two(0.8, 1.5), two(0.35, 0.7), 20, 0.1 * scale,
                                  0.004 * scale)}


def pick(budget, scale):
    return choose(budget, speeds(scale), steer_dimensions=2, alphas=4, proxy_betas=1, elapsed_s=30.0,
                  measured={"device": "cpu", "dtype": "float32"})


def test_plans_are_priced_largest_first_and_every_stage_counted():
    costs = [estimate(p, speeds(1.0)[p.size], steer_dimensions=2, alphas=4, proxy_betas=1, elapsed_s=30.0)
             for p in PLANS]
    totals = [c["total"] for c in costs]
    assert totals == sorted(totals, reverse=True)
    assert set(costs[0]) == {"measuring and preparing", "pre-training", "live tracing", "fine-tuning", "steering",
                             "report", "total"}
    assert costs[0]["total"] == pytest.approx(sum(v for k, v in costs[0].items() if k != "total"), abs=0.5)
    slower = estimate(PLANS[0], speeds(2.0)["small"], steer_dimensions=2, alphas=4, proxy_betas=1, elapsed_s=30.0)
    assert slower["pre-training"] == pytest.approx(2 * costs[0]["pre-training"], rel=1e-3)


def test_trace_seconds_follow_the_line_through_the_two_calibration_sizes():
    assert at((4.0, 7.0), 40) == pytest.approx(4.0)
    assert at((4.0, 7.0), 100) == pytest.approx(7.0)
    assert at((4.0, 7.0), 600) == pytest.approx(4.0 + 0.05 * 560)  # fixed part 2 s, 0.05 s per statement
    # noise made the larger trace faster: still a quarter of the proportional cost per statement
    assert at((8.0, 6.0), 600) == pytest.approx(8.0 + 0.25 * 6.0 / 100 * 560)


def test_the_largest_plan_that_fits_is_chosen():
    fast = pick(900, 1.0)
    assert fast.size.name == "full" and fast.estimate_s["total"] <= 0.85 * 900
    assert "largest plan expected to end within 85%" in fast.reason and "float32" in fast.reason
    slow = pick(900, 3.0)
    assert slow.size.name not in ("full",) and slow.estimate_s["total"] <= 0.85 * 900
    assert f"{PLANS[[p.name for p in PLANS].index(slow.size.name) - 1].name!r} would take" in slow.reason
    assert pick(None, 50.0).size.name == "full"  # no budget: the full plan, however slow


def test_a_machine_too_slow_for_any_plan_gets_the_smallest_and_is_told(caplog):
    plan = pick(900, 40.0)
    assert plan.size == PLANS[-1]
    assert "No plan fits the 15.0 min budget" in plan.reason and "over" in plan.reason and "--budget" in plan.reason
    assert "No plan fits" in caplog.text


TINY_PLANS = (PlanSize("big", "tiny", 40, "0,1,4,40", 40, 4, 10, "x"),
              PlanSize("little", "tiny", 6, "0,2,6", 40, 2, 10, "y"))


def test_a_budgeted_demo_records_its_plan_and_a_rerun_keeps_it(tmp_path, sft_data, monkeypatch):
    calls = []

    def fake_measure(sizes, pretrain_kwargs, data_dir, steer_dimensions, seed, progress):
        calls.append(list(sizes))
        return {"tiny": Throughput("tiny", 1.0, (10.0, 10.0), (10.0, 10.0), 5.0, 0.5, 0.1)}

    monkeypatch.setattr(demo_plan, "PLANS", TINY_PLANS)
    monkeypatch.setattr(demo, "PLANS", TINY_PLANS)
    monkeypatch.setattr(demo, "measure", fake_measure)
    corpus = write_text_corpus(tmp_path / "text.txt")
    out = tmp_path / "demo"
    config = DemoConfig(out=str(out), corpus=str(corpus), data_dir=str(sft_data), alphas=(-4.0, 4.0),
                        steer_dimensions=("fairness",), size="tiny", budget_s=160.0)
    big = estimate(TINY_PLANS[0], fake_measure([], {}, None, (), 0, None)["tiny"], steer_dimensions=1, alphas=2,
                   proxy_betas=1, elapsed_s=0.0)
    little = estimate(TINY_PLANS[1], fake_measure([], {}, None, (), 0, None)["tiny"], steer_dimensions=1, alphas=2,
                      proxy_betas=1, elapsed_s=0.0)
    assert little["total"] < 0.85 * 160 < big["total"]  # so the smaller plan is the one chosen
    calls.clear()
    summary = run_demo(config).summary
    assert calls == [["tiny", "tiny"]]
    saved = json.loads((out / "demo_plan.json").read_text())
    assert saved["plan"]["name"] == "little" and saved["budget_s"] == 160.0
    assert "perplexity" in saved["chat_model_reached"]["fairness"]  # what the chat model reached, unsteered
    assert set(saved["actual_s"]) >= {"pre-training", "live tracing", "fine-tuning", "steering", "total"}
    assert json.loads((out / "demo_config.json").read_text())["steps"] == 6
    saved_steps = sorted(p.name for p in (out / "pretrain" / "checkpoints").glob("step*") if p.is_dir())
    assert saved_steps == ["step0", "step2", "step6"]
    assert summary["plan"]["name"] == "little" and "Plan `little`" in (out / "summary.md").read_text()
    again = run_demo(DemoConfig(out=str(out), corpus=str(corpus), data_dir=str(sft_data), alphas=(-4.0, 4.0),
                                steer_dimensions=("fairness",), size="tiny", budget_s=60.0)).summary
    assert calls == [["tiny", "tiny"]]  # not measured again: the folder keeps the plan it started with
    assert json.dumps(again, sort_keys=True) == json.dumps(summary, sort_keys=True)


def test_a_demo_started_without_a_budget_is_not_replanned(tmp_path, sft_data):
    corpus = write_text_corpus(tmp_path / "text.txt")
    out = tmp_path / "demo"
    (out / "pretrain" / "checkpoints" / "step0").mkdir(parents=True)
    (out / "pretrain" / "checkpoints" / "step0" / "config.json").write_text("{}")
    with pytest.raises(OptionError, match="--budget none"):
        run_demo(DemoConfig(out=str(out), corpus=str(corpus), data_dir=str(sft_data), size="tiny", budget_s=900.0))


def test_measuring_times_the_demos_own_work(tmp_path, sft_data):
    corpus = write_text_corpus(tmp_path / "text.txt")
    started = time.perf_counter()
    found = measure(["tiny"], {"out": str(tmp_path / "pretrain"), "corpus": str(corpus), "seed": 0},
                    str(sft_data), ("fairness",), 0, Progress())
    wall = time.perf_counter() - started
    t = found["tiny"]
    assert t.size == "tiny"
    assert t.train_step_s > 0 and min(t.trace_checkpoint_s) > 0 and t.eval_once_s > 0 and t.eval_each_s > 0
    # Each figure is (at most) the length of its own stretch of the measuring, in seconds, and no two stretches
    # overlap: together they fit in its wall time (a figure in other units, or counted twice, would not).
    parts = (t.train_step_s + sum(t.trace_once_s) + sum(t.trace_checkpoint_s) + t.eval_once_s + t.eval_each_s
             + t.eval_item_s * (demo_plan.CAL_ITEMS - demo_plan.CAL_ITEMS // 4))
    assert parts <= wall
    assert (tmp_path / "pretrain" / "tokenizer").is_dir()  # prepared where the pre-training stage reuses it


def test_cli_refuses_a_budget_beside_explicit_sizes(tmp_path):
    res = CliRunner().invoke(app, ["demo", "--out", str(tmp_path / "d"), "--budget", "15m", "--steps", "10"])
    said = " ".join(res.output.split())  # the console wraps long lines
    assert res.exit_code == 2 and "--steps" in said and "not both" in said
    assert not (tmp_path / "d" / "demo_config.json").exists()
    res = CliRunner().invoke(app, ["demo", "--out", str(tmp_path / "d"), "--budget", "soon"])
    assert res.exit_code == 2 and "is not a time" in " ".join(res.output.split())
