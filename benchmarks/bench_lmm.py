"""Linear mixed models: bayesglmm.lmm against statsmodels' MixedLM and lme4's lmer, same data,
same run.

1. Random slopes: 100,000 rows in 2,000 groups, ``y ~ x``, ``re_formula="~x"`` (REML).
2. Crossed factors shaped like lme4's InstEval: 73,000 rows, factors of 2,972, 1,128 and 14
   levels, ``y ~ service + (1|s) + (1|d) + (1|dept)`` (REML).  statsmodels can only write this
   as variance components inside one all-encompassing group; it runs in a subprocess under a
   time cap.

lme4's ``lmer`` (REML) runs in one Rscript per model where R and lme4 are installed (timed inside
R, and the whole process); without them its columns say so.  Ours run in this process with the
persistent compilation cache off, so the first call includes tracing and compiling.

Run ``python -m benchmarks.bench_lmm``; writes the ``lmm`` section of ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
import tempfile
import time
import warnings

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script or module
os.environ.setdefault("BAYESGLMM_CACHE_DIR", "0")  # first calls compile (before bayesglmm loads)
from benchmarks._report import rscript_json, table, write_section  # noqa: E402

SM_CAP_SLOPE = 240  # seconds
SM_CAP_CROSSED = 240


def slope_data(seed=0, n=100_000, groups=2_000):
    rng = np.random.default_rng(seed)
    g = rng.integers(0, groups, n)
    x = rng.normal(size=n)
    b0 = rng.normal(0, 1.0, groups)
    b1 = 0.3 * b0 + rng.normal(0, 0.5, groups)
    y = 1.0 + 0.5 * x + b0[g] + b1[g] * x + rng.normal(0, 1.0, n)
    return pd.DataFrame({"y": y, "x": x, "g": g.astype(str)})


def insteval_like(seed=0, n=73_000, ns=2_972, nd=1_128, ndept=14):
    """Students s rate lectures by instructors d; each instructor belongs to a department."""
    rng = np.random.default_rng(seed)
    s = rng.integers(0, ns, n)
    pop = rng.gamma(1.0, 1.0, nd)
    d = rng.choice(nd, n, p=pop / pop.sum())
    dept_of = rng.integers(0, ndept, nd)
    dept = dept_of[d]
    service = rng.integers(0, 2, n).astype(float)
    y = (3.2 + 0.05 * service + rng.normal(0, 0.33, ns)[s] + rng.normal(0, 0.52, nd)[d]
         + rng.normal(0, 0.08, ndept)[dept] + rng.normal(0, 1.18, n))
    return pd.DataFrame({"y": y, "service": service, "s": [f"s{i}" for i in s],
                         "d": [f"d{i}" for i in d], "dept": [f"D{i}" for i in dept]})


_SM_CODE = """
import json, sys, time, warnings
import pandas as pd
import statsmodels.formula.api as smf
warnings.simplefilter("ignore")
df = pd.read_pickle(sys.argv[1])
kind = sys.argv[2]
t0 = time.perf_counter()
if kind == "slope":
    r = smf.mixedlm("y ~ x", df, groups="g", re_formula="~x").fit(reml=True)
else:
    df["one"] = 1
    vc = {"s": "0 + C(s)", "d": "0 + C(d)", "dept": "0 + C(dept)"}
    r = smf.mixedlm("y ~ service", df, groups="one", re_formula="0", vc_formula=vc).fit()
print(json.dumps({"time": time.perf_counter() - t0, "llf": float(r.llf),
                  "converged": bool(r.converged)}))
"""


_LMER = r"""
suppressMessages(library(lme4))
d <- read.csv(commandArgs(TRUE)[1])
for (v in intersect(c("g", "s", "d", "dept"), names(d))) d[[v]] <- factor(d[[v]])
f <- as.formula(commandArgs(TRUE)[2])
t0 <- proc.time()
m <- lmer(f, data = d, REML = TRUE)
t <- proc.time() - t0
cat(sprintf('{"fit": %.4f, "llf": %.6f}', t[["elapsed"]], as.numeric(logLik(m))))
"""


def lmer_fit(df, formula):
    """lme4's lmer in one Rscript: ``(seconds inside R, whole process, REML log-likelihood)``,
    or None where R or lme4 is missing."""
    if not shutil.which("Rscript"):
        return None
    try:
        res, whole = rscript_json(_LMER, df, formula)
    except subprocess.CalledProcessError:  # lme4 not installed
        return None
    return res["fit"], whole, res["llf"]


def statsmodels_fit(df, kind, cap):
    """statsmodels' fit in a subprocess: (seconds or None if over ``cap``, llf)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "data.pkl")
        df.to_pickle(path)
        try:
            out = subprocess.run([sys.executable, "-c", _SM_CODE, path, kind], capture_output=True,
                                 text=True, timeout=cap, check=True)
        except subprocess.TimeoutExpired:
            return None, float("nan")
        res = json.loads(out.stdout.strip().splitlines()[-1])
        return res["time"], res["llf"]


