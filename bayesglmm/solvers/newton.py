"""Modified Newton with a structured Hessian, for f(a, v) with small a and large v: the
iteration (the step itself is in solvers.newton_step).

For both objectives here f restricted to v is convex (H_vv ≻ 0), so the full Hessian is
positive definite iff the Schur complement S is; where it is not (far from the mode: the joint
posterior is not log-concave in the variance parameters) S's eigenvalues are replaced by their
absolute values (saddle-free Newton), which gives a descent direction.  Where that direction is
poor (a tiny |λ| gives a huge step that the line search must cut) Levenberg–Marquardt damping
μ is raised after each heavily cut step and lowered after each full one; a backtracking
(Armijo) line search globalises the iteration.  Near the optimum μ = 0, steps are full and
convergence is quadratic, so the number of iterations does not grow with n.  The
:class:`Solution` counts all the work: ``n_iter`` includes the v-only warm-up steps (``n_warm``
of them), ``n_fev`` the line-search evaluations and ``n_cg`` the CG iterations.

Compilation.  Compile time grows with the size of a program, so the iteration
(:func:`newton_program`) is one ``lax.while_loop`` whose body is one pass of a phase (the
start, the warm-up steps, the Newton steps, the step at the optimum): one call of the step
(solvers.newton_step.make_step, a runtime ``mode`` picking how much of the gradient, Hessian
blocks and direction it computes) and one line search — one copy of f's derivatives and one
of f, rather than one per phase.  Kept on the device, the loop reuses its buffers from step to
step (at 10⁵ rows a step program called from the host costs ~10–25 ms more, mostly allocating
them).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from .._export import persistent_jit
from .._xla import large_options, small_options
from .linesearch import backtrack
from .. import progress as _progress
from .newton_step import (CURVATURE, GRAD, NEWTON, NONE, WARM, NewtonOptions, Step,
                          default_options, dense_step, make_step, structured_blocks,
                          structured_step)
from .solution import Solution

__all__ = ["CURVATURE", "GRAD", "NEWTON", "NONE", "WARM", "NewtonOptions", "State", "Step",
           "default_options", "dense_step", "make_step", "newton", "newton_program",
           "structured_blocks", "structured_step"]

# the phases of the iteration (State.phase): one pass of the loop body each, one per step in
# _WARM and _NEWTON
_INIT, _START, _WARM, _NEWTON, _FINAL, _DONE = range(6)


class State(NamedTuple):
    """The carry of :func:`newton_program`'s loop."""

    phase: jax.Array  # () int: _INIT (f at the start), _START (a candidate start), _WARM,
    #                    _NEWTON, _FINAL (the step at the optimum), _DONE
    a: jax.Array  # (k_a,)
    v: jax.Array  # (k, r)
    fx: jax.Array  # () f(a, v)
    it: jax.Array  # () Newton steps
    n_warm: jax.Array  # () v-only warm-up steps
    nfev: jax.Array  # () line-search evaluations (warm-up and Newton steps)
    ncg: jax.Array  # () CG iterations
    mu: jax.Array  # () Levenberg–Marquardt damping
    g_ref: jax.Array  # () ‖g‖ at the first Newton step (inexact CG tolerances)
    status: jax.Array  # () a key of STATUS_MESSAGES
    fixed: jax.Array  # () bool: the fallback shift of a was applied
    step: Step  # the last step (at the optimum after _FINAL)


