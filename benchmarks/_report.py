"""Shared helpers for the benchmark scripts: machine description and RESULTS.md sections.

Each benchmark script owns one section of ``benchmarks/RESULTS.md``, delimited by
``<!-- BEGIN name -->`` / ``<!-- END name -->`` markers, and rewrites only that section, so the
scripts can be run independently without clobbering each other's tables.
"""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).with_name("RESULTS.md")

HEADER = """# Benchmark results

Each section below is written by one script in `benchmarks/`; rerun the script to refresh it.
Times are wall-clock seconds, median of repeats after a warm-up call unless stated.
"""


# the start of a subprocess script that counts XLA compilations in ``compiles[0]`` (JAX's
# compile-duration event; indented by four spaces, for scripts put through textwrap.dedent)
COUNT_COMPILES = """
    from jax import monitoring
    compiles = [0]

    def count(name, secs, **kw):
        if name == "/jax/core/compile/backend_compile_duration":
            compiles[0] += 1

    monitoring.register_event_duration_secs_listener(count)
"""


def peak_rss_mb() -> float:
    """This process's peak resident memory in MiB: Linux's VmHWM (the high-water mark of the
    current address space), else ``ru_maxrss``.  On Linux ``ru_maxrss`` survives ``execve``, so
    a worker started from a large parent (a long pytest run) reports the parent's size at the
    fork instead of its own; VmHWM starts afresh with the new program."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    import resource
    import sys

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 1024  # bytes on macOS


def machine() -> str:
    """One line describing the machine, the JAX backend and library versions."""
    import jax
    import numpy as np

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = ""
    try:
        with open("/proc/meminfo") as fh:
            kb = int(fh.readline().split()[1])
            mem = f", {kb / 2**20:.0f} GiB RAM"
    except (OSError, ValueError, IndexError):
        pass
    devices = ", ".join(sorted({d.device_kind for d in jax.devices()}))
    parts = [
        f"{cpu}, {os.cpu_count()} cores{mem}",
        f"JAX {jax.__version__} on {jax.default_backend()} ({devices})",
        f"numpy {np.__version__}",
        f"Python {platform.python_version()}",
    ]
    try:
        import statsmodels

        parts.append(f"statsmodels {statsmodels.__version__}")
    except ImportError:
        pass
    return "; ".join(parts)


def backend_suffix() -> str:
    """``""`` on CPU, ``"-gpu"`` (``-`` + the backend) elsewhere: a benchmark run on an
    accelerator writes its own section of RESULTS.md beside the CPU's instead of replacing it."""
    import jax

    backend = jax.default_backend()
    return "" if backend == "cpu" else f"-{backend}"


def device_peak_mb() -> float | None:
    """The default device's peak allocated memory in MB (None on CPU, whose allocations
    ``peak_rss_mb`` counts)."""
    import jax

    dev = jax.devices()[0]
    stats = dev.memory_stats() if dev.platform != "cpu" else None
    if not stats or "peak_bytes_in_use" not in stats:
        return None
    return stats["peak_bytes_in_use"] / 1e6


def write_section(name: str, body: str) -> None:
    """Replace (or append) the section ``name`` of RESULTS.md with ``body``."""
    stamp = time.strftime("%Y-%m-%d")
    block = f"<!-- BEGIN {name} -->\n{body.rstrip()}\n\n_Run {stamp} on: {machine()}_\n<!-- END {name} -->"
    text = RESULTS.read_text() if RESULTS.exists() else HEADER
    pat = re.compile(rf"<!-- BEGIN {re.escape(name)} -->.*?<!-- END {re.escape(name)} -->", re.DOTALL)
    if pat.search(text):
        text = pat.sub(lambda _: block, text)
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    RESULTS.write_text(text)


def table(rows: list[dict], columns: list[str]) -> str:
    """A markdown table from a list of dicts (missing cells are blank)."""
    out = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for r in rows:
        cells = []
        for c in columns:
            v = r.get(c, "")
            cells.append(f"{v:.3g}" if isinstance(v, float) else str(v))
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def python_json(code: str, df, *args, env: dict | None = None) -> dict:
    """Run the Python script ``code`` (dedented) in a fresh interpreter with the CSV of the
    DataFrame ``df`` as its first argument and ``args`` after it; return the JSON object on
    its last line of output."""
    import sys
    import textwrap

    with tempfile.TemporaryDirectory() as tmp:
        csv, script = Path(tmp) / "d.csv", Path(tmp) / "ours.py"
        df.to_csv(csv, index=False)
        script.write_text(textwrap.dedent(code))
        out = subprocess.run([sys.executable, str(script), str(csv), *map(str, args)], env=env,
                             capture_output=True, text=True, check=True)
        return json.loads(out.stdout.splitlines()[-1])


def glmer_columns(ours: dict, r: dict, r_whole: float, d_sd: float) -> dict:
    """The table cells comparing a fresh-process fit of ours (``first``, ``steady``,
    ``peak``, ``fe``, ``llf``) with glmer's (``fit``, ``fe``, ``llf``; ``r_whole`` its whole
    Rscript process), ``d_sd`` the largest SD difference."""
    d_fe = max(abs(a - b) for a, b in zip(ours["fe"], r["fe"]))
    return {
        "ours first (s)": ours["first"], "ours warm (s)": ours["steady"],
        "ours peak MB": f"{ours['peak']:.0f}", "glmer fit (s)": r["fit"],
        "glmer Rscript (s)": r_whole,
        "glmer / ours warm": f"{r['fit'] / ours['steady']:.1f}×",
        "glmer / ours first": f"{r['fit'] / ours['first']:.1f}×",
        "max |Δ fe|": f"{d_fe:.1e}", "max |Δ SD|": f"{d_sd:.1e}",
        "logLik ours − glmer": f"{ours['llf'] - r['llf']:+.4f}",
    }


def rscript_json(code: str, df, *args) -> tuple[dict, float]:
    """Run the R script ``code`` with the CSV of the DataFrame ``df`` (written to a temporary
    directory) as its first argument and ``args`` after it; return the JSON object it prints
    and the wall time of the whole Rscript process (start-up and loading packages included)."""
    with tempfile.TemporaryDirectory() as tmp:
        csv, script = Path(tmp) / "d.csv", Path(tmp) / "bench.R"
        df.to_csv(csv, index=False)
        script.write_text(code)
        t0 = time.perf_counter()
        out = subprocess.run(["Rscript", str(script), str(csv), *map(str, args)],
                             capture_output=True, text=True, check=True)
        return json.loads(out.stdout), time.perf_counter() - t0


def timeit(fn, repeat: int = 3) -> float:
    """Median wall time of ``fn()`` over ``repeat`` calls."""
    ts = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    ts.sort()
    return ts[len(ts) // 2]
