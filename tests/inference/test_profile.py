"""Profile-likelihood intervals against lme4's confint(method = "profile") (spline-interpolated)
and an exact root-find in R (tests/reference/lme4_profile_rootfind.R)."""

import json

import numpy as np
import pytest

from bayesglmm import datasets, mixedlm
from bayesglmm.inference.profile import profile_interval
from tests.helpers import REFERENCE

from .conftest import lme4_name


def compare(ci, ref, atol):
    names = [lme4_name(n) for n in ref["names"]]
    got = ci.loc[names].to_numpy()
    want = np.c_[ref["lower"], ref["upper"]]
    np.testing.assert_allclose(got, want, atol=atol, rtol=0)


@pytest.mark.slow
def test_sleepstudy_slope_profile(sleep_fits, ref):
    """REML fit → profiled on the ML deviance (lme4's rule): within 1e-4 of lme4's spline
    interpolation and 1e-6 of the exact root-find."""
    ci = sleep_fits["m1"].conf_int(method="profile")
    compare(ci, ref["profile_ci"]["sleep_slope"], atol=1e-4)
    exact = json.loads((REFERENCE / "lme4_profile_rootfind.json").read_text())["rootfind"]
    compare(ci, exact, atol=1e-6)


def test_sleepstudy_intercept_profile(sleep_fits, ref):
    ci = sleep_fits["m0"].conf_int(method="profile")
    compare(ci, ref["profile_ci"]["sleep_intercept"], atol=1e-4)


def test_cbpp_glmer_profile(cbpp_fits, ref):
    ci = cbpp_fits["g1"].conf_int(method="profile")
    compare(ci, ref["profile_ci"]["cbpp"], atol=1e-4)


def test_glmm_wald_and_bad_method(cbpp_fits):
    r = cbpp_fits["g1"]
    w = r.conf_int()
    np.testing.assert_allclose(w[0] + w[1], 2 * np.r_[r.fe_mean, r.vcp_mean])
    with pytest.raises(ValueError, match="method must be"):
        r.conf_int(method="spline")


def test_profile_interval_on_a_quadratic():
    """ζ(c) = (c − 1)/2 exactly: the interval is 1 ± 2z; a bound inside stops it."""
    lo, hi = profile_interval(lambda c: (c - 1.0) / 2.0, 1.0, 0.1, -np.inf, np.inf, 1.96)
    assert lo == pytest.approx(1 - 3.92, abs=1e-8) and hi == pytest.approx(1 + 3.92, abs=1e-8)
    lo, _ = profile_interval(lambda c: (c - 1.0) / 2.0, 1.0, 0.1, 0.0, np.inf, 1.96)
    assert lo == 0.0


def test_bad_alpha(sleep_fits):
    with pytest.raises(ValueError, match="alpha"):
        sleep_fits["m0"].conf_int(alpha=1.5, method="profile")


def test_factor_call_in_bar_gives_the_same_fit():
    """(1 | factor(g)) and (1 | C(g)) are (1 | g) (lme4 and patsy spellings)."""
    df = datasets.load("sleepstudy")
    base = mixedlm("Reaction ~ Days + (1 | Subject)", df).fit()
    for f in ("Reaction ~ Days + (1 | factor(Subject))", "Reaction ~ Days + (1 | C(Subject))"):
        r = mixedlm(f, df).fit()
        assert r.llf == pytest.approx(base.llf, abs=1e-9)
        np.testing.assert_allclose(r.fe_params, base.fe_params, rtol=1e-10)
