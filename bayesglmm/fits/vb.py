"""Mean-field variational Bayes — statsmodels' ``fit_vb``.

q(fe, vcp, vc) = Π N(mean, sd²); the ELBO (kernels.make_elbo) is maximised over
(mean, log sd).  The small block is ``a = (fe mean, vcp mean, fe log-sd, vcp log-sd)`` and the
large block ``v = (vc mean, vc log-sd)`` of shape (k_vc, 2); for fixed ``a`` the negative ELBO is
convex in ``v`` with 2 × 2 diagonal Hessian blocks for one grouping factor, so the structured
Newton driver applies unchanged.  ``method="lbfgs"`` uses optax's L-BFGS instead.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .._precision import precision
from ..families import Family
from ..kernels.glmm import Data, Params, Prior, jitted_kernels, make_elbo, unpack
from ..quadrature import Rule
from ..solvers import NewtonOptions, Solution, lbfgs, newton
from ..solvers.newton import default_options, structured_blocks
from . import map as _map

__all__ = ["VBFit", "fit_vb", "split_vb", "start_values", "vb_functions"]


def split_vb(a, v, k_fep: int):
    """``(mean, sd)`` Params from the optimiser's blocks."""
    kp = a.shape[0] // 2 - k_fep
    mean = Params(a[:k_fep], a[k_fep:k_fep + kp], v[:, 0])
    sd = Params(jnp.exp(a[k_fep + kp:2 * k_fep + kp]), jnp.exp(a[2 * k_fep + kp:]), jnp.exp(v[:, 1]))
    return mean, sd


@functools.cache
def vb_functions(family: Family, rule: Rule, dense: bool, n_colors: int, method: str,
                 opts: NewtonOptions):
    """Jitted ``(solve, objective)`` for one static configuration."""
    elbo = make_elbo(family, rule)

    def objective(a, v, data, prior):
        mean, sd = split_vb(a, v, data.X.shape[1])
        return -elbo(mean, sd, data, prior)

    def sd_start(a, v, data, prior, color):
        """The mean-field fixed point for every SD at the starting means: sd_j = H_jj^(-1/2),
        with H_jj the curvature of −ELBO in mean j (exact for a Gaussian likelihood).  Newton
        in log-sd from far above its optimum moves by only ≈ −½ per step (the objective grows
        like e^{2s}), so starting the log-SDs here saves many iterations at large n."""
        km = a.shape[0] // 2  # number of fe and vcp means
        _, _, Haa, _, blocks, _ = structured_blocks(objective, a, v, (data, prior), color,
                                                    n_colors)
        ha = jnp.diag(Haa)[:km]
        hv = blocks[:, 0, 0]
        s_a = jnp.where((ha > 0) & jnp.isfinite(ha), -0.5 * jnp.log(ha), a[km:])
        s_v = jnp.where((hv > 0) & jnp.isfinite(hv), -0.5 * jnp.log(hv), v[:, 1])
        return a.at[km:].set(s_a), v.at[:, 1].set(s_v)

    @jax.jit
    def solve(a0, v0, data, prior, color):
        a_s, v_s = sd_start(a0, v0, data, prior, color)
        better = objective(a_s, v_s, data, prior) < objective(a0, v0, data, prior)
        a0 = jnp.where(better, a_s, a0)
        v0 = jnp.where(better, v_s, v0)
        if method == "lbfgs":
            return lbfgs(objective, a0, v0, (data, prior), maxiter=opts.maxiter * 50, gtol=opts.gtol)
        return newton(objective, a0, v0, (data, prior), color=color, n_colors=n_colors,
                      dense=dense, opts=opts)

    return solve, objective


