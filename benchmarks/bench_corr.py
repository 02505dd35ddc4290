"""Random slopes in a mixed GLM, correlated ``(x | g)`` and independent ``(x || g)``:
``fit_laplace`` against lme4's ``glmer``, same data, same run.

Simulated counts, fixed seed: G groups of ``--per`` rows, q − 1 covariates x_j ~ N(0, 1),
y ~ Poisson(exp(0.5 + b_g0 + Σ_j x_j·b_gj)) with b_g ~ N(0, 0.3²·I); the model is
``y ~ x1 + … + (x1 + … | g)`` (q correlated effects per group: q SDs and q(q − 1)/2
correlations) by Laplace without priors (glmer, nAGQ = 1).

* ours: ``PoissonBayesMixedGLM.from_formula(...).fit_laplace(priors=False)`` in a fresh
  process with the compilation cache off: the first call (compilation included) and the median
  of two more; peak resident memory (VmHWM);
* lme4: ``glmer`` in one Rscript, timed inside R, and the whole Rscript process.

Every row of Z touches one group, so H_uu is block-diagonal in q × q blocks, factored block
by block (``design.ellpack.design_mode``'s ``("block", q)``, linalg.block_diag): O(G·q³) per
evaluation, where the dense k × k Cholesky it replaced was O((G·q)³).

    python benchmarks/bench_corr.py                 # q = 2, 3, 4; writes "corr"
    python benchmarks/bench_corr.py --q 2 --no-write
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks._report import (machine, python_json, rscript_json, table,  # noqa: E402
                               write_section)

R_SCRIPT = r"""
suppressMessages(library(lme4))
d <- read.csv(commandArgs(TRUE)[1])
q <- as.integer(commandArgs(TRUE)[2])
bar <- commandArgs(TRUE)[3]
d$g <- factor(d$g)
xs <- paste0("x", 1:(q - 1), collapse = " + ")
f <- as.formula(sprintf("y ~ %s + (%s %s g)", xs, xs, bar))
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
    d = pd.read_csv(sys.argv[1])
    q, bar = int(sys.argv[2]), sys.argv[3]
    xs = " + ".join(f"x{j}" for j in range(1, q))
    m = PoissonBayesMixedGLM.from_formula(f"y ~ {xs} + ({xs} {bar} g)", None, d)
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        r = m.fit_laplace(priors=False)
        times.append(time.perf_counter() - t0)
    print(json.dumps({"first": times[0], "steady": float(np.median(times[1:])),
                      "fe": [float(v) for v in r.fe_mean],
                      "sd": [float(v) for v in np.exp(np.asarray(r.vcp_mean[:q]))],
                      "llf": float(r.llf), "mode": str(m._design_mode), "peak": peak_rss_mb()}))
"""


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
    ap.add_argument("--q", default="2,3,4")
    ap.add_argument("--groups", type=int, default=500)
    ap.add_argument("--per", type=int, default=8)
    ap.add_argument("--indep-groups", default="2000,10000",
                    help="group counts of the (x1 || g) rows (5 rows each); '' for none")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    rows = []
    env = dict(os.environ, BAYESGLMM_CACHE_DIR="0", PYTHONPATH=str(ROOT))
    cases = [(q, "|", args.groups, args.per) for q in (int(s) for s in args.q.split(","))]
    cases += [(2, "||", int(g), 5) for g in args.indep_groups.split(",") if g]
    for q, bar, groups, per in cases:
        data = simulate(groups, per, q)
        ours = python_json(OURS, data, q, bar, env=env)
        print(f"q={q} {bar} G={groups}: ours {ours}", flush=True)
        r, r_whole = rscript_json(R_SCRIPT, data, q, bar)
        print(f"q={q} {bar} G={groups}: glmer {r} (whole {r_whole:.1f} s)", flush=True)
        d_fe = max(abs(a - b) for a, b in zip(ours["fe"], r["fe"]))
        d_sd = max(abs(a - b) for a, b in zip(ours["sd"], r["sd"]))
        rows.append({
            "term": f"({' + '.join(f'x{j}' for j in range(1, q))} {bar} g)".replace("|", "\\|"),
            "groups": f"{groups:,}", "rows": f"{len(data):,}",
            "parameters": q + (q * (q + 1) // 2 if bar == "|" else q),
            "ours first (s)": ours["first"], "ours warm (s)": ours["steady"],
            "ours peak MB": f"{ours['peak']:.0f}", "glmer fit (s)": r["fit"],
            "glmer Rscript (s)": r_whole,
            "glmer / ours warm": f"{r['fit'] / ours['steady']:.1f}×",
            "glmer / ours first": f"{r['fit'] / ours['first']:.1f}×",
            "max |Δ fe|": f"{d_fe:.1e}", "max |Δ SD|": f"{d_sd:.1e}",
            "logLik ours − glmer": f"{ours['llf'] - r['llf']:+.4f}",
        })
    text = "\n".join([
        "## Random slopes, correlated and independent, against glmer (`benchmarks/bench_corr.py`)",
        "",
        f"Machine: {machine()}.  Simulated Poisson counts (seed 0): G groups, q effects per "
        "group (an intercept and q − 1 slopes on x_j ~ N(0, 1), SDs 0.3), correlated "
        f"`(x1 + … | g)` ({args.groups} groups × {args.per} rows) or independent `(x1 || g)` "
        "(5 rows per group); Laplace without priors: ours `fit_laplace(priors=False)` in a "
        "fresh process without the compilation cache (first call, and the median of two "
        "more), lme4 `glmer` (nAGQ = 1) timed inside R, and its whole Rscript process.  H_uu "
        "is block-diagonal in q × q blocks, factored block by block (`(\"block\", q)`); "
        "before it, the correlated fits formed the dense (G·q)² H_uu and took 15 s (q = 2), "
        "72 s (q = 3) and over 300 s without converging (q = 4), the independent ones a "
        "dense Schur complement of G² (2,000 groups: 100 s; 10,000: refused).  A positive "
        "logLik difference is a better optimum than glmer's (which warns of a degenerate "
        "Hessian at q = 4).",
        "",
        table(rows, list(rows[0])),
    ])
    print(text)
    if not args.no_write:
        write_section("corr", text)


if __name__ == "__main__":
    main()
