"""The marginal Laplace fit: random effects integrated out, (fe, vcp) optimised — lme4's glmer.

The objective (kernels.marginal) is the Laplace log marginal likelihood ℓ(θ) of θ = (fe, vcp)
(``priors=False``: lme4's ``logLik(glmer(..., nAGQ = 1))``) or the Laplace log marginal
posterior ℓ(θ) + log N(fe; 0, fe_p²) + log N(vcp; 0, vcp_p²) (``priors=True``).  It is
maximised by projected modified Newton (solvers.projected_newton) with vcp ≥ ``LOG_SD_MIN``.

With ``priors=False`` a variance can be estimated as zero (lme4's "boundary (singular) fit"):
vcp then stops at the bound with the gradient pushing outward, or stops earlier where ℓ is flat
to tolerance (ℓ − ℓ(σ = 0) = O(σ²)).  A component at the bound or with SD < ``SINGULAR_SD``
(lme4's ``isSingular`` tolerance) is reported with ``singular`` set and NaN variance, and the
covariance of the other parameters is computed with it fixed — as lme4 does at θ = 0.

Compilation.  The outer Newton iteration (a handful of steps) is driven from the host
(solvers.projected_newton.projected_newton_host) over small jitted programs compiled once per
configuration and data shape (:func:`laplace_kernels`): ``value`` (the inner Newton solve for
u*, warm-started to first order from the last point), ``vgh`` (∇J and ∇²J at a u* already
solved for: no loop inside), ``finish`` (the random-effect summaries), and the GLM fit of
the start (:func:`glm_start`), instead of one ``while_loop`` program holding the line search,
two copies of the inner loop and the nested autodiff, which took longer to compile.

Dispersion.  A family's dispersion parameters (the negative binomial's log θ,
``family.n_disp``) are the last entries of θ = (fe, log SDs, correlation parameters,
dispersion) (:func:`theta_layout`), unbounded; their start is a moment estimate at the GLM
fit (:func:`glm_fit`) and their prior (``priors=True``) N(0, disp_p²).

Uncertainty of the random effects.  ``vc_sd`` is the total SD
Var(vc_j) ≈ (Λ H_uu⁻¹ Λᵀ)_jj + (J Cov(θ) Jᵀ)_jj with J = dvc*/dθ by the implicit derivative,
i.e. the conditional variance plus the uncertainty propagated from (fe, vcp);
``vc_sd_cond`` is the conditional part alone (lme4's ``condVar``).  fits.integrate adds the
posterior integrated over vcp.  See docs/which_fit.md for which fit to use.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import NamedTuple

import jax
import numpy as np

from .._export import persistent_jit
from .._precision import precision
from ..linalg._blas import single_threaded_blas
from .._xla import large_options, light_options
from ..covariance import lam_u
from ..budgets import DENSE_VC_MAX, check_laplace
from ..exceptions import SINGULAR_TOL
from ..families import Family
from ..kernels.glmm import Data, Prior
from ..kernels.marginal import log_prior, objective, var_vc
from ..linalg.psd import abs_inv
from ..solvers import STATUS_MESSAGES, Solution
from ..solvers.projected_newton import ProjectedNewtonOptions, projected_newton_host
from .start import LOG_DISP_START, START_TOL, disp_start, glm_fit, glm_start, start_theta

__all__ = ["DENSE_VC_MAX", "LOG_DISP_START", "LOG_SD_MIN", "SINGULAR_SD", "START_TOL",
           "LaplaceFit", "LaplaceKernels", "LaplaceOptions", "default_options", "disp_start",
           "fit_laplace", "glm_fit", "glm_start", "held_corr", "hold", "laplace_kernels",
           "lower_bounds", "singular_mask", "start_theta", "theta_layout", "vc_jacobian"]

LOG_SD_MIN = -12.0  # lower bound of vcp (SD 6e-6)
SINGULAR_SD = SINGULAR_TOL  # a fitted SD below this is reported as zero (lme4's isSingular)


class LaplaceOptions(NamedTuple):
    maxiter: int = 100  # outer Newton iterations
    gtol: float = 1e-8  # stop when ‖∇‖_∞ over free coordinates ≤ gtol
    ftol: float = 1e-14  # ... or when the Newton decrement ½·gᵀH⁻¹g ≤ ftol·(1 + |f|)
    inner_tol: float = 1e-11  # inner Newton: stop when ‖∇_u h‖_∞ ≤ inner_tol
    inner_maxiter: int = 100
    max_step: float = 5.0  # cap on the ∞-norm of an outer Newton step
    max_ls: int = 40  # line-search halvings

    @property
    def outer(self) -> ProjectedNewtonOptions:
        return ProjectedNewtonOptions(self.maxiter, self.gtol, self.ftol, self.max_step,
                                      self.max_ls)


def default_options(dtype) -> LaplaceOptions:
    """The tolerances for ``dtype``: float32 cannot reach float64's."""
    if np.dtype(dtype) == np.float64:
        return LaplaceOptions()
    return LaplaceOptions(gtol=1e-4, ftol=1e-9, inner_tol=1e-5)


