"""``trusttrace vectors …``: build steering vectors from a trace folder, and carry them to and from other tools."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ._shared import (
    WaitOpt,
    app,
    command_errors,
    console,
    numbers,
    path_or_none,
    print_outputs,
    setup_logging,
    split,
    writing,
)
from .choices import VectorFormat, VectorMethod

vectors_app = typer.Typer(no_args_is_help=True, help="Build steering vectors, and export or import them "
                                                     "(lm-eval's steered model, repeng, llama.cpp, numpy).")
app.add_typer(vectors_app, name="vectors")


@vectors_app.command()
@command_errors
def build(
    run: Annotated[Path, typer.Argument(help="A trace run folder holding activations/.")],
    dimension: Annotated[str, typer.Option(help="The dimension (or user file stem) whose activations to use.")],
    out: Annotated[Path | None, typer.Option(help="Folder for <revision>/<dimension>.safetensors "
                                                  "(default RUN/vectors).")] = None,
    method: Annotated[VectorMethod, typer.Option(help="How the vector is built (see trusttrace.steering.vector).")]
    = VectorMethod.paper_code,
    vector_split: Annotated[str | None, typer.Option("--split", help="Rows of the mean difference: first-half | all "
                                                                    "(default: all for reliability, else first-half).")]
    = None,
    revisions: Annotated[str | None, typer.Option(help="Comma-separated revisions (default: all stored).")] = None,
    wait: WaitOpt = False,
) -> None:
    """Build steering vectors from a trace folder's stored activations (no model needed)."""
    setup_logging(quiet=True)
    from ..steering.vectors import VectorsConfig, run_vectors

    with writing(None, "vectors build", wait):  # run_vectors holds its folder
        result = run_vectors(VectorsConfig(str(run), dimension, path_or_none(out), method.value, vector_split,
                                           split(revisions)))
    console.print(f"{len(result.files)} vectors ({dimension}, {method.value})")
    print_outputs(result.files)


@vectors_app.command()
@command_errors
def export(
    vector: Annotated[Path, typer.Argument(help="A trusttrace vector (.safetensors).")],
    fmt: Annotated[VectorFormat, typer.Option("--format", help="lm-eval: the steered model's .pt; repeng: repeng's "
                                                               "GGUF; gguf: llama.cpp --control-vector; numpy: .npz.")],
    out: Annotated[Path | None, typer.Option(help="Output file (default: VECTOR with the format's suffix: .pt, "
                                                  ".gguf, .npz).")]
    = None,
    layers: Annotated[str | None, typer.Option(help="Comma-separated blocks to export (default: all).")] = None,
    coefficient: Annotated[float, typer.Option(help="lm-eval's steering_coefficient (α).")] = 1.0,
    architecture: Annotated[str | None, typer.Option(help="Model type (llama, gpt2, gpt_neox, …) when the vector "
                                                          "does not record it.")] = None,
) -> None:
    """Write a vector in another tool's format (see trusttrace.steering.interop)."""
    setup_logging(quiet=True)
    from ..runs.outputs import refuse_same_file
    from ..steering.interop import FORMATS, export_vector
    from ..steering.vector import SteeringVector

    target = out or vector.with_suffix(FORMATS[fmt.value])
    refuse_same_file(target, vector, "vectors export")
    written = export_vector(SteeringVector.load(vector), target, fmt.value,
                            layers=numbers(layers, "--layers", int) if layers else None,
                            coefficient=coefficient, architecture=architecture)
    print_outputs({fmt.value: written})


@vectors_app.command("import")
@command_errors
def import_(
    source: Annotated[Path, typer.Argument(help="A control vector: .gguf (repeng, llama.cpp), .pt (lm-eval) or .npz.")],
    out: Annotated[Path, typer.Option(help="The trusttrace vector to write (.safetensors).")],
) -> None:
    """Read another tool's steering vector into a trusttrace vector (with where it came from)."""
    setup_logging(quiet=True)
    from ..runs.outputs import refuse_same_file
    from ..steering.interop import import_vector

    refuse_same_file(out, source, "vectors import")
    vector = import_vector(source)
    vector.save(out)
    console.print(f"{len(vector.layers)} layers, hidden size {vector.hidden_size}")
    print_outputs({"vector": out})
