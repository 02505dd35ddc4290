"""A catalogue of bad and degenerate inputs: each gives a bayesglmm error of the exact class with
a message naming the argument or column, or finite numbers with the expected warning — never
silent garbage, never an error from inside the library (issue 12).

Each case is ``(id, call, expectation)``; ``call`` receives the shared fixtures (:class:`Ctx`).
``Raises(cls, fragment)``: ``cls`` exactly (not a subclass) and ``fragment`` in the message.
``Warns(cls, check)``: the call returns, a ``cls`` warning was issued (None: no bayesglmm
warning) and ``check(result)`` holds (finite numbers, NaN only where announced).
"""

from __future__ import annotations

import pickle
import warnings
from typing import Callable, NamedTuple

import numpy as np
import pandas as pd
import pytest

from bayesglmm import BinomialBayesMixedGLM as Bin
from bayesglmm import MixedLM, datasets, mixedlm
from bayesglmm import PoissonBayesMixedGLM as Poi
from bayesglmm.budgets import DENSE_VC_MAX, check_integrate, check_laplace
from bayesglmm.exceptions import (BoundaryWarning, ConvergenceWarning, RankDeficientWarning,
                                  SingularFitWarning)
from tests.helpers import assert_reproduced

VC = {"herd": "0 + C(herd)"}


class Raises(NamedTuple):
    cls: type
    fragment: str


class Warns(NamedTuple):
    cls: type | None
    check: Callable


class Ctx(NamedTuple):
    cb: pd.DataFrame  # cbpp with a binary y, a covariate x and a count c
    ss: pd.DataFrame  # sleepstudy
    arr: tuple  # (y, X, Z, ident) arrays of cbpp


@pytest.fixture(scope="module")
def ctx():
    cb = datasets.load("cbpp")
    cb = cb.assign(y=(cb.incidence > 0).astype(float), c=cb.incidence.astype(float),
                   x=np.linspace(-1, 1, len(cb)))
    Z = pd.get_dummies(cb.herd).to_numpy(float)
    arr = (cb.y.to_numpy(), np.column_stack([np.ones(len(cb)), cb.x]), Z,
           np.zeros(Z.shape[1], int))
    return Ctx(cb, datasets.load("sleepstudy"), arr)


def _bfit(c):
    return Bin.from_formula("y ~ x", VC, c.cb)


def _pfit(c):
    return Poi.from_formula("c ~ x", VC, c.cb)


def _finite(r):
    assert np.all(np.isfinite(np.asarray(r.params, float)))
    return True


def _finite_but(*names):
    """Finite params except the named fixed effects, which are NaN (dropped columns)."""
    def check(r):
        p = pd.Series(np.asarray(r.params), index=r.model.names)
        assert p[list(names)].isna().all()
        assert np.isfinite(p.drop(list(names))).all()
        assert not r.converged or np.isnan(r.fe_sd[[r.model.fep_names.index(n)
                                                    for n in names]]).all()
        return True
    return check


def _not_converged(r):
    assert not r.converged
    return True


def _nan_rows(rows):
    def check(pred):
        pred = np.asarray(pred)
        assert np.isnan(pred[rows]).all()
        assert np.isfinite(np.delete(pred, rows)).all()
        return True
    return check


def _with_nan(df, col, rows=(0,)):
    df = df.copy()
    df[col] = df[col].astype(float)
    df.loc[list(rows), col] = np.nan
    return df


def _with(df, col, rows, value):
    df = df.copy()
    df[col] = df[col].astype(float)
    df.loc[list(rows), col] = value
    return df