class LaplaceKernels(NamedTuple):
    """The jitted programs of one static configuration (see :func:`laplace_kernels`)."""

    value: Callable  # (θ, u, du, dθ, data, prior) -> (−J(θ), u*(θ)): the inner Newton
    #                  solve from u + du·dθ (u, du = u*, du*/dθ at θ − dθ)
    vgh: Callable  # (θ, u*, data, prior) -> (−J, −∇J (k_a,), −∇²J (k_a, k_a), (du*/dθ, F))
    #                with F the factorisation of H_uu at u* (linalg.psd)
    finish: Callable  # (θ, u*, (du*/dθ, F), data, prior) -> (vc* (k_vc,),
    #                   diag(Λ H_uu⁻¹ Λᵀ), dvc*/dθ (k_vc, k_a), log prior)


class LaplaceFit(NamedTuple):
    """Result of :func:`fit_laplace` (numpy arrays)."""

    solution: Solution  # numpy: a = θ̂ (k_a,); v = u* (k_vc, 1); value = −J(θ̂) (minimised);
    #                     grad_norm = ‖∇J‖_∞ over free coordinates; n_iter = Newton steps
    fe: np.ndarray  # (k_fep,) fixed effects at the optimum
    vcp: np.ndarray  # (k_vcp,) log SDs at the optimum (LOG_SD_MIN where singular)
    cov: np.ndarray  # (k_a, k_a) inverse Hessian of −objective in (fe, vcp); NaN rows/cols
    #                   for singular components
    vc: np.ndarray  # (k_vc,) conditional modes vc* = Λ(vcp)·u*
    vc_sd: np.ndarray  # (k_vc,) total SD: conditional + propagated from Cov(fe, vcp)
    vc_sd_cond: np.ndarray  # (k_vc,) conditional SD sqrt(diag(Λ H_uu⁻¹ Λᵀ)) alone
    llf: np.ndarray  # () Laplace log-likelihood ℓ(θ̂) (lme4's logLik)
    log_post: np.ndarray  # () Laplace log marginal posterior at θ̂ (NaN when priors=False)
    singular: np.ndarray  # (k_vcp,) bool: which components are at the bound
    integrated: object = None  # fits.integrate.IntegratedFit when requested

    @property
    def status(self) -> int:  # a key of solvers.STATUS_MESSAGES
        return int(self.solution.status)

    @property
    def success(self) -> bool:
        return self.status == 0

    @property
    def message(self) -> str:
        return STATUS_MESSAGES[self.status]

    @property
    def grad_norm(self) -> np.ndarray:  # () ∞-norm of the gradient over the free coordinates
        return self.solution.grad_norm

    @property
    def nit(self) -> int:  # outer Newton steps
        return int(self.solution.n_iter)

    @property
    def is_singular(self) -> bool:  # some variance estimated at zero
        return bool(np.any(self.singular))

    @property
    def params(self) -> np.ndarray:
        """(k_fep + k_vcp + k_vc,) posterior summary (fe, vcp, vc): the integrated means when
        ``integrated`` is set, else the mode and the conditional modes."""
        it = self.integrated
        if it is not None:
            return np.concatenate([it.fe_mean, it.vcp_mean, it.vc_mean])
        return np.concatenate([self.fe, self.vcp, self.vc])

    @property
    def params_cov(self) -> np.ndarray:
        """(k_a, k_a) covariance of (fe, vcp) that goes with :attr:`params`."""
        return self.cov if self.integrated is None else self.integrated.cov

    @property
    def variances(self) -> np.ndarray:
        """(k_fep + k_vcp + k_vc,) variances that go with :attr:`params`."""
        vc_sd = self.vc_sd if self.integrated is None else self.integrated.vc_sd
        return np.concatenate([np.diag(self.params_cov), np.asarray(vc_sd) ** 2])


