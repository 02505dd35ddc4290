"""One fit over several devices: bytes per shard and time against one device (``devices=``).

Runs unchanged on GPUs (or TPUs): it uses every device JAX sees.  On a CPU-only machine,
``--cpu-devices N`` (or the environment variable ``BENCH_CPU_DEVICES=N``) splits the host into
N forced CPU devices (``XLA_FLAGS=--xla_force_host_platform_device_count=N``, set before JAX
is imported).  Forced CPU devices share the machine's cores, so they show the memory per
device and the overhead of partitioned programs (collectives, one dispatch per device), not
speed-up; on accelerators the same numbers show both.

Per fit (simulated data: a logit random-intercept model for ``fit_map``, ``fit_vb`` and
``fit_laplace``; an LMM with a random intercept and slope for ``MixedLM.fit``), with
``devices=None`` (one device) and ``devices="all"``:

* bytes of the row-wise arrays in all and on one device (what sharding divides);
* compile time (first call − steady state) and steady-state time (median of ``--repeat``
  calls after the first), and their ratio to one device;
* the largest difference of the estimates between the two.

Several hosts: start one process per host with the same arguments and ``--distributed``
(``jax.distributed.initialize()`` finds the cluster from SLURM, Open MPI, ... or the
``JAX_COORDINATOR_ADDRESS``/``JAX_NUM_PROCESSES``/``JAX_PROCESS_ID`` variables); process 0
reports.

Usage::

    python benchmarks/bench_sharding.py --cpu-devices 4            # writes the "sharding" section
    python benchmarks/bench_sharding.py --rows 1e6 --no-write      # on a GPU machine
    python benchmarks/bench_sharding.py --fits fit_map,lmm --repeat 5 --no-write
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

FITS = ("fit_map", "fit_vb", "fit_laplace", "lmm")


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cpu-devices", type=int,
                    default=int(os.environ.get("BENCH_CPU_DEVICES", "0")),
                    help="force this many host CPU devices (CPU-only machines)")
    ap.add_argument("--rows", type=float, default=1e5, help="rows (default 1e5)")
    ap.add_argument("--per-group", type=int, default=100, help="rows per group (default 100)")
    ap.add_argument("--fits", default=",".join(FITS), help=f"comma-separated, of {FITS}")
    ap.add_argument("--repeat", type=int, default=3, help="steady-state calls (median)")
    ap.add_argument("--distributed", action="store_true",
                    help="jax.distributed.initialize() first (one process per host)")
    ap.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md")
    return ap.parse_args(argv)


def simulate(n: int, per_group: int, seed: int = 20261122):
    """``(y_bin, y_lin, X, groups, days)``: a logit and a linear response on the same design
    (intercept and two covariates; random intercept, and a random slope for the LMM)."""
    import numpy as np

    rs = np.random.default_rng(seed)
    G = max(n // per_group, 2)
    g = rs.integers(0, G, n)
    X = np.column_stack([np.ones(n), rs.normal(size=(n, 2))])
    x1 = X[:, 1]
    b0, b1 = rs.normal(size=G) * 0.8, rs.normal(size=G) * 0.3
    eta = X @ [-0.5, 1.0, -1.0] + b0[g]
    y_bin = (rs.uniform(size=n) < 1 / (1 + np.exp(-eta))).astype(float)
    y_lin = X @ [1.0, 0.5, -0.5] + b0[g] + b1[g] * x1 + rs.normal(size=n)
    return y_bin, y_lin, X, g, G


def timed(fn, repeat: int):
    """``(first, steady, result)``: the first call's time (compiles), the median of
    ``repeat`` more, and the last result."""
    t0 = time.perf_counter()
    res = fn()
    first = time.perf_counter() - t0
    ts = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        res = fn()
        ts.append(time.perf_counter() - t0)
    ts.sort()
    return first, ts[len(ts) // 2], res


def lmm_row_bytes(model, mesh) -> tuple[int, int]:
    """Bytes of the LMM pass's row arrays (design.crossprod_sharded) in all and per device."""
    from bayesglmm.design.crossprod_sharded import row_arrays
    from bayesglmm.sharding import n_shards, padded_rows

    d = model.design
    rows, _, _ = row_arrays(d.X, d.y, [t.codes for t in d.terms], [t.z for t in d.terms])
    n = padded_rows(len(d.y), mesh)
    per_row = sum(r.itemsize * (r.size // max(r.shape[0], 1)) for r in rows)
    return n * per_row, n * per_row // n_shards(mesh)


def run(args) -> list[dict]:
    import jax
    import numpy as np
    import scipy.sparse as sp

    from bayesglmm import BinomialBayesMixedGLM, MixedLM
    from bayesglmm.sharding import make_mesh, n_shards, row_bytes

    n = int(args.rows)
    y_bin, y_lin, X, g, G = simulate(n, args.per_group)
    Z = sp.csr_array((np.ones(n), (np.arange(n), g)), shape=(n, G))
    glmm = BinomialBayesMixedGLM(y_bin, X, Z, np.zeros(G, int), fep_names=["x0", "x1", "x2"])
    lmm = MixedLM(y_lin, X, g, exog_re=X[:, :2])
    mesh = make_mesh("all")
    k = n_shards(mesh)
    rows = []
    for fit in args.fits.split(","):
        if fit == "lmm":
            # the cross-products are cached per model: clear them to time the pass too
            calls = {dev: (lambda dev=dev: (lmm._cp.clear(), lmm.fit(devices=dev))[1])
                     for dev in (None, "all")}
            total, per = lmm_row_bytes(lmm, mesh)
        else:
            kw = {"rng": 0} if fit != "fit_laplace" else {}
            calls = {dev: (lambda dev=dev, fit=fit, kw=kw:
                           getattr(glmm, fit)(devices=dev, **kw)) for dev in (None, "all")}
            n_par = (2 if fit == "fit_vb" else 1) * (glmm.k_fep + glmm.k_vcp + glmm.k_vc)
            data = glmm._data(True, glmm._fine(n_par), mesh)
            total, per = row_bytes(data)
        f1, s1, r1 = timed(calls[None], args.repeat)
        fk, sk, rk = timed(calls["all"], args.repeat)
        rows.append({"fit": fit, "rows": n, "devices": k,
                     "row MB": total / 1e6, "MB per device": per / 1e6,
                     "compile 1 (s)": max(f1 - s1, 0.0), f"compile {k} (s)": max(fk - sk, 0.0),
                     "time 1 (s)": s1, f"time {k} (s)": sk, "time ratio": sk / s1,
                     "max abs Δ estimate": float(np.max(np.abs(np.asarray(rk.params)
                                                             - np.asarray(r1.params))))})
        if jax.process_index() == 0:
            print(rows[-1], flush=True)
    return rows


def main(argv=None) -> None:
    args = parse_args(argv)
    os.environ.setdefault("BAYESGLMM_CACHE_DIR", "0")  # compile times without the disk cache
    if args.cpu_devices:
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_"
                                   f"platform_device_count={args.cpu_devices}").strip()
        os.environ.setdefault("JAX_PLATFORMS", "cpu")
    import jax

    if args.distributed:
        jax.distributed.initialize()
    rows = run(args)
    if jax.process_index() != 0:
        return
    from benchmarks._report import table, write_section

    k = rows[0]["devices"] if rows else 1
    cols = ["fit", "rows", "devices", "row MB", "MB per device", "compile 1 (s)",
            f"compile {k} (s)", "time 1 (s)", f"time {k} (s)", "time ratio", "max abs Δ estimate"]
    forced = (f"{args.cpu_devices} forced CPU devices on {os.cpu_count()} cores: the devices "
              "share the cores, so this shows memory per device and the overhead of the "
              "partitioned programs, not speed-up" if args.cpu_devices else
              f"{k} {jax.devices()[0].device_kind} devices")
    body = (f"## One fit over several devices (`benchmarks/bench_sharding.py`)\n\n"
            f"`devices=None` (one device) against `devices=\"all\"` ({forced}).  Simulated "
            f"data: logit random intercept ({int(args.rows):,} rows, {args.per_group} rows per "
            "group) for the GLMM fits; a random intercept and slope for the LMM, whose only "
            "pass over the rows is the cross-products (its time includes the whole fit).  "
            "Row MB: y, X, Z's ELLPACK rows, trials, weights, offset (padded bucket); MB per "
            "device: one shard of them.  Times: steady state, median of "
            f"{args.repeat} calls after the first; compile = first call − steady state.\n\n"
            + table(rows, cols))
    print(body)
    if not args.no_write:
        write_section("sharding", body)


if __name__ == "__main__":
    main()
