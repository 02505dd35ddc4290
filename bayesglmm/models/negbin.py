"""``NegativeBinomialBayesMixedGLM``: the mixed NB2 regression (glmmTMB's ``nbinom2``,
lme4's ``glmer.nb``) with the fits of the Poisson model.

The dispersion θ (Var(y) = μ + μ²/θ) is estimated with the variance parameters: log θ is the
last entry of vcp (named ``"log_theta"``, families.NegativeBinomial), unbounded, with the
prior N(0, theta_p²) in the Bayesian fits.  Results add θ with its SD and interval by the delta
method on log θ (:class:`NegativeBinomialResults`).  See docs/negative_binomial.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from .._normal import ndtri
from .._precision import precision
from ..checks import check_number
from ..families import NegativeBinomial
from ..kernels.glmm import Prior
from ..results.glmm import BayesMixedGLMResults
from ..results.summary import Summary
from .base import _put
from .glmm import _BayesMixedGLM

if TYPE_CHECKING:
    from collections.abc import Sequence

    import pandas as pd
    import scipy.sparse as sp
    from numpy.typing import ArrayLike, DTypeLike
    from typing_extensions import Self

__all__ = ["DISP_NAME", "THETA_P", "NegativeBinomialBayesMixedGLM", "NegativeBinomialResults"]

DISP_NAME = "log_theta"  # the name of log θ among vcp_names
THETA_P = 3.0  # default prior SD of log θ: θ within e^{±6} ≈ (0.0025, 400) at 95%


class NegativeBinomialResults(BayesMixedGLMResults):
    """:class:`BayesMixedGLMResults` with the dispersion θ of the negative binomial.

    Attributes
    ----------
    theta : float
        θ = exp(log θ) at the estimate (posterior mean of log θ for fit_vb and the integrated
        fit), glmmTMB's ``sigma(fit)`` for ``fit_laplace(priors=False)``.
    theta_sd : float
        SD of θ by the delta method on log θ: θ·SD(log θ).
    log_theta, log_theta_sd : float
        The estimate of log θ and its SD.
    """

    @property
    def log_theta(self) -> float:
        return float(self.vcp_mean[-1])

    @property
    def log_theta_sd(self) -> float:
        return float(self.vcp_sd[-1])

    @property
    def theta(self) -> float:
        return float(np.exp(self.log_theta))

    @property
    def theta_sd(self) -> float:
        return self.theta * self.log_theta_sd

    def theta_ci(self, alpha: float = 0.05) -> tuple[float, float]:
        """The 1 − alpha interval of θ: exp of log θ ± z·SD(log θ) (a Wald interval on the
        log scale, so always positive)."""
        z = ndtri(1 - alpha / 2)
        return (float(np.exp(self.log_theta - z * self.log_theta_sd)),
                float(np.exp(self.log_theta + z * self.log_theta_sd)))

    def summary(self) -> Summary:
        """:meth:`BayesMixedGLMResults.summary` with θ (and its SD) in the header."""
        out = super().summary()
        out.info["theta (sigma)"] = f"{self.theta:.4f} (SD {self.theta_sd:.4f})"
        return out


class NegativeBinomialBayesMixedGLM(_BayesMixedGLM):
    """Bayesian mixed negative binomial (NB2) regression: y ~ NB(μ, θ), log μ = η,
    Var(y) = μ + μ²/θ, with θ estimated.

    Parameters
    ----------
    endog : array_like (n,)
        Non-negative integer counts.
    exog, exog_vc, ident, vcp_p, fe_p, fep_names, vc_names
        As :class:`PoissonBayesMixedGLM`.
    vcp_names : list of str, optional
        Names of the variance components (``"log_theta"`` is appended for the dispersion).
    theta_p : float
        Prior SD of log θ in the Bayesian fits (fit_map, fit_vb, fit_laplace(priors=True)):
        N(0, theta_p²).  The default 3 spans θ from 0.0025 (extreme overdispersion) to about
        400 (nearly Poisson) within two SDs, so it identifies θ where the data say little
        (θ → ∞ has no finite ML estimate when there is no overdispersion) without moving
        ordinary estimates: on grouseticks its curvature 1/9 is 0.3% of the likelihood's.
    offset, exposure, freq_weights : array_like, optional
        Offset on the log scale, exposure (log(exposure) is added to the offset), frequency
        weights.
    dtype : float32 or float64, optional
    vb_rule : str
        Quadrature over the linear predictor in fit_vb's ELBO; default ``"gh20"`` (there is no
        statsmodels model to match).  log θ is integrated by 10-point Gauss–Hermite.

    Examples
    --------
    >>> from bayesglmm import NegativeBinomialBayesMixedGLM, datasets
    >>> df = datasets.load("grouseticks")
    >>> model = NegativeBinomialBayesMixedGLM.from_formula(
    ...     "TICKS ~ YEAR + cHEIGHT", {"BROOD": "0 + C(BROOD)", "LOCATION": "0 + C(LOCATION)"},
    ...     df)
    >>> model.vcp_names, model.k_vcp
    (['BROOD', 'LOCATION', 'log_theta'], 3)

    ``model.fit_laplace(priors=False)`` is glmmTMB's ``nbinom2`` fit (θ = 3.293 here, its
    ``sigma``; docs/negative_binomial.md); the result's ``theta``, ``theta_sd`` and
    ``theta_ci()`` give θ with its delta-method SD and interval.
    """

    family = NegativeBinomial()
    _results_class = NegativeBinomialResults

    def __init__(self, endog: ArrayLike, exog: ArrayLike | None,
                 exog_vc: ArrayLike | pd.DataFrame | sp.sparray | sp.spmatrix | None = None,
                 ident: ArrayLike | None = None, vcp_p: float = 1, fe_p: float = 2,
                 fep_names: Sequence[str] | None = None, vcp_names: Sequence[str] | None = None,
                 vc_names: Sequence[str] | None = None, *, theta_p: float = THETA_P,
                 n_trials: ArrayLike | None = None, offset: ArrayLike | None = None,
                 exposure: ArrayLike | None = None, freq_weights: ArrayLike | None = None,
                 dtype: DTypeLike | None = None, vb_rule: str = "gh20") -> None:
        super().__init__(endog, exog, exog_vc, ident, vcp_p, fe_p, fep_names, vcp_names,
                         vc_names, n_trials=n_trials, offset=offset, exposure=exposure,
                         freq_weights=freq_weights, dtype=dtype, vb_rule=vb_rule)
        self.theta_p = check_number(theta_p, "theta_p", positive=True)

    @classmethod
    def from_formula(cls, formula: str, vc_formulas: dict[str, str] | None, data: pd.DataFrame,
                     vcp_p: float = 1, fe_p: float = 2, *, theta_p: float = THETA_P,
                     n_trials: str | ArrayLike | None = None,
                     offset: str | ArrayLike | None = None,
                     exposure: str | ArrayLike | None = None,
                     freq_weights: str | ArrayLike | None = None, dtype: DTypeLike | None = None,
                     vb_rule: str = "gh20", missing: Literal["raise", "none", "drop"] = "raise",
                     vcp_names: Sequence[str] | None = None,
                     vc_names: Sequence[str] | None = None) -> Self:
        """Build the model from a formula and variance-component formulas, as
        :meth:`PoissonBayesMixedGLM.from_formula` (``n_trials`` is refused, as for the
        Poisson), with ``theta_p`` the prior SD of log θ."""
        model = super().from_formula(formula, vc_formulas, data, vcp_p, fe_p,
                                     n_trials=n_trials, offset=offset,
                                     exposure=exposure, freq_weights=freq_weights, dtype=dtype,
                                     vb_rule=vb_rule, missing=missing, vcp_names=vcp_names,
                                     vc_names=vc_names)
        model.theta_p = check_number(theta_p, "theta_p", positive=True)
        return model

    def _init_arrays(self, *args, **kwargs):
        """The inputs as for the other families, then log θ appended to the variance
        parameters (vcp = (log SDs, correlation parameters, log θ))."""
        super()._init_arrays(*args, **kwargs)
        self.k_vcp += 1
        self.vcp_names = list(self.vcp_names) + [DISP_NAME]
        self.theta_p = THETA_P

    def vb_elbo_base(self, *args: Any, **kwargs: Any) -> float:
        """Not defined for this family: statsmodels' ELBO helper integrates a function of the
        linear predictor alone, and the NB2 log-likelihood also depends on θ (whose mean-field
        factor the ELBO integrates too).  Use :meth:`vb_elbo`.

        Raises
        ------
        ValueError
        """
        raise ValueError("vb_elbo_base applies to families whose log-likelihood depends on the "
                         "linear predictor alone; the negative binomial's depends on θ too: "
                         "use vb_elbo and vb_elbo_grad")

    def vb_elbo_grad_base(self, *args: Any, **kwargs: Any) -> tuple[np.ndarray, np.ndarray]:
        """Not defined for this family (see :meth:`vb_elbo_base`); use :meth:`vb_elbo_grad`.

        Raises
        ------
        ValueError
        """
        raise ValueError("vb_elbo_grad_base applies to families whose log-likelihood depends "
                         "on the linear predictor alone; the negative binomial's depends on θ "
                         "too: use vb_elbo_grad")

    def _prior(self) -> Prior:
        with precision(self.dtype):
            return Prior(_put(np.asarray(self.fe_p, self.dtype)),
                         _put(np.asarray(self.vcp_p, self.dtype)),
                         _put(np.asarray(self.theta_p, self.dtype)))