@functools.cache
def newton_program(f: Callable, dense: bool, n_colors: int, start_mode: int = NONE,
                   start: Callable | None = None, final_mode: int = GRAD) -> Callable:
    """``solve(a0, v0, color, opts, a_shift, use_start, iterate, *args)`` → ``(Solution,
    Step)`` minimising ``f(a, v, *args)`` (compiled once per shape; cached per ``f`` and static
    configuration).

    The iteration is a loop whose body is one pass of a phase: the step (:func:`make_step`,
    with the mode the phase needs) and one backtracking line search (solvers.linesearch) on a
    trial point — so the compiled body holds one copy of f's derivatives and one of f:

    * ``_INIT``: f at the start; where it is not finite, or ``a_shift`` ≠ 0, f at the start
      shifted by ``a_shift`` (a fallback start), taken where f is lower there or not finite
      at the start.
    * ``_START`` (with ``use_start``): the candidate ``start(a, v, step)`` of a step in
      ``start_mode`` (``NONE``: no derivatives), taken where f is lower there.
    * ``_WARM`` (with ``iterate``): up to ``opts.warm_v`` Newton steps in v alone (a fixed; f is
      convex in v, its diagonal Hessian blocks give a descent direction, and starting the joint
      iteration from v ≈ argmin_v f(a0, v) saves most of the damped steps that a random start
      such as statsmodels' vc ~ N(0, 1) otherwise costs), until the decrement is below
      10⁻³·(1 + |f|) or a line search fails.
    * ``_NEWTON`` (with ``iterate``): joint steps until the decrement ½·gᵀH⁻¹g ≤ ftol·(1 + |f|)
      or ‖g‖_∞ ≤ gtol (converged), ``maxiter`` steps, a failed line search, or a non-finite
      value.  A direction that is not one of descent (gᵀd ≥ 0: an inexact CG solve of an
      ill-conditioned H_vv) is replaced by −g, and its slope never counts as convergence.
    * ``_FINAL``: the step in ``final_mode`` at the optimum (``GRAD``: the gradient whose norm
      is reported; ``CURVATURE``/``NEWTON``: also the Hessian blocks, for a covariance).

    ``opts`` (NewtonOptions) are runtime values: other limits reuse the compiled program.

    The loop runs on the device (``lax.while_loop``: no host round trips, and its buffers are
    reused from pass to pass — at 10⁵ rows a step dispatched from the host costs ~10–25 ms
    more, mostly allocating them).  Small problems (``dense``, fits.map.use_dense), whose
    compilation costs more than their arithmetic, are compiled with options that compile
    fast (``_xla.small_options``).

    While a fit reports progress (:mod:`bayesglmm.progress`) a second program, compiled on
    first use, runs instead: its loop reports each warm-up and Newton step through
    ``jax.debug.callback``.
    """
    programs = {}

    def solve(*args):
        with_progress = _progress.active()
        if with_progress not in programs:
            programs[with_progress] = _newton_program(f, dense, n_colors, start_mode, start,
                                                      final_mode, with_progress)
        return programs[with_progress](*args)

    # compiled executables of both programs (jax.jit's count; tests pin it)
    solve._cache_size = lambda: sum(p._cache_size() for p in programs.values())
    return solve


def _report(phase, it, fx, gnorm):
    """Host side of the loop's progress callback: warm-up and Newton steps only."""
    if int(phase) in (_WARM, _NEWTON):
        _progress.report(int(it), float(fx), float(gnorm))


