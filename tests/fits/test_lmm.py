"""The LMM fit (fits/lmm.py, fits/lmm_theta.py): the bound-constrained Newton method against
scipy's L-BFGS-B, the methods on real models, the default method and the dtype choice."""

import numpy as np
import pytest
import scipy.optimize

from bayesglmm import datasets, mixedlm
from bayesglmm._export import LOADED_PREFIX
from bayesglmm.fits import lmm as fits_lmm
from bayesglmm.fits.lmm import default_method, lmm_dtype
from bayesglmm.fits.lmm_theta import Derivatives, minimise_theta, newton_theta


def _rosenbrock(x):
    """Rosenbrock's function in 3 dimensions with its exact derivatives."""
    a, b = x[:-1], x[1:]
    f = float(np.sum(100 * (b - a**2) ** 2 + (1 - a) ** 2))
    g = np.zeros_like(x)
    g[:-1] += -400 * a * (b - a**2) - 2 * (1 - a)
    g[1:] += 200 * (b - a**2)
    h = np.zeros((len(x), len(x)))
    for i in range(len(x) - 1):
        h[i, i] += 1200 * x[i] ** 2 - 400 * x[i + 1] + 2
        h[i + 1, i + 1] += 200
        h[i, i + 1] = h[i + 1, i] = -400 * x[i]
    return f, g, h


@pytest.mark.parametrize("lower", [np.full(3, -np.inf), np.array([-np.inf, 1.2, -np.inf]),
                                   np.array([0.0, 0.0, 1.5])])
def test_newton_matches_lbfgsb(lower):
    """A non-convex problem (Rosenbrock), free and with bounds that bind: the same minimiser
    as scipy's L-BFGS-B, reached with the exact Hessian at the end (decrement ≤ tol)."""
    fg = lambda x: _rosenbrock(x)[:2]  # noqa: E731
    derivs = lambda x: Derivatives(*_rosenbrock(x))  # noqa: E731
    x0 = np.array([-1.2, 1.0, 2.0])
    theta, der, decrement, _, status = newton_theta(fg, derivs, x0, lower, decrement_tol=1e-20)
    bounds = [(lo if np.isfinite(lo) else None, None) for lo in lower]
    ref = scipy.optimize.minimize(fg, np.maximum(x0, lower), jac=True, method="L-BFGS-B",
                                  bounds=bounds, options={"ftol": 1e-15, "gtol": 1e-12})
    assert status == "converged" and decrement <= 1e-20
    np.testing.assert_allclose(theta, ref.x, atol=1e-6)
    assert der.value <= ref.fun + 1e-12
    np.testing.assert_array_equal(der.hess, _rosenbrock(theta)[2])  # exact, not BFGS's


CASES = [
    ("diameter ~ 1 + (1 | plate) + (1 | sample)", "penicillin", {}),
    ("Reaction ~ Days", "sleepstudy", {"groups": "Subject", "re_formula": "~Days"}),
    ("Weight ~ Time", "dietox", {"groups": "Litter", "vc_formula": {"Pig": "0 + C(Pig)"}}),
]


@pytest.mark.parametrize("formula,name,kw", CASES, ids=[c[1] for c in CASES])
@pytest.mark.parametrize("reml", [True, False])
def test_methods_reach_the_same_optimum(formula, name, kw, reml):
    """Newton (the default here: small dense blocks), L-BFGS-B then Newton, and L-BFGS-B
    alone: one optimum; the two with Newton steps stop on the Newton decrement."""
    model = mixedlm(formula, datasets.load(name), **kw)
    fits = {m: model.fit(reml=reml, method=m) for m in ("newton", "lbfgs", "lbfgs-only")}
    assert default_method(model._crossprod(np.float64)[1]) == "newton"
    np.testing.assert_array_equal(model.fit(reml=reml).params, fits["newton"].params)
    ref = fits["newton"]
    for method, res in fits.items():
        assert res.converged, method
        np.testing.assert_allclose(res.deviance, ref.deviance, rtol=1e-11, err_msg=method)
        np.testing.assert_allclose(res.params, ref.params, rtol=1e-5, atol=1e-8, err_msg=method)
    for method in ("newton", "lbfgs"):
        assert fits[method].optim.decrement <= 1e-9
    with pytest.raises(ValueError, match="method must be"):
        model.fit(method="simplex")


