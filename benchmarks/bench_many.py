"""Many responses, one design: ``fit_many`` against loops of lme4's glmer and statsmodels.

Simulated per-gene counts (fixed seed): n = 2,000 rows, 50 groups of 40, x ~ N(0, 1), and for
each of k = 10,000 responses y ~ Poisson(exp(0.5 + 0.3·x + u_g)) with u_g ~ N(0, 0.5²) drawn
per response.  Model ``y ~ x + (1 | g)``, Laplace, no priors (lme4's glmer, nAGQ = 1).

* ours: ``bayesglmm.fit_many(model, Y, priors=False)`` on all k responses, in this process
  with the compilation cache disabled: the first call (compilation included) and a second
  call (steady state);
* lme4: ``glmer(y ~ x + (1 | g), family = poisson)`` looped over the first 20 responses in
  one Rscript; the loop timed inside R, and the whole Rscript process (start-up and loading
  lme4 included); both extrapolated to k (whole: start-up once plus k loop fits);
* statsmodels: ``PoissonBayesMixedGLM(...).fit_map()`` looped over the first 20 responses
  (timed, extrapolated to k).  A different estimator (the joint mode with priors), timed as
  the loop a statsmodels user runs today.

Agreement: max |Δ fe| and max |Δ SD| between fit_many and glmer on the 20 responses.
Writes the ``many`` section of ``benchmarks/RESULTS.md``.

Usage: ``python benchmarks/bench_many.py [--k 10000] [--loops 20] [--no-write]``
"""

from __future__ import annotations

import argparse
import os
import sys
import textwrap
import time
import warnings
from pathlib import Path

os.environ.setdefault("BAYESGLMM_CACHE_DIR", "0")  # honest compile times

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import rscript_json, table, write_section  # noqa: E402

N, GROUPS = 2000, 50

R_SCRIPT = textwrap.dedent("""
    suppressMessages(library(lme4))
    args <- commandArgs(trailingOnly = TRUE)
    d <- read.csv(args[1]); d$g <- factor(d$g)
    ys <- grep("^y", names(d), value = TRUE)
    fe <- list(); sd <- c()
    t0 <- proc.time()
    for (y in ys) {
      m <- glmer(as.formula(paste(y, "~ x + (1 | g)")), data = d, family = poisson)
      fe[[y]] <- unname(fixef(m)); sd <- c(sd, attr(VarCorr(m)$g, "stddev")[[1]])
    }
    dt <- proc.time() - t0
    loop <- dt[["elapsed"]]; cpu <- dt[["user.self"]] + dt[["sys.self"]]
    cat(sprintf('{"loop": %.6f, "cpu": %.6f, "fe": [%s], "sd": [%s]}\\n', loop, cpu,
        paste(sapply(fe, function(v) sprintf("[%.10g, %.10g]", v[1], v[2])), collapse = ", "),
        paste(sprintf("%.10g", sd), collapse = ", ")))
""")


