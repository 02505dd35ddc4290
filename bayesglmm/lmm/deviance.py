"""The profiled deviance of a linear mixed model as a pure JAX function of θ.

Bates, Mächler, Bolker & Walker (2015), "Fitting linear mixed-effects models using lme4",
J. Stat. Softw. 67(1), §3.  With relative covariance factor Λθ (block diagonal, ``I ⊗ λ_t``
per term), the sparse Cholesky factor

    L_θ L_θᵀ = Λθᵀ Zᵀ Z Λθ + I                       (eqn 18)

and the fixed-effects factor ``R_X R_Xᵀ = XᵀX − R_ZXᵀ R_ZX`` (eqn 23), the penalised residual
sum of squares is ``r²_θ = yᵀy − ‖c_u‖² − ‖c_β‖²`` and

    ML:   d(θ)   = log|L_θ|² + n [1 + log(2π r²_θ / n)]                       (eqn 34)
    REML: d_R(θ) = log|L_θ|² + log|R_X|² + (n−p) [1 + log(2π r²_θ / (n−p))]   (eqn 41)

``L_θ`` is formed blockwise: ``Z₁`` (the largest term) gives a block-diagonal ``A₁₁`` factored
by a batched Cholesky; the other terms form one dense Schur complement
``S = Λ₂ᵀ(Z₂ᵀZ₂ − Z₂ᵀZ₁ W Z₁ᵀZ₂)Λ₂ + I`` with ``W_l = λ₁ (λ₁ᵀ D_l λ₁ + I)⁻¹ λ₁ᵀ``.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.linalg import solve_triangular

from .crossprod import CrossProd, Structure

__all__ = ["Factors", "conditional_modes", "deviance", "factor", "lambdas", "profiled"]


class Factors(NamedTuple):
    """Cholesky pieces at one θ."""

    logdet_l: jax.Array  # () log|L_θ|²
    logdet_x: jax.Array  # () log|R_X|²
    pwrss: jax.Array  # () r²_θ, penalised weighted residual sum of squares
    txx: jax.Array  # (p, p) XᵀV⁻¹X (V relative to σ²)
    txy: jax.Array  # (p,)  XᵀV⁻¹y


def lambdas(theta, struct: Structure) -> list:
    """Per term the lower-triangular (q_t, q_t) relative covariance factor λ_t."""
    out = []
    for q, ti in zip(struct.q, struct.theta_index):
        idx = np.asarray(ti).reshape(q, q)
        out.append(jnp.where(jnp.asarray(idx >= 0), theta[np.maximum(idx, 0)], 0.0))
    return out


def _lam_t_rows(a, lams, struct: Structure):
    """Λ₂ᵀ a for ``a`` with m rows: per term and level, λ_tᵀ times the q_t rows."""
    parts, off = [], 0
    for lam, L, q in zip(lams[1:], struct.levels[1:], struct.q[1:]):
        seg = a[off : off + L * q].reshape(L, q, -1)
        parts.append(jnp.einsum("ab,lak->lbk", lam, seg).reshape(L * q, -1))
        off += L * q
    return jnp.concatenate(parts, axis=0)


def _lam_rows(a, lams, struct: Structure):
    """Λ₂ a (m rows)."""
    parts, off = [], 0
    for lam, L, q in zip(lams[1:], struct.levels[1:], struct.q[1:]):
        seg = a[off : off + L * q].reshape(L, q, -1)
        parts.append(jnp.einsum("ab,lbk->lak", lam, seg).reshape(L * q, -1))
        off += L * q
    return jnp.concatenate(parts, axis=0)


def _blocks(theta, cp: CrossProd, struct: Structure):
    """λ's, L₁₁ (batched), W and the Schur complement pieces."""
    lams = lambdas(theta, struct)
    lam1 = lams[0]
    q1 = struct.q[0]
    eye1 = jnp.eye(q1, dtype=cp.d11.dtype)
    a11 = jnp.einsum("ab,lac,cd->lbd", lam1, cp.d11, lam1) + eye1  # λ₁ᵀ D_l λ₁ + I
    l11 = jnp.linalg.cholesky(a11)  # (L₁, q₁, q₁)
    g = solve_triangular(l11, jnp.broadcast_to(lam1.T, a11.shape), lower=True)  # L₁₁⁻¹ λ₁ᵀ
    w = jnp.einsum("lab,lac->lbc", g, g)  # W_l = λ₁ A₁₁⁻¹ λ₁ᵀ
    return lams, l11, g, w


