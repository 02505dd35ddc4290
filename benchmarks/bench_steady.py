"""Steady-state medians of representative fits (public API only), for before/after checks.
Run from a checkout's root to compare two commits in one session (the layout issue's
10% rule): ``python benchmarks/bench_steady.py OUT.json`` in each, on a quiet machine, with
BAYESGLMM_CACHE_DIR=0."""

import json
import os
import sys
import time
import warnings

import numpy as np
import scipy.sparse as sp

sys.path.insert(0, os.getcwd())
warnings.simplefilter("ignore")

import bayesglmm as bg  # noqa: E402
from bayesglmm import datasets  # noqa: E402
from benchmarks.bench_lmm import insteval_like  # noqa: E402


def sim(n, k, seed=1):
    rng = np.random.default_rng(seed)
    X = np.column_stack([np.ones(n), rng.normal(size=(n, 2))])
    g = rng.integers(0, k, size=n)
    eta = X @ np.array([-0.5, 1, -1]) + rng.normal(0, .8, k)[g]
    y = (rng.random(n) < 1 / (1 + np.exp(-eta))).astype(float)
    Z = sp.csr_matrix((np.ones(n), (np.arange(n), g)), shape=(n, k))
    return y, X, Z, np.zeros(k, int)


def med(fn, r=3):
    fn()
    ts = []
    for _ in range(r):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return float(np.median(ts))


out = {}
y, X, Z, ident = sim(100_000, 1000)
m = bg.BinomialBayesMixedGLM(y, X, Z, ident)
out["logit1e5 map"] = med(lambda: m.fit_map(rng=0))
out["logit1e5 vb"] = med(lambda: m.fit_vb(rng=0))
out["logit1e5 laplace"] = med(lambda: m.fit_laplace(priors=False), r=1)
cb = datasets.load("cbpp")
mc = bg.BinomialBayesMixedGLM.from_formula("incidence ~ C(period)", {"herd": "0 + C(herd)"}, cb,
                                           n_trials="size")
out["cbpp laplace integrate"] = med(lambda: mc.fit_laplace(priors=True, integrate=True))
gt = datasets.load("grouseticks")
mg = bg.PoissonBayesMixedGLM.from_formula(
    "TICKS ~ YEAR + cHEIGHT", {"b": "0 + C(BROOD)", "i": "0 + C(INDEX)", "l": "0 + C(LOCATION)"}, gt)
out["grouse map"] = med(lambda: mg.fit_map(rng=0))
out["grouse vb"] = med(lambda: mg.fit_vb(rng=0))
out["grouse laplace"] = med(lambda: mg.fit_laplace(priors=False))
sl = datasets.load("sleepstudy")
out["sleep lmm"] = med(lambda: bg.mixedlm("Reaction ~ Days", sl, groups="Subject", re_formula="~Days").fit())
df = insteval_like()
out["crossed lmm"] = med(lambda: bg.mixedlm("y ~ service + (1 | s) + (1 | d) + (1 | dept)", df).fit(), r=2)
print(json.dumps(out, indent=1))
json.dump(out, open(sys.argv[1], "w"), indent=1)
