"""Out-of-core mean-field variational Bayes: ``fit_vb`` over minibatches streamed from disk.

The ELBO of kernels.glmm (``make_elbo``) is a sum over rows plus terms over the parameters:

    ELBO(a, v) = Σ_b D_b(a, v) + P(a, v),
    D_b = Σ_{i ∈ batch b} E_q[loglik_i]           (kernels.glmm.predictor_moments, the family's
                                                    expected_loglik: make_elbo's data term)
    P   = kernels.glmm.elbo_prior_entropy          (over all k_vc levels, every step)

in the blocks of fits.vb: a = (fe, vcp means, fe, vcp log-SDs), v = (vc mean, vc log-SD)
of shape (k_vc, 2).  The fit runs in two phases, each a loop over the batches on the host
with one compiled program per phase for the fixed batch shape (design.stream pads every batch
to B rows with inert rows):

1. **Stochastic phase** (``epochs``): Adam (optax) on −(K·D_b + P), K the number of batches
   per epoch — an unbiased estimate of −ELBO, since each epoch visits every batch once — with
   the step size decaying by ``decay`` per epoch, the row groups in a new random order each
   epoch, and the iterates of the last epoch averaged (Polyak–Ruppert).  Gradients by
   ``jax.grad``.  The log-SDs start at the mean-field fixed point sd_j = H_jj^(-1/2) of the
   first batch's curvature (as fits.vb.sd_start), the means at 0.
2. **Full passes** (at most ``max_passes``): each pass streams every batch once and sums the
   exact gradient and Hessian blocks of −ELBO (solvers.newton_step.structured_blocks, all by
   autodiff: H_aa, H_va and the 2 × 2 diagonal blocks of H_vv), then takes the Newton step
   by the Schur complement onto a (solvers.newton_step's, with |S| for S).  A step whose
   full-data objective (the next pass's) does not decrease is halved.  With several crossed
   grouping factors the levels of the smaller ones (at most ``SMALL_MAX``) join the small
   block (:func:`split_levels`), so the step stays exact; with more, H_vv's coupling between
   factors is left out (block-Jacobi: a descent direction, linear convergence).

Stop rule: converged when a Newton step's largest component (means and log-SDs) is at most
``tol`` (1e-6 in float64, 1e-3 in float32); the full-data gradient's norm is reported.
Near the optimum Newton converges quadratically, so the fixed-effect means are then within
about ``tol`` of the full-data optimum of the in-memory ``fit_vb`` (same ELBO, same optimum).  Status 1 after
``max_passes`` passes, 2 when 20 halvings fail to decrease the objective.

Memory: one batch (B rows) and O(k_vc · k_a) for H_va — never the n rows.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from .._precision import precision
from ..linalg._blas import single_threaded_blas
from ..design.ellpack import REDesign
from ..families import Family
from ..kernels.glmm import Data, Prior, elbo_prior_entropy, predictor_moments
from ..progress import report
from ..quadrature import Rule
from ..solvers import Solution
from ..solvers.newton_step import _schur_step, structured_blocks
from .vb import split_vb

__all__ = ["SMALL_MAX", "StreamOptions", "StreamVBFit", "data_term", "fit_vb_stream",
           "prior_term", "split_levels"]

SMALL_MAX = 256  # levels of the smaller crossed factors moved into the small block, at most


class StreamOptions(NamedTuple):
    epochs: int = 2  # stochastic (Adam) epochs before the full passes
    learning_rate: float = 0.1  # Adam's step size in the first epoch
    decay: float = 0.3  # ... multiplied by this each epoch
    max_passes: int = 30  # full Newton passes at most
    tol: float | None = None  # converged when a Newton step's ∞-norm is at most tol
    #                           (None: 1e-6 in float64, 1e-3 in float32)


class StreamVBFit(NamedTuple):
    """Result of :func:`fit_vb_stream` (numpy, float64)."""

    solution: Solution  # a, v as fits.vb's; value −ELBO; n_iter full passes
    params: np.ndarray  # (p,) posterior means (fe, vcp, vc)
    variances: np.ndarray  # (p,) posterior variances
    x: np.ndarray  # (2p,) means then log-SDs
    svi_params: np.ndarray  # (p,) the means after the stochastic phase (before the passes)
    n_epochs: int  # stochastic epochs run
    n_steps: int  # stochastic steps run


def _data(batch, ident) -> Data:
    """kernels.glmm.Data of a design.stream.StreamBatch (const unused by the ELBO)."""
    return Data(batch.y, batch.X, REDesign(batch.cols, batch.vals), ident, batch.n_trials,
                batch.weights, batch.offset, jnp.zeros((), batch.y.dtype))


def data_term(family: Family, rule: Rule):
    """``D(a, v, batch, ident) = −Σ_batch E_q[loglik]``: make_elbo's data term, negated."""

    def f(a, v, batch, ident):
        data = _data(batch, ident)
        mean, sd = split_vb(a, v, data.X.shape[1])
        tm, tv = predictor_moments(mean, sd, data)
        return -jnp.sum(family.expected_loglik(data.y, tm, tv, data.n_trials, data.weights,
                                               rule))

    return f


