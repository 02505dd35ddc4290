"""The integrated (INLA-style) posterior: vcp integrated over a node design.

Around a ``priors=True`` :func:`fits.laplace.fit_laplace` fit, with m, Σ the mode and the vcp
block of its covariance and Σ = LLᵀ, the nodes are vcp_k = m + L·z_k for the design
(z_k, w_k) of :func:`fits.nodes.node_design` (Gauss–Hermite for one or two variance
parameters, INLA's central composite design above).  When log p̃ at the CCD's points departs
from the mode's Gaussian by more than ``CCD_MISFIT`` (:func:`fits.nodes.gaussian_misfit`: a
skewed or curved vcp posterior, as grouseticks'), the default design replaces it by the
lattice of :mod:`fits.lattice`, which follows p̃ (equal weights, π_k ∝ p̃(vcp_k | y)).  At
each node the Laplace log posterior
J(fe, vcp_k) is maximised in fe (fe_k, C_k = (−∇²_fe J)⁻¹, with J's fe Hessian there as
below), and

    log p̃(vcp_k | y) = J(fe_k, vcp_k) + (k_fep/2)·log 2π − ½ log det C_k⁻¹ [+ δ(θ_k)],
    π_k ∝ w_k · p̃(vcp_k | y) / N(z_k; 0, I)             (importance-corrected weights)

with δ the second-order correction of the Laplace approximation of the integral over the
random effects (kernels.laplace_correction: fourth and squared third derivatives of the
rows' loglik, leverages), added on the product Gauss–Hermite grids, the lattice and a
central composite design that fits p̃ (its misfit within ``CCD_MISFIT``), left out on one
that misfits (:func:`uses_correction`).

Moments mix by the law of total variance: E[fe] = Σ π_k fe_k,
Cov(fe) = Σ π_k (C_k + (fe_k − E fe)(fe_k − E fe)ᵀ), likewise vc with Var(vc | vcp_k) =
diag(Λ H_uu⁻¹ Λᵀ) + diag(J_fe C_k J_feᵀ) (J_fe = dvc*/dfe, k_vc × k_fep), and vcp's moments
from the weighted nodes.  fe's mean at a node has a third-order (skewness) correction,
E[fe | vcp] ≈ fe_k + ½ C_k T, T_i = Σ_jl (C_0)_jl ∂³ℓ_j/∂fe_i∂fe_j∂fe_l, taken once, at the
mode, from the third derivatives of the joint profile ℓ_j (fits.joint: J less its
log-determinant term) along the k_fep columns of a square root of C_0, fe's conditional
covariance there (fits.joint.skew_vector), and used at every node: the third derivatives and
C vary slowly with vcp, and the correction itself is second order.  (Against J's whole
third-derivative tensor contracted with each node's own C_k, which cost crossed-binary 0.18 s
a fit against 0.015 s: the largest fe mean error against NUTS 0.011 → 0.013 posterior SD on
cbpp, 0.017 → 0.017 on grouseticks; SDs within 0.001.)  vc's mean at a node has the same
third-order correction of its conditional mode (:func:`_node_kernel`, independent terms):
without it the skewed binomial conditionals of cbpp put every integrated vc mean ≈ 0.1
posterior SD above NUTS's, with it within 0.03 (docs/which_fit.md).

J's fe Hessian at a node.  J's exact Hessian (the fit's ``vgh``) spends most of its time on
the second derivatives of −½ log det H_uu; at the nodes it is replaced by the Hessian rows of
the joint profile ℓ_j (the Schur complement of the joint (fe, u) Hessian, one solve per
direction: fits.joint.node_hessian_kernel) plus the constant remainder J − ℓ_j measured
exactly at the mode, while J's value and gradient stay exact, so each node's fe* is J's
conditional mode.  On cbpp, grouseticks' CCD and crossed-binary the log-determinants of the
approximate and exact C_k⁻¹ differ by at most 0.01, 0.01 and 0.04 across the nodes (0.005–
0.01 weighted by π_k) and the conditional SDs by at most 2 % (0.2 % weighted); against NUTS
the integrated estimates moved by at most 0.001 posterior SD.  ``exact_nodes=True`` uses the
exact Hessian; so does a node where the approximation is not positive definite.

Cost.  The nodes are solved one after another from the host with the programs that found the
mode (fits.laplace.laplace_kernels: the inner solves with the same H_uu factorisation —
diagonal, Schur complement or dense — as the mode finding) and fits.joint's, each
warm-started from the mode by u*(θ_k) ≈ u*(θ̂) + du*/dθ·(θ_k − θ̂) and
fe_k ≈ fe^ + Σ_fe,vcp Σ⁻¹ (vcp_k − m); a node stops at a Newton decrement ≤
``NODE_DECREMENT`` and takes its last step without evaluating, so it typically costs one
inner solve and one evaluation of J's gradient with ℓ_j's Hessian (crossed-binary: 2.7 and
2.4 ms, where J's exact Hessian takes 7 ms).  On a fixed design (the product grids and the
CCD) the two are one program (:func:`_first_kernel`, its inner solve to ``NODE_INNER_TOL``):
crossed-binary's and four crossed factors' integrated fits 2.9–3.5× their mode fits → 2.7–2.8×
(interleaved, in one process).  Memory is that of one evaluation of the fit
plus O(N·(k_vc + k_fep²)) for the node summaries.  fe's skewness correction is one more
program, run once; vc's summaries, its skewness shift and δ come from one program per node
(:func:`_node_kernel`: the leverages and diag(H_uu⁻¹) from the node's factor, as the fit's
log-determinant derivative forms them, and one solve), never an n × n or dense n × k_vc
matrix.
"""

