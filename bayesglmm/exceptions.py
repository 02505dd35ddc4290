"""Warnings raised by bayesglmm, and the tolerance that decides a singular fit."""

__all__ = ["SINGULAR_TOL", "ConvergenceWarning", "SingularFitWarning"]

# A fitted random-effect SD (relative to the residual SD in a linear mixed model) below this is
# reported as zero: a "boundary (singular) fit", lme4's ``isSingular(tol = 1e-4)``.
SINGULAR_TOL = 1e-4


class ConvergenceWarning(UserWarning):
    """An optimiser stopped before meeting its tolerance; the message gives the gradient norm."""


class SingularFitWarning(UserWarning):
    """A variance parameter is estimated on the boundary (zero)."""