def start_values(mean, sd, rng, k_fep: int, k_vcp: int, k_vc: int, X: np.ndarray, elbo_at):
    """statsmodels' start ``(m, s)``, means and log SDs, each (p,).

    Mean 0 and log sd = −0.5 + 0.1·N(0, 1) (drawn from ``rng``) unless ``mean``/``sd`` are
    given; the vcp means and all log sds are floored at −1.  Where the default start's ELBO
    (``elbo_at(m, sd)``) is not finite — statsmodels' start overflows when a covariate has a
    large scale (exp(η) with Var(η) ∝ x²) — each fixed effect's sd starts at the default over
    its column's RMS in ``X`` (n, k_fep).
    """
    p = k_fep + k_vcp + k_vc
    kf, kp = k_fep, k_vcp
    m = np.zeros(p) if mean is None else np.array(mean, dtype=np.float64)
    s = -0.5 + 0.1 * rng.normal(size=p) if sd is None else np.log(sd)
    m[kf:kf + kp] = np.where(m[kf:kf + kp] < -1, -1, m[kf:kf + kp])
    s = np.where(s < -1, -1, s)
    if sd is None and not np.isfinite(elbo_at(m, np.exp(s))):
        rms = np.sqrt(np.mean(X**2, axis=0))
        s[:kf] -= np.log(np.maximum(rms, 1.0))
    return m, s


class VBFit(NamedTuple):
    """Result of :func:`fit_vb` (numpy arrays)."""

    solution: Solution  # host; a = (fe, vcp means, fe, vcp log-SDs), v = (vc mean, vc log-SD)
    #                     of shape (k_vc, 2); fe on the fitted scale
    params: np.ndarray  # (p,) posterior means (fe, vcp, vc), fe on the original scale
    variances: np.ndarray  # (p,) posterior variances
    x: np.ndarray  # (2p,) the optimiser's (means, log SDs) on the fitted scale


def fit_vb(family: Family, rule: Rule, data: Data, prior: Prior, *, color, n_colors: int,
           k_vcp: int, X: np.ndarray, method: str = "newton", opts: NewtonOptions | None = None,
           mean=None, sd=None, rng=None, fe_transform: np.ndarray | None = None) -> VBFit:
    """Maximise the mean-field ELBO over (mean, log sd) of every parameter.

    Parameters
    ----------
    family, rule : families.Family and the ELBO's quadrature.Rule
    data, prior : kernels.glmm.Data and Prior (data's dtype is the fit's)
    color, n_colors : design.ellpack.colors of the random-effects design
    k_vcp : int, number of variance parameters
    X : (n, k_fep) float64, the fixed-effects design in data.X (for the start)
    method : ``"newton"`` or ``"lbfgs"``
    opts : NewtonOptions, default ``solvers.newton.default_options`` for the dtype
    mean, sd, rng : the start (:func:`start_values`); mean and sd (p,) checked by the caller
    fe_transform : (k_fep, k_fep), optional
        A of ``fits.map.scale_columns`` when data.X holds the scaled columns: means map back as
        fe = A·fe_s, variances as (A²)·var (independent factors in q keep the diagonal only).
    """
    dt = np.dtype(data.y.dtype)
    opts = default_options(dt) if opts is None else opts
    kf, k = X.shape[1], data.ident.shape[0]
    p = kf + k_vcp + k
    el = jitted_kernels(family, rule).elbo

    def elbo_at(m, sd):
        with precision(dt):
            return float(el(unpack(m, kf, k_vcp, dt), unpack(sd, kf, k_vcp, dt), data, prior))

    m, s = start_values(mean, sd, rng, kf, k_vcp, k, X, elbo_at)
    solve, _ = vb_functions(family, rule, _map.use_dense(2 * p, data.y.shape[0]), n_colors,
                            method, opts)
    with precision(dt):
        a0 = jnp.asarray(np.concatenate([m[:kf + k_vcp], s[:kf + k_vcp]]), dt)
        v0 = jnp.asarray(np.stack([m[kf + k_vcp:], s[kf + k_vcp:]], axis=1), dt)
        sol = solve(a0, v0, data, prior, jnp.asarray(color))
        mean_p, sd_p = split_vb(sol.a, sol.v, kf)
        params = np.concatenate([np.asarray(x, np.float64) for x in mean_p])
        sds = np.concatenate([np.asarray(x, np.float64) for x in sd_p])
    x = np.concatenate([params, np.log(sds)])
    va = sds**2
    if fe_transform is not None:
        params[:kf] = fe_transform @ params[:kf]
        va[:kf] = (fe_transform**2) @ va[:kf]
    return VBFit(sol.host(), params, va, x)