def ours(df, formula, **kw):
    """First call (with compilation), warm call, and the median time of one evaluation."""
    import jax
    import jax.numpy as jnp

    from bayesglmm._precision import precision
    from bayesglmm import mixedlm
    from bayesglmm.linalg._blas import single_threaded_blas
    from bayesglmm.kernels.lmm import evaluate

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t0 = time.perf_counter()
        r = mixedlm(formula, df, **kw).fit()
        first = time.perf_counter() - t0
        t0 = time.perf_counter()
        model = mixedlm(formula, df, **kw)
        r = model.fit()
        warm = time.perf_counter() - t0
    with precision(np.float64), single_threaded_blas():
        cp, st = model._crossprod(np.float64)
        cpj = type(cp)(*[jnp.asarray(a) for a in cp])
        th = jnp.asarray(r.theta)
        ts = []
        for _ in range(5):
            t0 = time.perf_counter()
            jax.block_until_ready(evaluate(th, cpj, st, True))
            ts.append(time.perf_counter() - t0)
    return first, warm, r, float(np.median(ts))


def _lmer_columns(lm4, warm) -> dict:
    """The lme4 columns of a row (``lm4`` from :func:`lmer_fit`)."""
    if lm4 is None:
        return {"lmer (in R)": "no R/lme4", "lmer Rscript": "", "lmer / ours warm": "",
                "llf lmer": ""}
    fit, whole, llf = lm4
    return {"lmer (in R)": f"{fit:.2f}", "lmer Rscript": f"{whole:.2f}",
            "lmer / ours warm": f"{fit / warm:.1f}x", "llf lmer": f"{llf:.3f}"}


def main():
    load0 = os.getloadavg()[0]
    rows = []
    df = slope_data()
    first, warm, r, per_eval = ours(df, "y ~ x", groups="g", re_formula="~x")
    t_sm, llf_sm = statsmodels_fit(df, "slope", SM_CAP_SLOPE)
    lm4 = lmer_fit(df, "y ~ x + (x | g)")
    rows.append({
        "model": "random slopes, 100,000 rows / 2,000 groups",
        "bayesglmm (first call, incl. compile)": f"{first:.2f}",
        "bayesglmm (warm)": f"{warm:.2f}",
        "evaluations": r.optim.n_evals,
        "ms / evaluation": f"{1e3 * per_eval:.0f}",
        "statsmodels": f"{t_sm:.1f}" if t_sm is not None else f"> {SM_CAP_SLOPE}",
        "speed-up (first call)": (f"{t_sm / first:.0f}x" if t_sm is not None
                                  else f"> {SM_CAP_SLOPE / first:.0f}x"),
        "llf bayesglmm": f"{r.llf:.3f}",
        "llf statsmodels": f"{llf_sm:.3f}",
        **_lmer_columns(lm4, warm),
    })
    df = insteval_like()
    first, warm, r, per_eval = ours(df, "y ~ service + (1 | s) + (1 | d) + (1 | dept)")
    t_sm, llf_sm = statsmodels_fit(df, "crossed", SM_CAP_CROSSED)
    lm4 = lmer_fit(df, "y ~ service + (1 | s) + (1 | d) + (1 | dept)")
    rows.append({
        "model": "crossed 2,972 × 1,128 × 14 levels, 73,000 rows",
        "bayesglmm (first call, incl. compile)": f"{first:.2f}",
        "bayesglmm (warm)": f"{warm:.2f}",
        "evaluations": r.optim.n_evals,
        "ms / evaluation": f"{1e3 * per_eval:.0f}",
        "statsmodels": f"{t_sm:.1f}" if t_sm is not None else f"> {SM_CAP_CROSSED} (stopped)",
        "speed-up (first call)": (f"{t_sm / first:.0f}x" if t_sm is not None
                                  else f"> {SM_CAP_CROSSED / first:.0f}x"),
        "llf bayesglmm": f"{r.llf:.3f}",
        "llf statsmodels": f"{llf_sm:.3f}" if t_sm is not None else "—",
        **_lmer_columns(lm4, warm),
    })
    vc = r.varcorr
    cols = list(rows[0])
    body = (
        "## Linear mixed models (`bayesglmm.lmm`)\n\n"
        "REML fits, wall-clock seconds, one run each (both libraries on the same simulated data "
        "in the same run; statsmodels in a subprocess under a time cap). `first call` includes "
        "JAX compilation and building the design and cross-products; `warm` is a second fit of a "
        "new model on the same data (no compilation); `evaluations` counts the fit's calls of its "
        "compiled programs (deviance and gradient; with the Hessian, at θ̂ or throughout for "
        "small blocks), each point once; `ms / evaluation` is the median of 5 evaluations at the "
        "optimum. Ours with the persistent compilation cache off (a fresh process with a warm "
        "cache: the `coldstart` section). lme4's `lmer` (REML) on the same data in one Rscript "
        "per model: its fit timed inside R, and the whole process (start-up, loading lme4, "
        "reading the CSV); `llf`: the REML log-likelihood.\n\n"
        + table(rows, cols)
        + "\n\nCrossed fit (bayesglmm) variance components: "
        + ", ".join(f"{g} {v:.4f}" for g, v in zip(vc["group"], vc["vcov"]))
        + ".\n\n"
        f"Load average (1 min) at start / end of this run: {load0:.1f} / "
        f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
        + (" — above the core count: other jobs were competing for the CPU and every time "
           "above is inflated.\n" if max(load0, os.getloadavg()[0]) > os.cpu_count() else
           " (the benchmark itself accounts for 1–2).\n")
    )
    write_section("lmm", body)
    print(body)


if __name__ == "__main__":
    main()
