"""The batched marginal Laplace fit of fits.many: fits.laplace per response, vmapped.

The single fit (fits.laplace) is driven from the host: lme4's GLM start (fits.start), then
projected Newton (solvers.projected_newton.projected_newton_host) over the programs
``value``, ``vgh`` and ``finish``.  Here the same iteration runs per response
(:func:`projected_newton_many`, :func:`glm_start_many`): per-response active sets and steps
(the single fit's ``_direction``, vmapped), Armijo backtracking with a step length per
response (each response halves its own t until it is accepted; the batch stops halving when
every response has accepted or failed), per-response stopping tests, and responses that have
stopped are frozen (their x and u no longer change, and the programs skip them: see
fits.many._live_program).  Each response therefore follows the single fit's iterates; the
batched programs differ from the single ones only in floating-point rounding (vmapped XLA
reductions, and the direction solved by XLA's eigh instead of numpy's), so the estimates
agree with a single fit to ~1e-12.

The programs are built once per call (:func:`laplace_programs`) and shared by the chunks,
which fits.many.map_chunks runs side by side in threads (one per core on the CPU); each
program compiles once, at its first call from whichever thread.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import NamedTuple

import jax
import numpy as np

from ..families import Family, Poisson
from ..kernels.glmm import Data
from ..kernels.marginal import glm_terms
from ..solvers.projected_newton import ProjectedNewtonOptions, _direction, _status
from . import laplace as _laplace
from .many import _data_axes, _live_program, group_size
from .start import START_TOL, disp_start

__all__ = ["LaplacePrograms", "glm_start_many", "laplace_many", "laplace_programs",
           "projected_newton_many", "start_many"]

# Responses per vmapped evaluation on CPU, where wider vmaps ran slower per response (their
# per-response arrays leave the caches); on accelerators a chunk is one group (see group_size)
VGH_GROUP = 4  # the gradient-and-Hessian program
VALUE_GROUP = 4  # the value (the inner Newton loop)
GLM_GROUP = 8  # the GLM start's terms


@functools.cache
def _glm_terms(family, disp: bool = False):
    """kernels.marginal.glm_terms as ``(fe, [disp,] data, prior) -> (ll, ∇ll, −∇²ll)`` (the
    prior unused; ``disp``: at the family's dispersion parameters), one function per family
    (cached: one program each)."""
    terms = glm_terms(family)
    if disp:
        return lambda fe, d, data, prior: terms(fe, data, d)
    return lambda fe, data, prior: terms(fe, data)


@functools.cache
def _finish_program(finish):
    """The single fit's ``finish`` (random-effect summaries) vmapped over responses."""
    return jax.jit(jax.vmap(finish, in_axes=(0, 0, 0, _data_axes(), None)))


@functools.cache
def _batched_direction(opts: ProjectedNewtonOptions):
    """solvers.projected_newton._direction per response (steps 2–3 and the stopping test)."""
    return jax.jit(jax.vmap(lambda x, f, g, H, lb: _direction(x, f, g, H, lb, opts),
                            in_axes=(0, 0, 0, 0, None)))


class LaplacePrograms(NamedTuple):
    """The jitted programs of :func:`laplace_many` for one configuration and chunk size B,
    built once (:func:`laplace_programs`) and shared by every chunk."""

    family: Family
    mode: object  # H_uu's factorisation (design.ellpack.design_mode)
    opts: _laplace.LaplaceOptions
    kern: _laplace.LaplaceKernels  # the single fit's programs
    vgh: Callable  # kern.vgh over the live responses (fits.many._live_program)
    value: Callable  # kern.value over the live responses
    direction: Callable  # solvers.projected_newton._direction per response
    finish: Callable  # kern.finish per response
    glm: Callable  # the GLM start's terms over the live responses (lme4's start)
    glm_start: tuple  # families with dispersion parameters: (the Poisson GLM's terms, the
    #                   family's terms at given dispersion parameters); () otherwise


def laplace_programs(family, mode, priors: bool, opts: _laplace.LaplaceOptions,
                     B: int) -> LaplacePrograms:
    """The programs of :func:`laplace_many` for chunks of B responses (none compiled yet:
    each compiles at its first call, once, whichever thread calls it)."""
    kern = _laplace.laplace_kernels(family, mode, bool(priors), opts)
    # start_many: the GLM, or the Poisson GLM then the family's at its moment start
    glm_start = ((_glm_program(Poisson(), False, B), _glm_program(family, True, B))
                 if family.n_disp else ())
    return LaplacePrograms(family, mode, opts, kern,
                           _live_program(kern.vgh, 2, group_size(VGH_GROUP, B)),
                           _live_program(kern.value, 4, group_size(VALUE_GROUP, B)),
                           _batched_direction(opts.outer), _finish_program(kern.finish),
                           _glm_program(family, False, B), glm_start)


def _glm_program(family, disp: bool, B: int):
    """:func:`_glm_terms` over the live responses of a chunk of B."""
    return _live_program(_glm_terms(family, disp), 2 if disp else 1, group_size(GLM_GROUP, B))


def start_many(programs: LaplacePrograms, data: Data, k_fep: int, k_vcp: int,
               live=None) -> np.ndarray:
    """:func:`fits.start.start_theta` per response (``data.y`` (B, n)): (B, k_fep + k_vcp)
    float64, the GLM's fe (zeros where it fails), vcp = 0, and for a family with dispersion
    parameters the moment start at the Poisson GLM (fits.start.glm_fit).  Rows not ``live``
    (B,) are not fitted (fe = 0)."""
    family = programs.family
    B = data.y.shape[0]
    theta0 = np.zeros((B, k_fep + k_vcp))
    if family.n_disp:
        poisson, at_disp = programs.glm_start
        fe = glm_start_many(poisson, data, live=live)
        ok = np.all(np.isfinite(fe), axis=1)
        disp = np.zeros((B, family.n_disp))
        host = data._replace(**{f: np.asarray(getattr(data, f))  # type: ignore[arg-type]
                                for f in ("y", "X", "weights", "offset")})
        for j in np.flatnonzero(ok if live is None else ok & live):  # numpy, O(n) each
            disp[j] = disp_start(family, host._replace(y=host.y[j]), fe[j])
        fe = glm_start_many(at_disp, data, fe0=fe, disp=disp, live=live)
        theta0[:, k_fep + k_vcp - family.n_disp:] = disp
    else:
        fe = glm_start_many(programs.glm, data, live=live)
    fe = fe.astype(np.float64)
    ok = np.all(np.isfinite(fe), axis=1)
    theta0[ok, :k_fep] = fe[ok]
    return theta0


def glm_start_many(program, data: Data, maxiter: int = 25, fe0=None, disp=None,
                   live=None) -> np.ndarray:
    """fits.start's GLM Newton per response (``data.y`` (B, n)), from ``fe0`` (B, k_fep;
    default 0; rows with NaN are left NaN) at the dispersion parameters ``disp`` (B, n_disp;
    families with them): Newton on each GLM log-likelihood with per-response Armijo
    backtracking and stopping; ``program`` the family's terms over the live responses
    (:func:`_glm_program`, with ``disp`` or not).  Rows not ``live`` (B,) are left at 0.
    (B, k_fep); NaN rows where XᵀWX is singular."""
    dtype = np.dtype(data.y.dtype)
    B, p = data.y.shape[0], data.X.shape[1]
    extra = () if disp is None else (np.asarray(disp, dtype),)
    out = (np.zeros(B, dtype), np.zeros((B, p), dtype), np.zeros((B, p, p), dtype))

    def terms(fe, live):
        return program(live, out, fe, *extra, data, None)

    fe = np.zeros((B, p), dtype) if fe0 is None else np.array(fe0, dtype)
    singular = ~np.all(np.isfinite(fe), axis=1)
    fe[singular] = 0.0
    done = singular.copy() if live is None else singular | ~live
    ll, g, H = (np.array(x) for x in terms(fe, ~done))
    for _ in range(maxiter):
        d = np.zeros_like(fe)
        rows = np.flatnonzero(~done)
        try:  # Newton step on −ll: LAPACK's gesv per row, all rows in one call
            d[rows] = np.linalg.solve(H[rows], g[rows][..., None])[..., 0]
        except np.linalg.LinAlgError:  # a singular XᵀWX: row by row, to tell which
            for j in rows:
                try:
                    d[j] = np.linalg.solve(H[j], g[j])
                except np.linalg.LinAlgError:
                    singular[j] = done[j] = True
        slope = -np.sum(g * d, axis=-1)
        done |= -0.5 * slope <= START_TOL * (1 + np.abs(ll))
        pend = ~done  # in the line search
        if not pend.any():
            break
        t = np.ones(B)
        for _ in range(40):  # backtracking: armijo(−ll, slope) along fe + t·d
            fe_t = (fe + t[:, None] * np.where(pend[:, None], d, 0.0)).astype(dtype)
            ll_t, g_t, H_t = (np.asarray(x) for x in terms(fe_t, pend))
            acc = pend & (-ll_t <= -ll + 1e-4 * t * slope)
            fe[acc], ll[acc], g[acc], H[acc] = fe_t[acc], ll_t[acc], g_t[acc], H_t[acc]
            pend &= ~acc
            if not pend.any():
                break
            t = np.where(pend, 0.5 * t, t)
        done |= pend  # a failed line search ends that response's start
    fe[singular] = np.nan
    return fe


def projected_newton_many(vgh, value, direction, x0, u0, lb,
                          opts: ProjectedNewtonOptions, live=None):
    """solvers.projected_newton.projected_newton_host for a batch of B problems.

    ``vgh(x, u, live) -> (f, g, H, aux)`` and ``value(x, u, du, dx, live) -> (f, u)`` take
    and return batches (leading axis B; ``aux[0]`` = du/dx) and need only evaluate the rows
    where ``live`` (vgh: the others must come back as its last outputs); ``direction`` is
    the vmapped ``_direction``; problems not ``live`` (B,) are never evaluated (they come
    back at x0 with status 1 and zero f, g, H).  Returns ``(x, u, f, g, H, it, status)``
    as numpy arrays with leading axis B (``it`` counts each problem's (f, g, H)
    evaluations) and ``aux`` at x.
    """
    x = np.maximum(x0, lb)
    B, k = x.shape
    live = np.ones(B, bool) if live is None else np.asarray(live, bool)
    _, u = value(x, u0, np.zeros((B, u0.shape[1], k), x.dtype), np.zeros_like(x), live)
    u = np.array(u)
    it, status = np.zeros(B, int), np.ones(B, int)
    ls_failed, done = np.zeros(B, bool), ~live
    while True:
        # a stopped problem keeps its (f, g, H, aux): those at the point it stopped at
        f, g, H, aux = vgh(x, u, ~done)
        gm, d, small, finite = (np.asarray(a) for a in direction(x, f, g, H, lb))
        f, g, H = np.asarray(f), np.asarray(g), np.asarray(H)
        stop = ~done & (small | ~finite | ls_failed | (it >= opts.maxiter))
        status = np.where(stop, _status(small, finite, ls_failed, xp=np), status)
        it = it + ~done
        done |= stop
        if done.all():
            return (x, u, f, g, H, it, status), aux
        # Armijo along each projection arc, one step length per problem
        d = np.where(done[:, None], 0.0, d)
        pend, t = ~done, np.ones(B, x.dtype)
        x_new, u_new = x.copy(), u.copy()
        for _ in range(opts.max_ls + 1):
            xt = np.maximum(x + t[:, None] * d, lb)
            ft, ut = value(xt, u, aux[0], xt - x, pend)
            ft = np.asarray(ft)
            ft = np.where(np.isfinite(ft), ft, np.inf)
            acc = pend & (ft <= f + 1e-4 * np.sum(gm * (xt - x), axis=-1))
            x_new[acc] = xt[acc]
            u_new[acc] = np.asarray(ut)[acc]
            pend &= ~acc
            if not pend.any():
                break
            t = np.where(pend, 0.5 * t, t)
        ls_failed = pend
        x, u = x_new, u_new


def _vgh_zeros(kern, x, u, data: Data, prior):
    """Zeros shaped as the outputs of ``kern.vgh`` per response (leading axis B)."""
    return jax.tree_util.tree_map(  # numpy: nothing to compile
        lambda s: np.zeros(s.shape, s.dtype),
        jax.eval_shape(jax.vmap(kern.vgh, in_axes=(0, 0, _data_axes(), None)), x, u, data,
                       prior))


def laplace_many(programs: LaplacePrograms, data: Data, prior, k_fep: int, *, priors: bool,
                 theta0=None, n_real: int | None = None) -> dict:
    """:func:`fits.laplace.fit_laplace` for a batch of responses (``data.y`` (B, n_pad),
    ``data.const`` (B,)), each from ``theta0`` (B, k_a) or lme4's start (None), with the
    programs of :func:`laplace_programs`.  Only the first ``n_real`` responses (default all)
    are fitted: the others (the filling of a last chunk) are left at their start.

    Returns a dict of numpy arrays with leading axis B: ``theta`` (k_a,), ``u`` (k_vc_pad,),
    ``value``, ``grad_norm``, ``n_iter``, ``status``, ``cov`` (k_a, k_a), ``vc``, ``vc_sd``,
    ``vc_sd_cond`` (k_vc_pad,), ``llf``, ``log_post``, ``singular`` (k_vcp,) — the arrays
    fits.laplace._solve computes for one response.
    """
    dtype = np.dtype(data.y.dtype)
    B, k_vc = data.y.shape[0], data.ident.shape[0]
    k_vcp, k_sd = _laplace.theta_layout(programs.family, data)
    k_a = k_fep + k_vcp
    live = np.arange(B) < (B if n_real is None else n_real)
    held = None
    if theta0 is None:  # lme4's start: the GLM's fixed effects, vcp = 0
        theta0 = start_many(programs, data, k_fep, k_vcp, live)
        held = _laplace.held_corr(k_fep, k_sd, k_fep + k_vcp, data)  # as fits.laplace._solve
    kern, opts = programs.kern, programs.opts
    lb = _laplace.lower_bounds(k_fep, k_sd, k_a).astype(dtype)
    x0, u0 = np.asarray(theta0, dtype), np.zeros((B, k_vc), dtype)
    last = [_vgh_zeros(kern, x0, u0, data, prior)]  # vgh's outputs so far

    def vgh(x, u, live):
        last[0] = programs.vgh(live, last[0], x, u, data, prior)
        return last[0]

    def value(x, u, du, dx, live):
        old = (np.zeros(B, dtype), u)
        return programs.value(live, old, x, u, du, dx, data, prior)

    if held is not None:  # correlation parameters held at zero until the SDs are fitted
        def vgh_held(x, u, live):
            f, g, H, aux = vgh(x, u, live)
            return (f, *_laplace.hold(g, H, held), aux)

        (x0, u0, *_), _ = projected_newton_many(vgh_held, value, programs.direction, x0, u0,
                                                lb, opts.outer, live)
    (x, u, f, g, H, it, status), du_F = projected_newton_many(
        vgh, value, programs.direction, x0, u0, lb, opts.outer, live)
    vc, var_cond, J, lp = (np.asarray(a, np.float64)
                           for a in programs.finish(x, u, du_F, data, prior))
    # the tail of fits.laplace._solve, per response (leading axis B); H = I where not live
    theta, g = np.asarray(x, np.float64), np.asarray(g)
    H = np.where(live[:, None, None], np.asarray(H, np.float64), np.eye(k_a))
    active = _laplace.singular_mask(x, g, lb, k_fep, k_sd, data)
    free = ~active
    both = free[:, :, None] & free[:, None, :]
    Hf = np.where(both, H, np.eye(k_a))
    w, Q = np.linalg.eigh(0.5 * (Hf + np.swapaxes(Hf, 1, 2)))  # |H|⁻¹ (linalg.psd.abs_inv)
    cov = np.where(both, (Q / np.abs(w)[:, None, :]) @ np.swapaxes(Q, 1, 2), 0.0)
    ginf = np.max(np.abs(np.where(free, g, 0.0)), axis=1, initial=0.0)
    var_tot = var_cond + np.einsum("bkp,bpq,bkq->bk", J, cov, J)
    f = np.asarray(f, np.float64)
    return dict(theta=theta, u=np.asarray(u, np.float64), value=f, grad_norm=ginf,
                n_iter=np.maximum(it - 1, 0), status=status,
                cov=np.where(both, cov, np.nan), vc=vc, vc_sd=np.sqrt(var_tot),
                vc_sd_cond=np.sqrt(var_cond), llf=-f - lp if priors else -f,
                log_post=-f if priors else np.full(B, np.nan), singular=active[:, k_fep:])
