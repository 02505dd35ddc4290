"""The marginal Laplace fit: random effects integrated out, (fe, vcp) optimised — lme4's glmer.

Notation (lme4's, Bates et al. 2015, J. Stat. Softw. 67(1), §5): θ = (fe, vcp) with vcp the
log SDs; the random effects vc = E·u with E = diag(exp(vcp[ident])) and u ~ N(0, I).  For
fixed θ the conditional mode u*(θ) minimises the penalised deviance

    h(u; θ) = −Σ_i loglik(y_i | η_i) + ½‖u‖²,      η = X·fe + Z·E·u + offset,

whose Hessian is H_uu = E·ZᵀWZ·E + I, W = diag(−∂²loglik/∂η²) (exact for the canonical
links here: logit and log).  The Laplace approximation of the marginal log-likelihood is

    ℓ(θ) = log p(y | fe, vc*) − ½‖u*‖² − ½ log det H_uu(θ, u*)                (lme4's logLik)
         = log p(y | fe, vc*) + log N(vc*; 0, E²) + (k_vc/2)·log 2π − ½ log det(ZᵀWZ + E⁻²),

with every normalising constant (the family's ``const`` included), so with ``priors=False`` it
equals lme4's ``logLik(glmer(..., nAGQ = 1))``.  Working in u (lme4's spherical random effects)
keeps ℓ smooth where a variance goes to zero (vcp → −∞: ℓ → the GLM log-likelihood).

With ``priors=True`` the objective is the Laplace log marginal posterior density
(statsmodels' priors, normalised): ℓ(θ) + log N(fe; 0, fe_p²) + log N(vcp; 0, vcp_p²).

Derivatives.  u*(θ) is found by a line-searched Newton loop (``lax.while_loop``) that is never
differentiated; its derivative comes from the implicit function theorem through a
``jax.custom_jvp``:  ∇_u h(u*(θ); θ) = 0  ⇒  du* = −H_uu⁻¹ · ∂_θ(∇_u h)·dθ.  The JVP rule is
itself plain differentiable JAX, so ``jax.grad`` and ``jax.hessian`` of ℓ are exact to all
orders (checked against central differences in tests/test_marginal.py).  The outer Hessian is
``jax.hessian`` of the k_a = k_fep + k_vcp dimensional objective; no finite differences.

Linear algebra for H_uu (k_vc × k_vc): ``"diag"`` when every row of Z has at most one non-zero
(one grouping factor): H_uu is diagonal, O(k_vc).  ``"dense"`` otherwise (crossed or nested
factors): ZᵀWZ is scattered into a dense matrix and factored by Cholesky, O(k_vc²) memory and
O(k_vc³) time — fine to a few thousand random effects (grouseticks: 584 in three factors).

Outer optimiser: modified Newton (eigenvalues of the Hessian replaced by their absolute values)
with a backtracking line search, projected onto vcp ≥ ``LOG_SD_MIN``.  With ``priors=False`` a
variance can be estimated as zero (lme4's "boundary (singular) fit"): vcp then stops at the
bound with the gradient pushing outward; that coordinate is held fixed, reported with
``is_singular=True`` and NaN variance, and the remaining parameters are optimised (and their
covariance computed) with it fixed — as lme4 does at θ = 0.

Uncertainty of the random effects.  ``vc_sd`` is the total SD
Var(vc_j) ≈ exp(2·vcp)·(H_uu⁻¹)_jj + (J Cov(θ) Jᵀ)_jj with J = dvc*/dθ by the implicit derivative,
i.e. the conditional variance plus the uncertainty propagated from (fe, vcp);
``vc_sd_cond`` is the conditional part alone (lme4's ``condVar``).

``integrate_vcp`` adds the integrated (INLA-style) posterior: Gauss–Hermite nodes over the
standardised vcp posterior, at each node the Gaussian approximation of fe | vcp (mode and
Hessian of the Laplace log posterior in fe), mixed by the law of total variance.  See
docs/which_fit.md for which fit to use.
"""

from __future__ import annotations

import functools
import itertools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from ._precision import precision
from .families import Family
from .kernels import Data, Prior
from .sparse import matvec, rmatvec
from .solvers import STATUS_MESSAGES

__all__ = [
    "LOG_SD_MIN", "DENSE_VC_MAX", "MarginalOptions", "MarginalFit", "IntegratedFit",
    "design_mode", "conditional_mode", "marginal_loglik", "marginal_functions", "fit_marginal",
    "integrate_vcp",
]

