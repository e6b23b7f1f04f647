"""The demo's summary: the numbers it reports (probe accuracy first vs last, selectivity, emergence, the MI
phases, the steering rows) and ``summary.md``, every section closed by a verdict line that states only what
its own interval or null supports."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from ..analysis.phases import summarise as summarise_phases
from ..runs.tables import HEADLINE, ITEM_HEADLINE, NEVER, first_emergence, steering_verdict, steering_wide


def summarise(results: pd.DataFrame, phases: pd.DataFrame, steer_tables: dict[str, pd.DataFrame],
              sources: list[int], layer: int) -> dict[str, Any]:
    """The numbers the demo reports: probe accuracy first vs last, MI peaks, steering effects."""
    acc = results[results.metric == "accuracy"]
    first, last = acc.step.min(), acc.step.max()
    probes: dict[str, dict[str, Any]] = {}
    for dim, g in acc.groupby("dimension"):
        best = {s: g[g.step == s].loc[g[g.step == s].value.idxmax()] for s in (first, last)}
        base = results[(results.dimension == dim) & (results.metric == "majority_baseline")].value.iloc[0]
        ci = {s: _interval(results, str(dim), "accuracy", int(s), int(best[s].layer)) for s in (first, last)}
        # a change is called only where the two 95 % intervals do not overlap
        change = ("rises" if ci[last][0] > ci[first][1] else "falls" if ci[last][1] < ci[first][0]
                  else NOT_RESOLVED)
        probes[dim] = {"first_step": int(first), "first_accuracy": float(best[first].value),
                       "first_layer": int(best[first].layer), "first_ci": _stored(ci[first]), "last_step": int(last),
                       "last_accuracy": float(best[last].value), "last_layer": int(best[last].layer),
                       "last_ci": _stored(ci[last]), "majority_baseline": float(base), "change": change,
                       "rises": change == "rises", "above_majority": bool(ci[last][0] > base),
                       "layers": int(g.layer.nunique())}
        selectivity = results[(results.dimension == dim) & (results.metric == "selectivity")]
        for when, step in (("first", first), ("last", last)):
            at = selectivity[selectivity.step == step]
            if len(at):  # the most selective layer: what it reads beyond bag of words and an untrained network
                top = at.loc[at.value.idxmax()]
                probes[dim] |= {f"{when}_selectivity": float(top.value), f"{when}_selectivity_layer": int(top.layer),
                                f"{when}_selectivity_ci": _stored(_interval(results, str(dim), "selectivity",
                                                                            int(step), int(top.layer)))}
        low = results[(results.dimension == dim) & (results.metric == "selectivity_ci_low") & (results.step == last)]
        if len(low):  # the layers whose selectivity interval lies above zero at the last checkpoint
            probes[dim]["last_selective_layers"] = sorted(int(x) for x in low[low.value > 0].layer)
    for dim, found in first_emergence(results).items():  # when the layer comes to encode it, with its interval
        if dim in probes:
            probes[dim] |= {"emergence_step": None if found is None else found[0],
                            "emergence_layer": None if found is None else found[1]}
    mi = {}
    if len(phases):
        table, lines = summarise_phases(phases)
        for (_, row), line in zip(table.iterrows(), lines):
            mi[str(row.dimension)] = {k: (None if pd.isna(v) else v.item() if hasattr(v, "item") else v)
                                      for k, v in row.items() if k != "dimension"} | {"text": line}
    steering = {}
    for dim, table in steer_tables.items():
        metric, item = HEADLINE[dim], ITEM_HEADLINE[dim]
        wide = steering_wide(table)
        wide = wide[~wide.source_revision.str.fullmatch(r"random-\d+")]  # the draws: pooled in ``random``
        tests = (f"{item}_effect_vs_random", f"{item}_p_vs_random", f"{item}_p_mcnemar", f"{item}_worsened")
        extra = [c for c in (*tests, "auc", "cosine_to_self") if c in wide.columns]  # auc: 0/1 tasks on one answer
        steering[dim] = {"metric": metric, "layer": layer, "extra": extra, "verdict": steering_verdict(table, dim),
                         "rows": wide[["source_revision", "alpha", metric, *extra, "perplexity"]]
                         .to_dict("records")}
    return {"probes": probes, "mi": mi, "steering": steering, "steering_sources": [f"step{s}" for s in sources]}


NOT_RESOLVED = "not resolved"


def _interval(results: pd.DataFrame, dimension: str, metric: str, step: int, layer: int) -> tuple[float, float]:
    """The 95 % interval of ``metric`` at one dimension, step and layer (NaN, NaN where there is none)."""
    at = results[(results.dimension == dimension) & (results.step == step) & (results.layer == layer)]
    bounds = []
    for end in ("ci_low", "ci_high"):
        row = at[at.metric == f"{metric}_{end}"]
        bounds.append(float(row.value.iloc[0]) if len(row) else float("nan"))
    return bounds[0], bounds[1]


def _stored(ci: tuple[float, float]) -> list[float | None]:
    """An interval as summary.json keeps it: a missing bound is null, not NaN (which JSON does not have)."""
    return [None if pd.isna(x) else x for x in ci]


def probe_verdict(probes: dict[str, dict[str, Any]]) -> str:
    """The probe accuracy section's closing line: which changes and which last accuracies clear their intervals."""
    rises = [d for d, p in probes.items() if p["change"] == "rises"]
    above = [d for d, p in probes.items() if p["above_majority"]]
    layers = max((p["layers"] for p in probes.values()), default=0)

    def named(dims: list[str]) -> str:
        return f"{len(dims)} of {len(probes)} dimensions" + (f" ({', '.join(dims)})" if dims else "")

    return (f"**Verdict:** the best layer's accuracy rises beyond both 95 % intervals on {named(rises)}; at the last "
            f"checkpoint its interval lies above the majority baseline on {named(above)}. Each is the best of "
            f"{layers} layers, so its interval flatters it; the selectivity below is what the controls leave.")


