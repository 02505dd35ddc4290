"""Mean-field variational Bayes — statsmodels' ``fit_vb``.

q(fe, vcp, vc) = Π N(mean, sd²); the ELBO (kernels.make_elbo) is maximised over
(mean, log sd).  The small block is ``a = (fe mean, vcp mean, fe log-sd, vcp log-sd)`` and the
large block ``v = (vc mean, vc log-sd)`` of shape (k_vc, 2); for fixed ``a`` the negative ELBO is
convex in ``v`` with 2 × 2 diagonal Hessian blocks for one grouping factor, so the structured
Newton driver applies unchanged.  ``method="lbfgs"`` uses optax's L-BFGS instead.

Compiled programs (per family, quadrature rule and shape bucket, design.buckets): one.  For
small float64 problems (``method="auto"``, fits.map.use_dense's sizes) the ELBO's value and
gradient, with BFGS driven from the host (solvers.bfgs_host, statsmodels' optimiser for
``fit_vb``): for cbpp's 40 parameters it traces and compiles in ~0.45 s against ~1 s for the
Newton loop, and its ~120 evaluations run in ~70 ms, as long as the compiled Newton loop.
Otherwise the Newton iteration (solvers.newton.newton_program) with the start (its ELBO, and
the curvatures for the starting SDs).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .._export import persistent_jit
from .._precision import precision
from ..linalg._blas import single_threaded_blas
from .._xla import large_options, small_options
from ..families import Family
from ..kernels.glmm import Data, Params, Prior, make_elbo
from ..quadrature import Rule
from ..solvers import NewtonOptions, Solution, lbfgs
from ..solvers.bfgs_host import bfgs_host
from ..solvers.newton import CURVATURE, GRAD, default_options, newton_program
from . import map as _map

__all__ = ["VBFit", "fit_vb", "sd_start", "split_vb", "start_values", "vb_objective",
           "vb_program"]


def split_vb(a, v, k_fep: int):
    """``(mean, sd)`` Params from the optimiser's blocks."""
    kp = a.shape[0] // 2 - k_fep
    mean = Params(a[:k_fep], a[k_fep:k_fep + kp], v[:, 0])
    sd = Params(jnp.exp(a[k_fep + kp:2 * k_fep + kp]), jnp.exp(a[2 * k_fep + kp:]), jnp.exp(v[:, 1]))
    return mean, sd


@functools.cache
def vb_objective(family: Family, rule: Rule):
    """``objective(a, v, data, prior)``: the negative ELBO of the optimiser's blocks."""
    elbo = make_elbo(family, rule)

    def objective(a, v, data, prior):
        mean, sd = split_vb(a, v, data.X.shape[1])
        return -elbo(mean, sd, data, prior)

    return objective


def sd_start(a, v, step):
    """The mean-field fixed point for every SD at the starting means: sd_j = H_jj^(-1/2),
    with H_jj the curvature of −ELBO in mean j (exact for a Gaussian likelihood), from the
    step's H_aa and diagonal blocks (a candidate start for solvers.newton_program).  Newton
    in log-sd from far above its optimum moves by only ≈ −½ per step (the objective grows
    like e^{2s}), so starting the log-SDs here saves many iterations at large n."""
    km = a.shape[0] // 2  # number of fe and vcp means
    ha = jnp.diag(step.Haa)[:km]
    hv = step.blocks[:, 0, 0]
    s_a = jnp.where((ha > 0) & jnp.isfinite(ha), -0.5 * jnp.log(ha), a[km:])
    s_v = jnp.where((hv > 0) & jnp.isfinite(hv), -0.5 * jnp.log(hv), v[:, 1])
    return a.at[km:].set(s_a), v.at[:, 1].set(s_v)


def vb_program(family: Family, rule: Rule, dense: bool, n_colors: int):
    """The jitted Newton iteration for the negative ELBO (solvers.newton.newton_program), from
    the better of the given start and :func:`sd_start`."""
    return newton_program(vb_objective(family, rule), dense, n_colors, CURVATURE, sd_start,
                          GRAD)


@functools.cache
def vb_value_and_grad(family: Family, rule: Rule):
    """``vg(a, v, data, prior) -> (−ELBO, (∇_a, ∇_v))``: the one compiled program of the
    host-driven fit (:func:`fit_vb`'s ``"auto"`` for small problems), with the small
    problems' compiler options."""
    return persistent_jit(jax.value_and_grad(vb_objective(family, rule), argnums=(0, 1)),
                          compiler_options=small_options())