LOG_SD_MIN = -12.0  # lower bound of vcp (SD 6e-6): a variance at the bound is "singular"
DENSE_VC_MAX = 8000  # largest k_vc for the dense Cholesky of H_uu (crossed designs)
_LOG_2PI = float(np.log(2 * np.pi))


class MarginalOptions(NamedTuple):
    maxiter: int = 100  # outer Newton iterations
    gtol: float = 1e-8  # stop when ‖∇‖_∞ over free coordinates ≤ gtol
    ftol: float = 1e-14  # ... or when the Newton decrement ½·gᵀH⁻¹g ≤ ftol·(1 + |f|)
    inner_tol: float = 1e-11  # inner Newton: stop when ‖∇_u h‖_∞ ≤ inner_tol
    inner_maxiter: int = 100
    max_step: float = 5.0  # cap on the ∞-norm of an outer Newton step
    max_ls: int = 40  # line-search halvings


class MarginalFit(NamedTuple):
    """Result of :func:`fit_marginal` (numpy arrays)."""

    fe: np.ndarray  # (k_fep,) fixed effects at the optimum
    vcp: np.ndarray  # (k_vcp,) log SDs at the optimum (LOG_SD_MIN where singular)
    cov: np.ndarray  # (k_a, k_a) inverse Hessian of −objective in (fe, vcp); NaN rows/cols
    #                   for singular components
    vc: np.ndarray  # (k_vc,) conditional modes vc* = exp(vcp[ident])·u*
    vc_sd: np.ndarray  # (k_vc,) total SD: conditional + propagated from Cov(fe, vcp)
    llf: np.ndarray  # () Laplace log-likelihood ℓ(θ̂) (lme4's logLik)
    log_post: np.ndarray  # () Laplace log marginal posterior at θ̂ (NaN when priors=False)
    success: bool
    status: int  # a key of solvers.STATUS_MESSAGES
    message: str
    grad_norm: np.ndarray  # () ∞-norm of the gradient over the free coordinates
    nit: int  # outer Newton iterations
    is_singular: bool  # some variance estimated at zero (vcp at LOG_SD_MIN)
    vc_sd_cond: np.ndarray  # (k_vc,) conditional SD sqrt(exp(2 vcp)·diag(H_uu⁻¹)) alone
    singular: np.ndarray  # (k_vcp,) bool: which components are at the bound
    integrated: "IntegratedFit | None" = None  # integrate_vcp's result when requested


class IntegratedFit(NamedTuple):
    """Posterior moments with vcp integrated over Gauss–Hermite nodes (numpy arrays)."""

    fe_mean: np.ndarray  # (k_fep,)
    vcp_mean: np.ndarray  # (k_vcp,)
    cov: np.ndarray  # (k_a, k_a) posterior covariance of (fe, vcp)
    vc_mean: np.ndarray  # (k_vc,)
    vc_sd: np.ndarray  # (k_vc,)
    nodes: np.ndarray  # (N, k_vcp) vcp at the nodes
    weights: np.ndarray  # (N,) normalised posterior weights of the nodes
    converged: np.ndarray  # (N,) bool: the fe | vcp Newton converged at each node


# --------------------------------------------------------------------------- building blocks

def design_mode(cols, vals) -> str:
    """``"diag"`` if every row of Z has at most one non-zero (H_uu diagonal), else ``"dense"``."""
    return "diag" if int((np.asarray(vals) != 0).sum(axis=1).max(initial=0)) <= 1 else "dense"


def _split(theta, data: Data):
    kf = data.X.shape[1]
    return theta[:kf], theta[kf:]


def _eta(theta, u, data: Data):
    fe, vcp = _split(theta, data)
    e = jnp.exp(vcp[data.ident])
    return data.X @ fe + matvec(data.Z, e * u) + data.offset, e


def _loglik_r_w(family: Family, eta, data: Data):
    """Σ loglik, r = ∂loglik/∂η and W = −∂²loglik/∂η² (elementwise, by autodiff)."""
    def total(e):
        return jnp.sum(family.loglik(data.y, e, data.n_trials, data.weights))

    ll, r = jax.value_and_grad(total)(eta)
    _, dr = jax.jvp(jax.grad(total), (eta,), (jnp.ones_like(eta),))  # diagonal Hessian
    return ll, r, -dr


