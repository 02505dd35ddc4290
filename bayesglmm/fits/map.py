"""The joint-mode (MAP) fit and its Laplace covariance — statsmodels' ``fit_map``.

The objective is −log p(y, fe, vcp, vc) as a function of ``a = (fe, vcp)`` and
``v = vc[:, None]``.  The mode is found by the structured Newton driver (solvers.newton) in the
non-centred coordinates vc = exp(vcp)·u: a change of variables of the function (not of the
density), so the critical points are the same, but Newton's quadratic model no longer has to
follow vc ∝ exp(vcp) into the funnel where the joint mode sits when the data say little about
a variance (cbpp: log SD → −k_vc·vcp_p²), and converges there in a few steps.  The
covariance is the inverse of the exact autodiff Hessian at the mode:

* one colour (one grouping factor, or terms whose columns never share a row): H_vv is diagonal,
  and the inverse follows exactly from the Schur complement S = H_aa − H_av H_vv⁻¹ H_va:
  Cov(a) = S⁻¹, Cov(a, v) = −S⁻¹ H_av H_vv⁻¹, Var(v_j) = 1/H_jj + (H_vv⁻¹H_va S⁻¹ H_av H_vv⁻¹)_jj.
* several colours (crossed factors): with p ≤ ``DENSE_COV_MAX`` parameters the full Hessian is
  formed column by column from Hessian-vector products and inverted exactly; above that,
  Cov(a) is exact (S from CG solves) and Var(v_j) uses the block-Jacobi approximation
  1/H_jj for the H_vv⁻¹ term (documented in docs/); it ignores the coupling between factors
  and so slightly understates the random effects' posterior SDs.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from .._precision import precision
from ..families import Family
from ..kernels.glmm import Data, Params, Prior, make_logposterior
from ..linalg.psd import abs_inv, pcg
from ..solvers import NewtonOptions, Solution, lbfgs, newton
from ..solvers.newton import default_options, structured_blocks

__all__ = ["DENSE_COV_MAX", "DENSE_COV_WORK_MAX", "DENSE_MAX", "DENSE_WORK_MAX", "LaplaceCov",
           "MapFit", "fit_map", "map_functions", "scale_columns", "use_dense"]

DENSE_MAX = 300  # total parameters up to which Newton uses the full dense Hessian ...
DENSE_WORK_MAX = 100_000  # ... provided parameters × rows stays below this
DENSE_COV_MAX = 2000  # total parameters up to which cov_params() is the full matrix
# ... and, for crossed designs (the full matrix from p Hessian-vector products), parameters ×
# rows up to which that is done: the former 50 × DENSE_WORK_MAX, kept when the dense-Newton
# threshold DENSE_WORK_MAX was lowered (dense Newton is slower than structured above ~10⁵)
DENSE_COV_WORK_MAX = 100_000_000


def use_dense(n_params: int, nobs: int) -> bool:
    """Newton with the full dense Hessian (rather than the structured one) for this size."""
    return n_params <= DENSE_MAX and n_params * nobs <= DENSE_WORK_MAX


def scale_columns(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(X_s, A)``: X's columns centred (when X has a constant column, which absorbs the
    centring) and scaled to unit variance; fe = A·fe_s maps coefficients of X_s back to X's."""
    mn, sc = X.mean(0), X.std(0)
    ixs = np.flatnonzero(sc > 1e-8)
    const = np.flatnonzero((sc <= 1e-8) & (np.abs(mn) > 0))
    A = np.eye(X.shape[1])  # fe_original = A @ fe_scaled
    Xs = X.copy()
    if len(const) > 0:
        Xs[:, ixs] -= mn[ixs]
        A[const[0], ixs] = -mn[ixs] / sc[ixs] / mn[const[0]]
    Xs[:, ixs] /= sc[ixs]
    A[ixs, ixs] = 1 / sc[ixs]
    return Xs, A


class LaplaceCov(NamedTuple):
    cov_a: jax.Array  # (k_a, k_a) covariance of (fe, vcp)
    var_v: jax.Array  # (k_vc,) posterior variances of the random effects
    full: jax.Array  # (p, p) full covariance, or (0, 0) when p > DENSE_COV_MAX
    exact: jax.Array  # () bool: False when var_v uses the block-Jacobi approximation


