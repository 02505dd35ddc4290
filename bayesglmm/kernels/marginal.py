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

Derivatives.  u*(θ) is found by a line-searched Newton loop (``lax.while_loop``) that is never
differentiated; its derivative comes from the implicit function theorem through a
``jax.custom_jvp``:  ∇_u h(u*(θ); θ) = 0  ⇒  du* = −H_uu⁻¹ · ∂_θ(∇_u h)·dθ.  The JVP rule is
itself plain differentiable JAX, so ``jax.grad`` and ``jax.hessian`` of ℓ are exact to all
orders.  :func:`objective` also writes the gradient out by the adjoint method, so that the
Hessian needs only forward-mode derivatives of u*.

H_uu is factored (linalg.psd) in the static ``mode`` of ``design.ellpack.design_mode``:
``"diag"`` (one grouping factor), ``("schur", c, k_c)`` or ``"dense"``.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from ..covariance import lam_t, lam_u
from ..design.ellpack import matvec, rmatvec
from ..families import Family
from ..linalg import psd
from ..solvers.linesearch import armijo, backtrack
from .glmm import Data, Prior

__all__ = ["Objective", "conditional_mode", "log_prior", "marginal_loglik", "objective",
           "penalised", "var_vc"]

_LOG_2PI = float(np.log(2 * np.pi))


def _split(theta, data: Data):
    kf = data.X.shape[1]
    return theta[:kf], theta[kf:]


def _eta(theta, u, data: Data):
    """η and vcp at spherical random effects u: vc = Λ(vcp)·u (covariance.lam_u)."""
    fe, vcp = _split(theta, data)
    vc = lam_u(vcp, u, data.ident, data.corr)
    return data.X @ fe + matvec(data.Z, vc) + data.offset, vcp


def _loglik_r_w(family: Family, eta, data: Data):
    """Σ loglik, r = ∂loglik/∂η and W = −∂²loglik/∂η² (elementwise, by autodiff)."""
    def total(e):
        return jnp.sum(family.loglik(data.y, e, data.n_trials, data.weights))

    ll, r = jax.value_and_grad(total)(eta)
    _, dr = jax.jvp(jax.grad(total), (eta,), (jnp.ones_like(eta),))  # diagonal Hessian
    return ll, r, -dr


def _ztwz(data: Data, w, k: int, mode):
    """ZᵀWZ: its diagonal (k,) in ``"diag"`` mode, the dense (k, k) matrix otherwise."""
    cols, vals = data.Z.cols, data.Z.vals
    if mode == "diag":
        return rmatvec(data.Z._replace(vals=vals**2), w, k)
    n, m = cols.shape
    ci = jnp.broadcast_to(cols[:, :, None], (n, m, m)).ravel()
    cj = jnp.broadcast_to(cols[:, None, :], (n, m, m)).ravel()
    contrib = (w[:, None, None] * vals[:, :, None] * vals[:, None, :]).ravel()
    return jnp.zeros((k, k), vals.dtype).at[ci, cj].add(contrib)


def _h_uu(vcp, ztwz, mode, data: Data):
    """Factorisation of H_uu = Λᵀ·ZᵀWZ·Λ + I (psd.factor): its diagonal (k,) in ``"diag"``
    mode, a Cholesky factor or a :class:`psd.SchurFactor` otherwise."""
    ident = data.ident
    if mode == "diag":
        return psd.factor(jnp.exp(2 * vcp[ident]) * ztwz + 1.0, mode, ident)
    k = ident.shape[0]
    LtM = lam_t(vcp, ztwz, ident, data.corr)  # Λᵀ M
    H = lam_t(vcp, LtM.T, ident, data.corr).T + jnp.eye(k, dtype=vcp.dtype)
    return psd.factor(H, mode, ident)


def var_vc(vcp, F, mode, data: Data):
    """diag(Λ H_uu⁻¹ Λᵀ), (k_vc,): the conditional variances of vc, from F = H_uu's factor.
    Independent terms only need diag(H_uu⁻¹); correlated terms mix each level's q effects, so
    the dense inverse is formed (k_vc is bounded in the modes that allow correlated terms)."""
    if not data.corr:
        return jnp.exp(2 * vcp[data.ident]) * psd.inv_diag(F, mode)
    k = data.ident.shape[0]
    A = psd.solve(F, jnp.eye(k, dtype=vcp.dtype), mode)  # H_uu⁻¹
    B = lam_u(vcp, A, data.ident, data.corr)  # Λ H⁻¹
    return jnp.diag(lam_u(vcp, B.T, data.ident, data.corr))