def _ztwz(data: Data, w, k: int, mode: str):
    """ZᵀWZ: its diagonal (k,) in ``"diag"`` mode, the dense (k, k) matrix otherwise."""
    cols, vals = data.Z.cols, data.Z.vals
    if mode == "diag":
        return rmatvec(data.Z._replace(vals=vals**2), w, k)
    n, m = cols.shape
    ci = jnp.broadcast_to(cols[:, :, None], (n, m, m)).ravel()
    cj = jnp.broadcast_to(cols[:, None, :], (n, m, m)).ravel()
    contrib = (w[:, None, None] * vals[:, :, None] * vals[:, None, :]).ravel()
    return jnp.zeros((k, k), vals.dtype).at[ci, cj].add(contrib)


def _h_uu(e, ztwz, mode: str):
    """H_uu = E·ZᵀWZ·E + I (diagonal (k,) or dense (k, k))."""
    if mode == "diag":
        return e**2 * ztwz + 1.0
    return e[:, None] * ztwz * e[None, :] + jnp.eye(e.shape[0], dtype=e.dtype)


def _solve(H, b, mode: str):
    if mode == "diag":
        return b / (H if b.ndim == 1 else H[:, None])
    return jax.scipy.linalg.cho_solve((jnp.linalg.cholesky(H), True), b)


def _logdet(H, mode: str):
    if mode == "diag":
        return jnp.sum(jnp.log(H))
    return 2.0 * jnp.sum(jnp.log(jnp.diag(jnp.linalg.cholesky(H))))


def _inv_diag(H, mode: str):
    """diag(H⁻¹)."""
    if mode == "diag":
        return 1.0 / H
    L = jnp.linalg.cholesky(H)
    Li = jax.scipy.linalg.solve_triangular(L, jnp.eye(H.shape[0], dtype=H.dtype), lower=True)
    return jnp.sum(Li**2, axis=0)


def _penalised(family: Family, mode: str):
    """``h(u; θ)``, its gradient and its Hessian H_uu at (θ, u)."""

    def terms(theta, u, data: Data):
        eta, e = _eta(theta, u, data)
        ll, r, w = _loglik_r_w(family, eta, data)
        h = -ll + 0.5 * jnp.sum(u**2)
        g = -e * rmatvec(data.Z, r, u.shape[0]) + u
        H = _h_uu(e, _ztwz(data, w, u.shape[0], mode), mode)
        return h, g, H

    return terms


def _grad_u(family: Family):
    """∇_u h(u; θ) = −E·Zᵀr + u, differentiable in (θ, u, data)."""

    def grad_u(theta, u, data: Data):
        eta, e = _eta(theta, u, data)
        _, r, _ = _loglik_r_w(family, eta, data)
        return -e * rmatvec(data.Z, r, u.shape[0]) + u

    return grad_u


# --------------------------------------------------------------------------- inner problem

@functools.lru_cache(maxsize=None)
def conditional_mode(family: Family, mode: str, tol: float = 1e-11, maxiter: int = 100):
    """``u_star(theta, u0, data) -> u*``: the conditional mode of the spherical random effects.

    Line-searched Newton on the convex h(·; θ) from ``u0`` (only a starting value: u* does not
    depend on it, and its tangent is ignored).  Differentiable in θ (and data) to any order by
    the implicit function theorem (``jax.custom_jvp``).

    Examples
    --------
    >>> u_star = conditional_mode(Binomial(), "diag")        # doctest: +SKIP
    >>> u = u_star(theta, jnp.zeros(k_vc), data)             # doctest: +SKIP
    """
    terms = _penalised(family, mode)
    grad_u = _grad_u(family)

    def newton(theta, u0, data):
        def hval(u):
            eta, _ = _eta(theta, u, data)
            ll = jnp.sum(family.loglik(data.y, eta, data.n_trials, data.weights))
            return -ll + 0.5 * jnp.sum(u**2)

        def cond(s):
            u, h, gmax, it = s
            return (gmax > tol) & (it < maxiter)

        def body(s):
            u, h, _, it = s
            h, g, H = terms(theta, u, data)
            d = -_solve(H, g, mode)
            slope = jnp.sum(g * d)

            def ls_cond(c):
                t, ht, i = c
                return (~(ht <= h + 1e-4 * t * slope)) & (i < 60)

            def ls_body(c):
                t, _, i = c
                return 0.5 * t, hval(u + 0.5 * t * d), i + 1

            t, ht, _ = lax.while_loop(ls_cond, ls_body, (1.0, hval(u + d), 0))
            ok = ht <= h + 1e-4 * t * slope
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
        return u, -_solve(H, dg, mode)

    return u_star


