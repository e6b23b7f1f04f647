"""Run a trusttrace command or a benchmark as it would run on a CPU without AVX-512 and without fast bf16.

An emulation for checking a machine-dependent choice (the demo's plan, a benchmark's fp32 figures) on a
machine that has AVX-512: torch's own kernels, oneDNN and MKL are limited to AVX2 (their documented
``ATEN_CPU_CAPABILITY``, ``ONEDNN_MAX_CPU_ISA`` and ``MKL_ENABLE_INSTRUCTIONS`` settings), and trusttrace is
told that the CPU has no fast bf16, so ``dtype=auto`` picks float32. Clock speed, caches and memory stay this
machine's, so figures are an estimate of such a CPU, not a measurement of one: say so where you quote them.

    python benchmarks/as_avx2_cpu.py demo --out runs/demo-avx2          # a trusttrace command
    python benchmarks/as_avx2_cpu.py benchmarks/extraction.py --limit 200  # a script and its arguments
"""

from __future__ import annotations

import os
import runpy
import sys

LIMITS = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}


def main() -> None:
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    if any(os.environ.get(k) != v for k, v in LIMITS.items()):  # the ISA limits are read when torch loads
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, **LIMITS})
    import trusttrace.models.devices

    trusttrace.models.devices.cpu_has_fast_bf16 = lambda: False  # what /proc/cpuinfo would say on such a CPU
    target, args = sys.argv[1], sys.argv[2:]
    if target.endswith(".py"):
        sys.argv = [target, *args]
        runpy.run_path(target, run_name="__main__")
    else:
        from trusttrace.cli import main as cli

        sys.argv = ["trusttrace", target, *args]
        cli()


if __name__ == "__main__":
    main()