def test_dtype():
    """float64 by default on CPU; float32 on request; anything else is refused with
    resolve_dtype's message."""
    import jax

    if jax.default_backend() != "cpu":
        pytest.skip("float32 is the default off CPU")
    assert lmm_dtype(None) == np.float64
    assert lmm_dtype(np.float32) == np.float32
    with pytest.raises(ValueError, match="float32 or float64"):
        lmm_dtype(np.int32)


def test_large_block_fits_without_a_hessian(penicillin, monkeypatch):
    """Above EAGER_COV_MAX_M the default is L-BFGS-B alone (no Hessian in the fit, the
    covariance of ψ deferred), at the optimum of the Newton fit; Newton needs a Hessian."""
    formula = "diameter ~ 1 + (1 | plate) + (1 | sample)"
    eager = mixedlm(formula, penicillin).fit()
    monkeypatch.setattr(fits_lmm, "EAGER_COV_MAX_M", -1)
    model = mixedlm(formula, penicillin)
    assert default_method(model._crossprod(np.float64)[1]) == "lbfgs-only"
    lazy = model.fit()
    assert lazy.optim.derivs is None and callable(lazy._cov_psi)
    np.testing.assert_allclose(lazy.deviance, eager.deviance, rtol=1e-10)
    np.testing.assert_allclose(lazy.params, eager.params, rtol=1e-4)
    with pytest.raises(ValueError, match="needs the Hessian"):
        minimise_theta(lambda x: (0.0, x), None, np.zeros(1), np.zeros(1), method="newton")


def test_medium_block_fits_lbfgs_then_newton_with_the_covariance(penicillin, monkeypatch):
    """Above HESSIAN_ONLY_MAX_M (and up to EAGER_COV_MAX_M) the default is L-BFGS-B, then
    Newton's method from its end: the exact Hessian at θ̂ certifies the optimum (Newton
    decrement) and the covariance of ψ is formed with the fit, as the Newton fit's."""
    formula = "diameter ~ 1 + (1 | plate) + (1 | sample)"
    eager = mixedlm(formula, penicillin).fit()
    monkeypatch.setattr(fits_lmm, "HESSIAN_ONLY_MAX_M", -1)
    model = mixedlm(formula, penicillin)
    assert default_method(model._crossprod(np.float64)[1]) == "lbfgs"
    res = model.fit()
    assert res.optim.derivs is not None and res.optim.decrement <= fits_lmm.DECREMENT_TOL
    assert isinstance(res._cov_psi, np.ndarray)
    np.testing.assert_allclose(res.deviance, eager.deviance, rtol=1e-12)
    np.testing.assert_allclose(res.bse, eager.bse, rtol=1e-5)


def test_programs_per_fit():
    """A new model structure: the default fit of a small one traces one program (the autodiff
    Hessian program serves the whole Newton fit and the covariance), L-BFGS-B alone adds the
    value program (the covariance at its end reuses the Hessian one); a refit traces nothing."""
    import jax.monitoring
    import pandas as pd

    rng = np.random.default_rng(7)
    g = rng.integers(0, 23, 230)  # 23 levels: a structure no other test uses
    df = pd.DataFrame({"y": rng.normal(size=230) + rng.normal(size=23)[g], "x": rng.normal(size=230),
                       "g": g.astype(str)})
    traced = []

    def listener(event, duration, **kw):
        # a stored program's wrapper (bayesglmm._export: one call, no model code) is not counted
        if (event == "/jax/core/compile/jaxpr_trace_duration"
                and not kw.get("fun_name", "").startswith(LOADED_PREFIX)):
            traced.append(kw.get("fun_name"))

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        model = mixedlm("y ~ x", df, groups="g", re_formula="~x")
        model.fit()
        first, traced[:] = list(traced), []
        model.fit(method="lbfgs-only")
        second, traced[:] = list(traced), []
        model.fit()
        model.fit(method="lbfgs-only")
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
    assert first == ["second_order"] and second == ["evaluate"] and traced == []


