"""Warnings raised by bayesglmm."""

__all__ = ["ConvergenceWarning", "SingularFitWarning"]


class ConvergenceWarning(UserWarning):
    """An optimiser stopped before meeting its tolerance; the message gives the gradient norm."""


class SingularFitWarning(UserWarning):
    """A variance parameter is estimated on the boundary (zero)."""