def _laplace(family: Family, mode: str, theta, u, data: Data):
    """ℓ at (θ, u): log p(y | fe, vc) − ½‖u‖² − ½ log det H_uu (all constants included)."""
    eta, e = _eta(theta, u, data)
    ll, _, w = _loglik_r_w(family, eta, data)
    H = _h_uu(e, _ztwz(data, w, u.shape[0], mode), mode)
    return ll + data.const - 0.5 * jnp.sum(u**2) - 0.5 * _logdet(H, mode)


def _log_prior(theta, data: Data, prior: Prior):
    """log N(fe; 0, fe_p²) + log N(vcp; 0, vcp_p²), normalised."""
    fe, vcp = _split(theta, data)

    def lognorm(x, s):
        return jnp.sum(-0.5 * (x / s) ** 2 - jnp.log(s) - 0.5 * _LOG_2PI)

    return lognorm(fe, prior.fe_p) + lognorm(vcp, prior.vcp_p)


def marginal_loglik(theta_a, data: Data, prior: Prior | None = None, *, family: Family,
                    mode: str = "dense", priors: bool = False, u0=None, opts=MarginalOptions()):
    """Laplace log marginal likelihood ℓ(fe, vcp) (``priors=False``, lme4's logLik), or the
    Laplace log marginal posterior ℓ + log p(fe) + log p(vcp) (``priors=True``).

    Parameters
    ----------
    theta_a : (k_fep + k_vcp,) concat(fe, vcp)
    data, prior : kernels.Data, kernels.Prior (prior unused when ``priors=False``)
    family : families.Family (static)
    mode : ``"diag"`` or ``"dense"`` (static; see :func:`design_mode`)
    u0 : (k_vc,) optional starting value of the inner Newton solve

    Returns
    -------
    scalar; ``jax.grad``/``jax.hessian`` of it are exact (implicit differentiation).

    Examples
    --------
    >>> with precision(np.float64):                                      # doctest: +SKIP
    ...     ll = marginal_loglik(jnp.r_[fe, vcp], model._data(), family=model.family)
    """
    return _objective(family, mode, priors, opts)(theta_a, u0, data, prior)[0]


@functools.lru_cache(maxsize=None)
def _objective(family: Family, mode: str, priors: bool, opts: MarginalOptions):
    """``obj(theta, u0, data, prior) -> (value, u*)``: ℓ(θ) (+ log prior) and the mode."""
    u_star = conditional_mode(family, mode, opts.inner_tol, opts.inner_maxiter)

    def obj(theta, u0, data, prior):
        if u0 is None:
            u0 = jnp.zeros(data.ident.shape[0], theta.dtype)
        u = u_star(theta, u0, data)
        val = _laplace(family, mode, theta, u, data)
        if priors:
            val = val + _log_prior(theta, data, prior)
        return val, u

    return obj


# --------------------------------------------------------------------------- outer problem

def _abs_solve(H, b):
    """Solve with H after replacing its eigenvalues by max(|λ|, 1e-10·max|λ|)."""
    w, Q = jnp.linalg.eigh(0.5 * (H + H.T))
    w = jnp.maximum(jnp.abs(w), 1e-10 * jnp.max(jnp.abs(w), initial=0.0)
                    + jnp.finfo(H.dtype).tiny)
    return Q @ ((Q.T @ b) / w)


