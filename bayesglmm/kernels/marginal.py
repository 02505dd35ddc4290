"""The Laplace marginal likelihood of the mixed GLM: random effects integrated out.

Notation (lme4's, Bates et al. 2015, J. Stat. Softw. 67(1), §5): θ = (fe, vcp) with vcp the
log SDs (and, for correlated terms, the correlation parameters of covariance.py); the random
effects vc = Λ(vcp)·u with u ~ N(0, I) (Λ = diag(exp(vcp[ident])) for independent terms).
For fixed θ the conditional mode u*(θ) minimises the penalised deviance

    h(u; θ) = −Σ_i loglik(y_i | η_i) + ½‖u‖²,      η = X·fe + Z·Λ·u + offset,

whose Hessian is H_uu = ΛᵀZᵀWZΛ + I, W = diag(−∂²loglik/∂η²) (exact for the canonical links
here: logit and log).  The Laplace approximation of the marginal log-likelihood is

    ℓ(θ) = log p(y | fe, vc*) − ½‖u*‖² − ½ log det H_uu(θ, u*)                (lme4's logLik)

with every normalising constant (the family's ``const`` included), so with ``priors=False`` it
equals lme4's ``logLik(glmer(..., nAGQ = 1))``; with ``priors=True`` the objective is the
Laplace log marginal posterior density J(θ) = ℓ(θ) + log N(fe; 0, fe_p²) + log N(vcp; 0, vcp_p²).
Working in u (lme4's spherical random effects) keeps ℓ smooth where a variance goes to zero.
A family's dispersion parameters (the negative binomial's log θ) are the last entries of vcp
(kernels.glmm.split_disp): they enter loglik and W, not Λ, and their prior is N(0, disp_p²).

Derivatives.  u*(θ) is found by a line-searched Newton loop (``lax.while_loop``) that is never
differentiated; its derivative comes from the implicit function theorem through a
``jax.custom_jvp``:  ∇_u h(u*(θ); θ) = 0  ⇒  du* = −H_uu⁻¹ · ∂_θ(∇_u h)·dθ.  The JVP rule is
itself plain differentiable JAX, so ``jax.grad`` and ``jax.hessian`` of ℓ are exact to all
orders.  :func:`objective` also writes the gradient out by the adjoint method, so that the
Hessian needs only forward-mode derivatives of u*; and log det H_uu has its derivative
written out (tr(H_uu⁻¹dH_uu), from the factor), so that reverse mode never transposes the
factorisation.

H_uu is factored (kernels.h_uu, linalg.psd) in the static ``mode`` of
``design.ellpack.design_mode``: ``"diag"`` (one grouping factor), ``("block", q)`` (the
terms of one grouping factor), ``("schur_block", …)`` (those crossed with another factor),
``("schur", c, k_c)`` or ``"dense"``.  Random-effect levels
without data (all-zero columns of Z, as padding adds) are inert: u* = 0 and H_uu = 1 there,
contributing nothing to ℓ.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.custom_derivatives import SymbolicZero

from ..covariance import lam_t, lam_u
from ..design.ellpack import matvec, rmatvec
from ..families import Family
from ..linalg import psd
from ..solvers.linesearch import armijo
from .glmm import Data, Prior, split_disp
from .h_uu import factor_h_uu, logdet_h_uu, var_vc

__all__ = ["ModeState", "Objective", "conditional_mode", "glm_terms", "implicit_mode",
           "joint_fe_grad", "log_prior", "marginal_loglik", "objective", "penalised",
           "solve_mode", "var_vc"]

_LOG_2PI = float(np.log(2 * np.pi))


def _split(theta, data: Data):
    kf = data.X.shape[1]
    return theta[:kf], theta[kf:]


def _eta(theta, u, data: Data):
    """η and vcp at spherical random effects u: vc = Λ(vcp)·u (covariance.lam_u)."""
    fe, vcp = _split(theta, data)
    vc = lam_u(vcp, u, data.ident, data.corr)
    return data.X @ fe + matvec(data.Z, vc) + data.offset, vcp


def _loglik_r_w(family: Family, eta, data: Data, disp=None):
    """Σ loglik, r = ∂loglik/∂η and W = −∂²loglik/∂η² (elementwise, by autodiff); ``disp``
    the family's dispersion parameters (kernels.glmm.split_disp) or None."""
    ll, r, w, _ = _loglik_r_w_scale(family, eta, data, disp)
    return ll, r, w


