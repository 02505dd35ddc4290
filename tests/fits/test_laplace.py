"""The marginal Laplace fit (fits/laplace.py, kernels/marginal.py, fits/integrate.py): lme4
parity, NUTS comparison, exact derivatives (central differences), the inner Newton solve
against a plain scipy reference."""

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize
from scipy import sparse

import bayesglmm as bg
from bayesglmm import datasets
from bayesglmm._precision import precision
from bayesglmm.design.ellpack import design_mode
from bayesglmm.fits.laplace import LOG_SD_MIN, SINGULAR_SD, fit_laplace, glm_start
from bayesglmm.kernels.marginal import conditional_mode, marginal_loglik, objective, solve_mode
from tests.helpers import gen_crossed_logit, gen_crossed_poisson, lme4_reference

REF = Path(__file__).parents[1] / "reference"


def _cbpp(**kw):
    return bg.BinomialBayesMixedGLM.from_formula(
        "incidence ~ C(period)", {"herd": "0 + C(herd)"}, datasets.load("cbpp"),
        n_trials="size", **kw)


def _fit(model, **kw):
    with precision(np.float64):
        return fit_laplace(model.family, model._data(), model._prior(), model.k_fep,
                           mode=_mode(model), **kw)


def _mode(model):
    """The factorisation mode the model computed at construction (checked against a fresh
    computation from its design)."""
    assert model._design_mode == design_mode(model._cols, model._vals, model.ident)
    return model._design_mode


# ----------------------------------------------------------------------------- lme4 parity
# R, lme4 1.1.31 (figures loaded from tests/reference/lme4.json):
#   m <- glmer(cbind(incidence, size - incidence) ~ period + (1 | herd), cbpp, binomial)
#   fixef(m); sqrt(diag(vcov(m))); attr(VarCorr(m)$herd, "stddev"); logLik(m)
_CBPP = lme4_reference("cbpp_binomial")
CBPP_FE = list(_CBPP.fixef.values())
CBPP_SE = list(_CBPP.fixef_se.values())
CBPP_SD = [_CBPP.sd[("herd", "Intercept", None)]]
CBPP_LLF = _CBPP.loglik
# R: glmer(TICKS ~ YEAR + cHEIGHT + (1 | BROOD) + (1 | INDEX) + (1 | LOCATION), grouseticks,
#          poisson)      (SDs listed in our order BROOD, INDEX, LOCATION)
_GROUSE = lme4_reference("grouseticks_poisson")
GROUSE_FE = list(_GROUSE.fixef.values())
GROUSE_SE = list(_GROUSE.fixef_se.values())
GROUSE_SD = [_GROUSE.sd[(g, "Intercept", None)] for g in ("BROOD", "INDEX", "LOCATION")]
GROUSE_LLF = _GROUSE.loglik


def test_cbpp_matches_glmer():
    fit = _fit(_cbpp(), priors=False)
    assert fit.success and fit.grad_norm < 1e-6 and not fit.is_singular
    np.testing.assert_allclose(fit.fe, CBPP_FE, rtol=1e-3)
    np.testing.assert_allclose(np.exp(fit.vcp), CBPP_SD, rtol=1e-3)
    np.testing.assert_allclose(fit.llf, CBPP_LLF, rtol=1e-5)  # measured 3e-6
    assert fit.llf >= CBPP_LLF - 1e-9  # our optimum is at least as high as lme4's
    assert np.isnan(fit.log_post)
    # lme4's vcov here is its finite-difference Hessian of the deviance (use.hessian = TRUE,
    # deriv12 with δ = 1e-4), which inherits the PIRLS exit error (lme4 issues #998, #867):
    # on cbpp it is off by up to 1.3% from the exact Hessian (and the RX, conditional-on-θ
    # SEs are off by up to 1.6%).  On grouseticks the same method agrees to 5e-5, below.
    se = np.sqrt(np.diag(fit.cov))[:4]
    np.testing.assert_allclose(se, CBPP_SE, rtol=0.015)


