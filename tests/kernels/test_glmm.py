"""logposterior / vb_elbo and their gradients: statsmodels parity, finite differences, and the
sparse kernels against a plain dense implementation."""

import numpy as np
import pytest
from scipy import sparse

import bayesglmm as bg
from tests.helpers import DESIGNS, assert_gradients_match_central_diff

sm_bmg = pytest.importorskip("statsmodels.genmod.bayes_mixed_glm")


def _models(family, design, **kw):
    y, X, Z, ident = design()
    ours = getattr(bg, family + "BayesMixedGLM")(y, X, sparse.csr_array(Z), ident, vcp_p=0.5, **kw)
    theirs = getattr(sm_bmg, family + "BayesMixedGLM")(y, X, sparse.csr_array(Z), ident, vcp_p=0.5)
    return ours, theirs


def _points(model, k=5, seed=0):
    rs = np.random.default_rng(seed)
    p = model.k_fep + model.k_vcp + model.k_vc
    return [(0.5 * rs.normal(size=p), np.exp(0.3 * rs.normal(size=p) - 1)) for _ in range(k)]


@pytest.mark.parametrize("name,family,design", DESIGNS, ids=[d[0] for d in DESIGNS])
def test_logposterior_matches_statsmodels(name, family, design):
    ours, theirs = _models(family, design)
    for x, _ in _points(ours):
        assert ours.logposterior(x) == pytest.approx(theirs.logposterior(x), rel=1e-8)
        g1, g2 = ours.logposterior_grad(x), theirs.logposterior_grad(x)
        np.testing.assert_allclose(g1, g2, rtol=1e-8, atol=1e-8 * np.abs(g2).max())


@pytest.mark.parametrize("name,family,design", DESIGNS, ids=[d[0] for d in DESIGNS])
def test_vb_elbo_matches_statsmodels_rule(name, family, design):
    ours, theirs = _models(family, design, vb_rule="statsmodels")
    for m, s in _points(ours):
        assert ours.vb_elbo(m, s) == pytest.approx(theirs.vb_elbo(m, s), rel=1e-6)
        (gm1, gs1), (gm2, gs2) = ours.vb_elbo_grad(m, s), theirs.vb_elbo_grad(m, s)
        scale = np.abs(np.r_[gm2, gs2]).max()
        np.testing.assert_allclose(gm1, gm2, rtol=1e-6, atol=1e-6 * scale)
        np.testing.assert_allclose(gs1, gs2, rtol=1e-6, atol=1e-6 * scale)


@pytest.mark.parametrize("name,family,design", DESIGNS[::2], ids=[d[0] for d in DESIGNS[::2]])
def test_default_rule_accuracy(name, family, design):
    """The 20-node Gauss–Hermite ELBO agrees with a 100-node rule (measured: 1e-9)."""
    y, X, Z, ident = design()
    cls = getattr(bg, family + "BayesMixedGLM")
    m20 = cls(y, X, Z, ident, vb_rule="gh20")  # the default is statsmodels' rule (issue 11)
    m100 = cls(y, X, Z, ident, vb_rule="gh100")
    for m, s in _points(m20):
        assert m20.vb_elbo(m, s) == pytest.approx(m100.vb_elbo(m, s), rel=1e-7)


# both families, and both one variance component (simple) and two crossed ones
FD_DESIGNS = [d for d in DESIGNS if d[0] in ("simple_logit", "crossed_poisson")]


@pytest.mark.parametrize("name,family,design", FD_DESIGNS, ids=[d[0] for d in FD_DESIGNS])
def test_gradients_match_finite_differences(name, family, design):
    y, X, Z, ident = design()
    model = getattr(bg, family + "BayesMixedGLM")(y, X, Z, ident)
    x, s = _points(model, k=1, seed=3)[0]
    assert_gradients_match_central_diff(model, x, s)


def _dense_logposterior(family, y, X, Z, ident, params, vcp_p, fe_p):
    """Plain numpy: dense Z, the model written out term by term."""
    from scipy.special import gammaln

    kf, kp = X.shape[1], ident.max() + 1
    fe, vcp, vc = params[:kf], params[kf:kf + kp], params[kf + kp:]
    eta = X @ fe + Z @ vc
    if family == "Binomial":
        ll = np.sum(y * eta - np.log1p(np.exp(eta)))
    else:
        ll = np.sum(y * eta - np.exp(eta) - gammaln(y + 1))
    sd = np.exp(vcp[ident])
    ll += np.sum(-0.5 * vc**2 / sd**2 - np.log(sd))
    ll += np.sum(-0.5 * vcp**2 / vcp_p**2) + np.sum(-0.5 * fe**2 / fe_p**2)
    return ll


def _dense_elbo_gh(family, y, X, Z, ident, mean, sd, vcp_p, fe_p, k=20):
    """Plain numpy ELBO with a dense Z and the same 20-node Gauss–Hermite rule."""
    kf, kp = X.shape[1], ident.max() + 1
    fm, pm, vm = mean[:kf], mean[kf:kf + kp], mean[kf + kp:]
    fs, ps, vs = sd[:kf], sd[kf:kf + kp], sd[kf + kp:]
    tm = X @ fm + Z @ vm
    tv = (X**2) @ fs**2 + (Z**2) @ vs**2
    z, w = np.polynomial.hermite_e.hermegauss(k)
    w = w / np.sqrt(2 * np.pi)
    eta = tm[:, None] + np.sqrt(tv)[:, None] * z
    h = np.log1p(np.exp(eta)) if family == "Binomial" else np.exp(eta)
    iv = np.sum(y * tm - h @ w)
    m, s = pm[ident], ps[ident]
    iv -= 0.5 * np.sum((vm**2 + vs**2) * np.exp(2 * s**2 - 2 * m)) + np.sum(m)
    iv -= 0.5 * np.sum(pm**2 + ps**2) / vcp_p**2 + 0.5 * np.sum(fm**2 + fs**2) / fe_p**2
    return iv + np.sum(np.log(sd))


@pytest.mark.parametrize("name,family,design", DESIGNS, ids=[d[0] for d in DESIGNS])
def test_sparse_kernels_match_dense_reference(name, family, design):
    y, X, Z, ident = design()
    model = getattr(bg, family + "BayesMixedGLM")(y, X, sparse.csr_array(Z), ident, vcp_p=0.7,
                                                   fe_p=1.5, vb_rule="gh20")  # as the reference
    for x, s in _points(model, k=3, seed=7):
        ref = _dense_logposterior(family, y, X, Z, ident, x, 0.7, 1.5)
        assert model.logposterior(x) == pytest.approx(ref, rel=1e-12)
        ref = _dense_elbo_gh(family, y, X, Z, ident, x, s, 0.7, 1.5)
        assert model.vb_elbo(x, s) == pytest.approx(ref, rel=1e-9)
