"""Warnings raised by bayesglmm, and the tolerance that decides a singular fit."""

__all__ = ["BOUNDARY_SE", "SINGULAR_TOL", "BoundaryWarning", "ConvergenceWarning",
           "IgnoredArgumentWarning", "IntegrationWarning", "RankDeficientWarning",
           "SingularFitWarning"]

# A fitted random-effect SD (relative to the residual SD in a linear mixed model) below this is
# reported as zero: a "boundary (singular) fit", lme4's ``isSingular(tol = 1e-4)``.
SINGULAR_TOL = 1e-4

# A fixed effect whose standard error exceeds this multiple of 1 + |estimate| is not identified
# by the data (it drifts towards ±∞: an all-zero response, complete separation); lme4 and
# glmmTMB warn in the same situations.
BOUNDARY_SE = 100.0


class ConvergenceWarning(UserWarning):
    """An optimiser stopped before meeting its tolerance; the message gives the gradient norm."""


class SingularFitWarning(UserWarning):
    """A variance parameter is estimated on the boundary (zero)."""


class BoundaryWarning(UserWarning):
    """An estimate sits on the boundary of the parameter space (a fixed effect drifting to
    ±∞, e.g. an all-zero response or complete separation) or its covariance is not finite;
    the message names the parameters.  The fit's ``converged``/``success`` is then False."""


class IntegrationWarning(UserWarning):
    """``fit_laplace(integrate=True)`` changed or limited its node design over the variance
    parameters: a posterior too far from Gaussian for the central composite design (the
    lattice is used instead), or a lattice stopped by its node budget."""


class RankDeficientWarning(UserWarning):
    """The fixed-effects design has columns that are linear combinations of others (or all
    zero).  ``fit_laplace(priors=False)`` drops them (lme4's policy) and reports their estimates
    as NaN under their names; ``fit_map``/``fit_vb`` keep them, identified by the prior only
    (statsmodels' behaviour).  ``MixedLM.fit`` raises a ``ValueError`` instead."""


class IgnoredArgumentWarning(FutureWarning):
    """A statsmodels keyword bayesglmm accepts but cannot honour (the message says why).

    A subclass of ``FutureWarning``, the class statsmodels uses for the same case
    (``MixedLM.fit(cov_type=...)``), so code that filters statsmodels' warning filters this."""
