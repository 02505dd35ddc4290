"""bayesglmm.plot: rendered with the Agg backend, the axes' contents checked."""

import sys
import warnings

import numpy as np
import pytest
import scipy.stats

from bayesglmm import BinomialBayesMixedGLM, datasets, mixedlm
from bayesglmm import plot

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")
plt = pytest.importorskip("matplotlib.pyplot")


@pytest.fixture(autouse=True)
def _close():
    yield
    plt.close("all")


@pytest.fixture(scope="module")
def glmm():
    df = datasets.load("cbpp")
    m = BinomialBayesMixedGLM.from_formula("incidence ~ C(period)", {"herd": "0 + C(herd)"}, df,
                                           n_trials="size")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {"map": m.fit_map(), "vb": m.fit_vb(rng=0)}


@pytest.fixture(scope="module")
def sleep_fit():
    return mixedlm("Reaction ~ Days + (Days | Subject)", datasets.load("sleepstudy")).fit()


def _errorbar_data(ax, k=0):
    """(x, y, half widths) of the k-th errorbar container of ``ax``."""
    c = ax.containers[k]
    x, y = c.lines[0].get_data()
    seg = c.lines[2][0].get_segments()
    half = [(s[1, 0] - s[0, 0]) / 2 if np.shape(s) == (2, 2) else np.nan for s in seg]
    return np.asarray(x, float), np.asarray(y, float), np.array(half)


def test_caterpillar_glmm_sorted_with_intervals(glmm):
    r = glmm["vb"]
    (ax,) = r.plot_caterpillar(alpha=0.1)
    assert ax.get_title() == "herd"
    x, y, half = _errorbar_data(ax)
    re = r.random_effects("herd")
    order = np.argsort(re["Mean"].to_numpy(), kind="stable")
    np.testing.assert_allclose(x, re["Mean"].to_numpy()[order])
    np.testing.assert_allclose(half, scipy.stats.norm.ppf(0.95) * re["SD"].to_numpy()[order])
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels == [re.index[i].split("[")[1].rstrip("]") for i in order]  # "C(herd)[3]" -> "3"
    with pytest.raises(ValueError, match="unknown term 'cow'"):
        plot.caterpillar(r, "cow")


def test_caterpillar_lmm_intervals_are_lme4_condvar(sleep_fit):
    axes = sleep_fit.plot_caterpillar()
    assert [a.get_title() for a in axes] == ["Subject: Intercept", "Subject: Days"]
    # R: m <- lmer(Reaction ~ Days + (Days | Subject), sleepstudy)
    #    sqrt(attr(ranef(m, condVar = TRUE)$Subject, "postVar")[1, 1, 1])  -> 12.07086
    #    ... [2, 2, 1] -> 2.304839
    for ax, ref in zip(axes, [12.07086, 2.304839]):
        x, _, half = _errorbar_data(ax)
        np.testing.assert_allclose(half / scipy.stats.norm.ppf(0.975), ref, rtol=1e-4)
        assert np.all(np.diff(x) >= 0)
    blup = sleep_fit.random_effects_by_term["Subject"]
    np.testing.assert_allclose(np.sort(axes[1].containers[0].lines[0].get_xdata()),
                               np.sort(blup["Days"].to_numpy()))


def test_crossed_lmm_condvar_is_the_joint_one():
    r = mixedlm("diameter ~ 1 + (1 | plate) + (1 | sample)", datasets.load("penicillin")).fit()
    # R: m <- lmer(diameter ~ 1 + (1|plate) + (1|sample), Penicillin); r <- ranef(m, condVar=TRUE)
    #    sqrt(attr(r$plate, "postVar")[1,1,1]) -> 0.2713593; ... r$sample ... -> 0.2021707
    sds = {t: s[0] for t, _, _, s in plot.lmm_random_effects(r)}
    np.testing.assert_allclose([sds["plate"], sds["sample"]], [0.2713593, 0.2021707], rtol=1e-5)


