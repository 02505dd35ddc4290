"""Random slopes in a mixed GLM — correlated ``(x | g)``, independent ``(x || g)``, and
either crossed with another factor, ``(x | g) + (1 | h)`` and ``(x || g) + (1 | h)`` —
``fit_laplace`` against lme4's ``glmer``, same data, same run.

Simulated counts, fixed seed: G groups of ``--per`` rows, q − 1 covariates x_j ~ N(0, 1),
y ~ Poisson(exp(0.5 + b_g0 + Σ_j x_j·b_gj)) with b_g ~ N(0, 0.3²·I); the model is
``y ~ x1 + … + (x1 + … | g)`` (q correlated effects per group: q SDs and q(q − 1)/2
correlations) by Laplace without priors (glmer, nAGQ = 1).

* ours: ``PoissonBayesMixedGLM.from_formula(...).fit_laplace(priors=False)`` in a fresh
  process with the compilation cache off: the first call (compilation included) and the median
  of two more; peak resident memory (VmHWM);
* lme4: ``glmer`` in one Rscript, timed inside R, and the whole Rscript process.

Without a crossed factor every row of Z touches one group, so H_uu is block-diagonal in
q × q blocks, factored block by block (``design.ellpack.design_mode``'s ``("block", q)``,
linalg.block_diag): O(G·q³) per evaluation, where the dense k × k Cholesky it replaced was
O((G·q)³).  With one (``--crossed G:H:rows``), g's blocks are eliminated onto the Schur
complement over h's H levels (``("schur_block", …)``): O(G·q·H² + H³).

    python benchmarks/bench_corr.py                 # every case; writes "corr"
    python benchmarks/bench_corr.py --q 2 --indep-groups '' --crossed 300:20:3000 --no-write
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks._report import (glmer_columns, machine, python_json,  # noqa: E402
                               rscript_json, table, write_section)

R_SCRIPT = r"""
suppressMessages(library(lme4))
d <- read.csv(commandArgs(TRUE)[1])
d$g <- factor(d$g)
if ("h" %in% names(d)) d$h <- factor(d$h)
f <- as.formula(commandArgs(TRUE)[2])
t0 <- proc.time()
m <- suppressWarnings(glmer(f, data = d, family = poisson))
t <- proc.time() - t0
sd <- as.data.frame(VarCorr(m))
sd <- sd$sdcor[is.na(sd$var2)]
cat(sprintf('{"fit": %.4f, "fe": [%s], "sd": [%s], "llf": %.6f}', t[["elapsed"]],
            paste(sprintf("%.8f", fixef(m)), collapse = ","),
            paste(sprintf("%.8f", sd), collapse = ","), as.numeric(logLik(m))))
"""

OURS = """
    import json, sys, time
    import numpy as np, pandas as pd
    from benchmarks._report import peak_rss_mb
    from bayesglmm import PoissonBayesMixedGLM
    d = pd.read_csv(sys.argv[1], dtype={"g": str, "h": str})
    m = PoissonBayesMixedGLM.from_formula(sys.argv[2], None, d)
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        r = m.fit_laplace(priors=False)
        times.append(time.perf_counter() - t0)
    print(json.dumps({"first": times[0], "steady": float(np.median(times[1:])),
                      "fe": [float(v) for v in r.fe_mean],
                      "sd": [float(v) for v in np.exp(np.asarray(r.vcp_mean[:m._k_sd]))],
                      "llf": float(r.llf), "mode": str(m._design_mode), "peak": peak_rss_mb()}))
