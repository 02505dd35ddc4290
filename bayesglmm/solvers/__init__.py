"""Optimisers for the fits, all traceable inside ``jax.jit`` (``lax.while_loop``).

* ``newton``: structured modified Newton for f(a, v) with a small block ``a`` (fixed effects
  and variance parameters) and a large block ``v`` of shape (k_vc, r) (random effects, r = 1
  for the joint mode, r = 2 for mean and log-SD in variational Bayes);
* ``lbfgs``: optax's L-BFGS on the same f(a, v);
* ``projected_newton``: bound-constrained modified Newton for a small problem (the marginal
  Laplace fit's (fe, vcp));
* ``linesearch``: the one backtracking (Armijo) line search they use, also in a plain-Python
  form for host-side callers.

They return a :class:`Solution` (or, for ``projected_newton``, its state) with a status code
(``STATUS_MESSAGES``); the models decide whether to warn.
"""

from .solution import STATUS_MESSAGES, Solution
from .lbfgs import lbfgs
from .newton import NewtonOptions, newton, structured_blocks

__all__ = ["STATUS_MESSAGES", "NewtonOptions", "Solution", "lbfgs", "newton", "structured_blocks"]
