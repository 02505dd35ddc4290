"""NegativeBinomialBayesMixedGLM: glmmTMB nbinom2 parity on grouseticks, the Bayesian fits,
the kernels' gradients against finite differences and a dense reference, results and bad
input.

Reference (tests/reference/glmmtmb_nb_grouseticks.R → .json; glmmTMB 1.1.5, TMB 1.9.2):
    glmmTMB(TICKS ~ YEAR + cHEIGHT + (1 | BROOD) + (1 | LOCATION), grouseticks, nbinom2)
    fixef(m)$cond; sqrt(diag(vcov(m)$cond)); VarCorr(m); sigma(m) (= θ); logLik(m)
and lme4's glmer.nb on the same model.
"""

import json
import warnings

import numpy as np
import pytest
from scipy import sparse
from scipy.special import gammaln

import bayesglmm as bg
from bayesglmm import datasets
from bayesglmm.exceptions import IntegrationWarning
from tests.helpers import REFERENCE, assert_gradients_match_central_diff, central_diff

REF = json.loads((REFERENCE / "glmmtmb_nb_grouseticks.json").read_text())
TMB = REF["glmmtmb"]
VC = {"BROOD": "0 + C(BROOD)", "LOCATION": "0 + C(LOCATION)"}


def _grouse(**kw):
    return bg.NegativeBinomialBayesMixedGLM.from_formula("TICKS ~ YEAR + cHEIGHT", VC,
                                                         datasets.load("grouseticks"), **kw)


@pytest.fixture(scope="module")
def ml_fit():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        return _grouse().fit_laplace(priors=False)


@pytest.fixture(scope="module")
def post_fit():
    return _grouse().fit_laplace(priors=True)


def _simulated(n_groups=12, per=15, theta=2.5, seed=1):
    """A small NB2 data set: two covariates, one grouping factor (SD 0.6)."""
    rs = np.random.default_rng(seed)
    g = np.repeat(np.arange(n_groups), per)
    X = np.column_stack([np.ones(g.size), rs.normal(size=g.size)])
    mu = np.exp(X @ [0.8, -0.4] + 0.6 * rs.normal(size=n_groups)[g])
    y = rs.negative_binomial(theta, theta / (theta + mu)).astype(float)
    Z = sparse.csr_array((np.ones(g.size), (np.arange(g.size), g)), shape=(g.size, n_groups))
    return y, X, Z, np.zeros(n_groups, int)


# ----------------------------------------------------------------------------- glmmTMB parity
@pytest.mark.slow
def test_laplace_ml_matches_glmmtmb(ml_fit):
    r = ml_fit
    # converged by the Newton decrement (½gᵀH⁻¹g ≤ 1e-14·|ℓ|); the gradient left is in
    # cHEIGHT, whose SE is 0.0035
    assert r.optim_retvals.success and r.optim_retvals.grad_norm < 1e-4 and not r.is_singular
    assert r.model.vcp_names == ["BROOD", "LOCATION", "log_theta"]
    np.testing.assert_allclose(r.fe_mean, list(TMB["fixef"].values()), rtol=1e-3)
    np.testing.assert_allclose(r.fe_sd, list(TMB["fixef_se"].values()), rtol=1e-3)
    np.testing.assert_allclose(np.exp(r.vcp_mean[:2]), [TMB["sd"]["BROOD"],
                                                        TMB["sd"]["LOCATION"]], rtol=1e-3)
    assert r.theta == pytest.approx(TMB["sigma"], rel=1e-3)  # measured 8e-7
    assert r.log_theta_sd == pytest.approx(TMB["log_sigma_se"], rel=1e-3)
    assert r.llf == pytest.approx(TMB["logLik"], abs=1e-4)  # measured 2e-9
    assert r.llf >= TMB["logLik"] - 1e-8  # at least as high as glmmTMB's optimum


