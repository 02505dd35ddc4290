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

Two drivers run the same iteration: :func:`projected_newton` inside ``lax.while_loop`` (for a
caller that vmaps it, fits.integrate) and :func:`projected_newton_host`, a Python loop over
jitted ``value`` and ``vgh`` programs (fits.laplace).  The host loop compiles only those two
programs — no outer ``while_loop`` holding a line-search loop and two copies of the inner
solve — and costs microseconds per iteration in round trips; steps 2–3 and the stopping tests
are one function (:func:`_direction`) for both, on numpy in the host loop.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from .. import progress as _progress
from ..linalg.psd import abs_solve
from .linesearch import backtrack, backtrack_host

__all__ = ["ProjectedNewtonOptions", "ProjectedNewtonState", "projected_newton",
           "projected_newton_host"]


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


def _direction(x, f, g, H, lb, opts: ProjectedNewtonOptions, xp=jnp):
    """Steps 2–3 and the convergence test at x: the free gradient ``gm`` (k,), the capped
    direction ``d`` (k,) on the free coordinates, ``small`` (converged) and ``finite``
    (f, g and H are).  ``xp`` is ``jax.numpy`` or ``numpy`` (the host loop)."""
    active = (x <= lb + 1e-10) & (g > 0)
    free = ~active
    gm = xp.where(free, g, 0.0)
    finite = xp.isfinite(f) & xp.all(xp.isfinite(g)) & xp.all(xp.isfinite(H))
    eye = xp.eye(x.shape[0], dtype=x.dtype)
    Hf = xp.where(free[:, None] & free[None, :], H, eye)
    if xp is np and not finite:  # numpy's eigh refuses non-finite input; d is unused then
        Hf = eye
    d = xp.where(free, abs_solve(Hf, -gm, xp=xp), 0.0)
    dmax = xp.max(xp.abs(d), initial=0.0)
    d = d * (opts.max_step / xp.maximum(dmax, opts.max_step))  # ‖d‖_∞ ≤ max_step
    slope = xp.sum(gm * d)
    small = ((xp.max(xp.abs(gm), initial=0.0) <= opts.gtol)
             | (-0.5 * slope <= opts.ftol * (1 + xp.abs(f))))
    return gm, d, small, finite


def _status(small, finite, ls_failed, xp=jnp):
    return xp.where(small, 0, xp.where(~finite, 3, xp.where(ls_failed, 2, 1)))


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
    eye = jnp.eye(x0.shape[0], dtype=x0.dtype)

    def cond(s):
        return ~s.done

    def body(s):
        f, g, H, u = vgh(s.x, s.u)
        gm, d, small, finite = _direction(s.x, f, g, H, lb, opts)
        stop = small | ~finite | s.ls_failed | (s.it >= opts.maxiter)
        status = _status(small, finite, s.ls_failed)

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


def projected_newton_host(vgh: Callable, value: Callable, x0, u0, lb,
                          opts: ProjectedNewtonOptions = ProjectedNewtonOptions(),
                          first: Callable | None = None):
    """:func:`projected_newton` driven from Python, over jitted ``value`` and ``vgh``.

    Parameters
    ----------
    vgh : ``vgh(x, u) -> (f, g, H, aux)`` at a point x where ``value`` returned u (the
        auxiliary is already solved for there); ``aux`` is anything the caller wants back
        from the last evaluation or passed to ``value`` (e.g. du/dx)
    value : ``value(x, u, aux, dx) -> (f, u_new)``: f at x, solving for the auxiliary from
        the warm start u at the base point x − dx, where ``vgh`` returned ``aux`` (a caller
        may predict u at x from them); ``aux`` and ``dx`` are None on the first call, at x0
        from u0
    x0 : (k,) numpy start (projected onto x ≥ lb); its dtype is the iteration's
    u0 : the auxiliary start (kept as whatever ``value`` returns, e.g. a device array)
    lb : (k,) numpy lower bounds (−inf where unbounded)
    opts : ProjectedNewtonOptions
    first : ``first(x, u0) -> (u, (f, g, H, aux))``, optional
        The first evaluation in one call: ``value``'s solve for the auxiliary at x0 from u0
        and ``vgh`` there (a caller with one program for both saves a round trip and the
        value's own f); default ``value`` then ``vgh``

    Returns
    -------
    state : ProjectedNewtonState (numpy; ``done`` True), as :func:`projected_newton`'s
    aux : ``vgh``'s ``aux`` at the returned point
    """
    x0 = np.asarray(x0)
    lb = np.asarray(lb, x0.dtype)
    x = np.maximum(x0, lb)
    if first is None:
        _, u = value(x, u0, None, None)
        at_x = None
    else:
        u, at_x = first(x, u0)
    it, ls_failed = 0, False
    while True:
        f, g, H, aux = vgh(x, u) if at_x is None else at_x
        at_x = None
        f, g, H = np.asarray(f), np.asarray(g), np.asarray(H)
        gm, d, small, finite = _direction(x, f, g, H, lb, opts, xp=np)
        stop = small or not finite or ls_failed or it >= opts.maxiter
        _progress.report(it, f, np.max(np.abs(gm), initial=0.0))  # no-op unless reporting
        it += 1
        if stop:
            status = int(_status(small, finite, ls_failed, xp=np))
            return ProjectedNewtonState(x, u, f, g, H, np.asarray(it), np.asarray(status),
                                        np.asarray(ls_failed), np.asarray(True)), aux

        def phi(t, x=x, d=d, u=u, aux=aux):  # f along the projected path
            xt = np.maximum(x + t * d, lb)
            ft, ut = value(xt, u, aux, xt - x)
            ft = np.asarray(ft)
            return (ft if np.isfinite(ft) else np.asarray(np.inf, ft.dtype)), (xt, ut)

        def accept(t, ft, aux, x=x, f=f, gm=gm):  # Armijo along the projection arc
            return ft <= f + 1e-4 * np.sum(gm * (aux[0] - x))

        _, _, (xt, ut), _, ok = backtrack_host(phi, accept, opts.max_ls + 1)
        if ok:
            x, u = xt, ut
        ls_failed = not ok
