"""Fitting a linear mixed model: bounded minimisation of the profiled deviance over θ, then the
estimates at θ̂ and the covariance of statsmodels' ψ.

All derivatives are JAX autodiff of the one profiled deviance (:mod:`bayesglmm.kernels.lmm`),
in two compiled programs per model structure: :func:`~bayesglmm.kernels.lmm.evaluate`
(``jax.value_and_grad``: d, ∇d and the estimates' maps) and
:func:`~bayesglmm.kernels.lmm.second_order` (``jax.hessian``: ∇²d, and the Hessian over ψ).
:mod:`.lmm_theta` minimises over θ.  An exact Hessian costs a fixed multiple of an evaluation
at any size (the Hessian program differentiates through the Cholesky pieces by the JVP rule of
:func:`~bayesglmm.linalg.cholesky.logdet_solve_inverse`: two m × m products per θ entry, where m
is the dense block of the random terms after the largest).  Where ``struct.m <=
HESSIAN_ONLY_MAX_M`` a Hessian costs about an evaluation: the default is a bound-constrained
Newton method that stops on the Newton decrement ``½ gᵀH⁻¹g``, and the Hessian program serves
the whole fit.  Above it the default is L-BFGS-B on the value and gradient (the evaluation
program), then Newton's method from where it stops: usually one Hessian, at θ̂, which certifies
the optimum.  The Hessian at θ̂ gives the covariance of ψ with the fit (within
``EAGER_COV_MAX_M`` and ``EAGER_COV_MAX_ENTRIES``, bounds of memory), so ``summary()`` compiles
and computes nothing; beyond them the default is L-BFGS-B alone, and the covariance of ψ is
formed on first request (``bse``, ``summary()``) by the same Hessian program.  The evaluation
at θ̂ gives ``t = [X y]ᵀV⁻¹[X y]`` (hence β̂, (XᵀV⁻¹X)⁻¹ and σ̂²) and the BLUP maps.  Nothing
here warns: the caller reads :class:`~.lmm_theta.ThetaFit` and decides.
"""

from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
import os
import sys
from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from ..design.crossprod import CrossProd, Structure
from ..linalg._blas import single_threaded_blas
from .lmm_theta import DECREMENT_TOL, Derivatives, ThetaFit, minimise_theta

__all__ = ["DECREMENT_TOL", "EAGER_COV_MAX_ENTRIES", "EAGER_COV_MAX_M", "HESSIAN_ONLY_MAX_M",
           "LMMFit", "ThetaFit", "default_method", "fit_lmm", "lmm_dtype", "minimise_theta",
           "moment_gammas", "psi_cov", "start_theta", "theta_scale"]
# (DECREMENT_TOL, ThetaFit, minimise_theta: from .lmm_theta)

# Largest dense block (rows m of the random terms other than the largest) for which the
# covariance of ψ is formed with the fit; above it it waits for its first use.  One exact
# Hessian costs a fixed multiple of one evaluation at any m (both O(m³): the factorisation, S⁻¹
# and per θ entry two m × m products, kernels.lmm.second_order), about five on the
# InstEval-shaped design (m = 1,126, n_θ = 3): a fraction of any fit.  The bounds were of
# memory while the Hessian batched its n_θ tangents (jax.jacfwd: n_θ m² entries per array, at
# most EAGER_COV_MAX_ENTRIES, 400 MB in float64); it now maps them one at a time (one m × m
# tangent per array), and n_θ m² bounds its time instead: 4 n_θ m³ flops of products, at most
# 8·10¹¹ at m = 4,000 (seconds on a 2-core machine).
EAGER_COV_MAX_M = 4000
EAGER_COV_MAX_ENTRIES = 50_000_000

# Largest dense block for which the Hessian program alone serves the whole fit (a Hessian
# costs about one evaluation there) and the default method is Newton's from the start.  Above
# it the default is L-BFGS-B on the evaluation program, then Newton's method from where it stops
# (usually one exact Hessian, that certifies the optimum and gives the covariance): on the
# InstEval-shaped design (m = 1,126, a Hessian about a dozen evaluations) 3.0–3.8 s of CPU warm
# against 4.0 s for Newton's method from the start.
HESSIAN_ONLY_MAX_M = 200