def prior_term(a, v, ident, prior: Prior, k_fep: int):
    """``P(a, v) = −elbo_prior_entropy``: the ELBO's terms over the parameters, negated."""
    mean, sd = split_vb(a, v, k_fep)
    stub = Data(None, None, None, ident, None, None, None, None)
    return -elbo_prior_entropy(mean, sd, stub, prior)


@functools.cache
def _programs(family: Family, rule: Rule, k_fep: int, n_colors: int):
    """The jitted programs of one family, rule and width (compiled per batch shape)."""
    D = data_term(family, rule)
    opt = optax.scale_by_adam()

    def P(a, v, ident, prior):
        return prior_term(a, v, ident, prior, k_fep)

    @jax.jit
    def svi_step(a, v, state, avg, w_avg, lr, batch, ident, prior, scale):
        # one Adam step of size lr on −(K·D_b + P); avg ← running mean of the iterates
        def loss(x):
            return scale * D(x[0], x[1], batch, ident) + P(x[0], x[1], ident, prior)

        val, g = jax.value_and_grad(loss)((a, v))
        upd, state = opt.update(g, state, (a, v))
        a, v = optax.apply_updates((a, v), jax.tree.map(lambda u: -lr * u, upd))
        avg = jax.tree.map(lambda m, x: m + w_avg * (x - m), avg, (a, v))
        return a, v, state, avg, val

    Dx, Px = _extended(D), _extended(P)

    @jax.jit
    def blocks(ae, vb, color, big, small, batch, ident):
        # value, gradient and Hessian blocks of D_b (solvers.newton_step.structured_blocks)
        args = (big, small, batch, ident)
        out = structured_blocks(Dx, ae, vb, args, color, n_colors)[:5]
        return (Dx(ae, vb, *args),) + out

    @jax.jit
    def prior_blocks(ae, vb, color, big, small, ident, prior):
        args = (big, small, ident, prior)
        out = structured_blocks(Px, ae, vb, args, color, n_colors)[:5]
        return (Px(ae, vb, *args),) + out

    @jax.jit
    def add(acc, new):
        return jax.tree.map(jnp.add, acc, new)

    @jax.jit
    def direction(ga, gv, Haa, Hva, blk):
        # the Newton step by the Schur complement; several colours: H_vv ≈ its diagonal blocks
        da, dv, _, _ = _schur_step(ga, gv, Haa, Hva, blk, None, 1, 0.0, 0, 0.0, None, None)
        return da, dv

    return opt, svi_step, blocks, prior_blocks, add, direction


def _extended(f):
    """f(a, v, ...) as a function of ``ae = (a, v[small].ravel())`` and ``vb = v[big]``: the
    levels of the smaller crossed factors join the small block, so that the large block's
    levels (one colour) never share a row and H_vv restricted to them is block-diagonal."""

    def g(ae, vb, big, small, *args):
        ka = ae.shape[0] - 2 * small.shape[0]
        v = jnp.zeros((big.shape[0] + small.shape[0], 2), ae.dtype).at[big].set(vb)
        v = v.at[small].set(ae[ka:].reshape(-1, 2))
        return f(ae[:ka], v, *args)

    return g


