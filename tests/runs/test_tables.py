"""Reading tables back (a text column that was empty in every row comes back as "", without pandas 4's warning)
and the one-line verdicts written from them."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from trusttrace.report.load import checked_results
from trusttrace.runs.tables import RESULT_COLUMNS, order_results, steering_verdict, text, trace_summary


def _read_back(frame: pd.DataFrame) -> pd.DataFrame:
    buffer = io.StringIO()
    frame.to_csv(buffer, index=False)
    return pd.read_csv(io.StringIO(buffer.getvalue()))


def _local_run_rows() -> pd.DataFrame:
    """A local run's results: no commit, no transfer rows, so both columns are empty in every row."""
    rows = [{"model": "tiny", "revision": f"step{s}", "step": s, "dimension": "fairness", "layer": layer,
             "metric": metric, "value": value, "n_train": 80, "n_test": 20, "seed": 0, "protocol": "group-cv",
             "dtype": "float32", "commit": "", "test_dataset": ""}
            for s in (0, 100) for layer in (0, 1)
            for metric, value in (("accuracy", 0.5 + s / 1000 + layer / 10), ("majority_baseline", 0.5))]
    return pd.DataFrame(rows, columns=RESULT_COLUMNS)


def test_text_reads_missing_as_empty_and_keeps_what_is_there():
    assert text(pd.Series([np.nan, np.nan])).tolist() == ["", ""]  # how an all-empty CSV column reads back
    assert text(pd.Series(["abc", None, "d"])).tolist() == ["abc", "", "d"]
    assert text(pd.Series([1, 2])).tolist() == ["1", "2"]


def test_an_all_empty_text_column_reads_back_as_empty_strings_without_a_warning():
    back = _read_back(_local_run_rows())
    assert back["commit"].isna().all() and back["commit"].dtype == np.float64  # what pandas makes of it
    back["revision"] = np.nan  # a hand-made table may leave revisions empty too
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ordered = order_results(back)
        checked = checked_results(back, Path("results.csv"))
        summary = trace_summary(order_results(_read_back(_local_run_rows())))
    assert ordered["commit"].tolist() == [""] * len(back)
    assert ordered["test_dataset"].tolist() == [""] * len(back)
    assert set(checked["revision"]) == {""}  # text, not NaN
    assert len(summary) == 2  # two revisions of one dimension; no row was taken for a transfer row


def _steering_rows(vectors: dict[tuple[str, float], tuple[float, float, float]]) -> pd.DataFrame:
    """A toxicity sweep's table: unsteered at 0.5, random directions at 0.5, and each vector's (toxic ratio,
    effect against random, Fisher's p) at layer 2."""
    rows = [("unsteered", -1, 0.0, "toxic_ratio", 0.5)]
    rows += [("random", 2, alpha, "toxic_ratio", 0.5) for alpha in sorted({a for _, a in vectors})]
    for (source, alpha), (ratio, effect, p) in vectors.items():
        rows += [(source, 2, alpha, "toxic_ratio", ratio), (source, 2, alpha, "toxic_ratio_effect_vs_random", effect),
                 (source, 2, alpha, "toxic_ratio_p_vs_random", p)]
    return pd.DataFrame(rows, columns=["source_revision", "layer", "alpha", "metric", "value"]).assign(
        dimension="toxicity")


def test_the_steering_verdict_names_vectors_that_do_worse_than_random():
    """"No vector beats random" must not read as "the vectors do nothing" when some move the model the wrong
    way beyond what random directions of their norm do; a wrong-way move random explains is not named."""
    vectors = {("good", -2.0): (0.2, -0.3, 0.001), ("bad", 2.0): (0.9, 0.4, 1e-4), ("worse", 4.0): (0.95, 0.45, 1e-5),
               ("noise", -1.0): (0.6, 0.1, 0.2), ("flat", 1.0): (0.5, 0.0, 1.0)}
    line = steering_verdict(_steering_rows(vectors), "toxicity")
    assert "1 of 5 beat the random directions" in line
    assert "2 of 5 make toxic_ratio worse than the random directions do (largest: worse layer 2 α +4, +0.450 vs " \
        "random, p 1e-05)" in line
    calm = {k: v for k, v in vectors.items() if k[0] not in ("bad", "worse")}
    assert "worse than the random" not in steering_verdict(_steering_rows(calm), "toxicity")
    bare = _steering_rows(vectors)
    bare = bare[~bare.metric.str.contains("_vs_random")]  # a sweep run with --random-vectors 0
    assert "no vector was compared with random directions" in steering_verdict(bare, "toxicity")
