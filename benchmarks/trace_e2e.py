"""End to end: the released pipeline's steps against `trusttrace trace`, on the same model, dimensions and statements.

Released side (as its two scripts run, in this process, written out plainly): read each CSV with pandas; load the
model in fp32; ``generate_activations.py``: one statement per forward pass through the full model (LM head
included), a forward hook on every decoder block, the last token's hidden state, saved with ``torch.save`` per
layer per 400 statements; ``train_probes.py``: load them back, centre and scale each layer over all rows
(``torch.std``, unbiased), first 80 % train / last 20 % test, then per layer ``LogisticRegression()`` (sklearn
defaults) fit, ``predict_proba``, ``predict``, ``accuracy_score``, and ``estimate_mi_hsic`` (the released
``hsic_normalized_cca``: torch on the CPU in float32, explicit m×m inverses, X = layer 0's training rows,
recomputed for every layer); the three result arrays saved with ``np.save``. Its ``io`` stage includes
``load_acts``'s centring and scaling.

trusttrace side: ``run_trace`` (what ``trusttrace trace`` calls) with the same work: ``--protocol paper-code``
(the same split and all-row z-scoring), ``--controls none``, probes and MI (paper-code estimator, σ 50,
ε 1e-5, every training row), into a fresh run folder. Stages are timed by wrapping the functions the trace
calls; ``other`` is what is left (series, resume record, manifest, tables). With ``--default-trace`` the default
``trace`` (group-cv, five folds, all three controls) is timed too; there the random-init network's build counts
as ``load``, its extraction as ``extraction`` and the lexical control as ``other``.

Prints one JSON line: seconds per stage of each side, the speedups with and without model load, the
agreement of activations, probe accuracies and MI curves, the machine, and ``roofline``: the FLOPs
trusttrace's extraction computes (``_common.computed_work``) over this machine's matmul FLOP/s in its dtype,
the fraction of that its extraction reached, and ``speedup_end_to_end_at_roofline``: the end-to-end speedup
with extraction at the roofline and every other stage as measured (what batching can win here at most).

    python benchmarks/trace_e2e.py --limit 100 --dtype float32
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import tempfile
import time
import warnings
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import pandas as pd
import torch
from _common import computed_work, machine, matmul_flops_per_s, roofline_shapes
from mi import released_hsic_cca
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score

import trusttrace.analysis.probe_job
import trusttrace.trace.job
import trusttrace.trace.unit
from trusttrace.activations.extract import ExtractConfig
from trusttrace.activations.store import load_activations
from trusttrace.analysis.probe_job import AnalysisConfig
from trusttrace.data.datasets import DIMENSIONS, load_dataset
from trusttrace.models.assets import BUILTIN_MODELS, builtin_gguf_path
from trusttrace.models.devices import choose_device
from trusttrace.models.loading import LoadConfig, LoadedModel, load_model
from trusttrace.trace.job import TraceConfig, run_trace

ACTS_BATCH_SIZE = 400  # statements per saved activation file in generate_activations.py
Stages = dict[str, float]


@contextmanager
def stage(seconds: Stages, name: str) -> Iterator[None]:
    start = time.perf_counter()
    try:
        yield
    finally:
        seconds[name] += time.perf_counter() - start


# ---------------------------------------------------------------- the released pipeline, as coded


def released_acts(lm: LoadedModel, statements: list[str], device: str) -> dict[int, torch.Tensor]:
    """``get_acts``: one statement per forward pass, a hook per block, block l's output at the last token."""
    out: dict[int, Any] = {}

    def hook(k: int) -> Callable[..., None]:
        def grab(module: Any, inputs: Any, output: Any) -> None:
            out[k] = output  # the released Hook keeps the block's whole output
        return grab

    handles = [block.register_forward_hook(hook(k)) for k, block in enumerate(lm.blocks)]
    acts: dict[int, list[torch.Tensor]] = {k: [] for k in range(len(lm.blocks))}
    try:
        for statement in statements:
            input_ids = lm.tokenizer.encode(statement, return_tensors="pt").to(device)
            lm.model(input_ids)  # the full model, LM head included
            for k, o in out.items():  # hook.out[0][0, -1] on transformers 4.38's tuples; a tensor here
                hidden = o[0] if isinstance(o, tuple) else o
                acts[k].append(hidden[0, -1])
    finally:
        for h in handles:
            h.remove()
    return {k: torch.stack(a).float() for k, a in acts.items()}