@pytest.mark.slow
def test_glmer_nb_stops_short(ml_fit):
    """lme4's glmer.nb (alternating glmer and a 1-D search in θ) stops at other estimates
    (intercept 0.488 against 0.524) and reports a logLik of −888.84 that is not the Laplace
    log-likelihood there: our ℓ at its estimates is −888.96, below the optimum −888.908 that
    glmmTMB and we agree on (ℓ at glmmTMB's estimates reproduces its logLik to 1e-9)."""
    import jax.numpy as jnp

    from bayesglmm._precision import precision
    from bayesglmm.kernels.marginal import marginal_loglik

    m = ml_fit.model
    out = {}
    for key, th in (("glmmtmb", "sigma"), ("glmer_nb", "theta")):
        R = REF[key]
        theta = np.r_[list(R["fixef"].values()), np.log(list(R["sd"].values())), np.log(R[th])]
        with precision(np.float64):
            out[key] = float(marginal_loglik(jnp.asarray(theta), m._data(), family=m.family,
                                             mode=m._design_mode))
    assert out["glmmtmb"] == pytest.approx(TMB["logLik"], abs=1e-8)
    assert out["glmer_nb"] < ml_fit.llf - 0.03
    assert REF["glmer_nb"]["theta"] == pytest.approx(TMB["sigma"], rel=0.01)


# ----------------------------------------------------------------------------- Bayesian fits
@pytest.mark.slow
def test_laplace_with_priors_is_close_to_ml(ml_fit, post_fit):
    r = post_fit
    assert r.optim_retvals.success and np.isfinite(r.log_post)
    # the priors (fe_p = 2, vcp_p = 1, theta_p = 3) move every estimate by < 0.1 SE here
    np.testing.assert_array_less(np.abs(r.fe_mean - ml_fit.fe_mean), 0.1 * ml_fit.fe_sd)
    np.testing.assert_array_less(np.abs(r.vcp_mean - ml_fit.vcp_mean), 0.15 * ml_fit.vcp_sd)
    assert r.theta == pytest.approx(ml_fit.theta, rel=0.01)
    lo, hi = r.theta_ci()
    assert lo < r.theta < hi and r.theta_sd == pytest.approx(r.theta * r.log_theta_sd)


@pytest.mark.slow
def test_integrated_fit_map_and_vb_run():
    """integrate=True (vcp = (log SDs, log θ); INLA's CCD misfits there, so the lattice),
    fit_vb (mean-field over log θ too) and fit_map give finite, sensible θ.  The joint mode
    (fit_map) shrinks both SDs to zero, as it does for every model here, so that θ absorbs the
    groups' variation."""
    m = _grouse()
    with pytest.warns(IntegrationWarning, match="lattice"):  # LOCATION's skewed log SD
        integ = m.fit_laplace(integrate=True)
    assert integ.method == "laplace-integrated" and 2.5 < integ.theta < 4.5
    assert len(integ.marginal.integrated.weights) > 100
    assert np.all(np.isfinite(integ.fe_sd)) and integ.log_theta_sd > 0
    vb = m.fit_vb(rng=0)
    assert vb.optim_retvals.success and 1.5 < vb.theta < 4.5 and 0 < vb.log_theta_sd < 0.5
    mp = m.fit_map()
    assert mp.optim_retvals.success and 0.3 < mp.theta < 3.0
    assert np.all(np.isfinite(mp.fe_sd))


@pytest.mark.slow
def test_float32_matches_float64(ml_fit):
    r = _grouse(dtype=np.float32).fit_laplace(priors=False)
    assert r.optim_retvals.success
    np.testing.assert_allclose(r.fe_mean, ml_fit.fe_mean, rtol=2e-3, atol=1e-4)
    assert r.theta == pytest.approx(ml_fit.theta, rel=2e-3)
    assert r.llf == pytest.approx(ml_fit.llf, abs=1e-2)


