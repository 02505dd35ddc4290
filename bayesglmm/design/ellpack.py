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

__all__ = ["MAX_BLOCK", "REDesign", "SCHUR_BLOCK_INDEP_Q", "colors", "design_blocks",
           "design_layout", "design_mode", "from_codes", "from_scipy", "matvec", "rmatvec",
           "schur_component", "to_dense"]


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


# largest block of a block-diagonal H_uu (its blocks are factored entry by entry, linalg.small)
MAX_BLOCK = 16


def design_blocks(cols: np.ndarray, nz: np.ndarray, k: int, corr=()) -> np.ndarray | None:
    """Z's k columns grouped into the connected components of "share a row of Z, or a level of
    a correlated term": ``(nb, q)`` int32, one component per row (its columns ascending, -1 in
    unused slots), or None when a component has more than :data:`MAX_BLOCK` columns (crossed
    factors join most columns into one).  H_uu = ΛᵀZᵀWZΛ + I is block-diagonal over them.
    ``nz``: (n, m) bool, the stored entries that are non-zero; ``corr``: each correlated
    term's (G, q_b) columns."""
    from scipy.sparse import coo_array  # on use: only designs with two non-zeros in a row
    from scipy.sparse.csgraph import connected_components

    cols = np.asarray(cols)
    first = cols[np.arange(len(cols)), np.argmax(nz, axis=1)]  # each row's first non-zero
    a, b = [np.broadcast_to(first[:, None], cols.shape)[nz]], [cols[nz]]
    for bc in corr:
        bc = np.asarray(bc)
        a.append(np.broadcast_to(bc[:, :1], bc.shape).ravel())
        b.append(bc.ravel())
    a, b = np.concatenate(a), np.concatenate(b)
    graph = coo_array((np.ones(len(a), np.int8), (a, b)), shape=(k, k))
    n, label = connected_components(graph, directed=False)
    size = np.bincount(label, minlength=n)
    q = int(size.max(initial=1))
    if q > MAX_BLOCK:
        return None
    order = np.argsort(label, kind="stable")
    start = np.concatenate([[0], np.cumsum(size)[:-1]])
    out = np.full((n, q), -1, np.int32)
    out[label[order], np.arange(k) - start[label[order]]] = order
    return out


SCHUR_BLOCK_INDEP_Q = 4  # largest blocks for which independent terms take the Schur-block mode


def _schur_blocks(cols, nz, ident, corr) -> tuple[np.ndarray, tuple] | None:
    """For correlated terms in a crossed design (``(x | g) + (1 | h)``): ``(blocks, r_terms)``
    for the smallest rest R — one variance component's columns, with the whole of any
    correlated term it belongs to — whose removal leaves the other columns in groups of at
    most :data:`MAX_BLOCK`: those groups (design_blocks restricted to them) and the indices
    of the correlated terms inside R; None when no component does.  H_uu = [[D, B], [Bᵀ, C]]
    with D block-diagonal over the groups is eliminated onto the Schur complement over R
    (kernels.h_uu, ``("schur_block", q, k_r, r_terms)``)."""
    k = len(ident)
    best = None
    for c in np.unique(ident):
        rest = ident == c
        for bc in corr:
            if rest[np.asarray(bc)].any():
                rest[np.asarray(bc).ravel()] = True
        k_r = int(rest.sum())
        if k_r == k or (best is not None and k_r >= best[0]):
            continue
        kept = [bc for bc in corr if not rest[np.asarray(bc)].any()]
        blocks = design_blocks(cols, nz & ~rest[cols], k, kept)
        if blocks is None:
            continue
        blocks = blocks[~rest[blocks[:, 0]]]  # R's columns are singletons there: drop them
        q = int(np.max(np.sum(blocks >= 0, axis=1), initial=1))
        terms = tuple(i for i, bc in enumerate(corr) if rest[np.asarray(bc)].any())
        best = (k_r, blocks[:, :q], terms)
    return None if best is None else best[1:]