def _newton_program(f: Callable, dense: bool, n_colors: int, start_mode: int, start,
                    final_mode: int, with_progress: bool) -> Callable:
    """The loop of :func:`newton_program`, with or without the progress callback."""
    step_fn = make_step(f, dense, n_colors)
    modes = (NONE, start_mode, WARM, NEWTON, final_mode, NONE)

    def body(c: State, color, opts, a_shift, use_start, iterate, args) -> State:
        dt = c.a.dtype

        def value(a, v):
            fx = f(a, v, *args)
            return jnp.where(jnp.isfinite(fx), fx, jnp.inf)

        ph = c.phase
        mode = jnp.asarray(modes, jnp.int32)[ph]
        s = step_fn(c.a, c.v, c.mu, c.g_ref, c.step.Ya, mode, color, opts.cg_tol,
                    opts.cg_maxiter, args)
        searching = (ph == _WARM) | (ph == _NEWTON)
        # the second _INIT pass: the start shifted by a_shift, taken where f is lower there
        shifted = (ph == _INIT) & c.fixed
        # the trial point base + t·(da, dv): the point itself, a candidate start, or a step
        a_c, v_c = (c.a, c.v) if start is None else start(c.a, c.v, s)
        base_a = jnp.where(ph == _START, a_c, jnp.where(shifted, c.a + a_shift, c.a))
        base_v = jnp.where(ph == _START, v_c, c.v)
        # a direction that is not one of descent (gᵀd ≥ 0 or not finite: an inexact CG solve
        # of an ill-conditioned H_vv, or a failed one) is replaced by steepest descent −g, so
        # that Armijo's test never accepts an increase of f
        descent = s.slope < 0
        da = jnp.where(searching, jnp.where(descent, s.da, -s.ga), 0.0)
        dv = jnp.where(searching, jnp.where(descent, s.dv, -s.gv), 0.0)
        slope = jnp.where(searching, jnp.where(descent, s.slope, -s.gnorm**2), 0.0)
        fx = c.fx

        def accept(t, f_t, aux):  # Armijo (steps); lower (a candidate or shifted start);
            #                       any (else)
            lower = f_t < fx
            return jnp.where(searching, f_t <= fx + 1e-4 * t * slope,
                             jnp.where(ph == _START, lower,
                                       jnp.where(shifted, lower | ~jnp.isfinite(fx), True)))

        def phi(t):
            a_t, v_t = base_a + t * da, base_v + t * dv
            return value(a_t, v_t), (a_t, v_t)

        t, ft, (a_t, v_t), nls, ok = backtrack(phi, accept,
                                               jnp.where(searching, opts.max_ls + 1, 1))
        # then a second _INIT pass at a + a_shift: where f is not finite at the start (a
        # fallback), or lower there — statsmodels' start can be finite but absurd (a large-scale
        # covariate under the 10-node statsmodels rule: −ELBO ≈ 1e87 on grouseticks)
        retry = (ph == _INIT) & ~c.fixed & (~jnp.isfinite(ft) | jnp.any(a_shift != 0))
        gnorm, ginf = s.gnorm, s.ginf
        # converged: the Newton decrement ½·|gᵀH⁻¹g| is small — of a descent direction, or
        # (rounding at the optimum) a tiny one; a large non-descent slope is no convergence
        # (it is what an inexact solve gives at a degenerate point: never status 0 there)
        small_n = ((0.5 * jnp.abs(s.slope) <= opts.ftol * (1 + jnp.abs(fx)))
                   | (ginf <= opts.gtol))
        # a Newton step is taken if it satisfied Armijo, or at least did not increase f
        # at convergence
        take = jnp.select([ph == _INIT, ph == _NEWTON, ph == _FINAL],
                          [~shifted | ok, ok | (small_n & (ft <= fx)), False], ok)
        a = jnp.where(take, a_t, c.a)
        v = jnp.where(take, v_t, c.v)
        fx_new = jnp.where(take, ft, fx)
        small_w = -0.5 * slope <= 1e-3 * (1 + jnp.abs(fx_new))  # good enough for a start
        finite = jnp.isfinite(gnorm) & jnp.isfinite(fx_new)
        status = jnp.where(~finite, 3, jnp.where(small_n, 0, jnp.where(ok, 1, 2)))
        it = c.it + (ph == _NEWTON)
        n_warm = c.n_warm + (ph == _WARM)
        # Levenberg–Marquardt: damp more after a heavily cut step, less after a full one
        mu = jnp.where(t >= 1.0, 0.25 * c.mu,
                       jnp.where(t < 0.25, jnp.maximum(4 * c.mu, 1e-3), c.mu))
        mu = jnp.where(mu < 1e-8, 0.0, mu)
        # the next phase
        after_start = jnp.where(iterate, jnp.where(opts.warm_v > 0, _WARM, _NEWTON), _FINAL)
        nxt = jnp.select(
            [ph == _INIT, ph == _START, ph == _WARM, ph == _NEWTON],
            [jnp.where(retry, _INIT, jnp.where(use_start, _START, after_start)),
             after_start,
             jnp.where(small_w | ~ok | (n_warm >= opts.warm_v), _NEWTON, _WARM),
             jnp.where(small_n | ~ok | ~finite | (it >= opts.maxiter), _FINAL, _NEWTON)],
            _DONE)
        newton_ph = ph == _NEWTON
        if with_progress:  # a host callback (never a print inside jit)
            jax.debug.callback(_report, ph, it, fx_new, gnorm)
        i32 = lambda x: jnp.asarray(x, jnp.int32)  # noqa: E731
        return State(
            phase=i32(nxt), a=a, v=v, fx=fx_new, it=i32(it), n_warm=i32(n_warm),
            nfev=i32(c.nfev + jnp.where(searching, nls, 0)), ncg=i32(c.ncg + s.n_cg),
            mu=jnp.where(newton_ph, mu, c.mu).astype(dt),
            g_ref=jnp.where(newton_ph & (c.it == 0), gnorm, c.g_ref).astype(dt),
            status=i32(jnp.where(newton_ph, status, c.status)), fixed=c.fixed | retry,
            step=s)

    def result(c: State):
        sol = Solution(c.a, c.v, c.fx, c.step.gnorm, c.it + c.n_warm, c.status, c.n_warm,
                       c.nfev, c.ncg)
        return sol, c.step

    def solve(a0, v0, color, opts, a_shift, use_start, iterate, *args):
        c = lax.while_loop(lambda c: c.phase != _DONE,
                           lambda c: body(c, color, opts, a_shift, use_start, iterate, args),
                           _init_state(a0, v0, dense))
        return result(c)

    options = small_options() if dense else large_options()
    if with_progress:  # a host callback: not exportable
        return jax.jit(solve, compiler_options=options)
    return persistent_jit(solve, compiler_options=options)  # traced once per machine