def penalised(family: Family, mode):
    """``terms(theta, u, data) -> (h, ∇_u h, F)``: h(u; θ), its gradient (k_vc,) and the
    factorisation F of its Hessian H_uu."""

    def terms(theta, u, data: Data):
        eta, vcp = _eta(theta, u, data)
        ll, r, w = _loglik_r_w(family, eta, data)
        h = -ll + 0.5 * jnp.sum(u**2)
        g = -lam_t(vcp, rmatvec(data.Z, r, u.shape[0]), data.ident, data.corr) + u
        H = _h_uu(vcp, _ztwz(data, w, u.shape[0], mode), mode, data)
        return h, g, H

    return terms


def _grad_u(family: Family):
    """∇_u h(u; θ) = −ΛᵀZᵀr + u, differentiable in (θ, u, data)."""

    def grad_u(theta, u, data: Data):
        eta, vcp = _eta(theta, u, data)
        _, r, _ = _loglik_r_w(family, eta, data)
        return -lam_t(vcp, rmatvec(data.Z, r, u.shape[0]), data.ident, data.corr) + u

    return grad_u


@functools.cache
def conditional_mode(family: Family, mode, tol: float = 1e-11, maxiter: int = 100):
    """``u_star(theta, u0, data) -> u*``: the conditional mode of the spherical random effects.

    Newton on the convex h(·; θ) from ``u0`` (only a starting value: u* does not depend on it,
    and its tangent is ignored), with an Armijo line search of at most 60 evaluations; stops
    when ‖∇_u h‖_∞ ≤ ``tol`` before a step, after ``maxiter`` steps, or when a line search
    fails.  Differentiable in θ (and data) to any order by the implicit function theorem
    (``jax.custom_jvp``).

    Examples
    --------
    >>> u_star = conditional_mode(Binomial(), "diag")        # doctest: +SKIP
    >>> u = u_star(theta, jnp.zeros(k_vc), data)             # doctest: +SKIP
    """
    terms = penalised(family, mode)
    grad_u = _grad_u(family)

    def newton(theta, u0, data):
        def hval(u):
            eta, _ = _eta(theta, u, data)
            ll = jnp.sum(family.loglik(data.y, eta, data.n_trials, data.weights))
            return -ll + 0.5 * jnp.sum(u**2)

        def cond(s):
            _, _, gmax, it = s
            return (gmax > tol) & (it < maxiter)

        def body(s):
            u, h, _, it = s
            h, g, H = terms(theta, u, data)
            d = -psd.solve(H, g, mode)  # Newton direction −H_uu⁻¹∇_u h
            t, ht, _, _, ok = backtrack(lambda t: (hval(u + t * d), ()),
                                        armijo(h, jnp.sum(g * d)), 60)
            u_new = jnp.where(ok, u + t * d, u)
            # gradient ∞-norm before the step; a failed line search at the optimum stops here
            gmax = jnp.where(ok, jnp.max(jnp.abs(g), initial=0.0), 0.0)
            return u_new, jnp.where(ok, ht, h), gmax, it + 1

        u, _, _, _ = lax.while_loop(cond, body, (u0, jnp.inf, jnp.inf, 0))
        return u

    @jax.custom_jvp
    def u_star(theta, u0, data):
        return newton(theta, lax.stop_gradient(u0), data)

    @u_star.defjvp
    def u_star_jvp(primals, tangents):
        theta, u0, data = primals
        theta_dot, _, data_dot = tangents
        u = u_star(theta, u0, data)
        # ∇_u h(u*(θ); θ) = 0  ⇒  H_uu·du* = −∂_θ∇_u h · dθ  (and likewise for data)
        _, dg = jax.jvp(lambda th, d: grad_u(th, u, d), (theta, data), (theta_dot, data_dot))
        _, _, H = terms(theta, u, data)
        return u, -psd.solve(H, dg, mode)

    return u_star


def _laplace(family: Family, mode, theta, u, data: Data):
    """ℓ at (θ, u): log p(y | fe, vc) − ½‖u‖² − ½ log det H_uu (all constants included)."""
    eta, vcp = _eta(theta, u, data)
    ll, _, w = _loglik_r_w(family, eta, data)
    H = _h_uu(vcp, _ztwz(data, w, u.shape[0], mode), mode, data)
    return ll + data.const - 0.5 * jnp.sum(u**2) - 0.5 * psd.logdet(H, mode)


