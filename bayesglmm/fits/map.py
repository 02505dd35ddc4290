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

Compiled programs (per family and shape bucket, design.buckets): one, the Newton iteration
(solvers.newton.newton_program) with the start (u = 0 where better) and the step at the mode;
the covariance is computed on the host from the Hessian blocks that step returns, so it
compiles nothing — except for crossed designs whose full matrix is wanted, where one more
program forms the Hessian from Hessian-vector products.  ``method="lbfgs"`` adds L-BFGS's.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from .._precision import precision
from ..linalg._blas import single_threaded_blas
from .._xla import large_options
from ..families import Family
from ..kernels.glmm import Data, Params, Prior, make_logposterior
from ..solvers import NewtonOptions, Solution, lbfgs
from ..solvers.newton import (CURVATURE, GRAD, NEWTON, NONE, Step, default_options,
                              newton_program)

__all__ = ["DENSE_COV_MAX", "DENSE_COV_WORK_MAX", "DENSE_MAX", "DENSE_WORK_MAX", "LaplaceCov",
           "MapFit", "abs_inv", "fit_map", "laplace_cov", "map_objective", "map_program",
           "mode_summary", "scale_columns", "use_dense"]

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
    """The Laplace covariance at the mode (numpy, real levels only)."""

    cov_a: np.ndarray  # (k_a, k_a) covariance of (fe, vcp)
    var_v: np.ndarray  # (k_vc,) posterior variances of the random effects
    full: np.ndarray | None  # (p, p) full covariance, or None when not formed
    exact: bool  # False when var_v uses the block-Jacobi approximation


@functools.cache
def map_objective(family: Family):
    """``objective(a, u, data, prior)``: −log p in the non-centred coordinates, a = (fe, vcp),
    u (k_vc, 1) with vc = exp(vcp[ident])·u."""
    logpost = make_logposterior(family, noncentred=True)

    def objective(a, u, data, prior):
        kf = data.X.shape[1]
        return -logpost(Params(a[:kf], a[kf:], u[:, 0]), data, prior)

    return objective


def prior_mode_start(a, u, step):
    """The candidate start u = 0, the random effects' prior mode (solvers.newton_program)."""
    return a, jnp.zeros_like(u)


def map_program(family: Family, dense: bool, n_colors: int, final_mode: int = GRAD):
    """The jitted Newton iteration for the MAP objective (solvers.newton.newton_program), from
    the better of the given start and u = 0, with the step in ``final_mode`` at the mode."""
    return newton_program(map_objective(family), dense, n_colors, NONE, prior_mode_start,
                          final_mode)


@functools.cache
def _lbfgs_solve(family: Family, maxiter: int, gtol: float):
    objective = map_objective(family)
    return jax.jit(lambda a0, u0, data, prior: lbfgs(objective, a0, u0, (data, prior),
                                                     maxiter=maxiter, gtol=gtol),
                   compiler_options=large_options())


@functools.cache
def _hessian_program(family: Family, batch: int = 32):
    """The full Hessian of the objective in (a, u) from Hessian-vector products, ``batch``
    columns at a time (crossed designs, full covariance)."""
    objective = map_objective(family)

    @functools.partial(jax.jit, compiler_options=large_options())
    def hessian(a, u, data, prior):
        ka = a.shape[0]

        def F(x):
            return objective(x[:ka], x[ka:, None], data, prior)

        _, hvp = jax.linearize(jax.grad(F), jnp.concatenate([a, u[:, 0]]))
        return lax.map(hvp, jnp.eye(ka + u.shape[0], dtype=a.dtype), batch_size=batch)

    return hessian


def abs_inv(H: np.ndarray) -> np.ndarray:
    """|H|⁻¹ = Q·|Λ|⁻¹·Qᵀ (numpy; linalg.psd.abs_inv on the host): the inverse where H is
    positive definite, a positive-definite covariance where rounding left it indefinite."""
    w, Q = np.linalg.eigh(0.5 * (H + H.T))
    return (Q / np.abs(w)) @ Q.T


def _to_centred(C, a, u, kf: int, ident):
    """J·C·Jᵀ for symmetric C (p, p), with J = ∂(fe, vcp, vc)/∂(fe, vcp, u): identity on
    (fe, vcp); ∂vc_j/∂vcp_k = vc_j·[ident_j = k]; ∂vc_j/∂u_j = exp(vcp[ident_j]).  J has at
    most two non-zeros per row, so this is O(p²), row by row: (J·M)_j = e_j·M_j + vc_j·M_{s_j}
    for the rows j of vc, with s_j the row of vcp[ident_j]."""
    ka = a.shape[0]
    e = np.exp(a[kf:][ident])
    vc = u * e

    def left(M):  # J·M
        out = M.copy()
        out[ka:] = e[:, None] * M[ka:] + vc[:, None] * M[kf + ident]
        return out

    return left(left(C).T)  # J·(J·C)ᵀ = J·C·Jᵀ