@pytest.mark.slow
def test_marginal_gradient_and_poisson_limit():
    """The Laplace ℓ's autodiff gradient in (fe, log SD, log θ) against central differences;
    and at θ = e²⁵ the NB model's ℓ is the Poisson model's at the same (fe, SDs)."""
    import jax
    import jax.numpy as jnp

    from bayesglmm._precision import precision
    from bayesglmm.kernels.marginal import marginal_loglik

    y, X, Z, ident = _simulated()
    nb = bg.NegativeBinomialBayesMixedGLM(y, X, Z, ident)
    po = bg.PoissonBayesMixedGLM(y, X, Z, ident)
    theta = np.array([0.7, -0.35, np.log(0.5), np.log(2.0)])
    with precision(np.float64):
        ell = jax.jit(lambda t: marginal_loglik(t, nb._data(), family=nb.family, mode="diag"))
        g = np.asarray(jax.grad(ell)(jnp.asarray(theta)))
        fd = central_diff(lambda t: float(ell(jnp.asarray(t))), theta, h=1e-5)
        np.testing.assert_allclose(g, fd, rtol=1e-6, atol=1e-6)
        big = np.r_[theta[:3], 25.0]
        ell_po = marginal_loglik(jnp.asarray(theta[:3]), po._data(), family=po.family,
                                 mode="diag")
        assert float(ell(jnp.asarray(big))) == pytest.approx(float(ell_po), abs=1e-6)


@pytest.mark.slow
def test_no_overdispersion_tends_to_poisson():
    """Poisson data: the ML θ runs off to infinity (log θ > 15, where the NB2 and Poisson
    likelihoods agree to 1e-6) and the fit converges there to the Poisson model's estimates;
    with the prior on log θ it stays finite."""
    from tests.helpers import gen_crossed_poisson

    y, X, Z, ident = gen_crossed_poisson(10, 10, 1, 1)
    po = bg.PoissonBayesMixedGLM(y, X, sparse.csr_array(Z), ident).fit_laplace(priors=False)
    nb = bg.NegativeBinomialBayesMixedGLM(y, X, sparse.csr_array(Z), ident)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        ml = nb.fit_laplace(priors=False)
    assert ml.optim_retvals.success and ml.log_theta > 15
    assert ml.llf == pytest.approx(po.llf, abs=1e-6)
    np.testing.assert_allclose(ml.fe_mean, po.fe_mean, atol=1e-5)
    np.testing.assert_allclose(ml.vcp_mean[:2], po.vcp_mean, atol=1e-4)
    post = nb.fit_laplace()
    assert post.optim_retvals.success and 1 < post.log_theta < 8


# ----------------------------------------------------------------------------- kernels
def _dense_logposterior(y, X, Z, params, vcp_p, fe_p, theta_p):
    """Plain numpy: dense Z, NB2 written with lgamma, priors term by term."""
    fe, s, lt, vc = params[:2], params[2], params[3], params[4:]
    eta = X @ fe + Z @ vc
    th = np.exp(lt)
    ll = np.sum(gammaln(y + th) - gammaln(th) - gammaln(y + 1) + th * lt + y * eta
                - (y + th) * np.logaddexp(lt, eta))
    ll += np.sum(-0.5 * vc**2 * np.exp(-2 * s) - s)
    return ll - 0.5 * s**2 / vcp_p**2 - 0.5 * lt**2 / theta_p**2 - 0.5 * fe @ fe / fe_p**2


def test_kernels_match_dense_reference_and_finite_differences():
    """logposterior against a dense numpy reference; its gradient and the ELBO's (log θ's
    mean and SD included) against central differences."""
    y, X, Z, ident = _simulated()
    model = bg.NegativeBinomialBayesMixedGLM(y, X, Z, ident, vcp_p=0.7, fe_p=1.5, theta_p=2.0)
    assert model.k_vcp == 2 and model.vcp_names == ["VC_1", "log_theta"]
    rs = np.random.default_rng(0)
    p = model.k_fep + model.k_vcp + model.k_vc
    x, s = 0.4 * rs.normal(size=p), np.exp(0.3 * rs.normal(size=p) - 1.5)
    ref = _dense_logposterior(y, X, Z.toarray(), x, 0.7, 1.5, 2.0)
    assert model.logposterior(x) == pytest.approx(ref, rel=1e-12)
    assert_gradients_match_central_diff(model, x, s)


