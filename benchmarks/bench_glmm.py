"""bayesglmm vs statsmodels' BinomialBayesMixedGLM on simulated random-intercept logit data.

For each size (default n = 10,000 with 100 groups and n = 100,000 with 1,000 groups):

* ours: ``fit_map`` and ``fit_vb`` — one warm-up call (compiles), then the median of
  ``--repeat`` calls, each with a fresh ``rng``; compile time = first call − steady state;
  iterations (``optim_retvals.nit``);
* statsmodels: ``fit_map`` and ``fit_vb`` (defaults, BFGS), one call each;
* speed-up = statsmodels time / our steady-state time;
* agreement: max |params difference| with statsmodels, for our default model (VB with the
  20-node Gauss–Hermite rule) and for a model built with ``vb_rule="statsmodels"`` (the
  same 10-point Gauss–Legendre rule as statsmodels).

Both libraries get ``exog_vc`` as the same scipy.sparse CSR indicator matrix.

Usage::

    python benchmarks/bench_glmm.py                  # both sizes, writes the "glmm" section
    python benchmarks/bench_glmm.py --sizes 10000    # one size (groups = n / 100)
    python benchmarks/bench_glmm.py --no-write       # print only
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import scipy.sparse as sp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._report import table, write_section

FE = np.array([-0.5, 1.0, -1.0])
SD_RE = 0.8
SEED = 20240601


def simulate(n: int, k: int, seed: int = SEED):
    """Random-intercept logit data: X = [1, x1, x2], groups of (about) equal size."""
    rng = np.random.default_rng(seed)
    X = np.column_stack([np.ones(n), rng.normal(size=(n, 2))])
    g = rng.integers(0, k, size=n)
    u = rng.normal(0.0, SD_RE, size=k)
    eta = X @ FE + u[g]
    y = (rng.random(n) < 1.0 / (1.0 + np.exp(-eta))).astype(np.float64)
    Z = sp.csr_matrix((np.ones(n), (np.arange(n), g)), shape=(n, k))
    return y, X, Z, np.zeros(k, dtype=np.int64)


def _time(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def bench_ours(model, method: str, repeat: int):
    """(first call s, median steady s, result of the rng=0 call, nit of each call)."""
    fit = getattr(model, method)
    t_first, res0 = _time(lambda: fit(rng=0))
    times, nits = [], [int(res0.optim_retvals.nit)]
    for i in range(repeat):
        t, r = _time(lambda i=i: fit(rng=np.random.default_rng(1000 + i)))
        times.append(t)
        nits.append(int(r.optim_retvals.nit))
        if not r.optim_retvals.success:
            print(f"  warning: ours {method} rep {i} did not converge: {r.optim_retvals.message}")
    return t_first, float(np.median(times)), res0, nits


def bench_size(n: int, k: int, repeat: int, run_sm: bool):
    from bayesglmm import BinomialBayesMixedGLM

    y, X, Z, ident = simulate(n, k)
    load0 = os.getloadavg()[0]
    print(f"\n== n = {n:,}, groups = {k:,} (mean y = {y.mean():.3f}); load average {load0:.2f}",
          flush=True)
    ours = BinomialBayesMixedGLM(y, X, Z, ident)
    ours_sm_rule = BinomialBayesMixedGLM(y, X, Z, ident, vb_rule="statsmodels")

    out = {}
    for method in ("fit_map", "fit_vb"):
        first, steady, res, nits = bench_ours(ours, method, repeat)
        out[method] = dict(first=first, steady=steady, res=res, nits=nits)
        print(f"  ours {method}: first {first:.3f} s, steady {steady:.3f} s, nit {nits}, "
              f"|grad| {res.optim_retvals.grad_norm:.2e}", flush=True)
    # statsmodels' quadrature rule: same warm-up + steady protocol (one steady call is enough
    # here, it is reported for information only)
    first, steady, res, nits = bench_ours(ours_sm_rule, "fit_vb", 1)
    out["fit_vb_smrule"] = dict(first=first, steady=steady, res=res, nits=nits)
    print(f"  ours fit_vb (vb_rule='statsmodels'): first {first:.3f} s, steady {steady:.3f} s, "
          f"nit {nits}", flush=True)

    if run_sm:
        from statsmodels.genmod.bayes_mixed_glm import BinomialBayesMixedGLM as SMBinomial

        sm_model = SMBinomial(y, X, Z, ident)
        for method in ("fit_map", "fit_vb"):
            with warnings.catch_warnings(record=True) as w:
                warnings.simplefilter("always")
                t, r = _time(lambda method=method: getattr(sm_model, method)(rng=0))
            conv = [str(x.message) for x in w if "converge" in str(x.message)]
            out[method]["sm_time"] = t
            out[method]["sm_res"] = r
            out[method]["sm_nit"] = int(getattr(r.optim_retvals, "nit", -1))
            out[method]["sm_success"] = bool(getattr(r.optim_retvals, "success", not conv))
            print(f"  statsmodels {method}: {t:.2f} s, nit {out[method]['sm_nit']}, "
                  f"success {out[method]['sm_success']}", flush=True)

    load = max(load0, os.getloadavg()[0])
    rows = []
    for method in ("fit_map", "fit_vb"):
        d = out[method]
        row = {
            "n": f"{n:,}", "groups": f"{k:,}", "fit": method,
            "ours steady (s)": d["steady"],
            "ours compile (s)": max(d["first"] - d["steady"], 0.0),
            "ours nit": "/".join(str(x) for x in sorted(set(d["nits"]))),
            "load": f"{load:.1f}",
        }
        if "sm_time" in d:
            row["statsmodels (s)"] = d["sm_time"]
            row["sm nit"] = str(d["sm_nit"]) + ("" if d["sm_success"] else " (not conv.)")
            row["speed-up"] = f"{d['sm_time'] / d['steady']:.0f}×"
            diff = np.max(np.abs(d["res"].params - d["sm_res"].params))
            row["max abs Δparams"] = f"{diff:.1e}"
            if method == "fit_vb":
                dsm = np.max(np.abs(out["fit_vb_smrule"]["res"].params - d["sm_res"].params))
                row["max abs Δparams, vb_rule=statsmodels"] = f"{dsm:.1e}"
                dsd = np.max(np.abs(out["fit_vb_smrule"]["res"].fe_sd - d["sm_res"].fe_sd))
                row["_fe_sd_diff"] = dsd
            print(f"  {method}: speed-up {row['speed-up']}, max|Δparams| {row['max abs Δparams']}"
                  + (f", statsmodels rule {row['max abs Δparams, vb_rule=statsmodels']}"
                     if method == "fit_vb" else ""), flush=True)
        rows.append(row)
    rows[-1]["_smrule_steady"] = out["fit_vb_smrule"]["steady"]
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="10000,100000",
                    help="comma-separated n; groups = n / 100 (default: 10000,100000)")
    ap.add_argument("--repeat", type=int, default=3, help="timed calls after the warm-up")
    ap.add_argument("--no-statsmodels", action="store_true", help="skip statsmodels")
    ap.add_argument("--no-write", action="store_true", help="do not write RESULTS.md")
    args = ap.parse_args(argv)
    sizes = [int(float(s)) for s in args.sizes.split(",") if s]

    t0 = time.perf_counter()
    rows = []
    for n in sizes:
        rows += bench_size(n, max(n // 100, 1), args.repeat, not args.no_statsmodels)
    total = time.perf_counter() - t0

    cols = ["n", "groups", "fit", "ours steady (s)", "ours compile (s)", "ours nit",
            "statsmodels (s)", "sm nit", "speed-up", "max abs Δparams",
            "max abs Δparams, vb_rule=statsmodels", "load"]
    md = table(rows, cols)
    print("\n" + md)
    print(f"\ntotal wall time {total:.0f} s")

    big = [r for r in rows if "speed-up" in r and r["n"] == f"{max(sizes):,}"]
    para = [
        "### bayesglmm vs statsmodels: random-intercept logit",
        "",
        f"Simulated data: X = [1, x1, x2] with x ~ N(0, 1), fe = (−0.5, 1, −1), group "
        f"intercepts ~ N(0, {SD_RE}²), y ~ Bernoulli(logit⁻¹ η), groups = n / 100; `exog_vc` "
        "is the same scipy.sparse CSR indicator matrix for both libraries, `ident` = 0. "
        f"Ours: steady state = median of {args.repeat} calls after one warm-up call, each with "
        "a fresh `rng`; compile = first call − steady state. statsmodels: one call each "
        "(defaults: BFGS, finite-difference Hessian for `fit_map`). Speed-up = statsmodels "
        "time / our steady-state time. Δparams compares the full `params` vector (fe, vcp, "
        "vc) of each fit with statsmodels'; our default VB uses a 20-node Gauss–Hermite rule "
        "(statsmodels: 10-point Gauss–Legendre on [−5, 5]), the last column rebuilds our "
        "model with `vb_rule=\"statsmodels\"`. `load` is the 1-minute load average "
        f"(max of before/after that size; the machine has {os.cpu_count()} cores and the "
        "benchmark itself accounts for 1–2): well above 2, other processes were competing "
        "for the CPU and the times are inflated.",
        "",
        md,
        "",
    ]
    if big:
        nmax = max(sizes)
        smap = next((r for r in big if r["fit"] == "fit_map"), None)
        svb = next((r for r in big if r["fit"] == "fit_vb"), None)
        parts = []
        if smap:
            ok = float(smap["speed-up"][:-1]) >= 20
            parts.append(f"`fit_map` {smap['speed-up']} (target ≥ 20×: "
                         f"{'met' if ok else 'not met'})")
        if svb:
            ok = float(svb["speed-up"][:-1]) >= 50
            parts.append(f"`fit_vb` {svb['speed-up']} (target ≥ 50×: "
                         f"{'met' if ok else 'not met'})")
        para.append(f"At n = {nmax:,}: " + "; ".join(parts) + ". "
                    "Statsmodels' MAP stops at BFGS's default gtol (1e-5), ours at "
                    "‖∇‖∞ ≤ 1e-8, so part of the MAP difference is statsmodels' optimiser "
                    "tolerance.")
    para.append(f"\nTotal benchmark wall time {total:.0f} s.")
    if not args.no_write:
        write_section("glmm", "\n".join(para))
        print("wrote section 'glmm' of benchmarks/RESULTS.md")


if __name__ == "__main__":
    main()