def test_forest_compares_fits_side_by_side(glmm, sleep_fit):
    ax = glmm["map"].plot_forest(glmm["vb"], labels=["MAP", "VB"])
    names = list(glmm["map"].model.fep_names)
    assert [t.get_text() for t in ax.get_yticklabels()] == names
    assert len(ax.containers) == 2
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["MAP", "VB"]
    x0, y0, h0 = _errorbar_data(ax, 0)
    x1, y1, _ = _errorbar_data(ax, 1)
    np.testing.assert_allclose(x0, glmm["map"].fe_mean)
    np.testing.assert_allclose(x1, glmm["vb"].fe_mean)
    np.testing.assert_allclose(h0, 1.959964 * glmm["map"].fe_sd, rtol=1e-6)
    assert np.all(y0 > y1) and np.all(np.diff(y0) < 0)  # first fit above, first name on top
    # fits of different models: parameters matched by name, a subset in the order asked
    ax = plot.forest({"glmm": glmm["vb"], "lmm": sleep_fit}, params=["Days", "Intercept"])
    assert [t.get_text() for t in ax.get_yticklabels()] == ["Days", "Intercept"]
    x_lmm, _, _ = _errorbar_data(ax, 1)
    np.testing.assert_allclose(x_lmm, sleep_fit.fe_params[["Days", "Intercept"]])
    assert np.isnan(_errorbar_data(ax, 0)[0][0])  # the GLMM has no "Days"


def test_fitted_and_residuals(glmm, sleep_fit):
    r = glmm["map"]
    ax1, ax2 = r.plot_fitted()
    fit, obs = ax1.collections[0].get_offsets().T
    m = r.model
    np.testing.assert_allclose(obs, m.endog / m.n_trials)
    np.testing.assert_allclose(fit, r.predict(include_random=True))
    _, res = ax2.collections[0].get_offsets().T
    np.testing.assert_allclose(res, (m.endog - m.n_trials * fit)
                               / np.sqrt(m.n_trials * fit * (1 - fit)))
    assert ax2.get_ylabel() == "Pearson residual"
    ax1, ax2 = plot.fitted(sleep_fit)
    fit, res = ax2.collections[0].get_offsets().T
    np.testing.assert_allclose(res * np.sqrt(sleep_fit.scale), sleep_fit.resid)
    np.testing.assert_allclose(fit, sleep_fit.fittedvalues)


def test_deviance_profile(sleep_fit):
    names = [n for n, _ in plot.theta_names(sleep_fit.model)]
    assert names == ["Subject: Intercept", "Subject: Days, Intercept", "Subject: Days"]
    prof = plot.profile_table(sleep_fit, "Subject: Days", n_points=6)
    fixed = plot.profile_table(sleep_fit, 2, grid=prof["theta"], reoptimise=False)
    k = int(np.argmin(np.abs(prof["theta"] - sleep_fit.theta[2])))
    assert prof["theta"][k] == sleep_fit.theta[2] and abs(prof["delta"][k]) < 1e-8
    assert prof["delta"].min() > -1e-6  # θ̂ is the optimum
    assert np.all(prof["delta"] <= fixed["delta"] + 1e-6)  # re-optimising can only lower it
    assert prof["theta"].iloc[0] == 0.0  # a diagonal entry starts at its bound
    ax = sleep_fit.plot_profile("Subject: Days", grid=prof["theta"])
    line = ax.get_lines()[0]
    np.testing.assert_allclose(line.get_ydata(), prof["delta"], atol=1e-6)
    assert ax.get_lines()[1].get_ydata()[0] == pytest.approx(scipy.stats.chi2.ppf(0.95, 1))
    assert "re-optimised" in ax.get_title()


def test_errors(glmm, monkeypatch):
    with pytest.raises(TypeError, match="MixedLM fit"):
        plot.profile_table(glmm["map"])
    with pytest.raises(ValueError, match="2 labels for 1 fits"):
        plot.forest(glmm["map"], labels=["a", "b"])
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    with pytest.raises(ImportError, match=r"bayesglmm\[plot\]"):
        plot.forest(glmm["map"])
