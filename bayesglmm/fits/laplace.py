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

Linear algebra for H_uu (k_vc × k_vc), chosen by :func:`design_mode`: ``"diag"`` when every
row of Z has at most one non-zero (one grouping factor): H_uu is diagonal, O(k_vc).  Otherwise
(crossed or nested factors) ZᵀWZ is scattered into a dense matrix (O(k_vc²) memory, at most
``DENSE_VC_MAX`` random effects); the largest grouping factor's block is diagonal and is
eliminated exactly (``("schur", c, k_c)``), so Cholesky works on the Schur complement of the
other factors only (grouseticks: 584 random effects, a 181 × 181 Cholesky); ``"dense"``
(Cholesky of all of H_uu) when no factor's block is diagonal.

Outer optimiser: modified Newton (eigenvalues of the Hessian replaced by their absolute values)
with a backtracking line search, projected onto vcp ≥ ``LOG_SD_MIN``.  With ``priors=False`` a
variance can be estimated as zero (lme4's "boundary (singular) fit"): vcp then stops at the
bound with the gradient pushing outward, or stops earlier where ℓ is flat to tolerance
(ℓ − ℓ(σ = 0) = O(σ²)).  A component at the bound or with SD < ``SINGULAR_SD`` (lme4's
``isSingular`` tolerance) is reported with ``is_singular=True`` and NaN variance, and the
covariance of the other parameters is computed with it fixed — as lme4 does at θ = 0.

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

from .._precision import precision
from ..families import Family
from ..kernels.glmm import Data, Prior
from ..solvers import STATUS_MESSAGES
from ..covariance import lam_t, lam_u
from ..design.ellpack import matvec, rmatvec

__all__ = [
    "DENSE_VC_MAX",
    "LOG_SD_MIN",
    "SINGULAR_SD",
    "IntegratedFit",
    "MarginalFit",
    "MarginalOptions",
    "conditional_mode",
    "design_mode",
    "fit_marginal",
    "integrate_vcp",
    "marginal_functions",
    "marginal_loglik",
]

LOG_SD_MIN = -12.0  # lower bound of vcp (SD 6e-6)
SINGULAR_SD = 1e-4  # a fitted SD below this is reported as zero ("singular", as lme4)
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


_DEFAULT_OPTS = MarginalOptions()


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
    integrated: IntegratedFit | None = None  # integrate_vcp's result when requested


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

def design_mode(cols, vals, ident) -> str | tuple:
    """How H_uu is factored (static): ``"diag"``, ``("schur", c, k_c)`` or ``"dense"``.

    ``"diag"`` when every row of Z has at most one non-zero: H_uu is diagonal.  Otherwise, if
    some variance component c has no two non-zeros in one row (a grouping factor), its k_c
    columns form a diagonal block D of H_uu = [[D, B], [Bᵀ, C]], eliminated exactly:
    log det H = Σ log D + log det(C − BᵀD⁻¹B), so Cholesky works on the Schur complement of
    size k_vc − k_c only (the largest such component is chosen; grouseticks: 584 → 181).
    ``"dense"``: Cholesky of the full H_uu.
    """
    nz = np.asarray(vals) != 0
    cols = np.asarray(cols)
    ident = np.asarray(ident)
    if int(nz.sum(axis=1).max(initial=0)) <= 1:
        return "diag"
    best, size = None, 0
    for c in np.unique(ident):
        in_c = nz & (ident[cols] == c)
        k_c = int(np.sum(ident == c))
        if int(in_c.sum(axis=1).max(initial=0)) <= 1 and k_c > size:
            best, size = int(c), k_c
    if best is None or size == len(ident):
        return "dense"
    return ("schur", best, size)


def _split(theta, data: Data):
    kf = data.X.shape[1]
    return theta[:kf], theta[kf:]


def _eta(theta, u, data: Data):
    """η and vcp at spherical random effects u: vc = Λ(vcp)·u (covstruct.lam_u)."""
    fe, vcp = _split(theta, data)
    vc = lam_u(vcp, u, data.ident, data.corr)
    return data.X @ fe + matvec(data.Z, vc) + data.offset, vcp


def _var_vc(vcp, F, mode, data: Data):
    """diag(Λ H_uu⁻¹ Λᵀ): the conditional variances of vc.  Independent terms only need
    diag(H_uu⁻¹); correlated terms mix each level's q effects, so the dense inverse is formed
    (k_vc ≤ DENSE_VC_MAX in the modes that allow correlated terms)."""
    if not data.corr:
        return jnp.exp(2 * vcp[data.ident]) * _inv_diag(F, mode)
    k = data.ident.shape[0]
    A = _solve(F, jnp.eye(k, dtype=vcp.dtype), mode)  # H_uu⁻¹
    B = lam_u(vcp, A, data.ident, data.corr)  # Λ H⁻¹
    return jnp.diag(lam_u(vcp, B.T, data.ident, data.corr))


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


class _Schur(NamedTuple):
    d: jax.Array  # (k_c,) diagonal block D of H_uu (component c)
    Y: jax.Array  # (k_c, k_r) D⁻¹B
    L: jax.Array  # (k_r, k_r) Cholesky factor of S = C − BᵀD⁻¹B
    idx_d: jax.Array  # (k_c,) columns of component c
    idx_r: jax.Array  # (k_r,) the other columns


def _h_uu(vcp, ztwz, mode, data: Data):
    """Factorisation of H_uu = Λᵀ·ZᵀWZ·Λ + I: its diagonal (k,) (``"diag"``), the Cholesky
    factor (``"dense"``) or a :class:`_Schur` (``("schur", c, k_c)``)."""
    ident = data.ident
    if mode == "diag":
        return jnp.exp(2 * vcp[ident]) * ztwz + 1.0
    k = ident.shape[0]
    LtM = lam_t(vcp, ztwz, ident, data.corr)  # Λᵀ M
    H = lam_t(vcp, LtM.T, ident, data.corr).T + jnp.eye(k, dtype=vcp.dtype)
    if mode == "dense":
        return jnp.linalg.cholesky(H)
    _, c, kc = mode
    idx_d = jnp.nonzero(ident == c, size=kc)[0]
    idx_r = jnp.nonzero(ident != c, size=k - kc)[0]
    d = jnp.diag(H)[idx_d]
    B = H[idx_d][:, idx_r]
    Y = B / d[:, None]
    S = H[idx_r][:, idx_r] - B.T @ Y
    return _Schur(d, Y, jnp.linalg.cholesky(S), idx_d, idx_r)


def _solve(F, b, mode):
    """H_uu⁻¹ b for b of shape (k,) or (k, p), from the factorisation F."""
    if mode == "diag":
        return b / (F if b.ndim == 1 else F[:, None])
    if mode == "dense":
        return jax.scipy.linalg.cho_solve((F, True), b)
    bd, br = b[F.idx_d], b[F.idx_r]
    dd = F.d if b.ndim == 1 else F.d[:, None]
    xr = jax.scipy.linalg.cho_solve((F.L, True), br - F.Y.T @ bd)
    xd = bd / dd - F.Y @ xr
    return _unpermute(F, xd, xr)


def _unpermute(F, xd, xr):
    """The vector (or rows) with ``xd`` at ``idx_d`` and ``xr`` at ``idx_r`` — a gather, so
    that reverse-mode autodiff transposes it without a non-unique scatter."""
    inv = jnp.argsort(jnp.concatenate([F.idx_d, F.idx_r]))
    return jnp.concatenate([xd, xr], axis=0)[inv]


def _logdet(F, mode):
    if mode == "diag":
        return jnp.sum(jnp.log(F))
    if mode == "dense":
        return 2.0 * jnp.sum(jnp.log(jnp.diag(F)))
    return jnp.sum(jnp.log(F.d)) + 2.0 * jnp.sum(jnp.log(jnp.diag(F.L)))


def _inv_diag(F, mode):
    """diag(H_uu⁻¹)."""
    if mode == "diag":
        return 1.0 / F
    tri = jax.scipy.linalg.solve_triangular
    if mode == "dense":
        Li = tri(F, jnp.eye(F.shape[0], dtype=F.dtype), lower=True)
        return jnp.sum(Li**2, axis=0)
    Li = tri(F.L, jnp.eye(F.L.shape[0], dtype=F.L.dtype), lower=True)
    # (H⁻¹)_rr = S⁻¹;  (H⁻¹)_dd = D⁻¹ + Y S⁻¹ Yᵀ
    W = tri(F.L, F.Y.T, lower=True)
    return _unpermute(F, 1.0 / F.d + jnp.sum(W**2, axis=0), jnp.sum(Li**2, axis=0))


def _penalised(family: Family, mode: str):
    """``h(u; θ)``, its gradient and its Hessian H_uu at (θ, u)."""

    def terms(theta, u, data: Data):
        eta, vcp = _eta(theta, u, data)
        ll, r, w = _loglik_r_w(family, eta, data)
        h = -ll + 0.5 * jnp.sum(u**2)
        g = -lam_t(vcp, rmatvec(data.Z, r, u.shape[0]), data.ident, data.corr) + u
        H = _h_uu(vcp, _ztwz(data, w, u.shape[0], mode), mode, data)
        return h, g, H

    return terms


def _grad_u(family: Family):
    """∇_u h(u; θ) = −E·Zᵀr + u, differentiable in (θ, u, data)."""

    def grad_u(theta, u, data: Data):
        eta, vcp = _eta(theta, u, data)
        _, r, _ = _loglik_r_w(family, eta, data)
        return -lam_t(vcp, rmatvec(data.Z, r, u.shape[0]), data.ident, data.corr) + u

    return grad_u


# --------------------------------------------------------------------------- inner problem

@functools.cache
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
            _, _, gmax, it = s
            return (gmax > tol) & (it < maxiter)

        def body(s):
            u, h, _, it = s
            h, g, H = terms(theta, u, data)
            d = -_solve(H, g, mode)
            slope = jnp.sum(g * d)

            def ls_cond(c):
                t, ht, i = c
                return (i == 0) | ((~(ht <= h + 1e-4 * t * slope)) & (i < 60))

            def ls_body(c):
                t, _, i = c
                return 0.5 * t, hval(u + 0.5 * t * d), i + 1

            t, ht, _ = lax.while_loop(ls_cond, ls_body, (jnp.asarray(2.0, h.dtype), h, 0))
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
    eta, vcp = _eta(theta, u, data)
    ll, _, w = _loglik_r_w(family, eta, data)
    H = _h_uu(vcp, _ztwz(data, w, u.shape[0], mode), mode, data)
    return ll + data.const - 0.5 * jnp.sum(u**2) - 0.5 * _logdet(H, mode)


def _log_prior(theta, data: Data, prior: Prior):
    """log N(fe; 0, fe_p²) + log N(vcp; 0, vcp_p²), normalised."""
    fe, vcp = _split(theta, data)

    def lognorm(x, s):
        return jnp.sum(-0.5 * (x / s) ** 2 - jnp.log(s) - 0.5 * _LOG_2PI)

    return lognorm(fe, prior.fe_p) + lognorm(vcp, prior.vcp_p)


def marginal_loglik(theta_a, data: Data, prior: Prior | None = None, *, family: Family,
                    mode="dense", priors: bool = False, u0=None, opts=_DEFAULT_OPTS):
    """Laplace log marginal likelihood ℓ(fe, vcp) (``priors=False``, lme4's logLik), or the
    Laplace log marginal posterior ℓ + log p(fe) + log p(vcp) (``priors=True``).

    Parameters
    ----------
    theta_a : (k_fep + k_vcp,) concat(fe, vcp)
    data, prior : kernels.Data, kernels.Prior (prior unused when ``priors=False``)
    family : families.Family (static)
    mode : ``"diag"``, ``"dense"`` or ``("schur", c, k_c)`` (static): how H_uu is factored;
        ``design_mode(model._cols, model._vals, model.ident)`` picks the right one
    u0 : (k_vc,) optional starting value of the inner Newton solve

    Returns
    -------
    scalar; ``jax.grad``/``jax.hessian`` of it are exact (implicit differentiation).

    Examples
    --------
    >>> with precision(np.float64):                                      # doctest: +SKIP
    ...     ll = marginal_loglik(jnp.r_[fe, vcp], model._data(), family=model.family)
    """
    return _objective(family, mode, priors, opts)[0](theta_a, u0, data, prior)[0]


@functools.cache
def _objective(family: Family, mode: str, priors: bool, opts: MarginalOptions):
    """``(value, grad, vgh, jac_vc)`` of the objective J(θ) = ℓ(θ) [+ log prior(θ)].

    ``value(θ, u0, data, prior) -> (J, u*)`` differentiates through :func:`conditional_mode`'s
    custom JVP.  ``grad`` is the gradient written out by the adjoint method — with
    L(θ, u) the objective at fixed u and G = ∇_u h,

        ∇J = ∂_θL − (∂_θG)ᵀ λ,    H_uu λ = ∂_uL,

    so that ``vgh`` (``jax.jacfwd`` of ``grad``) needs only forward-mode derivatives of u*(θ):
    one trace of the inner Newton loop instead of three, which keeps compilation short.
    """
    u_star = conditional_mode(family, mode, opts.inner_tol, opts.inner_maxiter)
    terms = _penalised(family, mode)
    grad_u = _grad_u(family)

    def L(theta, u, data, prior):
        val = _laplace(family, mode, theta, u, data)
        if priors:
            val = val + _log_prior(theta, data, prior)
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
        lam = _solve(H, g_u, mode)
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
        du = -_solve(H, dG, mode)
        dlam = jax.jacfwd(lambda th: lam_u(th[kf:], u, data.ident, data.corr))(theta)
        return lam_u(theta[kf:], du, data.ident, data.corr) + dlam

    return value, grad, vgh, jac_vc


# --------------------------------------------------------------------------- outer problem

def _abs_solve(H, b):
    """Solve with H after replacing its eigenvalues by max(|λ|, 1e-10·max|λ|)."""
    w, Q = jnp.linalg.eigh(0.5 * (H + H.T))
    w = jnp.maximum(jnp.abs(w), 1e-10 * jnp.max(jnp.abs(w), initial=0.0)
                    + jnp.finfo(H.dtype).tiny)
    return Q @ ((Q.T @ b) / w)


class _Loop(NamedTuple):
    x: jax.Array  # (k,) current point
    u: jax.Array  # (k_vc,) conditional mode at x (warm start of the inner solve)
    f: jax.Array  # () objective (minimised) at x
    g: jax.Array  # (k,) its gradient
    H: jax.Array  # (k, k) its Hessian
    it: jax.Array  # () evaluations so far
    status: jax.Array  # () a key of STATUS_MESSAGES
    ls_failed: jax.Array  # () bool: the last line search failed
    done: jax.Array  # () bool


def _newton_loop(vgh, value, x0, u0, lb, opts: MarginalOptions) -> _Loop:
    """Projected modified Newton for min f(x) s.t. x ≥ lb, inside ``lax.while_loop``.

    Each iteration first evaluates (f, g, H) at x, so the final state holds them at the
    returned point.  Coordinates at the bound with g > 0 are held fixed (active set); the step
    on the others solves |H|·d = −g (eigenvalues by absolute value), capped at
    ``opts.max_step`` in ∞-norm, then a projected backtracking (Armijo) line search.
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
        d = _abs_solve(jnp.where(free[:, None] & free[None, :], H, eye), -gm)
        d = jnp.where(free, d, 0.0)
        d = d * jnp.minimum(1.0, opts.max_step / (jnp.max(jnp.abs(d), initial=0.0) + 1e-300))
        slope = jnp.sum(gm * d)
        small = ((jnp.max(jnp.abs(gm), initial=0.0) <= opts.gtol)
                 | (-0.5 * slope <= opts.ftol * (1 + jnp.abs(f))))
        finite = jnp.isfinite(f) & jnp.all(jnp.isfinite(g)) & jnp.all(jnp.isfinite(H))
        stop = small | ~finite | s.ls_failed | (s.it >= opts.maxiter)
        status = jnp.where(small, 0, jnp.where(~finite, 3, jnp.where(s.ls_failed, 2, 1)))

        def armijo(c):
            _, xt, ft, _, _ = c
            return ft <= f + 1e-4 * jnp.sum(gm * (xt - s.x))

        def ls_cond(c):
            return (c[4] == 0) | (~armijo(c) & (c[4] <= opts.max_ls) & ~stop)

        def ls_body(c):
            t = 0.5 * c[0]
            xt = jnp.maximum(s.x + t * d, lb)
            ft, ut = value(xt, u)
            return t, xt, jnp.where(jnp.isfinite(ft), ft, jnp.inf), ut, c[4] + 1

        c = lax.while_loop(ls_cond, ls_body, (jnp.asarray(2.0, f.dtype), s.x, f, u, 0))
        ok = armijo(c) & ~stop
        x = jnp.where(ok, c[1], s.x)
        u_next = jnp.where(ok, c[3], u)
        return _Loop(x, u_next, f, g, H, s.it + 1, status, ~ok & ~stop, stop)

    init = _Loop(jnp.maximum(x0, lb), u0, jnp.zeros((), x0.dtype), jnp.zeros_like(x0),
                 eye, jnp.asarray(0), jnp.asarray(1), jnp.asarray(False), jnp.asarray(False))
    return lax.while_loop(cond, body, init)


@functools.cache
def marginal_functions(family: Family, mode: str, priors: bool, opts: MarginalOptions):
    """The jitted ``solve(theta0, u0, data, prior)`` for one static configuration.

    Returns ``(theta, u, objective, llf, grad_inf, nit, status, active, cov, vc, vc_sd,
    vc_sd_cond)`` at the optimum: the maximiser of J(θ) = ℓ(θ) [+ log prior], the Laplace
    log-likelihood ℓ(θ), Cov(θ) = (−∇²J)⁻¹ on the free coordinates (NaN on the active ones)
    and the random-effect summaries (see the module docstring).
    """
    value, _, vgh, jac_vc = _objective(family, mode, priors, opts)

    def neg_vgh(x, u, data, prior):
        f, g, H, u = vgh(x, u, data, prior)
        return -f, -g, -H, u

    def neg_value(x, u, data, prior):
        f, u = value(x, u, data, prior)
        return -f, u

    @jax.jit
    def solve(theta0, u0, data, prior):
        kf = data.X.shape[1]
        k_sd = theta0.shape[0] - kf - sum(b.z_idx.shape[0] for b in data.corr)
        lb = jnp.concatenate([jnp.full(kf, -jnp.inf, theta0.dtype),
                              jnp.full(k_sd, LOG_SD_MIN, theta0.dtype),
                              jnp.full(theta0.shape[0] - kf - k_sd, -jnp.inf, theta0.dtype)])
        s = _newton_loop(lambda x, u: neg_vgh(x, u, data, prior),
                         lambda x, u: neg_value(x, u, data, prior), theta0, u0, lb, opts)
        theta, u, H = s.x, s.u, s.H
        # singular: at the bound with the gradient pushing outward, or a SD below
        # SINGULAR_SD where ℓ is flat to the optimiser's tolerance (lme4's isSingular, tol 1e-4)
        idx = jnp.arange(theta.shape[0])
        is_vcp = (idx >= kf) & (idx < kf + k_sd)  # log SDs (not correlation parameters)
        active = ((theta <= lb + 1e-10) & (s.g > 0)) | (is_vcp & (theta < np.log(SINGULAR_SD)))
        free = ~active
        both = free[:, None] & free[None, :]
        w, Q = jnp.linalg.eigh(jnp.where(both, 0.5 * (H + H.T), jnp.eye(H.shape[0], dtype=H.dtype)))
        cov = jnp.where(both, (Q / jnp.abs(w)) @ Q.T, 0.0)
        ginf = jnp.max(jnp.abs(jnp.where(free, s.g, 0.0)), initial=0.0)
        # random effects: vc* = E u*; Var = E² diag(H_uu⁻¹) (conditional) + J Cov(θ) Jᵀ
        _, _, Huu = _penalised(family, mode)(theta, u, data)
        var_cond = _var_vc(theta[kf:], Huu, mode, data)
        J = jac_vc(theta, u, data)
        var_tot = var_cond + jnp.einsum("kp,pq,kq->k", J, cov, J)
        cov = jnp.where(both, cov, jnp.nan)
        obj = -s.f
        llf = obj - _log_prior(theta, data, prior) if priors else obj
        return (theta, u, obj, llf, ginf, s.it, s.status, active, cov,
                lam_u(theta[kf:], u, data.ident, data.corr),
                jnp.sqrt(var_tot), jnp.sqrt(var_cond))

    return solve


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
    k_vcp += sum(int(b.z_idx.shape[0]) for b in data.corr)  # correlation parameters
    mode = design_mode(cols, vals, np.asarray(data.ident))
    if data.corr and mode == "diag":  # pragma: no cover - a correlated term has q ≥ 2 per row
        raise ValueError("correlated terms need the dense or Schur factorisation")
    if mode != "diag" and k_vc > DENSE_VC_MAX:
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
    solve = marginal_functions(family, mode, bool(priors), opts)
    with precision(dtype):
        th0 = jnp.asarray(theta0, dtype)
        u0 = jnp.zeros(k_vc, dtype)
        (theta, _, obj, llf, ginf, nit, status, active, cov, vc, vc_sd,
         vc_sd_cond) = jax.device_get(solve(th0, u0, data, prior))
    status = int(status)
    active = np.asarray(active, bool)
    out = MarginalFit(
        fe=np.asarray(theta[:k_fep], np.float64),
        vcp=np.asarray(theta[k_fep:], np.float64),
        cov=np.asarray(cov, np.float64),
        vc=np.asarray(vc, np.float64),
        vc_sd=np.asarray(vc_sd, np.float64),
        llf=np.asarray(llf, np.float64),
        log_post=np.asarray(obj if priors else np.nan, np.float64),
        success=status == 0,
        status=status,
        message=STATUS_MESSAGES[status],
        grad_norm=np.asarray(ginf, np.float64),
        nit=max(int(nit) - 1, 0),  # Newton steps (the last iteration only evaluates)
        is_singular=bool(np.any(active[k_fep:])),
        vc_sd_cond=np.asarray(vc_sd_cond, np.float64),
        singular=active[k_fep:],
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


@functools.cache
def _node_functions(family: Family, mode: str, opts: MarginalOptions):
    """Jitted, vmapped over nodes: the Gaussian approximation of fe | vcp at each node."""
    value, grad, _, jac_vc = _objective(family, mode, True, opts)
    terms = _penalised(family, mode)

    def at_node(vcp, fe0, u0, data, prior):
        kf = fe0.shape[0]

        def full(fe):
            return jnp.concatenate([fe, vcp])

        def neg_value(fe, u):
            f, u = value(full(fe), u, data, prior)
            return -f, u

        def neg_vgh(fe, u):
            def g_aux(x):
                g, (f, uu) = grad(full(x), u, data, prior)
                return -g[:kf], (-f, -g[:kf], uu)

            H, (f, g, uu) = jax.jacfwd(g_aux, has_aux=True)(fe)
            return f, g, H, uu

        lb = jnp.full(kf, -jnp.inf, fe0.dtype)
        s = _newton_loop(neg_vgh, neg_value, fe0, u0, lb, opts)
        fe, u, H = s.x, s.u, s.H
        C = jnp.linalg.inv(0.5 * (H + H.T))  # Cov(fe | vcp)
        # skewness correction of the mean (third-order Laplace expansion): with f the log
        # density and C = (−∇²f)⁻¹, E[fe | vcp] ≈ fe* + ½ C ∇_fe tr(C ∇²f); 1-D: ½ f‴σ⁴
        dq = jax.jacfwd(lambda x: jnp.sum(C * neg_vgh(x, u)[2]))(fe)
        shift = -0.5 * C @ dq
        # log p̃(vcp | y) up to a constant: Laplace over fe of the Laplace log posterior
        sign, logdet = jnp.linalg.slogdet(H)
        logp = jnp.where(sign > 0, -s.f + 0.5 * kf * _LOG_2PI - 0.5 * logdet, -jnp.inf)
        # random effects at the node: vc* and Var(vc | vcp) = E² diag(H_uu⁻¹) + J_fe C J_feᵀ
        theta = full(fe)
        _, _, Huu = terms(theta, u, data)
        Jfe = jac_vc(theta, u, data)[:, :kf]
        var_vc = _var_vc(vcp, Huu, mode, data) + jnp.einsum("kp,pq,kq->k", Jfe, C, Jfe)
        return fe, shift, C, logp, lam_u(vcp, u, data.ident, data.corr), var_vc, s.status == 0

    return jax.jit(jax.vmap(at_node, in_axes=(0, 0, None, None, None)))


def integrate_vcp(family: Family, data: Data, prior: Prior, fit: MarginalFit, *,
                  n_points: int | None = None, dtype=np.float64,
                  opts: MarginalOptions | None = None, skew: bool = True) -> IntegratedFit:
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
    mode = design_mode(np.asarray(data.Z.cols), np.asarray(data.Z.vals),
                       np.asarray(data.ident))
    fn = _node_functions(family, mode, opts)
    with precision(dtype):
        u0 = (jnp.zeros(fit.vc.shape, dtype) if data.corr else
              jnp.asarray(fit.vc * np.exp(-fit.vcp[np.asarray(data.ident)]), dtype))
        fe_k, shift_k, C_k, logp, vc_k, var_k, conv = fn(jnp.asarray(vcp_nodes, dtype),
                                                jnp.asarray(fe_start, dtype), u0, data, prior)
        fe_k, shift_k, C_k, logp = (np.asarray(x, np.float64)
                                    for x in (fe_k, shift_k, C_k, logp))
        if skew:
            fe_k = fe_k + shift_k
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
