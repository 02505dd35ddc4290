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
``S = Λ₂ᵀ(Z₂ᵀZ₂ − Z₂ᵀZ₁ W Z₁ᵀZ₂)Λ₂ + I`` with ``W_l = λ₁ (λ₁ᵀ D_l λ₁ + I)⁻¹ λ₁ᵀ``; its
log-determinant, solves and their reverse rule are :mod:`bayesglmm.linalg.cholesky`.

statsmodels parameterises the covariances by ψ, per parameter block the lower triangle of
``λλᵀ`` (``cov_re / scale``); the inverse of the Hessian of ``½ d(θ(ψ))`` gives statsmodels'
standard errors of ψ.

Every derivative is JAX's: :func:`evaluate` is ``jax.value_and_grad`` of the deviance (with the
auxiliary outputs the estimates need), :func:`second_order` forward over reverse (what
``jax.hessian`` is: ``jax.linearize`` of ``jax.grad``, its JVP mapped over the unit tangents) of
the same deviance together with the value, gradient, those outputs and
the ψ-Hessian, by ``jax.hessian`` of the second-order expansion of ``½ d`` at θ composed with
θ(ψ).  The dense block's linear algebra differentiates by the rules of
:mod:`bayesglmm.linalg.cholesky`: a reverse rule for the gradient, and for the Hessian the JVP
rule of ``(log|S|, RᵀS⁻¹R, S⁻¹R, S⁻¹)`` (two m × m products per tangent), tested against
:func:`deviance_plain` (JAX's own Cholesky rules, several times slower to differentiate twice).
Each is one compiled program per model structure (:func:`programs` picks XLA's options by
size).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .._export import persistent_jit
from .._xla import large_options, light_options, small_options
from ..design.crossprod import CrossProd, Structure
from ..linalg.cholesky import logdet_solve, logdet_solve_inverse, logdet_solve_plain
from ..linalg.small import batched_cholesky, batched_solve_lower

__all__ = [
    "Factors", "deviance", "deviance_hessian", "deviance_plain", "evaluate", "factor", "lambdas",
    "profiled", "programs", "psi_blocks", "psi_hessian", "psi_to_theta", "second_order",
    "theta_to_psi",
]


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


def _scalar_rest(struct: Structure) -> bool:
    """All terms after the largest are scalar: Λ₂ is diagonal."""
    return all(q == 1 for q in struct.q[1:])


def _lam2_diag(lams, struct: Structure):
    """Diagonal of Λ₂ (m,) when every term after the largest is scalar."""
    return jnp.concatenate(
        [jnp.broadcast_to(lam[0, 0], (L,)) for lam, L in zip(lams[1:], struct.levels[1:])]
    )


def _lam_t_rows(a, lams, struct: Structure):
    """Λ₂ᵀ a for ``a`` with m rows: per term and level, λ_tᵀ times the q_t rows."""
    if _scalar_rest(struct):  # elementwise: batched 1 × 1 products are slow on CPU
        d = _lam2_diag(lams, struct)
        return a * d.reshape((-1,) + (1,) * (a.ndim - 1))
    parts, off = [], 0
    for lam, L, q in zip(lams[1:], struct.levels[1:], struct.q[1:]):
        seg = a[off : off + L * q].reshape(L, q, -1)
        parts.append(jnp.einsum("ab,lak->lbk", lam, seg).reshape(L * q, -1))
        off += L * q
    return jnp.concatenate(parts, axis=0).reshape(a.shape)


def _lam_rows(a, lams, struct: Structure):
    """Λ₂ a (m rows)."""
    if _scalar_rest(struct):
        d = _lam2_diag(lams, struct)
        return a * d.reshape((-1,) + (1,) * (a.ndim - 1))
    parts, off = [], 0
    for lam, L, q in zip(lams[1:], struct.levels[1:], struct.q[1:]):
        seg = a[off : off + L * q].reshape(L, q, -1)
        parts.append(jnp.einsum("ab,lbk->lak", lam, seg).reshape(L * q, -1))
        off += L * q
    return jnp.concatenate(parts, axis=0).reshape(a.shape)


def _blocks(theta, cp: CrossProd, struct: Structure):
    """λ's, L₁₁ (batched), L₁₁⁻¹λ₁ᵀ and W (batched, (L₁, q₁, q₁) each)."""
    lams = lambdas(theta, struct)
    lam1 = lams[0]
    q1 = struct.q[0]
    if q1 == 1:  # scalar: elementwise (batched 1 × 1 factorisations are slow to compile)
        a11 = lam1[0, 0] ** 2 * cp.d11 + 1.0
        l11 = jnp.sqrt(a11)
        g = lam1[0, 0] / l11
        return lams, l11, g, g * g
    eye1 = jnp.eye(q1, dtype=cp.d11.dtype)
    a11 = jnp.einsum("ab,lac,cd->lbd", lam1, cp.d11, lam1) + eye1  # λ₁ᵀ D_l λ₁ + I
    # entry by entry, no batched LAPACK call (its thread-pool deadlock: linalg.small)
    l11 = batched_cholesky(a11)  # (L₁, q₁, q₁)
    g = batched_solve_lower(l11, jnp.broadcast_to(lam1.T, a11.shape))  # L₁₁⁻¹ λ₁ᵀ
    w = jnp.einsum("lab,lac->lbc", g, g)  # W_l = λ₁ A₁₁⁻¹ λ₁ᵀ
    return lams, l11, g, w


def _bmm(a, b):
    """Batched ``(L, q, q) @ (L, q, k)``; elementwise when q = 1."""
    if a.shape[-1] == 1 and a.shape[-2] == 1:
        return a * b
    return jnp.einsum("lab,lbk->lak", a, b)


def _c_times(cp: CrossProd, struct: Structure, v):
    """Z₂ᵀZ₁ v for v of shape (L₁, q₁, k) → (m, k)."""
    m = struct.m
    if struct.sparse:
        if struct.q[0] == 1:
            prod = cp.c_val * v[cp.c_lvl][:, 0, :]
        else:
            prod = jnp.einsum("ea,eak->ek", cp.c_val, v[cp.c_lvl])
        return jax.ops.segment_sum(prod, cp.c_row, num_segments=m)
    return jnp.einsum("ila,lak->ik", cp.c_dense, v)


def _ct_times(cp: CrossProd, struct: Structure, v):
    """Z₁ᵀZ₂ v for v of shape (m,) → (L₁, q₁), or (m, k) → (L₁, q₁, k)."""
    if v.ndim == 1:
        return _ct_times(cp, struct, v[:, None])[..., 0]
    if struct.sparse:
        return jax.ops.segment_sum(
            cp.c_val[:, :, None] * v[cp.c_row][:, None, :], cp.c_lvl,
            num_segments=struct.levels[0],
        )
    return jnp.einsum("ila,ik->lak", cp.c_dense, v)


def _schur(cp: CrossProd, struct: Structure, lams, w, full: bool = False):
    """S = Λ₂ᵀ (Z₂ᵀZ₂ − Z₂ᵀZ₁ W Z₁ᵀZ₂) Λ₂ + I; only its lower triangle is meaningful unless
    ``full`` (then both triangles are, and no m × m array is transposed)."""
    m = struct.m
    scalar = _scalar_rest(struct)
    if struct.sparse:
        wc = w[cp.cls_level][cp.pair_cls]  # (P, q₁, q₁) W of each pair's class
        if struct.q[0] == 1:
            contrib = cp.pair_val[:, 0, 0] * wc[:, 0, 0]
        else:
            contrib = jnp.einsum("pab,pab->p", cp.pair_val, wc)
        mm = jax.ops.segment_sum(contrib, cp.pair_idx, num_segments=m * m,
                                 indices_are_sorted=True)  # lower triangle, flat
        if scalar and full:  # the upper triangle by a second scatter, to the mirrored pairs
            i, j = cp.pair_idx // m, cp.pair_idx % m
            mm = mm + jax.ops.segment_sum(jnp.where(i > j, contrib, 0.0), j * m + i,
                                          num_segments=m * m)
        mm = mm.reshape(m, m)
        if not scalar:  # λ blocks mix the triangles: the full matrix
            mm = mm + mm.T - jnp.diag(jnp.diagonal(mm))
    else:
        cw = jnp.einsum("ila,lab->ilb", cp.c_dense, w).reshape(m, -1)
        mm = cw @ cp.c_dense.reshape(m, -1).T
    eye = jnp.eye(m, dtype=cp.a22.dtype)
    if scalar:  # Λ₂ diagonal: one elementwise pass, with no d ⊗ d (nor its tangents or
        # cotangents) materialised: (A − M) ∘ (d dᵀ) kept two m × m arrays per evaluation that
        # this form does not (InstEval-shaped, m = 1,126: 78–87 → 73–75 ms an evaluation)
        d = _lam2_diag(lams, struct)
        return d[:, None] * (cp.a22 - mm) * d[None, :] + eye
    half = _lam_t_rows(cp.a22 - mm, lams, struct)  # Λ₂ᵀ A
    return _lam_t_rows(half.T, lams, struct) + eye  # Λ₂ᵀ A Λ₂ + I


def _logdet_solve_forward(s, r):
    """:func:`~bayesglmm.linalg.cholesky.logdet_solve_inverse` less ``S⁻¹``: differentiable to
    any order through its JVP rule."""
    return logdet_solve_inverse(s, r)[:3]


def _factor(theta, cp: CrossProd, struct: Structure, plain: bool = False,
            forward: bool = False):
    """:func:`factor` plus the conditional modes as linear maps of ``[−β; 1]``.

    The dense block's ``(log|S|, RᵀS⁻¹R, S⁻¹R)`` come from
    :func:`~bayesglmm.linalg.cholesky.logdet_solve` (reverse mode once: the gradient),
    with ``forward`` from :func:`_logdet_solve_forward` (any order: the Hessian), with
    ``plain`` through JAX's own Cholesky rules (the reference).

    Returns ``(Factors, t, B1, B2)`` with ``t = [X y]ᵀV⁻¹[X y]`` (k × k, V relative to σ²) and
    ``b₁ = B1 [−β; 1]`` ``(L₁, q₁, k)``, ``b₂ = B2 [−β; 1]`` ``(m, k)``: the BLUPs at any β
    come from one evaluation (b = ΛL_θ⁻ᵀL_θ⁻¹ΛᵀZᵀ(y − Xβ), Bates et al. 2015 eqn 22).
    """
    lams, l11, g, w = _blocks(theta, cp, struct)
    c1 = _bmm(g, cp.b1)  # L₁₁⁻¹ λ₁ᵀ Z₁ᵀ[X y]
    t = cp.xy - jnp.einsum("lak,laj->kj", c1, c1)
    logdet = 2.0 * jnp.sum(jnp.log(jnp.diagonal(l11, axis1=1, axis2=2)))
    rz1 = cp.b1
    if struct.m:
        wb = _bmm(w, cp.b1)
        r2 = _lam_t_rows(cp.b2 - _c_times(cp, struct, wb), lams, struct)
        solve = (logdet_solve_plain if plain else _logdet_solve_forward if forward
                 else logdet_solve)
        logdet22, quad, u2 = solve(_schur(cp, struct, lams, w, full=forward), r2)
        t = t - quad
        logdet = logdet + logdet22
        b2 = _lam_rows(u2, lams, struct)  # (m, k)
        rz1 = rz1 - _ct_times(cp, struct, b2)
    else:
        b2 = jnp.zeros((0, cp.b1.shape[2]), cp.b1.dtype)
    b1 = _bmm(w, rz1)  # W (Z₁ᵀ[X y] − Z₁ᵀZ₂ B2)
    p = t.shape[0] - 1
    r = jnp.linalg.cholesky(t)  # [[R_X, 0], [c_βᵀ, r_θ]]
    logdet_x = 2.0 * jnp.sum(jnp.log(jnp.diagonal(r)[:p]))
    pwrss = r[p, p] ** 2
    return Factors(logdet, logdet_x, pwrss, t[:p, :p], t[:p, p]), t, b1, b2


def factor(theta, cp: CrossProd, struct: Structure) -> Factors:
    """Cholesky factorisation at θ: log-determinants, r²_θ and XᵀV⁻¹[X y]."""
    return _factor(theta, cp, struct)[0]


def profiled(f: Factors, n, p: int, reml):
    """Profiled deviance (−2 log-likelihood, σ² and β profiled out) from the factors.

    ``reml`` may be traced (a bool array): REML and ML share one compiled function.
    """
    nu = jnp.where(reml, n - p, n)
    dev = f.logdet_l + nu * (1.0 + jnp.log(2.0 * jnp.pi * f.pwrss / nu))
    return dev + jnp.where(reml, f.logdet_x, 0.0)


@functools.partial(jax.jit, static_argnames=("struct",))
def deviance(theta, cp: CrossProd, struct: Structure, reml: bool = True):
    """Profiled deviance d(θ) (ML) or REML criterion d_R(θ); a scalar."""
    p = cp.xy.shape[0] - 1
    return profiled(factor(theta, cp, struct), cp.n, p, reml)


def deviance_plain(theta, cp: CrossProd, struct: Structure, reml=True):
    """:func:`deviance` without the custom reverse rule (traceable, not jitted): the function
    that exact Hessians are taken of."""
    p = cp.xy.shape[0] - 1
    return profiled(_factor(theta, cp, struct, plain=True)[0], cp.n, p, reml)


@functools.partial(jax.jit, static_argnames=("struct",))
def deviance_hessian(theta, cp: CrossProd, struct: Structure, reml=True):
    """∇²d(θ): exact, by forward-over-reverse autodiff (no finite differences)."""
    return jax.hessian(deviance_plain)(theta, cp, struct, reml)


def _objective(theta, cp: CrossProd, struct: Structure, reml: bool):
    f, t, b1, b2 = _factor(theta, cp, struct)
    p = cp.xy.shape[0] - 1
    return profiled(f, cp.n, p, reml), (t, b1, b2)


@functools.partial(jax.jit, static_argnames=("struct",))
def evaluate(theta, cp: CrossProd, struct: Structure, reml: bool = True):
    """Everything a fit needs from one compiled function: ``(d(θ), ∇d(θ), (t, B1, B2))``.

    ``t = [X y]ᵀV⁻¹[X y]`` gives β̂, (XᵀV⁻¹X)⁻¹ and r²_θ; ``B1``, ``B2`` give the BLUPs (see
    :func:`_factor`).  One compilation per model structure serves the optimiser and the
    final estimates.
    """
    (dev, aux), grad = jax.value_and_grad(_objective, has_aux=True)(theta, cp, struct, reml)
    return dev, grad, aux


# ---------------------------------------------------------------- statsmodels' ψ = vech(λλᵀ)
def psi_blocks(struct: Structure) -> list:
    """The distinct θ blocks as ``(q, q)`` index matrices, in θ order (terms sharing a
    parameter key share a block), each with its free positions ``(i, j)``, column-major lower
    triangle: ``[(ti, [(i, j), ...]), ...]``."""
    seen = {}
    for q, ti in zip(struct.q, struct.theta_index):
        idx = np.asarray(ti).reshape(q, q)
        seen.setdefault(ti, idx)
    out = []
    for idx in sorted(seen.values(), key=lambda a: int(a[a >= 0].min())):
        q = idx.shape[0]
        out.append((idx, [(i, j) for j in range(q) for i in range(j, q) if idx[i, j] >= 0]))
    return out


def theta_to_psi(theta, struct: Structure, dtype=np.float64) -> np.ndarray:
    """ψ on the host, computed in ``dtype``: per block the free entries of ``λλᵀ``."""
    theta = np.asarray(theta, dtype)
    parts = []
    for ti, pos in psi_blocks(struct):
        lam = np.where(ti >= 0, theta[np.maximum(ti, 0)], dtype(0))
        s = lam @ lam.T
        parts.append(np.array([s[i, j] for i, j in pos], dtype))
    return np.concatenate(parts)


def psi_to_theta(psi, struct: Structure):
    """θ from ψ (traceable): per block ``λ = chol(λλᵀ)`` (a square root for diagonal blocks)."""
    theta = jnp.zeros(struct.n_theta, psi.dtype)
    k = 0
    for ti, pos in psi_blocks(struct):
        q = ti.shape[0]
        r, c = (np.array(v) for v in zip(*pos))
        s = jnp.zeros((q, q), psi.dtype).at[r, c].set(psi[k : k + len(r)])
        k += len(r)
        if np.all(r == c):  # diagonal structure
            lam = jnp.diag(jnp.sqrt(jnp.diagonal(s)))
        else:
            lam = jnp.linalg.cholesky(s + jnp.tril(s, -1).T)
        mask = ti >= 0
        theta = theta.at[ti[mask]].set(lam[mask])
    return theta


def _half_deviance_psi(psi, cp: CrossProd, struct: Structure, reml):
    return 0.5 * deviance_plain(psi_to_theta(psi, struct), cp, struct, reml)


@functools.partial(jax.jit, static_argnames=("struct",))
def psi_hessian(psi, cp: CrossProd, struct: Structure, reml=True):
    """∇²_ψ ½d(θ(ψ)): the observed information of ψ, exact (forward-over-reverse autodiff
    through :func:`deviance_plain`); one compilation per model structure."""
    return jax.hessian(_half_deviance_psi)(psi, cp, struct, reml)


def _forward_objective(theta, cp: CrossProd, struct: Structure, reml):
    f, t, b1, b2 = _factor(theta, cp, struct, forward=True)
    p = cp.xy.shape[0] - 1
    return profiled(f, cp.n, p, reml), (t, b1, b2)


@functools.partial(jax.jit, static_argnames=("struct",))
def second_order(theta, psi, cp: CrossProd, struct: Structure, reml=True):
    """``(d, ∇d, ∇²d, ∇²_ψ ½d(θ(ψ)), (t, B1, B2))`` at θ, all by autodiff, in one compiled
    program: for small structures everything a fit needs (the auxiliary outputs as
    :func:`evaluate`'s).

    ∇d and ∇²d come from forward over reverse through the deviance with the dense block built
    with both triangles and differentiated by the JVP rule of
    :func:`~bayesglmm.linalg.cholesky.logdet_solve_inverse` (equal to :func:`deviance_hessian`,
    through JAX's own Cholesky rules, to roundoff; on the InstEval-shaped design, m = 1,126,
    2.6× faster): ``jax.grad`` linearised once (``jax.linearize``, the primal pass and its
    residuals shared) and its JVP mapped over the unit tangents by ``jax.lax.map``, one tangent
    at a time.  ``jax.jacfwd`` (the same numbers to 1e-15 relative) batches the n_θ tangents,
    which puts a batch dimension on every m × m tangent array that XLA transposes and copies
    around each product: on the InstEval-shaped design 0.47 → 0.36 s a Hessian, compiled in
    1.8 s instead of 2.0.  The ψ-Hessian (the
    observed information of statsmodels' ψ, with ``psi = theta_to_psi(theta)``) is
    ``jax.hessian`` of the second-order expansion

        m(ψ) = ½ [∇dᵀ Δ + ½ Δᵀ ∇²d Δ],      Δ = θ(ψ) − θ,

    whose Hessian at ψ equals that of ``½ d(θ(ψ))`` (both depend on d only through ∇d and ∇²d
    at θ).  It is NaN where θ(ψ) is not differentiable (a variance at zero), and cheap: θ has a
    handful of entries.
    """
    def grad_aux(th):
        (value, aux), grad = jax.value_and_grad(_forward_objective, has_aux=True)(
            th, cp, struct, reml)
        return grad, (value, aux)

    grad, grad_jvp, (value, aux) = jax.linearize(grad_aux, theta, has_aux=True)
    hess = jax.lax.map(grad_jvp, jnp.eye(theta.shape[0], dtype=theta.dtype))
    hess = 0.5 * (hess + hess.T)
    theta_psi = jax.lax.stop_gradient(psi_to_theta(psi, struct))  # = θ

    def expansion(ps):
        delta = psi_to_theta(ps, struct) - theta_psi
        return 0.5 * (grad @ delta + 0.5 * delta @ hess @ delta)

    return value, grad, hess, jax.hessian(expansion)(psi), aux


# XLA options (_xla.small_options: on CPU; XLA's defaults on other backends): XLA's classic
# elemental emitters rather than its MLIR fusion emitters, and no LLVM optimisation passes.
# Measured on a loaded 2-core machine:
# on sleepstudy :func:`evaluate` compiles in 0.8 s instead of 2.4 s and :func:`second_order` in
# 2.0 s instead of 9 s, each run still well under a millisecond; on the InstEval-shaped design
# (a million pairs, m = 1,126) ``second_order`` compiles in 1.0 s of CPU instead of 5.0 s and
# runs in 1.3 s of CPU instead of 0.9 s (its time is mostly two m × m products per θ entry:
# one Hessian per fit there), while ``evaluate``, run a dozen times or more, is 1.7× faster
# with the defaults.
_SMALL_WORK = 200_000  # array entries an evaluation touches, at most, for the small options
# second_order never takes XLA's defaults: so compiled, the InstEval shape's warm fit took
# 1.65 -> 1.48 s (its m × m products run faster), but on statsmodels'
# test_random_effects_getters (500 groups, q = 6) the program crashed the process when run (a
# segmentation fault inside XLA's CPU code, jax 0.10.2).  Where the dense block is large (m ≥
# _LIGHT_HESSIAN_M) it takes the light options (_xla.light_options: the classic emitters, as
# the small options, with LLVM's optimisations): on the InstEval shape the Hessian took
# 0.60-0.65 -> 0.44-0.55 s in interleaved runs, and 0.4-0.7 s more to compile without the
# cache (a fresh process with the warm cache: 3.10-3.36 -> 2.83-2.97 s).  Forced at every
# size, the light program ran the whole test suite and statsmodels' own test_lme.py without a
# fault.
_LIGHT_HESSIAN_M = 512


@functools.cache
def _small_programs(backend: str):
    """(evaluate, second_order) jitted with the small-problem options of ``backend``."""
    opts = small_options()
    return (persistent_jit(evaluate.__wrapped__, static_argnames=("struct",),
                           compiler_options=opts),
            persistent_jit(second_order.__wrapped__, static_argnames=("struct",),
                           compiler_options=opts))


@functools.cache
def _light_second_order(backend: str):
    """:func:`second_order` with the light options of ``backend`` (``_xla.light_options``)."""
    return persistent_jit(second_order.__wrapped__, static_argnames=("struct",),
                          compiler_options=light_options())


@functools.cache
def _large_evaluate(backend: str):
    """:func:`evaluate` with the large-problem options of ``backend`` (``_xla.large_options``:
    XLA's defaults on CPU), traced once per machine."""
    return persistent_jit(evaluate.__wrapped__, static_argnames=("struct",),
                          compiler_options=large_options())


def programs(cp: CrossProd, struct: Structure):
    """``(evaluate, second_order)`` as a fit runs them: :func:`second_order` with the
    small-problem XLA options of ``_xla.small_options`` (compiling it dominates) unless the
    dense block has at least ``_LIGHT_HESSIAN_M`` rows (its m × m products dominate: the
    light options), :func:`evaluate` with the small options where an evaluation touches few
    array entries, with the large-problem ones otherwise.  Same functions, same results up to
    roundoff."""
    work = (np.size(cp.pair_val) + np.size(cp.c_val) + np.size(cp.c_dense) + np.size(cp.d11)
            + np.size(cp.b1) + struct.m ** 2)
    evaluate_small, second_order_small = _small_programs(jax.default_backend())
    evaluate_large = _large_evaluate(jax.default_backend())
    second = (_light_second_order(jax.default_backend()) if struct.m >= _LIGHT_HESSIAN_M
              else second_order_small)
    return (evaluate_small if work <= _SMALL_WORK else evaluate_large), second
