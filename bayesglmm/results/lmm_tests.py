"""Wald tests of linear hypotheses ``R β = q`` on a linear mixed model's fixed effects.

statsmodels' ``MixedLMResults.t_test``/``wald_test``/``f_test`` restrict ``R`` to the fixed
effects (``k_fe`` columns); the covariance is ``σ̂²(XᵀV̂⁻¹X)⁻¹``.  Reference distributions:
normal (t tests, as statsmodels' MixedLM) or chi² / F with ``(rank R, n − k_fe)`` degrees of
freedom (joint tests).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

__all__ = ["ContrastResults", "t_test", "wald_test"]


@dataclass
class ContrastResults:
    """Outcome of a Wald test; the names are statsmodels' ``ContrastResults``.

    ``effect``, ``sd``, ``tvalue``, ``pvalue`` per row of ``R`` (t tests); ``statistic``,
    ``pvalue``, ``df_num``, ``df_denom``, ``distribution`` for joint tests.
    """

    effect: np.ndarray | None = None  # (m,) R β̂ − q
    sd: np.ndarray | None = None  # (m,)
    tvalue: np.ndarray | None = None  # (m,)
    pvalue: np.ndarray | float | None = None
    statistic: float | None = None
    df_num: float | None = None
    df_denom: float | None = None
    distribution: str = "norm"
    names: list | None = None

    @property
    def fvalue(self):
        return self.statistic if self.distribution == "F" else None

    def conf_int(self, alpha=0.05):
        """(m, 2) Wald intervals of the contrasts (t tests only)."""
        from .._normal import ndtri

        z = ndtri(1 - alpha / 2)
        return np.column_stack([self.effect - z * self.sd, self.effect + z * self.sd])

    def summary_frame(self, alpha=0.05) -> pd.DataFrame:
        ci = self.conf_int(alpha)
        return pd.DataFrame({"coef": self.effect, "std err": self.sd, "z": self.tvalue,
                             "P>|z|": self.pvalue, "Conf. Int. Low": ci[:, 0],
                             "Conf. Int. Upp.": ci[:, 1]}, index=self.names)

    def summary(self, alpha=0.05):
        return self.summary_frame(alpha) if self.effect is not None else self

    def __str__(self):
        if self.effect is not None:
            return self.summary_frame().to_string()
        return (f"<{self.distribution} test: statistic={self.statistic:.4g}, "
                f"p-value={float(self.pvalue):.4g}, df_num={self.df_num}, "
                f"df_denom={self.df_denom}>")


def _restriction(res, r_matrix, test="t-test", full=False):
    """``(R (m, k), q (m,), estimates (k,), covariance (k, k))`` from an array, an ``(R, q)``
    pair or a constraint string: over the fixed effects (k = k_fe), or with ``full`` (the
    Wald and F tests, as statsmodels' inherited ones) also over all of ``params`` (k =
    len(params): fixed effects, then the covariance parameters, with ``cov_params()``)."""
    k = res.k_fe
    names = list(res._params_s.index) if full else list(res._fe_s.index)
    q = None
    if isinstance(r_matrix, str):
        from .lmm_constraints import parse_constraints

        R, q = parse_constraints(r_matrix, names)
        if full and not R[:, k:].any():  # only fixed effects named
            R = R[:, :k]
    elif isinstance(r_matrix, tuple) and len(r_matrix) == 2:
        R, q = np.atleast_2d(np.asarray(r_matrix[0], float)), np.asarray(r_matrix[1], float)
    else:
        R = np.atleast_2d(np.asarray(r_matrix, float))
    q = np.zeros(R.shape[0]) if q is None else np.broadcast_to(q.ravel(), (R.shape[0],))
    if R.shape[1] == k:
        return R, q, res._fe, res._cov_fe
    if full and R.shape[1] == len(names):
        return R, q, res._params_s.to_numpy(float), res._cov_all.to_numpy(float)
    other = f" or {len(names)} (all of params)" if full else " (the fixed effects)"
    raise ValueError(f"r_matrix for {test} should have {k:d} columns{other}, got {R.shape[1]}")


def t_test(res, r_matrix, use_t=None) -> ContrastResults:
    """Per-row Wald tests of ``R β = q`` (normal reference, as statsmodels' MixedLM)."""
    from .._normal import ndtr

    R, q, est, cov = _restriction(res, r_matrix)
    effect = R @ est - q
    sd = np.sqrt(np.einsum("ij,jk,ik->i", R, cov, R))
    t = effect / sd
    return ContrastResults(effect, sd, t, 2 * ndtr(-np.abs(t)), df_denom=np.inf,
                           names=[f"c{i}" for i in range(len(effect))])


def wald_test(res, r_matrix, use_f=None) -> ContrastResults:
    """Joint Wald test of ``R β = q``: W = (Rβ̂ − q)ᵀ(R Σ Rᵀ)⁻¹(Rβ̂ − q), chi²(m) or F(m, n − k_fe)
    with statistic W/m; R over the fixed effects or over all of ``params`` (statsmodels)."""
    import scipy.stats

    R, q, est, cov = _restriction(res, r_matrix, "F test" if use_f else "Wald test", full=True)
    d = R @ est - q
    m = np.linalg.matrix_rank(R)
    w = float(d @ np.linalg.pinv(R @ cov @ R.T) @ d)
    if use_f:
        df2 = res.nobs - res.k_fe
        return ContrastResults(statistic=w / m, pvalue=float(scipy.stats.f.sf(w / m, m, df2)),
                               df_num=m, df_denom=df2, distribution="F")
    return ContrastResults(statistic=w, pvalue=float(scipy.stats.chi2.sf(w, m)), df_num=m,
                           distribution="chi2")