def laplace_cov(step: Step, a, u, kf: int, ident, *, n_colors: int, full: bool,
                H: np.ndarray | None = None) -> LaplaceCov:
    """The covariance at the mode from the Hessian in the non-centred coordinates (a, u),
    mapped to (fe, vcp, vc) with the Jacobian J of the change of variables — exact at a
    stationary point, where the Hessian transforms as H_c = J⁻ᵀ H_u J⁻¹.

    ``step``: :class:`solvers.newton.Step` at the mode (host arrays, the k real levels only);
    ``H``: the full (p, p) Hessian when formed (dense Newton, or crossed designs with ``full``).
    """
    ka, k = a.shape[0], u.shape[0]
    if H is not None:
        cov = _to_centred(abs_inv(H), a, u, kf, ident)
        return LaplaceCov(cov[:ka, :ka], np.diag(cov)[ka:], cov if full else None, True)
    Hva = np.asarray(step.Hva, np.float64)[:, 0, :]  # (k, k_a)
    d = np.asarray(step.blocks, np.float64)[:, 0, 0]  # (k,) diagonal of H_uu
    # H_uu⁻¹ H_ua: exact for one colour, from the step's CG solve (to cg_tol) otherwise
    Y = Hva / d[:, None] if n_colors == 1 else np.asarray(step.Ya, np.float64)[:, 0, :]
    cov_a = abs_inv(np.asarray(step.Haa, np.float64) - Hva.T @ Y)
    cov_au = -cov_a @ Y.T  # (k_a, k)
    var_u = 1.0 / d + np.einsum("kp,pq,kq->k", Y, cov_a, Y)
    # delta method for vc_j = exp(s_j)·u_j with s_j = vcp[ident_j]
    e = np.exp(a[kf:][ident])
    vc = u * e
    idx = kf + ident
    var_v = vc**2 * cov_a[idx, idx] + 2 * vc * e * cov_au[idx, np.arange(k)] + e**2 * var_u
    cov = None
    if full:
        cov_uu = Y @ cov_a @ Y.T
        cov_uu[np.diag_indices(k)] += 1.0 / d
        cov = _to_centred(np.block([[cov_a, cov_au], [cov_au.T, cov_uu]]), a, u, kf, ident)
    return LaplaceCov(cov_a, var_v, cov, n_colors == 1)


class MapFit(NamedTuple):
    """Result of :func:`fit_map` (numpy arrays, real levels only)."""

    solution: Solution  # host; a = (fe, vcp), v = vc (k_vc, 1), fe on the fitted scale
    params: np.ndarray  # (p,) (fe, vcp, vc) at the mode, fe on the original scale
    cov: np.ndarray  # (p, p) when p ≤ DENSE_COV_MAX (see laplace_cov), else (k_a, k_a)
    variances: np.ndarray  # (p,) posterior variances
    cov_exact: bool  # False where Var(vc) uses the block-Jacobi approximation


def _real(step: Step, k: int) -> Step:
    """The step's arrays on the host, restricted to the k real levels."""
    s = jax.device_get(step)
    return s._replace(gv=s.gv[:k], dv=s.dv[:k], Hva=s.Hva[:k], blocks=s.blocks[:k],
                      Ya=s.Ya[:k] if s.Ya.ndim == 3 else s.Ya)


