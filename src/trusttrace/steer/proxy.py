"""Proxy-tuned rows in a ``steer`` sweep: the paper's App. G beside steering, in one table.

With ``SteerConfig.proxy_tuned`` = TUNED and ``proxy_base`` = BASE, every source checkpoint of the sweep is also
evaluated proxy-tuned by (TUNED − BASE) at each β of ``proxy_betas`` (``trusttrace.evaluate.proxy``), on the
same suite as the steered jobs (the dimension's benchmark plus perplexity), and TUNED itself is evaluated
plainly when it is not the target. Their rows go to ``steering.csv`` beside the steered ones, told apart by
``source_revision`` (no extra column, so ``best.csv``, the report and older readers take them unchanged):

- ``proxy:<source name>``, ``layer`` −1, ``alpha`` = β: that source checkpoint proxy-tuned at strength β
  (β = 0 is the checkpoint alone);
- ``tuned``, ``layer`` −1, ``alpha`` 0: TUNED on its own (e.g. the chat model).

``layer`` −1 means no block is steered, as for ``unsteered``; these rows have no ``cosine_to_self``. Like the
steered rows they get McNemar tests against the unsteered target, and ``best.csv`` picks the best β per
``proxy:<name>`` within the perplexity budget. Their parts are ``parts/proxy:<name>__L-1__a<β>.csv`` and
``parts/tuned__L-1__a+0.csv`` (with ``.items.csv``), so a rerun resumes them too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..core.errors import OptionError
from ..evaluate.proxy import check_same_vocab, proxy_tuned
from ..models.loading import LoadedModel, load_model, peek_model
from ..models.ref import ModelRef

PROXY_PREFIX = "proxy:"
TUNED = "tuned"
Ref = tuple[str, str | None]  # (MODEL, REVISION) as load_model takes them


@dataclass(frozen=True)
class ProxyEval:
    """What a proxy job evaluates instead of the target: ``model`` proxy-tuned at ``beta``, or ``model`` plainly
    when ``beta`` is None (the tuned model's own row)."""

    model: Ref
    beta: float | None = None


def check_proxy_options(tuned: str | None, base: str | None, betas: tuple[float, ...]) -> None:
    """Both of ``--proxy-tuned``/``--proxy-base`` or neither, well-formed, with at least one β."""
    if (tuned is None) != (base is None):
        given, missing = ("--proxy-tuned", "--proxy-base") if base is None else ("--proxy-base", "--proxy-tuned")
        raise OptionError(f"{given} needs {missing}: proxy-tuning adds β·(tuned − base) to each source checkpoint's "
                          "logits, so give both, e.g. --proxy-tuned LLM360/AmberChat --proxy-base "
                          "LLM360/Amber@ckpt_359 (or neither, for a sweep without proxy-tuned rows).")
    if tuned is None:
        if betas != (1.0,):
            raise OptionError(f"--proxy-betas {','.join(f'{b:g}' for b in betas)} without --proxy-tuned and "
                              "--proxy-base: the strengths are for proxy-tuning; give both models, or drop "
                              "--proxy-betas.")
        return
    if not betas:
        raise OptionError("--proxy-betas is empty: give at least one strength, e.g. --proxy-betas 0.5,1.")
    for ref, option in ((tuned, "--proxy-tuned"), (base, "--proxy-base")):
        ModelRef.parse(ref or "", option=option)  # a malformed MODEL@REV is refused before anything loads


def proxy_settings(tuned: str | None, base: str | None, betas: tuple[float, ...]) -> dict[str, Any]:
    """The proxy settings for ``steer_config.json``: none without proxy-tuning (so sweeps from before the option
    resume), else all three (so a rerun with other ones is refused)."""
    return {} if tuned is None else {"proxy_tuned": tuned, "proxy_base": base, "proxy_betas": betas}


def check_proxy_models(tuned: str, base: str) -> None:
    """Refuse a tuned and base model of different vocabularies from their tokenizers, before anything is traced
    (each source checkpoint is checked against them when it is proxy-tuned); a hub model out of reach now is
    checked then too."""
    refs = {"tuned": ModelRef.parse(tuned).pair, "base": ModelRef.parse(base).pair}
    try:
        tokenizers = [(f"{role} {tuned if role == 'tuned' else base}", peek_model(name, rev).tokenizer)
                      for role, (name, rev) in refs.items()]
    except ConnectionError:
        return
    check_same_vocab(tokenizers)


def checkpoint_ref(model: str, name: str) -> Ref:
    """Where the source checkpoint called ``name`` (as the trace named it) loads from, without the network: a
    local series' folder, a single model (``final``), else the hub revision."""
    ref = ModelRef.parse(model, option="--source")
    if ref.kind == "series":  # one folder per checkpoint
        return str(ref.path / name), None
    if name == "final" and ref.single:
        return model, None
    return model, name


def proxy_jobs(names: list[str], source_model: str, betas: tuple[float, ...], tuned: str,
               target: Ref) -> list[tuple[str, float, ProxyEval]]:
    """(name, α column, what to evaluate) for every proxy row set: each source at each β, then the tuned
    model itself unless it is the target."""
    jobs = [(f"{PROXY_PREFIX}{name}", float(beta), ProxyEval(checkpoint_ref(source_model, name), float(beta)))
            for name in names for beta in betas]
    tuned_ref = ModelRef.parse(tuned).pair
    if tuned_ref != target:
        jobs.append((TUNED, 0.0, ProxyEval(tuned_ref)))
    return jobs


_LOADED: dict[tuple[Ref, str, str], LoadedModel] = {}  # per process: tuned, base and the current checkpoint


def proxy_model(job: ProxyEval, tuned: str, base: str, dtype: str, device: str,
                have: dict[Ref, LoadedModel]) -> LoadedModel:
    """``job``'s model: the checkpoint proxy-tuned at β, or the model plainly. Each model loads once per
    process (``have`` holds ones already loaded, such as the target); of the checkpoints only the latest is
    kept, since a sweep's jobs go checkpoint by checkpoint."""
    keep = {(ModelRef.parse(tuned).pair, dtype, device), (ModelRef.parse(base).pair, dtype, device)}

    def get(ref: Ref) -> LoadedModel:
        if ref in have:
            return have[ref]
        key = (ref, dtype, device)
        if key not in _LOADED:
            for old in [k for k in _LOADED if k not in keep]:
                del _LOADED[old]
            _LOADED[key] = load_model(ref[0], ref[1], dtype, device)
        return _LOADED[key]

    if job.beta is None:
        return get(job.model)
    return proxy_tuned(get(job.model), get(ModelRef.parse(tuned).pair), get(ModelRef.parse(base).pair), job.beta)