def _c_times(cp: CrossProd, struct: Structure, v):
    """Z₂ᵀZ₁ v for v of shape (L₁, q₁, k) → (m, k)."""
    m = struct.m
    if struct.sparse:
        return jax.ops.segment_sum(
            jnp.einsum("ea,eak->ek", cp.c_val, v[cp.c_lvl]), cp.c_row, num_segments=m
        )
    return jnp.einsum("ila,lak->ik", cp.c_dense, v)


def _ct_times(cp: CrossProd, struct: Structure, v):
    """Z₁ᵀZ₂ v for v of shape (m,) → (L₁, q₁)."""
    if struct.sparse:
        return jax.ops.segment_sum(
            cp.c_val * v[cp.c_row][:, None], cp.c_lvl, num_segments=struct.levels[0]
        )
    return jnp.einsum("ila,i->la", cp.c_dense, v)


def tri_inv(chol, base: int = 128):
    """Inverse of a lower-triangular matrix by 2 × 2 block recursion.

    ``[[A, 0], [B, C]]⁻¹ = [[A⁻¹, 0], [−C⁻¹BA⁻¹, C⁻¹]]``: the work is in matrix products,
    several times faster on CPU than one triangular solve against the identity.
    """
    n = chol.shape[0]
    if n <= base:
        return solve_triangular(chol, jnp.eye(n, dtype=chol.dtype), lower=True)
    h = n // 2
    ai = tri_inv(chol[:h, :h], base)
    ci = tri_inv(chol[h:, h:], base)
    low = -(ci @ (chol[h:, :h] @ ai))
    return jnp.block([[ai, jnp.zeros((h, n - h), chol.dtype)], [low, ci]])


@jax.custom_vjp
def logdet_quad(s, r):
    """``(log|S|, Rᵀ S⁻¹ R)`` for symmetric positive definite ``S`` (m, m) and ``R`` (m, k).

    The reverse rule is written out (``∂log|S| = S⁻¹``, ``∂(RᵀS⁻¹R) = …``): JAX's generic
    Cholesky VJP is an order of magnitude slower on CPU for m in the thousands.
    """
    chol = jnp.linalg.cholesky(s)
    y = solve_triangular(chol, r, lower=True)
    return 2.0 * jnp.sum(jnp.log(jnp.diagonal(chol))), y.T @ y


def _logdet_quad_fwd(s, r):
    chol = jnp.linalg.cholesky(s)
    y = solve_triangular(chol, r, lower=True)
    return (2.0 * jnp.sum(jnp.log(jnp.diagonal(chol))), y.T @ y), (chol, y)


def _logdet_quad_bwd(res, g):
    chol, y = res
    g_ld, g_q = g
    m = chol.shape[0]
    del m
    linv = tri_inv(chol)  # L⁻¹
    sinv = linv.T @ linv  # S⁻¹
    x = linv.T @ y  # S⁻¹R
    gs = 0.5 * (g_q + g_q.T)
    grad_s = g_ld * sinv - x @ gs @ x.T
    grad_r = 2.0 * x @ gs
    return grad_s, grad_r


logdet_quad.defvjp(_logdet_quad_fwd, _logdet_quad_bwd)


def _schur(cp: CrossProd, struct: Structure, lams, w):
    """S = Λ₂ᵀ (Z₂ᵀZ₂ − Z₂ᵀZ₁ W Z₁ᵀZ₂) Λ₂ + I."""
    m = struct.m
    if struct.sparse:
        contrib = jnp.einsum("pab,pab->p", cp.pair_val, w[cp.pair_lvl])
        mm = jax.ops.segment_sum(
            contrib, cp.pair_idx, num_segments=m * m, indices_are_sorted=True
        ).reshape(m, m)
    else:
        cw = jnp.einsum("ila,lab->ilb", cp.c_dense, w).reshape(m, -1)
        mm = cw @ cp.c_dense.reshape(m, -1).T
    half = _lam_t_rows(cp.a22 - mm, lams, struct)  # Λ₂ᵀ A
    return _lam_t_rows(half.T, lams, struct) + jnp.eye(m, dtype=cp.a22.dtype)  # Λ₂ᵀ A Λ₂ + I


