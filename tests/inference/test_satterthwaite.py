"""Satterthwaite t-tests against lmerTest 3.1-3 (tests/reference/lme4_inference.R)."""

import numpy as np
import pytest

from bayesglmm import datasets, mixedlm
from bayesglmm.inference import satterthwaite


def check(table, ref):
    np.testing.assert_allclose(table["Estimate"], ref["estimate"], rtol=1e-7)
    np.testing.assert_allclose(table["Std. Error"], ref["se"], rtol=1e-6)
    np.testing.assert_allclose(table["df"], ref["df"], atol=1e-3)  # the tolerance
    np.testing.assert_allclose(table["t value"], ref["t"], rtol=1e-6)
    np.testing.assert_allclose(table["Pr(>|t|)"], ref["p"], rtol=1e-4)


@pytest.mark.slow  # compiles the Hessian and Jacobian programs of two structures (~35 s)
def test_sleepstudy_reml(sleep_fits, ref):
    check(sleep_fits["m1"].ttest_satterthwaite(), ref["satterthwaite"]["sleep_slope_reml"])
    check(sleep_fits["m0"].ttest_satterthwaite(), ref["satterthwaite"]["sleep_intercept_reml"])


@pytest.mark.slow  # over ~8 s on CI's two cores (.ci/run runs it)
def test_sleepstudy_ml(ref):
    r = mixedlm("Reaction ~ Days + (Days | Subject)", datasets.load("sleepstudy")).fit(reml=False)
    check(r.ttest_satterthwaite(), ref["satterthwaite"]["sleep_slope_ml"])


@pytest.mark.slow  # over ~8 s on CI's two cores (.ci/run runs it)
def test_contrasts(sleep_fits):
    """A contrast that is one coefficient gives that coefficient's row; a sum is tested too."""
    r = sleep_fits["m0"]
    full = satterthwaite(r)
    one = satterthwaite(r, [[0.0, 1.0]])
    assert one["df"][0] == pytest.approx(full["df"][1], rel=1e-12)
    both = satterthwaite(r, [[1.0, 10.0]])
    assert both["estimate"][0] == pytest.approx(r.fe_params.iloc[0] + 10 * r.fe_params.iloc[1])
    assert full["df"][1] < both["df"][0] or both["df"][0] > 0
    with pytest.raises(ValueError, match="L must have 2 columns"):
        satterthwaite(r, [[1.0, 0.0, 0.0]])


@pytest.mark.slow  # over ~8 s on CI's two cores (.ci/run runs it)
def test_models_built_from_arrays(ref):
    """A MixedLM built from arrays (results hold arrays, not Series) gives the same table."""
    from bayesglmm import MixedLM

    df = datasets.load("sleepstudy")
    X = np.column_stack([np.ones(len(df)), df.Days.to_numpy()])
    r = MixedLM(df.Reaction.to_numpy(), X, df.Subject.to_numpy(), exog_re=X).fit(reml=False)
    assert isinstance(r.fe_params, np.ndarray)
    check(r.ttest_satterthwaite(), ref["satterthwaite"]["sleep_slope_ml"])