def _loglik_r_w_scale(family: Family, eta, data: Data, disp=None):
    """:func:`_loglik_r_w` and Σ|loglik_i|, the scale of the rounding error of Σ loglik.

    loglik is elementwise in η, so r and W are forward-mode derivatives along ones (nested
    ``jax.jvp``): smaller graphs than the gradient of the sum, once differentiated again."""
    def rows(e):
        if disp is None:
            return family.loglik(data.y, e, data.n_trials, data.weights)
        return family.loglik(data.y, e, data.n_trials, data.weights, disp)

    def slope(e):
        return jax.jvp(rows, (e,), (jnp.ones_like(e),))[1]

    ones = jnp.ones_like(eta)
    ll_i, r = jax.jvp(rows, (eta,), (ones,))
    _, dr = jax.jvp(slope, (eta,), (ones,))
    return jnp.sum(ll_i), r, -dr, jnp.sum(jnp.abs(ll_i))


def _penalised_terms(family: Family, mode, theta, u, data: Data):
    """(h, ∇_u h, F, s, ll): h(u; θ), its gradient (k_vc,), the factorisation F of H_uu,
    s = Σ|loglik_i| + ½‖u‖² (the scale of h's rounding error) and ll = Σ loglik_i."""
    eta, vcp = _eta(theta, u, data)
    ll, r, w, scale = _loglik_r_w_scale(family, eta, data, split_disp(family, vcp))
    uu = 0.5 * jnp.sum(u**2)
    g = -lam_t(vcp, rmatvec(data.Z, r, u.shape[0]), data.ident, data.corr) + u
    H = factor_h_uu(vcp, w, mode, data)
    return -ll + uu, g, H, scale + uu, ll


def penalised(family: Family, mode):
    """``terms(theta, u, data) -> (h, ∇_u h, F)``: h(u; θ), its gradient (k_vc,) and the
    factorisation F of its Hessian H_uu."""

    def terms(theta, u, data: Data):
        return _penalised_terms(family, mode, theta, u, data)[:3]

    return terms


def _grad_u(family: Family):
    """∇_u h(u; θ) = −ΛᵀZᵀr + u, differentiable in (θ, u, data)."""

    def grad_u(theta, u, data: Data):
        eta, vcp = _eta(theta, u, data)
        _, r, _ = _loglik_r_w(family, eta, data, split_disp(family, vcp))
        return -lam_t(vcp, rmatvec(data.Z, r, u.shape[0]), data.ident, data.corr) + u

    return grad_u


# Δh = h(u + d) − h(u) is not resolvable below a few ulps of h's terms (FLAT_ULPS·ε·s)
FLAT_ULPS = 64.0
MAX_HALVINGS = 60  # line-search halvings of one Newton step


class ModeState(NamedTuple):
    """The carry of the inner Newton loop: the accepted iterate u, its Newton step, and the
    trial point u + t·d that the next iteration evaluates."""

    u: jax.Array  # (k_vc,) accepted iterate
    h: jax.Array  # () h(u; θ)
    d: jax.Array  # (k_vc,) Newton direction −H_uu⁻¹∇_u h at u
    slope: jax.Array  # () ∇_u hᵀd = −λ² (λ² = gᵀH_uu⁻¹g, the squared Newton decrement)
    flat: jax.Array  # () bool: ½λ² is below h's rounding error at u
    gmax: jax.Array  # () ‖∇_u h‖_∞ at u
    t: jax.Array  # () step length of the trial point
    ll: jax.Array  # () Σ loglik at u
    logdet: jax.Array  # () log det H_uu at u
    steps: jax.Array  # () Newton steps accepted
    done: jax.Array  # () bool: converged, at the rounding floor, or the line search failed


