"""The LMM's one pass over the rows, with the rows sharded over devices (``MixedLM.fit(devices=)``).

:func:`design.crossprod.cross_products` reduces the n rows to cross-products on the host;
after that no deviance evaluation touches the rows.  Here the same sums run as one jitted
JAX program on rows sharded along a one-axis mesh (bayesglmm.sharding): each device sums its
rows, XLA adds the partial sums across devices (and processes, under jax.distributed), and the
replicated results come back to numpy on every process, where
:func:`design.crossprod.assemble` forms the classes of levels and the entry pairs as before.
The fit that follows needs only the cross-products and runs as with one device.

Writing Z₂ row-wise (ELLPACK: ``col2[i, s]`` the column of the s-th non-zero of row i in Z₂,
``val2[i, s]`` its value; one slot per covariate of each term after the largest) the sums are

* d11[l] = Σ_{i: c1_i = l} z1_i z1_iᵀ, b1[l] = Σ_{i: c1_i = l} z1_i [x_i y_i]ᵀ;
* a22[col2_is, col2_ir] += val2_is·val2_ir, b2[col2_is] += val2_is·[x_i y_i];
* Z₂ᵀZ₁ at its non-zero positions (col2_is, c1_i): += val2_is·z1_i, the positions found on the
  host from the level codes (integers only);
* [X y]ᵀ[X y].

Padded rows (codes 0, covariates 0, [x y] = 0) add exactly 0.  The sums are formed in float64
whatever the fit's dtype, as on the host.
"""

from __future__ import annotations

import functools

import numpy as np

from .crossprod import assemble

__all__ = ["cross_products_sharded", "row_arrays"]


def row_arrays(X, y, codes, zs):
    """The row arrays of the pass (numpy) and the positions of Z₂ᵀZ₁'s non-zeros.

    Returns
    -------
    rows : tuple
        ``(xy (n, p+1), c1 (n,), z1 (n, q₁), col2 (n, s), val2 (n, s), pos (n, s))``:
        [X y], the largest term's codes and covariates, Z₂ in ELLPACK form, and for each slot
        the index of its (row of Z₂, level of term 1) among ``keys``.
    keys : (E,) int64
        The distinct positions ``row·L₁ + level`` of Z₂ᵀZ₁ that the rows touch, sorted.
    m : int
        Columns of Z₂.
    """
    xy = np.column_stack([X, y]).astype(np.float64)
    n = xy.shape[0]
    levels = [int(c.max()) + 1 for c in codes]
    qs = [z.shape[1] for z in zs]
    L1 = levels[0]
    c1 = np.asarray(codes[0], np.int32)
    cols, vals, off = [], [], 0
    for t in range(1, len(codes)):
        for a in range(qs[t]):
            cols.append(off + np.asarray(codes[t], np.int64) * qs[t] + a)
            vals.append(np.asarray(zs[t][:, a], np.float64))
        off += levels[t] * qs[t]
    m = off
    col2 = np.stack(cols, 1) if cols else np.zeros((n, 0), np.int64)
    val2 = np.stack(vals, 1) if vals else np.zeros((n, 0))
    keys, pos = np.unique(col2 * L1 + c1[:, None], return_inverse=True)
    return ((xy, c1, np.asarray(zs[0], np.float64), col2.astype(np.int32), val2,
             pos.reshape(n, -1).astype(np.int32)), keys, m)


@functools.cache
def _pass_program(L1: int, m: int, n_keys: int, mesh):
    """The jitted sums over sharded rows, replicated outputs (see the module docstring)."""
    import jax
    from jax.ops import segment_sum
    from jax.sharding import NamedSharding, PartitionSpec

    def sums(xy, c1, z1, col2, val2, pos):
        n, s = col2.shape
        q1, k = z1.shape[1], xy.shape[1]
        d11 = segment_sum(z1[:, :, None] * z1[:, None, :], c1, L1)
        b1 = segment_sum(z1[:, :, None] * xy[:, None, :], c1, L1)
        a22 = segment_sum((val2[:, :, None] * val2[:, None, :]).reshape(-1),
                          (col2[:, :, None] * m + col2[:, None, :]).reshape(-1), m * m)
        b2 = segment_sum((val2[:, :, None] * xy[:, None, :]).reshape(n * s, k),
                         col2.reshape(-1), m)
        c_val = segment_sum((val2[:, :, None] * z1[:, None, :]).reshape(n * s, q1),
                            pos.reshape(-1), n_keys)
        return d11, b1, a22.reshape(m, m), b2, c_val, xy.T @ xy

    return jax.jit(sums, out_shardings=NamedSharding(mesh, PartitionSpec()))


def cross_products_sharded(X, y, codes, zs, theta_index, n_theta, dtype, sparse, mesh):
    """:func:`design.crossprod.cross_products` with the pass over the rows on the devices of
    ``mesh`` (a one-axis mesh, bayesglmm.sharding.make_mesh); same arguments otherwise.

    Returns
    -------
    (CrossProd, Structure)
        Host arrays, equal to ``cross_products``' up to the order of the sums (rounding).
    """
    import jax

    from .._precision import precision
    from ..sharding import fetch, put_rows

    rows, keys, m = row_arrays(X, y, codes, zs)
    L1 = int(codes[0].max()) + 1
    qs = [z.shape[1] for z in zs]
    with precision(np.float64):
        dev = [put_rows(r, mesh) for r in rows]
        out = _pass_program(L1, m, max(len(keys), 1), mesh)(*dev)
        d11, b1, a22, b2, c_val, xy = (fetch(o).astype(np.float64) for o in jax.block_until_ready(out))
    c_val = c_val[:len(keys)]
    keep = np.any(c_val != 0, axis=1)
    keys, c_val = keys[keep], c_val[keep]
    levels = [int(c.max()) + 1 for c in codes]
    return assemble(d11, b1, a22, b2, keys // L1, keys % L1, c_val, xy, len(y), levels, qs,
                    theta_index, n_theta, dtype, sparse)