@pytest.mark.slow
def test_grouseticks_matches_glmer():
    model = bg.PoissonBayesMixedGLM.from_formula(
        "TICKS ~ YEAR + cHEIGHT",
        {"BROOD": "0 + C(BROOD)", "INDEX": "0 + C(INDEX)", "LOCATION": "0 + C(LOCATION)"},
        datasets.load("grouseticks"))
    assert model.vcp_names == ["BROOD", "INDEX", "LOCATION"]
    # INDEX eliminated by rows; of the other 181 columns, BROOD's 118 (a diagonal block of
    # the Schur complement) by blocks: Cholesky of 63²
    assert _mode(model) == ("schur_obs", 1, 403, 118)
    fit = _fit(model, priors=False)
    assert fit.success and fit.grad_norm < 1e-6
    np.testing.assert_allclose(fit.fe, GROUSE_FE, rtol=1e-3)
    np.testing.assert_allclose(np.sqrt(np.diag(fit.cov))[:4], GROUSE_SE, rtol=1e-3)
    np.testing.assert_allclose(np.exp(fit.vcp), GROUSE_SD, rtol=1e-3)
    np.testing.assert_allclose(fit.llf, GROUSE_LLF, rtol=1e-6)
    assert fit.vc.shape == fit.vc_sd.shape == (584,)
    assert np.all(fit.vc_sd >= fit.vc_sd_cond) and np.all(fit.vc_sd_cond > 0)


@pytest.mark.slow
def test_singular_fit_is_flagged():
    """No between-group variation: the ML variance is zero (lme4: boundary (singular) fit)."""
    y = np.tile([1, 0, 1, 0, 1, 1, 0, 0], 10)
    g = np.repeat(np.arange(10), 8)
    Z = sparse.csr_array((np.ones(80), (np.arange(80), g)), shape=(80, 10))
    model = bg.BinomialBayesMixedGLM(y, np.ones((80, 1)), Z, np.zeros(10, int))
    fit = _fit(model, priors=False)
    assert fit.success and fit.is_singular and fit.singular.tolist() == [True]
    assert LOG_SD_MIN <= fit.vcp[0] < np.log(SINGULAR_SD) and np.isnan(fit.cov[1, 1])
    # the fixed effect and its SE are the GLM's: logit(1/2) = 0, 1/sqrt(n p (1-p)) = 0.2236
    np.testing.assert_allclose(fit.fe, [0.0], atol=1e-8)
    np.testing.assert_allclose(np.sqrt(fit.cov[0, 0]), 1 / np.sqrt(80 * 0.25), rtol=1e-6)
    np.testing.assert_allclose(fit.vc, 0.0, atol=1e-4)
    # with priors the log SD stays finite
    post = _fit(model, priors=True)
    assert post.success and not post.is_singular and np.isfinite(post.log_post)


# ----------------------------------------------------------------------------- NUTS
@pytest.fixture(scope="module")
def nuts():
    return json.loads((REF / "posterior_nuts_cbpp.json").read_text())["fits"]