from __future__ import annotations

import functools
import warnings
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .._export import persistent_jit
from .._precision import precision
from ..linalg._blas import single_threaded_blas
from .._xla import large_options, light_options
from ..budgets import lattice_budget
from ..covariance import lam_u
from ..exceptions import IntegrationWarning
from ..families import Family
from ..kernels.glmm import Data, Prior
from ..kernels.h_uu import inverse_entries, var_vc
from ..kernels.laplace_correction import correction_terms
from ..kernels.marginal import objective
from ..solvers.projected_newton import ProjectedNewtonOptions, projected_newton_host
from .joint import joint_third_kernel, node_hessian, node_hessian_kernel, skew_vector
from .lattice import lattice_nodes
from .laplace import (LaplaceFit, LaplaceOptions, default_options, laplace_kernels,
                      small_programs, vc_jacobian)
from .nodes import MAX_DIM, gaussian_misfit, is_product_grid, node_design

__all__ = ["CCD_MISFIT", "DESIGNS", "IntegratedFit", "check_integrable", "integrate_vcp",
           "uses_correction"]

_LOG_2PI = float(np.log(2 * np.pi))
# the fe | vcp Newton solves stop at ½dᵀC⁻¹d ≤ this (d: the Newton step, ‖d‖ = 0.1 posterior
# SD at 5e-3) and take d unevaluated, leaving fe O(‖d‖²) from its conditional mode; 1e-3 made
# a third of crossed-binary's nodes take a second step for changes below 0.0005 SD
NODE_DECREMENT = 5e-3
# a fixed design's node's inner solve (_first_kernel) stops at ‖∇_u h‖_∞ ≤ this (the fit's is
# 1e-11): J there is then within ½‖∇_u h‖²/λ_min(H_uu) ≤ 5e-15 of J(u*) (H_uu ⪰ I), and fe's
# gradient within ~1e-6, far below the solve's stop (NODE_DECREMENT); crossed-binary's nodes
# take two Newton steps instead of three
NODE_INNER_TOL = 1e-7
DESIGNS = ("auto", "ccd", "grid")
# the CCD is kept while log p̃ at its points is within this of the mode's Gaussian
# (:func:`gaussian_misfit`); grouseticks' skewed vcp posterior: 0.77 (vcp_p = 1), 0.51
# (0.5).  Simulated Poisson and binary models with three variance components
# (docs/which_fit.md): misfits of 0.39–0.49 left the CCD's vcp SDs 7–23% narrow (two
# checked against NUTS: 9.0% and 22.5%, the lattice within 1.1% and 2.3%), while with
# misfits of 0.27–0.35 the CCD (with the correction) was within 0.04 SD and 2.4% of the
# lattice
CCD_MISFIT = 0.35
LATTICE_AUTO_DIM = 3  # design="auto" replaces a misfitting CCD by the lattice up to this
QUICK_DECREMENT = 0.02  # a lattice node takes one unevaluated Newton step from this close


class IntegratedFit(NamedTuple):
    """Posterior moments with vcp integrated over a node design (numpy arrays)."""

    fe_mean: np.ndarray  # (k_fep,)
    vcp_mean: np.ndarray  # (k_vcp,)
    cov: np.ndarray  # (k_a, k_a) posterior covariance of (fe, vcp)
    vc_mean: np.ndarray  # (k_vc,)
    vc_sd: np.ndarray  # (k_vc,)
    nodes: np.ndarray  # (N, k_vcp) vcp at the nodes
    weights: np.ndarray  # (N,) normalised posterior weights of the nodes
    converged: np.ndarray  # (N,) bool: the fe | vcp Newton converged at each node


def check_integrable(k_vcp: int) -> None:
    """Raise a ValueError, before any fitting, when ``k_vcp`` variance parameters are too
    many to integrate over (more than ``fits.nodes.MAX_DIM``)."""
    if k_vcp > MAX_DIM:
        raise ValueError(
            f"integrate=True: the model has {k_vcp} variance parameters; integrating over "
            f"more than {MAX_DIM} is not supported (the node design grows as 2^k). Use "
            "fit_laplace(priors=True) without integrate: the mode of the marginal posterior "
            "with its Gaussian covariance")


