"""Fits shared by the inference tests (module-scoped fits of sleepstudy and cbpp) and the lme4
figures of tests/reference/lme4_inference.json (tests/reference/lme4_inference.R)."""

import json
import warnings

import pytest

from bayesglmm import BinomialBayesMixedGLM, datasets, mixedlm
from tests.helpers import REFERENCE


@pytest.fixture(scope="session")
def ref():
    return json.loads((REFERENCE / "lme4_inference.json").read_text())


@pytest.fixture(scope="session")
def sleep_fits():
    """REML fits: m00 = 1 + (1|S), m0 = Days + (1|S), m1 = Days + (Days|S)."""
    df = datasets.load("sleepstudy")
    return {k: mixedlm(f, df).fit() for k, f in (
        ("m00", "Reaction ~ 1 + (1 | Subject)"), ("m0", "Reaction ~ Days + (1 | Subject)"),
        ("m1", "Reaction ~ Days + (Days | Subject)"))}


@pytest.fixture(scope="session")
def cbpp_fits():
    """lme4's glmer fits g0 = 1 + (1|herd), g1 = period + (1|herd) by fit_laplace(priors=False)."""
    df = datasets.load("cbpp")
    out = {}
    for k, f in (("g0", "incidence ~ 1"), ("g1", "incidence ~ C(period)")):
        m = BinomialBayesMixedGLM.from_formula(f, {"herd": "0 + C(herd)"}, df, n_trials="size")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out[k] = m.fit_laplace(priors=False)
    return out


def lme4_name(name):
    """Our row name for lme4's (oldNames = FALSE) name: "(Intercept)" → "Intercept", and
    cbpp's "periodK" → "C(period)[T.K]"."""
    name = name.replace("(Intercept)", "Intercept")
    if name.startswith("period"):
        return f"C(period)[T.{name[6:]}]"
    return name