def solve_mode(family: Family, mode, tol: float, maxiter: int):
    """``newton(theta, u0, data) -> ModeState``: :func:`conditional_mode`'s loop, not
    differentiable (its inputs are wrapped in ``stop_gradient``: :func:`implicit_mode`
    gives the derivative).

    The backtracking line search is merged into the loop: each iteration evaluates h, ∇_u h
    and H_uu at one trial point u + t·d; Armijo's test (solvers.linesearch.armijo) accepts it
    — then its Newton step is formed and the next trial is the full step — or halves t.  A
    full step, the usual case, costs one evaluation, and the loop ends at an evaluated point,
    whose Σ loglik and log det H_uu (for ℓ) come with it.
    """

    def newton(theta, u0, data):
        stop = lax.stop_gradient  # never differentiated: no tangent reaches the loop
        theta, u0, data = stop(theta), stop(u0), stop(data)
        dtype = u0.dtype
        eps = jnp.finfo(dtype).eps

        def cond(s):
            return ~s.done

        def body(s):
            v = s.u + s.t * s.d
            h, g, H, scale, ll = _penalised_terms(family, mode, theta, v, data)
            # the trial is accepted by Armijo's test, or unjudgeable (flat: take it)
            ok = armijo(s.h, s.slope)(s.t, h) | s.flat
            d = -psd.solve(H, g, mode)  # Newton direction at v
            slope = jnp.sum(g * d)
            gmax = jnp.max(jnp.abs(g), initial=0.0)
            flat = -0.5 * slope <= FLAT_ULPS * eps * scale  # ½λ² below h's rounding
            stalled = flat & (gmax > 0.5 * s.gmax)  # ∇_u h at its rounding floor
            steps = s.steps + 1
            done_ok = (gmax <= tol) | stalled | (steps >= maxiter)
            accepted = ModeState(v, h, d, slope, flat, gmax, jnp.ones((), dtype), ll,
                                 psd.logdet(H, mode), steps, done_ok)
            t = 0.5 * s.t
            # the line search failed, or h(u0) itself is not finite
            rejected = s._replace(t=t, done=(t < 2.0**-MAX_HALVINGS) | (s.steps < 0))
            return jax.tree_util.tree_map(lambda a, b: jnp.where(ok, a, b), accepted, rejected)

        # the first trial is u0 itself (accepted unless h(u0) is not finite)
        nan = jnp.asarray(jnp.nan, dtype)
        init = ModeState(u0, jnp.asarray(jnp.inf, dtype), jnp.zeros_like(u0),
                         jnp.zeros((), dtype), jnp.asarray(False), jnp.asarray(jnp.inf, dtype),
                         jnp.ones((), dtype), nan, nan, jnp.asarray(-1), jnp.asarray(False))
        return lax.while_loop(cond, body, init)

    return newton


@functools.cache
def conditional_mode(family: Family, mode, tol: float = 1e-11, maxiter: int = 100):
    """``u_star(theta, u0, data) -> u*``: the conditional mode of the spherical random effects.

    Newton on the convex h(·; θ) from ``u0`` (only a starting value: u* does not depend on it,
    and its tangent is ignored), with Armijo backtracking of at most ``MAX_HALVINGS`` halvings
    per step (:func:`solve_mode`).  At each accepted iterate it computes g = ∇_u h, the Newton
    direction d = −H_uu⁻¹g and the decrement ½λ² = −½gᵀd (the predicted decrease of h), and
    stops there, without stepping, when

    * ‖g‖_∞ ≤ ``tol`` (converged), or
    * ½λ² ≤ ``FLAT_ULPS``·ε·s, with s = Σ|loglik_i| + ½‖u‖² the scale of h's rounding
      error, and ‖g‖_∞ fell by less than half since the previous iterate: g is at its
      rounding floor, which can lie above ``tol`` (many rows per level, large |h|), or
    * the line search fails, or after ``maxiter`` steps.

    A step whose ½λ² is below that rounding level is taken in full, unjudged: no decrease of h
    is measurable there (Armijo's test would compare equal values and backtrack for nothing),
    and the step is in Newton's quadratic region (‖d‖²_{H_uu} = λ², H_uu ⪰ I).

    Differentiable in θ (and data) to any order by the implicit function theorem
    (:func:`implicit_mode`).

    Examples
    --------
    The modes of cbpp's 15 herd effects (in units of their SD) at lme4's estimates:

    >>> import numpy as np
    >>> from bayesglmm import BinomialBayesMixedGLM, datasets
    >>> from bayesglmm._precision import precision
    >>> m = BinomialBayesMixedGLM.from_formula("incidence ~ C(period)",
    ...     {"herd": "0 + C(herd)"}, datasets.load("cbpp"), n_trials="size")
    >>> theta = np.array([-1.3985, -0.9923, -1.1287, -1.5803, -0.4428])  # (fe, log SD)
    >>> with precision(np.float64):
    ...     u_star = conditional_mode(m.family, "diag")
    ...     u = u_star(jnp.asarray(theta), jnp.zeros(m.k_vc), m._data())
    >>> np.round(np.asarray(u[:3]), 2)
    array([ 0.92, -0.84, -0.13])
    """
    newton = solve_mode(family, mode, tol, maxiter)
    at_mode = implicit_mode(family, mode)

    def u_star(theta, u0, data):
        return at_mode(theta, newton(theta, u0, data).u, data)

    return u_star