def _fit_host(vg, a0, v0, a_shift, args, opts: NewtonOptions, maxiter: int, dt) -> Solution:
    """BFGS on the host over ``vg`` (solvers.bfgs_host, the program called in ``dt``) from the
    better of (a0, v0) and the start shifted by ``a_shift`` (numpy arrays; taken where −ELBO
    is lower there or not finite at a0)."""
    ka, shape = a0.shape[0], v0.shape

    def fg(x):
        # numpy in: a third less overhead per call than converting to jax arrays first
        f, (ga, gv) = vg(x[:ka].astype(dt), x[ka:].reshape(shape).astype(dt), *args)
        return float(f), np.concatenate([np.asarray(ga, np.float64),
                                         np.asarray(gv, np.float64).ravel()])

    x0 = np.concatenate([a0, v0.ravel()]).astype(np.float64)
    start = fg(x0)
    if np.any(a_shift != 0) or not np.isfinite(start[0]):
        x1 = x0.copy()
        x1[:ka] += a_shift
        s1 = fg(x1)
        if s1[0] < start[0] or not np.isfinite(start[0]):
            x0, start = x1, s1
    r = bfgs_host(fg, x0, gtol=opts.gtol, ftol=opts.ftol, maxiter=maxiter,
                  max_ls=opts.max_ls, f0=start)
    return Solution(r.x[:ka], r.x[ka:].reshape(shape), np.float64(r.f),
                    np.float64(np.linalg.norm(r.g)), r.n_iter, r.status, 0, r.n_fev, 0)


@functools.cache
def _lbfgs_solve(family: Family, rule: Rule, maxiter: int, gtol: float):
    objective = vb_objective(family, rule)
    return jax.jit(lambda a0, v0, data, prior: lbfgs(objective, a0, v0, (data, prior),
                                                     maxiter=maxiter, gtol=gtol),
                   compiler_options=large_options())


def start_values(mean, sd, rng, k_fep: int, k_vcp: int, k_vc: int, X: np.ndarray):
    """statsmodels' start ``(m, s, shift)``, means and log SDs, each (p,).

    Mean 0 and log sd = −0.5 + 0.1·N(0, 1) (drawn from ``rng``) unless ``mean``/``sd`` are
    given; the vcp means and all log sds are floored at −1.  ``shift`` is added to s where the
    ELBO is not finite there (the fit checks): statsmodels' start overflows when a covariate
    has a large scale (exp(η) with Var(η) ∝ x²), and each fixed effect's sd then starts at the
    default over its column's RMS in ``X`` (n, k_fep); zero when ``sd`` is given.
    """
    p = k_fep + k_vcp + k_vc
    kf, kp = k_fep, k_vcp
    m = np.zeros(p) if mean is None else np.array(mean, dtype=np.float64)
    s = -0.5 + 0.1 * rng.normal(size=p) if sd is None else np.log(sd)
    m[kf:kf + kp] = np.where(m[kf:kf + kp] < -1, -1, m[kf:kf + kp])
    s = np.where(s < -1, -1, s)
    shift = np.zeros(p)
    if sd is None:
        shift[:kf] = -np.log(np.maximum(np.sqrt(np.mean(X**2, axis=0)), 1.0))
    return m, s, shift


class VBFit(NamedTuple):
    """Result of :func:`fit_vb` (numpy arrays, real levels only)."""

    solution: Solution  # host; a = (fe, vcp means, fe, vcp log-SDs), v = (vc mean, vc log-SD)
    #                     of shape (k_vc, 2); fe on the fitted scale
    params: np.ndarray  # (p,) posterior means (fe, vcp, vc), fe on the original scale
    variances: np.ndarray  # (p,) posterior variances
    x: np.ndarray  # (2p,) the optimiser's (means, log SDs) on the fitted scale