def _many_vc(c):
    """A Poisson model with 13 variance components (beyond the integration design's 12)."""
    df = c.cb.assign(**{f"g{k}": (np.arange(len(c.cb)) // (k + 2)).astype(str)
                        for k in range(13)})
    return Poi.from_formula("c ~ x", {f"g{k}": f"0 + C(g{k})" for k in range(13)}, df)


def _crossed_large():
    """Two crossed factors, 9100 random effects: too many for fit_laplace's dense block."""
    i = np.arange(9000)
    df = pd.DataFrame({"y": i % 3, "a": (i % 4500).astype(str), "b": (i * 7 % 4600).astype(str)})
    return Poi.from_formula("y ~ 1", {"a": "0 + C(a)", "b": "0 + C(b)"}, df)


def _glmm_cases():
    y_b = lambda c: c.arr[0]  # noqa: E731
    X = lambda c: c.arr[1]  # noqa: E731
    Z = lambda c: c.arr[2]  # noqa: E731
    idn = lambda c: c.arr[3]  # noqa: E731
    yc = lambda c: c.cb.c.to_numpy()  # noqa: E731
    E = ValueError
    return [
        # ---------------------------------------------------------------- constructors
        ("bin-empty", lambda c: Bin(np.zeros(0), np.zeros((0, 1))), Raises(E, "endog is empty")),
        ("poi-empty", lambda c: Poi([], None), Raises(E, "endog is empty")),
        ("bin-endog-text", lambda c: Bin(["a", "b"], np.ones((2, 1))),
         Raises(E, "endog must be numeric")),
        ("poi-exog-text", lambda c: Poi(yc(c), np.array([["a"]] * len(c.cb))),
         Raises(E, "exog must be numeric")),
        ("bin-exog-length", lambda c: Bin(y_b(c), X(c)[:-1]),
         Raises(E, "exog has 55 rows but endog has 56")),
        ("poi-offset-length", lambda c: Poi(yc(c), X(c), Z(c), idn(c), offset=np.zeros(3)),
         Raises(E, "offset has 3 rows")),
        ("bin-endog-nan", lambda c: Bin(np.r_[np.nan, y_b(c)[1:]], X(c)),
         Raises(E, "endog contains 1 non-finite value(s) (NaN at 0)")),
        ("poi-exog-inf", lambda c: Poi(yc(c), np.r_[X(c)[:1] * np.inf, X(c)[1:]]),
         Raises(E, "exog contains 2 non-finite value(s) (inf")),
        ("bin-non-binary", lambda c: Bin(yc(c), X(c), Z(c), idn(c)), Raises(E, "must be 0/1")),
        ("bin-all-zero-response", lambda c: Bin(np.zeros(len(c.cb)), X(c), Z(c), idn(c)),
         Raises(E, "both 0 and 1")),
        ("poi-negative", lambda c: Poi(-yc(c) - 1, X(c)), Raises(E, "non-negative counts")),
        ("poi-fractional", lambda c: Poi(yc(c) + 0.5, X(c)), Raises(E, "integer counts")),
        ("bin-vcp_p-text", lambda c: Bin(y_b(c), X(c), Z(c), idn(c), vcp_p="1"),
         Raises(TypeError, "vcp_p must be a number, got '1'")),
        ("poi-fe_p-negative", lambda c: Poi(yc(c), X(c), Z(c), idn(c), fe_p=-1),
         Raises(E, "fe_p must be a positive number")),
        ("bin-ident-float", lambda c: Bin(y_b(c), X(c), Z(c), idn(c) * 1.0),
         Raises(E, "ident must have an integer dtype")),
        ("bin-ident-gap", lambda c: Bin(y_b(c), X(c), Z(c), np.r_[idn(c)[:-1], 2]),
         Raises(E, "ident never uses variance component(s) 1")),
        ("poi-ident-length", lambda c: Poi(yc(c), X(c), Z(c), idn(c)[:-1]),
         Raises(E, "ident has length 14 but exog_vc has 15 columns")),
        ("bin-weights-all-zero", lambda c: Bin(y_b(c), X(c), Z(c), idn(c),
                                               freq_weights=np.zeros(len(c.cb))),
         Raises(E, "freq_weights are all zero")),
        ("poi-weights-negative", lambda c: Poi(yc(c), X(c), freq_weights=-np.ones(len(c.cb))),
         Raises(E, "freq_weights must be non-negative")),
        ("bin-trials-zero", lambda c: Bin(y_b(c), X(c), n_trials=np.zeros(len(c.cb))),
         Raises(E, "n_trials must be positive integers")),
        ("poi-exposure-zero", lambda c: Poi(yc(c), X(c), exposure=np.zeros(len(c.cb))),
         Raises(E, "exposure must be positive")),
        ("bin-exposure", lambda c: Bin(y_b(c), X(c), exposure=np.ones(len(c.cb))),
         Raises(E, "Poisson family only")),
        ("bin-vc-all-zero", lambda c: Bin(y_b(c), X(c), np.zeros_like(Z(c)), idn(c)),
         Raises(E, "'VC_1' has an all-zero design")),
        ("poi-fep_names", lambda c: Poi(yc(c), X(c), fep_names=["a"]),
         Raises(E, "fep_names has 1 names but exog has 2 columns")),
        ("bin-exog_vc-length", lambda c: Bin(y_b(c), X(c), Z(c)[:-1], idn(c)),
         Raises(E, "exog_vc has 55 rows")),
        # ---------------------------------------------------------------- from_formula
        ("bin-unknown-column", lambda c: Bin.from_formula("y ~ X", VC, c.cb),
         Raises(E, "'X' (did you mean 'x'?)")),
        ("poi-unknown-group", lambda c: Poi.from_formula("c ~ x", {"h": "0 + C(Herd)"}, c.cb),
         Raises(E, "did you mean 'herd'")),
        ("poi-nan-column", lambda c: Poi.from_formula("c ~ x", VC, _with_nan(c.cb, "x")),
         Raises(E, "column 'x' has 1 missing value(s)")),
        ("bin-inf-column", lambda c: Bin.from_formula("y ~ x", VC, _with(c.cb, "x", [3], np.inf)),
         Raises(E, "column 'x' has infinite value(s)")),
        ("bin-log-zero", lambda c: Bin.from_formula("y ~ np.log(incidence)", VC, c.cb),
         Raises(E, "term 'np.log(incidence)' of 'y ~ np.log(incidence)' has 22 non-finite")),
        ("bin-empty-frame", lambda c: Bin.from_formula("y ~ x", VC, c.cb.iloc[:0]),
         Raises(E, "data has no rows")),
        ("poi-drop-everything", lambda c: Poi.from_formula(
            "c ~ x", VC, c.cb.assign(x=np.nan), missing="drop"),
         Raises(E, "dropped every row")),
        ("bin-text-response", lambda c: Bin.from_formula("herd ~ x", VC, c.cb),
         Raises(E, "the response 'herd' of 'herd ~ x' is a text column")),
        ("poi-text-response", lambda c: Poi.from_formula("period ~ x", VC, c.cb),
         Raises(E, "'period' of 'period ~ x' is a text column")),
        ("bin-formula-non-binary", lambda c: Bin.from_formula("incidence ~ x", VC, c.cb),
         Raises(E, "must be 0/1")),
        ("poi-formula-negative", lambda c: Poi.from_formula("c ~ x", VC, c.cb.assign(c=-c.cb.c)),
         Raises(E, "non-negative counts")),
        ("bin-data-dict", lambda c: Bin.from_formula("y ~ x", VC, {"y": [0, 1]}),
         Raises(E, "data must be a pandas DataFrame")),
        ("bin-vc-slope-zero", lambda c: Bin.from_formula(
            "y ~ x", {"herd": "0 + C(herd):z"}, c.cb.assign(z=0.0)),
         Raises(E, "covariate 'z' of the term on 'herd'")),
        ("bin-correlated-zero-slope", lambda c: Bin.from_formula(
            "y ~ x + (1 + z | herd)", {}, c.cb.assign(z=0.0)),
         Raises(E, "covariate 'z' of the term on 'herd'")),
        ("poi-missing-bogus", lambda c: Poi.from_formula("c ~ x", VC, c.cb, missing="keep"),
         Raises(E, "missing must be 'none', 'raise' or 'drop'")),
        ("poi-formula-not-text", lambda c: Poi.from_formula(3, VC, c.cb),
         Raises(TypeError, "formula must be a string")),
        ("poi-unparsable", lambda c: Poi.from_formula("c ~ x + * x", VC, c.cb),
         Raises(E, "cannot parse formula")),
        ("poi-n_trials", lambda c: Poi.from_formula("c ~ x", VC, c.cb, n_trials="size"),
         Raises(E, "binomial family only")),
        ("bin-n_trials-name", lambda c: Bin.from_formula("incidence ~ x", VC, c.cb,
                                                         n_trials="Size"),
         Raises(E, "did you mean 'size'")),
        # ---------------------------------------------------------------- fit arguments
        ("bin-map-maxiter-text", lambda c: _bfit(c).fit_map(minim_opts={"maxiter": "ten"}),
         Raises(TypeError, "minim_opts['maxiter'] must be an integer, got 'ten'")),
        ("poi-vb-gtol-negative", lambda c: _pfit(c).fit_vb(minim_opts={"gtol": -1}),
         Raises(E, "minim_opts['gtol'] must be a non-negative number")),
        ("bin-laplace-opts-list", lambda c: _bfit(c).fit_laplace(minim_opts=[1]),
         Raises(TypeError, "minim_opts must be a dict")),
        ("poi-map-unknown-opt", lambda c: _pfit(c).fit_map(minim_opts={"tol": 1}),
         Raises(E, "unknown minim_opts")),
        ("poi-vb-scale_fe-text", lambda c: _pfit(c).fit_vb(scale_fe="yes"),
         Raises(TypeError, "scale_fe must be True or False")),
        ("bin-map-method", lambda c: _bfit(c).fit_map(method="simplex"),
         Raises(E, "unknown method 'simplex'")),
        ("bin-vb-mean-nan", lambda c: _bfit(c).fit_vb(mean=np.full(18, np.nan)),
         Raises(E, "mean contains 18 non-finite value(s)")),
        ("poi-vb-sd-negative", lambda c: _pfit(c).fit_vb(sd=-np.ones(18)),
         Raises(E, "sd must be positive")),
        ("bin-vb-mean-length", lambda c: _bfit(c).fit_vb(mean=np.zeros(3)),
         Raises(E, "mean has incorrect length, 3 != 18")),
        ("bin-laplace-start-nan", lambda c: _bfit(c).fit_laplace(start=[np.nan, 0, 0]),
         Raises(E, "start contains 1 non-finite value(s)")),
        ("poi-laplace-start-length", lambda c: _pfit(c).fit_laplace(start=[0, 0]),
         Raises(E, "start must have 3 values")),
        ("bin-laplace-priors-text", lambda c: _bfit(c).fit_laplace(priors="no"),
         Raises(TypeError, "priors must be True or False")),
        ("poi-integrate-no-priors", lambda c: _pfit(c).fit_laplace(priors=False, integrate=True),
         Raises(E, "integrate=True needs priors=True")),
        ("bin-laplace-no-re", lambda c: Bin(y_b(c), X(c)).fit_laplace(priors=False),
         Raises(E, "the model has none")),
        ("poi-integrate-no-re", lambda c: Poi(yc(c), X(c)).fit_laplace(integrate=True),
         Raises(E, "the model has none")),
        ("poi-laplace-too-large", lambda c: _crossed_large().fit_laplace(),
         Raises(E, "forms a dense 9100×9100 block of the Hessian of the random effects")),
        ("poi-integrate-budget", lambda c: _many_vc(c).fit_laplace(integrate=True),
         Raises(E, "13 variance parameters")),
        # ---------------------------------------------------------------- rank deficiency
        # the Bayesian fits keep aliased columns (the prior identifies them, as statsmodels)
        ("bin-map-collinear", lambda c: Bin.from_formula(
            "y ~ x + z", VC, c.cb.assign(z=2 * c.cb.x)).fit_map(),
         Warns(RankDeficientWarning, _finite)),
        ("poi-vb-zero-column", lambda c: Poi.from_formula(
            "c ~ x + z", VC, c.cb.assign(z=0.0)).fit_vb(),
         Warns(RankDeficientWarning, _finite)),
        ("bin-laplace-collinear-dropped", lambda c: Bin.from_formula(
            "y ~ x + z", VC, c.cb.assign(z=2 * c.cb.x)).fit_laplace(priors=False),
         Warns(RankDeficientWarning, _finite_but("z"))),
        ("poi-laplace-zero-column-dropped", lambda c: Poi.from_formula(
            "c ~ x + z", VC, c.cb.assign(z=0.0)).fit_laplace(priors=False),
         Warns(RankDeficientWarning, _finite_but("z"))),
        # ---------------------------------------------------------------- boundaries
        ("poi-laplace-all-zero-response", lambda c: Poi.from_formula(
            "c ~ x", VC, c.cb.assign(c=0.0)).fit_laplace(priors=False),
         Warns(BoundaryWarning, _not_converged)),
        ("bin-laplace-separation", lambda c: Bin.from_formula(
            "y ~ x", VC, c.cb.assign(y=(c.cb.x > 0).astype(float))).fit_laplace(priors=False),
         Warns(BoundaryWarning, _not_converged)),
        ("bin-laplace-single-level", lambda c: Bin.from_formula(
            "y ~ x", VC, c.cb.assign(herd="1")).fit_laplace(priors=False),
         Warns(SingularFitWarning, lambda r: np.all(np.isfinite(r.fe_mean)))),
        ("poi-map-single-level", lambda c: Poi.from_formula(
            "c ~ x", VC, c.cb.assign(herd="1")).fit_map(), Warns(None, _finite)),
        ("bin-map-maxiter-budget", lambda c: _bfit(c).fit_map(minim_opts={"maxiter": 1}),
         Warns(ConvergenceWarning, _not_converged)),
        ("poi-laplace-maxiter-budget", lambda c: _pfit(c).fit_laplace(minim_opts={"maxiter": 1}),
         Warns(ConvergenceWarning, _not_converged)),
        # ---------------------------------------------------------------- predict
        ("bin-predict-narrow", lambda c: _bfit(c).fit_map().predict(np.ones((3, 1))),
         Raises(E, "exog has 1 column(s) but the model has 2 fixed effect(s) (Intercept, x)")),
        ("poi-predict-wide", lambda c: _pfit(c).fit_map().predict(np.ones((3, 5))),
         Raises(E, "exog has 5 column(s)")),
        ("bin-model-predict-narrow", lambda c: _bfit(c).predict(np.zeros(18), np.ones((3, 1))),
         Raises(E, "exog has 1 column(s)")),
        ("poi-predict-nan-offset", lambda c: _pfit(c).fit_map().predict(
            c.cb, offset=np.full(len(c.cb), np.nan)),
         Raises(E, "offset contains 56 non-finite value(s)")),
        ("poi-predict-offset-length", lambda c: _pfit(c).fit_map().predict(
            c.cb, offset=np.zeros(3)), Raises(E, "offset has 3 rows but the new data has 56")),
        ("bin-predict-nan-covariate", lambda c: _bfit(c).fit_map().predict(
            _with_nan(c.cb, "x", [0, 5])), Warns(UserWarning, _nan_rows([0, 5]))),
        ("poi-predict-nan-array", lambda c: _pfit(c).fit_map().predict(
            np.array([[1.0, np.nan], [1.0, 0.5]])), Warns(UserWarning, _nan_rows([0]))),
        ("bin-predict-unseen", lambda c: _bfit(c).fit_map().predict(
            c.cb.assign(herd="99"), unseen="raise"), Raises(E, "not seen in fitting")),
        ("poi-predict-missing-column", lambda c: _pfit(c).fit_map().predict(
            c.cb.rename(columns={"x": "X"})), Raises(E, "did you mean 'X'")),
    ]


def _lmm_cases():
    E = ValueError
    fit = lambda c: mixedlm("Reaction ~ Days", c.ss, groups="Subject").fit()  # noqa: E731
    arrays = lambda c, **kw: MixedLM(  # noqa: E731
        c.ss.Reaction.to_numpy(), np.column_stack([np.ones(len(c.ss)), c.ss.Days]),
        c.ss.Subject.to_numpy(), **kw)
    return [
        ("lmm-unknown-column", lambda c: mixedlm("Reaction ~ days", c.ss, groups="Subject"),
         Raises(E, "'days' (did you mean 'Days'?)")),
        ("lmm-nan-column", lambda c: mixedlm("Reaction ~ Days", _with_nan(c.ss, "Days"),
                                             groups="Subject"),
         Raises(E, "column 'Days' has 1 missing value(s)")),
        ("lmm-inf-column", lambda c: mixedlm("Reaction ~ Days", _with(c.ss, "Days", [2], np.inf),
                                             groups="Subject"),
         Raises(E, "column 'Days' has infinite value(s)")),
        ("lmm-log-zero-response", lambda c: mixedlm("np.log(Days) ~ 1", c.ss, groups="Subject"),
         Raises(E, "term 'np.log(Days)' of 'np.log(Days) ~ 1' has 18 non-finite value(s)")),
        ("lmm-log-zero-slope", lambda c: mixedlm("Reaction ~ 1 + (np.log(Days) | Subject)", c.ss),
         Raises(E, "covariate 'np.log(Days)' of the term on 'Subject' has non-finite")),
        ("lmm-empty-frame", lambda c: mixedlm("Reaction ~ Days", c.ss.iloc[:0], groups="Subject"),
         Raises(E, "data has no rows")),
        ("lmm-text-response", lambda c: mixedlm("Subject ~ Days", c.ss, groups="Subject"),
         Raises(E, "'Subject' of 'Subject ~ Days' is a text column")),
        ("lmm-constant-response", lambda c: mixedlm("Reaction ~ Days", c.ss.assign(Reaction=1.0),
                                                    groups="Subject"),
         Raises(E, "endog is constant")),
        ("lmm-exact-response", lambda c: mixedlm("Reaction ~ Days", c.ss.assign(
            Reaction=2.0 * c.ss.Days), groups="Subject"),
         Raises(E, "fitted exactly by the fixed effects")),
        ("lmm-single-level", lambda c: mixedlm("Reaction ~ Days", c.ss.assign(Subject="a"),
                                               groups="Subject"),
         Raises(E, "has only 1 level")),
        ("lmm-zero-slope", lambda c: mixedlm("Reaction ~ Days", c.ss.assign(z=0.0),
                                             groups="Subject", re_formula="~z"),
         Raises(E, "covariate 'z' of the term on 'Subject'")),
        ("lmm-zero-slope-correlated", lambda c: mixedlm("Reaction ~ Days + (1 + z | Subject)",
                                                        c.ss.assign(z=0.0)),
         Raises(E, "covariate 'z' of the term on 'Subject'")),
        ("lmm-arrays-zero-slope", lambda c: arrays(c, exog_re=np.column_stack(
            [np.ones(len(c.ss)), np.zeros(len(c.ss))])),
         Raises(E, "of the term on 'Group' (Group) is zero in every row")),
        ("lmm-arrays-vc-zero", lambda c: arrays(c, exog_vc={"a": np.zeros((len(c.ss), 2))}),
         Raises(E, "variance component 'a' is zero in every row")),
        ("lmm-formula-not-text", lambda c: mixedlm(None, c.ss, groups="Subject"),
         Raises(TypeError, "formula must be a string")),
        ("lmm-arrays-groups-length", lambda c: MixedLM(c.ss.Reaction, np.ones((len(c.ss), 1)),
                                                       np.zeros(5)),
         Raises(E, "groups must be one-dimensional with 180 values")),
        ("lmm-collinear", lambda c: mixedlm("Reaction ~ Days + z", c.ss.assign(z=3 * c.ss.Days),
                                            groups="Subject"),
         Raises(E, "'z' is a linear combination")),
        ("lmm-reml-text", lambda c: mixedlm("Reaction ~ Days", c.ss, groups="Subject").fit(
            reml="yes"), Raises(TypeError, "reml must be True or False, got 'yes'")),
        ("lmm-maxiter-text", lambda c: mixedlm("Reaction ~ Days", c.ss, groups="Subject").fit(
            maxiter="ten"), Raises(TypeError, "maxiter must be an integer, got 'ten'")),
        ("lmm-maxiter-zero", lambda c: mixedlm("Reaction ~ Days", c.ss, groups="Subject").fit(
            maxiter=0), Raises(E, "maxiter must be at least 1")),
        ("lmm-start-nan", lambda c: mixedlm("Reaction ~ Days", c.ss, groups="Subject").fit(
            start_params=[np.nan]), Raises(E, "start_params contains 1 non-finite value(s)")),
        ("lmm-start-length", lambda c: mixedlm("Reaction ~ Days", c.ss, groups="Subject").fit(
            start_params=[1.0, 2.0]), Raises(E, "start_params must have 1 values")),
        ("lmm-method", lambda c: mixedlm("Reaction ~ Days", c.ss, groups="Subject").fit(
            method="simplex"), Raises(E, "method must be")),
        ("lmm-predict-narrow", lambda c: fit(c).predict(np.ones((3, 1))),
         Raises(E, "exog has 1 column(s) but the model has 2 fixed effect(s) (Intercept, Days)")),
        ("lmm-predict-wide", lambda c: fit(c).predict(np.ones((3, 5))),
         Raises(E, "exog has 5 column(s)")),
        ("lmm-predict-text", lambda c: fit(c).predict([["a", "b"]]),
         Raises(E, "exog must be numeric")),
        ("lmm-predict-nan-frame", lambda c: fit(c).predict(_with_nan(c.ss, "Days", [0, 7])),
         Warns(UserWarning, _nan_rows([0, 7]))),
        ("lmm-predict-nan-array", lambda c: fit(c).predict(np.array([[1.0, np.nan], [1, 2]])),
         Warns(UserWarning, _nan_rows([0]))),
        ("lmm-maxiter-budget", lambda c: mixedlm("Reaction ~ Days", c.ss, groups="Subject",
                                                 re_formula="~Days").fit(maxiter=1),
         Warns(ConvergenceWarning, _not_converged)),
    ]


CASES = _glmm_cases() + _lmm_cases()
SLOW = {"bin-laplace-separation"}  # over ~8 s: the fixed effect drifts for many Newton steps


def test_catalogue_size():
    """At least 60 cases, over both GLMM families, the LMM, every fit and predict."""
    ids = [c[0] for c in CASES]
    assert len(ids) >= 60 and len(set(ids)) == len(ids)
    for key in ("bin-", "poi-", "lmm-", "map", "vb", "laplace", "integrate", "predict"):
        assert any(key in i for i in ids), key


@pytest.mark.parametrize("case", [pytest.param(c, marks=pytest.mark.slow) if c[0] in SLOW else c
                                  for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input(ctx, case):
    _, call, expect = case
    if isinstance(expect, Raises):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with pytest.raises(Exception) as info:
                call(ctx)
        assert type(info.value) is expect.cls, f"{type(info.value).__name__}: {info.value}"
        assert expect.fragment in str(info.value), str(info.value)
        return
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        out = call(ctx)
    kinds = [type(w.message) for w in rec]
    assert RuntimeWarning not in kinds, [str(w.message) for w in rec]  # no numpy NaN noise
    if expect.cls is None:
        assert not [k for k in kinds if k.__module__.startswith("bayesglmm")], kinds
    else:
        assert expect.cls in kinds, [str(w.message) for w in rec]
    assert expect.check(out)


# -------------------------------------------------------------------- pickling
def _numbers(r) -> np.ndarray:
    """A result's estimates: the GLMM's params; the LMM's llf, scale and variances."""
    if isinstance(r.model, MixedLM):
        return np.r_[r.llf, r.scale, np.asarray(r.vcomp, float).ravel()]
    return np.asarray(r.params)


def _refit_equal(model, fit):
    a = fit(model)
    b = fit(pickle.loads(pickle.dumps(model)))
    assert_reproduced(_numbers(a), _numbers(b))
    return a


@pytest.mark.parametrize("family", [Bin, Poi])
def test_glmm_models_and_results_pickle(ctx, family):
    y = "y" if family is Bin else "c"
    model = family.from_formula(f"{y} ~ x", VC, ctx.cb)
    r = _refit_equal(model, lambda m: m.fit_map(rng=0))
    r2 = pickle.loads(pickle.dumps(r))
    np.testing.assert_array_equal(r2.params, r.params)
    np.testing.assert_array_equal(r2.predict(ctx.cb), r.predict(ctx.cb))
    arrays = family(*ctx.arr) if family is Bin else family(ctx.cb.c.to_numpy(), *ctx.arr[1:])
    _refit_equal(arrays, lambda m: m.fit_vb(rng=0))


def test_laplace_results_pickle(ctx):
    model = Poi.from_formula("c ~ x", VC, ctx.cb)
    r = _refit_equal(model, lambda m: m.fit_laplace(priors=False))
    r2 = pickle.loads(pickle.dumps(r))
    np.testing.assert_array_equal(r2.cov_params(), r.cov_params())


@pytest.mark.parametrize("formula, kw", [
    ("Reaction ~ Days", {"groups": "Subject", "re_formula": "~Days"}),
    ("Reaction ~ Days + (Days | Subject)", {}),
    ("Reaction ~ Days", {"groups": "Subject", "vc_formula": {"late": "0 + C(late)"}}),
])
def test_lmm_models_and_results_pickle(ctx, formula, kw):
    model = mixedlm(formula, ctx.ss.assign(late=ctx.ss.Days >= 5), **kw)
    r = _refit_equal(model, lambda m: m.fit())
    r2 = pickle.loads(pickle.dumps(r))
    np.testing.assert_array_equal(_numbers(r2), _numbers(r))
    new = ctx.ss.assign(late=ctx.ss.Days >= 5)
    np.testing.assert_array_equal(r2.predict(new, include_random=True),
                                  r.predict(new, include_random=True))


# -------------------------------------------------------------------- lme4's rank policy
def test_laplace_drops_aliased_columns_as_lme4(ctx):
    """fit_laplace(priors=False) with an aliased column z = 2x fits the model without it
    (lme4: "fixed-effect model matrix is rank deficient so dropping 1 column"): the other
    estimates equal those of y ~ x, z's are NaN under its name, and predictions ignore it."""
    df = ctx.cb.assign(z=2 * ctx.cb.x)
    with pytest.warns(RankDeficientWarning, match="dropping 1 column.*'z'"):
        full = Poi.from_formula("c ~ x + z", VC, df).fit_laplace(priors=False)
    ref = Poi.from_formula("c ~ x", VC, df).fit_laplace(priors=False)
    assert full.dropped == ["z"]
    fe = pd.Series(full.fe_mean, index=full.model.fep_names)
    assert np.isnan(fe["z"]) and np.isnan(np.asarray(full.cov_params())[2]).all()
    np.testing.assert_allclose(fe[["Intercept", "x"]], ref.fe_mean, rtol=1e-8)
    np.testing.assert_allclose(full.vcp_mean, ref.vcp_mean, rtol=1e-8)
    np.testing.assert_allclose(full.llf, ref.llf, rtol=1e-10)
    np.testing.assert_allclose(full.predict(df), ref.predict(df), rtol=1e-8)


def test_budget_estimates():
    """The cost estimates themselves: node counts, the node limit and the memory limit."""
    assert check_integrate(1, 10, 2, "diag") == 7
    assert check_integrate(2, 10, 2, "diag") == 25
    assert check_integrate(3, 10, 2, "diag") == 15  # the central composite design
    assert check_integrate(4, 10, 2, "dense") == 25
    assert check_integrate(7, 10, 2, "diag") == 79
    assert check_integrate(2, 10, 2, "diag", n_points=3) == 9  # a product grid
    with pytest.raises(ValueError, match="3125 nodes \\(at most 729\\)"):
        check_integrate(5, 10, 2, "diag", n_points=5)
    with pytest.raises(ValueError, match="13 variance parameters"):
        check_integrate(13, 10, 2, "diag")
    with pytest.raises(ValueError, match="GiB"):
        check_integrate(4, 30000, 2, "dense")
    with pytest.raises(ValueError, match="has no random effects"):
        check_integrate(0, 0, 2, "diag")
    check_laplace(DENSE_VC_MAX + 1, "diag")  # independent factors: no dense block
    with pytest.raises(ValueError, match="use fit_map\\(\\) or fit_vb\\(\\)"):
        check_laplace(DENSE_VC_MAX + 1, ("schur", 0, 10))
    # an observation-level component kept by rows: only the rest's block is dense
    check_laplace(DENSE_VC_MAX + 10, ("schur_obs", 0, 10))
    with pytest.raises(ValueError, match="dense 8001×8001 block"):
        check_laplace(DENSE_VC_MAX + 11, ("schur_obs", 0, 10))


def test_lmm_arrays_model_pickles(ctx):
    ss = ctx.ss
    model = MixedLM(ss.Reaction.to_numpy(), np.column_stack([np.ones(len(ss)), ss.Days]),
                    ss.Subject.to_numpy(), exog_re=np.column_stack([np.ones(len(ss)), ss.Days]))
    r = _refit_equal(model, lambda m: m.fit())
    np.testing.assert_array_equal(_numbers(pickle.loads(pickle.dumps(r))), _numbers(r))
