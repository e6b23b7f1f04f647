"""Reading tables back: a text column that was empty in every row comes back as "" (not float NaN), without
pandas' warning that ``fillna("")`` on such a column will raise in pandas 4."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from trusttrace.report.load import checked_results
from trusttrace.runs.tables import RESULT_COLUMNS, order_results, text, trace_summary


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