def _instantiate(t):
    """A tangent as an array: zeros for a ``SymbolicZero`` (float0 for integer primals)."""
    if not isinstance(t, SymbolicZero):
        return t
    if t.aval.dtype == jax.dtypes.float0:
        return np.zeros(t.aval.shape, jax.dtypes.float0)
    return jnp.zeros(t.aval.shape, t.aval.dtype)


@functools.cache
def implicit_mode(family: Family, mode):
    """``at_mode(theta, u, data) -> u``: the identity on u = u*(θ), already solved for,
    whose derivative is that of u*(θ) by the implicit function theorem (``jax.custom_jvp``):
    ∇_u h(u*(θ); θ) = 0  ⇒  H_uu·du* = −∂_θ∇_u h · dθ (and likewise for data).  The tangent
    of ``u`` is ignored.  Differentiable to any order: the rule calls ``at_mode`` itself, so
    that u carries du* when the rule is differentiated again."""
    terms = penalised(family, mode)
    grad_u = _grad_u(family)

    @jax.custom_jvp
    def at_mode(theta, u, data):
        return u

    def at_mode_jvp(primals, tangents):
        theta, u, data = primals
        theta_dot, _, data_dot = tangents
        u = at_mode(theta, u, data)
        zero = lambda t: isinstance(t, SymbolicZero)  # noqa: E731
        if all(map(zero, jax.tree_util.tree_leaves(data_dot, is_leaf=zero))):
            # the usual case, θ only: no zero tangents of the data's arrays to push through
            _, dg = jax.jvp(lambda th: grad_u(th, u, data), (theta,), (_instantiate(theta_dot),))
        else:
            dots = jax.tree_util.tree_map(_instantiate, (theta_dot, data_dot), is_leaf=zero)
            _, dg = jax.jvp(lambda th, d: grad_u(th, u, d), (theta, data), dots)
        _, _, H = terms(theta, u, data)
        return u, -psd.solve(H, dg, mode)

    at_mode.defjvp(at_mode_jvp, symbolic_zeros=True)

    return at_mode


def joint_fe_grad(family: Family, mode):
    """``g(θ, u*, data) -> (∇_fe ℓ_j, u*)`` (k_fep,), (k_vc,) for the joint profile
    ℓ_j(θ) = log p(y | fe, Λ(vcp)·u*(θ)) − ½‖u*(θ)‖², at u* = u*(θ) already solved for,
    differentiable in θ through u*(θ) (:func:`implicit_mode`): its Jacobian
    is ∂(∇_fe ℓ_j)/∂θ with du*/dθ; the penalty −½‖u‖² has no fe, so at fixed u the gradient
    is Xᵀr, r = ∂ log p(y | η)/∂η (traceable)."""
    at_mode = implicit_mode(family, mode)

    def g(theta, u, data: Data):
        u = at_mode(theta, u, data)
        eta, vcp = _eta(theta, u, data)
        _, r, _ = _loglik_r_w(family, eta, data, split_disp(family, vcp))
        return r @ data.X, u

    return g


def glm_terms(family: Family):
    """``terms(fe, data[, disp]) -> (ll, ∇ll, −∇²ll)``: Σ loglik(X·fe + offset) of the GLM
    without random effects (at the dispersion parameters ``disp``, for families with them), its
    gradient Xᵀr (k_fep,) and negative Hessian XᵀWX (k_fep, k_fep), for lme4's starting value
    of fe (the GLM fit; fits.laplace)."""

    def terms(fe, data: Data, disp=None):
        X = data.X
        ll, r, w = _loglik_r_w(family, X @ fe + data.offset, data, disp)
        return ll, X.T @ r, X.T @ (X * w[:, None])

    return terms


