"""Simulated designs from statsmodels' own tests of BayesMixedGLM
(statsmodels/genmod/tests/test_bayes_mixed_glm.py, BSD-3-Clause), reproduced here so that the
parity tests use exactly statsmodels' designs; the loader of the R reference fits in
tests/reference/lme4.json; and comparisons shared by several test files."""

import json
import re
from pathlib import Path
from typing import NamedTuple

import numpy as np

REFERENCE = Path(__file__).parent / "reference"


class Lme4Fit(NamedTuple):
    """One lme4 fit from tests/reference/lme4.json, in our names: lme4's "(Intercept)" is
    "Intercept", and the ".1" lme4 appends to a repeated group ("Subject.1") is dropped."""

    formula: str  # lme4 formula
    reml: bool  # method == "REML"
    fixef: dict  # {name: estimate}, lme4's order
    fixef_se: dict  # {name: standard error}
    vcov: dict  # {(group, var1, var2): variance or covariance}; var2 None for a variance
    sd: dict  # {(group, var1, var2): standard deviation or correlation}
    loglik: float  # logLik(m)


def lme4_reference(name: str) -> Lme4Fit:
    """The fit ``name`` (a key of tests/reference/lme4.json, e.g. ``"sleepstudy_reml"``)."""
    ref = json.loads((REFERENCE / "lme4.json").read_text())[name]
    rename = lambda s: "Intercept" if s == "(Intercept)" else s
    key = lambda r: (re.sub(r"\.\d+$", "", r["group"]), rename(r["var1"]), rename(r["var2"]))
    return Lme4Fit(
        formula=ref["formula"],
        reml=ref["method"] == "REML",
        fixef={rename(k): v for k, v in ref["fixef"].items()},
        fixef_se={rename(k): v for k, v in ref["fixef_se"].items()},
        vcov={key(r): r["variance_or_cov"] for r in ref["varcorr"]},
        sd={key(r): r["sd_or_cor"] for r in ref["varcorr"]},
        loglik=ref["logLik"],
    )


def gen_simple_logit(nc, cs, s):
    rs = np.random.RandomState(3799)
    exog_vc = np.kron(np.eye(nc), np.ones((cs, 1)))
    exog_fe = rs.normal(size=(nc * cs, 2))
    vc = s * rs.normal(size=nc)
    lp = np.dot(exog_fe, np.r_[1, -1]) + np.dot(exog_vc, vc)
    pr = 1 / (1 + np.exp(-lp))
    y = 1 * (rs.uniform(size=nc * cs) < pr)
    ident = np.zeros(nc, dtype=int)
    return y, exog_fe, exog_vc, ident


def gen_simple_poisson(nc, cs, s):
    rs = np.random.RandomState(3799)
    exog_vc = np.kron(np.eye(nc), np.ones((cs, 1)))
    exog_fe = rs.normal(size=(nc * cs, 2))
    vc = s * rs.normal(size=nc)
    lp = np.dot(exog_fe, np.r_[0.1, -0.1]) + np.dot(exog_vc, vc)
    y = rs.poisson(np.exp(lp))
    ident = np.zeros(nc, dtype=int)
    return y, exog_fe, exog_vc, ident


def _crossed(nc, cs, s1, s2, fe):
    rs = np.random.RandomState(3799)
    a = np.kron(np.eye(nc), np.ones((cs, 1)))
    b = np.kron(np.ones((cs, 1)), np.eye(nc))
    exog_vc = np.concatenate((a, b), axis=1)
    exog_fe = rs.normal(size=(nc * cs, 1))
    vc = s1 * rs.normal(size=2 * nc)
    vc[nc:] *= s2 / s1
    lp = np.dot(exog_fe, np.r_[fe]) + np.dot(exog_vc, vc)
    ident = np.zeros(2 * nc, dtype=int)
    ident[nc:] = 1
    return rs, lp, exog_fe, exog_vc, ident


def gen_crossed_logit(nc, cs, s1, s2):
    rs, lp, exog_fe, exog_vc, ident = _crossed(nc, cs, s1, s2, -0.5)
    y = 1 * (rs.uniform(size=nc * cs) < 1 / (1 + np.exp(-lp)))
    return y, exog_fe, exog_vc, ident


