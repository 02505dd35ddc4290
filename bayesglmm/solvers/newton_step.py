"""One step of the structured modified Newton method for f(a, v) with small a and large v.

Hessian blocks, all by autodiff (forward-over-reverse), never by finite differences:

* ``H_aa`` (k_a × k_a) and ``H_va`` (k_vc × r × k_a): k_a Jacobian-vector products of ∇f.
* ``H_vv``: its r × r diagonal blocks from r Hessian-vector products per *colour*, where a
  colouring of the random-effect columns guarantees that two columns of one colour never share
  a row of Z (design.ellpack.colors).  One grouping factor → one colour → ``H_vv`` is exactly
  block-diagonal.  Several factors → ``H_vv`` is sparse but not block-diagonal; its blocks
  then precondition conjugate gradients with exact Hessian-vector products.

The Newton system is solved through the Schur complement onto the small block,

    S = H_aa − H_avᵀ H_vv⁻¹ H_va,     da = S⁻¹(−g_a + H_avᵀ H_vv⁻¹ g_v),
    dv = −H_vv⁻¹ (g_v + H_va da),

with S's eigenvalues replaced by their absolute values (saddle-free Newton) and
Levenberg–Marquardt damping μ; small problems solve the full dense Hessian instead
(:func:`dense_step`).  All products come from one linearisation of ∇f (``structured_blocks``).
With several colours the H_vv solves are inexact Newton (CG to a relative residual that
shrinks with ‖g‖, Eisenstat–Walker).  :func:`make_step` is what the iteration
(solvers.newton) calls: one traceable step whose runtime ``mode`` picks how much of this it
computes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from ..linalg.psd import abs_solve, pcg
from ..linalg.psd import block_solve as _block_solve_lu

__all__ = ["CURVATURE", "GRAD", "NEWTON", "NONE", "WARM", "NewtonOptions", "Step",
           "default_options", "dense_step", "make_step", "structured_blocks", "structured_step"]

# what a step computes (its runtime ``mode``)
NONE = -1  # nothing
GRAD = 0  # the gradient only
WARM = 1  # ... and H_vv's diagonal blocks, and the v-only direction −blocks⁻¹·g_v
CURVATURE = 2  # ... and H_aa, H_va (no direction)
NEWTON = 3  # ... and the Newton direction by the Schur complement (with H_vv⁻¹H_va)


class NewtonOptions(NamedTuple):
    maxiter: int = 100
    gtol: float = 1e-8  # stop when ‖∇f‖_∞ ≤ gtol
    ftol: float = 1e-13  # ... or when the Newton decrement ½·gᵀH⁻¹g ≤ ftol·(1 + |f|)
    cg_tol: float = 1e-10  # relative residual of the CG solves (several factors only)
    cg_maxiter: int = 500
    max_ls: int = 40  # line-search halvings (at most max_ls + 1 evaluations)
    warm_v: int = 8  # first, up to this many Newton steps in v alone (a fixed)


def default_options(dtype) -> NewtonOptions:
    """The tolerances for ``dtype`` (float32 cannot reach float64's)."""
    if np.dtype(dtype) == np.float64:
        return NewtonOptions(gtol=1e-8, ftol=1e-13, cg_tol=1e-10)
    return NewtonOptions(gtol=1e-3, ftol=1e-7, cg_tol=1e-5)


def _abs_solve(S, b, mu):
    """(|S̃| + μ·diag(|S̃|))⁻¹·b, with S̃'s eigenvalues replaced by max(|λ|, 1e-10·max|λ|):
    linalg.psd.abs_solve, solved by Cholesky (the matrix is positive definite) rather than
    LU, which keeps the compiled step smaller.  S (k, k) symmetric, b (k,), mu ()."""
    w, Q = jnp.linalg.eigh(0.5 * (S + S.T))
    floor = 1e-10 * jnp.max(jnp.abs(w), initial=0.0) + jnp.finfo(S.dtype).tiny
    w = jnp.maximum(jnp.abs(w), floor)
    Sc = (Q * w) @ Q.T
    Sc = Sc + mu * jnp.diag(jnp.diag(Sc))
    L = lax.linalg.cholesky(Sc, symmetrize_input=False)
    y = lax.linalg.triangular_solve(L, b[:, None], left_side=True, lower=True)
    return lax.linalg.triangular_solve(L, y, left_side=True, lower=True, transpose_a=True)[:, 0]


def _block_solve(blocks, x):
    """Solve the block-diagonal system: blocks (k, r, r), x (k, r, b); 2 × 2 blocks (the
    variational fit's mean and log-SD) in closed form, others as linalg.psd.block_solve."""
    if blocks.shape[1] != 2:
        return _block_solve_lu(blocks, x)
    a, b, c, d = blocks[:, 0, 0, None], blocks[:, 0, 1, None], blocks[:, 1, 0, None], \
        blocks[:, 1, 1, None]
    det = a * d - b * c
    return jnp.stack([(d * x[:, 0] - b * x[:, 1]) / det, (a * x[:, 1] - c * x[:, 0]) / det],
                     axis=1)


def _diag_blocks(hvp, color, n_colors: int, k: int, r: int, dtype):
    """The r × r diagonal blocks of H_vv, shape (k, r, r), from r Hessian-vector products per
    colour: with unit tangents on the columns of one colour, row j of H·t is column s of
    block j exactly, because no two columns of a colour share a row of Z."""

    def body(c, blocks):
        mask = (color == c).astype(dtype)
        for s in range(r):
            hv = hvp(jnp.zeros((k, r), dtype).at[:, s].set(mask))
            blocks = blocks.at[:, :, s].add(hv * mask[:, None])
        return blocks

    return lax.fori_loop(0, n_colors, body, jnp.zeros((k, r, r), dtype))


def _linearise(f, a, v, args):
    """``(ga, gv, lin)``: ∇f at (a, v) and its linearisation (forward-over-reverse)."""
    grad = jax.grad(f, argnums=(0, 1))
    (ga, gv), lin = jax.linearize(lambda a_, v_: grad(a_, v_, *args), a, v)
    return ga, gv, lin


def _cross_blocks(lin, a, v):
    """H_aa (k_a, k_a) and H_va (k, r, k_a): k_a products with unit tangents in a."""
    eye = jnp.eye(a.shape[0], dtype=a.dtype)
    return jax.vmap(lambda e: lin(e, jnp.zeros_like(v)), out_axes=(1, 2))(eye)


def structured_blocks(f, a, v, args, color, n_colors):
    """Gradient and Hessian blocks of f at (a, v).

    Returns ``(ga, gv, Haa, Hva, blocks, hvp)``: ga (k_a,), gv (k, r), Haa (k_a, k_a),
    Hva (k, r, k_a), blocks (k, r, r) the diagonal blocks of H_vv, and ``hvp(u)`` = H_vv·u.

    One linearisation of ∇f at (a, v) (forward-over-reverse) serves every product: the
    forward pass over the rows, and the family's higher moments, are computed once; each of
    the k_a + r·n_colors products (and each later CG product) is then a linear pass.
    """
    k, r = v.shape
    ga, gv, lin = _linearise(f, a, v, args)
    Haa, Hva = _cross_blocks(lin, a, v)

    def hvp(u):
        return lin(jnp.zeros_like(a), u)[1]

    blocks = _diag_blocks(hvp, color, n_colors, k, r, v.dtype)
    return ga, gv, Haa, Hva, blocks, hvp


def _schur_step(ga, gv, Haa, Hva, blocks, hvp, n_colors, cg_tol, cg_maxiter, mu, g_ref, Ya0):
    """The Newton direction by the Schur complement (see :func:`structured_step`)."""
    ka = ga.shape[0]
    rhs = jnp.concatenate([Hva, gv[:, :, None]], axis=2)  # (k, r, k_a + 1)
    if n_colors == 1:
        Y = _block_solve(blocks * (1 + mu), rhs)
        n_cg = jnp.asarray(0)
    else:
        x0 = None
        if Ya0 is not None:
            prev, use = Ya0
            x0 = _block_solve(blocks * (1 + mu), rhs)  # the block-Jacobi start
            x0 = x0.at[:, :, :ka].set(jnp.where(use, prev, x0[:, :, :ka]))
        tol = cg_tol
        if g_ref is not None:
            gnorm = jnp.sqrt(jnp.sum(ga**2) + jnp.sum(gv**2))
            eta = jnp.minimum(0.1, gnorm / jnp.where(g_ref > 0, g_ref, jnp.inf))
            tol = jnp.maximum(jnp.where(jnp.isfinite(eta), eta, 0.1), cg_tol)

        def damped(x):
            return hvp(x) + mu * jnp.einsum("krs,ks->kr", blocks, x)

        Y, n_cg = pcg(damped, blocks * (1 + mu), rhs, tol, cg_maxiter, return_iters=True, x0=x0)
    S = Haa - jnp.einsum("krp,krq->pq", Hva, Y[:, :, :ka])
    ra = -ga + jnp.einsum("krp,kr->p", Hva, Y[:, :, ka])
    da = _abs_solve(S, ra, mu)
    dv = -(Y[:, :, ka] + Y[:, :, :ka] @ da)
    return da, dv, n_cg, Y[:, :, :ka]


def structured_step(f, a, v, args, color, n_colors, opts: NewtonOptions, mu=0.0, g_ref=None,
                    Ya0=None):
    """Newton direction (da, dv) and gradient by the Schur complement; ``mu`` ≥ 0 adds
    Levenberg–Marquardt damping (H_vv's diagonal blocks scaled by 1 + μ, S̃ + μ·diag(S̃)).

    With several colours the H_vv solves are by CG.  Given ``g_ref`` (the gradient norm at
    the start), they are inexact Newton solves (Eisenstat & Walker, SIAM J. Sci. Comput. 17,
    1996): relative residual η = min(0.1, ‖g‖/g_ref), floored at ``opts.cg_tol`` — loose far
    from the optimum, tight near it, where η = O(‖g‖) keeps the convergence quadratic.
    ``Ya0 = (Y, use)``: where ``use``, CG for the columns H_vv⁻¹H_va starts from Y (k, r, k_a),
    the previous iteration's; near the optimum they change little, unlike the column of g_v,
    which goes to zero.

    Returns ``(da, dv, ga, gv, n_cg, Ya)`` with Ya = H_vv⁻¹H_va (for the next ``Ya0``)."""
    ga, gv, Haa, Hva, blocks, hvp = structured_blocks(f, a, v, args, color, n_colors)
    da, dv, n_cg, Ya = _schur_step(ga, gv, Haa, Hva, blocks, hvp, n_colors, opts.cg_tol,
                                   opts.cg_maxiter, mu, g_ref, Ya0)
    return da, dv, ga, gv, n_cg, Ya


def _flat(f, a, v, args):
    """F(x) = f(a, v) with x = (a, v.ravel()), and x at (a, v)."""
    ka, shape = a.shape[0], v.shape

    def F(x):
        return f(x[:ka], x[ka:].reshape(shape), *args)

    return F, jnp.concatenate([a, v.ravel()])


def dense_step(f, a, v, args, mu=0.0):
    """Newton direction from the full dense Hessian (small problems, and the test reference)."""
    ka, shape = a.shape[0], v.shape
    F, x = _flat(f, a, v, args)
    g = jax.grad(F)(x)
    H = jax.hessian(F)(x)
    d = abs_solve(H, -g, mu)
    return d[:ka], d[ka:].reshape(shape), g[:ka], g[ka:].reshape(shape)


class Step(NamedTuple):
    """What one step computes at a point (zeros where its mode skips)."""

    ga: jax.Array  # (k_a,) gradient in a
    gv: jax.Array  # (k, r) gradient in v
    da: jax.Array  # (k_a,) direction: Newton (NEWTON), 0 (WARM)
    dv: jax.Array  # (k, r) direction: Newton (NEWTON), −blocks⁻¹·g_v (WARM)
    slope: jax.Array  # () gᵀd along (da, dv)
    gnorm: jax.Array  # () ‖g‖₂
    ginf: jax.Array  # () ‖g‖_∞
    Haa: jax.Array  # (k_a, k_a) H_aa (CURVATURE, NEWTON; dense: always)
    Hva: jax.Array  # (k, r, k_a) H_va (idem)
    blocks: jax.Array  # (k, r, r) diagonal blocks of H_vv (from WARM on; dense: always)
    Ya: jax.Array  # (k, r, k_a) H_vv⁻¹H_va (NEWTON, structured), the next CG start; dense: (0,)
    H: jax.Array  # (p, p) the full Hessian, p = k_a + k·r (dense), else (0, 0)
    n_cg: jax.Array  # () int32 CG iterations


def _finish(ga, gv, da, dv, Haa, Hva, blocks, Ya, H, n_cg):
    gnorm = jnp.sqrt(jnp.sum(ga**2) + jnp.sum(gv**2))
    ginf = jnp.maximum(jnp.max(jnp.abs(ga), initial=0.0), jnp.max(jnp.abs(gv), initial=0.0))
    slope = jnp.sum(ga * da) + jnp.sum(gv * dv)
    return Step(ga, gv, da, dv, slope, gnorm, ginf, Haa, Hva, blocks, Ya, H,
                jnp.asarray(n_cg, jnp.int32))


def make_step(f: Callable, dense: bool, n_colors: int) -> Callable:
    """``step(a, v, mu, g_ref, Ya, mode, color, cg_tol, cg_maxiter, args) -> Step``: at (a, v)
    what ``mode`` asks for (``NONE``, ``GRAD``, ``WARM``, ``CURVATURE`` or ``NEWTON``); the
    Newton direction is damped by ``mu``, its CG solves are inexact relative to ``g_ref``
    (> 0) and start from ``Ya`` when ``g_ref`` > 0 (:func:`structured_step`).  With ``dense``
    the full Hessian is formed (whatever the mode but ``NONE``) and the direction solves it by
    |eigenvalues| (:func:`dense_step`).  Traceable; one copy of f's derivatives."""

    def dense_kernel(a, v, mu, g_ref, Ya, mode, color, cg_tol, cg_maxiter, args):
        k, r = v.shape
        ka = a.shape[0]
        F, x = _flat(f, a, v, args)
        g, lin = jax.linearize(jax.grad(F), x)
        H = jax.vmap(lin)(jnp.eye(x.shape[0], dtype=x.dtype))  # columns H·e_p (H symmetric)
        d = _abs_solve(H, -g, mu)
        ga, gv = g[:ka], g[ka:].reshape(k, r)
        Hvv = H[ka:, ka:].reshape(k, r, k, r)
        blocks = Hvv[jnp.arange(k), :, jnp.arange(k), :]
        dv_warm = -_block_solve(blocks, gv[:, :, None])[:, :, 0]
        warm = mode == WARM
        da = jnp.where(warm, 0.0, d[:ka])
        dv = jnp.where(warm, dv_warm, d[ka:].reshape(k, r))
        return _finish(ga, gv, da, dv, H[:ka, :ka], H[ka:, :ka].reshape(k, r, ka), blocks, Ya,
                       H, 0)

    def structured_kernel(a, v, mu, g_ref, Ya, mode, color, cg_tol, cg_maxiter, args):
        k, r = v.shape
        ka = a.shape[0]
        dt = v.dtype
        no_cg = jnp.zeros((), jnp.int32)
        no_H = jnp.zeros((0, 0), dt)

        def gradient():  # a plain reverse pass: the linearisation costs more (higher moments)
            ga, gv = jax.grad(f, argnums=(0, 1))(a, v, *args)
            return _finish(ga, gv, jnp.zeros_like(a), jnp.zeros_like(v), jnp.zeros((ka, ka), dt),
                           jnp.zeros((k, r, ka), dt), jnp.zeros((k, r, r), dt), Ya, no_H, no_cg)

        def curvature():
            ga, gv, lin = _linearise(f, a, v, args)

            def hvp(u):
                return lin(jnp.zeros_like(a), u)[1]

            blocks = _diag_blocks(hvp, color, n_colors, k, r, dt)
            Haa, Hva = lax.cond(mode >= CURVATURE, lambda: _cross_blocks(lin, a, v),
                                lambda: (jnp.zeros((ka, ka), dt), jnp.zeros((k, r, ka), dt)))

            def warm():
                return (jnp.zeros_like(a), -_block_solve(blocks, gv[:, :, None])[:, :, 0], no_cg,
                        Ya)

            def newton():
                # CG for H_vv⁻¹H_va starts from the previous iteration's solution (not the first)
                Ya0 = None if n_colors == 1 else (Ya, g_ref > 0)
                da, dv, n_cg, Y = _schur_step(ga, gv, Haa, Hva, blocks, hvp, n_colors, cg_tol,
                                              cg_maxiter, mu, g_ref, Ya0)
                return da, dv, jnp.asarray(n_cg, jnp.int32), Y

            da, dv, n_cg, Y = lax.switch(mode - WARM, [
                warm, lambda: (jnp.zeros_like(a), jnp.zeros_like(v), no_cg, Ya), newton])
            return _finish(ga, gv, da, dv, Haa, Hva, blocks, Y, no_H, n_cg)

        return lax.cond(mode == GRAD, gradient, curvature)

    kernel = dense_kernel if dense else structured_kernel

    def step(a, v, mu, g_ref, Ya, mode, color, cg_tol, cg_maxiter, args):
        return lax.cond(mode == NONE, lambda: _zero_step(a, v, Ya, dense),
                        lambda: kernel(a, v, mu, g_ref, Ya, mode, color, cg_tol, cg_maxiter,
                                       args))

    return step


def _zero_step(a, v, Ya, dense: bool) -> Step:
    """A :class:`Step` of zeros (carrying ``Ya``) shaped as ``make_step``'s at (a, v)."""
    k, r = v.shape
    ka, dt = a.shape[0], a.dtype
    z = lambda *shape: jnp.zeros(shape, dt)  # noqa: E731
    p = ka + k * r if dense else 0
    return Step(z(ka), z(k, r), z(ka), z(k, r), z(), z(), z(), z(ka, ka), z(k, r, ka),
                z(k, r, r), Ya, z(p, p), jnp.zeros((), jnp.int32))