def _laplace(family: Family, mode, theta, u, data: Data):
    """ℓ at (θ, u): log p(y | fe, vc) − ½‖u‖² − ½ log det H_uu (all constants included)."""
    eta, vcp = _eta(theta, u, data)
    ll, _, w = _loglik_r_w(family, eta, data, split_disp(family, vcp))
    if data.corr:  # correlated terms: log det by autodiff through the factorisation
        logdet = psd.logdet(factor_h_uu(vcp, w, mode, data), mode)
    else:
        logdet = logdet_h_uu(mode)(vcp, w, data)
    return ll + data.const - 0.5 * jnp.sum(u**2) - 0.5 * logdet


def log_prior(theta, data: Data, prior: Prior, n_disp: int = 0):
    """log N(fe; 0, fe_p²) + log N(vcp; 0, vcp_p²), normalised; the last ``n_disp`` entries
    of vcp (a family's dispersion parameters) N(0, disp_p²) instead (disp_p: vcp_p if None)."""
    fe, vcp = _split(theta, data)

    def lognorm(x, s):
        return jnp.sum(-0.5 * (x / s) ** 2 - jnp.log(s) - 0.5 * _LOG_2PI)

    if not n_disp:
        return lognorm(fe, prior.fe_p) + lognorm(vcp, prior.vcp_p)
    k = vcp.shape[0] - n_disp
    dp = prior.vcp_p if prior.disp_p is None else prior.disp_p
    return lognorm(fe, prior.fe_p) + lognorm(vcp[:k], prior.vcp_p) + lognorm(vcp[k:], dp)


def marginal_loglik(theta_a, data: Data, prior: Prior | None = None, *, family: Family,
                    mode="dense", priors: bool = False, u0=None, inner_tol: float = 1e-11,
                    inner_maxiter: int = 100):
    """Laplace log marginal likelihood ℓ(fe, vcp) (``priors=False``, lme4's logLik), or the
    Laplace log marginal posterior ℓ + log p(fe) + log p(vcp) (``priors=True``).

    Parameters
    ----------
    theta_a : (k_fep + k_vcp,) concat(fe, vcp)
    data, prior : kernels.glmm.Data, kernels.glmm.Prior (prior unused when ``priors=False``)
    family : families.Family (static)
    mode : ``"diag"``, ``("block", q)``, ``"dense"`` or ``("schur", c, k_c)`` (static): how
        H_uu is factored; ``design.ellpack.design_mode`` of the design picks the right one
    u0 : (k_vc,) optional starting value of the inner Newton solve
    inner_tol, inner_maxiter : the inner Newton solve's stopping rule (:func:`conditional_mode`)

    Returns
    -------
    scalar; ``jax.grad``/``jax.hessian`` of it are exact (implicit differentiation).

    Examples
    --------
    lme4's log-likelihood of cbpp at its estimates (``logLik(glmer(...))`` = −92.03):

    >>> import numpy as np
    >>> from bayesglmm import BinomialBayesMixedGLM, datasets
    >>> from bayesglmm._precision import precision
    >>> m = BinomialBayesMixedGLM.from_formula("incidence ~ C(period)",
    ...     {"herd": "0 + C(herd)"}, datasets.load("cbpp"), n_trials="size")
    >>> theta = np.array([-1.3985, -0.9923, -1.1287, -1.5803, -0.4428])  # (fe, log SD)
    >>> with precision(np.float64):
    ...     ll = marginal_loglik(jnp.asarray(theta), m._data(), family=m.family, mode="diag")
    >>> round(float(ll), 2)
    -92.03
    """
    return objective(family, mode, priors, inner_tol, inner_maxiter).value(
        theta_a, u0, data, prior)[0]


