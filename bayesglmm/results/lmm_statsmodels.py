"""statsmodels' face of a linear mixed-model fit (mixed into :class:`~bayesglmm.MixedLMResults`).

As statsmodels' result wrappers: estimates are pandas objects when the model's data were
(a formula, or a DataFrame/Series ``endog``/``exog``), NumPy arrays otherwise, and
``fittedvalues``/``resid``/``predict()`` carry the data's row index.  ``params``, ``bse``,
``tvalues``, ``pvalues``, ``conf_int()`` and ``cov_params()`` cover the fixed effects and the
covariance parameters ψ (``cov_re / scale`` and ``vcomp / scale``), as statsmodels.
``cov_params()`` is block diagonal: ``σ̂²(XᵀV̂⁻¹X)⁻¹`` (lme4's ``vcov``) and the inverse
observed information of ψ.
"""

from __future__ import annotations

import functools
import os
import pickle
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, BinaryIO

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from .summary import Summary

if TYPE_CHECKING:
    from ..models.lmm_params import MixedLMParams
    from .lmm_tests import ContrastResults

__all__ = ["MixedLMSummary", "StatsmodelsResultsMixin"]


class MixedLMSummary(Summary):
    """statsmodels' layout: ``tables[0]`` the header (DataFrame), ``tables[1]`` the estimates;
    printed as :class:`~bayesglmm.results.summary.Summary` (the header once)."""

    def __init__(self, title, tab, notes, info_lines, info_pairs):
        super().__init__(title, tab, notes, info_lines=info_lines)
        info = pd.DataFrame([(k, v) for k, v in info_pairs if k], columns=["", " "])
        self.tables = [info, tab]

    def _printed(self, fn):
        full = self.tables
        self.tables = full[1:]
        try:
            return fn()
        finally:
            self.tables = full

    def as_text(self) -> str:
        return self._printed(super().as_text)

    def as_html(self) -> str:
        return self._printed(super().as_html)

    def __str__(self) -> str:
        return self.as_text()

    __repr__ = __str__