def _crossed_frame(seed=3, n=6000, ng=600, nh=250):
    import pandas as pd

    rng = np.random.default_rng(seed)
    g, h, x = rng.integers(0, ng, n), rng.integers(0, nh, n), rng.normal(size=n)
    y = (1 + 0.5 * x + rng.normal(0, 0.5, ng)[g] + rng.normal(0, 0.3, nh)[h]
         + rng.normal(0, 0.2, nh)[h] * x + rng.normal(size=n))
    return pd.DataFrame({"y": y, "x": x, "g": g.astype(str), "h": h.astype(str)})


def test_theta_scale_preconditions_lbfgsb(monkeypatch):
    """fits.lmm.theta_scale: on crossed random intercepts above HESSIAN_ONLY_MAX_M (L-BFGS-B,
    then Newton) its estimate of ∇²d's diagonal at θ̂ is within 35 % of the exact one, and the
    preconditioned L-BFGS-B reaches the same optimum in fewer evaluations than the plain one;
    with a vector term it does not precondition."""
    from bayesglmm.fits.lmm import moment_gammas, theta_scale

    df = _crossed_frame()
    cp_v, vector = mixedlm("y ~ x + (1|g) + (x|h)", df)._crossprod(np.float64)
    np.testing.assert_array_equal(theta_scale(cp_v, vector), np.ones(vector.n_theta))
    model = mixedlm("y ~ x + (1|g) + (1|h)", df)
    cp, struct = model._crossprod(np.float64)
    assert default_method(struct) == "lbfgs"
    res = model.fit()
    # its γ's are the models' moment start
    gammas = [g for _, g in moment_gammas(cp, struct)]
    start = model._start()[[ti[0] for ti in struct.theta_index]]
    np.testing.assert_allclose(np.sqrt(gammas), start, rtol=1e-10)
    est = theta_scale(cp, struct) ** 2
    np.testing.assert_allclose(est / np.diag(res.optim.derivs.hess), 1.0, atol=0.35)
    monkeypatch.setattr(fits_lmm, "theta_scale", lambda cp, st: np.ones(st.n_theta))
    plain = model.fit()
    np.testing.assert_allclose(res.deviance, plain.deviance, rtol=1e-12)
    np.testing.assert_allclose(res.params, plain.params, rtol=1e-5, atol=1e-8)
    assert res.optim.n_evals < plain.optim.n_evals


def test_float32_lbfgsb_stops_at_its_roundoff():
    """float32 on a crossed design above HESSIAN_ONLY_MAX_M: L-BFGS-B stops on float32's
    relative decrease (f_tol), not on float64's 1e-12, which float32 deviances cannot meet (it
    then ran on until a line search failed: 26 evaluations here, against 7 in float64)."""
    df = _crossed_frame()
    r64 = mixedlm("y ~ x + (1|g) + (1|h)", df).fit()
    r32 = mixedlm("y ~ x + (1|g) + (1|h)", df, dtype=np.float32).fit()
    assert r32.converged
    assert abs(r32.deviance - r64.deviance) < 1e-2
    np.testing.assert_allclose(r32.params, r64.params, rtol=1e-3, atol=1e-3)
    assert r32.optim.n_evals <= 2 * r64.optim.n_evals


