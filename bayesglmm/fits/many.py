"""Many responses, one design: a mixed GLM fitted to each column of Y, vmapped over columns.

Per-gene (per-item, per-metric) models share X, Z, the grouping, trials, offset and weights;
only y changes.  :func:`fit_many` runs the fits of a chunk of responses as one batch: the
jitted programs of the single fit are ``jax.vmap``-ed over the response axis of ``Data``
(``y`` and the family's constant ``const``; everything else is broadcast), and the host loop
that drives them keeps one state per response.

Each response follows the iterations of its own single fit, so its numbers equal that fit's
to rounding (~1e-12): ``fit_laplace`` in fits.many_laplace (the host-driven projected Newton
of fits.laplace with a state per response), ``fit_map`` and ``fit_vb`` in
fits.many_compiled (their compiled Newton loops, vmapped).  Responses that have stopped
cost nothing: the programs run only over the live ones (:func:`_live_program`), in groups
(:func:`group_size`).

Chunks.  The responses are fitted ``chunk_size`` at a time (a power of two, default from
:data:`MEMORY_BUDGET` and :func:`bytes_per_response`); the last chunk is filled up with
copies of its first response (discarded; the Laplace fit does not even fit them: they start
stopped), so every chunk has one shape and a second call with the same model compiles
nothing.  On the CPU the Laplace fit runs one chunk per core at a time (:func:`map_chunks`,
:func:`n_workers`): a chunk's host loop and its programs, which evaluate a few responses at
a time, keep about one core busy.
"""

from __future__ import annotations

import functools
import os
import warnings
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, TypeVar

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
from jax import lax

from .._precision import precision
from ..linalg import psd
from ..linalg._blas import single_threaded_blas
from .._xla import large_options
from ..exceptions import ConvergenceWarning, SingularFitWarning
from ..kernels.glmm import Data
from ..progress import bar
from . import laplace as _laplace

if TYPE_CHECKING:
    from ..models.base import MixedGLMBase
    from ..progress import Progress
    from ..results.many import ManyResults

__all__ = ["MEMORY_BUDGET", "bytes_per_response", "check_responses", "chunks",
           "default_chunk_size", "fit_many", "group_size", "map_chunks", "n_workers"]

T = TypeVar("T")

MEMORY_BUDGET = 2**30  # bytes a chunk's programs may use (estimate, bytes_per_response)
MAX_CHUNK = 4096  # most responses per chunk


# ----------------------------------------------------------------------------- inputs

def check_responses(model, Y) -> tuple[np.ndarray, list[str]]:
    """``(Y (n, k) float64, names)`` from an (n, k) array or DataFrame of responses.

    Raises ``ValueError`` for a wrong shape, a NaN or infinite value (naming the column) or a
    response the family rejects (``family.check_endog``, naming the column); ``TypeError`` for
    non-numeric values.
    """
    if isinstance(Y, pd.DataFrame):
        names = [str(c) for c in Y.columns]
        values = Y.to_numpy()
    else:
        values = Y
        names = None
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError("Y must be a numeric (n, k) array or DataFrame of responses") from None
    if arr.ndim != 2:
        raise ValueError(f"Y must be 2-D (n, k): one column per response, got shape "
                         f"{arr.shape}")
    n, k = arr.shape
    if n != model.nobs:
        raise ValueError(f"Y has {n} rows but the model has {model.nobs} (nobs); the rows "
                         "must be the model's rows, in order")
    if k == 0:
        raise ValueError("Y has no columns: there is nothing to fit")
    names = [f"y{j}" for j in range(k)] if names is None else names
    if len(set(names)) != k:
        dup = sorted({c for c in names if names.count(c) > 1})
        raise ValueError(f"Y has duplicated column names {dup}; results are indexed by name")
    bad = ~np.isfinite(arr)
    if bad.any():
        j = int(np.argmax(bad.any(0)))
        raise ValueError(f"Y column {names[j]!r} contains {int(bad[:, j].sum())} NaN or "
                         f"infinite value(s) (first in row {int(np.argmax(bad[:, j]))}); drop "
                         "or impute them before fitting")
    for j, name in enumerate(names):
        model.family.check_endog(arr[:, j], model.n_trials, name=f"Y column {name!r}")
    return arr, names