class LMMFit(NamedTuple):
    """Estimates at θ̂ (for the response as given to the cross-products)."""

    theta: np.ndarray  # (n_theta,) θ̂, diagonal entries below 1e-10 set to zero
    deviance: float  # d(θ̂) (ML) or d_R(θ̂) (REML)
    beta: np.ndarray  # (p,) β̂
    txx_inv: np.ndarray  # (p, p) (XᵀV⁻¹X)⁻¹, V relative to σ²
    sigma2: float  # σ̂²: r²_θ / (n − p) (REML) or r²_θ / n (ML)
    b1: np.ndarray  # (L₁, q₁) BLUPs of the largest term
    b2: np.ndarray  # (m,) BLUPs of the other terms, in cross-product order
    cov_psi: np.ndarray | None | Callable  # (n_ψ, n_ψ) inverse information of ψ, None where
    # it cannot be formed (a variance on the boundary), or a function computing it on demand
    optim: ThetaFit


class _Memo:
    """The last few results of ``fn`` by θ (the optimiser re-evaluates its final θ, and the fit
    needs the auxiliary outputs there)."""

    def __init__(self, fn, size=4):
        self.fn, self.size, self.memo = fn, size, {}
        self.calls = 0  # calls of fn (results not remembered)

    def has(self, theta) -> bool:
        return np.asarray(theta, np.float64).tobytes() in self.memo

    def __call__(self, theta):
        x = np.asarray(theta, np.float64)
        key = x.tobytes()
        if key not in self.memo:
            if len(self.memo) >= self.size:
                self.memo.pop(next(iter(self.memo)))
            self.memo[key] = self.fn(x)
            self.calls += 1
        return self.memo[key]


class _Engine:
    """θ → (d, ∇d), exact :class:`~.lmm_theta.Derivatives` and the estimates' maps, through
    the compiled programs of :mod:`bayesglmm.kernels.lmm`.

    With ``hessian_only`` (small structures, where a Hessian costs about an evaluation) every
    request goes to the Hessian program :func:`~bayesglmm.kernels.lmm.second_order`: a fit then
    traces and compiles one program.  Otherwise (d, ∇d) and the maps come from
    :func:`~bayesglmm.kernels.lmm.evaluate` and only Hessians from ``second_order``.
    """

    def __init__(self, cp: CrossProd, struct: Structure, reml: bool, dtype,
                 hessian_only: bool = False):
        import jax

        from ..kernels.lmm import programs, theta_to_psi

        evaluate, second_order = programs(cp, struct)
        # on the device once (device_put: jnp.asarray would compile a program per shape)
        cpj = jax.device_put(cp)
        self.hessian_only = hessian_only
        self.full = _Memo(lambda th: evaluate(th.astype(dtype), cpj, struct, reml))
        self.second = _Memo(lambda th: second_order(
            th.astype(dtype), theta_to_psi(th, struct, np.dtype(dtype).type), cpj, struct, reml))

    def __call__(self, theta):
        if self.hessian_only:
            return self.second(theta)[:2]
        dev, grad, _ = self.full(theta)
        return dev, grad

    def derivs(self, theta) -> Derivatives:
        value, grad, hess = self.second(theta)[:3]
        return Derivatives(float(value), np.asarray(grad, np.float64),
                           np.asarray(hess, np.float64))

    def psi_information(self, theta):
        """∇²_ψ ½d(θ(ψ)) at θ (see :func:`~bayesglmm.kernels.lmm.second_order`)."""
        return np.asarray(self.second(theta)[3], np.float64)

    def estimates(self, theta):
        """``(d, t, B1, B2)`` at θ: see :func:`~bayesglmm.kernels.lmm._factor`."""
        if self.hessian_only or self.second.has(theta):
            dev, _, _, _, (t, b1, b2) = self.second(theta)
        else:
            dev, _, (t, b1, b2) = self.full(theta)
        return dev, t, b1, b2


# accelerator plugins JAX would load (modules, the namespace of PJRT plugins, libtpu)
_PLUGIN_MODULES = ("jax_plugins", "jax_cuda12_plugin", "jax_cuda13_plugin", "jax_rocm60_plugin",
                   "jax_rocm7_plugin", "libtpu")