def test_lbfgsb_last_evaluation_through_the_hessian_program(monkeypatch):
    """On the L-BFGS-B route the evaluation after a point whose predicted decrease is below
    L-BFGS-B's stopping threshold goes to the Hessian's program (fits.lmm_theta._lbfgsb's
    fg_last): θ̂ is evaluated once, by that program, whose Hessian certifies the optimum; the
    fit equals the one that evaluates θ̂ twice."""
    from bayesglmm.kernels import lmm as kernels_lmm

    seen = {"evaluate": [], "second_order": []}
    real = kernels_lmm.programs

    def counting(cp, struct):
        ev, so = real(cp, struct)

        def ev_c(theta, *a):
            seen["evaluate"].append(np.asarray(theta).tobytes())
            return ev(theta, *a)

        def so_c(theta, *a):
            seen["second_order"].append(np.asarray(theta).tobytes())
            return so(theta, *a)

        return ev_c, so_c

    monkeypatch.setattr(kernels_lmm, "programs", counting)
    model = mixedlm("y ~ x + (1|g) + (1|h)", _crossed_frame())
    res = model.fit()
    theta_hat = np.asarray(res.optim.theta, np.float64).tobytes()
    assert seen["second_order"] == [theta_hat]
    assert theta_hat not in seen["evaluate"]
    # n_evals counts the programs' calls (it counted θ̂'s Hessian a second time)
    assert res.optim.n_evals == len(seen["evaluate"]) + 1
    from bayesglmm.fits import lmm_theta

    plain_lbfgsb = lmm_theta._lbfgsb  # without fg_last: θ̂ evaluated by L-BFGS-B, then again
    monkeypatch.setattr(lmm_theta, "_lbfgsb", lambda *a: plain_lbfgsb(*a[:6]))
    for calls in seen.values():
        calls.clear()
    twice = model.fit()
    assert theta_hat in seen["evaluate"] and seen["second_order"] == [theta_hat]
    assert twice.optim.n_evals == len(seen["evaluate"]) + 1 == res.optim.n_evals + 1
    np.testing.assert_array_equal(twice.optim.theta, res.optim.theta)
    np.testing.assert_allclose(twice.deviance, res.deviance, rtol=1e-13)
    np.testing.assert_allclose(twice.bse, res.bse, rtol=1e-10)


def test_lbfgsb_last_guesses_are_bounded():
    """fits.lmm_theta._lbfgsb: where the predicted decrease is below the stopping threshold
    but L-BFGS-B goes on (a flat, badly scaled objective), the Hessian's program serves at most
    two evaluations, and the minimiser is the one found without it."""
    from bayesglmm.fits.lmm_theta import _lbfgsb

    c = np.array([1e-7, 3e-7])

    def fg(x):
        return 1.0 + 0.5 * float(c @ x**2), c * x

    calls = []

    def fg_last(x):
        calls.append(x.copy())
        return fg(x)

    lower = np.full(2, -np.inf)
    with_last, _ = _lbfgsb(fg, np.ones(2), lower, 200, fg_last=fg_last)
    plain, _ = _lbfgsb(fg, np.ones(2), lower, 200)
    assert 1 <= len(calls) <= 2
    np.testing.assert_array_equal(with_last, plain)


def test_lbfgsb_stops_where_roundoff_stalls_it(monkeypatch):
    """fits.lmm_theta._lbfgsb: a deviance that float32 rounds flat near its minimiser, with a
    gradient whose roundoff does not vanish there (pseudo-random, as a float32 gradient's),
    stalls L-BFGS-B's line search on one point; after STALL_EVALS evaluations without a
    decrease it stops at the best point seen.  Without the stop the line search spends its tries
    there (15 evaluations here; the float32 crossed fit of test_float32_lbfgsb_stops_at_its_
    roundoff: 17 against 7 in float64)."""
    import zlib

    from bayesglmm.fits import lmm_theta
    from bayesglmm.fits.lmm_theta import STALL_EVALS, _lbfgsb

    target = np.array([0.5, 0.3])

    def fg(x):
        f = np.float32(18000.0) + np.float32(2000.0 * np.sum((x - target) ** 2))
        noise = np.random.default_rng(zlib.crc32(x.tobytes())).normal(0.0, 1.4, 2)
        return float(f), 4000.0 * (x - target) + noise

    def run():
        calls = []

        def counted(x):
            calls.append(x.copy())
            return fg(x)

        theta, message = _lbfgsb(counted, target + np.array([3e-4, -2e-4]), np.zeros(2), 200,
                                 scale=np.full(2, 70.0), ftol=1e-6)
        return theta, message, len(calls)

    theta, message, n = run()
    assert "roundoff" in message
    assert n == 1 + STALL_EVALS
    np.testing.assert_allclose(theta, target, atol=1e-3)
    monkeypatch.setattr(lmm_theta, "STALL_EVALS", 10**9)
    theta_on, _, n_on = run()
    assert n_on > 2 * n
    assert fg(theta_on)[0] == fg(theta)[0]