def _node_terms(family: Family, mode):
    """``node(θ, u*, du*/dθ, F, data) -> (vc*, Var(vc | θ, fe), dvc*/dθ, δ, shift)`` at a node,
    independent terms only (F: H_uu's factorisation at u*, as the fit's ``vgh`` returns it):
    what :func:`_solve_node` needs beyond the fe Newton solve, from one computation of the
    leverages and diag(H_uu⁻¹) (kernels.h_uu.inverse_entries) and one solve with F.  (Three
    programs — the fit's ``finish``, the correction δ of kernels.laplace_correction and the
    shift — each formed their own: 7 ms a node on grouseticks' lattice, as much as the node's
    Hessian.)

    ``δ``: the three terms of the second-order correction of the Laplace integral over u.
    ``shift``: the third-order correction of the random effects' conditional mean,
    E[vc | θ] ≈ vc* − ½ Λ H_uu⁻¹ T'.  The Laplace expansion of the mean of exp(−h(u)) about its
    mode u* is E[u] ≈ u* − ½ H_uu⁻¹ T' with T'_a = Σ_bc (H_uu⁻¹)_bc ∂³h/∂u_a∂u_b∂u_c.  With ẑ_i
    the rows of ZΛ, ∂³h/∂u_a∂u_b∂u_c = −Σ_i ℓ‴_i ẑ_ia ẑ_ib ẑ_ic, so T' = −ΛZᵀ(ℓ‴ ⊙ q) = −T,
    q_i = ẑ_iᵀH_uu⁻¹ẑ_i the leverages, and shift = ½ Λ H_uu⁻¹T with T and H_uu⁻¹T as δ's
    t33a term forms them (kernels.laplace_correction.correction_terms).  Traceable:
    :func:`_node_kernel` compiles it alone, :func:`_node_eval_kernel` with fe's derivatives."""

    def node(theta, u, du, F, data: Data):
        kf = data.X.shape[1]
        vcp = theta[kf:]
        q, hd = inverse_entries(vcp, F, mode, data)
        terms, _, HiT = correction_terms(family, mode, theta, u, F, data, (q, hd))
        return (lam_u(vcp, u, data.ident), var_vc(vcp, F, mode, data, hd),
                vc_jacobian(theta, u, du, data), terms, lam_u(vcp, 0.5 * HiT, data.ident))

    return node


@functools.cache
def _node_kernel(family: Family, mode, small: bool = False):
    """:func:`_node_terms`, compiled (``small``: the light compiler options): a node whose
    last evaluation was not :func:`_node_eval_kernel`'s (J's exact Hessian there)."""
    return jax.jit(_node_terms(family, mode),
                   compiler_options=light_options() if small else large_options())


def _vg_node(family: Family, mode, opts: LaplaceOptions, fe_only: bool = False):
    """``vg_node(θ, u*, data, prior) -> (*vg, node)``: fits.joint.node_hessian's outputs (J's
    value and gradient, the joint profile's fe Hessian rows, (du*/dθ, F)) and, for
    independent terms, :func:`_node_terms`' at the same point (traceable)."""
    vg = node_hessian(family, mode, opts, fe_only)
    terms = _node_terms(family, mode)

    def vg_node(theta, u, data: Data, prior: Prior):
        f, g, Hj, (du, F) = vg(theta, u, data, prior)
        if data.corr:  # _node_terms is for independent terms
            return f, g, Hj, (du, F)
        return f, g, Hj, (du, F), terms(theta, u, du, F, data)

    return vg_node


@functools.cache
def _node_eval_kernel(family: Family, mode, opts: LaplaceOptions, small: bool = False,
                      fe_only: bool = False):
    """:func:`_vg_node` compiled (independent terms): fits.joint.node_hessian's outputs and
    :func:`_node_terms`' from one program.  A node's fe Newton solve usually stops at its
    first evaluation, so the node's summaries come with it; compiled together, XLA shares
    what the two compute alike (H_uu's factor's leverages and solves) and the node saves a
    call: 1.5–1.8 → 0.85–0.9 ms a node on grouseticks, 1.1 → 0.9 ms on four crossed factors,
    where the summaries alone took 0.4 and 0.3 ms.  Where the solve goes on, the summaries of
    the earlier evaluations are dropped.  Used by the lattice's nodes; a fixed design's take
    :func:`_first_kernel`.  ``small``: the light compiler options; ``fe_only``:
    fits.joint.node_hessian's."""
    return persistent_jit(_vg_node(family, mode, opts, fe_only),
                          compiler_options=light_options() if small else large_options())