def _cpu_backend() -> bool:
    """Whether JAX computes on the CPU.  Without importing JAX when it is not imported yet and
    no accelerator plugin is installed (JAX then has the CPU backend only): building a model
    needs no JAX.  Anything else (a plugin, ``JAX_PLATFORMS`` naming another platform) asks JAX.
    """
    if "jax" not in sys.modules:
        plat = os.environ.get("JAX_PLATFORMS", "").strip().lower()
        if plat == "cpu":
            return True
        if not plat and not any(importlib.util.find_spec(m) for m in _PLUGIN_MODULES) \
                and not importlib.metadata.entry_points(group="jax_plugins"):
            return True
    import jax

    return jax.default_backend() == "cpu"


def lmm_dtype(dtype=None) -> np.dtype:
    """:func:`bayesglmm._precision.resolve_dtype`, without importing JAX for the default on CPU."""
    if dtype is None and not os.environ.get("BAYESGLMM_DTYPE", "").strip() and _cpu_backend():
        return np.dtype(np.float64)
    if dtype is not None and np.dtype(dtype) in (np.dtype(np.float32), np.dtype(np.float64)):
        return np.dtype(dtype)
    from .._precision import resolve_dtype  # the default off CPU, and the error message

    return resolve_dtype(dtype)


def _eager(struct: Structure) -> bool:
    """Whether the covariance of ψ (one exact Hessian) is formed with the fit."""
    return struct.m <= EAGER_COV_MAX_M and struct.n_theta * struct.m ** 2 <= EAGER_COV_MAX_ENTRIES


def default_method(struct: Structure) -> str:
    """``"newton"`` where a Hessian costs about an evaluation (``struct.m <=
    HESSIAN_ONLY_MAX_M``), ``"lbfgs"`` (L-BFGS-B, then Newton) where the covariance is formed
    with the fit (``struct.m <= EAGER_COV_MAX_M``, ``n_θ m² <= EAGER_COV_MAX_ENTRIES``), else
    ``"lbfgs-only"`` (no Hessian in the fit)."""
    if not _eager(struct):
        return "lbfgs-only"
    return "newton" if struct.m <= HESSIAN_ONLY_MAX_M else "lbfgs"


def theta_scale(cp: CrossProd, struct: Structure) -> np.ndarray:
    """L-BFGS-B's diagonal preconditioner (:func:`~.lmm_theta.minimise_theta`'s ``scale``):
    per θ entry ``√max(h, 1)``, h an estimate of ``∂²d/∂θ²`` near θ̂ from the cross-products
    alone.

    For one scalar term with relative variance γ = θ² and per level ``n_l`` (``Σ z²`` over
    the level's rows), the expected information of γ in a one-way layout is
    ``½ Σ_l (n_l / (1 + n_l γ))²`` (V_l = σ²(I + γ z zᵀ)), so ``E ∂²d/∂γ² = Σ_l (n_l / (1 +
    n_l γ))²`` for the deviance d = −2ℓ, and ``∂²d/∂θ² = 4γ ∂²d/∂γ²`` at a stationary point.
    γ is the moment estimate of :func:`moment_gammas` (1 where it has none), clipped to
    [0.01, 100]; terms sharing θ add up.  On the InstEval-shaped design (crossed, m = 1,126)
    the estimates are within 2–32 % of the exact Hessian's diagonal at θ̂, and L-BFGS-B takes
    8 evaluations instead of 11 (crossed random intercepts of 2,000 × 300 levels: 6 instead of
    8).  Only the optimiser's path depends on it, not the optimum.

    All ones (no preconditioning) where a term is a vector (q > 1): there the start λ = I is
    far from θ̂, and on simulated crossed designs with a random slope a preconditioned
    L-BFGS-B (row i's estimate for an entry λ_ij, at the start's γ or a moment one) took
    20–33 evaluations against 19–21 for the plain one.
    """
    if any(q > 1 for q in struct.q):
        return np.ones(struct.n_theta)
    h = np.zeros(struct.n_theta)
    for (n, gamma), ti in zip(moment_gammas(cp, struct), struct.theta_index):
        gamma = 1.0 if gamma is None else float(np.clip(gamma, 0.01, 100.0))
        h[ti[0]] += 4.0 * gamma * float(np.sum((n / (1.0 + n * gamma)) ** 2))
    return np.sqrt(np.maximum(np.where(np.isfinite(h), h, 1.0), 1.0))


