"""Dense symmetric positive definite algebra for the profiled deviance: Cholesky, ``S⁻¹``, and
``(log|S|, RᵀS⁻¹R, S⁻¹R)`` with a hand-written reverse rule.

For ``S = L Lᵀ`` (L lower triangular):

    log|S| = 2 Σ log L_ii,      RᵀS⁻¹R = YᵀY with Y = L⁻¹R,      S⁻¹R = L⁻ᵀY

and the reverse rule of ``(log|S|, Q = RᵀS⁻¹R, X = S⁻¹R)`` with cotangents ``(ḡ_ld, ḡ_Q, ḡ_X)``:

    S̄ = ḡ_ld S⁻¹ − X sym(ḡ_Q) Xᵀ − sym(S⁻¹ḡ_X Xᵀ),      R̄ = 2 X sym(ḡ_Q) + S⁻¹ḡ_X

``S⁻¹`` comes from triangular solves by block columns (:func:`spd_inverse_lower`), in XLA: no
host callback, so the programs holding it export and cache persistently.

For derivatives of any order (exact Hessians, forward over reverse) :func:`logdet_solve_inverse`
returns ``S⁻¹`` as a fourth output and carries the forward (JVP) rule of all four, linear in the
tangents ``(Ṡ, Ṙ)`` with the outputs as coefficients:

    d log|S| = ⟨S⁻¹, Ṡ⟩,     dQ = ṘᵀX + XᵀṘ − XᵀṠX,     dX = S⁻¹(Ṙ − ṠX),     d S⁻¹ = −S⁻¹ṠS⁻¹

JAX derives the reverse rule by transposing it (the same ``S̄`` as above), and differentiating
that again uses the rule of ``S⁻¹``: two m × m products per tangent, where JAX's own Cholesky
rules (:func:`logdet_solve_plain`) take triangular solves and products several times over.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.scipy.linalg import solve_triangular

__all__ = ["cholesky_lower", "logdet_solve", "logdet_solve_inverse", "logdet_solve_plain",
           "spd_inverse", "spd_inverse_lower"]


def _tril_mask(n):
    """(n, n) bool: on or below the diagonal."""
    ii = jnp.arange(n)
    return ii[:, None] >= ii[None, :]


# Columns of S⁻¹ per pair of triangular solves in :func:`spd_inverse_lower` (at most).  Measured
# on 2 cores (float64, m = 1,126, median of 15): 32 ms, as LAPACK's potri through a host callback
# (the route before: 32 ms, but a callback keeps a program out of the persistent caches); a
# recursive blocked inverse with XLA products ran in 25 ms but compiled in 1.05 s against 0.23 s.
INVERSE_BLOCK = 288


def _inverse_columns(chol):
    """``S⁻¹``'s lower triangle by block columns of at most ``INVERSE_BLOCK`` (see
    :func:`spd_inverse_lower`); above it, zeros except within the diagonal blocks (where the
    entries are S⁻¹'s too)."""
    n = chol.shape[0]
    if n == 0:
        return chol
    blocks = -(-n // INVERSE_BLOCK)
    nb = -(-n // blocks)
    cols = []
    for j0 in range(0, n, nb):
        tail = chol[j0:, j0:]
        y = solve_triangular(tail, jnp.eye(n - j0, min(nb, n - j0), dtype=chol.dtype), lower=True)
        x = solve_triangular(tail, y, lower=True, trans=1)  # rows j₀: of S⁻¹'s block column
        cols.append(jnp.pad(x, ((j0, 0), (0, 0))))
    return jnp.concatenate(cols, axis=1)


def spd_inverse_lower(chol):
    """The lower triangle of ``S⁻¹`` (zeros above) from the lower Cholesky factor ``L`` of ``S``
    (whose upper triangle is not read).

    By block columns of at most ``INVERSE_BLOCK``: rows ``j₀:`` of ``S⁻¹ E_j`` (``E_j`` the
    identity's block column from ``j₀``) only involve the trailing factor ``T = L[j₀:, j₀:]``,
    since ``L⁻¹E_j`` is zero above ``j₀`` and ``L⁻ᵀ`` is upper triangular:
    ``S⁻¹[j₀:, j] = T⁻ᵀ(T⁻¹ E_j[j₀:])``, two triangular solves, ``2m³/3`` flops in all (as
    LAPACK's ``potri``).  Pure XLA (LAPACK's ``trsm`` as a custom call, no host callback): the
    programs holding it export and cache persistently.  Not forward-differentiable.
    """
    return jnp.where(_tril_mask(chol.shape[0]), _inverse_columns(chol), 0.0)


def spd_inverse(chol):
    """``S⁻¹`` (full, symmetric) from the lower Cholesky factor of ``S``: the lower triangle of
    :func:`_inverse_columns` mirrored (one pass over the m × m array)."""
    z = _inverse_columns(chol)
    return jnp.where(_tril_mask(chol.shape[0]), z, z.T)


def cholesky_lower(s):
    """Cholesky factor of the symmetric ``s`` reading only its lower triangle.

    The upper triangle of the result is unspecified: every consumer (triangular solves,
    :func:`spd_inverse_lower`, the diagonal) reads the lower one only, and masking it would be
    one more pass over an m × m array per evaluation.
    """
    return jax.lax.linalg.cholesky(s, symmetrize_input=False)


@jax.custom_vjp
def logdet_solve(s, r):
    """``(log|S|, Rᵀ S⁻¹ R, S⁻¹ R)`` for symmetric positive definite ``S`` (m, m), ``R`` (m, k).

    Only the lower triangle of ``s`` is read (and only it receives a cotangent): one Cholesky
    factorisation.  The reverse rule is written out (``∂log|S| = S⁻¹``, …) with ``S⁻¹`` from
    :func:`spd_inverse_lower`: JAX's generic Cholesky VJP is an order of magnitude slower on
    CPU for m in the thousands.  Reverse mode only.
    """
    return _logdet_solve_fwd(s, r)[0]


def _logdet_solve_fwd(s, r):
    chol = cholesky_lower(s)  # L
    y = solve_triangular(chol, r, lower=True)  # Y = L⁻¹R
    x = solve_triangular(chol, y, lower=True, trans=1)  # X = L⁻ᵀY = S⁻¹R
    return (2.0 * jnp.sum(jnp.log(jnp.diagonal(chol))), y.T @ y, x), (chol, x)


def _logdet_solve_bwd(res, g):
    chol, x = res
    g_ld, g_q, g_x = g
    m = chol.shape[0]
    low = spd_inverse_lower(chol)
    gs = 0.5 * (g_q + g_q.T)  # sym(ḡ_Q)
    z = jax.scipy.linalg.cho_solve((chol, True), g_x)  # S⁻¹ ḡ_X (zero unless X is used)
    xg = x @ gs
    grad_r = 2.0 * xg + z  # R̄
    # symmetric gradient S̄ = ḡ_ld S⁻¹ − X gs Xᵀ − sym(z Xᵀ), folded onto the lower triangle
    # that s is read from: 2 S̄_ij below the diagonal, S̄_ii on it, 0 above
    ii = jnp.arange(m)
    fold = jnp.where(ii[:, None] > ii[None, :], 2.0, (ii[:, None] == ii[None, :]).astype(chol.dtype))
    outer = jnp.concatenate([xg + 0.5 * z, 0.5 * x], axis=1) @ jnp.concatenate([x, z], axis=1).T
    grad_s = fold * (g_ld * low - outer)
    return grad_s.astype(chol.dtype), grad_r


logdet_solve.defvjp(_logdet_solve_fwd, _logdet_solve_bwd)


def logdet_solve_plain(s, r):
    """:func:`logdet_solve` through JAX's own Cholesky rules: differentiable in forward and
    reverse mode to any order (for exact Hessians), slower to differentiate once."""
    low = jnp.tril(s)
    chol = jnp.linalg.cholesky(low + jnp.tril(s, -1).T)
    y = solve_triangular(chol, r, lower=True)
    x = solve_triangular(chol, y, lower=True, trans=1)
    return 2.0 * jnp.sum(jnp.log(jnp.diagonal(chol))), y.T @ y, x


@jax.custom_jvp
def logdet_solve_inverse(s, r):
    """``(log|S|, RᵀS⁻¹R, S⁻¹R, S⁻¹)`` for symmetric positive definite ``S`` (m, m), ``R`` (m, k):
    one Cholesky factorisation (of the lower triangle) and :func:`spd_inverse`.

    Differentiable in forward and reverse mode to any order through its JVP rule (module
    docstring), which the outputs themselves serve: the JVP of the JVP uses it again.  Unlike
    :func:`logdet_solve`, ``S`` must hold both triangles, and its tangents be symmetric (as
    those of an ``S`` built symmetric are; the convention of ``jax.lax.linalg.cholesky``): the
    rule then needs no transposes of m × m arrays, which on CPU cost as much as the products.
    """
    chol = cholesky_lower(s)
    y = solve_triangular(chol, r, lower=True)  # Y = L⁻¹R
    x = solve_triangular(chol, y, lower=True, trans=1)  # X = S⁻¹R
    return 2.0 * jnp.sum(jnp.log(jnp.diagonal(chol))), y.T @ y, x, spd_inverse(chol)


@logdet_solve_inverse.defjvp
def _logdet_solve_inverse_jvp(primals, tangents):
    s, r = primals
    ds, dr = tangents  # Ṡ symmetric
    out = logdet_solve_inverse(s, r)  # (through the rule again when differentiated again)
    _, _, x, inv = out
    dsx = ds @ x  # ṠX (m, k)
    d_logdet = jnp.sum(inv * ds)  # tr(S⁻¹Ṡ)
    rx = dr.T @ x
    d_q = rx + rx.T - x.T @ dsx  # ṘᵀX + XᵀṘ − XᵀṠX
    d_x = inv @ (dr - dsx)  # S⁻¹(Ṙ − ṠX)
    d_inv = -(inv @ ds) @ inv  # −S⁻¹ṠS⁻¹
    return out, (d_logdet, d_q, d_x, d_inv)