@functools.lru_cache(maxsize=None)
def marginal_functions(family: Family, mode: str, priors: bool, opts: MarginalOptions):
    """Jitted ``(solve, summarise, value_grad_hess)`` for one static configuration.

    ``solve(theta0, u0, data, prior) -> (theta, u, f, ginf, nit, status, active)`` minimises
    f = −objective; ``summarise(theta, u, active, data, prior)`` gives the covariance and the
    random-effect summaries at the optimum.
    """
    obj = _objective(family, mode, priors, opts)

    def neg(theta, u0, data, prior):
        val, u = obj(theta, u0, data, prior)
        return -val, u

    def value_grad_hess(theta, u0, data, prior):
        def g_aux(th):
            (f, u), g = jax.value_and_grad(neg, has_aux=True)(th, u0, data, prior)
            return g, (f, g, u)

        H, (f, g, u) = jax.jacfwd(g_aux, has_aux=True)(theta)
        return f, g, H, u

    @jax.jit
    def solve(theta0, u0, data, prior):
        kf = data.X.shape[1]
        lb = jnp.concatenate([jnp.full(kf, -jnp.inf, theta0.dtype),
                              jnp.full(theta0.shape[0] - kf, LOG_SD_MIN, theta0.dtype)])
        theta0 = jnp.maximum(theta0, lb)

        def value(th, u):
            f, u = neg(th, u, data, prior)
            return jnp.where(jnp.isfinite(f), f, jnp.inf), u

        def cond(s):
            return ~s[-1]

        def body(s):
            theta, u, f, _, it, _, _, _ = s
            f, g, H, u = value_grad_hess(theta, u, data, prior)
            # active set: at the bound with the gradient pushing outward (f decreasing there)
            active = (theta <= lb + 1e-10) & (g > 0)
            free = ~active
            Hm = jnp.where(free[:, None] & free[None, :], H, jnp.eye(H.shape[0], dtype=H.dtype))
            gm = jnp.where(free, g, 0.0)
            d = _abs_solve(Hm, -gm)
            d = jnp.where(free, d, 0.0)
            d = d * jnp.minimum(1.0, opts.max_step / (jnp.max(jnp.abs(d), initial=0.0) + 1e-300))
            ginf = jnp.max(jnp.abs(gm), initial=0.0)
            slope = jnp.sum(gm * d)
            small = (-0.5 * slope <= opts.ftol * (1 + jnp.abs(f))) | (ginf <= opts.gtol)

            def trial(t):
                th = jnp.maximum(theta + t * d, lb)
                ft, ut = value(th, u)
                return th, ft, ut

            def ls_cond(c):
                t, th, ft, ut, i = c
                return (ft > f + 1e-4 * jnp.sum(gm * (th - theta))) & (i < opts.max_ls)

            def ls_body(c):
                t, _, _, _, i = c
                th, ft, ut = trial(0.5 * t)
                return 0.5 * t, th, ft, ut, i + 1

            th1, ft1, ut1 = trial(1.0)
            t, th, ft, ut, _ = lax.while_loop(ls_cond, ls_body, (1.0, th1, ft1, ut1, 0))
            ok = ft <= f + 1e-4 * jnp.sum(gm * (th - theta))
            accept = ok | (small & (ft <= f))
            theta = jnp.where(accept, th, theta)
            u = jnp.where(accept, ut, u)
            f = jnp.where(accept, ft, f)
            finite = jnp.isfinite(f) & jnp.all(jnp.isfinite(g))
            status = jnp.where(~finite, 3, jnp.where(small, 0, jnp.where(ok, 1, 2)))
            done = small | ~ok | ~finite | (it + 1 >= opts.maxiter)
            return theta, u, f, ginf, it + 1, status, active, done

        f0, u0 = value(theta0, u0)
        kA = theta0.shape[0]
        init = (theta0, u0, f0, jnp.asarray(jnp.inf, f0.dtype), 0, 1,
                jnp.zeros(kA, bool), jnp.asarray(False))
        theta, u, f, _, it, status, _, _ = lax.while_loop(cond, body, init)
        # report the gradient and the active set at the final point
        f, g, H, u = value_grad_hess(theta, u, data, prior)
        active = (theta <= lb + 1e-10) & (g > 0)
        ginf = jnp.max(jnp.abs(jnp.where(active, 0.0, g)), initial=0.0)
        return theta, u, f, ginf, it, status, active

    u_star = conditional_mode(family, mode, opts.inner_tol, opts.inner_maxiter)
    terms = _penalised(family, mode)

    @jax.jit
    def summarise(theta, u, active, data, prior):
        kf = data.X.shape[1]
        f, g, H, u = value_grad_hess(theta, u, data, prior)
        free = ~active
        Hm = jnp.where(free[:, None] & free[None, :], H, jnp.eye(H.shape[0], dtype=H.dtype))
        w, Q = jnp.linalg.eigh(0.5 * (Hm + Hm.T))
        cov = (Q / jnp.abs(w)) @ Q.T
        cov = jnp.where(free[:, None] & free[None, :], cov, 0.0)
        # random effects: vc* = E u*, conditional variance E² diag(H_uu⁻¹), plus J Cov Jᵀ
        e = jnp.exp(theta[kf:][data.ident])
        _, _, Huu = terms(theta, u, data)
        var_cond = e**2 * _inv_diag(Huu, mode)

        def vc_of(th):
            return jnp.exp(th[kf:][data.ident]) * u_star(th, u, data)

        J = jax.jacfwd(vc_of)(theta)  # (k_vc, k_a)
        var_tot = var_cond + jnp.einsum("kp,pq,kq->k", J, cov, J)
        nan = jnp.asarray(jnp.nan, cov.dtype)
        cov = jnp.where(free[:, None] & free[None, :], cov, nan)
        return -f, cov, e * u, jnp.sqrt(var_tot), jnp.sqrt(var_cond)

    return solve, summarise, value_grad_hess