def simulate(k: int, seed: int = 0):
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    g = np.repeat(np.arange(GROUPS), N // GROUPS)
    x = rng.normal(size=N)
    u = rng.normal(0.0, 0.5, (GROUPS, k))
    Y = rng.poisson(np.exp(0.5 + 0.3 * x[:, None] + u[g]))
    names = [f"gene{j}" for j in range(k)]
    return pd.DataFrame({"x": x, "g": g}), pd.DataFrame(Y, columns=names)


def load() -> float:
    return os.getloadavg()[0]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--k", type=int, default=10_000)
    ap.add_argument("--loops", type=int, default=20)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    import numpy as np

    import bayesglmm as bg

    k, L = args.k, args.loops
    df, Y = simulate(k)
    loads = [load()]
    model = bg.PoissonBayesMixedGLM.from_formula("y ~ x", {"g": "0 + C(g)"},
                                                 df.assign(y=Y.iloc[:, 0]))
    t0, c0 = time.perf_counter(), time.process_time()
    res = bg.fit_many(model, Y, priors=False)
    first, first_cpu = time.perf_counter() - t0, time.process_time() - c0
    t0, c0 = time.perf_counter(), time.process_time()
    res = bg.fit_many(model, Y, priors=False)
    steady, steady_cpu = time.perf_counter() - t0, time.process_time() - c0
    loads.append(load())
    print(f"fit_many: first {first:.1f} s, steady {steady:.1f} s, chunk {res.chunk_size}",
          flush=True)

    # lme4: a loop of glmer over the first L responses
    r, r_whole = rscript_json(R_SCRIPT, df.assign(**{f"y{j}": Y.iloc[:, j] for j in range(L)}))
    loads.append(load())
    r_fit, r_cpu = r["loop"] / L, r["cpu"] / L
    r_start = r_whole - r["loop"]
    print(f"lme4: {r_fit:.3f} s per fit, start-up {r_start:.1f} s", flush=True)

    # statsmodels: a loop of fit_map over the first L responses
    from statsmodels.genmod.bayes_mixed_glm import PoissonBayesMixedGLM as SmPoisson

    sm_df = df.assign(g=df.g.astype(str))
    t0, c0 = time.perf_counter(), time.process_time()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for j in range(L):
            SmPoisson.from_formula("y ~ x", {"g": "0 + C(g)"},
                                   sm_df.assign(y=Y.iloc[:, j])).fit_map()
    sm_fit, sm_cpu = (time.perf_counter() - t0) / L, (time.process_time() - c0) / L
    loads.append(load())
    print(f"statsmodels: {sm_fit:.3f} s per fit", flush=True)

    fe_ours = res.fe_mean.to_numpy()[:L]
    sd_ours = np.exp(res.vcp_mean.to_numpy()[:L, 0])
    d_fe = float(np.max(np.abs(fe_ours - np.asarray(r["fe"]))))
    d_sd = float(np.max(np.abs(sd_ours - np.asarray(r["sd"]))))
    lme4_k, lme4_whole_k = r_fit * k, r_start + r_fit * k

    def met(ratio):
        return "met" if ratio >= 100 else "not met"

    rows = [
        {"method": f"bayesglmm `fit_many` (first call, compile included; chunks of "
                   f"{res.chunk_size})", "measured": f"{k:,} fits", "seconds": first,
         "for 10,000 responses (s)": first * 10_000 / k,
         "lme4 loop / this": f"{lme4_k / first:.0f}×", "CPU (s)": first_cpu,
         "CPU for 10,000 (s)": first_cpu * 10_000 / k,
         "lme4 CPU / this": f"{r_cpu * k / first_cpu:.0f}×"},
        {"method": "bayesglmm `fit_many` (second call, steady state)",
         "measured": f"{k:,} fits", "seconds": steady,
         "for 10,000 responses (s)": steady * 10_000 / k,
         "lme4 loop / this": f"{lme4_k / steady:.0f}×", "CPU (s)": steady_cpu,
         "CPU for 10,000 (s)": steady_cpu * 10_000 / k,
         "lme4 CPU / this": f"{r_cpu * k / steady_cpu:.0f}×"},
        {"method": "lme4 `glmer` loop, timed inside R", "measured": f"{L} fits",
         "seconds": r["loop"], "for 10,000 responses (s)": r_fit * 10_000,
         "lme4 loop / this": "1×", "CPU (s)": r["cpu"], "CPU for 10,000 (s)": r_cpu * 10_000,
         "lme4 CPU / this": "1×"},
        {"method": "lme4 `glmer` loop, whole Rscript (start-up + loop)",
         "measured": f"{L} fits", "seconds": r_whole,
         "for 10,000 responses (s)": r_start + r_fit * 10_000,
         "lme4 loop / this": f"{lme4_k / lme4_whole_k:.2f}×"},
        {"method": "statsmodels `PoissonBayesMixedGLM.fit_map` loop", "measured": f"{L} fits",
         "seconds": sm_fit * L, "for 10,000 responses (s)": sm_fit * 10_000,
         "lme4 loop / this": f"{lme4_k / (sm_fit * k):.2f}×", "CPU (s)": sm_cpu * L,
         "CPU for 10,000 (s)": sm_cpu * 10_000,
         "lme4 CPU / this": f"{r_cpu / sm_cpu:.2f}×"},
    ]
    lines = [
        "## Many responses, one design (`benchmarks/bench_many.py`)",
        "",
        f"{k:,} simulated Poisson responses (per-gene counts) sharing one design: {N:,} rows, "
        f"{GROUPS} groups, y ~ Poisson(exp(0.5 + 0.3·x + u_g)), u_g ~ N(0, 0.5²) per "
        "response (seed 0); `y ~ x + (1 | g)` by Laplace without priors (lme4's glmer). "
        "Ours: `fit_many(model, Y, priors=False)` on all responses in one process with the "
        "compilation cache off; lme4 and statsmodels: loops over the first "
        f"{L} responses, extrapolated linearly. Speed-up = the lme4 loop (timed inside R) "
        "over each row (wall clock); the CPU columns are each process's CPU time (user + "
        "system, all threads: fit_many fits one chunk per core at a time, R uses one core), "
        "less sensitive to other jobs on "
        "the machine. `load` = 1-minute load average during the run (2 cores; above 2, "
        "other jobs competed for the CPU and every time is inflated, lme4's too).",
        "",
        table(rows, ["method", "measured", "seconds", "for 10,000 responses (s)",
                     "lme4 loop / this", "CPU (s)", "CPU for 10,000 (s)", "lme4 CPU / this"]),
        "",
        f"Goal ≥ 100× the lme4 loop (wall clock): {lme4_k / steady:.0f}× steady state "
        f"({met(lme4_k / steady)}), {lme4_k / first:.0f}× first call with compilation "
        f"({met(lme4_k / first)}); in CPU time {r_cpu * k / steady_cpu:.0f}× and "
        f"{r_cpu * k / first_cpu:.0f}×.",
        f"Agreement with glmer on the {L} responses: max |Δ fe| = {d_fe:.1e}, max |Δ SD| = "
        f"{d_sd:.1e} (glmer stops at its own tolerance). Converged: "
        f"{int(res.converged.sum()):,} of {k:,}; outer Newton steps: mean "
        f"{res.n_iter.mean():.1f}, max {res.n_iter.max()}.",
        f"Load average (1 min) over the run: {min(loads):.1f}–{max(loads):.1f}.",
    ]
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        write_section("many", text)


if __name__ == "__main__":
    main()
