"""The integrated (INLA-style) posterior: vcp integrated over Gauss–Hermite nodes.

Around a ``priors=True`` :func:`fits.laplace.fit_laplace` fit, with m, Σ the mode and the vcp
block of its covariance and Σ = LLᵀ, the nodes are vcp_k = m + L·z_k on a product
Gauss–Hermite grid (quadrature.product_rule).  At each node the Laplace log posterior in fe
is maximised (fe_k, C_k = inverse Hessian), and

    log p̃(vcp_k | y) = objective(fe_k, vcp_k) + (k_fep/2)·log 2π − ½ log det C_k⁻¹,
    π_k ∝ w_k · p̃(vcp_k | y) / N(z_k; 0, I)             (importance-corrected GH weights)

Moments mix by the law of total variance: E[fe] = Σ π_k fe_k,
Cov(fe) = Σ π_k (C_k + (fe_k − E fe)(fe_k − E fe)ᵀ), likewise vc with Var(vc | vcp_k) =
diag(Λ H_uu⁻¹ Λᵀ) + J_fe C_k J_feᵀ, and vcp's moments from the weighted nodes.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .._precision import precision
from ..covariance import lam_u
from ..families import Family
from ..kernels.glmm import Data, Prior
from ..kernels.marginal import objective, penalised, var_vc
from ..linalg.psd import abs_inv
from ..quadrature import gauss_hermite, product_rule
from ..solvers.projected_newton import projected_newton
from .laplace import LaplaceFit, LaplaceOptions, default_options

__all__ = ["IntegratedFit", "integrate_vcp"]

_LOG_2PI = float(np.log(2 * np.pi))


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


@functools.cache
def _node_functions(family: Family, mode, opts: LaplaceOptions):
    """Jitted, vmapped over nodes: the Gaussian approximation of fe | vcp at each node."""
    obj = objective(family, mode, True, opts.inner_tol, opts.inner_maxiter)
    terms = penalised(family, mode)

    def at_node(vcp, fe0, u0, data, prior):
        kf = fe0.shape[0]

        def full(fe):
            return jnp.concatenate([fe, vcp])

        def neg_value(fe, u):  # line-search evaluations: not differentiated
            f, u = obj.value_only(full(fe), u, data, prior)
            return -f, u

        def neg_vgh(fe, u):
            def g_aux(x):
                g, (f, uu) = obj.grad(full(x), u, data, prior)
                return -g[:kf], (-f, -g[:kf], uu)

            H, (f, g, uu) = jax.jacfwd(g_aux, has_aux=True)(fe)
            return f, g, H, uu

        lb = jnp.full(kf, -jnp.inf, fe0.dtype)
        s = projected_newton(neg_vgh, neg_value, fe0, u0, lb, opts.outer)
        fe, u, H = s.x, s.u, s.H
        C = abs_inv(H)  # Cov(fe | vcp)
        # skewness correction of the mean (third-order Laplace expansion): with f the log
        # density and C = (−∇²f)⁻¹, E[fe | vcp] ≈ fe* + ½ C ∇_fe tr(C ∇²f); 1-D: ½ f‴σ⁴
        dq = jax.jacfwd(lambda x: jnp.sum(C * neg_vgh(x, u)[2]))(fe)
        shift = -0.5 * C @ dq
        # log p̃(vcp | y) up to a constant: Laplace over fe of the Laplace log posterior
        sign, logdet = jnp.linalg.slogdet(H)
        logp = jnp.where(sign > 0, -s.f + 0.5 * kf * _LOG_2PI - 0.5 * logdet, -jnp.inf)
        # random effects at the node: vc* and Var(vc | vcp) = diag(ΛH_uu⁻¹Λᵀ) + J_fe C J_feᵀ
        theta = full(fe)
        _, _, Huu = terms(theta, u, data)
        Jfe = obj.jac_vc(theta, u, data)[:, :kf]
        var = var_vc(vcp, Huu, mode, data) + jnp.einsum("kp,pq,kq->k", Jfe, C, Jfe)
        return fe, shift, C, logp, lam_u(vcp, u, data.ident, data.corr), var, s.status == 0

    return jax.jit(jax.vmap(at_node, in_axes=(0, 0, None, None, None)))


def integrate_vcp(family: Family, data: Data, prior: Prior, fit: LaplaceFit, *, mode,
                  n_points: int | None = None, opts: LaplaceOptions | None = None,
                  skew: bool = True) -> IntegratedFit:
    """Integrate over vcp (INLA-style) around a ``priors=True`` :func:`fit_laplace` fit.

    Parameters
    ----------
    family, data, prior, mode : as for :func:`fits.laplace.fit_laplace`
    fit : LaplaceFit
        A non-singular ``priors=True`` fit.
    n_points : int, optional
        Gauss–Hermite points per vcp dimension: 7 for one variance component, 5 for two or
        three, 3 above.
    opts : LaplaceOptions, optional
        For the fe | vcp Newton solves at the nodes; default for the data's dtype.
    skew : bool
        Add the third-order (skewness) correction to each node's fe mean.

    Returns
    -------
    IntegratedFit
    """
    dtype = np.dtype(data.y.dtype)
    opts = default_options(dtype) if opts is None else opts
    kf = fit.fe.shape[0]
    kp = fit.vcp.shape[0]
    if fit.is_singular or not np.all(np.isfinite(fit.cov)):
        raise ValueError("integrate_vcp needs a non-singular priors=True fit")
    if n_points is None:
        n_points = 7 if kp == 1 else (5 if kp <= 3 else 3)
    z, wz = product_rule(gauss_hermite(int(n_points)), kp)
    S = fit.cov[kf:, kf:]
    L = np.linalg.cholesky(0.5 * (S + S.T))
    vcp_nodes = fit.vcp[None, :] + z @ L.T
    # start fe at its regression on vcp under the joint Gaussian at the mode
    B = np.linalg.solve(S, fit.cov[kf:, :kf]).T  # (kf, kp)
    fe_start = fit.fe[None, :] + (vcp_nodes - fit.vcp[None, :]) @ B.T
    fn = _node_functions(family, mode, opts)
    with precision(dtype):
        u0 = (jnp.zeros(fit.vc.shape, dtype) if data.corr else
              jnp.asarray(fit.vc * np.exp(-fit.vcp[np.asarray(data.ident)]), dtype))
        out = fn(jnp.asarray(vcp_nodes, dtype), jnp.asarray(fe_start, dtype), u0, data, prior)
    fe_k, shift_k, C_k, logp, vc_k, var_k = (np.asarray(x, np.float64) for x in out[:6])
    conv = np.asarray(out[6])
    if skew:
        fe_k = fe_k + shift_k
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