@functools.cache
def _first_kernel(family: Family, mode, opts: LaplaceOptions, small: bool = False,
                  fe_only: bool = False):
    """``first(θ, u, du, dθ, data, prior) -> (u*, *vg_node)``: a fixed design's node's first
    evaluation in one program — u*(θ) by the inner Newton solve from u + du·dθ (the fit's
    ``value`` without its J, which ``vg_node`` computes anyway; to ``NODE_INNER_TOL``) and
    :func:`_vg_node` there.
    One call a node instead of two; on CPU 3–8 % of the integrated fit once compiled (four
    crossed factors: 1.9 → 1.7 ms a node).  Called from a u* already solved for, with dθ = 0,
    its inner solve stops at its first evaluation: so it serves a fixed design's other
    evaluations too (J's remainder at the mode, a node's later Newton steps), and
    :func:`_node_eval_kernel` is not compiled for it."""
    obj = objective(family, mode, True, max(opts.inner_tol, NODE_INNER_TOL),
                    opts.inner_maxiter)
    vg_node = _vg_node(family, mode, opts, fe_only)

    def first(theta, u, du, dtheta, data: Data, prior: Prior):
        _, u = obj.value_only(theta, u + du @ dtheta, data, prior)
        return u, *vg_node(theta, u, data, prior)

    return persistent_jit(first, compiler_options=light_options() if small else large_options())


def uses_correction(k_vcp: int, n_points: int | None = None,
                    misfit: float | None = None) -> bool:
    """Whether :func:`integrate_vcp` adds the second-order Laplace correction by default:
    on the product Gauss–Hermite grids (``k_vcp`` ≤ 2, or ``n_points`` given) and the lattice
    (always), and on the central composite design where its ``misfit``
    (:func:`fits.nodes.gaussian_misfit`, before the correction) is within
    :data:`CCD_MISFIT` — a CCD that resolves p̃ — not where it misfits (or is not known).

    The correction moves log p̃(vcp | y) by O(1/n) per random effect, mostly where a
    variance is large and the conditionals are skewed.  On a design that resolves p̃ it
    removes the Laplace bias of the vcp means (grouseticks on a 5 × 5 × 31 grid: the
    largest error 0.11 → 0.017 NUTS posterior SD at vcp_p = 1, 0.12 → 0.029 at 0.5; cbpp:
    0.030 → 0.001; simulated crossed binary designs with three well-determined variance
    components, kept on the CCD: 0.09–0.15 → ≤ 0.04 SD against the lattice); on a CCD that
    misfits, as the 15 points that truncate the long left tail of grouseticks' LOCATION log
    SD, the corrected weights shift mass towards that tail and the largest error grows
    (0.11 → 0.17), so it is left out there (docs/which_fit.md).

    >>> uses_correction(2), uses_correction(3), uses_correction(3, misfit=0.1)
    (True, False, True)
    """
    if is_product_grid(k_vcp, n_points):
        return True
    return misfit is not None and misfit <= CCD_MISFIT


class _Node(NamedTuple):
    fe: np.ndarray  # (k_fep,) E[fe | vcp]: the conditional mode plus the skewness shift
    C: np.ndarray  # (k_fep, k_fep) Cov(fe | vcp)
    logp: float  # log p̃(vcp | y) up to a constant
    vc: np.ndarray  # (k_vc,) E[vc | vcp]
    var: np.ndarray  # (k_vc,) Var(vc | vcp)
    converged: bool
    state: tuple | None = None  # (θ, u*(θ), du*/dθ) at the solution: a neighbour's warm start
    mode: np.ndarray | None = None  # (k_fep,) the conditional mode of fe
    dfe: np.ndarray | None = None  # (k_fep, k_vcp) its derivative in vcp
    norm: float = 0.0  # log p̃ − J(fe*): (k_fep/2)·log 2π − ½ log det C⁻¹ [+ δ]
    delta: float = 0.0  # δ(θ_k), whether or not ``norm`` holds it (0 where not computed)


