"""statsmodels' parameter container for a linear mixed model, and its packed layouts.

statsmodels' ``MixedLM`` works on ``(fe_params, cov_re, vcomp)`` with the covariances relative
to the residual variance (ψ = ``cov_re / scale``, ``vcomp / scale``), packed into one vector
as ``[fe_params, cov_re[tril_indices(k_re)], vcomp]`` (lower triangle row by row).  With
``use_sqrt`` the packed covariance is the lower-triangular Cholesky factor ``L`` of ``cov_re``
and the square roots of ``vcomp`` — which is lme4's θ (``λ = L``) up to the order of a block's
entries.  :class:`MixedLMParams` is that container with statsmodels' names, so code written for
``statsmodels.regression.mixed_linear_model.MixedLMParams`` runs unchanged; any object with
``fe_params``, ``cov_re`` and ``vcomp`` attributes (statsmodels' own included) is accepted
wherever bayesglmm takes one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from collections.abc import Sequence

    from numpy.typing import ArrayLike
    from typing_extensions import Self

__all__ = ["MixedLMParams", "as_components", "packed_to_theta", "theta_from_start"]


class MixedLMParams:
    """Fixed effects and relative covariances of a linear mixed model (statsmodels' layout).

    Parameters
    ----------
    k_fe, k_re, k_vc : int
        Numbers of fixed effects, of random effects of ``groups`` and of variance components.

    Attributes
    ----------
    fe_params : (k_fe,) ndarray or None
    cov_re : (k_re, k_re) ndarray
        Covariance of the random effects relative to the residual variance.
    vcomp : (k_vc,) ndarray
        Variance components relative to the residual variance.

    Examples
    --------
    >>> import numpy as np
    >>> p = MixedLMParams.from_components(np.r_[1.0, 2.0], cov_re=np.eye(1), vcomp=np.r_[0.5])
    >>> p.get_packed(use_sqrt=False, has_fe=True).tolist()
    [1.0, 2.0, 1.0, 0.5]
    """

    fe_params: np.ndarray | None
    cov_re: np.ndarray
    vcomp: np.ndarray

    def __init__(self, k_fe: int, k_re: int, k_vc: int) -> None:
        self.k_fe, self.k_re, self.k_vc = int(k_fe), int(k_re), int(k_vc)
        self.k_re2 = self.k_re * (self.k_re + 1) // 2
        self.k_tot = self.k_fe + self.k_re2 + self.k_vc
        self._ix = np.tril_indices(self.k_re)
        self.fe_params = None
        self.cov_re = np.zeros((self.k_re, self.k_re))
        self.vcomp = np.zeros(self.k_vc)

    @classmethod
    def from_packed(cls, params: ArrayLike, k_fe: int, k_re: int, use_sqrt: bool,
                    has_fe: bool) -> Self:
        """Unpack ``[fe_params (if has_fe), cov_re lower triangle, vcomp]``; with ``use_sqrt``
        the covariance part is ``L[tril]`` (``cov_re = L Lᵀ``) and ``sqrt(vcomp)``."""
        params = np.asarray(params, np.float64)
        k_re2 = k_re * (k_re + 1) // 2
        k_vc = len(params) - k_re2 - (k_fe if has_fe else 0)
        if k_vc < 0:
            raise ValueError(f"params has {len(params)} values, fewer than the "
                             f"{k_re2 + (k_fe if has_fe else 0)} the layout needs")
        out = cls(k_fe, k_re, k_vc)
        off = k_fe if has_fe else 0
        out.fe_params = params[:k_fe].copy() if has_fe else None
        low = np.zeros((k_re, k_re))
        low[out._ix] = params[off : off + k_re2]
        out.cov_re = low @ low.T if use_sqrt else low + low.T - np.diag(np.diag(low))
        vc = params[off + k_re2 :]
        out.vcomp = vc**2 if use_sqrt else vc.copy()
        return out

    @classmethod
    def from_components(cls, fe_params: Sequence[float] | np.ndarray | None = None,
                        cov_re: ArrayLike | None = None, cov_re_sqrt: ArrayLike | None = None,
                        vcomp: ArrayLike | None = None) -> Self:
        """From the parts (``cov_re_sqrt``: a factor ``L`` with ``cov_re = L Lᵀ``)."""
        if cov_re is None and cov_re_sqrt is not None:
            cov_re_sqrt = np.asarray(cov_re_sqrt, np.float64)
            cov_re = cov_re_sqrt @ cov_re_sqrt.T
        cov_re = np.zeros((0, 0)) if cov_re is None else np.atleast_2d(np.asarray(cov_re, float))
        vcomp = np.zeros(0) if vcomp is None else np.atleast_1d(np.asarray(vcomp, float))
        k_fe = 0 if fe_params is None else len(fe_params)
        out = cls(k_fe, cov_re.shape[0], len(vcomp))
        out.fe_params = None if fe_params is None else np.asarray(fe_params, np.float64)
        out.cov_re, out.vcomp = cov_re, vcomp
        return out

    def copy(self) -> MixedLMParams:
        out = MixedLMParams(self.k_fe, self.k_re, self.k_vc)
        out.fe_params = None if self.fe_params is None else np.array(self.fe_params, float)
        out.cov_re, out.vcomp = np.array(self.cov_re, float), np.array(self.vcomp, float)
        return out

    def get_packed(self, use_sqrt: bool, has_fe: bool = False) -> np.ndarray:
        """The packed vector (see :meth:`from_packed`)."""
        cov = np.asarray(self.cov_re, np.float64)
        if self.k_re:
            cov_part = (np.linalg.cholesky(cov) if use_sqrt else cov)[self._ix]
        else:
            cov_part = np.zeros(0)
        vc = np.asarray(self.vcomp, np.float64)
        parts = [cov_part, np.sqrt(vc) if use_sqrt else vc]
        if has_fe:
            parts.insert(0, np.asarray(self.fe_params, np.float64))
        return np.concatenate(parts)

    def __repr__(self) -> str:
        return (f"MixedLMParams(fe_params={self.fe_params}, cov_re={self.cov_re.tolist()}, "
                f"vcomp={self.vcomp})")


def as_components(params, k_fe, k_re, use_sqrt, has_fe=False):
    """``(fe (k_fe,) or None, cov_re (k_re, k_re), vcomp)`` from a params object or a packed
    vector (statsmodels' rule: an object with ``cov_re`` is used as it is)."""
    if hasattr(params, "cov_re") and hasattr(params, "vcomp"):
        fe = getattr(params, "fe_params", None)
        return (None if fe is None else np.asarray(fe, np.float64),
                np.atleast_2d(np.asarray(params.cov_re, np.float64)).reshape(k_re, k_re),
                np.atleast_1d(np.asarray(params.vcomp, np.float64)))
    p = MixedLMParams.from_packed(params, k_fe, k_re, use_sqrt, has_fe)
    return p.fe_params, p.cov_re, p.vcomp


def packed_to_theta(cov_re, vcomp, blocks) -> np.ndarray:
    """θ (lme4's layout) from relative ``cov_re`` and ``vcomp``.

    ``blocks`` lists the model's θ blocks in θ order as ``(kind, θ indices (q, q) with -1 for
    structural zeros)``: the first non-vc block takes ``λ = chol(cov_re)`` (its diagonal when
    the block is diagonal), each vc block ``sqrt(vcomp[k])`` in turn.
    """
    n = 1 + max(int(ti.max()) for _, ti in blocks)
    theta = np.zeros(n)
    k = 0
    for kind, ti in blocks:
        if kind == "vc":
            theta[ti[0, 0]] = np.sqrt(max(float(vcomp[k]), 0.0))
            k += 1
            continue
        q = ti.shape[0]
        c = np.asarray(cov_re, np.float64)[:q, :q]
        try:
            lam = np.linalg.cholesky(c + 1e-12 * np.eye(q))
        except np.linalg.LinAlgError:
            lam = np.diag(np.sqrt(np.clip(np.diag(c), 0, None)))
        m = ti >= 0
        theta[ti[m]] = lam[m]
    return theta


def theta_from_start(start, model) -> np.ndarray:
    """θ to start a fit from, given statsmodels' ``start_params``.

    An object with ``cov_re``/``vcomp`` (:class:`MixedLMParams`) gives ``chol(cov_re)`` and
    ``sqrt(vcomp)``; a vector of ``n_theta`` values is θ itself (statsmodels' packed layout
    with ``use_sqrt=True``, the default); one of ``k_fe + n_theta`` values has the fixed
    effects first (they are profiled out, so only a start's covariance part matters).
    """
    if hasattr(start, "cov_re") and hasattr(start, "vcomp"):
        _, cov, vc = as_components(start, model.k_fe, model.k_re, model.use_sqrt)
        theta = packed_to_theta(cov, vc, model._blocks)
    else:
        theta = np.asarray(start, np.float64).ravel()
        if theta.shape == (model.k_fe + model.n_theta,):
            theta = theta[model.k_fe :]
        if theta.shape != (model.n_theta,):
            raise ValueError(
                f"start_params must have {model.n_theta} values (the covariance parameters) or "
                f"{model.k_fe + model.n_theta} (fixed effects first), got {theta.shape[0]}")
        if not model.use_sqrt:  # statsmodels' packed relative covariances, not their factor
            p = MixedLMParams.from_packed(theta, 0, model.k_re, False, False)
            theta = packed_to_theta(p.cov_re, p.vcomp, model._blocks)
    theta = np.where(np.isfinite(theta), theta, 1.0)
    theta[model._diag] = np.clip(np.abs(theta[model._diag]), 1e-3, None)
    return theta
