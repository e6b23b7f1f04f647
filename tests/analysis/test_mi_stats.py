"""Intervals, nulls and check estimators of the MI rows (trusttrace.analysis.mi_stats), on data with known answers."""

import numpy as np
import pytest
import torch

from trusttrace.analysis.mi_stats import half_samples, mi_rows, restricted_permutations
from trusttrace.analysis.mutual_info import MIConfig, estimate_mi, estimate_mi_columns

NHSIC = MIConfig(estimator="nhsic", sigma=None)


def population(m, seed, signal=2.0, layers=3, d=12):
    """x, t, y with I(T;Y) planted in layer 1 only (layer 0 and 2 independent of the labels)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, m)
    x = rng.normal(size=(m, d))
    t = 0.5 * x[None] + rng.normal(size=(layers, m, d))
    t[min(1, layers - 1), :, 0] += signal * y
    return torch.tensor(x), torch.tensor(t), y


def wide(rows):
    return rows.pivot_table(index="layer", columns="metric", values="value")


def test_columns_equal_one_label_vector_at_a_time():
    x, t, y = population(60, 0)
    cols = np.column_stack([y, 1 - y, np.roll(y, 7)])
    for config in (MIConfig(), NHSIC, MIConfig(estimator="hsic"), MIConfig(estimator="linear-cka")):
        tx, ty = estimate_mi_columns(x, t, cols, config)
        for k in range(3):
            one_tx, one_ty = estimate_mi(x, t, cols[:, k], config)
            np.testing.assert_allclose(ty[:, k], one_ty, rtol=1e-6, atol=1e-9)
            np.testing.assert_allclose(tx, one_tx, rtol=1e-6)


def test_linear_cka_matches_its_formula():
    x, t, y = population(50, 1)
    tx, ty = estimate_mi(x, t, y, MIConfig(estimator="linear-cka"))

    def cka(a, b):
        a, b = a - a.mean(0), b - b.mean(0)
        return np.linalg.norm(a.T @ b) ** 2 / (np.linalg.norm(a.T @ a) * np.linalg.norm(b.T @ b))

    for layer in range(3):
        assert tx[layer] == pytest.approx(cka(t[layer].numpy(), x.numpy()), rel=1e-9)
        assert ty[layer] == pytest.approx(cka(t[layer].numpy(), y[:, None].astype(float)), rel=1e-9)


def test_restricted_permutations_keep_groups():
    rng = np.random.default_rng(0)
    # sst2-like twins sharing a label, and truthfulqa-like questions of 3 answers, one true
    twins = np.repeat(rng.integers(0, 2, 20), 2)
    questions = np.tile([1, 0, 0], 10)
    labels = np.concatenate([twins, questions])
    groups = np.concatenate([np.repeat(np.arange(20), 2), 100 + np.repeat(np.arange(10), 3)])
    perms = restricted_permutations(labels, groups, 50, rng)
    assert perms.shape == (70, 50) and (perms.sum(0) == labels.sum()).all()
    pairs = perms[:40].reshape(20, 2, 50)
    assert (pairs[:, 0] == pairs[:, 1]).all()  # twins keep sharing a label
    assert (perms[40:].reshape(10, 3, 50).sum(1) == 1).all()  # each question keeps one true answer
    assert (perms[:40] != twins[:, None]).any() and (perms[40:] != questions[:, None]).any()  # and they move
    free = restricted_permutations(labels, None, 50, rng)
    assert (free.sum(0) == labels.sum()).all() \
        and not (free.reshape(35, 2, 50)[:20, 0] == free.reshape(35, 2, 50)[:20, 1]).all()


def test_null_finds_the_planted_layer_only():
    x, t, y = population(150, 2)
    got = wide(mi_rows(x, t, y, MIConfig(bootstrap=0, permutations=99), np.arange(150)))
    assert got.loc[1, "mi_ty_p"] == pytest.approx(0.01)  # nothing in 99 draws reaches it
    assert got.loc[1, "mi_ty"] > got.loc[1, "mi_ty_null_q95"]
    assert (got.loc[[0, 2], "mi_ty_p"] > 0.05).all()
    assert "nhsic_ty_p" not in got  # the checks re-read the phases; the null is the chosen estimator's


def test_null_p_values_are_roughly_uniform_without_signal():
    ps = []
    for seed in range(15):
        x, t, y = population(60, 100 + seed, signal=0.0, layers=1)
        ps.append(wide(mi_rows(x, t, y, MIConfig(bootstrap=0, permutations=39, checks=())))["mi_ty_p"].iloc[0])
    ps = np.array(ps)
    assert (ps < 0.05).sum() <= 2 and 0.25 < ps.mean() < 0.75


def test_half_sample_interval_matches_the_sampling_spread():
    """The interval's standard error against the estimator's real spread over fresh samples."""
    m = 120
    fresh = [estimate_mi(*population(m, 200 + s), NHSIC)[0][1] for s in range(40)]
    ses = []
    for s in range(8):
        rows = wide(mi_rows(*population(m, 300 + s), MIConfig(bootstrap=16, permutations=0, checks=("nhsic",))))
        half = (rows.loc[1, "nhsic_tx_ci_high"] - rows.loc[1, "nhsic_tx"])
        ses.append(half / 2.131)  # t(0.975, 15)
    ratio = np.mean(ses) / np.std(fresh, ddof=1)
    assert 0.6 < ratio < 1.7, ratio


def test_resampling_with_replacement_is_biased_half_samples_are_used_instead():
    """Why the intervals use half-samples: duplicated rows shift a kernel estimate by more than its spread."""
    x, t, y = population(200, 3)
    full = estimate_mi(x, t, y, NHSIC)[0][1]
    rng = np.random.default_rng(0)
    boot = np.array([estimate_mi(x[i], t[:, i], y[i], NHSIC)[0][1]
                     for i in (np.sort(rng.choice(200, 200, replace=True)) for _ in range(30))])
    assert abs(boot.mean() - full) > 1.5 * boot.std(ddof=1)


def test_half_samples_take_whole_groups():
    groups = np.repeat(np.arange(50), 2)
    for idx in half_samples(groups, 100, 50, 5, np.random.default_rng(0)):
        assert len(idx) == 50 and (np.bincount(groups[idx], minlength=50) % 2 == 0).all()


def test_rows_and_switches():
    x, t, y = population(80, 4)
    rows = mi_rows(x, t, y, MIConfig(), np.arange(80))
    names = set(rows.metric)
    assert {"mi_ty_null_q95", "mi_ty_p"} <= names
    for prefix in ("mi", "nhsic", "cka"):
        assert {f"{prefix}_tx", f"{prefix}_ty", f"{prefix}_tx_ci_low", f"{prefix}_tx_ci_high", f"{prefix}_ty_ci_low",
                f"{prefix}_ty_ci_high"} <= names
    got = wide(rows)
    assert (got.mi_tx_ci_low <= got.mi_tx).all() and (got.mi_tx <= got.mi_tx_ci_high).all()
    assert (got.mi_ty_ci_low >= 0).all()
    bare = mi_rows(x, t, y, MIConfig(bootstrap=0, permutations=0, checks=()))
    assert set(bare.metric) == {"mi_tx", "mi_ty"}
    again = mi_rows(x, t, y, MIConfig(), np.arange(80))
    assert again.equals(rows)  # seeded
    sub = mi_rows(x, t, y, MIConfig(max_samples=50, n_subsamples=3, checks=()))
    assert {"mi_tx_std", "mi_tx_ci_low", "mi_ty_p"} <= set(sub.metric) and (sub.n_train == 50).all()


@pytest.mark.parametrize("kwargs,match", [({"bootstrap": 1}, "at least 2 half-sample"),
                                          ({"permutations": 5}, "p < 0.05"),
                                          ({"checks": ("cka",)}, "linear-cka")])
def test_bad_settings_teach(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MIConfig(**kwargs)


@pytest.mark.parametrize("dtype,rtol", [(torch.float64, 1e-9), (torch.float32, 1e-5)])
def test_engine_equals_each_estimator_alone(dtype, rtol):
    """One pass over the layers (shared Gram matrices, half-samples as sub-matrices) gives what each estimator
    computes alone, on the full rows and on every half."""
    from trusttrace.analysis.mi_engine import HALF_TAIL, estimate_all

    x, t, y = population(90, 7)
    rng = np.random.default_rng(1)
    cols = np.column_stack([y, rng.permutation(y)])
    halves = np.stack([np.sort(rng.choice(90, 45, replace=False)) for _ in range(3)])
    configs = {"mi": MIConfig(dtype=torch.float64), "nhsic": NHSIC, "cka": MIConfig(estimator="linear-cka"),
               "hsic": MIConfig(estimator="hsic", sigma=3.0)}
    got = estimate_all(x, t, cols, configs, halves, dtype)
    for prefix, config in configs.items():
        tx, ty = estimate_mi_columns(x, t, cols, config)
        np.testing.assert_allclose(got[prefix].tx, tx, rtol=max(rtol, 1e-6))
        np.testing.assert_allclose(got[prefix].ty, ty, rtol=max(rtol, 1e-6), atol=1e-9)
        if prefix == "nhsic":  # its draws keep the full sample's median width
            continue
        for b, h in enumerate(halves):
            htx, hty = estimate_mi(x[h], t[:, h], y[h], config)
            if prefix == "mi":  # the draws drop X directions of total weight HALF_TAIL·Σw (Σw ≤ rows)
                assert np.all(htx - got[prefix].tx_half[b] >= -rtol * htx)
                assert np.all(htx - got[prefix].tx_half[b] <= HALF_TAIL * len(h) + rtol * htx)
            else:
                np.testing.assert_allclose(got[prefix].tx_half[b], htx, rtol=max(rtol, 1e-6))
            np.testing.assert_allclose(got[prefix].ty_half[b], hty, rtol=max(rtol, 1e-6), atol=1e-9)