def _dense_hessian(F, x, batch: int = 32):
    """Full Hessian of F at x from Hessian-vector products, ``batch`` columns at a time."""
    _, hvp = jax.linearize(jax.grad(F), x)
    eye = jnp.eye(x.shape[0], dtype=x.dtype)
    return lax.map(hvp, eye, batch_size=batch)


def _centre(a, u, data):
    """vc = exp(vcp[ident])·u, with a = (fe, vcp) and u of shape (k_vc, 1)."""
    return u * jnp.exp(a[data.X.shape[1]:][data.ident])[:, None]


def _jacobian(a, u, data):
    """J = ∂(fe, vcp, vc)/∂(fe, vcp, u), dense (p, p): identity on (fe, vcp);
    ∂vc_j/∂vcp_k = vc_j·[ident_j = k]; ∂vc_j/∂u_j = exp(vcp[ident_j])."""
    kf, ka, k = data.X.shape[1], a.shape[0], u.shape[0]
    e = jnp.exp(a[kf:][data.ident])
    vc = u[:, 0] * e
    J = jnp.eye(ka + k, dtype=a.dtype)
    J = J.at[ka + jnp.arange(k), kf + data.ident].set(vc)
    return J.at[ka + jnp.arange(k), ka + jnp.arange(k)].set(e)


@functools.cache
def map_functions(family: Family, dense: bool, n_colors: int, method: str, opts: NewtonOptions,
                  full_cov: bool):
    """Jitted ``(solve, covariance, objective)`` for one static configuration.

    ``solve`` and ``covariance`` work in the non-centred coordinates (a, u); ``covariance``
    maps the result to (fe, vcp, vc) with the Jacobian J of the change of variables — exact at
    a stationary point, where the Hessian transforms as H_c = J⁻ᵀ H_u J⁻¹.
    """
    logpost = make_logposterior(family, noncentred=True)

    def objective(a, u, data, prior):
        kf = data.X.shape[1]
        return -logpost(Params(a[:kf], a[kf:], u[:, 0]), data, prior)

    @jax.jit
    def solve(a0, v0, data, prior, color):
        u0 = v0 * jnp.exp(-a0[data.X.shape[1]:][data.ident])[:, None]
        # Or u = 0, the prior mode, where that is better.  From a random start (statsmodels':
        # vc ~ N(0, 1)) the random effects of many groups sit far out in the flat tails of the
        # likelihood, where Newton overshoots and one line-search step length, shared by all
        # groups, is cut for all of them: at 10⁶ rows / 10⁴ groups (logit), 47 Newton steps
        # after 8 warm-up steps, against 9 after 3 from u = 0, to the same mode.
        f_zero, f_u0 = jax.vmap(lambda u: objective(a0, u, data, prior))(
            jnp.stack([jnp.zeros_like(u0), u0]))  # one trace of the objective, not two
        u0 = jnp.where(f_zero < f_u0, jnp.zeros_like(u0), u0)
        if method == "lbfgs":
            sol = lbfgs(objective, a0, u0, (data, prior), maxiter=opts.maxiter * 50,
                        gtol=opts.gtol)
        else:
            sol = newton(objective, a0, u0, (data, prior), color=color, n_colors=n_colors,
                         dense=dense, opts=opts)
        return sol._replace(v=_centre(sol.a, sol.v, data)), sol.v

    @jax.jit
    def covariance(a, u, data, prior, color):
        ka, k = a.shape[0], u.shape[0]
        kf = data.X.shape[1]
        if dense or (n_colors > 1 and full_cov):
            def F(x):
                return objective(x[:ka], x[ka:, None], data, prior)

            cov_u = abs_inv(_dense_hessian(F, jnp.concatenate([a, u[:, 0]])))
            J = _jacobian(a, u, data)
            cov = J @ cov_u @ J.T
            return LaplaceCov(cov[:ka, :ka], jnp.diag(cov)[ka:], cov, jnp.asarray(True))
        _, _, Haa, Hva, blocks, hvp = structured_blocks(objective, a, u, (data, prior), color,
                                                         n_colors)
        d = blocks[:, 0, 0]  # (k,) diagonal of H_uu
        if n_colors == 1:
            Y = Hva[:, 0, :] / d[:, None]  # H_uu⁻¹ H_ua, (k, k_a)
        else:
            Y = pcg(hvp, blocks, Hva, opts.cg_tol, opts.cg_maxiter)[:, 0, :]
        cov_a = abs_inv(Haa - Hva[:, 0, :].T @ Y)
        cov_au = -cov_a @ Y.T  # (k_a, k)
        var_u = 1.0 / d + jnp.einsum("kp,pq,kq->k", Y, cov_a, Y)
        # delta method for vc_j = exp(s_j)·u_j with s_j = vcp[ident_j]
        e = jnp.exp(a[kf:][data.ident])
        vc = u[:, 0] * e
        idx = kf + data.ident
        var_v = (vc**2 * cov_a[idx, idx] + 2 * vc * e * cov_au[idx, jnp.arange(k)]
                 + e**2 * var_u)
        if full_cov:
            cov_uu = jnp.diag(1.0 / d) + Y @ cov_a @ Y.T
            full_u = jnp.block([[cov_a, cov_au], [cov_au.T, cov_uu]])
            J = _jacobian(a, u, data)
            full = J @ full_u @ J.T
        else:
            full = jnp.zeros((0, 0), a.dtype)
        return LaplaceCov(cov_a, var_v, full, jnp.asarray(n_colors == 1))

    return solve, covariance, objective


