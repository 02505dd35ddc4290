"""A quick benchmark on the bundled data (``bayesglmm bench``; about 15 s on a quiet two-core
machine, most of it compiling).

Each case is fitted twice in this process: the first time includes compiling (or loading from
the persistent compilation cache), the second is the steady-state fit.  The full benchmarks,
against statsmodels and at 10^5–10^7 rows, are the scripts in the repository's
``benchmarks/`` folder.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable

import numpy as np
import pandas as pd

__all__ = ["cases", "run"]


def _simulated(n_groups: int = 200, per: int = 50, seed: int = 0) -> pd.DataFrame:
    """Binary responses, one covariate, a random intercept per group (SD 0.8)."""
    rng = np.random.default_rng(seed)
    g = np.repeat(np.arange(n_groups), per)
    x = rng.normal(size=g.size)
    eta = -0.5 + 0.7 * x + 0.8 * rng.normal(size=n_groups)[g]
    y = (rng.random(g.size) < 1 / (1 + np.exp(-eta))).astype(int)
    return pd.DataFrame({"y": y, "x": x, "g": g.astype(str)})


def cases() -> list[tuple[str, str, int, Callable]]:
    """``(data, fit, rows, fit function)`` of each benchmark case."""
    from . import BinomialBayesMixedGLM, PoissonBayesMixedGLM, datasets, mixedlm

    cbpp = datasets.load("cbpp")
    grouse = datasets.load("grouseticks")
    sleep = datasets.load("sleepstudy")
    pen = datasets.load("penicillin")
    sim = _simulated()
    binom = lambda: BinomialBayesMixedGLM.from_formula(  # noqa: E731
        "incidence ~ C(period)", {"herd": "0 + C(herd)"}, cbpp, n_trials="size")
    pois = lambda: PoissonBayesMixedGLM.from_formula(  # noqa: E731
        "TICKS ~ YEAR + (1 | BROOD) + (1 | LOCATION)", {}, grouse)
    big = lambda: BinomialBayesMixedGLM.from_formula("y ~ x + (1 | g)", {}, sim)  # noqa: E731
    return [
        ("cbpp", "fit_map", len(cbpp), lambda: binom().fit_map()),
        ("cbpp", "fit_vb", len(cbpp), lambda: binom().fit_vb(rng=0)),
        ("cbpp", "fit_laplace", len(cbpp), lambda: binom().fit_laplace()),
        ("cbpp", "fit_laplace(integrate)", len(cbpp), lambda: binom().fit_laplace(integrate=True)),
        ("grouseticks (crossed)", "fit_map", len(grouse), lambda: pois().fit_map()),
        ("simulated binary", "fit_vb", len(sim), lambda: big().fit_vb(rng=0)),
        ("sleepstudy", "mixedlm REML", len(sleep),
         lambda: mixedlm("Reaction ~ Days + (Days | Subject)", sleep).fit()),
        ("penicillin (crossed)", "mixedlm REML", len(pen),
         lambda: mixedlm("diameter ~ 1 + (1 | plate) + (1 | sample)", pen).fit()),
    ]


def run(echo: Callable[[str], None] | None = print) -> pd.DataFrame:
    """Fit every case of :func:`cases` twice; return (and ``echo``, line by line) the table.

    Returns
    -------
    DataFrame
        Columns ``data``, ``fit``, ``rows``, ``first_s`` (compile or cache load included) and
        ``again_s`` (the same fit again).
    """
    rows = []
    if echo:
        echo(f"{'data':<22s} {'fit':<24s} {'rows':>6s} {'first (s)':>10s} {'again (s)':>10s}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence notes on small data are not the point
        for data, fit, n, fn in cases():
            times = []
            for _ in range(2):
                t0 = time.perf_counter()
                fn()
                times.append(time.perf_counter() - t0)
            rows.append((data, fit, n, times[0], times[1]))
            if echo:
                echo(f"{data:<22s} {fit:<24s} {n:>6d} {times[0]:>10.2f} {times[1]:>10.3f}")
    return pd.DataFrame(rows, columns=["data", "fit", "rows", "first_s", "again_s"])