def fit_vb(family: Family, rule: Rule, data: Data, prior: Prior, *, color, n_colors: int,
           k_vcp: int, X: np.ndarray, method: str = "auto", opts: NewtonOptions | None = None,
           mean=None, sd=None, rng=None, fe_transform: np.ndarray | None = None,
           k_vc: int | None = None, bfgs_maxiter: int | None = None) -> VBFit:
    """Maximise the mean-field ELBO over (mean, log sd) of every parameter.

    Parameters
    ----------
    family, rule : families.Family and the ELBO's quadrature.Rule
    data, prior : kernels.glmm.Data and Prior (data's dtype is the fit's), possibly padded
        (design.buckets): its levels beyond ``k_vc`` and rows beyond X's are inert padding
    color, n_colors : design.ellpack.colors of the random-effects design (padded alike)
    k_vcp : int, number of variance parameters
    X : (n, k_fep) float64, the fixed-effects design in data.X, real rows (for the start)
    method : ``"auto"``, ``"newton"`` or ``"lbfgs"``
        ``"auto"``: for small float64 problems (fits.map.use_dense: the dense Newton's sizes)
        BFGS driven from the host over one compiled value-and-gradient program
        (:func:`vb_value_and_grad`, solvers.bfgs_host), which compiles in a third of the
        Newton loop's time and runs in milliseconds there; the structured Newton otherwise.
    opts : NewtonOptions, default ``solvers.newton.default_options`` for the dtype
    mean, sd, rng : the start (:func:`start_values`); mean and sd (p,) checked by the caller
    fe_transform : (k_fep, k_fep), optional
        A of ``fits.map.scale_columns`` when data.X holds the scaled columns: means map back as
        fe = A·fe_s, variances as (A²)·var (independent factors in q keep the diagonal only).
    k_vc : int, optional
        The real number of levels (default: data's).
    bfgs_maxiter : int, optional
        Most iterations of the host BFGS (``"auto"`` on a small problem); default
        ``20 * opts.maxiter`` (quasi-Newton takes more, cheaper, steps than Newton: ~120 on
        cbpp, against 14 Newton steps).
    """
    dt = np.dtype(data.y.dtype)
    opts = default_options(dt) if opts is None else opts
    kf, k_pad = X.shape[1], data.ident.shape[0]
    k = k_pad if k_vc is None else int(k_vc)
    p = kf + k_vcp + k
    ka = kf + k_vcp
    dense = _map.use_dense(2 * p, X.shape[0])
    # float32's gradients carry rounding that a quasi-Newton cannot see past (its optimum
    # lands ~1e-3 from float64's on cbpp, Newton's ~1e-5): Newton there
    host = method == "auto" and dense and dt == np.float64
    solve = None if host else vb_program(family, rule, dense, n_colors)
    args = (data, prior)
    put = lambda x: jax.device_put(np.asarray(x, dt))  # noqa: E731
    m, s, shift = start_values(mean, sd, rng, kf, k_vcp, k, X)
    # the optimiser's blocks; padded levels at mean 0, log sd 0
    v0 = np.zeros((k_pad, 2))
    v0[:k] = np.stack([m[ka:], s[ka:]], axis=1)
    a0 = np.concatenate([m[:ka], s[:ka]])
    a_shift = np.concatenate([np.zeros(ka), shift[:ka]])
    with precision(dt), single_threaded_blas():
        if host:  # the starts stay on the host, where the iteration runs
            sol = _fit_host(vb_value_and_grad(family, rule), a0, v0, a_shift, args, opts,
                            20 * opts.maxiter if bfgs_maxiter is None else int(bfgs_maxiter),
                            dt)
        else:
            a0, v0, a_shift = put(a0), put(v0), put(a_shift)
            color = jax.device_put(np.asarray(color, np.int32))
            # from the better of the start and the SDs at the mean-field fixed point (sd_start)
            if method == "lbfgs":
                start, _ = solve(a0, v0, color, opts, a_shift, True, False, *args)
                sol = _lbfgs_solve(family, rule, opts.maxiter * 50, opts.gtol)(
                    start.a, start.v, *args)
            else:
                sol, _ = solve(a0, v0, color, opts, a_shift, True, True, *args)
        sol = sol.host()
    a, v = sol.a, sol.v[:k]
    sol = sol._replace(v=v)
    params = np.concatenate([a[:ka], v[:, 0]])
    log_sd = np.concatenate([a[ka:], v[:, 1]])
    sds = np.exp(log_sd)
    x = np.concatenate([params, log_sd])
    va = sds**2
    if fe_transform is not None:
        params[:kf] = fe_transform @ params[:kf]
        va[:kf] = (fe_transform**2) @ va[:kf]
    return VBFit(sol, params, va, x)