def _solve_node(kern, T, node, delta: bool, vc_skew: bool, vcp, fe0, base, data, prior,
                popts, quick: bool = False, approx=None):
    """The Gaussian approximation of fe | vcp at one node (module docstring); ``base`` =
    (θ̂, u*(θ̂), du*/dθ at θ̂) for the warm start of the first inner solve; ``T`` the
    contracted third derivatives in fe (fits.joint.skew_vector, at the mode) for fe's
    skewness correction, or None; ``node``
    :func:`_node_kernel`'s program (independent terms), or None (the fit's ``finish``);
    ``delta``: add the second-order correction of the Laplace integral over u
    (kernels.laplace_correction); ``vc_skew``: the third-order shift of vc's mean (both need
    ``node``).  ``quick``: one Hessian at the start and its
    Newton step, not evaluated, when the start's decrement ½gᵀCg is at most
    ``QUICK_DECREMENT`` (the lattice's warm starts from a neighbour); a full solve from
    there otherwise.  ``approx``: (``vg``, D) — fe's Hessian rows as those of
    fits.joint.node_hessian's ``vg`` plus the constant D (k_fep, k_a), the exact rows
    less ``vg``'s at the mode; the exact ``kern.vgh`` where that is not positive definite.
    ``vg`` may also return the node's terms (:func:`_node_eval_kernel`): used when its last
    evaluation is the solution, in place of a call of ``node``.  None: ``kern.vgh``
    throughout."""
    kf = fe0.shape[0]
    dtype = fe0.dtype
    theta_hat, u_hat, du_hat = base
    zero_vcp = np.zeros(vcp.shape[0], dtype)

    def full(x):
        return np.concatenate([x, vcp]).astype(dtype)

    last_H = []  # the fe columns of the last evaluation's Hessian (k_a, k_fe): dfe*/dvcp there
    last_terms = []  # (x, u, the node's terms there) when approx's program gave them

    def vgh(x, u, out=None):
        last_terms.clear()
        if approx is not None:
            f, g, Hj, du_F, *terms = approx[0](full(x), u, data, prior) if out is None else out
            rows = np.asarray(Hj, np.float64) + approx[1]  # (k_fep, k_a) ≈ −∂²J/∂fe∂θ
            Hff = 0.5 * (rows[:, :kf] + rows[:, :kf].T)
            if np.all(np.isfinite(rows)) and np.linalg.eigvalsh(Hff).min() > 0:
                last_H[:] = [rows.T]
                if terms:
                    last_terms[:] = [x, u, terms[0]]
                return np.asarray(f), np.asarray(g)[:kf], Hff.astype(dtype), du_F
        f, g, H, du_F = kern.vgh(full(x), u, data, prior)
        H = np.asarray(H)[:, :kf]
        last_H[:] = [H]
        return np.asarray(f), np.asarray(g)[:kf], H[:kf], du_F

    def value(x, u, du_F, dx):
        if du_F is None:  # first call: predicted from the mode
            return kern.value(full(x), u_hat, du_hat, full(x) - theta_hat, data, prior)
        return kern.value(full(x), u, du_F[0], np.concatenate([dx, zero_vcp]), data, prior)

    first = None
    if approx is not None and len(approx) > 2:  # value and vg in one program (_first_kernel)
        def first(x, u0):
            u, *out = approx[2](full(x), u0, du_hat, full(x) - theta_hat, data, prior)
            return u, vgh(x, u, out)

    lb = np.full(kf, -np.inf, dtype)
    s, du_F = projected_newton_host(vgh, value, fe0, u_hat, lb,
                                    popts._replace(maxiter=0) if quick else popts, first)
    H = np.asarray(s.H, np.float64)  # −∇²_fe J
    ok = bool(np.all(np.isfinite(H)) and np.isfinite(s.f))  # far nodes can overflow
    if ok:
        w, Q = np.linalg.eigh(0.5 * (H + H.T))
        ok = bool(w.min() > 0)
    if quick and ok:
        g = np.asarray(s.g, np.float64)
        step = (Q / w) @ Q.T @ g
        if 0.5 * float(g @ step) > QUICK_DECREMENT:  # too far: Newton from the step's end
            return _solve_node(kern, T, node, delta, vc_skew, vcp, (s.x - step).astype(dtype),
                               (full(s.x), s.u, du_F[0]), data, prior, popts, approx=approx)
    if not ok:
        nan = np.full(data.ident.shape[0], np.nan)
        return _Node(np.asarray(s.x, np.float64), np.full((kf, kf), np.nan), -np.inf, nan,
                     nan, False)
    C = (Q / w) @ Q.T
    theta = full(s.x)
    # the last Newton step d = −C·g (g = ∇(−J)), not taken: fe* ≈ x + d and
    # J(fe*) ≈ J(x) + ½gᵀCg
    g = np.asarray(s.g, np.float64)
    d = -C @ g
    norm = 0.5 * kf * _LOG_2PI - 0.5 * float(np.sum(np.log(w)))
    dsum = 0.0
    if node is None:
        vc, var_cond, J, _ = (np.asarray(x, np.float64)
                              for x in kern.finish(theta, s.u, du_F, data, prior))
    else:  # the node's terms: from the last evaluation, if it was at the solution
        out = (last_terms[2] if last_terms and last_terms[0] is s.x and last_terms[1] is s.u
               else node(theta, s.u, *du_F, data))
        vc, var_cond, J, terms, shift = (np.asarray(x, np.float64) for x in out)
        dsum = float(np.sum(terms))
        if delta:  # log p(y | θ) ≈ Laplace + δ(θ) (relative error O(n⁻²))
            norm += dsum
        if vc_skew:
            vc = vc + shift
    logp = -float(s.f) + 0.5 * float(g @ C @ g) + norm
    Jfe = J[:, :kf]
    fe = np.asarray(s.x, np.float64) + d
    vc = vc + Jfe @ d
    if T is not None:  # E[fe | vcp] ≈ fe* + ½ C T, T_i = Σ_jl (C_0)_jl ∂³ℓ_j/∂fe_i∂fe_j∂fe_l
        fe = fe + 0.5 * C @ T
    var = var_cond + np.einsum("kp,pq,kq->k", Jfe, C, Jfe)
    # dfe*/dvcp = −H_ff⁻¹ H_fv (implicit function theorem on ∇_fe J = 0): a neighbour's start
    dfe = -C @ np.asarray(last_H[0], np.float64)[kf:].T
    return _Node(fe, C, logp, vc, var, quick or int(s.status) == 0, (theta, s.u, du_F[0]),
                 np.asarray(s.x, np.float64) + d, dfe, norm, dsum)