@pytest.mark.slow
@pytest.mark.parametrize("vcp_p", [1.0, 0.5])
def test_cbpp_posterior_matches_nuts(vcp_p, nuts):
    ref = nuts[f"vcp_p={vcp_p},fe_p=2.0"]
    fe_m, fe_s = np.array(list(ref["fe_mean"].values())), np.array(list(ref["fe_sd"].values()))
    model = _cbpp(vcp_p=vcp_p, fe_p=2)
    fit = _fit(model, priors=True, integrate=True)
    assert fit.success and np.isfinite(fit.log_post) and fit.log_post < fit.llf
    integ = fit.integrated
    assert integ.converged.all() and abs(integ.weights.sum() - 1) < 1e-12
    sd = np.sqrt(np.diag(integ.cov))
    # recommended (integrated) fit: measured mean errors ≤ 0.022 SD, SD ratios 0.979–1.002
    np.testing.assert_array_less(np.abs(integ.fe_mean - fe_m) / fe_s, 0.1)
    np.testing.assert_allclose(sd[:4], fe_s, rtol=0.1)
    np.testing.assert_allclose(integ.vcp_mean, ref["vcp_mean"]["herd"], atol=0.1 * ref["vcp_sd"]["herd"])
    np.testing.assert_allclose(sd[4], ref["vcp_sd"]["herd"], rtol=0.1)
    names = [n.split("[")[-1].rstrip("]") for n in model.vc_names]
    vc_m = np.array([ref["vc_mean"]["herd"][k] for k in names])
    vc_s = np.array([ref["vc_sd"]["herd"][k] for k in names])
    np.testing.assert_array_less(np.abs(integ.vc_mean - vc_m) / vc_s, 0.15)
    np.testing.assert_allclose(integ.vc_sd, vc_s, rtol=0.1)
    # the plain marginal-posterior mode: intercept SD ~8% under NUTS, means within 0.11 SD
    mode_sd = np.sqrt(np.diag(fit.cov))[:4]
    np.testing.assert_allclose(mode_sd, fe_s, rtol=0.1)
    assert mode_sd[0] < fe_s[0]
    np.testing.assert_array_less(np.abs(fit.fe - fe_m) / fe_s, 0.15)


# ----------------------------------------------------------------------------- derivatives
@pytest.fixture(scope="module")
def crossed():
    y, X, Z, ident = gen_crossed_logit(6, 5, 1, 2)
    return bg.BinomialBayesMixedGLM(y, X, sparse.csr_array(Z), ident, vcp_p=0.5)