def start_theta(cp: CrossProd, struct: Structure, theta0) -> np.ndarray:
    """The fits' start: ``theta0`` (λ = I, lme4's) with each scalar term's θ_t = √γ_t, its
    moment estimate (:func:`moment_gammas`), clipped to [0.01, 10] (off θ_t = 0, where the
    deviance is stationary in θ_t: it is even in it); a θ shared by several terms takes the
    first's (cross-product order, the largest term first).  A start nearer the optimum saves
    evaluations on large crossed designs; the optimum itself does not depend on it.  The
    floor was 0.1 until it held small terms away from their optimum (the InstEval shape's 14
    departments, θ̂ = 0.059 from 0.082: 7 → 6 evaluations; on 28 simulated crossed fits, two
    and three factors, REML and ML, true variances from 0 to 1: 272 → 200 evaluations in all,
    the same optima to 1e-9)."""
    theta = np.array(theta0, np.float64)
    done: set = set()
    for (_, gamma), ti in zip(moment_gammas(cp, struct), struct.theta_index):
        k = int(ti[0])
        if gamma is not None and k not in done:  # (None for a vector term)
            theta[k] = float(np.clip(np.sqrt(gamma), 0.01, 10.0))
            done.add(k)
    return theta


def moment_gammas(cp: CrossProd, struct: Structure) -> list:
    """Per term (cross-product order): ``(n, γ)``, for a scalar term the per-level sums
    ``n_l = Σ z²`` and a moment estimate γ ≥ 0 of its relative variance from the OLS
    residuals r — the spread of the per-level coefficients ``Σ z r / n_l`` less its sampling
    part, over σ² (the residual variance less the terms' shares, at least a tenth of it) —
    or None where there is no spread to measure; ``(None, None)`` for a vector term.  From
    the cross-products alone: O(levels), not O(rows).  Checked against the same estimate from
    the rows (tests/fits/test_lmm.py)."""
    xy = np.asarray(cp.xy, np.float64)
    p = xy.shape[0] - 1
    rows = max(float(np.asarray(cp.n)), 1.0)
    beta = np.linalg.lstsq(xy[:p, :p], xy[:p, p], rcond=None)[0] if p else np.zeros(0)
    coef = np.concatenate([-beta, [1.0]])
    v = float(coef @ xy @ coef) / rows  # residual variance
    diag22, zr2 = np.diagonal(np.asarray(cp.a22)), np.asarray(cp.b2) @ coef
    sums: list = [(np.asarray(cp.d11)[:, 0, 0], np.asarray(cp.b1)[:, 0, :] @ coef)
                  if struct.q[0] == 1 else (None, None)]
    off = 0
    for L, q in zip(struct.levels[1:], struct.q[1:]):
        sums.append((diag22[off : off + L], zr2[off : off + L]) if q == 1 else (None, None))
        off += L * q
    est: list = []
    for n, zr in sums:
        if n is None or v <= 0 or not np.any(n > 0):
            est.append(None)
            continue
        w, zw = n[n > 0], zr[n > 0]
        est.append(max(float(np.sum(zw**2 / w) / np.sum(w))
                       - v * float(np.sum(w) / np.sum(w**2)), 0.0))
    s2 = max(v - sum(e * float(np.sum(n)) / rows for e, (n, _) in zip(est, sums) if e),
             0.1 * v)
    return [(n, None if e is None else e / s2) for e, (n, _) in zip(est, sums)]


def _boundary(theta, struct: Structure, dtype) -> bool:
    """Whether ψ at θ has a variance on (or below) zero, or is not finite."""
    from ..kernels.lmm import psi_blocks, theta_to_psi

    psi0 = theta_to_psi(theta, struct, np.dtype(dtype).type)
    is_var = np.array([i == j for _, pos in psi_blocks(struct) for i, j in pos])
    return not np.all(np.isfinite(psi0)) or bool(np.any(psi0[is_var] <= 0))


def _invert(h):
    """The inverse of the symmetrised ψ-information, or None where it is not finite/singular."""
    h = 0.5 * (h + h.T)
    if not np.all(np.isfinite(h)):
        return None
    try:
        return np.linalg.inv(h)
    except np.linalg.LinAlgError:
        return None