def _init_state(a0, v0, dense: bool) -> State:
    """The loop's first State at (a0, v0)."""
    dt = a0.dtype
    k, r = v0.shape
    ka = a0.shape[0]
    p = ka + k * r if dense else 0

    def z(*shape, dtype=dt):
        return jnp.zeros(shape, dtype)

    i0 = z(dtype=jnp.int32)
    step = Step(z(ka), z(k, r), z(ka), z(k, r), z(), z(), z(), z(ka, ka), z(k, r, ka),
                z(k, r, r), z(0) if dense else z(k, r, ka), z(p, p), i0)
    return State(jnp.asarray(_INIT, jnp.int32), a0, v0, jnp.asarray(jnp.nan, dt), i0, i0, i0,
                 i0, z(), z(), jnp.ones((), jnp.int32), jnp.asarray(False), step)


# XLA options.  Small problems on CPU (_xla.small_options): XLA's classic elemental emitters
# rather than its newer MLIR fusion emitters, and no LLVM optimisation passes — a quarter of the
# compile time of the defaults (cbpp's fit_vb: 0.7 s instead of 3 s of CPU), and passes that
# cost a millisecond or so at a thousand rows.  Large problems, and other backends: XLA's
# defaults.


def newton(f: Callable, a0, v0, args=(), *, color=None, n_colors: int = 1, dense: bool = False,
           opts: NewtonOptions = NewtonOptions()) -> Solution:
    """Minimise ``f(a, v, *args)`` by line-searched modified Newton (:func:`newton_program`
    without a candidate start).  Traceable.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> f = lambda a, v: jnp.sum((a - 1.0) ** 2) + jnp.sum((v - a[0]) ** 2)
    >>> sol = newton(f, jnp.zeros(1), jnp.zeros((3, 1)))
    >>> sol.a.round(6).tolist(), int(sol.status)
    ([1.0], 0)
    """
    a0, v0 = jnp.asarray(a0), jnp.asarray(v0)
    if color is None:
        color = jnp.zeros(v0.shape[0], jnp.int32)
    solve = newton_program(f, dense, n_colors)
    return solve(a0, v0, color, opts, jnp.zeros_like(a0), False, True, *args)[0]