def fit_map(family: Family, data: Data, prior: Prior, *, color, n_colors: int,
            method: str = "newton", opts: NewtonOptions | None = None, rng,
            fe_transform: np.ndarray | None = None, k_vc: int | None = None,
            nobs: int | None = None) -> MapFit:
    """The joint posterior mode of (fe, vcp, vc) and the Laplace covariance there.

    Parameters
    ----------
    family : families.Family
    data, prior : kernels.glmm.Data and Prior (data's dtype is the fit's), possibly padded
        (design.buckets): its random-effect levels beyond ``k_vc`` and rows beyond ``nobs``
        are inert padding
    color, n_colors : design.ellpack.colors of the random-effects design (padded alike)
    method : ``"newton"`` or ``"lbfgs"``
    opts : NewtonOptions, default ``solvers.newton.default_options`` for the dtype
    rng : numpy Generator or RandomState
        Draws the start as statsmodels: fe = 0, vcp = 1, vc ~ N(0, 1).
    fe_transform : (k_fep, k_fep), optional
        A of :func:`scale_columns` when data.X holds the scaled columns: the results are
        mapped back to the original coefficients fe = A·fe_s.
    k_vc, nobs : int, optional
        The real numbers of levels and rows (default: data's); they choose the algorithm
        (dense or structured Newton, full covariance or not), so that padding changes nothing.
    """
    dt = np.dtype(data.y.dtype)
    opts = default_options(dt) if opts is None else opts
    kf, k_pad = data.X.shape[1], data.ident.shape[0]
    k = k_pad if k_vc is None else int(k_vc)
    n = data.y.shape[0] if nobs is None else int(nobs)
    ident = np.asarray(data.ident)
    kp = (int(ident.max()) + 1 if k else 0) + family.n_disp  # log SDs, then dispersion
    start_vc = rng.normal(size=k)
    p = kf + kp + k
    ka = kf + kp
    dense = use_dense(p, n)
    # the full matrix: from the Schur complement (one colour) or, for crossed designs, from
    # p Hessian-vector products — only while that stays cheap
    full = p <= DENSE_COV_MAX and (n_colors == 1 or p * n <= DENSE_COV_WORK_MAX)
    # the step at the mode: the dense Hessian (dense Newton, always formed), the blocks for
    # the Schur complement (one colour), or also H_vv⁻¹H_va by CG (crossed designs)
    final = GRAD if dense or (n_colors > 1 and full) else (
        CURVATURE if n_colors == 1 else NEWTON)
    solve = map_program(family, dense, n_colors, final)
    args = (data, prior)
    with precision(dt), single_threaded_blas():
        put = lambda x: jax.device_put(np.asarray(x, dt))  # noqa: E731
        a0 = np.concatenate([np.zeros(kf), np.ones(kp)])
        u0 = np.zeros((k_pad, 1))
        u0[:k, 0] = start_vc * np.exp(-a0[kf:][ident[:k]])
        a0, u0, no_shift = put(a0), put(u0), put(np.zeros(ka))
        color = jax.device_put(np.asarray(color, np.int32))
        # The start is u = 0, the prior mode, where that is better.  From a random start
        # (statsmodels': vc ~ N(0, 1)) the random effects of many groups sit far out in the
        # flat tails of the likelihood, where Newton overshoots and one line-search step
        # length, shared by all groups, is cut for all of them: at 10⁶ rows / 10⁴ groups
        # (logit), 47 Newton steps after 8 warm-up steps, against 9 after 3 from u = 0.
        if method == "lbfgs":
            start, _ = solve(a0, u0, color, opts, no_shift, True, False, *args)
            sol = _lbfgs_solve(family, opts.maxiter * 50, opts.gtol)(start.a, start.v, *args)
            _, last = solve(sol.a, sol.v, color, opts, no_shift, False, False, *args)
        else:
            sol, last = solve(a0, u0, color, opts, no_shift, True, True, *args)
        sol = sol.host()
        a, u = sol.a, sol.v[:k, 0]
        H = None
        if dense:
            H = np.asarray(last.H, np.float64)
        elif n_colors > 1 and full:
            H = np.asarray(_hessian_program(family)(put(sol.a), put(sol.v), *args), np.float64)
    params, cov, variances, exact, vc = mode_summary(
        last, a, u, H, kf, ident[:k], n_colors=n_colors, full=full, fe_transform=fe_transform)
    return MapFit(sol._replace(v=vc[:, None]), params, cov, variances, exact)


def mode_summary(last: Step, a: np.ndarray, u: np.ndarray, H: np.ndarray | None, kf: int,
                 ident: np.ndarray, *, n_colors: int, full: bool,
                 fe_transform: np.ndarray | None = None):
    """The host part of :func:`fit_map` after the solve (also fits.many's, per response):
    ``(params, cov, variances, exact, vc)`` from the mode a = (fe, vcp) (k_a,), the real
    random effects u (k,) with their identifiers ``ident`` (k,), the Newton step there
    (``last``, padded) and the dense Hessian ``H`` when one was formed (padded; None
    otherwise).  vc = exp(vcp[ident])·u; with ``fe_transform`` (A of :func:`scale_columns`)
    the results are mapped back to the original coefficients fe = A·fe_s."""
    k, ka = u.shape[0], a.shape[0]
    p = ka + k
    if H is not None:  # the real coordinates (a, u[:k]) come first
        H = H[:p, :p]
    cov = laplace_cov(_real(last, k), a, u, kf, ident, n_colors=n_colors, full=full, H=H)
    vc = u * np.exp(a[kf:][ident])  # vc = exp(vcp[ident])·u
    params = np.concatenate([a, vc])
    cov_a, cov_full = cov.cov_a, cov.full
    if fe_transform is not None:  # back to the original fe scale: fe = A fe_scaled
        T = np.eye(p)
        T[:kf, :kf] = fe_transform
        params = T @ params
        cov_a = T[:ka, :ka] @ cov_a @ T[:ka, :ka].T
        if cov_full is not None:
            cov_full = T @ cov_full @ T.T
    return (params, cov_full if cov_full is not None else cov_a,
            np.concatenate([np.diag(cov_a), cov.var_v]), bool(cov.exact), vc)