class StatsmodelsResultsMixin:
    """Public estimates, statsmodels' way (see the module docstring)."""

    # provided by MixedLMResults
    model: Any
    k_fe: int
    nobs: int
    scale: float
    _fe: np.ndarray
    _fe_s: pd.Series
    _bse_fe_s: pd.Series
    _params_s: pd.Series
    _bse_s: pd.Series
    _cov_fe: np.ndarray
    _cov_re_s: pd.DataFrame
    _bse_re: Callable[[], np.ndarray]

    if TYPE_CHECKING:  # read-only properties of MixedLMResults
        @property
        def vcomp(self) -> np.ndarray: ...

        @property
        def _fitted(self) -> np.ndarray: ...

        @property
        def _resid(self) -> np.ndarray: ...

    def _wrap(self, x):
        if getattr(self.model, "_is_pandas", True):
            return x
        return x.to_numpy() if hasattr(x, "to_numpy") else np.asarray(x)

    def _wrap_rows(self, values):
        """Per-row values: a Series on the data's row index, or an array."""
        if not getattr(self.model, "_is_pandas", True):
            return np.asarray(values)
        idx = self.model.design.row_index
        return pd.Series(values, index=idx if idx is not None and len(idx) == len(values)
                         else None)

    @property
    def _full_layout(self) -> bool:
        """statsmodels' full ``cov_re`` rows also for a diagonal block (a ``free`` fit)."""
        return bool(getattr(self.model, "_sm_full_layout", False))

    def _psi_full(self):
        """The covariance of ψ over ``_bse_re_names`` (zeros for the covariances a ``free``
        mask held at zero), or None where it could not be formed."""
        if callable(self._cov_psi):  # deferred by the fit (large models): one Hessian
            self._cov_psi = self._cov_psi()
        cov, n = self._cov_psi, len(self._bse_re_names)
        if cov is None:
            return None
        if self._full_layout and cov.shape[0] < n:
            real = np.array([not nm.endswith(" Cov") for nm in self._bse_re_names])
            if real.sum() != cov.shape[0]:
                return None
            full = np.zeros((n, n))
            full[np.ix_(real, real)] = cov
            cov = full
        return cov if cov.shape == (n, n) else None

    # ------------------------------------------------------------------ estimates
    @property
    def fe_params(self) -> pd.Series | np.ndarray:
        return self._wrap(self._fe_s)

    @property
    def bse_fe(self) -> pd.Series | np.ndarray:
        return self._wrap(self._bse_fe_s)

    @property
    def params(self) -> pd.Series | np.ndarray:
        return self._wrap(self._params_s)

    @property
    def bse(self) -> pd.Series | np.ndarray:
        return self._wrap(self._bse_s)

    @property
    def bse_re(self) -> pd.Series | np.ndarray:
        """Standard errors of the covariance parameters on the scale of ``cov_re``/``vcomp``:
        ``sqrt(scale) · bse[k_fe:]`` (statsmodels' ``bse_re``)."""
        return self._wrap(np.sqrt(self.scale) * self._bse_re())

    @property
    def tvalues(self) -> pd.Series | np.ndarray:
        """``params / bse``, fixed effects and covariance parameters (statsmodels)."""
        return self._wrap(self._params_s / self._bse_s)

    @property
    def pvalues(self) -> pd.Series | np.ndarray:
        """Two-sided normal p-values of :attr:`tvalues`."""
        from .._normal import ndtr

        t = (self._params_s / self._bse_s).to_numpy()
        return self._wrap(pd.Series(2 * ndtr(-np.abs(t)), index=self._params_s.index))

    def conf_int(self, alpha: float = 0.05, cols: Sequence[int] | None = None,
                 method: str = "wald") -> pd.DataFrame | np.ndarray:
        """Wald intervals (normal quantiles) of all parameters; rows ``cols`` if given."""
        from .._normal import ndtri

        if method != "wald":
            return self._conf_int_other(alpha, method)
        z = ndtri(1 - alpha / 2)
        p, se = self._params_s, self._bse_s
        ci = pd.DataFrame({0: p - z * se, 1: p + z * se})
        if cols is not None:
            ci = ci.iloc[list(cols)]
        return self._wrap(ci)

    def _conf_int_other(self, alpha, method):
        raise ValueError(f"method must be 'wald', got {method!r}")

    @functools.cached_property
    def _cov_all(self) -> pd.DataFrame:
        k = self.k_fe
        names = list(self._params_s.index)
        cov = np.full((len(names), len(names)), np.nan)
        cov[:k, :k] = self._cov_fe
        cov[:k, k:] = cov[k:, :k] = 0.0
        psi = self._psi_full()
        if psi is not None:
            cov[k:, k:] = psi
        return pd.DataFrame(cov, index=names, columns=names)

    def cov_params(self) -> pd.DataFrame | np.ndarray:
        """Covariance of all estimates (fixed effects, then ψ), block diagonal."""
        return self._wrap(self._cov_all)

    @property
    def sigma(self) -> float:
        """Residual standard deviation √scale (lme4's ``sigma()``)."""
        return float(np.sqrt(self.scale))

    @property
    def ngrps(self) -> dict:
        """Number of levels of each grouping factor (lme4's ``ngrps()``)."""
        return {t.group: int(t.n_levels) for t in self.model.design.terms}

    @property
    def normalized_cov_params(self) -> np.ndarray:
        """``cov_params() / scale`` as an array (statsmodels' LikelihoodModelResults)."""
        return self._cov_all.to_numpy(float) / self.scale

    @property
    def df_resid(self) -> int:
        """Residual degrees of freedom, rows less the rank of the fixed-effects design (as
        statsmodels' model; the F tests' denominator)."""
        return int(self.nobs - self.k_fe)

    @property
    def use_t(self) -> bool:
        """False: Wald tests and intervals use the normal reference (statsmodels' MixedLM)."""
        return False

    @property
    def k_constant(self) -> int:
        """1 when the fixed-effects design has a constant column, else 0."""
        X = self.model.design.X
        return int(bool(X.shape[1]) and bool(np.any(np.all(X == X[:1], axis=0))))

    @property
    def cov_re(self) -> pd.DataFrame | np.ndarray:
        return self._wrap(self._cov_re_s)

    @property
    def cov_re_unscaled(self) -> pd.DataFrame | np.ndarray:
        return self._wrap(self._cov_re_s / self.scale)

    @property
    def fittedvalues(self) -> pd.Series | np.ndarray:
        return self._wrap_rows(self._fitted)

    @property
    def resid(self) -> pd.Series | np.ndarray:
        return self._wrap_rows(self._resid)

    @property
    def k_re2(self) -> int:
        return self.model.k_re2

    @property
    def params_object(self) -> MixedLMParams:
        """The estimates as a :class:`~bayesglmm.models.lmm_params.MixedLMParams` (relative
        covariances), statsmodels' ``params_object``."""
        from ..models.lmm_params import MixedLMParams

        cov = self._cov_re_s.to_numpy() / self.scale if self.model.k_re else None
        return MixedLMParams.from_components(self._fe.copy(), cov_re=cov,
                                             vcomp=np.asarray(self.vcomp) / self.scale)

    # ------------------------------------------------------------------ random effects
    @functools.cached_property
    def random_effects_cov(self) -> dict:
        """``{group: DataFrame}``: conditional covariance of each group's random effects given
        the data, ``G − G Zᵀ(σ̂² I + Z G Zᵀ)⁻¹ Z G`` (statsmodels; β̂ taken as known)."""
        from .lmm_ranef import random_effects_cov

        return random_effects_cov(self)

    # ------------------------------------------------------------------ tests
    def t_test(self, r_matrix: ArrayLike | str, use_t: bool | None = None,
               scalar: bool | None = None) -> ContrastResults:
        """Wald t tests of linear combinations of the fixed effects (``r_matrix`` with
        ``k_fe`` columns, or a string such as ``"x1 = 0"``); see :mod:`.lmm_tests`."""
        from .lmm_tests import t_test

        return t_test(self, r_matrix, use_t)

    def wald_test(self, r_matrix: ArrayLike | str, use_f: bool | None = None,
                  scalar: bool = True) -> ContrastResults:
        """Joint Wald test of ``R β = q`` over the fixed effects (chi² or F)."""
        from .lmm_tests import wald_test

        return wald_test(self, r_matrix, use_f=use_f)

    def f_test(self, r_matrix: ArrayLike | str) -> ContrastResults:
        """Joint F test of ``R β = q`` over the fixed effects."""
        from .lmm_tests import wald_test

        return wald_test(self, r_matrix, use_f=True)

    def profile_re(self, re_ix: int, vtype: str, num_low: int = 5, dist_low: float = 1.0,
                   num_high: int = 5, dist_high: float = 1.0, **fit_kwargs: Any) -> np.ndarray:
        """statsmodels' profile likelihood of one variance: ``(num_low + num_high + 1, 2)``
        rows of (variance, log-likelihood maximised over the other parameters)."""
        from .lmm_ranef import profile_re

        return profile_re(self, re_ix, vtype, num_low, dist_low, num_high, dist_high)

    # ------------------------------------------------------------------ persistence
    def remove_data(self) -> None:
        """Drop the cached per-row values (statsmodels' ``remove_data``); the estimates and
        ``summary()`` stay available."""
        for name in ("_fitted", "_resid"):
            self.__dict__.pop(name, None)

    def save(self, fname: str | os.PathLike | BinaryIO, remove_data: bool = False) -> None:
        """Pickle the results to ``fname`` (a path or a file object)."""
        if remove_data:
            self.remove_data()
        if isinstance(fname, (str, os.PathLike)):
            with open(fname, "wb") as fh:
                pickle.dump(self, fh)
        else:  # a file object
            pickle.dump(self, fname)

    @classmethod
    def load(cls, fname: str | os.PathLike | BinaryIO) -> Any:
        """Results saved by :meth:`save`."""
        if isinstance(fname, (str, os.PathLike)):
            with open(fname, "rb") as fh:
                return pickle.load(fh)
        return pickle.load(fname)  # a file object
