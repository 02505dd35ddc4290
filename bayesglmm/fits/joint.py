"""The joint profile log likelihood's fe derivatives: the cheap part of the Laplace log
posterior J's, for the integrated fit's nodes (fits.integrate).

J(θ) = ℓ_j(θ) − ½ log det H_uu(θ, u*(θ)) [+ log prior], with the *joint* profile

    ℓ_j(θ) = log p(y | fe, Λ(vcp)·u*(θ)) − ½‖u*(θ)‖²,

whose derivatives in fe follow u*(θ) by the implicit function theorem
(kernels.marginal.joint_fe_grad): ∂²ℓ_j/∂fe² is the Schur complement of the joint (fe, u)
Hessian, −(XᵀWX − XᵀWẐ H_uu⁻¹ ẐᵀWX), one solve per direction.  The log-determinant's part
is what makes J's exact Hessian and third derivatives expensive (second and third derivatives
of the leverages; crossed-binary: 1.3 ms for J's gradient, 7 ms for its Hessian's eight
directions) and it is small beside ℓ_j's: a few per cent of the fe Hessian on cbpp, under 1 %
on the VerbAgg-shaped crossed design.  At the nodes of the integrated fit
(:func:`node_hessian_kernel`) J's fe Hessian rows are taken as ℓ_j's plus the constant
remainder measured exactly at the mode; fe's skewness correction (:func:`skew_vector`) takes
ℓ_j's third derivatives.  Both are checked against nested autodiff (tests/fits/test_joint.py)
and, through the integrated fit, against NUTS (docs/which_fit.md).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from .._export import persistent_jit
from .._xla import large_options, light_options
from ..families import Family
from ..kernels.glmm import Data, Prior
from ..kernels.marginal import joint_fe_grad, objective
from .laplace import LaplaceOptions

__all__ = ["joint_third_kernel", "node_hessian", "node_hessian_kernel", "skew_vector"]


def node_hessian(family: Family, mode, opts: LaplaceOptions, fe_only: bool = False):
    """``vg(θ, u*, data, prior) -> (−J, −∇J, −∂(∇_fe ℓ_j)/∂θ, (du*/dθ, F))`` at a u* already
    solved for, traceable (:func:`node_hessian_kernel` compiles it): the fit's ``vgh``
    (fits.laplace.laplace_kernels; J's value and gradient exact, du*/dθ and H_uu's
    factorisation F as it returns them) with, in place of J's Hessian, ℓ_j's Hessian rows of
    fe (k_fep, k_a).

    ``fe_only``: the derivatives in θ (ℓ_j's Hessian rows, du*/dθ) along fe's k_fep
    directions only, their vcp columns zero — the nodes of a fixed design use no others
    (fe's Newton solve, its warm starts and dvc*/dfe), where the lattice's neighbour starts
    need dfe*/dvcp and du*/dvcp: k_fep forward directions instead of k_fep + k_vcp (four
    crossed factors: 2 of 6)."""
    obj = objective(family, mode, True, opts.inner_tol, opts.inner_maxiter)
    grad = joint_fe_grad(family, mode)

    def vg(theta, u, data: Data, prior: Prior):
        g, (f, _, F) = obj.grad_at(theta, u, data, prior)
        if not fe_only:
            Hj, du = jax.jacfwd(lambda th: grad(th, u, data))(theta)
            return -f, -g, -Hj, (du, F)
        kf = data.X.shape[1]
        vcp = theta[kf:]
        Hj, du = jax.jacfwd(lambda fe: grad(jnp.concatenate([fe, vcp]), u, data))(theta[:kf])

        def pad(a):  # zero vcp columns: the shapes of the full derivatives
            return jnp.concatenate([a, jnp.zeros(a.shape[:-1] + vcp.shape, a.dtype)], axis=-1)

        return -f, -g, -pad(Hj), (pad(du), F)

    return vg


@functools.cache
def node_hessian_kernel(family: Family, mode, opts: LaplaceOptions, small: bool = False,
                        fe_only: bool = False):
    """:func:`node_hessian`, compiled.  ``small``: the light compiler options."""
    return persistent_jit(node_hessian(family, mode, opts, fe_only),
                          compiler_options=light_options() if small else large_options())


@functools.cache
def joint_third_kernel(family: Family, mode, small: bool = False):
    """``D(θ, u*, V, data) -> (k_fep, r)``: column m is (d/dt)² ∇_fe ℓ_j(θ + t·v_m) =
    Σ_jl ∂³ℓ_j/∂fe_i∂fe_j∂fe_l V_jm V_lm for the columns v_m of V (k_fep, r), through u*(θ)
    (two forward derivatives of kernels.marginal.joint_fe_grad).  ``small``: the light
    compiler options (the mode fit's; with the small-problem options, which skip LLVM's
    optimisations, it compiled in 0.7 s instead of 1.4 s on crossed-binary but ran in 11 ms
    instead of 4.8, 5 % of an integrated fit once compiled)."""
    grad = joint_fe_grad(family, mode)

    @functools.partial(persistent_jit,
                       compiler_options=light_options() if small else large_options())
    def third(theta, u, V, data: Data):
        pad = jnp.zeros(theta.shape[0] - V.shape[0], theta.dtype)

        def d2(v):
            v = jnp.concatenate([v, pad])
            g = lambda th: grad(th, u, data)[0]  # noqa: E731
            return jax.jvp(lambda th: jax.jvp(g, (th,), (v,))[1], (theta,), (v,))[1]

        return jax.vmap(d2, in_axes=1, out_axes=1)(V)

    return third


def skew_vector(third, theta, u, P: np.ndarray) -> np.ndarray | None:
    """T_i = Σ_jl C_jl ∂³ℓ_j/∂fe_i∂fe_j∂fe_l (k_fep,) with C = P⁻¹ (P = −∇²_fe J at the
    mode, k_fep × k_fep), for fe's skewness correction ½·C·T: with C = VVᵀ (V = Q·diag(w^−½)
    from P = Q·diag(w)·Qᵀ), Σ_m of :func:`joint_third_kernel`'s columns for V — k_fep
    directions, where the whole third-derivative tensor takes k_fep(k_fep + 1)/2.  ``third``:
    that program with ``data`` bound.  None when P is not positive definite."""
    w, Q = np.linalg.eigh(0.5 * (P + P.T))
    if not w.min() > 0:
        return None
    V = (Q / np.sqrt(w)).astype(theta.dtype)
    return np.asarray(third(theta, u, V), np.float64).sum(axis=1)
