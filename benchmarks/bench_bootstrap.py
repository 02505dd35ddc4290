"""Parametric bootstrap of sleepstudy, bayesglmm against lme4's bootMer, in the same run.

``Reaction ~ Days + (Days | Subject)`` (REML), 1,000 replicates: bayesglmm's
``results.bootstrap(n=1000)`` (every replicate refitted by one compiled Newton program vmapped
over replicates; bayesglmm.inference.bootstrap) against ``bootMer(m, FUN, nsim = 1000)`` in
Rscript (lme4's refit per replicate).  Times are wall-clock: bayesglmm's first call (compile
+ run; compilation cache off) and a second call (compiled), R's bootMer alone (after
loading lme4 and fitting).  The percentile intervals of both are printed side by side (they
differ by Monte Carlo error only: different random streams).  Writes the ``bootstrap``
section of benchmarks/RESULTS.md.

    python benchmarks/bench_bootstrap.py
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

os.environ.setdefault("BAYESGLMM_CACHE_DIR", "0")  # honest first-call times

import numpy as np  # noqa: E402

from bayesglmm import datasets, mixedlm  # noqa: E402

N = 1000
R_SCRIPT = r"""
suppressMessages({library(lme4); library(jsonlite)})
args <- commandArgs(trailingOnly = TRUE)
d <- read.csv(args[1], colClasses = c(Subject = "factor"))
m <- lmer(Reaction ~ Days + (Days | Subject), d)
f <- function(x) c(fixef(x), as.data.frame(VarCorr(x))$sdcor)
t0 <- proc.time()[["elapsed"]]
b <- bootMer(m, f, nsim = as.integer(args[2]), seed = 1)
el <- proc.time()[["elapsed"]] - t0
q <- apply(b$t, 2, quantile, c(0.025, 0.975), na.rm = TRUE)
cat(toJSON(list(seconds = el, names = colnames(b$t), lower = unname(q[1, ]),
                upper = unname(q[2, ])), digits = NA, auto_unbox = TRUE))
"""


def main():
    df = datasets.load("sleepstudy")
    res = mixedlm("Reaction ~ Days + (Days | Subject)", df).fit()
    t0 = time.perf_counter()
    b = res.bootstrap(n=N, seed=1)
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    b = res.bootstrap(n=N, seed=2)
    second = time.perf_counter() - t0
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _report import rscript_json, write_section

    r, _ = rscript_json(R_SCRIPT, df, N)
    # lme4's sdcor order: sd(Intercept), sd(Days), cor, sigma
    ours = ["Intercept", "Days", "sd_Intercept|Subject", "sd_Days|Subject",
            "cor_Days.Intercept|Subject", "sigma"]
    lines = [
        "## Parametric bootstrap: bayesglmm vs lme4's bootMer",
        "",
        f"sleepstudy, `Reaction ~ Days + (Days | Subject)` (REML), {N} replicates, same run "
        "(`python benchmarks/bench_bootstrap.py`; the machine's 2 cores were shared with "
        "other jobs, so absolute times are noisy).",
        "",
        "| | wall time (s) |",
        "|---|---|",
        f"| bayesglmm `bootstrap(n={N})`, first call (compile + run, no cache) | {first:.2f} |",
        f"| bayesglmm `bootstrap(n={N})`, second call | {second:.2f} |",
        f"| lme4 `bootMer(nsim={N})` | {r['seconds']:.2f} |",
        "",
        f"Replicates converged (bayesglmm): {b.converged.mean():.3f}.",
        "",
        "Percentile intervals (95%; different random streams, so they agree to Monte Carlo "
        "error only):",
        "",
        "| parameter | bayesglmm | bootMer |",
        "|---|---|---|",
    ]
    for k, name in enumerate(ours):
        lo, hi = b.conf_int.loc[name]
        cell = name.replace("|", "\\|")  # a literal bar inside a Markdown table
        lines.append(f"| {cell} | [{lo:.3f}, {hi:.3f}] | [{r['lower'][k]:.3f}, "
                     f"{r['upper'][k]:.3f}] |")
    text = "\n".join(lines) + "\n"
    write_section("bootstrap", text)
    print(text)
    return np.array([first, second, r["seconds"]])


if __name__ == "__main__":
    main()