def _moment_start_from_rows(model):
    """The reference of fits.lmm.start_theta: the moment start computed from the rows (OLS
    residuals r; per scalar term the count-weighted spread of the level means of r less its
    sampling part, over σ²), clipped to [0.01, 10]."""
    d = model.design
    theta = np.array(model._theta0, np.float64)  # λ = I
    beta = np.linalg.lstsq(d.X, d.y, rcond=None)[0]
    r = d.y - d.X @ beta
    v = r.var()
    est = {}
    for t, ti in zip(d.terms, model._theta_index):
        if t.q != 1:
            continue
        cnt = np.bincount(t.codes, minlength=t.n_levels).astype(float)
        means = np.bincount(t.codes, weights=r, minlength=t.n_levels)[cnt > 0] / cnt[cnt > 0]
        between = np.average(means**2, weights=cnt[cnt > 0])
        nbar = np.average(cnt[cnt > 0], weights=cnt[cnt > 0])
        est[int(np.asarray(ti).ravel()[0])] = max(between - v / nbar, 0.0)
    s2 = max(v - sum(est.values()), 0.1 * v)
    for k, e in est.items():
        theta[k] = np.clip(np.sqrt(e / s2), 0.01, 10.0)
    return theta


@pytest.mark.parametrize("formula, sds", [
    ("y ~ x + (1|g) + (1|h)", (0.5, 0.3, 0.0)),
    ("y ~ x + (1|g) + (1|h) + (1|k)", (0.5, 0.3, 0.05)),
    ("y ~ x + (1|g) + (1|h) + (1|k)", (0.5, 0.0, 0.0)),  # floors
    ("y ~ x + (x|g) + (1|h)", (0.5, 0.3, 0.0)),  # a vector term keeps λ = I
])
def test_start_from_cross_products_equals_the_rows(formula, sds):
    """fits.lmm.start_theta (the moment start from the cross-products, O(levels)) equals the
    same estimate from the rows, for random intercepts (z = 1), with the floor 0.01 where a
    variance is estimated at zero, and λ = I for a vector term."""
    import pandas as pd

    rng = np.random.default_rng(7)
    n, ng, nh, nk = 3000, 120, 40, 6
    g, h, k = rng.integers(0, ng, n), rng.integers(0, nh, n), rng.integers(0, nk, n)
    x = rng.normal(size=n)
    y = (1 + 0.5 * x + rng.normal(0, sds[0], ng)[g] + rng.normal(0, sds[1], nh)[h]
         + rng.normal(0, sds[2], nk)[k] + rng.normal(size=n))
    df = pd.DataFrame({"y": y, "x": x, "g": g.astype(str), "h": h.astype(str),
                       "k": k.astype(str)})
    model = mixedlm(formula, df)
    got, want = model._start(), _moment_start_from_rows(model)
    np.testing.assert_allclose(got, want, rtol=1e-10)
    if "(x|g)" in formula:
        np.testing.assert_array_equal(got[:3], [1.0, 0.0, 1.0])  # λ_g = I: θ (1, 0, 1)
        assert got[3] != 1.0
    if sds[1] == 0.0 and "(1|k)" in formula:
        assert np.min(got) == 0.01