# Rows (of the padded design) up to which a fit's programs are compiled with XLA's classic
# emitters (_xla.light_options).  A fit calls them a handful of times (about five
# Hessians and ten values), so their compilation is much of a first fit.  Measured on 2 cores
# (float64, a whole fit_laplace(priors=False), first call / warm): cbpp 1.88 → 1.36 s /
# 6 → 5 ms; VerbAgg's shape (7,584 rows, 316 × 24 crossed levels) 4.3 → 3.1 s / 0.113 →
# 0.120 s; grouseticks 4.8 → 3.4 s / 0.63 → 0.67 s; four crossed factors 3.7 → 2.8 s / 32 →
# 45 ms; 1e5 rows 1.80 → 1.51 s / 73 → 104 ms.  (XLA's small-problem options, _xla.small_options,
# compile faster still but ran VerbAgg's fit 3x slower.)  The integrated fit's node programs
# follow the mode fit's choice (fits.integrate); larger data keeps XLA's defaults.
SMALL_PROGRAM_ROWS = 200_000


def small_programs(data: Data) -> bool:
    """Whether a fit on ``data`` compiles its programs with the light options."""
    return int(data.y.shape[0]) <= SMALL_PROGRAM_ROWS


@functools.cache
def laplace_kernels(family: Family, mode, priors: bool, opts: LaplaceOptions,
                    small: bool = False) -> LaplaceKernels:
    """The jitted programs of the fit for one static configuration, each compiled once per
    data shape: J(θ) = ℓ(θ) [+ log prior] with u*(θ) (the inner Newton loop), its gradient
    and Hessian at a u* already solved for (no loop: forward-mode derivatives of the adjoint
    gradient, kernels.marginal.objective), and the random-effect summaries at the optimum.
    :func:`fit_laplace` drives the outer Newton iteration from the host.  ``small``: compiled
    with XLA's light options (:data:`SMALL_PROGRAM_ROWS`)."""
    obj = objective(family, mode, priors, opts.inner_tol, opts.inner_maxiter)
    jit = functools.partial(persistent_jit,
                            compiler_options=light_options() if small else large_options())

    @jit
    def value(theta, u, du, dtheta, data, prior):
        # warm start: u*(θ) to first order from the base point, u* + du*/dθ·dθ
        f, u = obj.value_only(theta, u + du @ dtheta, data, prior)
        return -f, u

    @jit
    def vgh(theta, u, data, prior):
        f, g, H, du, F = obj.vgh_at(theta, u, data, prior)
        return -f, -g, -H, (du, F)

    @jit
    def finish(theta, u, du_F, data, prior):
        kf = data.X.shape[1]
        du, F = du_F
        return (lam_u(theta[kf:], u, data.ident, data.corr), var_vc(theta[kf:], F, mode, data),
                vc_jacobian(theta, u, du, data), log_prior(theta, data, prior, family.n_disp))

    return LaplaceKernels(value, vgh, finish)


def vc_jacobian(theta, u, du, data: Data):
    """dvc*/dθ (k_vc, k_a) of vc* = Λ(vcp)·u*(θ) from du*/dθ: Λ·du*/dθ + (dΛ/dθ)·u*
    (traceable)."""
    kf = data.X.shape[1]
    return lam_u(theta[kf:], du, data.ident, data.corr) + jax.jacfwd(
        lambda th: lam_u(th[kf:], u, data.ident, data.corr))(theta)