def _loglik_fn(family: Family, mode: str, opts: MarginalOptions):
    obj = _objective(family, mode, False, opts)
    return jax.jit(lambda theta, u0, data: obj(theta, u0, data, None)[0])


def fit_marginal(family: Family, data: Data, prior: Prior, k_fep: int, *, priors: bool,
                 start=None, dtype=np.float64, opts: MarginalOptions | None = None,
                 integrate: bool = False, n_points: int | None = None) -> MarginalFit:
    """Maximise the Laplace marginal likelihood (``priors=False``: lme4's glmer, nAGQ = 1) or
    the Laplace marginal posterior (``priors=True``) of θ = (fe, vcp).

    Parameters
    ----------
    family : families.Family
    data : kernels.Data, built as ``_BayesMixedGLM._data()`` does
    prior : kernels.Prior
    k_fep : int
        Number of fixed effects (``data.X.shape[1]``).
    priors : bool
        Add statsmodels' priors N(0, fe_p²) on fe and N(0, vcp_p²) on vcp.
    start : (k_fep + k_vcp,) array, optional
        Starting θ; default fe = 0, vcp = 0.
    dtype : float32 or float64
    opts : MarginalOptions, optional
    integrate : bool
        Also compute :func:`integrate_vcp` (``priors=True`` only) into ``.integrated``.
    n_points : int, optional
        Gauss–Hermite points per vcp dimension for ``integrate``.

    Returns
    -------
    MarginalFit

    Examples
    --------
    >>> m = BinomialBayesMixedGLM.from_formula("incidence ~ C(period)",
    ...     {"herd": "0 + C(herd)"}, datasets.load("cbpp"), n_trials="size")  # doctest: +SKIP
    >>> with precision(np.float64):                                         # doctest: +SKIP
    ...     fit = fit_marginal(m.family, m._data(), m._prior(), m.k_fep, priors=False)
    >>> np.exp(fit.vcp)                                                     # doctest: +SKIP
    array([0.64207])
    """
    dtype = np.dtype(dtype)
    if opts is None:
        f64 = dtype == np.float64
        opts = MarginalOptions() if f64 else MarginalOptions(gtol=1e-4, ftol=1e-9,
                                                             inner_tol=1e-5)
    if integrate and not priors:
        raise ValueError("integrate=True needs priors=True (the vcp posterior must be proper)")
    cols, vals = np.asarray(data.Z.cols), np.asarray(data.Z.vals)
    k_vc = int(data.ident.shape[0])
    k_vcp = int(np.max(np.asarray(data.ident))) + 1 if k_vc else 0
    mode = design_mode(cols, vals)
    if mode == "dense" and k_vc > DENSE_VC_MAX:
        raise ValueError(f"fit_laplace with crossed random effects forms the dense {k_vc}×{k_vc}"
                         f" Hessian of the random effects; at most {DENSE_VC_MAX} supported")
    if k_fep != data.X.shape[1]:
        raise ValueError(f"k_fep={k_fep} but X has {data.X.shape[1]} columns")
    if start is None:
        theta0 = np.zeros(k_fep + k_vcp)
    else:
        theta0 = np.asarray(start, np.float64)
        if theta0.shape != (k_fep + k_vcp,):
            raise ValueError(f"start must have shape ({k_fep + k_vcp},), got {theta0.shape}")
    solve, summarise, _ = marginal_functions(family, mode, bool(priors), opts)
    with precision(dtype):
        th0 = jnp.asarray(theta0, dtype)
        u0 = jnp.zeros(k_vc, dtype)
        theta, u, f, ginf, nit, status, active = solve(th0, u0, data, prior)
        val, cov, vc, vc_sd, vc_sd_cond = summarise(theta, u, active, data, prior)
        llf = _loglik_fn(family, mode, opts)(theta, u, data) if priors else val
        out = MarginalFit(
            fe=np.asarray(theta[:k_fep], np.float64),
            vcp=np.asarray(theta[k_fep:], np.float64),
            cov=np.asarray(cov, np.float64),
            vc=np.asarray(vc, np.float64),
            vc_sd=np.asarray(vc_sd, np.float64),
            llf=np.asarray(llf, np.float64),
            log_post=np.asarray(val if priors else np.nan, np.float64),
            success=int(status) == 0,
            status=int(status),
            message=STATUS_MESSAGES[int(status)],
            grad_norm=np.asarray(ginf, np.float64),
            nit=int(nit),
            is_singular=bool(np.any(np.asarray(active)[k_fep:])),
            vc_sd_cond=np.asarray(vc_sd_cond, np.float64),
            singular=np.asarray(active, bool)[k_fep:],
        )
    if integrate:
        out = out._replace(integrated=integrate_vcp(family, data, prior, out, n_points=n_points,
                                                    dtype=dtype, opts=opts))
    return out


