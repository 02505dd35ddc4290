"""One fit over several devices and hosts: the rows sharded with JAX's own sharding.

Every fit takes ``devices=``:

* ``None`` (default): one device, as always;
* ``"all"``: every device ``jax.devices()`` lists — under ``jax.distributed`` the devices of
  every process;
* an int ``n``: the first ``n`` of ``jax.devices()``;
* a list of ``jax.Device``;
* a ``jax.sharding.Mesh`` with one axis (its name is the rows' axis).

:func:`make_mesh` turns that into a one-axis :class:`~jax.sharding.Mesh` (axis ``"rows"``).
The row-wise data — y, X, the ELLPACK rows of Z (``cols``, ``vals``), trials, weights and
offset of a mixed GLM (``kernels.glmm.Data``); for the LMM the rows that ``design.crossprod``
reduces to cross-products — are placed along axis 0 with ``NamedSharding(mesh,
PartitionSpec("rows"))``; everything else (parameters, level-wise arrays such as ``ident``
and ``level_w``, correlated blocks, priors) is replicated.  ``jax.jit`` then partitions the
fits' programs itself (GSPMD) and inserts the collectives of the row sums (X'r, Z'r, Σ loglik):
there is no scheduler of ours.

Rows must divide evenly among the devices: they are padded to a multiple of the device count
with inert rows (weight 0, y 0, X 0, Z value 0, trials 1, offset 0; see design.buckets), which
add exactly 0 to every sum and derivative.

Several processes (``jax.distributed.initialize``, one per host, each running the same
script): arrays are built with ``jax.make_array_from_callback``, so each process puts on its
devices only the rows of its own shards; the fits' outputs are replicated and come back to
numpy on every process.

Examples
--------
>>> import jax
>>> mesh = make_mesh("all")
>>> mesh.axis_names, n_shards(mesh) == len(jax.devices())
(('rows',), True)
>>> padded_rows(10, make_mesh(1))
10
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Union

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

__all__ = ["ROWS", "DevicesLike", "fetch", "make_mesh", "n_shards", "padded_rows", "put_rows", "replicate",
           "row_bytes", "row_sharding", "shard_rows"]

ROWS = "rows"  # the name of the mesh axis the rows are split along
# what a fit's ``devices=`` accepts: None, "all", a count, devices, or a one-axis mesh
DevicesLike = Union[None, str, int, Sequence[Any], Mesh]


def make_mesh(devices: DevicesLike) -> Mesh | None:
    """The one-axis mesh of a fit's ``devices=`` argument (None for ``None``).

    Parameters
    ----------
    devices : None, "all", int, sequence of jax.Device or jax.sharding.Mesh
        See the module docstring.

    Returns
    -------
    Mesh or None
        A mesh with one axis (``"rows"``, or the given mesh's own axis name).

    Raises
    ------
    ValueError, TypeError
        For a mesh with several axes, a count outside 1..len(jax.devices()), repeated or
        non-device entries, or (under jax.distributed) a mesh without a device of this process.
    """
    if devices is None:
        return None
    if isinstance(devices, Mesh):
        if len(devices.axis_names) != 1:
            raise ValueError(f"devices: a Mesh with one axis is needed (the rows' axis), got "
                             f"axes {devices.axis_names}")
        mesh = devices
    else:
        mesh = Mesh(np.array(_device_list(devices), dtype=object), (ROWS,))
    if not any(d.process_index == jax.process_index() for d in mesh.devices.flat):
        raise ValueError(f"devices: none of the mesh's devices belongs to this process "
                         f"(process {jax.process_index()}); every process must hold a shard "
                         "of the rows (use devices='all')")
    return mesh


def _device_list(devices) -> list:
    if isinstance(devices, str):
        if devices != "all":
            raise ValueError(f"devices must be None, 'all', an int, a list of jax devices or a "
                             f"one-axis jax.sharding.Mesh; got {devices!r}")
        return list(jax.devices())
    if isinstance(devices, (int, np.integer)) and not isinstance(devices, bool):
        avail = jax.devices()
        if not 1 <= int(devices) <= len(avail):
            raise ValueError(f"devices={int(devices)}: between 1 and {len(avail)} (the devices "
                             "jax.devices() lists) are available")
        return list(avail[:int(devices)])
    if isinstance(devices, Sequence) and not isinstance(devices, (bytes, bool)):
        out = list(devices)
        if not out:
            raise ValueError("devices is an empty list; give at least one jax device")
        bad = [d for d in out if not isinstance(d, jax.Device)]
        if bad:
            raise TypeError(f"devices must hold jax.Device objects (from jax.devices()), got "
                            f"{type(bad[0]).__name__}")
        if len(set(out)) != len(out):
            raise ValueError("devices lists a device more than once")
        return out
    raise TypeError(f"devices must be None, 'all', an int, a list of jax devices or a one-axis "
                    f"jax.sharding.Mesh; got {type(devices).__name__}")


def n_shards(mesh: Mesh | None) -> int:
    """How many pieces the rows are cut into (1 without a mesh)."""
    return 1 if mesh is None else int(mesh.devices.size)


def padded_rows(n: int, mesh: Mesh | None) -> int:
    """``n`` rounded up to a multiple of the mesh's device count."""
    s = n_shards(mesh)
    return -(-int(n) // s) * s


def row_sharding(mesh: Mesh) -> NamedSharding:
    """Axis 0 split along the mesh's axis, the other axes whole."""
    return NamedSharding(mesh, PartitionSpec(mesh.axis_names[0]))


def put_rows(x: np.ndarray, mesh: Mesh | None, fill=0):
    """``x`` (numpy, rows on axis 0) padded with ``fill`` to a multiple of the device count
    and sharded by rows; each process materialises only the shards on its own devices.
    Without a mesh: ``jax.device_put(x)`` (one device, uncommitted), as the fits always did."""
    x = np.asarray(x)
    if mesh is None:
        return jax.device_put(x)
    n = padded_rows(x.shape[0], mesh)
    if n != x.shape[0]:
        x = np.concatenate([x, np.full((n - x.shape[0],) + x.shape[1:], fill, x.dtype)])
    return jax.make_array_from_callback(x.shape, row_sharding(mesh), lambda idx: x[idx])


def replicate(x, mesh: Mesh | None):
    """``x`` (numpy) whole on every device of the mesh (``jax.device_put(x)`` without one)."""
    x = np.asarray(x)
    if mesh is None:
        return jax.device_put(x)
    return jax.make_array_from_callback(x.shape, NamedSharding(mesh, PartitionSpec()),
                                        lambda idx: x[idx])


def shard_rows(data, mesh: Mesh | None):
    """A mixed GLM's ``kernels.glmm.Data`` with its rows sharded over ``mesh`` (padded with
    inert rows to a multiple of the device count) and its other arrays replicated.

    Parameters
    ----------
    data : kernels.glmm.Data
        Numpy or device arrays (gathered to the host first: single-process use, e.g. to
        compare a model's ``_data()`` with its sharded copy; the models build their sharded
        data from numpy directly).
    mesh : Mesh or None
        None returns ``data`` unchanged.

    Returns
    -------
    kernels.glmm.Data
    """
    if mesh is None:
        return data
    host = jax.tree.map(np.asarray, data)

    def rows(x, fill=0):
        return put_rows(x, mesh, fill)

    def rep(x):
        return None if x is None else replicate(x, mesh)

    return host._replace(
        y=rows(host.y), X=rows(host.X),
        Z=type(host.Z)(rows(host.Z.cols), rows(host.Z.vals)),
        ident=rep(host.ident), n_trials=rows(host.n_trials, 1), weights=rows(host.weights),
        offset=rows(host.offset), const=rep(host.const),
        corr=tuple(type(b)(*(rep(a) for a in b)) for b in host.corr),
        indep=rep(host.indep), level_w=rep(host.level_w), re_blocks=rep(host.re_blocks))


def fetch(x) -> np.ndarray:
    """A device array as numpy on this process, also when it spans other processes'
    devices and is not replicated (``multihost_utils.process_allgather``)."""
    if isinstance(x, jax.Array) and not (x.is_fully_addressable or x.is_fully_replicated):
        from jax.experimental import multihost_utils

        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(x)


def row_bytes(tree) -> tuple[int, int]:
    """``(total, per_shard)``: bytes of the arrays in ``tree`` that are sharded by rows, in
    all and on the fullest device (for the benchmark and the docs)."""
    total = per = 0
    for leaf in jax.tree.leaves(tree):
        if not isinstance(leaf, jax.Array) or leaf.ndim == 0:
            continue
        spec = getattr(leaf.sharding, "spec", None)
        if spec is None or len(spec) == 0 or spec[0] is None:
            continue
        total += leaf.nbytes
        per += int(np.prod(leaf.sharding.shard_shape(leaf.shape))) * leaf.dtype.itemsize
    return total, per
