"""The InstEval-shaped crossed design (73,000 rows, 2,972 × 1,128 × 14 levels) against lmer on
the very same data: benchmarks/bench_lmm.py's deterministic ``insteval_like()``.

lmer's figures are in tests/reference/lmer_insteval_like.json, produced by
tests/reference/lmer_insteval_like.R (lme4 1.1.31)::

    m <- lmer(y ~ service + (1 | s) + (1 | d) + (1 | dept), df, REML = TRUE)
    REMLcrit(m); getME(m, "theta"); sigma(m); fixef(m); sqrt(diag(vcov(m)))
"""

import json
from pathlib import Path

import numpy as np
import pytest

from bayesglmm import mixedlm

REF = json.loads((Path(__file__).parents[1] / "reference" / "lmer_insteval_like.json").read_text())


@pytest.fixture(scope="module")
def fit():
    from benchmarks.bench_lmm import insteval_like

    return mixedlm(REF["formula"], insteval_like()).fit()


@pytest.mark.slow
def test_reml_criterion_reaches_lmer(fit):
    """At least as low as lmer's REML criterion, or within 1e-3 of it (it is 2.5e-7 lower).

    m = 1,126 > HESSIAN_ONLY_MAX_M: the default fit is L-BFGS-B on the autodiff value and
    gradient, then Newton's method from its end; the exact autodiff Hessian at θ̂ certifies the
    optimum (Newton decrement) and gives the covariance of ψ with the fit.
    """
    assert fit.converged and not fit.is_singular
    der = fit.optim.derivs
    assert der is not None and np.array_equal(fit.theta, fit.optim.theta)
    assert fit.deviance <= REF["reml_criterion"] + 1e-3
    # θ_dept (14 levels) is weakly determined: lmer stops 1.8e-4 (relative) away from it
    np.testing.assert_allclose(fit.theta, list(REF["theta"].values()), rtol=1e-3)
    np.testing.assert_allclose(np.sqrt(fit.scale), REF["sigma"], rtol=1e-6)
    np.testing.assert_allclose(fit.fe_params.to_numpy(), list(REF["fixef"].values()), rtol=1e-5)
    np.testing.assert_allclose(fit.bse_fe.to_numpy(), list(REF["fixef_se"].values()), rtol=1e-4)
    assert np.all(np.linalg.eigvalsh(der.hess) > 0)
    assert 0.5 * der.grad @ np.linalg.solve(der.hess, der.grad) <= 1e-9  # nothing left to gain


@pytest.mark.slow
def test_hessian_program_matches_the_plain_reference(fit):
    """The fit's Hessian program (kernels.lmm.second_order: jax.jacfwd of jax.grad through the
    JVP rule of linalg.cholesky.logdet_solve_inverse, the dense block built with both
    triangles) equals jax.hessian through JAX's own Cholesky rules (deviance_hessian) on the
    1,126-row dense block.  (Its cost — about a dozen evaluations, against thirty through
    JAX's own rules — is measured by benchmarks/bench_lmm.py, not asserted here.)"""
    from bayesglmm._precision import precision
    from bayesglmm.kernels.lmm import deviance_hessian, evaluate, programs, theta_to_psi
    from bayesglmm.linalg._blas import single_threaded_blas

    cp, st = fit.model._crossprod(np.float64)
    assert st.m == 1126 and st.sparse
    with precision(np.float64), single_threaded_blas():
        second_order = programs(cp, st)[1]
        args = (fit.theta, theta_to_psi(fit.theta, st), cp, st, True)
        value, grad, hess, _, _ = second_order(*args)
        dev, g, _ = evaluate(fit.theta, cp, st, True)
        ref = np.asarray(deviance_hessian(fit.theta, cp, st, True))
    np.testing.assert_allclose(value, dev, rtol=1e-12)
    np.testing.assert_allclose(grad, g, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(np.asarray(hess), ref, rtol=1e-8, atol=1e-8 * np.abs(ref).max())


@pytest.mark.slow
def test_summary_after_the_fit_is_immediate(fit):
    """The covariance of ψ is formed with the fit (m = 1,126 <= EAGER_COV_MAX_M): summary(),
    bse, cov_params() and conf_int() only format and compile nothing (their time, ≤ 50 ms,
    is measured by benchmarks/bench_coldstart.py, not asserted here)."""
    import jax.monitoring

    assert isinstance(fit._cov_psi, np.ndarray)
    events = []

    def listener(event, duration, **kw):
        if event.startswith("/jax/core/compile"):
            events.append(event)

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        text = str(fit.summary())
        bse, _, _ = fit.bse, fit.cov_params(), fit.conf_int()
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
    assert events == []
    assert np.all(np.isfinite(bse)) and "dept Var" in text
