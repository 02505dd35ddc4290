"""statsmodels' names on the Bayesian mixed GLM classes (mixed into ``_BayesMixedGLM``).

``exog_names``, ``endog_names``, ``k_constant`` and ``data`` (``xnames``, ``ynames``,
``param_names``, ``frame``) as statsmodels' ``BinomialBayesMixedGLM``/``PoissonBayesMixedGLM``,
and its family-independent ELBO pieces ``vb_elbo_base``/``vb_elbo_grad_base`` (for code that
writes a family's ELBO through them): the user's ``h`` is integrated by the model's quadrature
rule, and everything else — the prior and entropy terms and the chain rule through the linear
predictor's moments — is kernels.glmm differentiated by JAX.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from collections.abc import Callable

    from numpy.typing import ArrayLike

    from ..kernels.glmm import Data, Prior

__all__ = ["GLMMData", "StatsmodelsGLMMMixin"]


class GLMMData:
    """statsmodels' ``model.data``: the names and, for formula models, the data frame."""

    def __init__(self, model):
        self.xnames = model.exog_names
        self.ynames = model.endog_names
        self.param_names = list(model.names)
        self.endog, self.exog = model.endog, model.exog
        f = getattr(model, "_formula", None)
        self.frame = getattr(f[2], "data", None) if f else None


class StatsmodelsGLMMMixin:
    """``exog_names``, ``endog_names``, ``k_constant``, ``data``, ``vb_elbo_base``,
    ``vb_elbo_grad_base``."""

    fep_names: list  # provided by the model class (models.base.MixedGLMBase)
    exog: np.ndarray
    endog_name: str  # the response's column, set by from_formula
    endog: np.ndarray
    freq_weights: np.ndarray

    if TYPE_CHECKING:  # provided by models.base.MixedGLMBase
        def _data(self, padded: bool = False, fine: bool = False, mesh: Any = None
                  ) -> Data: ...

        def _prior(self) -> Prior: ...

    @property
    def exog_names(self) -> list:
        """statsmodels' data names: the columns of a DataFrame or formula, else ``const``,
        ``x1``, ``x2``... (``fep_names`` keeps the parameter names, ``FE_1``...)."""
        from ..formula.lmm import _exog_names

        return list(self.fep_names) if getattr(self, "_named", False) else _exog_names(
            np.asarray(self.exog))

    @property
    def endog_names(self) -> str:
        return str(getattr(self, "endog_name", None) or "y")

    @property
    def k_constant(self) -> int:
        """Number of constant columns of ``exog`` (statsmodels counts 0 or 1)."""
        X = np.asarray(self.exog)
        return int(X.shape[0] > 0 and np.any(np.all(X == X[:1], axis=0) & (X[0] != 0)))

    @property
    def data(self) -> GLMMData:
        return GLMMData(self)

    # ------------------------------------------------------------ statsmodels' ELBO pieces
    def _vb_params(self, fep, vcp, vc):
        from ..kernels.glmm import Params

        return Params(*(np.asarray(a, np.float64) for a in (fep, vcp, vc)))

    def _quadrature(self, h):
        """(E h(z), E z·h(z)) per row, z ~ N(0, 1), by the model's rule (``vb_rule``)."""
        z, w = np.asarray(self.vb_rule.nodes), np.asarray(self.vb_rule.weights)
        eh = sum(wk * np.asarray(h(zk), np.float64) for zk, wk in zip(z, w))
        ezh = sum(wk * zk * np.asarray(h(zk), np.float64) for zk, wk in zip(z, w))
        return eh, ezh

    def vb_elbo_base(self, h: Callable[[float], ArrayLike], tm: ArrayLike,
                     fep_mean: ArrayLike, vcp_mean: ArrayLike, vc_mean: ArrayLike,
                     fep_sd: ArrayLike, vcp_sd: ArrayLike, vc_sd: ArrayLike) -> float:
        """statsmodels' ELBO from a family's ``h``: Σ_i [y_i·tm_i + E h_i(z)] plus the prior
        and entropy terms (kernels.glmm.elbo_prior_entropy), z ~ N(0, 1) integrated by the
        model's quadrature rule.

        Parameters
        ----------
        h : callable
            ``h(z) -> (n,)``: the family's log-likelihood minus y·η at η = tm + √tv·z.
        tm : (n,) array_like
            Mean of the linear predictor.
        fep_mean, vcp_mean, vc_mean, fep_sd, vcp_sd, vc_sd : array_like
            The mean-field parameters.
        """
        from .._precision import precision
        from ..kernels.glmm import elbo_prior_entropy

        eh, _ = self._quadrature(h)
        w = np.asarray(self.freq_weights if self.freq_weights is not None else 1.0, np.float64)
        data_part = float(np.sum(w * (np.asarray(self.endog, np.float64) * np.asarray(tm) + eh)))
        with precision(np.float64):
            rest = elbo_prior_entropy(self._vb_params(fep_mean, vcp_mean, vc_mean),
                                      self._vb_params(fep_sd, vcp_sd, vc_sd), self._data(),
                                      self._prior())
        return data_part + float(rest)

    def vb_elbo_grad_base(self, h: Callable[[float], ArrayLike], tm: ArrayLike, tv: ArrayLike,
                          fep_mean: ArrayLike, vcp_mean: ArrayLike, vc_mean: ArrayLike,
                          fep_sd: ArrayLike, vcp_sd: ArrayLike, vc_sd: ArrayLike
                          ) -> tuple[np.ndarray, np.ndarray]:
        """The gradient of :meth:`vb_elbo_base` over (mean, sd), statsmodels' ``(mean_grad,
        sd_grad)``, for a family whose ``h`` here is the derivative of its ELBO ``h``:
        ∂E/∂tm_i = y_i + E h_i(z) and ∂E/∂√tv_i = E z·h_i(z); the chain rule through
        (tm, √tv) of (mean, sd) (kernels.glmm.predictor_moments) and the gradient of the
        prior and entropy terms are JAX's (``jax.vjp``, ``jax.grad``).  ``tm``, ``tv`` are
        statsmodels' arguments; the moments are recomputed from the parameters."""
        import jax
        import jax.numpy as jnp

        from .._precision import precision
        from ..kernels.glmm import elbo_prior_entropy, predictor_moments

        eh, ezh = self._quadrature(h)
        w = np.asarray(self.freq_weights if self.freq_weights is not None else 1.0, np.float64)
        d_tm = w * (np.asarray(self.endog, np.float64) + eh)
        d_s = w * ezh
        with precision(np.float64):
            data, prior = self._data(), self._prior()
            mean = self._vb_params(fep_mean, vcp_mean, vc_mean)
            sd = self._vb_params(fep_sd, vcp_sd, vc_sd)

            def moments(mean, sd):
                t_m, t_v = predictor_moments(mean, sd, data)
                return t_m, jnp.sqrt(t_v)

            _, vjp = jax.vjp(moments, mean, sd)
            g_mean, g_sd = vjp((jnp.asarray(d_tm), jnp.asarray(d_s)))
            r_mean, r_sd = jax.grad(elbo_prior_entropy, argnums=(0, 1))(mean, sd, data, prior)
            pack = lambda a, b: np.concatenate([np.asarray(x) + np.asarray(y)  # noqa: E731
                                                for x, y in zip(a, b)])
            return pack(g_mean, r_mean), pack(g_sd, r_sd)
