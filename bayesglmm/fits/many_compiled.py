"""``fit_many(..., method="fit_map" | "fit_vb")``: the fits whose Newton loop is compiled.

fits.map.fit_map and fits.vb.fit_vb each run one compiled Newton ``while_loop``
(solvers.newton.newton_program) from statsmodels' start, then finish on the host (fit_map:
the Laplace covariance from the step at the mode, fits.map.laplace_cov).  Here that loop is
``jax.vmap``-ed over the responses (fits.many._live_program, in groups): each response runs
its own loop — a vmapped ``while_loop`` freezes the responses whose loop has ended — and the
host part runs per response as in the single fit.  Every response starts from the same draw
of ``rng`` (statsmodels' random start), which is what ``model.fit_map(rng=seed)`` or
``model.fit_vb(rng=seed)`` draws for each.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from ..solvers.newton import (CURVATURE, GRAD, NEWTON, NONE, _newton_program,
                              default_options)
from . import map as _map
from . import vb as _vb
from .many import (_data_axes, _live_program, bytes_per_response, chunks, default_chunk_size,
                   group_size)

__all__ = ["map_model", "vb_model"]

GROUP = 8  # responses per vmapped Newton loop on CPU (fits.many.group_size)


@functools.cache
def _loop(kind: str, family, rule, dense: bool, n_colors: int, final: int):
    """``fn(a0, v0, data, (prior, color, opts, a_shift)) -> (Solution, Step)``: the single
    fit's program (fits.map.map_program, fits.vb.vb_program) unjitted (a jit with compiler
    options cannot be nested), from the better of the start and its candidate."""
    if kind == "map":
        program = _newton_program(_map.map_objective(family), dense, n_colors, NONE,
                                  _map.prior_mode_start, final, False)
    else:
        program = _newton_program(_vb.vb_objective(family, rule), dense, n_colors,
                                  CURVATURE, _vb.sd_start, GRAD, False)
    solve = program.__wrapped__  # type: ignore[attr-defined]  # the function under jax.jit

    def fn(a0, v0, data, extra):
        prior, color, opts, a_shift = extra
        return solve(a0, v0, color, opts, a_shift, True, True, data, prior)

    return fn


def _run(model, Y, fn, data, a0, v0, a_shift, color, opts, B: int, progress):
    """The loop ``fn`` over the chunks of Y: ``(sol, step, data chunk, j)`` per response."""
    dtype = np.dtype(model.dtype)
    program = _live_program(fn, 2, group_size(GROUP, B))
    done = 0
    for _, data_c in chunks(model, Y, data, B, progress):
        put = lambda x: jax.device_put(np.asarray(x, dtype))  # noqa: E731
        a0b, v0b = put(np.broadcast_to(a0, (B,) + a0.shape)), put(
            np.broadcast_to(v0, (B,) + v0.shape))
        extra = (model._prior(), jax.device_put(np.asarray(color, np.int32)), opts,
                 put(a_shift))
        old = jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), jax.eval_shape(
            jax.vmap(fn, in_axes=(0, 0, _data_axes(), None)), a0b, v0b, data_c, extra))
        sols, steps = jax.device_get(program(np.ones(B, bool), old, a0b, v0b, data_c, extra))
        for j in range(min(B, Y.shape[1] - done)):
            sol, step = jax.tree_util.tree_map(lambda x, j=j: x[j], (sols, steps))
            yield sol.host(), step, data_c, j
        done += B


def _chunk_size(model, chunk_size, k, data, width):
    return chunk_size or default_chunk_size(k, 2 * bytes_per_response(
        data.y.shape[0], data.Z.cols.shape[1], data.ident.shape[0], width, "diag",
        np.dtype(model.dtype).itemsize))


def _counters(sol) -> dict:
    return {key: np.asarray(getattr(sol, key)) for key in
            ("value", "grad_norm", "n_iter", "status", "n_warm", "n_fev", "n_cg")}


def map_model(model, Y, chunk_size, progress, scale_fe=False, rng=None, minim_opts=None):
    """fits.map.fit_map (Newton) with the model's fit_map checks for each column of Y:
    ``(arrays (leading axis k), info)`` for results.many.ManyResults."""
    from ..checks import check_bool
    from ..models.base import parse_minim_opts
    from ..validation import check_random_state

    model._no_corr("fit_map")
    model._check_rank("fit_map")
    scale_fe = check_bool(scale_fe, "scale_fe")
    opts = parse_minim_opts(minim_opts, default_options(model.dtype))
    start_vc = check_random_state(rng).normal(size=model.k_vc)  # one draw, every response
    kf, kp, kv, n = model.k_fep, model.k_vcp, model.k_vc, model.nobs
    ka, p = kf + kp, kf + kp + kv
    fine = model._fine(p)
    data, _, A = model._fit_data(scale_fe, fine)
    color, _ = model._padded_design(fine)
    n_colors = model._n_colors
    dense = _map.use_dense(p, n)
    full = p <= _map.DENSE_COV_MAX and (n_colors == 1 or p * n <= _map.DENSE_COV_WORK_MAX)
    final = GRAD if dense or (n_colors > 1 and full) else (
        CURVATURE if n_colors == 1 else NEWTON)
    ident = np.asarray(data.ident)[:kv]
    # statsmodels' start: fe = 0, vcp = 1, vc = start_vc, i.e. u = vc·exp(−vcp)
    a0 = np.concatenate([np.zeros(kf), np.ones(kp)])
    v0 = np.zeros((data.ident.shape[0], 1))
    v0[:kv, 0] = start_vc * np.exp(-a0[kf:][ident])
    B = _chunk_size(model, chunk_size, Y.shape[1], data, ka)
    fn = _loop("map", model.family, None, dense, n_colors, final)
    rows = [_map_tail(model, sol, step, data_c, j, dense, full, n_colors, A, ident)
            for sol, step, data_c, j in _run(model, Y, fn, data, a0, v0, np.zeros(ka), color,
                                             opts, B, progress)]
    return {key: np.stack([r[key] for r in rows]) for key in rows[0]}, {
        "priors": True, "keep": None, "chunk_size": B}


def _map_tail(model, sol, step, data_c, j, dense, full, n_colors, A, ident) -> dict:
    """The host part of fits.map.fit_map for response j of a chunk."""
    kf, kv = model.k_fep, model.k_vc
    a, u = sol.a, sol.v[:kv, 0]
    H = None
    if dense:
        H = np.asarray(step.H, np.float64)
    elif n_colors > 1 and full:  # the full Hessian from Hessian-vector products
        dt = np.dtype(model.dtype)
        data_j = data_c._replace(y=data_c.y[j], const=data_c.const[j])
        H = np.asarray(_map._hessian_program(model.family)(
            jnp.asarray(sol.a, dt), jnp.asarray(sol.v, dt), data_j, model._prior()),
            np.float64)
    params, cov, variances, exact, vc = _map.mode_summary(
        step, a, u, H, kf, ident, n_colors=n_colors, full=full, fe_transform=A)
    return dict(params=params, cov=cov, variances=variances,
                cov_exact=np.asarray(exact), a=a, v=vc[:, None],
                x=np.concatenate([a, vc]),
                **_counters(sol))


def vb_model(model, Y, chunk_size, progress, mean=None, sd=None, minim_opts=None,
             scale_fe=False, rng=None):
    """fits.vb.fit_vb (Newton) with the model's fit_vb checks for each column of Y."""
    from ..checks import check_bool
    from ..models.base import check_vb_start, parse_minim_opts
    from ..validation import check_random_state

    model._no_corr("fit_vb")
    model._check_rank("fit_vb")
    scale_fe = check_bool(scale_fe, "scale_fe")
    kf, kp, kv = model.k_fep, model.k_vcp, model.k_vc
    ka, p = kf + kp, kf + kp + kv
    mean, sd = check_vb_start(mean, sd, p)
    fine = model._fine(2 * p)
    data, X, A = model._fit_data(scale_fe, fine)
    color, _ = model._padded_design(fine)
    opts = parse_minim_opts(minim_opts, default_options(model.dtype))
    rng = None if sd is not None else check_random_state(rng)
    m, s, shift = _vb.start_values(mean, sd, rng, kf, kp, kv, X)  # one draw, every response
    v0 = np.zeros((data.ident.shape[0], 2))  # padded levels at mean 0, log sd 0
    v0[:kv] = np.stack([m[ka:], s[ka:]], axis=1)
    a0 = np.concatenate([m[:ka], s[:ka]])
    a_shift = np.concatenate([np.zeros(ka), shift[:ka]])
    B = _chunk_size(model, chunk_size, Y.shape[1], data, 2 * ka)
    fn = _loop("vb", model.family, model.vb_rule, _map.use_dense(2 * p, X.shape[0]),
               model._n_colors, GRAD)
    rows = []
    for sol, _, _, _ in _run(model, Y, fn, data, a0, v0, a_shift, color, opts, B, progress):
        a, v = sol.a, sol.v[:kv]
        params = np.concatenate([a[:ka], v[:, 0]])
        log_sd = np.concatenate([a[ka:], v[:, 1]])
        x = np.concatenate([params, log_sd])
        va = np.exp(log_sd) ** 2
        if A is not None:  # fe = A·fe_s; independent factors in q: the diagonal only
            params[:kf] = A @ params[:kf]
            va[:kf] = (A**2) @ va[:kf]
        rows.append(dict(params=params, variances=va, x=x, a=a, v=v, **_counters(sol)))
    return {key: np.stack([r[key] for r in rows]) for key in rows[0]}, {
        "priors": True, "keep": None, "chunk_size": B}
