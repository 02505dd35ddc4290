"""Minimising the profiled deviance over θ subject to ``θ ≥ lower``: a bound-constrained Newton
method with the exact Hessian (and BFGS updates between exact Hessians), optionally after scipy's
L-BFGS-B.  It knows only ``fg(θ) -> (d, ∇d)`` and ``derivs(θ) -> Derivatives`` (in a fit both
JAX autodiff of the one profiled deviance, :mod:`bayesglmm.kernels.lmm`) and returns a
:class:`ThetaFit`; nothing here warns.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from .. import progress as _progress

__all__ = ["DECREMENT_TOL", "Derivatives", "ThetaFit", "minimise_theta", "newton_theta"]

# Newton steps continue while the Newton decrement ½gᵀH⁻¹g (the predicted decrease of the
# deviance) exceeds this, in deviance units (−2 log-likelihood): far below anything a
# likelihood-ratio comparison can see, and above the roundoff of d in float64.
DECREMENT_TOL = 1e-9

# Evaluations in a row without a decrease, from a point whose predicted decrease is already
# below L-BFGS-B's threshold, after which :func:`_lbfgsb` stops (float32's roundoff).
STALL_EVALS = 3


class Derivatives(NamedTuple):
    """The objective and its exact derivatives at one θ."""

    value: float  # d(θ) (ML) or d_R(θ) (REML)
    grad: np.ndarray  # (n_theta,) ∇d
    hess: np.ndarray  # (n_theta, n_theta) ∇²d


class ThetaFit(NamedTuple):
    """Outcome of :func:`minimise_theta`."""

    theta: np.ndarray  # (n_theta,) the minimiser
    fun: float  # deviance at theta
    grad_norm: float  # max |∇d| over the free coordinates
    converged: bool
    n_evals: int  # evaluations (fits.lmm.fit_lmm: its compiled programs' calls)
    message: str
    derivs: Derivatives | None = None  # exact d, ∇d, ∇²d at theta (None if not formed)
    decrement: float = float("nan")  # Newton decrement ½gᵀH⁻¹g at theta (free coordinates)


def _free(theta, g, lower):
    """Coordinates not held at their bound (at the bound with a positive gradient: held)."""
    return ~((theta <= lower + 1e-10) & (g > 0))


def _newton_direction(der: Derivatives, free):
    """``(d, decrement, v)`` on the free coordinates: ``|H| d = −g`` with the Hessian's
    eigenvalues taken by absolute value (a descent direction also where H is indefinite), the
    Newton decrement ``½ gᵀ|H|⁻¹g``, and the eigenvector of H's most negative eigenvalue
    (None where H is positive definite there); None where H or g is not finite."""
    h = der.hess[np.ix_(free, free)]
    g = der.grad[free]
    if not (np.all(np.isfinite(h)) and np.all(np.isfinite(g))):
        return None
    ev, vec = np.linalg.eigh(0.5 * (h + h.T))
    scale = np.max(np.abs(ev), initial=0.0)
    ev_abs = np.maximum(np.abs(ev), 1e-12 * scale + 1e-300)
    d = -vec @ ((vec.T @ g) / ev_abs)
    negative = vec[:, 0] if ev.size and ev[0] < -1e-10 * scale else None
    return d, -0.5 * float(g @ d), negative


def newton_theta(fg: Callable, derivs: Callable, theta0, lower, maxiter: int = 200,
                 decrement_tol: float = DECREMENT_TOL, f_tol: float = 1e-12, der0=None):
    """Bound-constrained modified Newton over θ: exact Hessians at the start and at the end,
    BFGS updates of it in between.

    Each iteration holds the coordinates at their bound whose gradient points outwards
    (Bertsekas 1982, *SIAM J. Control Optim.* 20(2): projected Newton), solves ``|B| d = −g`` on
    the others and backtracks along the projected path ``max(θ + t d, lower)``
    (:func:`bayesglmm.solvers.linesearch.backtrack_host`) until Armijo's decrease holds, up to
    the roundoff ``f_tol·|d|`` of the deviance.  B is the exact Hessian where it was last
    formed, updated by BFGS along each step (Nocedal & Wright 2006, eq. 6.19) — an exact
    Hessian costs several evaluations on a large dense block, and from an exact start the
    updates converge superlinearly — and formed afresh where an update would lose positive
    curvature.  It stops when the Newton decrement ``½ gᵀ|H|⁻¹g`` over the free coordinates,
    with the *exact* Hessian H — the predicted decrease of d, in deviance units — is at most
    ``decrement_tol`` and H is positive definite there.  At a stationary point where H has a
    negative eigenvalue (a variance at its bound that d falls away from: d is even in a scalar
    term's θ, so ∂d/∂θ = 0 there) it steps along that eigenvector, as a trust-region method would.

    ``fg(θ) -> (d, ∇d)`` serves the line search; ``derivs(θ)`` gives the exact
    :class:`Derivatives`, or None where they cannot be formed
    (``der0``: at ``theta0``, if known).  Returns ``(θ, exact Derivatives at θ or None,
    decrement, evaluations, status)`` with status ``"converged"``, ``"iteration limit"``,
    ``"line search failed"`` or ``"non-finite Hessian"``.
    """
    theta = np.maximum(np.asarray(theta0, np.float64), lower)
    der = derivs(theta) if der0 is None else der0
    exact = True  # der.hess is the exact Hessian at theta (else a BFGS approximation)
    n_evals, decrement, status, steps = 1, float("nan"), "iteration limit", 0
    while der is not None:
        free = _free(theta, der.grad, lower)
        direction = _newton_direction(der, free) if free.any() else (np.zeros(0), 0.0, True)
        if direction is None:
            status = "non-finite Hessian"
            break
        d, decrement, negative = direction
        if decrement <= decrement_tol:
            if not exact:
                der, exact = derivs(theta), True  # confirm with the exact Hessian
                if der is None:
                    status = "non-finite Hessian"
                continue
            if negative is None:
                status = "converged"
                break
            # a stationary point that is no minimum: typically a variance at its bound, where
            # d is even in θ_i (∂d/∂θ_i = 0) but falls away from it.  Leave along the direction of
            # negative curvature, into the feasible side (unit length in θ, then backtracking).
            d = negative if np.sum(negative[theta[free] <= lower[free] + 1e-10]) >= 0 else -negative
            if float(der.grad[free] @ d) > 0:
                d = -d
        if steps >= maxiter:
            break
        f0, g_free = der.value, der.grad[free]
        allowance = f_tol * max(1.0, abs(f0))

        def phi(t, theta=theta, free=free, d=d):  # d along the projected Newton path
            cand = theta.copy()
            cand[free] = theta[free] + t * d
            cand = np.maximum(cand, lower)
            try:
                f_c, g_c = fg(cand)
            except np.linalg.LinAlgError:  # S not positive definite in floating point
                f_c, g_c = np.inf, None
            return (float(f_c) if np.isfinite(f_c) else np.inf), (cand, g_c)

        def accept(t, f_c, aux, theta=theta, free=free, f0=f0, g_free=g_free, tol=allowance):
            # Armijo along the projection arc, up to roundoff in d
            return f_c <= f0 + 1e-4 * float(g_free @ (aux[0][free] - theta[free])) + tol

        from ..solvers.linesearch import backtrack_host  # (the solvers package loads JAX)

        _, f_c, (cand, g_c), n_ls, ok = backtrack_host(phi, accept, 40)
        n_evals += n_ls
        steps += 1
        if not ok or np.max(np.abs(cand - theta), initial=0.0) == 0.0:
            status = "line search failed"
            break
        s, y = cand - theta, np.asarray(g_c, np.float64) - der.grad
        theta = cand
        bs = der.hess @ s
        if float(s @ y) > 1e-10 * np.linalg.norm(s) * np.linalg.norm(y) and float(s @ bs) > 0:
            hess = der.hess - np.outer(bs, bs) / float(s @ bs) + np.outer(y, y) / float(s @ y)
            der, exact = Derivatives(float(f_c), np.asarray(g_c, np.float64), hess), False
        else:
            der, exact = derivs(theta), True
    if der is not None and not exact:
        der = derivs(theta)
    return theta, der, decrement, n_evals, status


def _lbfgsb(fg: Callable, theta0, lower, maxiter: int, scale=None, ftol: float = 1e-12,
            fg_last: Callable | None = None):
    """scipy's L-BFGS-B from ``theta0``: ``(θ, message)``; it stops when an iteration
    decreases d by less than ``ftol·max(|d|, 1)`` (relative roundoff of d: float32 deviances
    cannot meet float64's 1e-12, and L-BFGS-B then runs on until a line search fails).

    With ``scale`` (positive, one per θ entry) it runs in ``x = scale · θ``: a diagonal
    preconditioner.  L-BFGS-B's first step has unit length in x and its curvature pairs start
    from the identity, so with ``scale² ≈ diag ∇²d`` its early steps are about Newton's
    length (:func:`bayesglmm.fits.lmm.theta_scale`); the minimiser is the same.

    ``fg_last`` (optional) gives the same ``(d, ∇d)`` as ``fg`` from the program that also
    forms the Hessian, which the caller needs where L-BFGS-B stops: it serves the evaluation
    that is likely the last — the one after a point whose predicted decrease ``½‖∇_x d‖²``
    (the free coordinates, with the identity as the Hessian in x) is already below the
    stopping threshold — so that the fit does not evaluate that point twice.  A wrong guess
    costs that one Hessian, never a result: both give the same numbers; after two wrong guesses
    (L-BFGS-B creeping on with tiny steps) ``fg`` serves the rest.

    It also stops where L-BFGS-B cannot: once the best point's predicted decrease is below the
    threshold, ``STALL_EVALS`` evaluations in a row that do not lower d end it at that point
    (the caller's Newton step and exact Hessian then decide).  In float32 the gradient's
    roundoff at the optimum (|∂d/∂θ| ≈ 1 for d ≈ 18,000) keeps L-BFGS-B's line search
    evaluating the same point until its 20 tries run out: 14 evaluations there, 6 with the stop.
    """
    import scipy.optimize  # only here: its import costs a fresh process up to ~0.3 s

    s = np.ones(len(theta0)) if scale is None else np.asarray(scale, np.float64)
    lo = np.where(np.isfinite(lower), np.asarray(lower, np.float64) * s, -np.inf)  # in x
    state = {"pred": np.inf, "f": 0.0, "guesses": 0, "best": (np.inf, None, np.inf), "stall": 0}

    def fg_scipy(x):
        last = (fg_last is not None and state["guesses"] < 2
                and state["pred"] <= ftol * max(abs(state["f"]), 1.0))
        state["guesses"] += last
        try:
            v, g = (fg_last if last else fg)(x / s)
        except np.linalg.LinAlgError:
            v, g = np.inf, np.zeros_like(x)
        v, g = float(v), np.asarray(g, dtype=np.float64) / s
        best_f, best_x, best_pred = state["best"]
        if not np.isfinite(v):
            state["pred"], v, g = np.inf, np.inf, np.zeros_like(x)
        else:
            free = ~((x <= lo + 1e-10) & (g > 0))  # at a bound the gradient points out: held
            state["f"], state["pred"] = v, 0.5 * float(g[free] @ g[free])
        if v < best_f:
            state["best"], state["stall"] = (v, x.copy(), state["pred"]), 0
        elif best_pred <= ftol * max(abs(best_f), 1.0):
            state["stall"] += 1
            if state["stall"] >= STALL_EVALS:
                raise _Stalled
        return v, g

    bounds = [(b if np.isfinite(b) else None, None) for b in lo]
    try:
        res = scipy.optimize.minimize(
            fg_scipy, np.asarray(theta0, np.float64) * s, jac=True, method="L-BFGS-B",
            bounds=bounds, options={"maxiter": maxiter, "ftol": ftol, "gtol": 1e-9,
                                    "maxcor": 20})
    except _Stalled:
        return (np.maximum(state["best"][1] / s, lower),
                f"no decrease in {STALL_EVALS} evaluations within roundoff")
    return np.maximum(res.x / s, lower), str(res.message)


class _Stalled(Exception):
    """L-BFGS-B's evaluations stopped lowering d below roundoff (:func:`_lbfgsb`)."""


def minimise_theta(fg: Callable, derivs: Callable | None, theta0, lower, method: str = "newton",
                   maxiter: int = 1000, gtol: float = 1e-5, decrement_tol: float = DECREMENT_TOL,
                   f_tol: float = 1e-12, scale=None) -> ThetaFit:
    """Minimise ``d(θ)`` subject to ``θ ≥ lower`` (``-inf`` for unbounded coordinates).

    ``method``: ``"newton"`` (:func:`newton_theta` from ``theta0``), ``"lbfgs"`` (scipy's
    L-BFGS-B, then :func:`newton_theta` from where it stops) or ``"lbfgs-only"`` (L-BFGS-B; the
    derivatives are formed at its end, no Newton step taken; with ``derivs=None`` not even
    that: no Hessian at all).  A Newton fit that ends with a
    variance on its bound is checked against the ``"lbfgs"`` route from the same start, and the
    lower deviance kept: d is not convex in θ, and the projected Newton steps can reach a bound
    on the way to a better interior minimum that L-BFGS-B's more cautious path finds.
    ``converged`` when the Newton decrement is at most ``decrement_tol`` or, as before, the
    largest free gradient component is below ``gtol·max(1, |d|)``.  ``scale`` (optional, one
    positive number per θ entry) preconditions L-BFGS-B; where ``derivs`` follows L-BFGS-B,
    it also serves L-BFGS-B's likely last evaluation (:func:`_lbfgsb`'s ``fg_last``), so that
    the point the Hessian is then formed at is not evaluated twice (``derivs`` is expected to
    remember its last results, as the fits' is).
    """
    count = [0]

    def counted(fn):
        def call(x):
            count[0] += 1
            out = fn(x)
            if _progress.active():  # each evaluation (bayesglmm.progress)
                _progress.report(count[0], float(out[0]),
                                 float(np.max(np.abs(out[1]), initial=0)))
            return out
        return call

    fg_counted = counted(fg)
    last_counted = None if derivs is None else counted(lambda x: derivs(x)[:2])

    def local(start, route):  # one local search: (θ, exact Derivatives or None, decrement, msg)
        message = ""
        if route != "newton":
            start, message = _lbfgsb(fg_counted, start, lower, maxiter, scale, max(f_tol, 1e-12),
                                     last_counted)
        if derivs is None:  # L-BFGS-B alone, no Hessian formed
            return start, None, float("nan"), message
        der0 = _derivs_or_none(derivs, start)
        if der0 is None:
            return start, None, float("nan"), "the Hessian could not be formed"
        theta, der, decrement, _, status = newton_theta(
            fg_counted, lambda th: _derivs_or_none(derivs, th), start, lower,
            maxiter=0 if route == "lbfgs-only" else maxiter, decrement_tol=decrement_tol,
            f_tol=f_tol, der0=der0)
        return theta, der, decrement, message if route == "lbfgs-only" else status

    if derivs is None and method != "lbfgs-only":
        raise ValueError(f"method {method!r} needs the Hessian: pass derivs")
    theta0 = np.maximum(np.asarray(theta0, np.float64), lower)
    theta, der, decrement, status = local(theta0, method)
    if method == "newton" and np.any(np.isfinite(lower) & (theta <= lower + 1e-10)):
        other = local(theta0, "lbfgs")
        if other[1] is not None and (der is None or other[1].value < der.value):
            theta, der, decrement, status = other
    g = der.grad if der is not None else np.asarray(fg_counted(theta)[1], np.float64)
    fun = der.value if der is not None else float(fg_counted(theta)[0])
    free = _free(theta, g, lower)
    gnorm = float(np.max(np.abs(g[free]))) if free.any() else 0.0
    converged = bool(np.isfinite(fun) and (status == "converged"
                                           or gnorm < gtol * max(1.0, abs(fun))))
    return ThetaFit(theta, fun, gnorm, converged, count[0] + 1,
                    "converged" if converged else status, der, decrement)


def _derivs_or_none(derivs: Callable, theta):
    """``derivs(θ)``, or None where it cannot be formed (S not positive definite)."""
    try:
        der = derivs(theta)
    except (np.linalg.LinAlgError, ValueError):
        return None
    if not (np.isfinite(der.value) and np.all(np.isfinite(der.grad))
            and np.all(np.isfinite(der.hess))):
        return None
    return der
