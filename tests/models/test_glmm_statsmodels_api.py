"""The mixed GLM classes' statsmodels names and the statsmodels VB quadrature default,
compared with statsmodels live."""

import numpy as np
import pandas as pd
import pytest
from scipy import sparse

from bayesglmm import BinomialBayesMixedGLM, PoissonBayesMixedGLM

smg = pytest.importorskip("statsmodels.genmod.bayes_mixed_glm")


def _data(seed=0, n_groups=10, size=10):
    rs = np.random.RandomState(seed)
    n = n_groups * size
    g = np.repeat(np.arange(n_groups), size)
    x = rs.normal(size=n)
    lp = 0.5 * x + rs.normal(size=n_groups)[g]
    y = (rs.uniform(size=n) < 1 / (1 + np.exp(-lp))).astype(float)
    return pd.DataFrame({"y": y, "x": x, "g": g, "c": rs.poisson(np.exp(lp))})


@pytest.mark.parametrize("cls", ["Binomial", "Poisson"])
def test_names_match_statsmodels(cls):
    df = _data()
    resp = "y" if cls == "Binomial" else "c"
    ours = {"Binomial": BinomialBayesMixedGLM, "Poisson": PoissonBayesMixedGLM}[cls]
    theirs = getattr(smg, f"{cls}BayesMixedGLM")
    m = ours.from_formula(f"{resp} ~ x", {"g": "0 + C(g)"}, df)
    r = theirs.from_formula(f"{resp} ~ x", {"g": "0 + C(g)"}, df)
    assert m.exog_names == r.exog_names
    assert m.endog_names == r.endog_names
    assert m.k_constant == r.k_constant == 1
    assert m.data.xnames == r.data.xnames and m.data.ynames == r.data.ynames
    X = np.asarray(df[["x"]])
    Z = sparse.csr_array(pd.get_dummies(df["g"]).to_numpy(float))
    a = ours(df[resp].to_numpy(), X, Z, np.zeros(10, int))
    b = theirs(df[resp].to_numpy(), X, Z, np.zeros(10, int))
    assert a.k_constant == b.k_constant == 0
    assert a.exog_names == b.exog_names


def test_from_formula_vcp_and_vc_names():
    df = _data()
    m = BinomialBayesMixedGLM.from_formula("y ~ x", {"g": "0 + C(g)"}, df, vcp_names=["grp"],
                                           vc_names=[f"u{k}" for k in range(10)])
    assert m.vcp_names == ["grp"] and m.vc_names[0] == "u0"
    assert BinomialBayesMixedGLM.from_formula("y ~ x", {"g": "0 + C(g)"}, df).vcp_names == ["g"]
    with pytest.raises(ValueError, match="vcp_names has 2 names"):
        BinomialBayesMixedGLM.from_formula("y ~ x", {"g": "0 + C(g)"}, df, vcp_names=["a", "b"])


def test_fit_vb_defaults_to_statsmodels_quadrature():
    df = _data(1)
    m = BinomialBayesMixedGLM.from_formula("y ~ x", {"g": "0 + C(g)"}, df)
    r = smg.BinomialBayesMixedGLM.from_formula("y ~ x", {"g": "0 + C(g)"}, df)
    assert m.vb_rule.name == "statsmodels"
    mean, sd = np.full(m.k_fep + m.k_vcp + m.k_vc, 0.1), np.full(m.k_fep + m.k_vcp + m.k_vc, 0.5)
    np.testing.assert_allclose(m.vb_elbo(mean, sd), r.vb_elbo(mean, sd), rtol=1e-10)
    ours, theirs = m.fit_vb(rng=0), r.fit_vb()
    np.testing.assert_allclose(ours.params, theirs.params, atol=1e-3)
    gh = BinomialBayesMixedGLM.from_formula("y ~ x", {"g": "0 + C(g)"}, df, vb_rule="gh20")
    assert gh.vb_rule.name != "statsmodels"
    assert abs(gh.vb_elbo(mean, sd) - m.vb_elbo(mean, sd)) > 1e-6  # the option is kept


@pytest.mark.parametrize("cls", ["Binomial", "Poisson"])
def test_vb_elbo_base_and_its_gradient_match_statsmodels(cls):
    """statsmodels' family-independent ELBO pieces, called with statsmodels' own ``h`` (the
    family's expected log-likelihood integrand and its derivative) at the same parameters."""
    df = _data(2)
    resp = "y" if cls == "Binomial" else "c"
    ours = {"Binomial": BinomialBayesMixedGLM, "Poisson": PoissonBayesMixedGLM}[cls]
    m = ours.from_formula(f"{resp} ~ x", {"g": "0 + C(g)"}, df)
    r = getattr(smg, f"{cls}BayesMixedGLM").from_formula(f"{resp} ~ x", {"g": "0 + C(g)"}, df)
    rs = np.random.RandomState(3)
    k = m.k_fep + m.k_vcp + m.k_vc
    mean, sd = rs.normal(0, 0.3, k), np.exp(rs.normal(-1, 0.2, k))
    split = lambda v: (v[:2], v[2:3], v[3:])  # noqa: E731
    (fe_m, _, vc_m), (fe_s, _, vc_s) = split(mean), split(sd)
    tm, tv = r._lp_stats(fe_m, fe_s, vc_m, vc_s)
    if cls == "Binomial":
        h = lambda z: -np.log1p(np.exp(tm + np.sqrt(tv) * z))  # noqa: E731
        dh = lambda z: -1 / (1 + np.exp(-(tm + np.sqrt(tv) * z)))  # noqa: E731
    else:
        h = dh = lambda z: -np.exp(tm + np.sqrt(tv) * z)  # noqa: E731
    args = (*split(mean), *split(sd))
    np.testing.assert_allclose(m.vb_elbo_base(h, tm, *args), r.vb_elbo_base(h, tm, *args),
                               rtol=1e-10)
    g_ours = m.vb_elbo_grad_base(dh, tm, tv, *args)
    g_theirs = r.vb_elbo_grad_base(dh, tm, tv, *args)
    for a, b in zip(g_ours, g_theirs):
        np.testing.assert_allclose(a, b, rtol=1e-8, atol=1e-10)
    # and they are the pieces of the model's own ELBO (statsmodels' rule, statsmodels' h)
    np.testing.assert_allclose(m.vb_elbo_base(h, tm, *args), r.vb_elbo(mean, sd), rtol=1e-10)


def test_summary_as_latex_and_scipy_minim_opts():
    """statsmodels' ``summary().as_latex()``; scipy's own ``minim_opts`` (``disp``) are
    ignored with a warning, an unknown key is still an error."""
    from bayesglmm import datasets
    from bayesglmm.exceptions import IgnoredArgumentWarning

    m = BinomialBayesMixedGLM.from_formula("incidence ~ C(period)", {"herd": "0 + C(herd)"},
                                           datasets.load("cbpp"), n_trials="size")
    r = m.fit_vb(rng=0)
    tex = r.summary().as_latex()
    assert tex.count(r"\begin{tabular}") == len(r.summary().tables)
    assert "C(period)[T.2] & M & " in tex and f"{r.fe_mean[1]:.4f}" in tex
    with pytest.warns(IgnoredArgumentWarning, match="'disp'"):
        r2 = m.fit_map(minim_opts={"disp": False})
    np.testing.assert_allclose(r2.fe_mean, m.fit_map().fe_mean)
    with pytest.raises(ValueError, match="unknown minim_opts"):
        m.fit_map(minim_opts={"maxitr": 5})