def design_layout(cols: np.ndarray, vals: np.ndarray, ident: np.ndarray,
                  corr=()) -> tuple[str | tuple, np.ndarray | None]:
    """How the marginal Laplace fit factors H_uu = ΛᵀZᵀWZΛ + I (static, linalg.psd), and its
    blocks: ``(mode, blocks)`` with mode ``"diag"``, ``("block", q)``,
    ``("schur_block", q, k_r, r_terms)``, ``("schur", c, k_c)``, ``("schur_obs", c, k_c, k_1)``
    or ``"dense"``, and blocks the (nb, q) columns of :func:`design_blocks` in the two block
    modes (else None).  ``corr``: the (G, q_b) column arrays of the correlated terms (Λ's
    q_b × q_b blocks, one per level).

    ``"diag"`` when every row of Z has at most one non-zero and there is no correlated term:
    H_uu is diagonal.  ``("block", q)`` when the columns fall into groups of at most
    :data:`MAX_BLOCK` that no row and no correlated level crosses — the terms of one grouping
    factor (``(x | g)``, ``(x || g)``, statsmodels' ``{"g": "0 + C(g)", "gx": "0 + C(g):x"}``)
    or small nested ones: H_uu is block-diagonal, factored block by block in O(nb·q³)
    (linalg.block_diag).  ``("schur_block", q, k_r, r_terms)`` with correlated terms crossed
    with another factor (``(x | g) + (1 | h)``): without the k_r columns of one component
    (h's), the others form such groups, eliminated block by block onto the Schur complement
    over those k_r (:func:`_schur_blocks`).  Otherwise, if
    some variance component c has no two non-zeros in one row (a grouping factor), its k_c
    columns form a diagonal block D of H_uu = [[D, B], [Bᵀ, C]], eliminated exactly:
    log det H = Σ log D + log det(C − BᵀD⁻¹B), so Cholesky works on the Schur complement of
    size k_vc − k_c only (the largest such component is chosen; grouseticks: 584 → 181).
    ``"schur_obs"`` where each level of c holds at most one row (an observation-level effect),
    with k_1 the rest's leading columns whose block of that Schur complement is diagonal
    (:func:`_leading_diagonal`; grouseticks: BROOD's 118 of the 181).
    ``"dense"``: Cholesky of the full H_uu.
    """
    nz = np.asarray(vals) != 0
    cols = np.asarray(cols)
    ident = np.asarray(ident)
    if not len(corr) and int(nz.sum(axis=1).max(initial=0)) <= 1:
        return "diag", None
    blocks = design_blocks(cols, nz, len(ident), corr)
    if blocks is not None and blocks.shape[0] > 1:  # (one block: as dense, or Schur below)
        return ("block", blocks.shape[1]), blocks
    schur = _schur_blocks(cols, nz, ident, corr)
    if schur is not None:
        blocks, rest = schur
        k_r = len(ident) - int(np.sum(blocks >= 0))
        if len(corr):
            return ("schur_block", blocks.shape[1], k_r, rest), blocks
    best, size = None, 0
    scalar = set()  # components with no two non-zeros in a row (grouping factors)
    for c in np.unique(ident):
        in_c = nz & (ident[cols] == c)
        if int(in_c.sum(axis=1).max(initial=0)) > 1:
            continue
        scalar.add(int(c))
        k_c = int(np.sum(ident == c))
        if k_c > size:
            best, size = int(c), k_c
    # independent terms ((x || g) + (1 | h)): the Schur-block mode where its blocks are small
    # (2 ≤ q ≤ SCHUR_BLOCK_INDEP_Q; q = 1 is the Schur mode) and its rest less than half the
    # Schur mode's dense block (grouseticks' nested design, q = 11 against a rest of 181 kept
    # by rows, fitted 10× slower in it)
    if (schur is not None and 2 <= blocks.shape[1] <= SCHUR_BLOCK_INDEP_Q
            and (best is None or 2 * k_r < len(ident) - size)):
        return ("schur_block", blocks.shape[1], k_r, rest), blocks
    if best is None or size == len(ident):
        return "dense", None
    per_level = np.bincount(cols[nz & (ident[cols] == best)], minlength=len(ident))
    if int(per_level.max(initial=0)) > 1:
        return ("schur", best, size), None
    return ("schur_obs", best, size, _leading_diagonal(ident, best, scalar)), None


def _leading_diagonal(ident: np.ndarray, c: int, scalar: set) -> int:
    """How many leading columns of the rest (the columns outside component c, in order) belong
    to one component of ``scalar`` (no two non-zeros in a row): their block of the Schur
    complement S = I + Σ_i w̃_i ẑ_ir ẑ_irᵀ of the ``"schur_obs"`` mode is diagonal
    (linalg.psd's block factorisation of S); 0 if the first such column's component is not."""
    rest = np.flatnonzero(ident != c)
    if not len(rest) or int(ident[rest[0]]) not in scalar:
        return 0
    t = ident[rest[0]]
    run = np.flatnonzero(ident[rest] != t)
    return int(run[0]) if len(run) else len(rest)


def schur_component(mode) -> int | None:
    """The variance component a ``("schur", c, k_c)`` or ``("schur_obs", c, k_c)`` mode
    eliminates exactly (its diagonal block, where padded levels go), else None."""
    if isinstance(mode, tuple) and mode[0] in ("schur", "schur_obs"):
        return int(mode[1])
    return None


def design_mode(cols: np.ndarray, vals: np.ndarray, ident: np.ndarray,
                corr=()) -> str | tuple:
    """The factorisation mode of :func:`design_layout` alone."""
    return design_layout(cols, vals, ident, corr)[0]


def _valid(color, cols, nz) -> bool:
    c = np.where(nz, np.asarray(color)[cols], -1 - np.arange(cols.shape[1]))
    srt = np.sort(c, axis=1)
    return not np.any((srt[:, 1:] == srt[:, :-1]) & (srt[:, 1:] >= 0))


def _compact(color):
    uniq, inv = np.unique(color, return_inverse=True)
    return inv.astype(np.int32), max(len(uniq), 1)