def psi_cov(theta, cp: CrossProd, struct: Structure, reml: bool, dtype):
    """Inverse Hessian of the profiled log-likelihood over ψ (statsmodels' ``cov_re / scale``
    per block, lower triangle), from the autodiff Hessian of
    :func:`~bayesglmm.kernels.lmm.second_order` at θ.  The deferred covariance of large models
    (a picklable ``functools.partial`` of this, holding host arrays).

    Returns ``None`` where it cannot be formed or inverted, e.g. with a variance on the
    boundary.
    """
    if _boundary(theta, struct, dtype):
        return None
    from .._precision import precision

    with precision(dtype), single_threaded_blas():
        return _invert(_Engine(cp, struct, reml, dtype).psi_information(theta))


def fit_lmm(cp: CrossProd, struct: Structure, theta0, lower, diag, reml: bool, dtype,
            maxiter: int = 1000, method: str = "auto") -> LMMFit:
    """Fit θ by :func:`minimise_theta` and form the estimates at θ̂.

    Parameters
    ----------
    cp, struct : the cross-products (host arrays) and their static structure
    theta0 : (n_theta,) start
    lower : (n_theta,) bounds (0 for diagonal entries of λ, ``-inf`` otherwise)
    diag : int array, the θ indices of diagonal entries of λ
    reml : bool
    dtype : float32 or float64
    maxiter : int
    method : ``"auto"`` (:func:`default_method`), ``"newton"``, ``"lbfgs"`` or ``"lbfgs-only"``
        (see :func:`minimise_theta`)

    Returns
    -------
    LMMFit
        With the covariance of ψ from the exact Hessian at θ̂: computed with the fit within the
        memory bounds (``EAGER_COV_MAX_M``, ``EAGER_COV_MAX_ENTRIES``), else deferred to its
        first use.
    """
    from .._precision import precision

    if method == "auto":
        method = default_method(struct)
    eager = _eager(struct)
    with precision(dtype), single_threaded_blas():
        # small structures: one program (the Hessian one) for the whole fit; L-BFGS-B alone
        # needs the value program, and the Hessian one at its end for the covariance
        engine = _Engine(cp, struct, reml, dtype, hessian_only=struct.m <= HESSIAN_ONLY_MAX_M
                         and method != "lbfgs-only")
        f64 = dtype == np.float64
        optim = minimise_theta(engine, engine.derivs if method != "lbfgs-only" or eager else None,
                               theta0, lower, method=method, maxiter=maxiter,
                               gtol=1e-5 if f64 else 1e-2,
                               decrement_tol=DECREMENT_TOL if f64 else 1e-3,
                               f_tol=1e-12 if f64 else 1e-6,
                               scale=theta_scale(cp, struct))
        # the compiled programs' calls, each θ once (minimise_theta cannot tell which of its
        # requests the memos served: it counts one Hessian more where the Hessian's program
        # served L-BFGS-B's last evaluation)
        optim = optim._replace(n_evals=engine.full.calls + engine.second.calls)
        theta = optim.theta.copy()
        theta[diag] = np.where(theta[diag] < 1e-10, 0.0, theta[diag])
        dev, t, b1k, b2k = engine.estimates(theta)
        if _boundary(theta, struct, dtype):
            cov = None
        elif eager:  # at the Hessian the optimiser ended on, where θ̂ is that θ
            cov = _invert(engine.psi_information(theta))
        else:  # deferred: a picklable callable holding the host arrays
            cov = functools.partial(psi_cov, theta, cp, struct, reml, dtype)
        # β̂, (XᵀV⁻¹X)⁻¹, σ̂² from t = [X y]ᵀV⁻¹[X y] = [[R_X, 0], [c_βᵀ, r_θ]] [[R_X, 0], [c_βᵀ, r_θ]]ᵀ
        # (inside the single-threaded context: waking OpenBLAS's threads costs milliseconds)
        p = t.shape[0] - 1
        t = np.asarray(t, np.float64)
        r = np.linalg.cholesky(t)
        rx_inv = np.linalg.solve(r[:p, :p], np.eye(p))  # R_X⁻¹ (p × p, p = fixed effects)
        txx_inv = rx_inv.T @ rx_inv
        beta = rx_inv.T @ r[p, :p]
        n = int(cp.n)  # rows
        sigma2 = float(r[p, p] ** 2) / (n - p if reml else n)  # r²_θ / ν
        coef = np.concatenate([-beta, [1.0]])  # b = B [−β̂; 1]
        b1 = np.asarray(b1k, np.float64) @ coef
        b2 = np.asarray(b2k, np.float64) @ coef
    return LMMFit(theta, float(dev), beta, txx_inv, sigma2, b1, b2, cov, optim)