def load_acts(folder: Path, layer: int, device: str) -> torch.Tensor:
    """``load_acts(center=True, scale=True)``: every saved chunk of one layer, centred and scaled over all rows."""
    n_files = len(list(folder.glob(f"layer_{layer}_*.pt")))
    acts = torch.cat([torch.load(folder / f"layer_{layer}_{i}.pt").to(device)
                      for i in range(0, ACTS_BATCH_SIZE * n_files, ACTS_BATCH_SIZE)], dim=0)
    acts = acts - torch.mean(acts, dim=0)
    return acts / torch.std(acts, dim=0)


def released_dimension(lm: LoadedModel, csv: Path, limit: int | None, work: Path, device: str,
                       seconds: Stages) -> dict[str, np.ndarray]:
    """Both released scripts for one dataset: its activations, accuracies and MI per layer."""
    with stage(seconds, "data"):
        frame = pd.read_csv(csv, dtype={"label": int}).head(limit)
        statements = frame["statement"].tolist()
        labels = frame["label"].to_numpy()
    acts_dir = work / "activations" / csv.stem
    acts_dir.mkdir(parents=True, exist_ok=True)
    raw = []
    for idx in range(0, len(statements), ACTS_BATCH_SIZE):
        with stage(seconds, "extraction"), torch.no_grad():
            chunk = released_acts(lm, statements[idx:idx + ACTS_BATCH_SIZE], device)
        with stage(seconds, "io"):
            for layer, act in chunk.items():
                torch.save(act, acts_dir / f"layer_{layer}_{idx}.pt")
        raw.append(torch.stack([chunk[k] for k in range(len(chunk))]).cpu())
    n_layers = len(lm.blocks)
    with stage(seconds, "io"):
        layers = [load_acts(acts_dir, layer, device) for layer in range(n_layers)]
    acc, tx, ty = released_probes_mi(torch.stack(layers), labels, seconds)
    with stage(seconds, "io"):
        for name, values in (("acc", acc), ("tx", tx), ("ty", ty)):
            np.save(work / f"{csv.stem}_{name}.npy", values)
    return {"acts": torch.cat(raw, dim=1).numpy(), "accuracy": acc, "mi_tx": tx, "mi_ty": ty,
            "statements": np.array(statements, dtype=object), "labels": labels}


