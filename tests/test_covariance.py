"""Correlated random effects, (1 + x | g): the kernels against dense multivariate normals,
recovery of the covariance on simulated data, and the lme4-style formula terms."""

import json
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
from scipy import optimize, stats

import bayesglmm as bg
from bayesglmm import covariance as covstruct, datasets
from bayesglmm._precision import precision


def _sim(G=60, per=30, seed=1, sd=(0.8, 0.5), rho=0.5):
    rs = np.random.default_rng(seed)
    g = np.repeat(np.arange(G), per)
    x = rs.normal(size=G * per)
    S = np.array([[sd[0] ** 2, rho * sd[0] * sd[1]], [rho * sd[0] * sd[1], sd[1] ** 2]])
    b = rs.multivariate_normal([0, 0], S, size=G)
    y = rs.poisson(np.exp(-0.3 + 0.7 * x + b[g, 0] + b[g, 1] * x))
    return pd.DataFrame({"y": y, "x": x, "g": [f"g{i:03d}" for i in g]})


def test_corr_cholesky_is_a_correlation_factor():
    with precision(np.float64):
        for q in (2, 3, 4):
            z = np.random.default_rng(q).normal(size=q * (q - 1) // 2)
            R = covstruct.corr_matrix(z, q)
            np.testing.assert_allclose(np.diag(R), 1.0, rtol=1e-12)
            assert np.all(np.linalg.eigvalsh(R) > 0)
        assert covstruct.corr_matrix(np.array([0.3]), 2)[0, 1] == pytest.approx(np.tanh(0.3))


def _dense_logpost(model, df, x):
    """numpy: Poisson log-likelihood + Σ_g log MVN(b_g; 0, D R D) (+ q·G/2·log 2π, the
    constants the kernels omit) + the N(0, vcp_p²) and N(0, fe_p²) priors without constants."""
    kf = model.k_fep
    fe, vcp, vc = x[:kf], x[kf:kf + model.k_vcp], x[kf + model.k_vcp:]
    Z = model.exog_vc.toarray()
    eta = model.exog @ fe + Z @ vc
    ll = np.sum(stats.poisson.logpmf(model.endog, np.exp(eta)))
    s = np.exp(vcp[:2])
    R = covstruct.corr_matrix(vcp[2:3], 2)
    S = np.outer(s, s) * R
    B = vc.reshape(-1, 2)
    lp = np.sum(stats.multivariate_normal(np.zeros(2), S).logpdf(B)) + B.size / 2 * np.log(2 * np.pi)
    return ll + lp - 0.5 * np.sum(vcp**2) / model.vcp_p**2 - 0.5 * np.sum(fe**2) / model.fe_p**2


def test_logposterior_matches_dense_multivariate_normal():
    df = _sim(G=8, per=5)
    model = bg.PoissonBayesMixedGLM.from_formula("y ~ x + (1 + x | g)", {}, df)
    assert model.vcp_names == ["g", "g:x", "g:corr(Intercept,x)"]
    assert model.vc_names[:2] == ["g[g000]:Intercept", "g[g000]:x"]
    rs = np.random.default_rng(0)
    for _ in range(3):
        x = 0.4 * rs.normal(size=model.k_fep + model.k_vcp + model.k_vc)
        assert model.logposterior(x) == pytest.approx(_dense_logpost(model, df, x), rel=1e-11)


@pytest.mark.slow
def test_marginal_laplace_matches_dense_reference():
    """ℓ(θ) = max_b [log p(y|b) + log N(b; 0, Σ)] + (k/2) log 2π − ½ log det(ZᵀWZ + Σ⁻¹)."""
    from bayesglmm.design.ellpack import design_mode
    from bayesglmm.kernels.marginal import marginal_loglik

    df = _sim(G=6, per=8, seed=3)
    model = bg.PoissonBayesMixedGLM.from_formula("y ~ x + (1 + x | g)", {}, df)
    theta = np.array([-0.2, 0.6, -0.3, -0.6, 0.4])
    mode = design_mode(model._cols, model._vals, model.ident, [c for c, _, _ in model._corr])
    assert mode == model._design_mode == ("block", 2)
    with precision(np.float64):
        import jax.numpy as jnp

        ell = float(marginal_loglik(jnp.asarray(theta), model._data(), family=model.family,
                                    mode=mode))
    X, Z, y = model.exog, model.exog_vc.toarray(), model.endog
    s = np.exp(theta[2:4])
    S = np.kron(np.eye(6), np.outer(s, s) * covstruct.corr_matrix(theta[4:5], 2))
    Si = np.linalg.inv(S)

    def negf(b):
        eta = X @ theta[:2] + Z @ b
        return -(np.sum(y * eta - np.exp(eta)) - 0.5 * b @ Si @ b)

    b = optimize.minimize(negf, np.zeros(12), method="BFGS", options={"gtol": 1e-10}).x
    eta = X @ theta[:2] + Z @ b
    H = Z.T @ (np.exp(eta)[:, None] * Z) + Si
    ref = (np.sum(stats.poisson.logpmf(y, np.exp(eta)))
           + stats.multivariate_normal(np.zeros(12), S).logpdf(b)
           + 6 * np.log(2 * np.pi) - 0.5 * np.linalg.slogdet(H)[1])
    assert ell == pytest.approx(ref, rel=1e-8)


def _block_model(formula):
    formula, vc = formula if isinstance(formula, tuple) else (formula, {})
    df = _sim(G=7, per=6, seed=5)
    rs = np.random.default_rng(6)
    df["x2"] = rs.normal(size=len(df))
    df["a"] = (rs.random(len(df)) < 0.5).astype(float)  # one-hot pair: one non-zero per row
    df["b"] = 1.0 - df["a"]
    df["h"] = rs.integers(0, 4, len(df)).astype(str)  # crossed with g
    return bg.PoissonBayesMixedGLM.from_formula(formula, vc, df)


@pytest.mark.parametrize("formula, order", [
    ("y ~ x + (1 + x | g)", 1),
    pytest.param("y ~ x + (1 + x | g)", 2, marks=pytest.mark.slow),
    pytest.param("y ~ x + x2 + (1 + x + x2 | g)", 2, marks=pytest.mark.slow),
    pytest.param("y ~ x + (0 + a + b | g)", 2, marks=pytest.mark.slow),
    pytest.param("y ~ x + (x | g) + (0 + x2 | g)", 2, marks=pytest.mark.slow),
    pytest.param("y ~ x + (x || g)", 2, marks=pytest.mark.slow),
    pytest.param(("y ~ x", {"g": "0 + C(g)", "gx": "0 + C(g):x"}), 2, marks=pytest.mark.slow),
    pytest.param("y ~ x + (1 + x | g) + (1 | h)", 1, marks=pytest.mark.slow),
    pytest.param("y ~ x + (1 + x | g) + (1 | h)", 2, marks=pytest.mark.slow),
    pytest.param("y ~ x + (1 + x | g) + (x2 | h)", 2, marks=pytest.mark.slow),
    pytest.param("y ~ x + (x || g) + (1 | h)", 2, marks=pytest.mark.slow)])
def test_block_mode_equals_the_dense_factorisation(formula, order):
    """The terms of one grouping factor, correlated or not, factor H_uu block by block
    (("block", q), linalg.block_diag), and crossed with another factor onto its Schur
    complement (("schur_block", q, k_r, ·)): J, ∇J (and ∇²J: ``order`` 2), u* and
    diag(Λ H_uu⁻¹ Λᵀ) equal the dense Cholesky's.
    (0 + a + b | g) has one non-zero per row, which once chose the diagonal mode — wrong
    where Λ mixes a level's effects.)  (x || g) + (1 | h), independent terms, takes the
    Schur-block mode too (it was the Schur mode, with g's slopes in a dense rest), and the
    written-out log-det derivative from its leverages."""
    import jax
    import jax.numpy as jnp

    from bayesglmm.kernels.h_uu import factor_h_uu, var_vc
    from bayesglmm.kernels.marginal import objective

    model = _block_model(formula)
    mode = model._design_mode
    if "| h" in str(formula):  # crossed: g's blocks eliminated onto h's columns
        assert mode[:2] == ("schur_block", 2) and mode[2] == model.k_vc - 14
    else:
        assert mode[0] == "block" and mode[1] == model.k_vc // 7
    theta0 = 0.3 * np.random.default_rng(7).normal(size=model.k_fep + model.k_vcp)
    w = np.random.default_rng(8).random(len(model.endog)) + 0.1
    out = []
    with precision(np.float64):
        data, prior, theta = model._data(), model._prior(), jnp.asarray(theta0)
        for m in (mode, "dense"):
            obj = objective(model.family, m, True)
            if order == 2:
                terms = jax.jit(obj.vgh)(theta, None, data, prior)
            else:
                g, (f, u) = jax.jit(obj.grad)(theta, None, data, prior)
                terms = (f, g, u)
            vcp = theta[model.k_fep:]
            v = jax.jit(lambda vcp, w, m=m: var_vc(vcp, factor_h_uu(vcp, w, m, data), m, data))(
                vcp, jnp.asarray(w))
            out.append([np.asarray(a) for a in (*terms, v)])
    for a, b in zip(*out):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


_GLMER = json.loads((Path(__file__).parent / "reference" / "glmer_corr.json").read_text())


@pytest.mark.parametrize("case", ["sleep_binary",
                                  pytest.param("ticks_poisson", marks=pytest.mark.slow)])
def test_correlated_slopes_match_glmer(case):
    """lme4's glmer (tests/reference/glmer_corr.R, bobyqa to 2e-11) on real data: our
    log-likelihood is at least lme4's (higher by 6e-5 and 2e-3: glmer stops short of the
    optimum on these flat surfaces, the slope SD of ticks_poisson being 0.0013), the fixed
    effects within 0.02 of their SEs, and their SEs within 0.2% on sleep_binary (lme4's
    finite-difference Hessian; ours is exact).  ticks_poisson's slope SD is near zero, where
    ℓ is flat and not concave (our exact Hessian at lme4's estimate is indefinite, its
    gradient 1.5 in the slope's log SD): its SEs agree to 2%, cHEIGHT's, which moves with
    that SD, to 5% (2.5%)."""
    ref = _GLMER[case]
    if case == "sleep_binary":
        df = datasets.load("sleepstudy")
        df["slow"] = (df["Reaction"] > 300).astype(int)
        model = bg.BinomialBayesMixedGLM.from_formula(ref["formula"], None, df)
    else:
        model = bg.PoissonBayesMixedGLM.from_formula(ref["formula"], None,
                                                     datasets.load("grouseticks"))
    assert model._design_mode == ("block", 2)
    r = model.fit_laplace(priors=False)
    assert r.llf >= ref["logLik"] - 1e-7
    assert r.llf - ref["logLik"] < 5e-3
    fe, se = np.asarray(ref["fixef"]), np.asarray(ref["se"])
    assert np.all(np.abs(r.fe_mean - fe) <= 0.02 * se), (r.fe_mean - fe) / se
    if case == "ticks_poisson":  # cHEIGHT's SE moves with its slope's SD, flat near zero
        np.testing.assert_allclose(r.fe_sd[:3], se[:3], rtol=2e-2)
        assert r.fe_sd[3] == pytest.approx(se[3], rel=5e-2)
    else:
        np.testing.assert_allclose(r.fe_sd, se, rtol=2e-3)
    if case == "sleep_binary":  # well determined: the SDs and the correlation agree too
        np.testing.assert_allclose(np.exp(r.vcp_mean[:2]), ref["sd"], rtol=5e-4)
        assert np.tanh(r.vcp_mean[2]) == pytest.approx(ref["corr"], abs=1e-3)
        vc = r.varcorr  # lme4's VarCorr(m)
        assert vc[["group", "var1"]].values.tolist() == [["Subject", "Intercept"],
                                                         ["Subject", "Days"],
                                                         ["Subject", "Intercept"]]
        assert vc["var2"].tolist()[2] == "Days"
        np.testing.assert_allclose(vc["sdcor"].to_numpy(), ref["sd"] + [ref["corr"]],
                                   rtol=5e-4, atol=1e-3)


def test_varcorr_is_the_covariance_of_the_random_effects():
    """GLMM varcorr: per term its SDs and, for (x1 + x2 | g), all three correlations — of
    Σ = ΛΛᵀ, formed here from one level's columns of the dense Λ (covariance.lam_u on the
    identity), not the partial correlations of the parameters — in lme4's row order; a
    vc_formulas component by its key; an SD at the lower bound (singular) as 0."""
    rng = np.random.default_rng(0)
    n = 60
    df = pd.DataFrame({"y": rng.poisson(2.0, n), "x1": rng.normal(size=n),
                       "x2": rng.normal(size=n), "g": rng.integers(0, 4, n).astype(str),
                       "h": rng.integers(0, 3, n).astype(str)})
    m = bg.PoissonBayesMixedGLM.from_formula("y ~ x1 + (x1 + x2 | g) + (1 | h)",
                                             {"site": "0 + C(h)"}, df)
    # vcp: site, g's three log SDs, h, then g's three correlation parameters
    assert m.vcp_names[:5] == ["site", "g", "g:x1", "g:x2", "h"]
    vcp = np.array([-0.2, 0.3, -0.5, -1.0, bg.fits.laplace.LOG_SD_MIN, 0.8, -0.6, 1.3])
    params = np.concatenate([[0.1, 0.2], vcp, np.zeros(m.k_vc)])
    r = bg.models.glmm.BayesMixedGLMResults(m, params, np.ones(len(params)), method="vb")
    vc = r.varcorr
    assert vc[["group", "var1", "var2"]].fillna("-").values.tolist() == [
        ["site", "-", "-"], ["g", "Intercept", "-"], ["g", "x1", "-"], ["g", "x2", "-"],
        ["g", "Intercept", "x1"], ["g", "Intercept", "x2"], ["g", "x1", "x2"],
        ["h", "Intercept", "-"]]
    with precision(np.float64):
        data = m._data()
        lam = np.asarray(covstruct.lam_u(jnp.asarray(vcp), jnp.eye(m.k_vc), data.ident,
                                         data.corr))
    cols = np.asarray(m._corr[0][0])[0]  # level 0 of g: its three columns
    sig = lam[cols][:, cols] @ lam[cols][:, cols].T
    sd = np.sqrt(np.diag(sig))
    cor = sig / np.outer(sd, sd)
    np.testing.assert_allclose(vc["sdcor"].to_numpy()[1:7],
                               [*sd, cor[1, 0], cor[2, 0], cor[2, 1]], rtol=1e-12)
    np.testing.assert_allclose(vc["vcov"].to_numpy()[1:7],
                               [*np.diag(sig), sig[1, 0], sig[2, 0], sig[2, 1]], rtol=1e-12)
    assert abs(cor[2, 1] - np.tanh(vcp[7])) > 0.05  # the correlation, not the partial one
    assert vc["sdcor"].iloc[0] == pytest.approx(np.exp(-0.2))
    assert vc["sdcor"].iloc[7] == 0.0 and vc["vcov"].iloc[7] == 0.0


def test_a_correlation_at_one_is_a_singular_fit_as_in_lme4():
    """lme4's isSingular reads the relative Cholesky factor's diagonal: a correlation at ±1
    is singular although no SD is zero.  glmer (tests/reference/glmer_corr.R) says "boundary
    (singular) fit" on this sample; so do we, with the correlation parameter's SE NaN and
    the others computed with it held, as lme4 does — the fixed effects' SEs within 2% of
    glmer's (finite differences), our log-likelihood 4e-4 above glmer's."""
    ref = _GLMER["singular_poisson"]
    assert ref["isSingular"]
    df = pd.read_csv(Path(__file__).parent / "reference" / "glmer_corr_singular.csv",
                     dtype={"g": str})
    model = bg.PoissonBayesMixedGLM.from_formula(ref["formula"], None, df)
    with pytest.warns(bg.SingularFitWarning, match=r"correlation at ±1.*'g:corr\(Intercept,x\)'"):
        r = model.fit_laplace(priors=False)
    assert r.is_singular and np.tanh(r.vcp_mean[2]) > 0.9999 and np.isnan(r.vcp_sd[2])
    assert np.all(np.isfinite(r.fe_sd)) and np.all(np.isfinite(r.vcp_sd[:2]))
    assert r.llf >= ref["logLik"] - 1e-7
    np.testing.assert_allclose(np.exp(r.vcp_mean[:2]), ref["sd"], rtol=2e-3)
    np.testing.assert_allclose(r.fe_mean, ref["fixef"], atol=0.02 * min(ref["se"]))
    np.testing.assert_allclose(r.fe_sd, ref["se"], rtol=2e-2)
    assert "correlation at ±1" in str(r.summary())


@pytest.mark.slow
def test_the_default_start_reaches_the_optimum_of_four_correlated_effects():
    """(x1 + x2 + x3 | g), Poisson, 500 groups × 8 rows (seed 0): from lme4's start (SDs of 1) with
    the six correlation parameters free, the first Newton steps took them towards ±1 and the
    fit stopped on a singular ridge 60 log-likelihood units down (then a NaN Hessian).  The
    correlations are now held at zero until the SDs are estimated: the default fit equals a
    fit started next to the truth (and lme4's −7163.875 is 0.23 below both)."""
    from benchmarks.bench_corr import simulate

    q = 4
    df = simulate(500, 8, q)  # benchmarks/RESULTS.md's "corr" row for q = 4
    model = bg.PoissonBayesMixedGLM.from_formula("y ~ x1 + x2 + x3 + (x1 + x2 + x3 | g)", None,
                                                 df)
    assert model._design_mode == ("block", 4)
    r = model.fit_laplace(priors=False)
    near = model.fit_laplace(priors=False, start=np.r_[0.5, 0, 0, 0, [np.log(0.3)] * 4, [0] * 6])
    assert r.optim_retvals.success
    assert r.llf == pytest.approx(near.llf, abs=1e-6)
    assert r.llf == pytest.approx(-7163.6475, abs=1e-3)
    assert np.max(np.abs(np.tanh(r.vcp_mean[q:]))) < 0.5


@pytest.mark.slow
def test_independent_slopes_of_ten_thousand_groups_fit_by_blocks():
    """(x || g) with 10,000 groups: 20,000 random effects in 2 × 2 blocks.  Before the block
    mode, the Schur complement onto g's slopes was a dense 10,000² block, refused above 8,000
    random effects (and 2,000 groups took 100 s)."""
    rs = np.random.default_rng(0)
    G, per = 10_000, 5
    g = np.repeat(np.arange(G), per)
    x = rs.normal(size=G * per)
    b = rs.normal(size=(G, 2)) * [0.4, 0.3]
    df = pd.DataFrame({"x": x, "g": g.astype(str),
                       "y": rs.poisson(np.exp(0.5 + 0.2 * x + b[g, 0] + b[g, 1] * x))})
    model = bg.PoissonBayesMixedGLM.from_formula("y ~ x + (x || g)", None, df)
    assert model._design_mode == ("block", 2) and model.k_vc == 2 * G
    r = model.fit_laplace(priors=False)
    assert r.optim_retvals.success
    z = (r.vcp_mean - np.log([0.4, 0.3])) / r.vcp_sd
    assert np.all(np.abs(z) < 3), z


@pytest.mark.slow
def test_correlated_slopes_crossed_with_another_factor_past_the_dense_limit():
    """(x | g) + (1 | h) with ~4,100 levels of g and 40 of h: 8,170 random effects, more than
    the dense factorisation's 8,000 (refused before the Schur-block mode).  The estimates
    recover the simulation's within their uncertainty."""
    rs = np.random.default_rng(1)
    G, H, n = 4100, 40, 20_000
    g, h, x = rs.integers(0, G, n), rs.integers(0, H, n), rs.normal(size=n)
    b, c = 0.3 * rs.normal(size=(G, 2)), 0.4 * rs.normal(size=H)
    df = pd.DataFrame({"x": x, "g": g.astype(str), "h": h.astype(str),
                       "y": rs.poisson(np.exp(0.5 + b[g, 0] + b[g, 1] * x + c[h]))})
    model = bg.PoissonBayesMixedGLM.from_formula("y ~ x + (x | g) + (1 | h)", None, df)
    assert model._design_mode[:3] == ("schur_block", 2, H)
    assert model.k_vc == 2 * df["g"].nunique() + H > 8000
    r = model.fit_laplace(priors=False)
    assert r.optim_retvals.success
    z = (r.vcp_mean - np.r_[np.log([0.3, 0.3, 0.4]), 0.0]) / r.vcp_sd
    assert np.all(np.abs(z) < 3), z


@pytest.mark.slow
def test_correlated_slopes_recovered_within_their_uncertainty():
    df = _sim(G=100, per=30, seed=11)
    model = bg.PoissonBayesMixedGLM.from_formula("y ~ x + (1 + x | g)", {}, df)
    r = model.fit_laplace(priors=False)
    assert r.optim_retvals.success
    truth = np.array([np.log(0.8), np.log(0.5), np.arctanh(0.5)])
    z = (r.vcp_mean - truth) / r.vcp_sd
    assert np.all(np.abs(z) < 3), z
    np.testing.assert_allclose(r.fe_mean, [-0.3, 0.7], atol=3 * r.fe_sd.max())
    s = str(r.summary())
    assert "g:corr(Intercept,x)" in s and " R " in s
    # predictions for seen levels use both random effects; unseen get the population value
    new = pd.DataFrame({"x": [0.5, 0.5], "g": ["g000", "new"]})
    eff = r.random_effects()
    b0, b1 = eff.loc["g[g000]:Intercept", "Mean"], eff.loc["g[g000]:x", "Mean"]
    lin = r.predict(new, linear=True)
    assert lin[0] == pytest.approx(r.fe_mean[0] + 0.5 * r.fe_mean[1] + b0 + 0.5 * b1, rel=1e-12)
    assert lin[1] == pytest.approx(r.fe_mean[0] + 0.5 * r.fe_mean[1], rel=1e-12)


def test_correlated_terms_need_fit_laplace():
    model = bg.PoissonBayesMixedGLM.from_formula("y ~ x + (1 + x | g)", {}, _sim(G=5, per=4))
    for fit in (model.fit_map, model.fit_vb):
        with pytest.raises(ValueError, match=r"use fit_laplace\(\)"):
            fit()


def test_the_elbo_is_refused_for_correlated_terms():
    """The mean-field ELBO has no closed form for (1 + x | g): the public vb_elbo and its
    gradient raise as fit_vb does (the kernel refuses too), while the uncorrelated
    (1 | g) + (0 + x | g) model evaluates."""
    from bayesglmm.kernels.glmm import jitted_kernels

    df = _sim(G=5, per=4)
    model = bg.PoissonBayesMixedGLM.from_formula("y ~ x + (1 + x | g)", {}, df)
    p = model.k_fep + model.k_vcp + model.k_vc
    m, s = np.zeros(p), np.full(p, 0.5)
    for f in (model.vb_elbo, model.vb_elbo_grad):
        with pytest.raises(ValueError, match=r"use fit_laplace\(\)"):
            f(m, s)
    el = jitted_kernels(model.family, model.vb_rule).elbo
    with precision(np.float64), pytest.raises(ValueError, match="correlated"):
        el(model._params(m), model._params(s), model._data(), model._prior())
    indep = bg.PoissonBayesMixedGLM.from_formula("y ~ x + (1 | g) + (0 + x | g)", {}, df)
    assert np.isfinite(indep.vb_elbo(m[:p - 1], s[:p - 1]))


def test_lme4_style_intercepts_equal_vc_formulas():
    df = datasets.load("cbpp")
    a = bg.BinomialBayesMixedGLM.from_formula("incidence ~ C(period) + (1 | herd)", {}, df,
                                              n_trials="size")
    b = bg.BinomialBayesMixedGLM.from_formula("incidence ~ C(period)", {"herd": "0 + C(herd)"},
                                              df, n_trials="size")
    assert a.vcp_names == ["herd"] and a.k_vc == b.k_vc == 15
    x = np.random.default_rng(0).normal(size=a.k_fep + 1 + 15) * 0.3
    # the same columns, possibly in another level order
    pa = dict(zip(a.vc_names, x[5:]))
    xb = np.r_[x[:5], [pa[n.replace("C(herd)", "herd")] for n in b.vc_names]]
    assert a.logposterior(x) == pytest.approx(b.logposterior(xb), rel=1e-12)
