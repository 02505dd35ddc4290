"""Backtracking (Armijo) line search: one rule, traceable and plain-Python forms.

Along a descent direction d with slope gᵀd < 0 from f(x), step lengths t = t₀, t₀/2, t₀/4, …
are tried until ``accept(t, φ(t), aux)``, where φ(t) = f(x + t·d) (the caller builds φ, so a
projected or guarded step is the caller's business).  The usual acceptance is Armijo's
sufficient decrease (Nocedal & Wright, *Numerical Optimization*, 2nd ed., eq. 3.4),

    φ(t) ≤ f(x) + c₁·t·gᵀd,                                          (:func:`armijo`)

which a NaN value never satisfies.  Both forms evaluate φ at least once and at most
``max_evals`` times and return ``(t, φ(t), aux, n_evals, ok)`` for the last step tried, ``ok``
telling whether it was accepted.

* :func:`backtrack`: inside ``jax.jit`` (``lax.while_loop``).  φ is traced once, inside the
  loop: the carry starts at t = 2t₀ with placeholder outputs shaped by ``jax.eval_shape``.
* :func:`backtrack_host`: a plain loop for host-side (numpy) callers.

Examples
--------
>>> import jax.numpy as jnp
>>> f = lambda x: (x - 0.3) ** 2
>>> x, g = 2.0, 2 * (2.0 - 0.3)
>>> phi = lambda t: (f(x - t * g), None)
>>> t, ft, _, n, ok = backtrack_host(phi, armijo(f(x), -g * g), max_evals=10)
>>> t, n, ok
(0.5, 2, True)
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax import lax

__all__ = ["armijo", "backtrack", "backtrack_host"]


def armijo(f0, slope, c1: float = 1e-4) -> Callable:
    """``accept(t, f_t, aux)``: Armijo's test f_t ≤ f0 + c1·t·slope (False for a NaN f_t)."""

    def accept(t, f_t, aux=None):
        return f_t <= f0 + c1 * t * slope

    return accept


def backtrack(phi: Callable, accept: Callable, max_evals, t0: float = 1.0):
    """Backtracking line search inside ``jax.jit``.

    Parameters
    ----------
    phi : callable
        ``phi(t) -> (f_t, aux)``: the objective at step length t (a scalar array) and any
        pytree the caller wants back for the accepted step (the point, a warm start, ...).
    accept : callable
        ``accept(t, f_t, aux) -> bool`` (e.g. :func:`armijo`).
    max_evals : int or int array
        Most evaluations of φ (at least one is always made).
    t0 : float
        First step length.

    Returns
    -------
    t : () step length of the last evaluation (f_t's dtype)
    f_t, aux : φ(t)
    n_evals : () int, evaluations made (1 ≤ n_evals ≤ max(max_evals, 1))
    ok : () bool, ``accept(t, f_t, aux)``
    """
    # φ's output structure, without adding a copy of φ to the graph; the weakly typed t
    # keeps the caller's dtypes
    f_shape, aux_shape = jax.eval_shape(phi, t0)
    zeros = lambda s: jnp.zeros(s.shape, s.dtype)  # noqa: E731
    init = (jnp.asarray(2.0 * t0, f_shape.dtype), zeros(f_shape),
            jax.tree_util.tree_map(zeros, aux_shape), jnp.asarray(0), jnp.asarray(False))

    def cond(c):
        _, _, _, n, ok = c
        return (n == 0) | (~ok & (n < max_evals))

    def body(c):
        t, _, _, n, _ = c
        t = 0.5 * t
        f_t, aux = phi(t)
        return t, f_t, aux, n + 1, jnp.asarray(accept(t, f_t, aux), bool)

    return lax.while_loop(cond, body, init)


def backtrack_host(phi: Callable, accept: Callable, max_evals: int, t0: float = 1.0):
    """:func:`backtrack` as a plain Python loop (same arguments and return tuple)."""
    t, n = float(t0), 0
    while True:
        f_t, aux = phi(t)
        n += 1
        ok = bool(accept(t, f_t, aux))
        if ok or n >= max_evals:
            return t, f_t, aux, n, ok
        t *= 0.5