"""


def simulate_crossed(groups: int, levels: int, n: int, seed: int = 0):
    """(x1 | g) + (1 | h): rows in random groups of g and levels of h, SDs 0.3, 0.3, 0.4
    (g's two effects independent)."""
    import numpy as np
    import pandas as pd

    rs = np.random.default_rng(seed)
    g, h, x = rs.integers(0, groups, n), rs.integers(0, levels, n), rs.normal(size=n)
    b, c = 0.3 * rs.normal(size=(groups, 2)), 0.4 * rs.normal(size=levels)
    return pd.DataFrame({"x1": x, "g": [f"g{i:05d}" for i in g], "h": [f"h{i:03d}" for i in h],
                         "y": rs.poisson(np.exp(0.5 + b[g, 0] + b[g, 1] * x + c[h]))})


def simulate(groups: int, per: int, q: int, seed: int = 0):
    import numpy as np
    import pandas as pd

    rs = np.random.default_rng(seed)
    g = np.repeat(np.arange(groups), per)
    X = rs.normal(size=(groups * per, q - 1))
    b = 0.3 * rs.normal(size=(groups, q))
    eta = 0.5 + b[g, 0] + np.sum(X * b[g, 1:], axis=1)
    d = pd.DataFrame(X, columns=[f"x{j}" for j in range(1, q)])
    d["g"] = [f"g{i:04d}" for i in g]
    d["y"] = rs.poisson(np.exp(eta))
    return d


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--q", default="2,3,4", help="effects per group of the (x1 + … | g) rows")
    ap.add_argument("--groups", type=int, default=500)
    ap.add_argument("--per", type=int, default=8)
    ap.add_argument("--indep-groups", default="2000,10000",
                    help="group counts of the (x1 || g) rows (5 rows each); '' for none")
    ap.add_argument("--crossed", default="300:20:3000,5000:50:40000",
                    help="G:H:rows of the (x1 | g) + (1 | h) rows; '' for none")
    ap.add_argument("--crossed-indep", default="300:20:3000,2000:20:20000",
                    help="G:H:rows of the (x1 || g) + (1 | h) rows; '' for none")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    rows = []
    env = dict(os.environ, BAYESGLMM_CACHE_DIR="0", PYTHONPATH=str(ROOT))
    cases = []  # (formula, groups label, data, parameters)
    for q in (int(s) for s in args.q.split(",") if s):
        xs = " + ".join(f"x{j}" for j in range(1, q))
        cases.append((f"y ~ {xs} + ({xs} | g)", f"{args.groups:,}",
                      simulate(args.groups, args.per, q), q + q * (q + 1) // 2))
    for gs in (int(g) for g in args.indep_groups.split(",") if g):
        cases.append(("y ~ x1 + (x1 || g)", f"{gs:,}", simulate(gs, 5, 2), 4))
    for spec in (c for c in args.crossed.split(",") if c):
        G, H, n = map(int, spec.split(":"))
        cases.append(("y ~ x1 + (x1 | g) + (1 | h)", f"{G:,} × {H:,}",
                      simulate_crossed(G, H, n), 6))
    for spec in (c for c in args.crossed_indep.split(",") if c):
        G, H, n = map(int, spec.split(":"))
        cases.append(("y ~ x1 + (x1 || g) + (1 | h)", f"{G:,} × {H:,}",
                      simulate_crossed(G, H, n), 5))
    for formula, groups, data, n_par in cases:
        ours = python_json(OURS, data, formula, env=env)
        print(f"{formula}, {groups}: ours {ours}", flush=True)
        r, r_whole = rscript_json(R_SCRIPT, data, formula)
        print(f"{formula}, {groups}: glmer {r} (whole {r_whole:.1f} s)", flush=True)
        d_sd = max(abs(a - b) for a, b in zip(ours["sd"], r["sd"]))
        rows.append({
            "random terms": formula[formula.index("("):].replace("|", "\\|"),
            "groups": groups, "rows": f"{len(data):,}", "parameters": n_par,
            "mode": ours["mode"].split(",")[0].strip("('\""),
            **glmer_columns(ours, r, r_whole, d_sd),
        })
    text = "\n".join([
        "## Random slopes — correlated, independent, crossed — against glmer (`benchmarks/bench_corr.py`)",
        "",
        f"Machine: {machine()}.  Simulated Poisson counts (seed 0): an intercept and slopes "
        "on x_j ~ N(0, 1) per group, SDs 0.3 — correlated `(x1 + … | g)` "
        f"({args.groups} groups × {args.per} rows), independent `(x1 || g)` (5 rows per group), "
        "and correlated slopes crossed with a second factor, `(x1 | g) + (1 | h)` (SD 0.4; "
        "rows in random cells), and independent ones, `(x1 || g) + (1 | h)` (the same data); "
        "Laplace without priors: ours `fit_laplace(priors=False)` in a "
        "fresh process without the compilation cache (first call, and the median of two "
        "more), lme4 `glmer` (nAGQ = 1) timed inside R, and its whole Rscript process.  "
        "`block`: H_uu block-diagonal in q × q blocks, factored block by block; "
        "`schur_block`: g's blocks eliminated onto the Schur complement over h's levels.  "
        "Before them the correlated fits formed the dense (G·q)² H_uu and took 15 s (q = 2), "
        "72 s (q = 3) and over 300 s without converging (q = 4); the independent ones a "
        "dense Schur complement of G² (2,000 groups: 100 s; 10,000: refused); the crossed "
        "ones 7.7 s (300 × 20) and refused (5,000 × 50: over 8,000 random effects), the "
        "crossed independent ones (the Schur mode, g's slopes in a dense rest) "
        "(300 × 20: 0.62 s warm) and 113 s (2,000 × 20).  A "
        "positive logLik difference is a better optimum than glmer's (glmer warns of a "
        "degenerate Hessian at q = 4, and on the 300 × 20 crossed data stops at a singular "
        "fit with g's intercept SD at zero, where our ℓ is its logLik to 1e-6).",
        "",
        table(rows, list(rows[0])),
    ])
    print(text)
    if not args.no_write:
        write_section("corr", text)


if __name__ == "__main__":
    main()
