import numpy as np
import pytest
import torch

from trusttrace.analysis.mi_stats import mi_rows
from trusttrace.analysis.mutual_info import MIConfig, estimate_mi

# ---- slow references, written from the formulas (float64, explicit inverses, full label kernel)

def gauss(a, sigma, dim_scaled):
    d = ((a[:, None] - a[None]) ** 2).sum(-1)
    return np.exp(-d / (2 * sigma**2 * (a.shape[1] if dim_scaled else 1)))


def ref_paper_code(a, b, sigma=50.0, eps=1e-5):
    m = len(a)
    h = np.eye(m) - 1.0 / m

    def r(k):
        kc = k @ h
        return kc @ np.linalg.inv(kc + eps * m * np.eye(m))

    return np.sum(r(gauss(a, sigma, True)) * r(gauss(b, sigma, True)).T)


def median_dist(a):
    d = np.sqrt(((a[:, None] - a[None]) ** 2).sum(-1))
    return np.median(d[np.triu_indices(len(a), 1)])


def ref_hsic(a, b, sa, sb):
    m = len(a)
    h = np.eye(m) - 1.0 / m
    return np.trace(gauss(a, sa, False) @ h @ gauss(b, sb, False) @ h) / (m - 1) ** 2


def ref_nhsic(a, b, sa, sb):
    return ref_hsic(a, b, sa, sb) / np.sqrt(ref_hsic(a, a, sa, sa) * ref_hsic(b, b, sb, sb))


def data(m=60, d=8, layers=3, seed=0):
    rng = np.random.default_rng(seed)
    y = (rng.random(m) < 0.5).astype(float)
    x = rng.standard_normal((m, d))
    t = np.stack([x @ rng.standard_normal((d, d)) * 0.3 + rng.standard_normal((m, d)) + k * y[:, None]
                  for k in range(layers)])
    z = lambda a: (a - a.mean(-2, keepdims=True)) / a.std(-2, keepdims=True)
    return z(x), z(t), y


def test_paper_code_matches_the_released_formula():
    x, t, y = data()
    tx, ty = estimate_mi(torch.tensor(x), torch.tensor(t), y)
    for l in range(t.shape[0]):
        np.testing.assert_allclose(tx[l], ref_paper_code(t[l], x), rtol=1e-6)
        np.testing.assert_allclose(ty[l], ref_paper_code(t[l], y[:, None]), rtol=1e-6)


def test_paper_code_with_other_sigma_and_eps():
    x, t, y = data(seed=1)
    tx, ty = estimate_mi(torch.tensor(x), torch.tensor(t), y, MIConfig(sigma=3.0, eps=1e-3))
    np.testing.assert_allclose(tx[1], ref_paper_code(t[1], x, 3.0, 1e-3), rtol=1e-6)
    np.testing.assert_allclose(ty[2], ref_paper_code(t[2], y[:, None], 3.0, 1e-3), rtol=1e-6)


@pytest.mark.parametrize("estimator,ref", [("hsic", ref_hsic), ("nhsic", ref_nhsic)])
@pytest.mark.parametrize("sigma", [4.0, None])
def test_hsic_estimators_match_the_formula(estimator, ref, sigma):
    x, t, y = data(seed=2)
    tx, ty = estimate_mi(torch.tensor(x), torch.tensor(t), y, MIConfig(estimator=estimator, sigma=sigma))
    for l in range(t.shape[0]):
        s_t = sigma or median_dist(t[l])
        s_x = sigma or median_dist(x)
        np.testing.assert_allclose(tx[l], ref(t[l], x, s_t, s_x), rtol=1e-6)
        np.testing.assert_allclose(ty[l], ref(t[l], y[:, None], s_t, sigma or 1.0), rtol=1e-6)


def test_label_closed_form_equals_the_general_path():
    """The rank-one label kernel gives what the full m×m label kernel gives, for every estimator."""
    x, t, y = data(m=40, seed=3)
    for est in ("paper-code", "hsic", "nhsic"):
        config = MIConfig(estimator=est)
        _, ty = estimate_mi(torch.tensor(x), torch.tensor(t), y, config)
        # y as a real-valued one-column "activation" goes through the general kernel path
        general = estimate_mi(torch.tensor(t[0]), torch.tensor(y[None, :, None]), y, config)[0][0]
        np.testing.assert_allclose(ty[0], general, rtol=1e-6)


def test_orderings():
    x, t, y = data(m=120, layers=4, seed=4)
    _, ty = estimate_mi(torch.tensor(x), torch.tensor(t), y)
    shuffled = np.random.default_rng(0).permutation(y)
    _, ty_shuffled = estimate_mi(torch.tensor(x), torch.tensor(t), shuffled)
    assert ty[3] > ty_shuffled[3] and ty[3] > ty[0]  # the planted label direction grows with the layer
    # identical X and T give the maximum of the normalised estimator, exactly 1
    nh = MIConfig(estimator="nhsic")
    same, _ = estimate_mi(torch.tensor(x), torch.tensor(np.concatenate([x[None], t])), y, nh)
    assert same[0] == pytest.approx(1.0) and (same[1:] < same[0]).all()


def test_constant_activations_give_finite_zero():
    x, t, y = data()
    t[1] = 0.0
    for est in ("paper-code", "hsic", "nhsic"):
        tx, ty = estimate_mi(torch.tensor(x), torch.tensor(t), y, MIConfig(estimator=est))
        assert np.isfinite(tx).all() and np.isfinite(ty).all()
        assert abs(tx[1]) < 1e-6 and abs(ty[1]) < 1e-6


@pytest.mark.parametrize("m,y,match", [
    (8, None, "at least 10"),
    (30, np.arange(30) % 3, "binary"),
    (30, np.zeros(29), "Row counts differ"),
])
def test_bad_input(m, y, match):
    x = torch.randn(m, 4)
    y = (np.arange(m) % 2) if y is None else y
    with pytest.raises(ValueError, match=match):
        estimate_mi(x, x[None], y)


def test_paper_code_refuses_median_sigma():
    x = torch.randn(20, 3)
    with pytest.raises(ValueError, match="fixed sigma"):
        estimate_mi(x, x[None], np.arange(20) % 2, MIConfig(sigma=None))


def test_subsampling_reports_spread():
    x, t, y = data(m=80, seed=5)
    plain = {"bootstrap": 0, "permutations": 0, "checks": ()}
    full = mi_rows(torch.tensor(x), torch.tensor(t), y, MIConfig(**plain))
    sub = mi_rows(torch.tensor(x), torch.tensor(t), y, MIConfig(max_samples=50, n_subsamples=4, **plain))
    assert set(sub.metric) == {"mi_tx", "mi_ty", "mi_tx_std", "mi_ty_std"} and (sub.n_train == 50).all()
    assert (sub[sub.metric == "mi_tx_std"].value > 0).all()
    assert set(full.metric) == {"mi_tx", "mi_ty"} and (full.n_train == 80).all()