# --------------------------------------------------------------------------- integrated vcp

def _grid(n_points: int, dim: int):
    """Product grid of probabilists' Gauss–Hermite nodes (N, dim) and weights (N,), Σw = 1."""
    x, w = np.polynomial.hermite_e.hermegauss(n_points)
    w = w / np.sqrt(2 * np.pi)
    nodes = np.array(list(itertools.product(x, repeat=dim))).reshape(-1, dim)
    weights = np.array([np.prod(c) for c in itertools.product(w, repeat=dim)])
    return nodes, weights


@functools.lru_cache(maxsize=None)
def _node_functions(family: Family, mode: str, opts: MarginalOptions):
    """Jitted, vmapped over nodes: the Gaussian approximation of fe | vcp at each node."""
    obj = _objective(family, mode, True, opts)
    u_star = conditional_mode(family, mode, opts.inner_tol, opts.inner_maxiter)
    terms = _penalised(family, mode)

    def at_node(vcp, fe0, u0, data, prior):
        kf = fe0.shape[0]

        def negf(fe, u):
            val, u = obj(jnp.concatenate([fe, vcp]), u, data, prior)
            return -val, u

        def vgh(fe, u):
            def g_aux(x):
                (f, uu), g = jax.value_and_grad(negf, has_aux=True)(x, u)
                return g, (f, g, uu)

            H, (f, g, uu) = jax.jacfwd(g_aux, has_aux=True)(fe)
            return f, g, H, uu

        def cond(s):
            return ~s[-1]

        def body(s):
            fe, u, f, it, _, _ = s
            f, g, H, u = vgh(fe, u)
            d = _abs_solve(H, -g)
            d = d * jnp.minimum(1.0, opts.max_step / (jnp.max(jnp.abs(d), initial=0.0) + 1e-300))
            slope = jnp.sum(g * d)
            small = (jnp.max(jnp.abs(g), initial=0.0) <= opts.gtol) | (
                -0.5 * slope <= opts.ftol * (1 + jnp.abs(f)))

            def ls_cond(c):
                t, ft, ut, i = c
                return (~(ft <= f + 1e-4 * t * slope)) & (i < opts.max_ls)

            def ls_body(c):
                t, _, _, i = c
                ft, ut = negf(fe + 0.5 * t * d, u)
                return 0.5 * t, ft, ut, i + 1

            ft1, ut1 = negf(fe + d, u)
            t, ft, ut, _ = lax.while_loop(ls_cond, ls_body, (1.0, ft1, ut1, 0))
            ok = ft <= f + 1e-4 * t * slope
            accept = ok | (small & (ft <= f))
            fe = jnp.where(accept, fe + t * d, fe)
            u = jnp.where(accept, ut, u)
            f = jnp.where(accept, ft, f)
            done = small | ~ok | (it + 1 >= opts.maxiter)
            return fe, u, f, it + 1, small, done

        f0, u0 = negf(fe0, u0)
        fe, u, _, _, conv, _ = lax.while_loop(
            cond, body, (fe0, u0, f0, 0, jnp.asarray(False), jnp.asarray(False)))
        f, g, H, u = vgh(fe, u)
        C = jnp.linalg.inv(0.5 * (H + H.T))  # Cov(fe | vcp)
        # log p̃(vcp | y) up to a constant: Laplace over fe of the Laplace log posterior
        sign, logdet = jnp.linalg.slogdet(H)
        logp = -f + 0.5 * kf * _LOG_2PI - 0.5 * logdet
        logp = jnp.where(sign > 0, logp, -jnp.inf)
        # random effects at the node: vc* and Var(vc | vcp) = E² diag(H_uu⁻¹) + J_fe C J_feᵀ
        e = jnp.exp(vcp[data.ident])
        _, _, Huu = terms(jnp.concatenate([fe, vcp]), u, data)
        Jfe = jax.jacfwd(lambda x: e * u_star(jnp.concatenate([x, vcp]), u, data))(fe)
        var_vc = e**2 * _inv_diag(Huu, mode) + jnp.einsum("kp,pq,kq->k", Jfe, C, Jfe)
        return fe, C, logp, e * u, var_vc, conv

    return jax.jit(jax.vmap(at_node, in_axes=(0, 0, None, None, None)))