def factor(theta, cp: CrossProd, struct: Structure) -> Factors:
    """Cholesky factorisation at θ: log-determinants, r²_θ and XᵀV⁻¹[X y]."""
    lams, l11, g, w = _blocks(theta, cp, struct)
    c1 = jnp.einsum("lab,lbk->lak", g, cp.b1)  # L₁₁⁻¹ λ₁ᵀ Z₁ᵀ[X y]
    t = cp.xy - jnp.einsum("lak,laj->kj", c1, c1)
    logdet = 2.0 * jnp.sum(jnp.log(jnp.diagonal(l11, axis1=1, axis2=2)))
    if struct.m:
        wb = jnp.einsum("lab,lbk->lak", w, cp.b1)
        r2 = _lam_t_rows(cp.b2 - _c_times(cp, struct, wb), lams, struct)
        logdet22, quad = logdet_quad(_schur(cp, struct, lams, w), r2)
        t = t - quad
        logdet = logdet + logdet22
    p = t.shape[0] - 1
    r = jnp.linalg.cholesky(t)  # [[R_X, 0], [c_βᵀ, r_θ]]
    logdet_x = 2.0 * jnp.sum(jnp.log(jnp.diagonal(r)[:p]))
    pwrss = r[p, p] ** 2
    return Factors(logdet, logdet_x, pwrss, t[:p, :p], t[:p, p])


def profiled(f: Factors, n, p: int, reml: bool):
    """Profiled deviance (−2 log-likelihood, σ² and β profiled out) from the factors."""
    if reml:
        nu = n - p
        return f.logdet_l + f.logdet_x + nu * (1.0 + jnp.log(2.0 * jnp.pi * f.pwrss / nu))
    return f.logdet_l + n * (1.0 + jnp.log(2.0 * jnp.pi * f.pwrss / n))


@functools.partial(jax.jit, static_argnames=("struct", "reml"))
def deviance(theta, cp: CrossProd, struct: Structure, reml: bool = True):
    """Profiled deviance d(θ) (ML) or REML criterion d_R(θ); a scalar."""
    p = cp.xy.shape[0] - 1
    return profiled(factor(theta, cp, struct), cp.n, p, reml)


@functools.partial(jax.jit, static_argnames=("struct", "reml"))
def deviance_and_grad(theta, cp: CrossProd, struct: Structure, reml: bool = True):
    """``(d(θ), ∇d(θ))`` by reverse-mode autodiff."""
    return jax.value_and_grad(deviance)(theta, cp, struct, reml)


def conditional_modes(theta, beta, cp: CrossProd, struct: Structure):
    """Conditional modes b = Λu of the random effects (the BLUPs) at θ and β.

    Solves (ΛᵀZᵀZΛ + I) u = ΛᵀZᵀ(y − Xβ) blockwise.  Returns ``(b1, b2)``: ``(L₁, q₁)`` for
    the largest term and ``(m,)`` for the others, in crossprod order.
    """
    lams, l11, _g, w = _blocks(theta, cp, struct)
    lam1 = lams[0]
    coef = jnp.concatenate([-beta, jnp.ones((1,), beta.dtype)])
    rz1 = cp.b1 @ coef  # (L₁, q₁) Z₁ᵀ(y − Xβ)
    if struct.m:
        rz2 = cp.b2 @ coef  # (m,)
        l22 = jnp.linalg.cholesky(_schur(cp, struct, lams, w))
        wr = jnp.einsum("lab,lb->la", w, rz1)
        r2 = _lam_t_rows((rz2 - _c_times(cp, struct, wr[..., None])[:, 0])[:, None], lams, struct)
        u2 = jax.scipy.linalg.cho_solve((l22, True), r2)[:, 0]
        b2 = _lam_rows(u2[:, None], lams, struct)[:, 0]
        rz1 = rz1 - _ct_times(cp, struct, b2)
    else:
        b2 = jnp.zeros((0,), cp.b1.dtype)
    rhs = jnp.einsum("ab,la->lb", lam1, rz1)  # λ₁ᵀ(...)
    u1 = jax.scipy.linalg.cho_solve((l11, True), rhs[..., None])[..., 0]
    b1 = jnp.einsum("ab,lb->la", lam1, u1)
    return b1, b2


@functools.partial(jax.jit, static_argnames=("struct", "reml"))
def estimates(theta, cp: CrossProd, struct: Structure, reml: bool = True):
    """β̂, (XᵀV⁻¹X)⁻¹, σ̂², the deviance and the conditional modes (b₁, b₂) at θ."""
    p = cp.xy.shape[0] - 1
    f = factor(theta, cp, struct)
    chol = jnp.linalg.cholesky(f.txx)
    beta = jax.scipy.linalg.cho_solve((chol, True), f.txy)
    txx_inv = jax.scipy.linalg.cho_solve((chol, True), jnp.eye(p, dtype=f.txx.dtype))
    sigma2 = f.pwrss / (cp.n - p if reml else cp.n)
    b1, b2 = conditional_modes(theta, beta, cp, struct)
    return beta, txx_inv, sigma2, profiled(f, cp.n, p, reml), b1, b2
