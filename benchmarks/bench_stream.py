"""Out of core: ``fit_vb`` streamed from Parquet against the in-memory ``fit_vb``.

Binomial data ``y ~ x + (1 | g)`` (written as ``{"g": "0 + C(g)"}``) with ``--levels`` levels
of g, rows in random order, are written once to ``/tmp`` in row groups of 2^20 rows (chunk by
chunk: the generator never holds the file).  Each fit runs in a fresh process so that its peak
resident memory (VmHWM, ``_report.peak_rss_mb``, and the baseline after importing
bayesglmm and JAX) is its own:

* ``stream``: ``BinomialBayesMixedGLM.from_parquet(...).fit_vb(rng=0)`` — the check pass, the
  stochastic epochs and the full Newton passes (fits.vb_stream);
* ``memory``: ``pd.read_parquet`` + ``from_formula(...).fit_vb(rng=0)``, only at sizes up to
  ``--memory-max`` rows (at 10^7 the in-memory fit needs about 15 GB).

Reports time, peak RSS and the largest |fe difference| to the in-memory fit where both ran.
Writes the ``out-of-core`` section of ``benchmarks/RESULTS.md``.

Usage: ``python benchmarks/bench_stream.py [--sizes 1e6,1e7] [--levels 1e4,1e5]
[--memory-max 1e6] [--no-write]``; ``--child`` is internal.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import peak_rss_mb, table, write_section  # noqa: E402

FORMULA, VC = "y ~ x", {"g": "0 + C(g)"}
ROW_GROUP = 1 << 20
HEAD = ["rows", "levels", "stream: s", "stream: peak GB", "memory: s", "memory: peak GB",
        "max abs Δfe", "max abs Δfe, SVI only"]


def generate(path: str, n: int, levels: int, seed: int = 0, row_group: int = ROW_GROUP):
    """Write n rows of y ~ Bernoulli(logit⁻¹(−0.5 + 0.7·x + u_g)), u_g ~ N(0, 0.8²), x ~ N(0,
    1), g uniform on ``levels`` levels, in row groups of ``row_group`` rows."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    u = 0.8 * rng.normal(size=levels)
    schema = pa.schema([("y", pa.float64()), ("x", pa.float64()), ("g", pa.int32())])
    with pq.ParquetWriter(path, schema) as w:
        for start in range(0, n, row_group):
            k = min(row_group, n - start)
            g = rng.integers(0, levels, k).astype(np.int32)
            x = rng.normal(size=k)
            eta = -0.5 + 0.7 * x + u[g]
            y = (rng.random(k) < 1 / (1 + np.exp(-eta))).astype(np.float64)
            w.write_table(pa.table({"y": y, "x": x, "g": g}, schema=schema))


def _peak_gb() -> float:
    return peak_rss_mb() / 1024


def child(kind: str, path: str, batch_rows: int) -> dict:
    """One fit in this process: time, peak RSS, estimates."""
    from bayesglmm import BinomialBayesMixedGLM

    base = _peak_gb()
    t0 = time.perf_counter()
    if kind == "stream":
        model = BinomialBayesMixedGLM.from_parquet(path, FORMULA, VC, batch_rows=batch_rows)
        t1 = time.perf_counter()
        r = model.fit_vb(rng=0)
        extra = {"check_s": t1 - t0, "passes": int(r.optim_retvals.nit),
                 "epochs": int(r.optim_retvals.n_epochs),
                 "svi_fe": r.optim_retvals.svi_params[:model.k_fep].tolist()}
    else:
        import pandas as pd

        df = pd.read_parquet(path)
        model = BinomialBayesMixedGLM.from_formula(FORMULA, VC, df)
        r = model.fit_vb(rng=0)
        extra = {}
    return {"kind": kind, "seconds": time.perf_counter() - t0, "peak_gb": _peak_gb(),
            "base_gb": base, "fe": r.fe_mean.tolist(), "vcp": r.vcp_mean.tolist(),
            "converged": bool(r.optim_retvals.success), **extra}


def run_child(kind: str, path: str, batch_rows: int, timeout: float) -> dict:
    env = dict(os.environ, BAYESGLMM_CACHE_DIR="0")
    cmd = [sys.executable, __file__, "--child", kind, "--path", path,
           "--batch-rows", str(batch_rows)]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="1e6,1e7")
    ap.add_argument("--levels", default="1e4,1e5")
    ap.add_argument("--memory-max", type=float, default=1e6)
    ap.add_argument("--batch-rows", type=int, default=1 << 14)
    ap.add_argument("--timeout", type=float, default=7200)
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--child")
    ap.add_argument("--path")
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.path, args.batch_rows)))
        return
    rows = []
    for n_, L_ in zip(args.sizes.split(","), args.levels.split(",")):
        n, L = int(float(n_)), int(float(L_))
        path = f"/tmp/bench_stream_{n}_{L}.parquet"
        if not os.path.exists(path):
            t = time.perf_counter()
            generate(path, n, L)
            print(f"wrote {path} in {time.perf_counter() - t:.0f} s", flush=True)
        s = run_child("stream", path, args.batch_rows, args.timeout)
        print(json.dumps(s), flush=True)
        m = run_child("memory", path, args.batch_rows, args.timeout) \
            if n <= args.memory_max else None
        if m is not None:
            print(json.dumps(m), flush=True)
        diff = "" if m is None else f"{np.max(np.abs(np.subtract(s['fe'], m['fe']))):.1e}"
        svi = "" if m is None else f"{np.max(np.abs(np.subtract(s['svi_fe'], m['fe']))):.3f}"
        rows.append(dict(zip(HEAD, [
            f"{n:.0e}", f"{L:,}", f"{s['seconds']:.0f} ({s['check_s']:.0f} check, "
            f"{s['epochs']} epochs, {s['passes']} passes)", f"{s['peak_gb']:.2f}",
            "—" if m is None else f"{m['seconds']:.0f}",
            "—" if m is None else f"{m['peak_gb']:.2f}", diff, svi])))
    if not args.no_write:
        write_section("out-of-core", "## Out of core: streamed fit_vb from Parquet\n\n"
                      + table(rows, HEAD))


if __name__ == "__main__":
    main()
