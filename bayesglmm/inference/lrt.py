"""Likelihood-ratio tests between nested fits: ``compare_lr_test`` and lme4's ``anova`` table.

For nested models fitted by maximum likelihood to the same data, ``LR = 2 (ℓ_large − ℓ_small)``
is referred to χ² with ``Df = npar_large − npar_small`` degrees of freedom (Wilks).  As lme4's
``anova.merMod``: REML fits are first refitted by ML (the REML criteria of models with
different fixed effects are not comparable), with a :class:`RefitMLWarning` saying so;
``npar`` counts fixed effects, covariance parameters and (LMM) the residual variance; AIC and
BIC are ``−2ℓ + 2 npar`` and ``−2ℓ + npar log n``; ``Chisq`` is ``2 max(0, Δℓ)`` between
consecutive rows (sorted by ``npar``).

Mixed GLMs enter as ``fit_laplace(priors=False)`` results (lme4's ``glmer``, Laplace
log-likelihood ``llf``); the Bayesian fits (``fit_map``, ``fit_vb``, ``priors=True``) have no
likelihood to compare and are refused.  Near a variance on the boundary the χ² reference is
conservative (the null is on the edge of the parameter space), as lme4's documentation warns.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any  # Any: MixedLMResults or BayesMixedGLMResults

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["RefitMLWarning", "anova", "compare_lr_test"]


class RefitMLWarning(UserWarning):
    """A REML fit was refitted by maximum likelihood before a likelihood-ratio test."""


def _kind(res):
    """``"lmm"`` or ``"glmm"``; TypeError for anything else, ValueError for a Bayesian fit."""
    from ..results.glmm import BayesMixedGLMResults
    from ..results.lmm import MixedLMResults

    if isinstance(res, MixedLMResults):
        return "lmm"
    if isinstance(res, BayesMixedGLMResults):
        if not (str(res.method).startswith("laplace") and hasattr(res, "llf")
                and not getattr(res, "priors", True)):
            raise ValueError(
                "likelihood-ratio tests of a mixed GLM need a maximum-likelihood fit: "
                f"fit_laplace(priors=False) (lme4's glmer); got method={res.method!r}"
                + (" with priors" if getattr(res, "priors", False) else ""))
        return "glmm"
    raise TypeError("likelihood-ratio tests take MixedLMResults or fit_laplace(priors=False) "
                    f"results, got {type(res).__name__}")


def npar(res) -> int:
    """Number of estimated parameters (lme4's ``npar`` of ``anova``)."""
    if _kind(res) == "lmm":
        return int(res.k_params)  # fixed effects + θ + σ²
    return int(res.model.k_fep + res.model.k_vcp)


def _same_data(results, kind):
    """Every fit saw the same response (ValueError otherwise): nested models must share data."""
    ref = results[0].model
    for i, r in enumerate(results[1:], 2):
        m = r.model
        if m.nobs != ref.nobs:
            raise ValueError(
                f"models were not all fitted to the same size of dataset: model 1 has "
                f"{ref.nobs} observations, model {i} has {m.nobs}")
        if not np.array_equal(np.asarray(m.endog, float), np.asarray(ref.endog, float)):
            raise ValueError(f"models 1 and {i} have different responses (endog); "
                             "likelihood-ratio tests need nested models of the same data")
        if kind == "glmm":
            if type(m.family) is not type(ref.family):
                raise ValueError(f"models 1 and {i} have different families")
            t0 = None if ref.n_trials is None else np.asarray(ref.n_trials)
            t1 = None if m.n_trials is None else np.asarray(m.n_trials)
            if (t0 is None) != (t1 is None) or (t0 is not None and not np.array_equal(t0, t1)):
                raise ValueError(f"models 1 and {i} have different n_trials")


def _ml(results, refit):
    """The fits to compare: REML fits refitted by ML (lme4's rule) when ``refit``."""
    kinds = {_kind(r) for r in results}
    if len(kinds) > 1:
        raise TypeError("cannot compare a linear mixed model with a mixed GLM")
    kind = kinds.pop()
    _same_data(results, kind)
    if kind != "lmm" or not any(r.reml for r in results):
        return list(results)
    if not refit:
        if not all(r.reml for r in results):
            raise ValueError("cannot compare REML and ML fits; use refit=True")
        X0 = results[0].model.exog
        if any(r.model.exog.shape != X0.shape or not np.allclose(r.model.exog, X0)
               for r in results[1:]):
            raise ValueError("REML criteria of models with different fixed effects are not "
                             "comparable; use refit=True (lme4's default) or fit with reml=False")
        return list(results)
    warnings.warn("refitting model(s) with ML (instead of REML)", RefitMLWarning, stacklevel=3)
    return [r.model.fit(reml=False) if r.reml else r for r in results]


def compare_lr_test(small: Any, large: Any, refit: bool = True) -> tuple[float, float, int]:
    """Likelihood-ratio test of a model against a larger model that nests it.

    Parameters
    ----------
    small, large : MixedLMResults or BayesMixedGLMResults
        Fits of nested models to the same data; mixed GLMs by ``fit_laplace(priors=False)``.
    refit : bool
        Refit REML fits by maximum likelihood first (lme4's default; warns
        :class:`RefitMLWarning`).  With ``refit=False`` two REML fits may be compared only
        when their fixed effects are the same.

    Returns
    -------
    (lr_stat, p_value, df_diff) : (float, float, int)
        As statsmodels' ``compare_lr_test``: ``2 (ℓ_large − ℓ_small)``, its upper χ² tail
        probability with ``df_diff = npar_large − npar_small``.

    Examples
    --------
    >>> import bayesglmm
    >>> from bayesglmm import datasets, mixedlm
    >>> df = datasets.load("sleepstudy")
    >>> m0 = mixedlm("Reaction ~ Days + (1 | Subject)", df).fit(reml=False)
    >>> m1 = mixedlm("Reaction ~ Days + (Days | Subject)", df).fit(reml=False)
    >>> stat, p, k = bayesglmm.compare_lr_test(m0, m1)
    >>> round(stat, 2), k
    (42.14, 2)
    """
    from scipy.special import chdtrc  # the χ² upper tail, without importing scipy.stats

    small, large = _ml([small, large], refit)
    df_diff = npar(large) - npar(small)
    if df_diff <= 0:
        raise ValueError(f"the larger model must have more parameters: large has "
                         f"{npar(large)}, small has {npar(small)}")
    stat = 2.0 * (float(large.llf) - float(small.llf))
    return stat, float(chdtrc(df_diff, max(stat, 0.0))), int(df_diff)


def anova(*results: Any, names: Sequence[str] | None = None, refit: bool = True
          ) -> pd.DataFrame:
    """lme4's ``anova(m1, m2, ...)``: a table of nested fits with likelihood-ratio tests.

    Parameters
    ----------
    *results : MixedLMResults or BayesMixedGLMResults
        Two or more fits of nested models to the same data (mixed GLMs by
        ``fit_laplace(priors=False)``).
    names : list of str, optional
        Row labels (default ``model1``, ``model2``, ... in the order given).
    refit : bool
        Refit REML fits by ML first (lme4's default, with a :class:`RefitMLWarning`).

    Returns
    -------
    DataFrame
        One row per model sorted by ``npar``, columns ``npar, AIC, BIC, logLik, deviance,
        Chisq, Df, Pr(>Chisq)``; the test columns compare each row with the one above (NaN in
        the first row).

    Examples
    --------
    >>> from bayesglmm import anova, datasets, mixedlm
    >>> df = datasets.load("sleepstudy")
    >>> m0 = mixedlm("Reaction ~ Days + (1 | Subject)", df).fit(reml=False)
    >>> m1 = mixedlm("Reaction ~ Days + (Days | Subject)", df).fit(reml=False)
    >>> tab = anova(m0, m1)
    >>> tab["npar"].tolist(), round(float(tab["Chisq"].iloc[1]), 2)
    ([4, 6], 42.14)
    """
    import pandas as pd
    from scipy.special import chdtrc

    if len(results) < 2:
        raise ValueError("anova needs at least two fits to compare")
    if names is None:
        names = [f"model{i + 1}" for i in range(len(results))]
    elif len(names) != len(results):
        raise ValueError(f"names has {len(names)} labels for {len(results)} fits")
    fits = _ml(list(results), refit)
    k = np.array([npar(r) for r in fits])
    order = np.argsort(k, kind="stable")
    k = k[order]
    llf = np.array([float(fits[i].llf) for i in order])
    n = fits[0].model.nobs
    chisq = np.r_[np.nan, 2.0 * np.maximum(0.0, np.diff(llf))]
    dfc = np.r_[np.nan, np.diff(k)].astype(float)
    with np.errstate(invalid="ignore"):
        p = np.where(dfc > 0, chdtrc(np.where(dfc > 0, dfc, 1.0), np.nan_to_num(chisq)), np.nan)
    p[0] = np.nan
    return pd.DataFrame({
        "npar": k, "AIC": -2 * llf + 2 * k, "BIC": -2 * llf + k * np.log(n), "logLik": llf,
        "deviance": -2 * llf, "Chisq": chisq, "Df": dfc, "Pr(>Chisq)": p,
    }, index=[names[i] for i in order])