def released_probes_mi(acts: torch.Tensor, labels: np.ndarray, seconds: Stages
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``train_probes.py``'s loop: per layer, the sklearn probe, then I(X;T) and I(Y;T) on the training rows."""
    num_train = int(acts.shape[1] * 0.8)
    targets = torch.tensor(labels, dtype=torch.float32)
    train_y, test_y = targets[:num_train].numpy(), targets[num_train:].numpy()
    acc, tx, ty = [], [], []
    x = y = None
    for layer in range(acts.shape[0]):
        train_set, test_set = acts[layer, :num_train].cpu().numpy(), acts[layer, num_train:].cpu().numpy()
        if layer == 0:
            x, y = train_set, train_y
        with stage(seconds, "probes"), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the released code ignores every warning
            probe = LogisticRegression()
            probe.fit(train_set, train_y)
            np.max(probe.predict_proba(test_set), axis=1)
            acc.append(accuracy_score(test_y, probe.predict(test_set)))
        assert x is not None and y is not None
        with stage(seconds, "mi"):
            tx.append(released_hsic_cca(torch.from_numpy(x), torch.from_numpy(train_set)))  # float32, as released
            ty.append(released_hsic_cca(torch.from_numpy(y), torch.from_numpy(train_set)))
    return np.array(acc), np.array(tx), np.array(ty)


def run_released(model: str, csvs: dict[str, Path], limit: int | None, device: str, work: Path
                 ) -> tuple[Stages, dict[str, dict[str, np.ndarray]]]:
    seconds: Stages = defaultdict(float)
    start = time.perf_counter()
    torch.set_grad_enabled(False)
    try:
        with stage(seconds, "load"):
            lm = load_model(model, dtype="float32", device=device)  # from_pretrained, fp32
        out = {name: released_dimension(lm, csv, limit, work, device, seconds) for name, csv in csvs.items()}
    finally:
        torch.set_grad_enabled(True)
    seconds["total"] = time.perf_counter() - start
    return seconds, out


# ---------------------------------------------------------------- trusttrace, timed by stage


TIMED = {  # (module, function) → stage; the functions run_trace calls
    (trusttrace.trace.job, "check_statements"): "preflight",
    (trusttrace.trace.job, "load_datasets"): "data",
    (trusttrace.trace.unit, "load_model"): "load",
    (trusttrace.trace.unit, "extract_last_token"): "extraction",
    (trusttrace.trace.unit, "save_activations"): "io",
    (trusttrace.trace.unit, "load_activations"): "io",
    (trusttrace.analysis.probe_job, "probe_layers"): "probes",
    (trusttrace.analysis.probe_job, "training_split"): "mi",  # MI's rows: the z-scored training split
    (trusttrace.analysis.probe_job, "mi_rows"): "mi",
}


def check_timed() -> None:
    """Fail before the minutes of the released side if a timed function has moved to another module."""
    missing = [f"{module.__name__}.{fn}" for module, fn in TIMED if not hasattr(module, fn)]
    if missing:
        raise SystemExit(f"trace_e2e.TIMED names functions that are not there: {', '.join(missing)}; "
                         "point it at the module that calls them now.")


def timed_wrapper(fn: Callable[..., Any], name: str, seconds: Stages) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with stage(seconds, name):
            return fn(*args, **kwargs)
    return wrapper


def run_trusttrace(config: TraceConfig) -> tuple[Stages, pd.DataFrame, float]:
    """``run_trace`` with its stages timed; the seconds, the results table and the wall time."""
    seconds: Stages = defaultdict(float)
    with ExitStack() as patches:
        for (module, fn_name), name in TIMED.items():
            fn = getattr(module, fn_name)
            patches.enter_context(mock.patch.object(module, fn_name, timed_wrapper(fn, name, seconds)))
        start = time.perf_counter()
        result = run_trace(config)
        seconds["total"] = time.perf_counter() - start
    seconds["other"] = seconds["total"] - sum(v for k, v in seconds.items() if k != "total")
    return seconds, result.results, seconds["total"]


# ---------------------------------------------------------------- agreement and the report


def agreement(released: dict[str, dict[str, np.ndarray]], results: pd.DataFrame, run: Path) -> dict[str, Any]:
    """Activations (trusttrace's stored ones vs the released fp32), accuracies and MI curves, per dimension."""
    rel_act, acc_diff, corr_tx, corr_ty, max_acc, mean_rel = {}, {}, {}, {}, 0.0, []
    revision = next(p.name for p in (run / "activations").iterdir() if p.is_dir())
    for name, theirs in released.items():
        ours = load_activations(run / "activations" / revision / f"{name}.safetensors").layers.float().numpy()
        diff = np.linalg.norm(ours - theirs["acts"], axis=-1) / np.linalg.norm(theirs["acts"], axis=-1)
        rel_act[name] = float(diff.max())
        mean_rel.append(float(diff.mean()))
        rows = results[results.dimension == name]

        def curve(metric: str, rows: pd.DataFrame = rows) -> np.ndarray:
            return rows[rows.metric == metric].sort_values("layer").value.to_numpy()

        delta = np.abs(curve("accuracy") - theirs["accuracy"])
        acc_diff[name], max_acc = float(delta.mean()), max(max_acc, float(delta.max()))
        corr_tx[name] = float(np.corrcoef(curve("mi_tx"), theirs["mi_tx"])[0, 1])
        corr_ty[name] = float(np.corrcoef(curve("mi_ty"), theirs["mi_ty"])[0, 1])
    return {"max_rel_activation_diff": round(max(rel_act.values()), 4),
            "mean_rel_activation_diff": round(float(np.mean(mean_rel)), 4),
            "max_rel_activation_diff_by_dimension": rounded(rel_act, 4),
            "mean_abs_probe_acc_diff": round(float(np.mean(list(acc_diff.values()))), 4),
            "mean_abs_probe_acc_diff_by_dimension": rounded(acc_diff, 4), "max_abs_probe_acc_diff": round(max_acc, 4),
            "mi_tx_corr_by_dimension": rounded(corr_tx, 4), "mi_ty_corr_by_dimension": rounded(corr_ty, 4),
            "mi_tx_corr_min": round(min(corr_tx.values()), 4), "mi_ty_corr_min": round(min(corr_ty.values()), 4)}


def rounded(values: dict[str, float], digits: int = 2) -> dict[str, float]:
    return {k: round(v, digits) for k, v in values.items()}


def without_load(seconds: Stages) -> float:
    return seconds["total"] - seconds["load"]


def warm_up(model: str, device: str, gguf_cache: str) -> None:
    """Imports, the weights in the page cache and, with ``--gguf-cache warm``, the de-quantised copy of a GGUF
    model built (``trusttrace.models.gguf_cache``): both sides then load the same way, from a float32 Hugging Face
    folder, as the released ``from_pretrained`` does; neither pays a first-use cost for the other."""
    import transformers  # noqa: F401

    path = builtin_gguf_path(model) if model in BUILTIN_MODELS else None
    if path is not None:
        Path(path).read_bytes()
    if gguf_cache == "warm":
        load_model(model, dtype="float32", device=device)


def arguments() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--dimensions", default="all", help="comma-separated, or all")
    p.add_argument("--limit", type=int, default=100, help="first N statements of each dimension")
    p.add_argument("--dtype", default="auto", help="trusttrace's dtype (the released side is always float32)")
    p.add_argument("--device", default="auto")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--default-trace", action="store_true", help="also time the default trace (group-cv, controls)")
    p.add_argument("--keep", default=None, help="keep both sides' folders here")
    p.add_argument("--gguf-cache", choices=("warm", "off"), default="warm",
                   help="warm: both sides load a GGUF model's de-quantised copy, built before timing; off: both "
                        "de-quantise the GGUF on every load (TRUSTTRACE_GGUF_CACHE=off)")
    return p.parse_args()


def roofline(model: str, dtype: str, device: str, statements: list[str], seconds: Stages, released_s: float
             ) -> dict[str, float]:
    """How near trusttrace's extraction ran to this machine's matmul roofline (``_common.matmul_flops_per_s``
    in its dtype), and the end-to-end speedup it would give there with every other stage as measured: what
    the hardware lets batching win over the released loop here."""
    lm = load_model(model, dtype=dtype, device=device)
    work = computed_work(lm, lm.tokenizer(statements)["input_ids"], ExtractConfig())
    roof = matmul_flops_per_s(next(lm.model.parameters()).dtype, roofline_shapes(lm, ExtractConfig().max_tokens),
                              device=lm.info.device)
    at_roof = work["flops"] / roof
    return {"tokens": int(work["statement_tokens"]), "tokens_computed": int(work["tokens"]),
            "matmul_gflops_per_s": round(roof / 1e9, 1), "extraction_at_roofline_s": round(at_roof, 2),
            "extraction_roofline_fraction": round(at_roof / seconds["extraction"], 3),
            "speedup_end_to_end_at_roofline": round(released_s / (seconds["total"] - seconds["extraction"] + at_roof),
                                                    2)}


def main() -> None:
    args = arguments()
    check_timed()
    if args.gguf_cache == "off":
        os.environ["TRUSTTRACE_GGUF_CACHE"] = "off"
    dims = DIMENSIONS if args.dimensions == "all" else tuple(args.dimensions.split(","))
    datasets = {d: load_dataset(d, args.data_dir, limit=args.limit) for d in dims}
    csvs = {d: Path(ds.path) for d, ds in datasets.items()}
    device = str(choose_device(args.device))
    analysis = AnalysisConfig.build(protocol="paper-code", controls=())
    warm_up(args.model, device, args.gguf_cache)
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(args.keep or scratch)
        config = TraceConfig(model=args.model, out=str(root / "trusttrace"), dimensions=dims, limit=args.limit,
                             data_dir=args.data_dir, load=LoadConfig(dtype=args.dtype, device=args.device),
                             analysis=analysis)
        ref_seconds, released = run_released(args.model, csvs, args.limit, device, root / "released")
        for d, ds in datasets.items():  # the same statements and labels on both sides
            assert list(released[d]["statements"]) == list(ds.statements), d
            assert np.array_equal(released[d]["labels"], ds.labels), d
        tt_seconds, results, _ = run_trusttrace(config)
        default_seconds = None
        if args.default_trace:
            default_seconds, _, _ = run_trusttrace(TraceConfig(
                model=args.model, out=str(root / "default"), dimensions=dims, limit=args.limit,
                data_dir=args.data_dir, load=LoadConfig(dtype=args.dtype, device=args.device)))
        agree = agreement(released, results, Path(config.out))
        limits = roofline(args.model, args.dtype, device, [s for ds in datasets.values() for s in ds.statements],
                          tt_seconds, ref_seconds["total"])
        manifest = json.loads((Path(config.out) / "manifest.json").read_text())
    record = next(iter(manifest["checkpoints"].values()))
    print(json.dumps({
        "benchmark": "trace_e2e", "model": args.model, "dimensions": list(dims), "limit": args.limit,
        "statements": int(sum(len(ds) for ds in datasets.values())), "layers": record.get("n_layers"),
        "device": device, "dtype_trusttrace": record.get("dtype"), "dtype_reason": record.get("dtype_reason"),
        "dtype_released": "float32",
        "trusttrace_options": {"api": "trusttrace.trace.job.run_trace", "protocol": "paper-code", "controls": [],
                               "analyses": list(analysis.analyses), "mi_estimator": analysis.mi.estimator,
                               "mi_sigma": analysis.mi.sigma, "mi_eps": analysis.mi.eps,
                               "mi_max_samples": analysis.mi.max_samples, "probe_max_iter": analysis.probe.max_iter,
                               "probe_C": analysis.probe.C, "probe_tol": analysis.probe.tol},
        "order": "released, then trusttrace", "gguf_cache": args.gguf_cache,
        "gguf_cache_available": importlib.util.find_spec("trusttrace.models.gguf_cache") is not None,
        "seconds_released": rounded(ref_seconds), "seconds_trusttrace": rounded(tt_seconds),
        "speedup_end_to_end": round(ref_seconds["total"] / tt_seconds["total"], 2),
        "speedup_without_load": round(without_load(ref_seconds) / without_load(tt_seconds), 2),
        # probing.sh runs generate_activations.py once per dataset: one model load per dimension
        "seconds_released_total_load_per_dimension":
            round(ref_seconds["total"] + (len(dims) - 1) * ref_seconds["load"], 2),
        "speedup_by_stage": {k: round(ref_seconds[k] / tt_seconds[k], 2)
                             for k in ("load", "extraction", "probes", "mi", "io") if tt_seconds.get(k)},
        **({"seconds_trusttrace_default_trace": rounded(default_seconds)} if default_seconds else {}),
        "roofline": limits,
        "agreement": agree, "machine": machine(device, record.get("dtype")),
    }))


if __name__ == "__main__":
    main()
