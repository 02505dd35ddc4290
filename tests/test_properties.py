"""Property-based: degenerate small mixed models never give silent garbage (issue 12).

Hypothesis draws small designs — a covariate that is normal, constant (aliased with the
intercept), all zero or extreme; one to five groups with possibly an empty group (a column of
the random-effects design without rows) or one level; a response that is random, all zero,
all one or extreme; weights that are one, partly zero or all zero — and a fit.  Each outcome
is one of

* a ``ValueError``/``TypeError`` raised by bayesglmm's own code (its traceback ends in the
  package) with a message; or
* a result whose fixed effects and variance parameters are finite, except where a bayesglmm
  warning (BoundaryWarning, SingularFitWarning, RankDeficientWarning, ConvergenceWarning)
  says why — never NaN silently, never another exception.

The same for the linear mixed model (constant, collinear, zero or extreme covariates; one
level or one level per row; constant, exactly fitted or extreme responses; random slopes).
The GLMMs' rows (≤ 40) and levels (≤ 5) fall in one shape bucket (design.buckets: 1024 rows, 16
levels), so each family and fit compiles once.
"""

from __future__ import annotations

import os
import traceback
import warnings

import numpy as np
import pandas as pd
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, event, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from bayesglmm import BinomialBayesMixedGLM, PoissonBayesMixedGLM, mixedlm  # noqa: E402

pytestmark = pytest.mark.slow


@st.composite
def problems(draw):
    family = draw(st.sampled_from(["binomial", "poisson"]))
    n = draw(st.sampled_from([12, 24, 40]))
    levels = draw(st.sampled_from([1, 2, 5]))
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 16)))
    x_kind = draw(st.sampled_from(["normal", "normal", "constant", "zero", "extreme"]))
    x = {"normal": rng.normal(size=n), "constant": np.ones(n), "zero": np.zeros(n),
         "extreme": rng.normal(size=n) * 1e6}[x_kind]
    y_kind = draw(st.sampled_from(["random", "random", "zero", "one", "extreme"]))
    if family == "binomial":
        y = {"random": rng.integers(0, 2, n), "zero": np.zeros(n), "one": np.ones(n),
             "extreme": (x > np.median(x)).astype(float)}[y_kind]  # "extreme": separation
    else:
        y = {"random": rng.poisson(2, n), "zero": np.zeros(n), "one": np.ones(n),
             "extreme": rng.poisson(1e6, n)}[y_kind]
    g = rng.integers(0, levels, n)
    empty = draw(st.booleans())  # one more level that no row belongs to
    Z = np.zeros((n, levels + empty))
    Z[np.arange(n), g] = 1.0
    w_kind = draw(st.sampled_from(["one", "one", "some-zero", "some-zero", "all-zero"]))
    w = {"one": np.ones(n), "some-zero": (rng.random(n) > 0.3).astype(float),
         "all-zero": np.zeros(n)}[w_kind]
    fit = draw(st.sampled_from(["map", "vb", "laplace"]))
    return family, np.asarray(y, float), np.column_stack([np.ones(n), x]), Z, w, fit


def _ours(err: BaseException) -> bool:
    """Raised by bayesglmm's code (the innermost frame is in the package)."""
    frames = traceback.extract_tb(err.__traceback__)
    return bool(frames) and os.sep + "bayesglmm" + os.sep in frames[-1].filename


@settings(max_examples=40, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(problems())
def test_degenerate_designs_never_silent_garbage(problem):
    family, y, X, Z, w, fit = problem
    cls = BinomialBayesMixedGLM if family == "binomial" else PoissonBayesMixedGLM
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        try:
            model = cls(y, X, Z, np.zeros(Z.shape[1], int), freq_weights=w)
            if fit == "map":
                r = model.fit_map(rng=0)
            elif fit == "vb":
                r = model.fit_vb(rng=0)
            else:
                r = model.fit_laplace(priors=False)
        except (ValueError, TypeError) as err:
            assert _ours(err), "".join(traceback.format_exception(err))
            assert str(err)
            event(f"error: {str(err)[:40]}")
            return
    ours = [w.message for w in rec if type(w.message).__module__.startswith("bayesglmm")]
    k = model.k_fep + model.k_vcp
    var = np.asarray(r.fe_sd.tolist() + r.vcp_sd.tolist()) ** 2
    est = np.asarray(r.params)[:k]
    if not (np.all(np.isfinite(est)) and np.all(np.isfinite(var))):
        assert ours, f"non-finite estimates without a warning: {est}, {var}"
    event(f"{fit}: " + (", ".join(sorted({type(m).__name__ for m in ours})) or "clean"))
    if ours:
        return
    assert np.all(np.isfinite(r.params))
    assert r.converged


@st.composite
def lmm_problems(draw):
    n = draw(st.sampled_from([12, 30]))
    levels = draw(st.sampled_from([1, 2, 4, n]))  # one level; as many levels as rows
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 16)))
    x_kind = draw(st.sampled_from(["normal", "normal", "constant", "zero", "extreme"]))
    x = {"normal": rng.normal(size=n), "constant": np.ones(n), "zero": np.zeros(n),
         "extreme": rng.normal(size=n) * 1e8}[x_kind]
    g = rng.integers(0, levels, n) if levels < n else np.arange(n)
    y_kind = draw(st.sampled_from(["random", "random", "constant", "linear", "extreme"]))
    y = {"random": rng.normal(size=n) + g, "constant": np.full(n, 3.0), "linear": 2 + 3 * x,
         "extreme": rng.normal(size=n) * 1e9}[y_kind]
    slope = draw(st.booleans())
    return pd.DataFrame({"y": y, "x": x, "g": g.astype(str)}), slope


@settings(max_examples=30, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(lmm_problems())
def test_degenerate_lmm_designs_never_silent_garbage(problem):
    df, slope = problem
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        try:
            r = mixedlm("y ~ x", df, groups="g", re_formula="~x" if slope else None).fit()
        except (ValueError, TypeError) as err:
            assert _ours(err), "".join(traceback.format_exception(err))
            event(f"error: {str(err)[:40]}")
            return
    ours = [w.message for w in rec if type(w.message).__module__.startswith("bayesglmm")]
    event("fit: " + (", ".join(sorted({type(m).__name__ for m in ours})) or "clean"))
    numbers = np.r_[np.asarray(r.fe_params, float), r.scale, r.llf]
    assert np.all(np.isfinite(numbers)) or ours, numbers
    if not ours:
        assert r.converged