class MapFit(NamedTuple):
    """Result of :func:`fit_map` (numpy arrays)."""

    solution: Solution  # host; a = (fe, vcp), v = vc (k_vc, 1), fe on the fitted scale
    params: np.ndarray  # (p,) (fe, vcp, vc) at the mode, fe on the original scale
    cov: np.ndarray  # (p, p) when p ≤ DENSE_COV_MAX (see map_functions), else (k_a, k_a)
    variances: np.ndarray  # (p,) posterior variances
    cov_exact: bool  # False where Var(vc) uses the block-Jacobi approximation


def fit_map(family: Family, data: Data, prior: Prior, *, color, n_colors: int,
            method: str = "newton", opts: NewtonOptions | None = None, rng,
            fe_transform: np.ndarray | None = None) -> MapFit:
    """The joint posterior mode of (fe, vcp, vc) and the Laplace covariance there.

    Parameters
    ----------
    family : families.Family
    data, prior : kernels.glmm.Data and Prior (data's dtype is the fit's)
    color, n_colors : design.ellpack.colors of the random-effects design
    method : ``"newton"`` or ``"lbfgs"``
    opts : NewtonOptions, default ``solvers.newton.default_options`` for the dtype
    rng : numpy Generator or RandomState
        Draws the start as statsmodels: fe = 0, vcp = 1, vc ~ N(0, 1).
    fe_transform : (k_fep, k_fep), optional
        A of :func:`scale_columns` when data.X holds the scaled columns: the results are
        mapped back to the original coefficients fe = A·fe_s.
    """
    dt = np.dtype(data.y.dtype)
    opts = default_options(dt) if opts is None else opts
    kf, k, n = data.X.shape[1], data.ident.shape[0], data.y.shape[0]
    kp = int(np.max(np.asarray(data.ident))) + 1 if k else 0
    start_vc = rng.normal(size=k)
    p = kf + kp + k
    # the full matrix: from the Schur complement (one colour) or, for crossed designs, from
    # p Hessian-vector products — only while that stays cheap
    full = p <= DENSE_COV_MAX and (n_colors == 1 or p * n <= DENSE_COV_WORK_MAX)
    solve, covariance, _ = map_functions(family, use_dense(p, n), n_colors, method, opts, full)
    with precision(dt):
        a0 = jnp.concatenate([jnp.zeros(kf, dt), jnp.ones(kp, dt)])
        v0 = jnp.asarray(start_vc, dt)[:, None]
        color = jnp.asarray(color)
        sol, u = solve(a0, v0, data, prior, color)
        cov = covariance(sol.a, u, data, prior, color)
        sol = sol.host()
        cov_a, var_v = np.asarray(cov.cov_a, np.float64), np.asarray(cov.var_v, np.float64)
        cov_full = np.asarray(cov.full, np.float64) if full else None
    params = np.concatenate([sol.a, sol.v[:, 0]])
    if fe_transform is not None:  # back to the original fe scale: fe = A fe_scaled
        T = np.eye(p)
        T[:kf, :kf] = fe_transform
        params = T @ params
        ka = kf + kp
        cov_a = T[:ka, :ka] @ cov_a @ T[:ka, :ka].T
        if cov_full is not None:
            cov_full = T @ cov_full @ T.T
    return MapFit(sol, params, cov_full if cov_full is not None else cov_a,
                  np.concatenate([np.diag(cov_a), var_v]), bool(cov.exact))
