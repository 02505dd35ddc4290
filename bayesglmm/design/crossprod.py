"""One pass over the data: the cross-products that the profiled deviance needs.

Terms are ordered by number of levels, largest first (Bates et al. 2015 §3.2).  Writing
``Z = [Z₁ Z₂]`` with ``Z₁`` the largest term and ``Z₂`` all the others (``m`` columns), the
blocks are

* ``Z₁ᵀZ₁``: block diagonal, one ``q₁ × q₁`` block per level → stored ``(L₁, q₁, q₁)``;
* ``Z₂ᵀZ₂``: dense ``(m, m)``;
* ``Z₂ᵀZ₁``: sparse, stored as its non-zero ``(row, level)`` entries, plus the entry pairs
  sharing a level — lower triangle only, and summed over the levels of a *class* (levels with
  equal ``Z₁ᵀZ₁`` blocks have equal ``W_l``; for scalar intercepts, equal row counts) — so that
  the lower triangle of ``Z₂ᵀZ₁ W Z₁ᵀZ₂`` is one sorted scatter-add (dense when that is
  cheaper);
* ``Zᵀ[X y]`` and ``[X y]ᵀ[X y]``.

After this every deviance evaluation costs nothing in ``n``.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = ["CrossProd", "Structure", "assemble", "cross_products"]

# largest m × m dense block we accept (float64: 8 bytes an entry)
_MAX_DENSE = 12_000


class Structure(NamedTuple):
    """Static shape information of the random effects (hashable: a jit static argument)."""

    levels: tuple  # (T,) number of levels of each term, largest first
    q: tuple  # (T,) covariates per level of each term
    theta_index: tuple  # (T,) per term, q*q ints (row-major): θ index of λ[i, j] or -1
    n_theta: int  # length of θ
    sparse: bool  # Z₂ᵀZ₁ stored sparse (entry pairs) or dense

    @property
    def m(self) -> int:
        return int(sum(L * q for L, q in zip(self.levels[1:], self.q[1:])))


class CrossProd(NamedTuple):
    """Data cross-products (a pytree of arrays; ``k = p + 1`` stacks ``[X y]``)."""

    d11: np.ndarray  # (L₁, q₁, q₁) diagonal blocks of Z₁ᵀZ₁
    b1: np.ndarray  # (L₁, q₁, k) Z₁ᵀ[X y] by level
    a22: np.ndarray  # (m, m) Z₂ᵀZ₂
    b2: np.ndarray  # (m, k) Z₂ᵀ[X y]
    c_row: np.ndarray  # (E,) row in Z₂ of each non-zero (row, level) entry of Z₂ᵀZ₁
    c_lvl: np.ndarray  # (E,) level of Z₁
    c_val: np.ndarray  # (E, q₁) the entry
    c_dense: np.ndarray  # (m, L₁, q₁) dense Z₂ᵀZ₁ when not sparse, else (0, 0, q₁)
    pair_idx: np.ndarray  # (P,) flat index i*m + j (i ≥ j, sorted) in (m, m)
    pair_cls: np.ndarray  # (P,) class of levels of the pair
    pair_val: np.ndarray  # (P, q₁, q₁) sum over the levels l of that class of c_il c_jlᵀ
    cls_level: np.ndarray  # (K,) one level of each class (classes: levels with equal Z₁ᵀZ₁ blocks)
    xy: np.ndarray  # (k, k) [X y]ᵀ[X y]
    n: np.ndarray  # () number of rows


def _bincount(idx, w, size):
    return np.bincount(idx, weights=w, minlength=size)[:size]


def _indptr(sorted_idx, size):
    """CSR row pointers of entries sorted by row index."""
    return np.concatenate([[0], np.cumsum(np.bincount(sorted_idx, minlength=size))])


def _unique_rows(a):
    """Unique rows of a 2-d array: (rows, inverse, index of the first occurrence of each)."""
    uniq, first, inv = np.unique(a, axis=0, return_index=True, return_inverse=True)
    return uniq, inv.reshape(-1), first


def _grouped_pairs(c_row, c_lvl, c_val, lvl_cls, n_cls, m):
    """The entry pairs of ``Z₂ᵀZ₁ W Z₁ᵀZ₂``, lower triangle only, summed within classes.

    Returns ``(idx, cls, val)``: for each distinct (i ≥ j, class k) the flat index ``i*m + j``
    (sorted), ``k`` and ``Σ_{l in k} c_il c_jlᵀ`` (q₁ × q₁).
    The entries come sorted by (row, level).
    """
    import scipy.sparse as sp

    q1 = c_val.shape[1]
    L1 = len(lvl_cls)
    K = max(n_cls, 1)
    ent_cls = lvl_cls[c_lvl]
    if q1 == 1:
        # one sparse product (i, l) · (l, j*K + k) → (i, j*K + k), both factors built in CSR
        # form directly (no conversions)
        a = sp.csr_matrix((c_val[:, 0], c_lvl, _indptr(c_row, m)), shape=(m, L1))
        order = np.argsort(c_lvl, kind="stable")
        b = sp.csr_matrix((c_val[order, 0], (c_row.astype(np.int64) * K + ent_cls)[order],
                           _indptr(c_lvl, L1)), shape=(L1, m * K))
        prod = a @ b
        i = np.repeat(np.arange(m, dtype=np.int64), np.diff(prod.indptr))
        # i ≥ j  ⟺  column j·K + k < (i + 1)·K: the lower triangle before splitting the columns
        keep = prod.indices < (i + 1) * K
        i = i[keep]  # rows in order, and they stay so below
        lower = sp.csr_matrix((prod.data[keep], prod.indices[keep], _indptr(i, m)),
                              shape=prod.shape)
        # columns sorted within each row, after dropping the upper triangle (half the entries):
        # two linear conversions (half sort_indices' time)
        lower = lower.tocsc().tocsr()
        j, k = np.divmod(lower.indices.astype(np.int64), K)
        return i * m + j, k, lower.data[:, None, None]
    # general q₁: every pair of entries sharing a level, then summed by (i, j, class)
    order = np.argsort(c_lvl, kind="stable")
    row_s, lvl_s, val_s = c_row[order], c_lvl[order], c_val[order]
    sizes = np.bincount(c_lvl, minlength=L1)
    start = np.cumsum(sizes) - sizes
    rep = sizes[lvl_s]
    first = np.repeat(np.arange(len(lvl_s)), rep)
    within = np.arange(len(first)) - np.repeat(np.cumsum(rep) - rep, rep)
    second = start[lvl_s[first]] + within
    keep = row_s[first] >= row_s[second]
    first, second = first[keep], second[keep]
    key = (row_s[first].astype(np.int64) * m + row_s[second]) * K + lvl_cls[lvl_s[first]]
    uk, inv = np.unique(key, return_inverse=True)
    pv = val_s[first][:, :, None] * val_s[second][:, None, :]
    val = np.stack([_bincount(inv, pv[:, a, b], len(uk)) for a in range(q1) for b in range(q1)],
                   axis=1).reshape(len(uk), q1, q1)
    return uk // K, uk % K, val


def cross_products(X, y, codes, zs, theta_index, n_theta, dtype=np.float64, sparse=None):
    """Form :class:`CrossProd` and :class:`Structure` for terms already sorted largest first.

    Parameters
    ----------
    X : (n, p) array
    y : (n,) array
    codes : list of (n,) int arrays, level of each row per term
    zs : list of (n, q_t) arrays, covariates per term
    theta_index : list of (q_t, q_t) int arrays, global θ index of each λ entry (-1: zero)
    n_theta : int
    sparse : bool or None
        Store ``Z₂ᵀZ₁`` as entry pairs; ``None`` chooses by cost.
    """
    n, p = X.shape
    xy_mat = np.column_stack([X, y])  # (n, k)
    k = p + 1
    levels = [int(c.max()) + 1 for c in codes]
    qs = [z.shape[1] for z in zs]
    L1, q1 = levels[0], qs[0]
    c1, z1 = codes[0], zs[0]
    d11 = np.empty((L1, q1, q1))
    for a in range(q1):
        for b in range(a, q1):
            d11[:, a, b] = d11[:, b, a] = _bincount(c1, z1[:, a] * z1[:, b], L1)
    b1 = np.empty((L1, q1, k))
    for a in range(q1):
        for j in range(k):
            b1[:, a, j] = _bincount(c1, z1[:, a] * xy_mat[:, j], L1)
    # columns of Z₂: term t, level l, covariate a → off_t + l*q_t + a
    cols = []
    off = 0
    for t in range(1, len(codes)):
        for a in range(qs[t]):
            cols.append((off + codes[t] * qs[t] + a, zs[t][:, a]))
        off += levels[t] * qs[t]
    m = off
    if m > _MAX_DENSE:
        raise ValueError(
            f"the random terms other than the largest have {m} coefficients in all; at most "
            f"{_MAX_DENSE} are supported (they are factored as one dense block)"
        )
    a22 = np.zeros(m * m)
    b2 = np.zeros((m, k))
    for i, (ri, zi) in enumerate(cols):
        for j in range(k):
            b2[:, j] += _bincount(ri, zi * xy_mat[:, j], m)
        for rj, zj in cols[i:]:
            blk = _bincount(ri * m + rj, zi * zj, m * m)
            a22 += blk
            if rj is not ri:
                a22 += blk.reshape(m, m).T.ravel()
    a22 = a22.reshape(m, m)
    # sparse Z₂ᵀZ₁ entries
    if m:
        keys = np.concatenate([ri * L1 + c1 for ri, _ in cols])
        vals = np.concatenate([zi[:, None] * z1 for _, zi in cols])
        uk, inv = np.unique(keys, return_inverse=True)
        c_val = np.stack([_bincount(inv, vals[:, a], len(uk)) for a in range(q1)], axis=1)
        keep = np.any(c_val != 0, axis=1)
        uk, c_val = uk[keep], c_val[keep]
        c_row, c_lvl = uk // L1, uk % L1
    else:
        c_row = c_lvl = np.zeros(0, np.int64)
        c_val = np.zeros((0, q1))
    return assemble(d11, b1, a22, b2, c_row, c_lvl, c_val, xy_mat.T @ xy_mat, n, levels, qs,
                    theta_index, n_theta, dtype, sparse)


def assemble(d11, b1, a22, b2, c_row, c_lvl, c_val, xy, n, levels, qs, theta_index, n_theta,
             dtype=np.float64, sparse=None):
    """:class:`CrossProd` and :class:`Structure` from the sums over the rows (float64 numpy:
    ``d11``, ``b1``, ``a22``, ``b2``, the non-zero entries ``(c_row, c_lvl, c_val)`` of
    Z₂ᵀZ₁, ``xy`` = [X y]ᵀ[X y]; ``n`` rows), by :func:`cross_products` or, with the rows
    sharded over devices, ``design.crossprod_sharded``: the classes of levels and the entry
    pairs, which need no rows."""
    L1, q1 = levels[0], qs[0]
    m = a22.shape[0]
    # levels whose Z₁ᵀZ₁ blocks are equal have equal W_l: "classes" of levels (for scalar
    # intercepts, the levels with the same number of rows), so that pairs of entries sharing
    # a class and a position (i, j) are summed once here rather than at every evaluation
    if L1:
        _, lvl_cls, cls_first = _unique_rows(d11.reshape(L1, -1))
    else:
        lvl_cls, cls_first = np.zeros(0, np.int64), np.zeros(0, np.int64)
    n_cls = len(cls_first)
    sizes = np.bincount(c_lvl, minlength=L1)
    n_pairs = int(np.sum(sizes.astype(np.int64) ** 2))  # before grouping (an upper bound)
    if sparse is None:
        sparse = n_pairs * q1 <= 2 * m * L1 and n_pairs <= 60_000_000
    if sparse and m:
        pair_idx, pair_cls, pair_val = _grouped_pairs(c_row, c_lvl, c_val, lvl_cls, n_cls, m)
        c_dense = np.zeros((0, 0, q1))
    else:
        pair_idx = pair_cls = np.zeros(0, np.int64)
        pair_val = np.zeros((0, q1, q1))
        c_dense = np.zeros((m, L1, q1))
        if m:
            np.add.at(c_dense, (c_row, c_lvl), c_val)
    struct = Structure(
        levels=tuple(levels),
        q=tuple(qs),
        theta_index=tuple(tuple(int(v) for v in np.asarray(ti).ravel()) for ti in theta_index),
        n_theta=int(n_theta),
        sparse=bool(sparse),
    )
    f = np.dtype(dtype)
    cp = CrossProd(
        d11=d11.astype(f),
        b1=b1.astype(f),
        a22=a22.astype(f),
        b2=b2.astype(f),
        c_row=c_row.astype(np.int32),
        c_lvl=c_lvl.astype(np.int32),
        c_val=c_val.astype(f),
        c_dense=c_dense.astype(f),
        pair_idx=pair_idx.astype(np.int32 if m * m < 2**31 else np.int64),
        pair_cls=pair_cls.astype(np.int32),
        cls_level=cls_first.astype(np.int32),
        pair_val=pair_val.astype(f),
        xy=xy.astype(f),
        n=np.asarray(n, dtype=f),
    )
    return cp, struct