# ----------------------------------------------------------------------------- results
@pytest.mark.slow
def test_results_label_the_dispersion(post_fit):
    r = post_fit
    text = str(r.summary())
    assert "theta (sigma)" in text and "Type D" in text
    tab = r.summary().tables[0]
    assert tab.loc["log_theta", "Type"] == "D"
    assert float(tab.loc["log_theta", "SD"]) == pytest.approx(r.theta, abs=1e-3)
    from bayesglmm import tables

    est = tables.estimates(r)
    assert est.set_index("name").loc["log_theta", "kind"] == "log_theta"
    assert list(r.cov_params().index)[-1] == "log_theta"
    assert r.random_effects("BROOD").shape == (118, 2)
    with pytest.raises(ValueError, match="dispersion parameter, not a random-effect term"):
        r.random_effects("log_theta")
    with pytest.raises(ValueError, match="out of range"):
        r.random_effects(2)
    pred = r.predict(datasets.load("grouseticks").head(4))
    assert pred.shape == (4,) and np.all(pred > 0)
    pytest.importorskip("arviz")
    idata = r.to_inference_data(draws=200, rng=0, posterior_predictive=True)
    post = idata.posterior
    assert "corr_z" not in post and list(post["vc_term"].values) == ["BROOD", "LOCATION"]
    assert float(post["theta"].median()) == pytest.approx(r.theta, rel=0.1)
    ll = idata.log_likelihood["TICKS"]
    assert ll.shape == (4, 50, 403) and np.all(np.isfinite(ll.values))
    assert np.all(idata.posterior_predictive["TICKS"].values >= 0)


# ----------------------------------------------------------------------------- input
def test_bad_counts_get_the_poisson_errors():
    y, X, Z, ident = _simulated()
    for bad, match in ((-1.0, "non-negative counts"), (0.5, "integer counts")):
        yb = y.copy()
        yb[3] = bad
        msgs = []
        for cls in (bg.PoissonBayesMixedGLM, bg.NegativeBinomialBayesMixedGLM):
            with pytest.raises(ValueError, match=match) as err:
                cls(yb, X, Z, ident)
            msgs.append(str(err.value))
        assert msgs[0] == msgs[1]
    with pytest.raises(ValueError, match="theta_p"):
        bg.NegativeBinomialBayesMixedGLM(y, X, Z, ident, theta_p=0)
    model = bg.NegativeBinomialBayesMixedGLM(y, X, Z, ident)
    with pytest.raises(ValueError, match="use vb_elbo"):
        model.vb_elbo_base(None, y, *([np.zeros(2)] * 6))
    with pytest.raises(ValueError, match="n_trials= applies to the binomial family only"):
        bg.NegativeBinomialBayesMixedGLM(y, X, Z, ident, n_trials=np.ones_like(y))


def test_exposure_and_formula_options():
    df = datasets.load("grouseticks")
    m = bg.NegativeBinomialBayesMixedGLM.from_formula(
        "TICKS ~ YEAR", {"BROOD": "0 + C(BROOD)"}, df, exposure=np.full(len(df), 2.0),
        theta_p=1.5, vcp_names=["brood"])
    np.testing.assert_allclose(m.offset, np.log(2.0))
    assert m.theta_p == 1.5 and m.vcp_names == ["brood", "log_theta"] and m.k_vcp == 2
    assert float(m._prior().disp_p) == 1.5
    assert m.layout.k_disp == 1 and m.layout.k_sd == 1
    with pytest.raises(ValueError, match="theta_p"):
        bg.NegativeBinomialBayesMixedGLM.from_formula("TICKS ~ YEAR", {"B": "0 + C(BROOD)"}, df,
                                                      theta_p=-1)