def gen_crossed_poisson(nc, cs, s1, s2):
    rs, lp, exog_fe, exog_vc, ident = _crossed(nc, cs, s1, s2, -0.5)
    return rs.poisson(np.exp(lp)), exog_fe, exog_vc, ident


# (name, family, design) used across the parity tests
DESIGNS = [
    ("simple_logit", "Binomial", lambda: gen_simple_logit(10, 10, 2)),
    ("simple_poisson", "Poisson", lambda: gen_simple_poisson(10, 10, 0.2)),
    ("crossed_logit", "Binomial", lambda: gen_crossed_logit(10, 10, 1, 2)),
    ("crossed_poisson", "Poisson", lambda: gen_crossed_poisson(10, 10, 1, 1)),
]


def central_diff(f, x, h=1e-6):
    """Central-difference gradient of a scalar function of a vector."""
    g = np.zeros_like(x)
    for i in range(len(x)):
        e = np.zeros_like(x)
        e[i] = h
        g[i] = (f(x + e) - f(x - e)) / (2 * h)
    return g


def assert_gradients_match_central_diff(model, x, s):
    """A mixed GLM's log-posterior gradient at x and ELBO gradients at (x, s) against
    :func:`central_diff`."""
    np.testing.assert_allclose(model.logposterior_grad(x), central_diff(model.logposterior, x),
                               rtol=1e-5, atol=1e-6)
    gm, gs = model.vb_elbo_grad(x, s)
    np.testing.assert_allclose(gm, central_diff(lambda m: model.vb_elbo(m, s), x), rtol=1e-5,
                               atol=1e-6)
    np.testing.assert_allclose(gs, central_diff(lambda t: model.vb_elbo(x, t), s), rtol=1e-5,
                               atol=1e-6)




def dense_deviance(model, theta, reml):
    """−2 log-likelihood from a plain dense multivariate normal, β and σ² profiled out.

    Builds Z (n × Σ L_t q_t) and Λ explicitly, V₀ = I + ZΛΛᵀZᵀ, β̂ by GLS, σ̂² = r²/n (ML) or
    r²/(n−p) (REML), and evaluates scipy's multivariate-normal log-density; REML adds
    log|XᵀV⁻¹X| − p log 2π (Harville 1974).
    """
    import scipy.stats

    d = model.design
    y, X = d.y, d.X
    n, p = X.shape
    zs, lams = [], []
    for t, ti in zip(d.terms, model._theta_index):
        L, q = t.n_levels, t.q
        Z = np.zeros((n, L * q))
        for a in range(q):
            Z[np.arange(n), t.codes * q + a] = t.z[:, a]
        lam = np.where(ti >= 0, np.asarray(theta)[np.maximum(ti, 0)], 0.0)
        zs.append(Z)
        lams.append(np.kron(np.eye(L), lam))
    Z = np.hstack(zs)
    Lam = np.zeros((Z.shape[1], Z.shape[1]))
    off = 0
    for lam in lams:
        k = lam.shape[0]
        Lam[off : off + k, off : off + k] = lam
        off += k
    ZL = Z @ Lam
    V0 = np.eye(n) + ZL @ ZL.T
    Vi = np.linalg.inv(V0)
    beta = np.linalg.solve(X.T @ Vi @ X, X.T @ Vi @ y)
    r = y - X @ beta
    r2 = r @ Vi @ r
    s2 = r2 / (n - p if reml else n)
    ll = scipy.stats.multivariate_normal(X @ beta, s2 * V0).logpdf(y)
    dev = -2 * ll
    if reml:
        dev += np.linalg.slogdet(X.T @ Vi @ X / s2)[1] - p * np.log(2 * np.pi)
    return dev


def assert_reproduced(actual, desired, dtype=np.float64):
    """Two runs of the same computation agree: to the last bit on CPU, where XLA's programs are
    deterministic; elsewhere to 1,000 ulps of ``dtype`` (on GPUs XLA may order a reduction
    differently from run to run, and an iterative fit carries the difference on: seen on an
    H100, 2e-16 relative in float64, 5e-6 in float32)."""
    import jax

    if jax.default_backend() == "cpu":
        np.testing.assert_array_equal(actual, desired)
    else:
        tol = 1e3 * np.finfo(dtype).eps
        np.testing.assert_allclose(actual, desired, rtol=tol, atol=tol)
