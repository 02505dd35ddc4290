"""Mean-field variational Bayes — statsmodels' ``fit_vb``.

q(fe, vcp, vc) = Π N(mean, sd²); the ELBO (kernels.make_elbo) is maximised over
(mean, log sd).  The small block is ``a = (fe mean, vcp mean, fe log-sd, vcp log-sd)`` and the
large block ``v = (vc mean, vc log-sd)`` of shape (k_vc, 2); for fixed ``a`` the negative ELBO is
convex in ``v`` with 2 × 2 diagonal Hessian blocks for one grouping factor, so the structured
Newton driver applies unchanged.  ``method="lbfgs"`` uses optax's L-BFGS instead.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from ..families import Family
from ..kernels.glmm import Params, make_elbo
from ..quadrature import Rule
from ..solvers import NewtonOptions, lbfgs, newton
from ..solvers.newton import structured_blocks

__all__ = ["split_vb", "vb_functions"]


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