def selectivity_verdict(probes: dict[str, dict[str, Any]]) -> str:
    """The selectivity section's closing line: where the interval lies above zero at the last checkpoint."""
    found = {d: p["last_selective_layers"] for d, p in probes.items() if p.get("last_selective_layers")}
    told = [d for d, p in probes.items() if "last_selective_layers" in p]
    if not found:
        return (f"**Verdict:** at the last checkpoint no layer's selectivity interval lies above zero on any of "
                f"{len(told)} dimensions: no probe reads more than its controls.")
    return (f"**Verdict:** at the last checkpoint selectivity's 95 % interval lies above zero on {len(found)} of "
            f"{len(told)} dimensions: "
            + ", ".join(f"{d} (layer{'s' * (len(ls) > 1)} {', '.join(map(str, ls))})" for d, ls in found.items())
            + ".")


def _with_ci(value: float, ci: list[float | None], form: str) -> str:
    """``value [low, high]`` (the interval left out where there is none)."""
    low, high = ci
    return f"{value:{form}}" + ("" if low is None or high is None else f" [{low:{form}}, {high:{form}}]")


def mi_verdict(mi: dict[str, dict[str, Any]]) -> str:
    """The MI section's closing line: which phase verdicts clear their intervals under every estimator."""
    found = {dim: m["pattern"] for dim, m in mi.items() if m.get("robust_layers") and m["pattern"] != "flat"}
    compress = [d for d, p in found.items() if "compress" in p]
    if not found:
        return ("**Verdict:** no I(T;X) phase clears its 95 % intervals under every estimator in this run; the "
                "curves above are not findings at this sample size.")
    return (f"**Verdict:** phases that clear their intervals under every estimator: "
            f"{', '.join(f'{d} ({p})' for d, p in found.items())}. A fall from step 0 is the untrained network's "
            "decay, not compression; compression " + (f"appears on {', '.join(compress)}." if compress else
                                                        "appears on no dimension within this run."))