def theta_layout(family: Family, data: Data) -> tuple[int, int]:
    """``(k_vcp, k_sd)``: the length of θ's block after the fixed effects, and how many of its
    leading entries are log SDs (bounded below by ``LOG_SD_MIN``).  θ = (fe, log SDs of the
    components, correlation parameters of the correlated terms, the family's dispersion
    parameters: log θ of the negative binomial)."""
    k_vc = int(data.ident.shape[0])
    k_sd = int(np.max(np.asarray(data.ident))) + 1 if k_vc else 0
    k_corr = sum(int(b.z_idx.shape[0]) for b in data.corr)  # correlation parameters
    return k_sd + k_corr + family.n_disp, k_sd


def lower_bounds(k_fep: int, k_sd: int, k_a: int) -> np.ndarray:
    """(k_a,) lower bounds of θ: −∞ except ``LOG_SD_MIN`` on the log SDs."""
    return np.concatenate([np.full(k_fep, -np.inf), np.full(k_sd, LOG_SD_MIN),
                           np.full(k_a - k_fep - k_sd, -np.inf)])


def singular_mask(theta, g, lb, kf: int, k_sd: int, data: Data) -> np.ndarray:
    """(…, k_a) bool: the coordinates of θ (leading axes: batched fits) held at a singular
    optimum, as lme4's ``isSingular`` (tol 1e-4) reads it — a log SD at its bound with the
    gradient pushing outward, or below log ``SINGULAR_SD`` where ℓ is flat to the
    optimiser's tolerance; and a correlated term's correlation parameters where its
    relative Cholesky factor D·L has a diagonal entry below ``SINGULAR_SD`` (a correlation at
    ±1: with partial correlations w = tanh(z), L_ii = Π_{j<i} sqrt(1 − w_ij²), so
    log(D·L)_ii = log s_i − Σ_{j<i} log cosh z_ij).  Such a term's covariance is singular and
    its correlation parameters run off to ±∞; their SEs are reported as NaN, the others'
    computed with them fixed, as lme4 does at the boundary."""
    theta, g = np.asarray(theta, np.float64), np.asarray(g)
    k_a = theta.shape[-1]
    idx = np.arange(k_a)
    is_vcp = (idx >= kf) & (idx < kf + k_sd)  # log SDs (not correlation parameters)
    tol = np.log(SINGULAR_SD)
    active = ((theta <= lb + 1e-10) & (g > 0)) | (is_vcp & (theta < tol))
    for b in data.corr:
        sd_idx, z_idx = kf + np.asarray(b.sd_idx), kf + np.asarray(b.z_idx)
        q = len(sd_idx)
        logdiag = [theta[..., sd_idx[0]]]
        for i in range(1, q):
            row = z_idx[i * (i - 1) // 2:i * (i + 1) // 2]  # z_i0 … z_i,i−1
            z = np.abs(theta[..., row])
            logcosh = z + np.log1p(np.exp(-2 * z)) - np.log(2.0)  # stable log cosh
            logdiag.append(theta[..., sd_idx[i]] - np.sum(logcosh, axis=-1))
        low = np.any(np.stack(logdiag, axis=-1) < tol, axis=-1)
        active[..., z_idx] |= low[..., None]
    return active


def held_corr(k_fep: int, k_sd: int, k_a: int, data: Data) -> np.ndarray | None:
    """(k_a,) bool: the correlation parameters, which lme4's start leaves free and
    :func:`_solve` first holds at zero (None without correlated terms)."""
    k_corr = sum(int(b.z_idx.shape[0]) for b in data.corr)
    if not k_corr:
        return None
    held = np.zeros(k_a, bool)
    held[k_fep + k_sd:k_fep + k_sd + k_corr] = True
    return held


def hold(g, H, held: np.ndarray):
    """(g, H) (leading axes: batched fits) with the coordinates ``held`` decoupled: zero
    gradient, identity rows and columns of H — so the projected Newton direction leaves them
    where they are and is the restricted problem's direction on the others (the same compiled
    programs, no smaller copies)."""
    g, H = np.asarray(g), np.asarray(H)
    both = held[:, None] | held[None, :]
    return np.where(held, 0.0, g), np.where(both, np.eye(len(held), dtype=H.dtype), H)


def _solve(kern: LaplaceKernels, theta0: np.ndarray, data: Data, prior: Prior, kf: int,
           k_sd: int, opts: LaplaceOptions, priors: bool, corr_stage: bool = False):
    """Maximise J from θ₀ (host-driven projected Newton), then Cov(θ) = (−∇²J)⁻¹ on the free
    coordinates and the random-effect summaries (see the module docstring).

    ``corr_stage``: first maximise with the correlation parameters held at θ₀'s (zero: the
    independent model), then free them.  From lme4's start (SDs of 1) J is far from concave;
    with the correlations free the first Newton steps can take them to ±1, where the
    correlated model's likelihood has flat, singular ridges: a (x1 + x2 + x3 | g) Poisson
    fit stopped there 60 log-likelihood units below lme4's optimum.  The correlations are
    then started where the SDs are already estimated."""
    k_a, dtype = theta0.shape[0], theta0.dtype
    lb = lower_bounds(kf, k_sd, k_a).astype(dtype)
    k_vc = data.ident.shape[0]
    no_step = (np.zeros((k_vc, k_a), dtype), np.zeros(k_a, dtype))  # numpy: nothing to compile

    def value(x, u, du_F, dx):
        du, dx = no_step if du_F is None else (du_F[0], dx)
        return kern.value(x, u, du, dx, data, prior)

    def vgh(x, u):
        return kern.vgh(x, u, data, prior)

    u0 = np.zeros(k_vc, dtype)
    held = held_corr(kf, k_sd, k_a, data) if corr_stage else None
    if held is not None:
        def vgh_held(x, u):
            f, g, H, aux = vgh(x, u)
            return (f, *hold(g, H, held), aux)

        s0, _ = projected_newton_host(vgh_held, value, theta0, u0, lb, opts.outer)
        theta0, u0 = s0.x, s0.u
    s, du_F = projected_newton_host(vgh, value, theta0, u0, lb, opts.outer)
    vc, var_cond, J, lp = (np.asarray(x, np.float64)
                           for x in kern.finish(s.x, s.u, du_F, data, prior))
    theta, H, g = s.x, np.asarray(s.H, np.float64), s.g
    active = singular_mask(theta, g, lb, kf, k_sd, data)
    free = ~active
    both = free[:, None] & free[None, :]
    cov = np.where(both, abs_inv(np.where(both, H, np.eye(k_a)), xp=np), 0.0)
    ginf = np.max(np.abs(np.where(free, g, 0.0)), initial=0.0)
    # random effects: vc* = Λu*; Var = diag(Λ H_uu⁻¹ Λᵀ) (conditional) + J Cov(θ) Jᵀ
    var_tot = var_cond + np.einsum("kp,pq,kq->k", J, cov, J)
    cov = np.where(both, cov, np.nan)
    f = np.asarray(s.f, np.float64)
    llf = -f - lp if priors else -f
    sol = Solution(np.asarray(theta, np.float64), np.asarray(s.u, np.float64)[:, None], f, ginf,
                   max(int(s.it) - 1, 0), int(s.status))
    # −∇²J and du*/dθ at θ̂ from the last evaluation: where fits.integrate starts
    return sol, llf, active, cov, vc, np.sqrt(var_tot), np.sqrt(var_cond), (s.H, du_F[0])


def fit_laplace(family: Family, data: Data, prior: Prior, k_fep: int, *, mode, priors: bool,
                start=None, opts: LaplaceOptions | None = None, integrate: bool = False,
                n_points: int | None = None, design: str = "auto") -> LaplaceFit:
    """Maximise the Laplace marginal likelihood (``priors=False``: lme4's glmer, nAGQ = 1) or
    the Laplace marginal posterior (``priors=True``) of θ = (fe, vcp).

    Parameters
    ----------
    family : families.Family
    data : kernels.glmm.Data, as a model's ``_data()``; its dtype is the fit's
    prior : kernels.glmm.Prior
    k_fep : int
        Number of fixed effects (``data.X.shape[1]``).
    mode : ``"diag"``, ``("block", q)``, ``"dense"`` or ``("schur", c, k_c)``
        How H_uu is factored: ``design.ellpack.design_mode`` of the design (models compute
        it once, at construction).
    priors : bool
        Add statsmodels' priors N(0, fe_p²) on fe and N(0, vcp_p²) on vcp (N(0, disp_p²) on
        a family's dispersion parameters).
    start : (k_fep + k_vcp,) array, optional
        Starting θ; default lme4's: the GLM fit without random effects (fe), vcp = 0
        (:func:`start_theta`), with correlation parameters first held at zero until the
        SDs are estimated (:func:`_solve`).
    opts : LaplaceOptions, optional
        Default :func:`default_options` for the data's dtype.
    integrate : bool
        Also compute :func:`fits.integrate.integrate_vcp` (``priors=True`` only) into
        ``.integrated``.
    n_points : int, optional
        Gauss–Hermite points per vcp dimension for ``integrate`` (a product grid); default
        the design of :func:`fits.nodes.node_design`.
    design : ``"auto"``, ``"ccd"`` or ``"grid"``
        The node design of ``integrate`` (:func:`fits.integrate.integrate_vcp`).

    Returns
    -------
    LaplaceFit

    Examples
    --------
    >>> import numpy as np
    >>> from bayesglmm import BinomialBayesMixedGLM, datasets
    >>> from bayesglmm.design.ellpack import design_mode
    >>> m = BinomialBayesMixedGLM.from_formula("incidence ~ C(period)",
    ...     {"herd": "0 + C(herd)"}, datasets.load("cbpp"), n_trials="size")
    >>> mode = design_mode(*m.re_design, m.ident)
    >>> fit = fit_laplace(m.family, m._data(), m._prior(), m.k_fep, mode=mode,
    ...                   priors=False)
    >>> np.round(np.exp(fit.vcp), 4)  # lme4 stops at 0.6421, with a 3e-4 lower log-likelihood
    array([0.6423])
    """
    dtype = np.dtype(data.y.dtype)
    opts = default_options(dtype) if opts is None else opts
    if integrate and not priors:
        raise ValueError("integrate=True needs priors=True (the vcp posterior must be proper)")
    k_vc = int(data.ident.shape[0])
    k_vcp, k_sd = theta_layout(family, data)
    if data.corr and mode == "diag":  # design_mode gives correlated terms ("block", q)
        raise ValueError("correlated terms need the block, dense or Schur factorisation")
    if k_vc:  # the dense block of crossed designs (the models check this before compiling)
        check_laplace(k_vc, mode)
    if k_fep != data.X.shape[1]:
        raise ValueError(f"k_fep={k_fep} but X has {data.X.shape[1]} columns")
    if integrate:  # too many variance parameters: say so before fitting
        from .integrate import check_integrable

        check_integrable(k_vcp)
    if start is None:  # lme4's start: the GLM's fixed effects, SDs of 1 (vcp = 0)
        theta0 = start_theta(family, data, k_fep, k_vcp)
    else:
        theta0 = np.asarray(start, np.float64)
        if theta0.shape != (k_fep + k_vcp,):
            raise ValueError(f"start must have shape ({k_fep + k_vcp},), got {theta0.shape}")
    kern = laplace_kernels(family, mode, bool(priors), opts, small_programs(data))
    with precision(dtype), single_threaded_blas():
        sol, llf, active, cov, vc, vc_sd, vc_sd_cond, at_mode = _solve(
            kern, theta0.astype(dtype), data, prior, k_fep, k_sd, opts, bool(priors),
            corr_stage=start is None)
    out = LaplaceFit(
        solution=sol,
        fe=sol.a[:k_fep],
        vcp=sol.a[k_fep:],
        cov=cov,
        vc=vc,
        vc_sd=vc_sd,
        vc_sd_cond=vc_sd_cond,
        llf=np.asarray(llf),
        log_post=-sol.value if priors else np.asarray(np.nan),
        singular=active[k_fep:],
    )
    if integrate:
        from .integrate import integrate_vcp

        out = out._replace(integrated=integrate_vcp(family, data, prior, out, mode=mode,
                                                    n_points=n_points, opts=opts,
                                                    design=design, at_mode=at_mode))
    return out