def bytes_per_response(n_pad: int, m: int, k_vc_pad: int, k_a: int, mode, itemsize: int
                       ) -> int:
    """An estimate of the memory one response takes in the batched programs: the n rows'
    linear predictor, weights and their forward-mode tangents (k_a directions, ~8 arrays
    each) and the H_uu factor (k_vc·q in the block mode, k_vc² for the dense and Schur
    modes) with its tangents."""
    rows = n_pad * (m + 2) * (k_a + 1) * 8
    if mode == "diag":
        per_level = 1
    elif psd.is_block(mode):
        per_level = mode[1]
    elif psd.is_schur_block(mode):
        per_level = mode[1] + mode[2]
    else:
        per_level = k_vc_pad
    levels = k_vc_pad * per_level * (k_a + 1) * 4
    return itemsize * (rows + levels + k_vc_pad * k_a * 4)


def default_chunk_size(k: int, per_response: int, budget: int = MEMORY_BUDGET) -> int:
    """The responses per chunk: as many as ``budget`` bytes allow (at most ``MAX_CHUNK``),
    rounded down to a power of two — and no more than the power of two ≥ k."""
    fit = max(1, min(MAX_CHUNK, budget // max(per_response, 1)))
    size = 1 << (fit.bit_length() - 1)
    return min(size, 1 << max(k - 1, 0).bit_length())


# ----------------------------------------------------------------------------- programs

def _data_axes() -> Data:
    """vmap's in_axes for Data: the responses (y) and their constants batched, the rest
    (design, trials, offset, weights) shared."""
    axes: dict[str, Any] = dict.fromkeys(Data._fields)
    return Data(**{**axes, "y": 0, "const": 0})


def group_size(cpu: int, B: int) -> int:
    """Responses per vmapped evaluation in a chunk of B: ``cpu`` on the CPU backend, B (the
    whole chunk in parallel) on accelerators."""
    return min(cpu, B) if jax.default_backend() == "cpu" else B


@functools.cache
def _live_program(fn, n_batched: int, group: int):
    """``run(live, old, *batched, data, prior)``: ``fn`` on the rows where ``live`` (B,),
    ``group`` rows at a time (``jax.vmap``), the others keeping ``old`` (fn's outputs,
    leading axis B).  The live rows are moved to the front and a loop with a dynamic trip
    count evaluates ⌈n_live / group⌉ groups: stopped responses cost nothing."""
    vf = jax.vmap(fn, in_axes=(0,) * n_batched + (_data_axes(), None))

    @functools.partial(jax.jit, compiler_options=large_options())
    def run(live, old, *args):
        batched, data, prior = args[:n_batched], args[n_batched], args[n_batched + 1]
        order = jnp.argsort(~live, stable=True)  # live rows first, in order

        def body(i, buf):
            idx = lax.dynamic_slice(order, (i * group,), (group,))
            d = data._replace(y=data.y[idx], const=data.const[idx])
            out = vf(*(a[idx] for a in batched), d, prior)
            return jax.tree_util.tree_map(lambda b, o: b.at[idx].set(o), buf, out)

        n_groups = (jnp.sum(live) + group - 1) // group
        buf = lax.fori_loop(0, n_groups, body, old)
        keep = lambda b, o: jnp.where(live.reshape((-1,) + (1,) * (b.ndim - 1)), b, o)  # noqa: E731
        return jax.tree_util.tree_map(keep, buf, old)

    return run


# ----------------------------------------------------------------------------- entry point

_METHODS = {"fit_laplace": "laplace", "laplace": "laplace", "fit_map": "map", "map": "map",
            "fit_vb": "vb", "vb": "vb"}


def fit_many(model: MixedGLMBase, Y: Any, method: str = "fit_laplace", *,
             chunk_size: int | None = None, progress: bool | Progress = False,
             **fit_kwargs: Any) -> ManyResults:
    """Fit ``model`` to each column of ``Y``: one design, many responses.

    Parameters
    ----------
    model : BinomialBayesMixedGLM or PoissonBayesMixedGLM (or another mixed GLM class)
        Built once, from a formula or arrays; its design (X, Z, grouping, trials, offset,
        weights) is shared by every response, its own response is not used.
    Y : (n, k) array or DataFrame
        One response per column, rows as the model's (``model.nobs``).  A DataFrame's
        column names name the responses; an array's are ``"y0"``, ..., ``"y{k-1}"``.
    method : ``"fit_laplace"``, ``"fit_map"`` or ``"fit_vb"``
        The fit run on each response, with the model method's keywords in ``fit_kwargs``.
        fit_laplace: ``priors`` (default True), ``start`` ((k_fep + k_vcp,) shared or
        (k, k_fep + k_vcp) per response) and ``minim_opts``; fit_map and fit_vb (Newton
        only; fits.many_compiled): ``minim_opts``, ``scale_fe``, ``rng`` (one draw of
        statsmodels' random start, used for every response: ``model.fit_map(rng=seed)``
        draws the same) and, for fit_vb, ``mean`` and ``sd``.
    chunk_size : int, optional
        Responses fitted together in one vmapped batch; default the largest power of two
        whose estimated memory (:func:`bytes_per_response`) fits :data:`MEMORY_BUDGET`, at
        most :data:`MAX_CHUNK` (fit_laplace: and at most the power of two ≥ k / n_workers,
        so that each CPU core gets a chunk; on the CPU a chunk's programs hold only a few
        responses' intermediates at a time, so the chunks in flight together stay small).
    progress : bool or bayesglmm.progress.Progress
        A progress bar over the chunks (tqdm's when installed, else a line per second on
        stderr once the fit has run 2 s).

    Returns
    -------
    ManyResults
        ``fe_mean``, ``fe_sd``, ``vcp_mean``, ``vcp_sd`` ((k, p) DataFrames), ``llf``,
        ``converged``, ``n_iter`` (Series) and ``result(j)``, the ordinary results of
        response j.

    Warns
    -----
    ConvergenceWarning, SingularFitWarning
        Once for the whole call, counting the responses concerned (``result(j)`` warns for
        its response as the single fit does).

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> from bayesglmm import PoissonBayesMixedGLM, fit_many
    >>> rng = np.random.default_rng(0)
    >>> df = pd.DataFrame({"x": rng.normal(size=200), "g": np.repeat(np.arange(10), 20)})
    >>> eta = 0.5 + 0.3 * df[["x"]].to_numpy() + rng.normal(0, 0.5, (10, 3))[df.g]
    >>> Y = pd.DataFrame(rng.poisson(np.exp(eta)), columns=["a", "b", "c"])
    >>> model = PoissonBayesMixedGLM.from_formula("y ~ x", {"g": "0 + C(g)"},
    ...                                           df.assign(y=Y["a"]))
    >>> res = fit_many(model, Y, priors=False, chunk_size=2)
    >>> res.fe_mean.shape, bool(res.converged.all())
    ((3, 2), True)
    """
    from ..models.base import MixedGLMBase
    from ..results.many import ManyResults

    if not isinstance(model, MixedGLMBase):
        raise TypeError(f"model must be a mixed GLM such as PoissonBayesMixedGLM, got "
                        f"{type(model).__name__}")
    kind = _METHODS.get(method) if isinstance(method, str) else None
    if kind is None:
        raise ValueError(f"unknown method {method!r}; fit_many supports 'fit_laplace', "
                         "'fit_map' and 'fit_vb'")
    if chunk_size is not None:
        from ..checks import check_int

        chunk_size = check_int(chunk_size, "chunk_size")
    Y, names = check_responses(model, Y)
    if kind in ("map", "vb"):
        from .many_compiled import map_model, vb_model

        fit = map_model if kind == "map" else vb_model
        arrays, info = fit(model, Y, chunk_size, progress, **fit_kwargs)
    else:
        arrays, info = _laplace_model(model, Y, chunk_size, progress, **fit_kwargs)
    res = ManyResults(model, Y, names, kind, arrays, info)
    bad = ~res.converged.to_numpy()
    if bad.any():
        warnings.warn(f"fit_many: {int(bad.sum())} of {len(names)} responses did not converge "
                      f"(first: {names[int(np.argmax(bad))]!r}); see .converged and "
                      ".status", ConvergenceWarning, stacklevel=2)
    sing = res.singular.to_numpy()
    if sing.any():
        warnings.warn(f"fit_many: {int(sing.sum())} of {len(names)} responses have a "
                      "variance component estimated at zero (singular fit; see .singular)",
                      SingularFitWarning, stacklevel=2)
    return res


def _chunk_data(model, Y, data: Data, B: int):
    """Yield ``(columns (B,), n_real, data)`` per chunk of B responses: ``data`` (padded, as
    the model's ``_data``) with the chunk's responses as ``y`` (B, n_pad) and their
    constants ``const`` (B,); the last chunk is filled up with copies of its first response
    (its first ``n_real`` rows are real).  Run inside ``precision(model.dtype)``."""
    n, k = Y.shape
    dtype = np.dtype(model.dtype)
    trials = 1.0 if model.n_trials is None else model.n_trials
    const = np.array([model.family.constant(Y[:, j], trials, model.freq_weights)
                      for j in range(k)])
    for c in range(-(-k // B)):
        idx = np.arange(c * B, min(k, (c + 1) * B))
        full = np.concatenate([idx, np.full(B - len(idx), idx[0])])  # last: fill up
        yc = np.zeros((B, data.y.shape[0]), dtype)
        yc[:, :n] = Y[:, full].T
        yield full, len(idx), data._replace(y=jax.device_put(yc),
                                            const=jax.device_put(const[full].astype(dtype)))


def chunks(model, Y, data: Data, B: int, progress):
    """Yield ``(columns (B,), data)`` per chunk of B responses (:func:`_chunk_data`), inside
    ``precision(model.dtype)``, showing the progress bar."""
    with bar(progress, -(-Y.shape[1] // B), "chunks", "fit_many") as update, \
            precision(np.dtype(model.dtype)):
        for c, (full, _, data_c) in enumerate(_chunk_data(model, Y, data, B)):
            yield full, data_c
            update(c + 1)


def n_workers() -> int:
    """Chunks fitted at once: one per CPU core on the CPU backend — each chunk's host loop
    and its small programs (a few responses per evaluation, :func:`group_size`) keep about
    one core busy — and one on accelerators, where a chunk is one wide program."""
    if jax.default_backend() != "cpu":
        return 1
    affinity = getattr(os, "sched_getaffinity", None)
    return max(1, len(affinity(0)) if affinity is not None else os.cpu_count() or 1)


def map_chunks(fit: Callable[..., T], model, Y, data: Data, B: int, progress,
               workers: int | None = None) -> list[T]:
    """``[fit(columns, n_real, data_c) for each chunk]`` (:func:`_chunk_data`), ``workers``
    chunks at a time (default :func:`n_workers`), each in a thread of its own under
    ``precision(model.dtype)`` (JAX releases the GIL while its programs run); in chunk
    order, showing the progress bar.  ``fit``'s jitted programs must be built beforehand
    (in this thread), so that every chunk runs the same compiled programs."""
    dtype = np.dtype(model.dtype)
    workers = n_workers() if workers is None else workers

    def run(full, n_real, data_c):
        with precision(dtype), single_threaded_blas():
            return fit(full, n_real, data_c)

    out: list[T] = []
    with bar(progress, -(-Y.shape[1] // B), "chunks", "fit_many") as update, \
            precision(dtype), ThreadPoolExecutor(max(workers, 1)) as pool:
        pending: deque = deque()
        for args in _chunk_data(model, Y, data, B):
            if workers <= 1:
                out.append(run(*args))
                update(len(out))
                continue
            pending.append(pool.submit(run, *args))  # at most `workers` chunks in flight
            while len(pending) >= workers or (pending and pending[0].done()):
                out.append(pending.popleft().result())
                update(len(out))
        while pending:
            out.append(pending.popleft().result())
            update(len(out))
    return out


def _laplace_model(model, Y, chunk_size, progress, priors=True, start=None, minim_opts=None,
                   integrate=False):
    """The model-level part of fit_laplace (checks, padded data, dropped columns) around
    :func:`laplace_many` per chunk: ``(arrays (leading axis k, real levels), info)``."""
    from ..models.base import parse_minim_opts
    from .many_laplace import laplace_many, laplace_programs

    if integrate:
        raise ValueError("fit_many does not integrate over vcp (integrate=True); call "
                         "result(j).model.fit_laplace(integrate=True) for the responses of "
                         "interest")
    n, k = Y.shape
    kf, k_a = model.k_fep, model.k_fep + model.k_vcp
    starts = None
    if start is not None and np.ndim(start) == 2:  # one start per response
        starts = np.asarray(start, np.float64)
        if starts.shape != (k, k_a) or not np.all(np.isfinite(starts)):
            raise ValueError(f"start must be finite, of shape ({k_a},) or ({k}, {k_a}), got "
                             f"shape {starts.shape}")
        start = None
    opts = parse_minim_opts(minim_opts, _laplace.default_options(model.dtype))
    priors, _, start, keep = model._laplace_checks(priors, False, start)
    if starts is not None and keep is not None:
        starts = np.concatenate([starts[:, keep], starts[:, kf:]], axis=1)
    fine = model._fine(k_a + model.k_vc)
    _, mode = model._padded_design(fine)
    data = model._drop_columns(model._data(True, fine), keep)
    dtype = np.dtype(model.dtype)
    n_pad, k_vc_pad = data.y.shape[0], data.ident.shape[0]
    workers = n_workers()
    # default: as many as fit the budget, and at least one chunk per worker where k allows
    B = chunk_size or default_chunk_size(-(-k // workers), bytes_per_response(
        n_pad, data.Z.cols.shape[1], k_vc_pad, data.X.shape[1] + model.k_vcp, mode,
        dtype.itemsize))
    prior = model._prior()
    with precision(dtype), single_threaded_blas():  # every chunk's programs, built here: compiled once
        programs = laplace_programs(model.family, mode, bool(priors), opts, B)

    def fit(full, n_real, data_c):
        theta0 = (None if start is None and starts is None else
                  np.broadcast_to(start, (B, len(start))) if starts is None else starts[full])
        return laplace_many(programs, data_c, prior, data.X.shape[1], priors=priors,
                            theta0=theta0, n_real=n_real)

    parts = map_chunks(fit, model, Y, data, B, progress, workers)
    out = {key: np.concatenate([p[key] for p in parts])[:k] for key in parts[0]}
    for key in ("u", "vc", "vc_sd", "vc_sd_cond"):  # padded levels (design.buckets) off
        out[key] = out[key][:, :model.k_vc]
    if keep is not None:  # dropped fixed effects back as NaN (models.base._restore_columns)
        pos = np.concatenate([np.asarray(keep, int), np.arange(kf, k_a)])
        theta, cov = np.full((k, k_a), np.nan), np.full((k, k_a, k_a), np.nan)
        theta[:, pos] = out["theta"]
        cov[:, pos[:, None], pos[None, :]] = out["cov"]
        out["theta"], out["cov"] = theta, cov
    info = {"priors": bool(priors), "keep": keep, "chunk_size": B}
    return out, info