def summary_markdown(summary: dict[str, Any], out: Path) -> str:
    """The summary as a short Markdown page."""
    lines = ["# trusttrace demo", "", f"Run folder: `{out}`", ""]
    if "plan" in summary:
        plan = summary["plan"]
        lines += [f"Plan `{plan['name']}` (expected {plan['estimate_s']['total'] / 60:.1f} min): {plan['reason']}", ""]
    lines += ["## Probe accuracy, first vs last checkpoint",
             "", ("Best layer's accuracy with its 95 % interval; the change is called only where the two "
                  "intervals do not overlap."),
             "", "| dimension | first step: best layer acc | last step: best layer acc | majority | change |",
             "|---|---|---|---|---|"]
    for dim, p in summary["probes"].items():
        lines.append(f"| {dim} | {_with_ci(p['first_accuracy'], p['first_ci'], '.3f')} (L{p['first_layer']}) | "
                     f"{_with_ci(p['last_accuracy'], p['last_ci'], '.3f')} (L{p['last_layer']}) | "
                     f"{p['majority_baseline']:.3f} | {p['change']} |")
    lines += ["", probe_verdict(summary["probes"])]
    if any("last_selectivity" in p for p in summary["probes"].values()):
        lines += ["", ("## Selectivity (accuracy − the stronger of the bag-of-words and random-init controls), "
                  "most selective layer, with its 95 % interval"), "", "| dimension | first step | last step |",
                  "|---|---|---|"]
        for dim, p in summary["probes"].items():
            if "last_selectivity" in p:
                lines.append(f"| {dim} | {_with_ci(p['first_selectivity'], p['first_selectivity_ci'], '+.3f')} "
                             f"(L{p['first_selectivity_layer']}) | "
                             f"{_with_ci(p['last_selectivity'], p['last_selectivity_ci'], '+.3f')} "
                             f"(L{p['last_selectivity_layer']}) |")
        lines += ["", selectivity_verdict(summary["probes"])]
    if any("emergence_step" in p for p in summary["probes"].values()):
        lines += ["", "## When each dimension emerges", "",
                  ("The first checkpoint from which selectivity's 95 % interval stays above zero at every later "
                   "checkpoint, earliest over layers:"), ""]
        for dim, p in summary["probes"].items():
            if "emergence_step" in p:
                when = (NEVER if p["emergence_step"] is None else
                        f"step {p['emergence_step']} (layer {p['emergence_layer']})")
                lines.append(f"- {dim}: {when}")
        emerged = [d for d, p in summary["probes"].items() if p.get("emergence_step") is not None]
        lines += ["", f"**Verdict:** selectivity clears both controls to the end of the run on "
                      f"{len(emerged)} of {len(summary['probes'])} dimensions"
                      + (f" ({', '.join(emerged)})." if emerged else ".")]
    lines += ["", "## Mutual information: the phases of I(T;X), and I(T;Y) against its null", ""]
    lines += [f"- {m['text']}" for m in summary["mi"].values()] or ["- no MI rows (the mi analysis was off)."]
    lines += ["", mi_verdict(summary["mi"])]
    for dim, s in summary["steering"].items():
        cols = [s["metric"], *s["extra"], "perplexity"]
        lines += ["", f"## Steering the chat model: {dim} (layer {s['layer']})", "",
                  "| source | α | " + " | ".join(cols) + " |", "|---" * (len(cols) + 2) + "|"]
        for r in s["rows"]:
            values = " | ".join("-" if pd.isna(r[c]) else f"{r[c]:.3f}" for c in cols)
            lines.append(f"| {r['source_revision']} | {r['alpha']:+g} | {values} |")
        lines += ["", ("`random`: the mean of random directions of the vectors' norm at each α; `prompt`: the "
                       "unsteered model with an instruction before each prompt; `_effect_vs_random` and "
                       "`_p_vs_random`: a vector against those directions (Fisher's exact test); `_worsened`: the "
                       "share of items it moved the wrong way.")]
        if any(str(r["source_revision"]).startswith("proxy:") for r in s["rows"]):
            note = ("`proxy:<step>` rows: that checkpoint proxy-tuned by (chat − last checkpoint), unsteered, with "
                    "β in the α column (the paper's App. G beside its steering vectors).")
            lines += ["", note]
        lines += ["", f"**Verdict:** {s['verdict']}"]
    return "\n".join(lines) + "\n"