def log_prior(theta, data: Data, prior: Prior):
    """log N(fe; 0, fe_p²) + log N(vcp; 0, vcp_p²), normalised."""
    fe, vcp = _split(theta, data)

    def lognorm(x, s):
        return jnp.sum(-0.5 * (x / s) ** 2 - jnp.log(s) - 0.5 * _LOG_2PI)

    return lognorm(fe, prior.fe_p) + lognorm(vcp, prior.vcp_p)


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
    mode : ``"diag"``, ``"dense"`` or ``("schur", c, k_c)`` (static): how H_uu is factored;
        ``design.ellpack.design_mode`` of the design picks the right one
    u0 : (k_vc,) optional starting value of the inner Newton solve
    inner_tol, inner_maxiter : the inner Newton solve's stopping rule (:func:`conditional_mode`)

    Returns
    -------
    scalar; ``jax.grad``/``jax.hessian`` of it are exact (implicit differentiation).

    Examples
    --------
    >>> with precision(np.float64):                                      # doctest: +SKIP
    ...     ll = marginal_loglik(jnp.r_[fe, vcp], model._data(), family=model.family)
    """
    return objective(family, mode, priors, inner_tol, inner_maxiter).value(
        theta_a, u0, data, prior)[0]


class Objective(NamedTuple):
    """The objective J(θ) = ℓ(θ) [+ log prior(θ)] and its derivatives (see :func:`objective`)."""

    value: object  # (θ, u0, data, prior) -> (J, u*)
    grad: object  # (θ, u0, data, prior) -> (∇J, (J, u*))
    vgh: object  # (θ, u0, data, prior) -> (J, ∇J, ∇²J, u*)
    jac_vc: object  # (θ, u*, data) -> dvc*/dθ, (k_vc, k_a)


@functools.cache
def objective(family: Family, mode, priors: bool, inner_tol: float = 1e-11,
              inner_maxiter: int = 100) -> Objective:
    """J(θ) = ℓ(θ) [+ log prior(θ)] and its derivatives, as pure functions.

    ``value(θ, u0, data, prior) -> (J, u*)`` differentiates through :func:`conditional_mode`'s
    custom JVP.  ``grad`` is the gradient written out by the adjoint method — with
    L(θ, u) the objective at fixed u and G = ∇_u h,

        ∇J = ∂_θL − (∂_θG)ᵀ λ,    H_uu λ = ∂_uL,

    so that ``vgh`` (``jax.jacfwd`` of ``grad``) needs only forward-mode derivatives of u*(θ):
    one trace of the inner Newton loop instead of three, which keeps compilation short.
    """
    u_star = conditional_mode(family, mode, inner_tol, inner_maxiter)
    terms = penalised(family, mode)
    grad_u = _grad_u(family)

    def L(theta, u, data, prior):
        val = _laplace(family, mode, theta, u, data)
        if priors:
            val = val + log_prior(theta, data, prior)
        return val

    def mode_of(theta, u0, data):
        if u0 is None:
            u0 = jnp.zeros(data.ident.shape[0], theta.dtype)
        return u_star(theta, u0, data)

    def value(theta, u0, data, prior):
        u = mode_of(theta, u0, data)
        return L(theta, u, data, prior), u

    def grad(theta, u0, data, prior):
        u = mode_of(theta, u0, data)
        f, (g_th, g_u) = jax.value_and_grad(L, argnums=(0, 1))(theta, u, data, prior)
        _, _, H = terms(theta, u, data)
        lam = psd.solve(H, g_u, mode)
        _, pull = jax.vjp(lambda th: grad_u(th, u, data), theta)
        return g_th - pull(lam)[0], (f, u)

    def vgh(theta, u0, data, prior):
        def g_aux(th):
            g, (f, u) = grad(th, u0, data, prior)
            return g, (f, g, u)

        H, (f, g, u) = jax.jacfwd(g_aux, has_aux=True)(theta)
        return f, g, H, u

    def jac_vc(theta, u, data):
        """dvc*/dθ (k_vc, k_a) at u = u*(θ): vc = Λ(vcp)·u, du*/dθ = −H_uu⁻¹ ∂_θG."""
        kf = data.X.shape[1]
        dG = jax.jacfwd(lambda th: grad_u(th, u, data))(theta)
        _, _, H = terms(theta, u, data)
        du = -psd.solve(H, dG, mode)
        dlam = jax.jacfwd(lambda th: lam_u(th[kf:], u, data.ident, data.corr))(theta)
        return lam_u(theta[kf:], du, data.ident, data.corr) + dlam

    return Objective(value, grad, vgh, jac_vc)