class Objective(NamedTuple):
    """The objective J(θ) = ℓ(θ) [+ log prior(θ)] and its derivatives (see :func:`objective`)."""

    value: object  # (θ, u0, data, prior) -> (J, u*)
    value_only: object  # the same, not differentiable, without a second pass over the data
    grad: object  # (θ, u0, data, prior) -> (∇J, (J, u*))
    vgh: object  # (θ, u0, data, prior) -> (J, ∇J, ∇²J, u*)
    vgh_at: object  # (θ, u*, data, prior) -> (J, ∇J, ∇²J, du*/dθ (k_vc, k_a), F), u* given
    #                 (F: the factorisation of H_uu at u*, psd.factor)
    jac_vc: object  # (θ, u*, data) -> dvc*/dθ, (k_vc, k_a)
    grad_at: object = None  # (θ, u*, data, prior) -> (∇J, (J, u*, F)), u* given: the adjoint
    #                         gradient, differentiable in θ through u*(θ) (fits.integrate)


@functools.cache
def objective(family: Family, mode, priors: bool, inner_tol: float = 1e-11,
              inner_maxiter: int = 100) -> Objective:
    """J(θ) = ℓ(θ) [+ log prior(θ)] and its derivatives, as pure functions.

    ``value(θ, u0, data, prior) -> (J, u*)`` differentiates through :func:`implicit_mode`'s
    custom JVP.  ``grad`` is the gradient written out by the adjoint method — with
    L(θ, u) the objective at fixed u and G = ∇_u h,

        ∇J = ∂_θL − (∂_θG)ᵀ λ,    H_uu λ = ∂_uL,

    so that ``vgh`` (``jax.jacfwd`` of ``grad``) needs only forward-mode derivatives of u*(θ).
    ``vgh_at`` is ``vgh`` at a u* already solved for (by ``value_only``): no inner Newton
    loop, and it returns du*/dθ (from the same forward pass) and H_uu's factorisation
    instead of u*.  ``value_only`` takes ℓ's terms from the inner loop's last evaluation.
    """
    newton = solve_mode(family, mode, inner_tol, inner_maxiter)
    at_mode = implicit_mode(family, mode)
    terms = penalised(family, mode)
    grad_u = _grad_u(family)

    def L(theta, u, data, prior):
        val = _laplace(family, mode, theta, u, data)
        if priors:
            val = val + log_prior(theta, data, prior, family.n_disp)
        return val

    def solve(theta, u0, data):  # u*(θ), not differentiated
        if u0 is None:
            u0 = jnp.zeros(data.ident.shape[0], theta.dtype)
        return newton(theta, u0, data)

    def value(theta, u0, data, prior):
        u = at_mode(theta, solve(theta, u0, data).u, data)
        return L(theta, u, data, prior), u

    def value_only(theta, u0, data, prior):
        s = solve(theta, u0, data)
        # ℓ = log p(y | fe, vc*) − ½‖u*‖² − ½ log det H_uu, as _laplace
        val = s.ll + data.const - 0.5 * jnp.sum(s.u**2) - 0.5 * s.logdet
        if priors:
            val = val + log_prior(theta, data, prior, family.n_disp)
        return val, s.u

    def grad_at(theta, u, data, prior):
        u = at_mode(theta, u, data)
        f, (g_th, g_u) = jax.value_and_grad(L, argnums=(0, 1))(theta, u, data, prior)
        _, _, H = terms(theta, u, data)
        lam = psd.solve(H, g_u, mode)
        _, pull = jax.vjp(lambda th: grad_u(th, u, data), theta)
        return g_th - pull(lam)[0], (f, u, H)

    def grad(theta, u0, data, prior):
        g, (f, u, _) = grad_at(theta, solve(theta, u0, data).u, data, prior)
        return g, (f, u)

    def vgh(theta, u0, data, prior):
        u = solve(theta, u0, data).u
        f, g, H, _, _ = vgh_at(theta, u, data, prior)
        return f, g, H, u

    def vgh_at(theta, u, data, prior):
        def g_u(th):
            g, (f, uu, F) = grad_at(th, u, data, prior)
            return (g, uu), (f, g, F)

        (H, du), (f, g, F) = jax.jacfwd(g_u, has_aux=True)(theta)
        return f, g, H, du, F

    def jac_vc(theta, u, data):
        """dvc*/dθ (k_vc, k_a) at u = u*(θ): vc = Λ(vcp)·u, du*/dθ = −H_uu⁻¹ ∂_θG."""
        kf = data.X.shape[1]
        return jax.jacfwd(lambda th: lam_u(th[kf:], at_mode(th, u, data), data.ident,
                                           data.corr))(theta)

    return Objective(value, value_only, grad, vgh, vgh_at, jac_vc, grad_at)