@pytest.mark.slow
def test_outer_derivatives_match_central_differences(crossed):
    model = crossed
    mode = _mode(model)
    assert mode[0] == "schur"
    with precision(np.float64):
        data, prior = model._data(), model._prior()
        theta = jnp.array([-0.3, 0.2, 0.4])

        def f(t):
            return marginal_loglik(t, data, prior, family=model.family, mode=mode, priors=True)

        fj, gj = jax.jit(f), jax.jit(jax.grad(f))
        v, g, H = fj(theta), gj(theta), jax.jit(jax.hessian(f))(theta)  # via the custom JVP
        # the solver's explicit-adjoint gradient and its forward-mode Hessian
        vgh = objective(model.family, mode, True).vgh
        vghj = jax.jit(lambda t: vgh(t, None, data, prior)[:3])
        v2, g2, H2 = vghj(theta)
        h = 1e-4
        eye = np.eye(3)
        g_fd = np.array([(fj(theta + h * e) - fj(theta - h * e)) / (2 * h) for e in eye])
        H_fd = np.array([(vghj(theta + h * e)[1] - vghj(theta - h * e)[1]) / (2 * h)
                         for e in eye])
        # the same ℓ with the dense Cholesky of H_uu instead of the Schur complement
        ld = jax.jit(lambda t: marginal_loglik(t, data, prior, family=model.family,
                                               mode="dense", priors=True))(theta)
        v, g, H, v2, g2, H2, ld = (np.asarray(x) for x in (v, g, H, v2, g2, H2, ld))
    np.testing.assert_allclose(g, g_fd, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(H, H_fd, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(g2, g, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(H2, H, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(v2, v, rtol=1e-12)
    np.testing.assert_allclose(ld, v, rtol=1e-12)


def test_inner_newton_and_laplace_match_dense_reference(crossed):
    """u* against scipy's trust-region Newton on the dense problem; ℓ against numpy slogdet."""
    model = crossed
    mode = _mode(model)
    y, X = model.endog, model.exog
    Z = model.exog_vc.toarray()
    theta = np.array([-0.3, 0.2, 0.4])
    e = np.exp(theta[1:][model.ident])
    A = Z * e  # Z·E

    def h(u):
        eta = X @ theta[:1] + A @ u
        return -np.sum(y * eta - np.logaddexp(0, eta)) + 0.5 * u @ u

    def grad(u):
        eta = X @ theta[:1] + A @ u
        return -A.T @ (y - 1 / (1 + np.exp(-eta))) + u

    def hess(u):
        p = 1 / (1 + np.exp(-(X @ theta[:1] + A @ u)))
        return A.T @ (A * (p * (1 - p))[:, None]) + np.eye(len(u))

    ref = scipy.optimize.minimize(h, np.zeros(Z.shape[1]), jac=grad, hess=hess,
                                  method="trust-exact", options={"gtol": 1e-12})
    with precision(np.float64):
        u = conditional_mode(model.family, mode)(jnp.asarray(theta), jnp.zeros(Z.shape[1]),
                                                 model._data())
        ll = marginal_loglik(jnp.asarray(theta), model._data(), family=model.family, mode=mode)
    np.testing.assert_allclose(np.asarray(u), ref.x, atol=1e-9)
    ll_ref = -h(ref.x) - 0.5 * np.linalg.slogdet(hess(ref.x))[1]  # const = 0 for 0/1 data
    np.testing.assert_allclose(float(ll), ll_ref, rtol=1e-12)


# ----------------------------------------------------------------------------- the solves
def test_inner_newton_stops_at_the_rounding_floor(crossed):
    """With an unreachable tolerance the inner Newton stops where ∇_u h stops falling (its
    rounding floor) within a few steps, not after maxiter steps of empty line searches; ℓ from
    the loop's last evaluation (value_only) is the differentiable value."""
    model = crossed
    mode = _mode(model)
    with precision(np.float64):
        theta = jnp.array([-0.3, 0.2, 0.4])
        data, prior = model._data(), model._prior()
        k = data.ident.shape[0]
        s = jax.jit(solve_mode(model.family, mode, 0.0, 100))(theta, jnp.zeros(k), data)
        u = conditional_mode(model.family, mode)(theta, jnp.zeros(k), data)
        obj = objective(model.family, mode, True)
        v1, u1 = jax.jit(obj.value_only)(theta, jnp.zeros(k), data, prior)
        v2, _ = jax.jit(obj.value)(theta, jnp.zeros(k), data, prior)
    assert bool(s.done) and int(s.steps) <= 12
    assert 0.0 < float(s.gmax) < 1e-12
    np.testing.assert_allclose(s.u, u, atol=1e-12)
    np.testing.assert_allclose(u1, u, atol=1e-12)
    np.testing.assert_allclose(v1, v2, rtol=1e-13)


def _olre():
    """Poisson, two crossed factors (6 × 5 levels) and an observation-level effect (30)."""
    y, X, Z, ident = gen_crossed_poisson(6, 5, 1, 1)
    Z = np.hstack([Z, np.eye(len(y))])
    return bg.PoissonBayesMixedGLM(y, X, sparse.csr_array(Z),
                                   np.concatenate([ident, np.full(len(y), 2)]), vcp_p=0.5)


_THETA = {"one factor": [-1.4, -1.0, -1.1, -1.5, -0.4], "crossed": [-0.3, 0.2, 0.4],
          "observation level": [-0.3, 0.2, 0.4, -0.5]}


def _which(which, crossed):
    return {"one factor": _cbpp, "crossed": lambda: crossed, "observation level": _olre}[which]()


@pytest.mark.slow  # over ~8 s on CI's two cores (.ci/run runs it)
@pytest.mark.parametrize("which", ["one factor", "crossed", "observation level"])
def test_derivatives_agree_across_factorisations(which, crossed):
    """∇J, ∇²J and du*/dθ at u* (objective.vgh_at, with log det H_uu's written-out derivative
    and H_uu's blocks) are the same from the diagonal or Schur factor as from the dense one
    (and, for an observation-level component kept by rows, as from the general Schur one and
    as without factoring the rest's leading diagonal block by blocks)."""
    model = _which(which, crossed)
    mode = _mode(model)
    assert mode == {"one factor": "diag", "crossed": ("schur", 0, 6),
                    "observation level": ("schur_obs", 2, 30, 6)}[which]
    modes = (mode, "dense") + ((("schur",) + mode[1:3], mode[:3])
                               if mode[0] == "schur_obs" else ())
    with precision(np.float64):
        theta = jnp.array(_THETA[which])
        data, prior = model._data(), model._prior()
        u = conditional_mode(model.family, mode)(theta, jnp.zeros(model.k_vc), data)
        out = [jax.jit(objective(model.family, m, True).vgh_at)(theta, u, data, prior)[:4]
               for m in modes]
    for other in out[1:]:
        for a, b in zip(out[0], other):
            np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.slow  # compiles the fit's programs twice
def test_compiler_options_do_not_change_the_fit(monkeypatch):
    """Data up to SMALL_PROGRAM_ROWS get programs compiled with XLA's classic emitters
    (_xla.light_options), larger data XLA's defaults: the same fit either way."""
    from bayesglmm.fits import laplace as fl

    model = _cbpp()
    assert fl.small_programs(model._data())
    light = _fit(model, priors=False)
    monkeypatch.setattr(fl, "SMALL_PROGRAM_ROWS", 0)  # as if the data were large
    assert not fl.small_programs(model._data())
    default = _fit(model, priors=False)
    np.testing.assert_allclose(default.solution.a, light.solution.a, rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(default.llf, light.llf, rtol=1e-13)
    np.testing.assert_allclose(default.cov, light.cov, rtol=1e-7)


def test_start_is_the_glm_fit():
    """The default start is lme4's, the GLM without random effects (statsmodels' GLM here);
    from it and from zero the fit reaches the same optimum."""
    import statsmodels.api as sm

    model = _cbpp()
    d = datasets.load("cbpp")
    glm = sm.GLM(np.c_[d["incidence"], d["size"] - d["incidence"]], model.exog,
                 family=sm.families.Binomial()).fit()
    with precision(np.float64):
        fe0 = glm_start(model.family, model._data())
    # a start, to a Newton decrement of START_TOL·(1 + |ll|): here ~1e-3 relative
    np.testing.assert_allclose(fe0, glm.params, rtol=1e-2)
    a = _fit(model, priors=False)
    b = _fit(model, priors=False, start=np.zeros(model.k_fep + model.k_vcp))
    assert a.success and b.success and a.nit < b.nit
    np.testing.assert_allclose(a.solution.a, b.solution.a, rtol=1e-6)
    np.testing.assert_allclose(a.llf, b.llf, rtol=1e-12)


def test_levels_without_data_are_inert():
    """A random-effect level no row uses (as shape-bucket padding adds) changes nothing: its
    u* = 0 and H_uu = 1 contribute nothing to ℓ, and its vc is 0 with SD exp(vcp)."""
    model = _cbpp()
    with precision(np.float64):
        data = model._data()
        padded = data._replace(ident=jnp.concatenate([data.ident, jnp.zeros(2, data.ident.dtype)]))
    fits = [fit_laplace(model.family, dd, model._prior(), model.k_fep, mode="diag",
                        priors=False) for dd in (data, padded)]
    a, b = fits
    assert a.success and b.success
    np.testing.assert_allclose(b.solution.a, a.solution.a, rtol=1e-9)
    np.testing.assert_allclose(b.llf, a.llf, rtol=1e-13)
    np.testing.assert_allclose(b.cov, a.cov, rtol=1e-7)
    np.testing.assert_allclose(b.vc[:15], a.vc, rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(b.vc[15:], 0.0, atol=1e-14)
    np.testing.assert_allclose(b.vc_sd_cond[15:], np.exp(b.vcp[0]), rtol=1e-12)