def _last_value(value):
    """``value`` (a ``LaplaceKernels.value``, or :func:`_first_kernel`'s program) with its
    last call remembered: the same arguments again (θ and dθ equal, u and du the same
    arrays) return the same result.  A lattice point that is screened and then solved starts
    its solve with the screen's own inner solve (:func:`_screen_node`: one inner solve a
    point saved, about a quarter of grouseticks' calls); a fixed design's central node
    (θ̂, from û) takes the evaluation that gave J's remainder at the mode."""
    last: list = [None, None]

    def call(theta, u, du, dtheta, data, prior):
        key = (np.asarray(theta).tobytes(), u, du, np.asarray(dtheta).tobytes(), data, prior)
        old = last[0]
        if old is not None and old[0] == key[0] and old[3] == key[3] and all(
                a is b for a, b in zip(old[1:3] + old[4:], key[1:3] + key[4:])):
            return last[1]
        out = value(theta, u, du, dtheta, data, prior)
        last[:] = [key, out]
        return out

    return call


def _screen_node(kern, nb: _Node, vcp, fe0, data, prior) -> _Node:
    """A cheap stand-in for a node far in the tail, from its neighbour ``nb``: J at the
    predicted fe0 (one inner solve, no Hessian) with the neighbour's log-determinant and
    correction, log p̃ ≈ J(fe0, vcp) + norm_nb — a slight underestimate (J(fe0) ≤ J(fe*)) —
    and the neighbour's summaries, fe moved as fe0 is from the neighbour's mode (along
    dfe*/dvcp).  Not expanded (no ``state``)."""
    theta_nb, u_nb, du_nb = nb.state
    theta = np.concatenate([fe0, vcp]).astype(theta_nb.dtype)
    f, _ = kern.value(theta, u_nb, du_nb, theta - theta_nb, data, prior)
    return _Node(nb.fe + (fe0 - nb.mode), nb.C, -float(f) + nb.norm, nb.vc, nb.var, True)


