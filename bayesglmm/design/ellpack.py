"""The random-effects design Z, kept sparse.

Every row of Z has at most ``m`` non-zeros (one per random-effects term for designs built from
factors), stored row-wise in ELLPACK form: ``cols[i, s]`` is the column of the s-th non-zero of
row i and ``vals[i, s]`` its value (padding slots hold value 0 and column 0).  Memory is
O(n · m), the number of non-zeros, never O(n · k_vc).

``Z @ v`` is a gather and a row sum; ``Zᵀ @ r`` is a scatter-add (``segment_sum``); under
``jax.grad`` the gather's transpose is that scatter-add, so autodiff of ``Z @ v`` costs O(nnz).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["REDesign", "colors", "design_mode", "from_codes", "from_scipy", "matvec", "rmatvec",
           "to_dense"]


class REDesign(NamedTuple):
    """Row-wise sparse random-effects design."""

    cols: jax.Array  # (n, m) int32: column of each stored non-zero
    vals: jax.Array  # (n, m) float: its value (0 in padding slots)


def from_scipy(mat, dtype=np.float64) -> tuple[np.ndarray, np.ndarray, int]:
    """ELLPACK ``(cols, vals, k)`` arrays (numpy) from any scipy.sparse matrix or array."""
    import scipy.sparse as sp  # on use: formula models with factor terms never need it

    csr = sp.csr_array(mat)
    csr.sum_duplicates()
    n, k = csr.shape
    counts = np.diff(csr.indptr)
    m = max(int(counts.max()) if n else 0, 1)
    cols = np.zeros((n, m), dtype=np.int32)
    vals = np.zeros((n, m), dtype=dtype)
    # position of each stored entry within its row
    row = np.repeat(np.arange(n), counts)
    slot = np.arange(csr.nnz) - np.repeat(csr.indptr[:-1], counts)
    cols[row, slot] = csr.indices
    vals[row, slot] = csr.data
    return cols, vals, k


def from_codes(codes: list[np.ndarray], values: list[np.ndarray | None], offsets: list[int],
               dtype=np.float64) -> tuple[np.ndarray, np.ndarray]:
    """ELLPACK arrays from factor codes: term t puts ``values[t]`` (1 if None) in column
    ``offsets[t] + codes[t][i]`` of row i.  No dense temporaries."""
    n = len(codes[0]) if codes else 0
    cols = np.empty((n, len(codes)), dtype=np.int32)
    vals = np.empty((n, len(codes)), dtype=dtype)
    for t, (c, v, o) in enumerate(zip(codes, values, offsets)):
        cols[:, t] = c + o
        vals[:, t] = 1.0 if v is None else v
    return cols, vals


def matvec(Z: REDesign, v: jax.Array) -> jax.Array:
    """``Z @ v``: (n,)."""
    if v.shape[0] == 0:
        return jnp.zeros(Z.cols.shape[0], Z.vals.dtype)
    return jnp.sum(Z.vals * v[Z.cols], axis=1)


def rmatvec(Z: REDesign, r: jax.Array, k: int) -> jax.Array:
    """``Zᵀ @ r`` for r of shape (n,) or (n, b): (k,) or (k, b)."""
    if r.ndim == 1:
        contrib = Z.vals * r[:, None]
        return jax.ops.segment_sum(contrib.ravel(), Z.cols.ravel(), num_segments=k)
    contrib = Z.vals[:, :, None] * r[:, None, :]
    return jax.ops.segment_sum(contrib.reshape(-1, r.shape[1]), Z.cols.ravel(), num_segments=k)


def to_dense(cols: np.ndarray, vals: np.ndarray, k: int) -> np.ndarray:
    """The dense (n, k) matrix — for tests on small data only."""
    n = cols.shape[0]
    out = np.zeros((n, k), dtype=np.asarray(vals).dtype)
    np.add.at(out, (np.repeat(np.arange(n), cols.shape[1]), np.asarray(cols).ravel()),
              np.asarray(vals).ravel())
    return out


def colors(cols: np.ndarray, vals: np.ndarray, ident: np.ndarray, k: int) -> tuple[np.ndarray, int]:
    """A colouring of Z's columns such that no row has two non-zeros of the same colour.

    Then ZᵀWZ restricted to one colour is diagonal, so one Hessian-vector product per colour
    recovers the diagonal of the random-effects Hessian exactly.  Tries ``ident`` (one colour
    per variance component, right for factor designs), then a greedy colouring.
    Returns ``(color, n_colors)`` with ``color`` of shape (k,).
    """
    nz = np.asarray(vals) != 0
    if cols.shape[1] <= 1:
        return np.zeros(k, dtype=np.int32), 1
    if _valid(ident, cols, nz):
        return _compact(np.asarray(ident, dtype=np.int32))
    # greedy: the column adjacency through shared rows, coloured in order
    n = cols.shape[0]
    rows = np.repeat(np.arange(n), cols.shape[1])[nz.ravel()]
    cc = cols.ravel()[nz.ravel()]
    import scipy.sparse as sp

    inc = sp.csr_array((np.ones(len(rows)), (rows, cc)), shape=(n, k))
    adj = (inc.T @ inc).tocsr()
    color = np.full(k, -1, dtype=np.int32)
    for j in range(k):
        nb = adj.indices[adj.indptr[j]:adj.indptr[j + 1]]
        used = set(color[nb][color[nb] >= 0].tolist())
        c = 0
        while c in used:
            c += 1
        color[j] = c
    return _compact(color)


def design_mode(cols: np.ndarray, vals: np.ndarray, ident: np.ndarray,
                corr=()) -> str | tuple:
    """How the marginal Laplace fit factors H_uu = ΛᵀZᵀWZΛ + I (static, linalg.psd):
    ``"diag"``, ``("block", q)``, ``("schur", c, k_c)``, ``("schur_obs", c, k_c)`` or
    ``"dense"``.  ``corr``: the (G, q_b) column arrays of the correlated terms (Λ's q_b × q_b
    blocks, one per level).

    ``("block", q)`` with correlated terms, when every row's non-zeros lie in one block of Λ
    (one level of a correlated term, or one independent column): H_uu is block-diagonal in
    blocks of at most q = max q_b (linalg.block_diag).  ``"diag"`` when every row of Z has
    at most one non-zero and there is no correlated term: H_uu is diagonal.  Otherwise, if
    some variance component c has no two non-zeros in one row (a grouping factor), its k_c
    columns form a diagonal block D of H_uu = [[D, B], [Bᵀ, C]], eliminated exactly:
    log det H = Σ log D + log det(C − BᵀD⁻¹B), so Cholesky works on the Schur complement of
    size k_vc − k_c only (the largest such component is chosen; grouseticks: 584 → 181).
    ``"dense"``: Cholesky of the full H_uu.
    """
    nz = np.asarray(vals) != 0
    cols = np.asarray(cols)
    ident = np.asarray(ident)
    if len(corr):
        k = len(ident)
        block = np.arange(k, 2 * k)  # an independent column is a block of its own
        start = 0
        for bcols in corr:
            bcols = np.asarray(bcols)
            block[bcols] = start + np.arange(bcols.shape[0])[:, None]
            start += bcols.shape[0]
        rb = block[cols]
        lo = np.where(nz, rb, 2 * k).min(axis=1, initial=2 * k)
        hi = np.where(nz, rb, -1).max(axis=1, initial=-1)
        if np.all((lo == hi) | (hi < 0)):
            return ("block", max(np.asarray(b).shape[1] for b in corr))
    elif int(nz.sum(axis=1).max(initial=0)) <= 1:
        return "diag"
    best, size = None, 0
    for c in np.unique(ident):
        in_c = nz & (ident[cols] == c)
        k_c = int(np.sum(ident == c))
        if int(in_c.sum(axis=1).max(initial=0)) <= 1 and k_c > size:
            best, size = int(c), k_c
    if best is None or size == len(ident):
        return "dense"
    per_level = np.bincount(cols[nz & (ident[cols] == best)], minlength=len(ident))
    return ("schur_obs" if int(per_level.max(initial=0)) <= 1 else "schur", best, size)


def _valid(color, cols, nz) -> bool:
    c = np.where(nz, np.asarray(color)[cols], -1 - np.arange(cols.shape[1]))
    srt = np.sort(c, axis=1)
    return not np.any((srt[:, 1:] == srt[:, :-1]) & (srt[:, 1:] >= 0))


def _compact(color):
    uniq, inv = np.unique(color, return_inverse=True)
    return inv.astype(np.int32), max(len(uniq), 1)
