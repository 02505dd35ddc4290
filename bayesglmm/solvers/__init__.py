"""Optimisers for the fits: a structured modified-Newton driver and optax's L-BFGS.

Both minimise a pure function ``f(a, v, *args)`` of a small parameter vector ``a`` (fixed
effects and variance parameters) and a large block ``v`` of shape (k_vc, r) (random effects,
r = 1 for the joint mode, r = 2 for mean and log-SD in variational Bayes), entirely inside
``jax.jit`` (``lax.while_loop``), and return a :class:`Solution` with a status code; the models
decide whether to warn.
"""

from .solution import STATUS_MESSAGES, Solution
from .lbfgs import lbfgs
from .newton import NewtonOptions, newton, structured_blocks

__all__ = ["STATUS_MESSAGES", "NewtonOptions", "Solution", "lbfgs", "newton", "structured_blocks"]