def integrate_vcp(family: Family, data: Data, prior: Prior, fit: LaplaceFit, *, mode,
                  n_points: int | None = None, opts: LaplaceOptions | None = None,
                  skew: bool = True, correct: bool | None = None,
                  design: str = "auto", exact_nodes: bool = False,
                  at_mode: tuple | None = None) -> IntegratedFit:
    """Integrate over vcp (INLA-style) around a ``priors=True`` :func:`fit_laplace` fit.

    Parameters
    ----------
    family, data, prior, mode : as for :func:`fits.laplace.fit_laplace`
    fit : LaplaceFit
        A non-singular ``priors=True`` fit.
    n_points : int, optional
        Use the product Gauss–Hermite grid with this many points per vcp dimension instead
        of the default design (:func:`fits.nodes.node_design`: 7 points for one variance
        parameter, 5 × 5 for two, INLA's central composite design for three to
        ``fits.nodes.MAX_DIM``).
    opts : LaplaceOptions, optional
        For the fe | vcp Newton solves at the nodes; default for the data's dtype.
    skew : bool
        Add the third-order (skewness) corrections to each node's fe mean (with the third
        derivatives of the joint profile in fe at the mode, contracted with fe's
        conditional covariance there: fits.joint.skew_vector) and vc mean (independent
        terms).
    correct : bool, optional
        Add the second-order correction of the Laplace approximation of the random effects'
        integral (kernels.laplace_correction) to each node's log p̃(vcp | y); independent
        terms only (skipped for correlated terms).  Default (None): with the product
        Gauss–Hermite grids (one or two variance parameters, or ``n_points`` given), the
        lattice, and the central composite design where its misfit is within
        :data:`CCD_MISFIT` (:func:`uses_correction`).
    design : ``"auto"``, ``"ccd"`` or ``"grid"``
        For three or more variance parameters (without ``n_points``): ``"ccd"`` the central
        composite design; ``"grid"`` the lattice of :mod:`fits.lattice`, which follows a
        skewed or curved posterior (about 10× the CCD's nodes in three dimensions);
        ``"auto"`` the CCD unless log p̃ at its points departs from the mode's Gaussian by
        more than :data:`CCD_MISFIT` (:func:`gaussian_misfit`), then the lattice, with an
        :class:`~bayesglmm.exceptions.IntegrationWarning`.  ``"grid"`` with one or two
        variance parameters also uses the lattice.
    exact_nodes : bool
        The exact Hessian of J in fe at every node (the fit's Hessian program), instead of
        the joint Hessian with the exact one's remainder at the mode
        (:func:`fits.joint.node_hessian_kernel`; module docstring).
    at_mode : (−∇²J (k_a, k_a), du*/dθ (k_vc, k_a)) at the fit's θ̂, optional
        As the fit's last evaluation gave them (:func:`fits.laplace.fit_laplace` passes
        them); evaluated here when not given.

    Returns
    -------
    IntegratedFit

    Raises
    ------
    ValueError
        When the mode is singular (a variance at zero: its log SD has no Gaussian
        neighbourhood to place nodes in) or its covariance is not positive definite, or
        there are more than ``fits.nodes.MAX_DIM`` variance parameters.  The fallback is
        the fit itself, ``fit_laplace(priors=True)`` without ``integrate``.

    Examples
    --------
    cbpp's posterior means of the fixed effects, and the SDs of (fe, vcp):

    >>> import numpy as np
    >>> from bayesglmm import BinomialBayesMixedGLM, datasets
    >>> from bayesglmm.design.ellpack import design_mode
    >>> from bayesglmm.fits.laplace import fit_laplace
    >>> m = BinomialBayesMixedGLM.from_formula("incidence ~ C(period)",
    ...     {"herd": "0 + C(herd)"}, datasets.load("cbpp"), n_trials="size")
    >>> mode = design_mode(*m.re_design, m.ident)
    >>> fit = fit_laplace(m.family, m._data(), m._prior(), m.k_fep, mode=mode, priors=True)
    >>> integ = integrate_vcp(m.family, m._data(), m._prior(), fit, mode=mode)
    >>> np.round(integ.fe_mean, 2), np.round(np.sqrt(np.diag(integ.cov)), 2)
    (array([-1.42, -0.97, -1.11, -1.55]), array([0.25, 0.3 , 0.32, 0.41, 0.29]))
    """
    if design not in DESIGNS:
        raise ValueError(f"design must be one of {DESIGNS}, got {design!r}")
    dtype = np.dtype(data.y.dtype)
    opts = default_options(dtype) if opts is None else opts
    kf = fit.fe.shape[0]
    kp = fit.vcp.shape[0]
    check_integrable(kp)
    fallback = "; use fit_laplace(priors=True) without integrate (the mode and its covariance)"
    if fit.is_singular or not np.all(np.isfinite(fit.cov)):
        raise ValueError("integrate=True needs a non-singular priors=True fit: a variance "
                         "is estimated at zero" + fallback)
    S = fit.cov[kf:, kf:]
    try:
        L = np.linalg.cholesky(0.5 * (S + S.T))
    except np.linalg.LinAlgError:
        raise ValueError("integrate=True: the covariance of the variance parameters at the "
                         "mode is not positive definite" + fallback) from None
    # start fe at its regression on vcp under the joint Gaussian at the mode
    B = np.linalg.solve(S, fit.cov[kf:, :kf]).T  # (kf, kp)
    small = small_programs(data)  # the compiler options of the mode fit's programs
    kern = laplace_kernels(family, mode, True, opts, small)
    kern = kern._replace(value=_last_value(kern.value))
    # the node solves stop at a Newton decrement ½dᵀC⁻¹d ≤ NODE_DECREMENT (the last step is
    # applied without evaluating: module docstring)
    popts = ProjectedNewtonOptions(opts.maxiter, opts.gtol,
                                   max(opts.ftol, NODE_DECREMENT / (1 + abs(float(fit.log_post)))),
                                   opts.max_step, opts.max_ls)
    grid = design == "grid" and n_points is None
    # the default design checks the CCD's fit and may replace it by the lattice
    checks_ccd = design == "auto" and not is_product_grid(kp, n_points)
    to_lattice = checks_ccd and kp <= LATTICE_AUTO_DIM
    with precision(dtype), single_threaded_blas():
        theta_hat = fit.solution.a.astype(dtype)
        u_hat = jnp.asarray(fit.solution.v[:, 0], dtype)
        # du*/dθ and −∇²J at the mode
        if at_mode is None:
            _, _, H_hat, (du_hat, _) = kern.vgh(theta_hat, u_hat, data, prior)
        else:
            H_hat, du_hat = at_mode
        approx = None
        if not exact_nodes:  # the nodes' Hessians: joint rows + the remainder at the mode
            # a fixed design (not the lattice, nor a CCD it may replace) needs the
            # derivatives along fe only
            fixed = not (grid or to_lattice)
            if fixed:  # each node's first evaluation in one program with its inner solve,
                # which also serves the others from a u* already solved for (its solve then
                # stops at once): one program to compile, not two
                # (remembering its last call: the central node's first evaluation is the
                # remainder's at the mode, θ̂ from û)
                first = _last_value(_first_kernel(family, mode, opts, small, True))
                no_step = np.zeros_like(theta_hat)

                def vg(theta, u, data, prior):
                    return first(theta, u, du_hat, no_step, data, prior)[1:]
            else:
                vg = (node_hessian_kernel(family, mode, opts, small) if data.corr
                      else _node_eval_kernel(family, mode, opts, small))  # + node's terms
            D = (np.asarray(H_hat, np.float64)[:kf]
                 - np.asarray(vg(theta_hat, u_hat, data, prior)[2], np.float64))
            approx = (vg, D) + ((first,) if fixed else ())
        T = None
        if skew:
            third = joint_third_kernel(family, mode, small)
            T = skew_vector(lambda th, u, V: third(th, u, V, data), theta_hat, u_hat,
                            np.asarray(H_hat, np.float64)[:kf, :kf])
        node = None if data.corr else _node_kernel(family, mode, small)

        def solve(vcp, base, fe0, corrected, quick=False):
            if fe0 is None:
                fe0 = fit.fe + (vcp - fit.vcp) @ B.T
            return _solve_node(kern, T, node, corrected and node is not None,
                               skew and node is not None, vcp.astype(dtype), fe0.astype(dtype),
                               base, data, prior, popts, quick, approx)

        base = (theta_hat, u_hat, du_hat)
        if not grid:
            z, wz = node_design(kp, n_points)
            vcp_nodes = fit.vcp[None, :] + z @ L.T
            use_delta = uses_correction(kp, n_points) if correct is None else correct
            nodes = [solve(v, base, None, use_delta) for v in vcp_nodes]
            logp = np.array([n.logp for n in nodes])
            lw = np.log(wz) + logp + 0.5 * np.sum(z**2, axis=1)
            off = gaussian_misfit(z, logp)
            if correct is None and not use_delta and uses_correction(kp, n_points, off):
                lw = lw + np.array([n.delta for n in nodes])  # a CCD that resolves p̃
            if checks_ccd and off > CCD_MISFIT:
                grid = to_lattice
                what = ("so it is integrated over a lattice that follows it instead "
                        "(fits.lattice; 10-15x the nodes). integrate='ccd' keeps the faster, "
                        "less accurate design" if grid else
                        f"and the central composite design may misplace its mass; "
                        f"integrate='grid' integrates over a lattice that follows it "
                        f"(fits.lattice; hundreds of nodes with {kp} variance parameters)")
                warnings.warn(
                    f"integrate=True: log p(vcp | y) departs from the mode's Gaussian by "
                    f"{off:.2f} at the central composite design's points (more than "
                    f"{CCD_MISFIT}): the posterior of the variance parameters is skewed or "
                    f"curved, {what}", IntegrationWarning, stacklevel=4)
        if grid:
            nodes, vcp_nodes, lw = lattice_nodes(
                lambda v, b, f0, quick: solve(v, b, f0, correct is not False, quick),
                base, fit.vcp, S,
                lattice_budget(data.ident.shape[0], kf, np.dtype(dtype).itemsize),
                screen=lambda nb, v, f0: _screen_node(kern, nb, v.astype(dtype),
                                                      f0.astype(dtype), data, prior))
    fe_k = np.stack([n.fe for n in nodes])
    C_k = np.stack([n.C for n in nodes])
    vc_k = np.stack([n.vc for n in nodes])
    var_k = np.stack([n.var for n in nodes])
    conv = np.array([n.converged for n in nodes])
    lw = np.where(np.isfinite(lw), lw, -np.inf)
    if not np.any(np.isfinite(lw)):
        raise ValueError("integrate=True: the Laplace approximation of fe | vcp failed at "
                         "every node" + fallback)
    pi = np.exp(lw - np.max(lw))
    pi /= pi.sum()
    use = pi > 0  # nodes with zero weight (failed solves) carry NaN summaries
    pu = pi[use]
    fe_mean = pu @ fe_k[use]
    vcp_mean = pi @ vcp_nodes
    theta_k = np.concatenate([fe_k[use], vcp_nodes[use]], axis=1)
    mean = np.concatenate([fe_mean, vcp_mean])
    dev = theta_k - mean
    cov = np.einsum("k,kp,kq->pq", pu, dev, dev)
    cov[:kf, :kf] += np.einsum("k,kpq->pq", pu, C_k[use])
    vc_mean = pu @ vc_k[use]
    vc_var = pu @ (var_k[use] + (vc_k[use] - vc_mean) ** 2)
    return IntegratedFit(fe_mean=fe_mean, vcp_mean=vcp_mean, cov=cov, vc_mean=vc_mean,
                         vc_sd=np.sqrt(vc_var), nodes=vcp_nodes, weights=pi, converged=conv)
