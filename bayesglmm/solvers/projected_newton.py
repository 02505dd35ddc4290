"""Bound-constrained modified Newton for a small problem min f(x) s.t. x ≥ lb.

For the marginal Laplace fit (fits.laplace): x = θ = (fe, vcp) has a few dozen coordinates at
most, and (f, ∇f, ∇²f) come together from one evaluation (forward-mode Hessian of an adjoint
gradient), so the full Hessian is formed at every iterate.  Each iteration

1. evaluates (f, g, H) at x (so the final state holds them at the returned point);
2. holds fixed the coordinates at their bound with g > 0 (the active set; Bertsekas 1982,
   SIAM J. Control Optim. 20(2), projected Newton);
3. on the free ones solves |H|·d = −g (eigenvalues by absolute value: linalg.psd.abs_solve),
   caps ‖d‖_∞ at ``max_step``;
4. backtracks (solvers.linesearch) along the projected path x(t) = max(x + t·d, lb) until
   f(x(t)) ≤ f(x) + 1e-4·gᵀ(x(t) − x) (Armijo along the projection arc).

Stops (``status``, a key of solvers.STATUS_MESSAGES) when ‖g_free‖_∞ ≤ gtol or the Newton
decrement −½·gᵀd ≤ ftol·(1 + |f|) (0), after ``maxiter`` iterations (1), when a line search
fails (2) or on a non-finite f, g or H (3).  An auxiliary ``u`` (the inner problem's warm
start) is carried along: ``value`` and ``vgh`` return its value at the new point.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from ..linalg.psd import abs_solve
from .linesearch import backtrack

__all__ = ["ProjectedNewtonOptions", "ProjectedNewtonState", "projected_newton"]


class ProjectedNewtonOptions(NamedTuple):
    maxiter: int = 100  # iterations (each one evaluation of f, g, H)
    gtol: float = 1e-8  # stop when ‖g‖_∞ over free coordinates ≤ gtol
    ftol: float = 1e-14  # ... or when the Newton decrement ½·gᵀ|H|⁻¹g ≤ ftol·(1 + |f|)
    max_step: float = 5.0  # cap on the ∞-norm of a step
    max_ls: int = 40  # line-search halvings (at most max_ls + 1 evaluations)


class ProjectedNewtonState(NamedTuple):
    x: jax.Array  # (k,) current point
    u: jax.Array  # (k_u,) auxiliary carried with x (the inner problem's warm start)
    f: jax.Array  # () objective (minimised) at x
    g: jax.Array  # (k,) its gradient
    H: jax.Array  # (k, k) its Hessian
    it: jax.Array  # () evaluations of (f, g, H) so far
    status: jax.Array  # () a key of STATUS_MESSAGES
    ls_failed: jax.Array  # () bool: the last line search failed
    done: jax.Array  # () bool


def projected_newton(vgh: Callable, value: Callable, x0, u0, lb,
                     opts: ProjectedNewtonOptions = ProjectedNewtonOptions()
                     ) -> ProjectedNewtonState:
    """Minimise f(x) subject to x ≥ lb, inside ``lax.while_loop`` (jit it).

    Parameters
    ----------
    vgh : ``vgh(x, u) -> (f, g, H, u_new)``
    value : ``value(x, u) -> (f, u_new)`` (line-search evaluations)
    x0 : (k,) start (projected onto x ≥ lb)
    u0 : (k_u,) auxiliary start
    lb : (k,) lower bounds (−inf where unbounded)
    opts : ProjectedNewtonOptions

    Returns
    -------
    ProjectedNewtonState at the last point; ``it`` counts the evaluations of (f, g, H), one
    more than the steps taken.
    """
    k = x0.shape[0]
    eye = jnp.eye(k, dtype=x0.dtype)

    def cond(s):
        return ~s.done

    def body(s):
        f, g, H, u = vgh(s.x, s.u)
        active = (s.x <= lb + 1e-10) & (g > 0)
        free = ~active
        gm = jnp.where(free, g, 0.0)
        d = abs_solve(jnp.where(free[:, None] & free[None, :], H, eye), -gm)
        d = jnp.where(free, d, 0.0)
        d = d * jnp.minimum(1.0, opts.max_step / (jnp.max(jnp.abs(d), initial=0.0) + 1e-300))
        slope = jnp.sum(gm * d)
        small = ((jnp.max(jnp.abs(gm), initial=0.0) <= opts.gtol)
                 | (-0.5 * slope <= opts.ftol * (1 + jnp.abs(f))))
        finite = jnp.isfinite(f) & jnp.all(jnp.isfinite(g)) & jnp.all(jnp.isfinite(H))
        stop = small | ~finite | s.ls_failed | (s.it >= opts.maxiter)
        status = jnp.where(small, 0, jnp.where(~finite, 3, jnp.where(s.ls_failed, 2, 1)))

        def phi(t):  # f along the projected path; (x(t), u at x(t)) come back as aux
            xt = jnp.maximum(s.x + t * d, lb)
            ft, ut = value(xt, u)
            return jnp.where(jnp.isfinite(ft), ft, jnp.inf), (xt, ut)

        def accept(t, ft, aux):  # Armijo along the projection arc
            return ft <= f + 1e-4 * jnp.sum(gm * (aux[0] - s.x))

        # once stopping, one evaluation only (its result is discarded)
        _, _, (xt, ut), _, ok = backtrack(phi, accept, jnp.where(stop, 1, opts.max_ls + 1))
        ok = ok & ~stop
        x = jnp.where(ok, xt, s.x)
        u_next = jnp.where(ok, ut, u)
        return ProjectedNewtonState(x, u_next, f, g, H, s.it + 1, status, ~ok & ~stop, stop)

    init = ProjectedNewtonState(jnp.maximum(x0, lb), u0, jnp.zeros((), x0.dtype),
                                jnp.zeros_like(x0), eye, jnp.asarray(0), jnp.asarray(1),
                                jnp.asarray(False), jnp.asarray(False))
    return lax.while_loop(cond, body, init)
