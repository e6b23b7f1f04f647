import warnings

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression

from trusttrace.analysis.probes import BatchedLogisticRegression, ProbeFitConfig, probe_layers


def planted(n=400, d=20, layers=4, strength=(0.0, 0.5, 2.0, 4.0), seed=0):
    """Layer l separates the labels along one direction with margin strength[l]."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=g)
    direction = torch.randn(d, generator=g)
    direction /= direction.norm()
    X = torch.randn(layers, n, d, generator=g)
    for l in range(layers):
        X[l] += strength[l] * (2 * y[:, None] - 1) * direction
    return X, y.numpy()


def test_matches_sklearn_objective():
    X, y = planted()
    ours = BatchedLogisticRegression(tol=1e-8, data_dtype=torch.float64).fit(
        X, torch.as_tensor(y).expand(4, -1).double())
    assert ours.converged_.all()
    for l in range(4):
        ref = LogisticRegression(tol=1e-10, max_iter=10_000).fit(X[l].double().numpy(), y)
        np.testing.assert_allclose(ours.coef_[l].numpy(), ref.coef_[0], atol=1e-4)
        np.testing.assert_allclose(ours.intercept_[l].item(), ref.intercept_[0], atol=1e-4)


def test_layers_that_stop_early_leave_the_batch_without_changing_any_fit():
    # strengths far apart converge after different numbers of steps; two label vectors per layer (as the
    # shuffled control fits them) leave together. Each must land exactly where it lands fitted alone.
    X, y = planted(strength=(0.0, 0.3, 3.0, 8.0))
    g = torch.Generator().manual_seed(1)
    ys = torch.stack([torch.as_tensor(y), torch.as_tensor(y)[torch.randperm(len(y), generator=g)]]).double()
    together = BatchedLogisticRegression(data_dtype=torch.float64).fit(X, ys.expand(4, 2, -1))
    alone = [BatchedLogisticRegression(data_dtype=torch.float64).fit(X[l:l + 1], ys[None]) for l in range(4)]
    assert len({m.n_iter_ for m in alone}) > 1  # the layers do stop at different steps
    for l, m in enumerate(alone):
        torch.testing.assert_close(together.coef_[2 * l:2 * l + 2], m.coef_, rtol=0, atol=1e-9)
        torch.testing.assert_close(together.intercept_[2 * l:2 * l + 2], m.intercept_, rtol=0, atol=1e-9)
    assert together.converged_.all()


def two_loop(g, S, Y):
    """The textbook L-BFGS two-loop recursion (Nocedal & Wright, Algorithm 7.4), skipping pairs with sᵀy ≤ 1e-12."""
    q, alphas = g.clone(), []
    pairs = [(s, y, (s * y).sum(-1)) for s, y in zip(S, Y)]
    for s, y, sy in reversed(pairs):
        rho = torch.where(sy > 1e-12, 1 / sy, torch.zeros_like(sy))
        a = rho * (s * q).sum(-1)
        q -= a[:, None] * y
        alphas.append((a, rho))
    sy, yy = (S[-1] * Y[-1]).sum(-1), (Y[-1] * Y[-1]).sum(-1)
    q *= torch.where((sy > 0) & (yy > 0), sy / yy, torch.ones_like(sy))[:, None]
    for (s, y, _), (a, rho) in zip(pairs, reversed(alphas)):
        q += s * (a - rho * (y * q).sum(-1))[:, None]
    return q


@pytest.mark.parametrize("pairs", [1, 5, 12])
def test_the_compact_inverse_hessian_is_the_two_loop_recursion(pairs):
    from trusttrace.analysis.logreg import _History

    g = torch.Generator().manual_seed(pairs)
    S = [torch.randn(3, 9, generator=g, dtype=torch.float64) for _ in range(pairs)]
    Y = [s + 0.4 * torch.randn(3, 9, generator=g, dtype=torch.float64) for s in S]
    Y[pairs // 2][1] = -S[pairs // 2][1]  # negative curvature for problem 1: the pair must drop out
    history, grad = _History(10), torch.randn(3, 9, generator=g, dtype=torch.float64)
    for s, y in zip(S, Y):
        history.add(s, y)
    torch.testing.assert_close(history.apply(grad), two_loop(grad, S[-10:], Y[-10:]), rtol=1e-10, atol=1e-12)


def test_accuracy_tracks_the_planted_margin():
    X, y = planted()
    rows = probe_layers(X, y, ProbeFitConfig(protocol="cv", seed=1))
    acc = rows[rows.metric == "accuracy"].set_index("layer").value
    assert acc[0] < 0.62 and acc[3] > 0.97 and acc[1] < acc[2] < acc[3]
    std = rows[rows.metric == "accuracy_std"].value
    assert (std >= 0).all() and set(rows.metric) == {"accuracy", "accuracy_std", "majority_baseline",
                                                     "accuracy_ci_low", "accuracy_ci_high", "control_shuffled"}
    shuffled = rows[rows.metric == "control_shuffled"].value
    assert shuffled.between(0.35, 0.65).all()  # no signal once the labels are permuted
    assert (rows.n_train == 320).all() and (rows.n_test == 80).all()


def test_paper_code_protocol_matches_sklearn_defaults():
    X, y = planted(n=500)
    rows = probe_layers(X, y, ProbeFitConfig(protocol="paper-code"))
    acc = rows[rows.metric == "accuracy"].value.to_numpy()
    Xz = (X - X.mean(1, keepdim=True)) / X.std(1, unbiased=False, keepdim=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = [LogisticRegression().fit(Xz[l, :400].numpy(), y[:400]).score(Xz[l, 400:].numpy(), y[400:])
               for l in range(4)]
    assert np.abs(acc - ref).max() <= 0.005
    assert (rows.n_train == 400).all() and (rows.n_test == 100).all()
    base = rows[rows.metric == "majority_baseline"].value.iloc[0]
    assert base == pytest.approx(max(np.mean(y[400:]), 1 - np.mean(y[400:])), abs=0.5)


@pytest.mark.parametrize("protocol", ["cv", "paper-code"])
def test_the_kept_probes_are_the_tables_first_fold_fit(protocol):
    from trusttrace.analysis.probes import training_rows
    from trusttrace.analysis.saved_probes import fit_probes, kept_probes

    X, y = planted()
    kept = []
    rows = probe_layers(X, y, ProbeFitConfig(protocol=protocol, seeds=2), keep=kept.append)
    assert len(kept) == 1  # one fit kept, of the first fold of the first seed, though 2 seeds x 5 folds ran
    fold = kept[0]
    train = training_rows(y, ProbeFitConfig(protocol=protocol))
    assert np.array_equal(fold.rows, train) and fold.weight.shape == (4, 20) and fold.intercept.shape == (4,)
    basis = X if protocol == "paper-code" else X[:, train]  # paper-code standardises with every row's statistics
    torch.testing.assert_close(fold.mean, basis.double().mean(1))
    torch.testing.assert_close(fold.std, basis.double().std(1, unbiased=False))
    probe = kept_probes(fold, {"protocol": protocol})
    predicted = (probe.scores(X) > 0).numpy()
    assert (predicted[3] == y).mean() > 0.97 and probe.meta["n_rows"] == str(len(train))
    assert len(rows[rows.metric == "accuracy"]) == 4
    if protocol == "cv":  # the same probes as a separate fit on those rows, within L-BFGS's tolerance
        alone = fit_probes(X, y, train)
        cosine = torch.nn.functional.cosine_similarity(alone.weight, probe.weight, dim=1)
        assert cosine.min() > 0.999
        assert torch.equal(alone.scores(X) > 0, probe.scores(X) > 0)


def test_constant_features_do_not_break_the_fit():
    X, y = planted()
    X[:, :, :5] = 3.0
    rows = probe_layers(X, y, ProbeFitConfig(protocol="paper-code"))
    assert rows.value.notna().all()


def test_seeded_folds_are_deterministic():
    X, y = planted()
    groups = np.arange(len(y)) // 2
    a = probe_layers(X, y, ProbeFitConfig(seed=3), groups)
    b = probe_layers(X, y, ProbeFitConfig(seed=3), groups)
    assert a.equals(b) and not a.equals(probe_layers(X, y, ProbeFitConfig(seed=4), groups))


@pytest.mark.parametrize("labels,match", [
    (np.array([0, 1, 2] * 10), "0/1"),
    (np.array([0] * 28 + [1] * 2), "at least 5"),
    (np.array([0, 1] * 7), "activation rows"),
])
def test_bad_labels(labels, match):
    X = torch.randn(2, 30, 4)
    with pytest.raises(ValueError, match=match):
        probe_layers(X, labels)


def test_unfitted_and_bad_c():
    with pytest.raises(RuntimeError, match="not fitted"):
        BatchedLogisticRegression().predict(torch.zeros(1, 2, 3))
    with pytest.raises(ValueError, match="positive"):
        BatchedLogisticRegression(C=0)


def test_a_trace_keeps_its_probes_and_they_score_new_statements(tiny_series, data_dir, tmp_path):
    from trusttrace import (
        ExtractConfig,
        LoadConfig,
        TraceConfig,
        extract_last_token,
        load_model,
        load_probe,
        run_trace,
    )
    from trusttrace.runs.layout import TraceLayout
    from trusttrace.testing import planted_statements

    out = tmp_path / "run"
    run_trace(TraceConfig(model=str(tiny_series), out=str(out), dimensions=("toxicity",), data_dir=str(data_dir),
                          select="last:1", load=LoadConfig(dtype="float32")))
    probe = load_probe(TraceLayout(out).probe("step100", "toxicity"))
    assert probe.n_layers == 3 and probe.meta["revision"] == "step100" and probe.meta["dataset"] == "toxicity"
    assert probe.meta["protocol"] == "group-cv" and int(probe.meta["n_rows"]) == 96  # the first fold's rows
    statements, labels = planted_statements(60, seed=99)  # statements the trace never saw
    lm = load_model(str(tiny_series / "step100"), dtype="float32")
    acts = extract_last_token(lm, statements, ExtractConfig())
    predicted = (probe.scores(acts) > 0).numpy()
    assert (predicted == labels[None, :]).mean(axis=1).min() > 0.9  # the planted label, read by every layer
    torch.testing.assert_close(probe.scores(acts[1], layer=1), probe.scores(acts)[1])  # one layer alone
    with pytest.raises(ValueError, match="not a probe file|no such probe file"):
        load_probe(tmp_path / "missing.safetensors")


def test_a_damaged_probe_file_is_refitted_by_a_rerun(tiny_series, data_dir, tmp_path):
    from trusttrace import LoadConfig, TraceConfig, load_activations, load_probe, run_trace
    from trusttrace.runs.layout import TraceLayout
    from trusttrace.runs.verify import verify_run

    config = TraceConfig(model=str(tiny_series), out=str(tmp_path / "run"), dimensions=("privacy",),
                         data_dir=str(data_dir), select="last:1", load=LoadConfig(dtype="float32"))
    run_trace(config)
    path = TraceLayout(tmp_path / "run").probe("step100", "privacy")
    before = load_probe(path)
    path.write_bytes(path.read_bytes()[:-40])  # truncated
    assert [f.path for f in verify_run(tmp_path / "run").findings] == ["probes/step100/privacy.safetensors"]
    run_trace(config)
    # refitted: the same answers (L-BFGS stops within its tolerance, so the weights agree only that far)
    acts = load_activations(TraceLayout(tmp_path / "run").activation("step100", "privacy")).layers
    assert torch.equal(load_probe(path).scores(acts) > 0, before.scores(acts) > 0)
    assert verify_run(tmp_path / "run").status == "intact"