def split_levels(color: np.ndarray, n_colors: int, small_max: int = SMALL_MAX):
    """``(big, small, color, n_colors)`` for the passes: the levels of the largest colour stay
    in the large block and the others join the small block when they are at most
    ``small_max``; otherwise every level stays (block-Jacobi over the colours)."""
    color = np.asarray(color)
    big_c = int(np.argmax(np.bincount(color, minlength=n_colors))) if len(color) else 0
    small = np.flatnonzero(color != big_c)
    if n_colors == 1 or len(small) > small_max:
        return np.arange(len(color)), small[:0], color, n_colors
    return np.flatnonzero(color == big_c), small, np.zeros(len(color) - len(small), int), 1


def _put(batch, dt):
    return jax.tree.map(lambda x: jax.device_put(np.asarray(
        x, np.int32 if np.asarray(x).dtype.kind == "i" else dt)), batch)


def fit_vb_stream(family: Family, rule: Rule, source, fe_p: float, vcp_p: float, *,
                  ident: np.ndarray, color: np.ndarray, n_colors: int, k_fep: int,
                  k_vcp: int, rows: int, rng: np.random.Generator, dtype,
                  opts: StreamOptions = StreamOptions(), progress: bool = False) -> StreamVBFit:
    """Maximise the full-data mean-field ELBO over minibatches of ``source``.

    Parameters
    ----------
    family, rule : the family and the ELBO's quadrature rule
    source : design.stream.ParquetSource (``batches(rows, order)`` and ``n_batches(rows)``)
    fe_p, vcp_p : prior SDs of the fixed effects and of the log-SDs (kernels.glmm.Prior)
    ident, color, n_colors : (k_vc,) variance component and colour of each random effect
    k_fep, k_vcp : numbers of fixed effects and variance parameters
    rows : int, the batch size B (every batch padded to it)
    rng : numpy Generator, for the row-group order of each epoch and the start
    dtype : float32 or float64
    opts : StreamOptions
    progress : report each epoch and pass (bayesglmm.progress; the caller activates it)
    """
    dt = np.dtype(dtype)
    tol = opts.tol if opts.tol is not None else (1e-6 if dt == np.float64 else 1e-3)
    rise = 10 * float(np.finfo(dt).eps)  # a relative rise of f beyond rounding rejects a step
    k_vc, ka = len(ident), k_fep + k_vcp
    K = source.n_batches(rows)
    n_groups = len(source.row_group_rows)
    big, small, pcol, pcolors = split_levels(color, n_colors)
    opt, svi_step, blocks, prior_blocks, add, direction = _programs(
        family, rule, k_fep, int(pcolors))
    gnorm = float("nan")
    with precision(dt), single_threaded_blas():
        jid = jax.device_put(np.asarray(ident, np.int32))
        jbig, jsmall, jpcol = (jax.device_put(np.asarray(x, np.int32))
                               for x in (big, small, pcol))
        prior = Prior(jnp.asarray(fe_p, dt), jnp.asarray(vcp_p, dt))

        def to_ext(a, v):  # the passes' blocks (_extended)
            return jnp.concatenate([a, v[jsmall].ravel()]), v[jbig]

        def from_ext(ae, vb):
            v = jnp.zeros((k_vc, 2), dt).at[jbig].set(vb)
            return ae[:2 * ka], v.at[jsmall].set(ae[2 * ka:].reshape(-1, 2))

        def full_pass(ae, vb, first_only=False):
            acc = prior_blocks(ae, vb, jpcol, jbig, jsmall, jid, prior)
            for batch, _ in source.batches(rows):
                new = blocks(ae, vb, jpcol, jbig, jsmall, _put(batch, dt), jid)
                if first_only:  # the start: the first batch's curvature, scaled by K
                    return add(acc, jax.tree.map(lambda x: K * x, new))
                acc = add(acc, new)
            return acc

        ae, vb = to_ext(jnp.zeros(2 * ka, dt).at[k_fep:ka].set(-1.0),  # vcp means: floor
                        jnp.zeros((k_vc, 2), dt))
        _, _, _, Haa, _, blk = full_pass(ae, vb, first_only=True)
        a, v = from_ext(*_sd_start(ae, vb, Haa, blk, ka))
        svi_mean = None
        n_steps = 0
        if opts.epochs > 0 and K > 0:
            state = opt.init((a, v))
            scale = jnp.asarray(K, dt)
            for epoch in range(opts.epochs):
                lr = jnp.asarray(opts.learning_rate * opts.decay**epoch, dt)
                avg, t = (a, v), 0
                last = None
                for batch, _ in source.batches(rows, rng.permutation(n_groups)):
                    t += 1
                    a, v, state, avg, last = svi_step(a, v, state, avg, jnp.asarray(1.0 / t, dt),
                                                      lr, _put(batch, dt), jid, prior, scale)
                    n_steps += 1
                if progress:
                    report(epoch, float(last), float("nan"))
            a, v = avg  # Polyak–Ruppert: the mean of the last epoch's iterates
            svi_mean = np.concatenate([np.asarray(a[:ka]), np.asarray(v[:, 0])])
        # full passes: Newton by the Schur complement, halving steps that do not decrease
        ae, vb = to_ext(a, v)
        status, n_pass, t_step = 1, 0, 1.0
        f_old, step = None, None
        ae0, vb0 = ae, vb
        while n_pass < opts.max_passes:
            f, ga, gv, Haa, Hva, blk = full_pass(ae, vb)
            n_pass += 1
            f = float(f)
            gnorm = float(jnp.sqrt(jnp.sum(ga**2) + jnp.sum(gv**2)))
            if progress:
                report(opts.epochs + n_pass, f, gnorm)
            if not np.isfinite(f) or (f_old is not None and f > f_old + rise * abs(f_old)):
                if step is None or t_step < 2.0**-20:
                    status = 3 if not np.isfinite(f) else 2
                    ae, vb = ae0, vb0
                    break
                t_step *= 0.5  # back from (ae0, vb0) by half the step
                ae, vb = ae0 + t_step * step[0], vb0 + t_step * step[1]
                continue
            da, dv = direction(ga, gv, Haa, Hva, blk)
            size = max(float(jnp.max(jnp.abs(da))), float(jnp.max(jnp.abs(dv), initial=0.0)))
            f_old, ae0, vb0, step, t_step = f, ae, vb, (da, dv), 1.0
            ae, vb = ae + da, vb + dv
            if size <= tol:
                status = 0
                break
        a, v = (np.asarray(x, np.float64) for x in from_ext(ae, vb))
    sol = Solution(a, v, np.float64(f_old if f_old is not None else np.nan), np.float64(gnorm),
                   n_pass, status)
    params = np.concatenate([a[:ka], v[:, 0]])
    log_sd = np.concatenate([a[ka:], v[:, 1]])
    return StreamVBFit(sol, params, np.exp(2 * log_sd), np.concatenate([params, log_sd]),
                       params if svi_mean is None else svi_mean, opts.epochs, n_steps)


def _sd_start(ae, vb, Haa, blk, ka):
    """fits.vb.sd_start in the passes' blocks: each log-SD at −½·log of its mean's curvature
    (where positive).  ae = (fe, vcp means, their log-SDs, (mean, log-SD) of each small
    level), vb (k, 2)."""
    h = jnp.diag(Haa)
    pos = lambda x: (x > 0) & jnp.isfinite(x)  # noqa: E731
    ha, hs, hv = h[:ka], h[2 * ka::2], blk[:, 0, 0]
    ae = ae.at[ka:2 * ka].set(jnp.where(pos(ha), -0.5 * jnp.log(ha), ae[ka:2 * ka]))
    ae = ae.at[2 * ka + 1::2].set(jnp.where(pos(hs), -0.5 * jnp.log(hs), ae[2 * ka + 1::2]))
    return ae, vb.at[:, 1].set(jnp.where(pos(hv), -0.5 * jnp.log(hv), vb[:, 1]))