def integrate_vcp(family: Family, data: Data, prior: Prior, fit: MarginalFit, *,
                  n_points: int | None = None, dtype=np.float64,
                  opts: MarginalOptions | None = None) -> IntegratedFit:
    """Integrate over vcp (INLA-style) around a ``priors=True`` :func:`fit_marginal` fit.

    With m, Σ the mode and the vcp block of ``fit.cov`` and Σ = LLᵀ, the nodes are
    vcp_k = m + L·z_k on a product Gauss–Hermite grid (``n_points`` per dimension: 7 for one
    variance component, 5 for two or three, 3 above).  At each node the Laplace log posterior
    in fe is maximised (fe_k, C_k = inverse Hessian), and

        log p̃(vcp_k | y) = objective(fe_k, vcp_k) + (k_fep/2)·log 2π − ½ log det C_k⁻¹,
        π_k ∝ w_k · p̃(vcp_k | y) / N(z_k; 0, I)             (importance-corrected GH weights)

    Moments mix by the law of total variance: E[fe] = Σ π_k fe_k,
    Cov(fe) = Σ π_k (C_k + (fe_k − E fe)(fe_k − E fe)ᵀ), likewise vc with Var(vc | vcp_k) =
    exp(2 vcp_k)·diag(H_uu⁻¹) + J_fe C_k J_feᵀ, and vcp's moments from the weighted nodes.
    """
    dtype = np.dtype(dtype)
    if opts is None:
        opts = MarginalOptions() if dtype == np.float64 else MarginalOptions(
            gtol=1e-4, ftol=1e-9, inner_tol=1e-5)
    kf = fit.fe.shape[0]
    kp = fit.vcp.shape[0]
    if fit.is_singular or not np.all(np.isfinite(fit.cov)):
        raise ValueError("integrate_vcp needs a non-singular priors=True fit")
    if n_points is None:
        n_points = 7 if kp == 1 else (5 if kp <= 3 else 3)
    z, wz = _grid(int(n_points), kp)
    S = fit.cov[kf:, kf:]
    L = np.linalg.cholesky(0.5 * (S + S.T))
    vcp_nodes = fit.vcp[None, :] + z @ L.T
    # start fe at its regression on vcp under the joint Gaussian at the mode
    B = np.linalg.solve(S, fit.cov[kf:, :kf]).T  # (kf, kp)
    fe_start = fit.fe[None, :] + (vcp_nodes - fit.vcp[None, :]) @ B.T
    mode = design_mode(np.asarray(data.Z.cols), np.asarray(data.Z.vals))
    fn = _node_functions(family, mode, opts)
    with precision(dtype):
        u0 = jnp.asarray(fit.vc * np.exp(-fit.vcp[np.asarray(data.ident)]), dtype)
        fe_k, C_k, logp, vc_k, var_k, conv = fn(jnp.asarray(vcp_nodes, dtype),
                                                jnp.asarray(fe_start, dtype), u0, data, prior)
        fe_k, C_k, logp = (np.asarray(x, np.float64) for x in (fe_k, C_k, logp))
        vc_k, var_k, conv = np.asarray(vc_k, np.float64), np.asarray(var_k, np.float64), \
            np.asarray(conv)
    lw = np.log(wz) + logp + 0.5 * np.sum(z**2, axis=1)
    lw = np.where(np.isfinite(lw), lw, -np.inf)
    pi = np.exp(lw - np.max(lw))
    pi /= pi.sum()
    fe_mean = pi @ fe_k
    vcp_mean = pi @ vcp_nodes
    theta_k = np.concatenate([fe_k, vcp_nodes], axis=1)
    mean = np.concatenate([fe_mean, vcp_mean])
    dev = theta_k - mean
    cov = np.einsum("k,kp,kq->pq", pi, dev, dev)
    cov[:kf, :kf] += np.einsum("k,kpq->pq", pi, C_k)
    vc_mean = pi @ vc_k
    vc_var = pi @ (var_k + (vc_k - vc_mean) ** 2)
    return IntegratedFit(fe_mean=fe_mean, vcp_mean=vcp_mean, cov=cov, vc_mean=vc_mean,
                         vc_sd=np.sqrt(vc_var), nodes=vcp_nodes, weights=pi, converged=conv)
