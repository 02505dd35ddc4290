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

Uncertainty of the random effects.  ``vc_sd`` is the total SD
Var(vc_j) ≈ (Λ H_uu⁻¹ Λᵀ)_jj + (J Cov(θ) Jᵀ)_jj with J = dvc*/dθ by the implicit derivative,
i.e. the conditional variance plus the uncertainty propagated from (fe, vcp);
``vc_sd_cond`` is the conditional part alone (lme4's ``condVar``).  fits.integrate adds the
posterior integrated over vcp.  See docs/which_fit.md for which fit to use.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .._precision import precision
from ..covariance import lam_u
from ..exceptions import SINGULAR_TOL
from ..families import Family
from ..kernels.glmm import Data, Prior
from ..kernels.marginal import log_prior, objective, penalised, var_vc
from ..linalg.psd import abs_inv
from ..solvers import STATUS_MESSAGES, Solution
from ..solvers.projected_newton import ProjectedNewtonOptions, projected_newton

__all__ = ["DENSE_VC_MAX", "LOG_SD_MIN", "SINGULAR_SD", "LaplaceFit", "LaplaceOptimum",
           "LaplaceOptions", "default_options", "fit_laplace", "laplace_functions"]

LOG_SD_MIN = -12.0  # lower bound of vcp (SD 6e-6)
SINGULAR_SD = SINGULAR_TOL  # a fitted SD below this is reported as zero (lme4's isSingular)
DENSE_VC_MAX = 8000  # largest k_vc for the dense Cholesky of H_uu (crossed designs)


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


class LaplaceOptimum(NamedTuple):
    """What the jitted solve returns (device arrays)."""

    solution: Solution  # a = θ̂ (k_a,); v = u* (k_vc, 1); value = −J(θ̂) (minimised);
    #                     grad_norm = ‖∇J‖_∞ over free coordinates; n_iter = Newton steps
    llf: jax.Array  # () Laplace log-likelihood ℓ(θ̂)
    active: jax.Array  # (k_a,) bool: coordinates held at zero variance (singular)
    cov: jax.Array  # (k_a, k_a) (−∇²J)⁻¹ on the free coordinates, NaN on the active ones
    vc: jax.Array  # (k_vc,) conditional modes vc* = Λ(vcp)·u*
    vc_sd: jax.Array  # (k_vc,) total SD: conditional + propagated from Cov(θ)
    vc_sd_cond: jax.Array  # (k_vc,) conditional SD alone


class LaplaceFit(NamedTuple):
    """Result of :func:`fit_laplace` (numpy arrays)."""

    solution: Solution  # numpy; see LaplaceOptimum
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


@functools.cache
def laplace_functions(family: Family, mode, priors: bool, opts: LaplaceOptions):
    """The jitted ``solve(theta0, u0, data, prior) -> LaplaceOptimum`` for one static
    configuration: the maximiser of J(θ) = ℓ(θ) [+ log prior], Cov(θ) = (−∇²J)⁻¹ on the free
    coordinates and the random-effect summaries (see the module docstring)."""
    obj = objective(family, mode, priors, opts.inner_tol, opts.inner_maxiter)

    def neg_vgh(x, u, data, prior):
        f, g, H, u = obj.vgh(x, u, data, prior)
        return -f, -g, -H, u

    def neg_value(x, u, data, prior):
        f, u = obj.value(x, u, data, prior)
        return -f, u

    @jax.jit
    def solve(theta0, u0, data, prior):
        kf = data.X.shape[1]
        k_sd = theta0.shape[0] - kf - sum(b.z_idx.shape[0] for b in data.corr)
        lb = jnp.concatenate([jnp.full(kf, -jnp.inf, theta0.dtype),
                              jnp.full(k_sd, LOG_SD_MIN, theta0.dtype),
                              jnp.full(theta0.shape[0] - kf - k_sd, -jnp.inf, theta0.dtype)])
        s = projected_newton(lambda x, u: neg_vgh(x, u, data, prior),
                             lambda x, u: neg_value(x, u, data, prior), theta0, u0, lb,
                             opts.outer)
        theta, u, H = s.x, s.u, s.H
        # singular: at the bound with the gradient pushing outward, or a SD below
        # SINGULAR_SD where ℓ is flat to the optimiser's tolerance (lme4's isSingular, tol 1e-4)
        idx = jnp.arange(theta.shape[0])
        is_vcp = (idx >= kf) & (idx < kf + k_sd)  # log SDs (not correlation parameters)
        active = ((theta <= lb + 1e-10) & (s.g > 0)) | (is_vcp & (theta < np.log(SINGULAR_SD)))
        free = ~active
        both = free[:, None] & free[None, :]
        cov = jnp.where(both, abs_inv(jnp.where(both, H, jnp.eye(H.shape[0], dtype=H.dtype))),
                        0.0)
        ginf = jnp.max(jnp.abs(jnp.where(free, s.g, 0.0)), initial=0.0)
        # random effects: vc* = Λu*; Var = diag(Λ H_uu⁻¹ Λᵀ) (conditional) + J Cov(θ) Jᵀ
        _, _, Huu = penalised(family, mode)(theta, u, data)
        var_cond = var_vc(theta[kf:], Huu, mode, data)
        J = obj.jac_vc(theta, u, data)
        var_tot = var_cond + jnp.einsum("kp,pq,kq->k", J, cov, J)
        cov = jnp.where(both, cov, jnp.nan)
        llf = -s.f - log_prior(theta, data, prior) if priors else -s.f
        sol = Solution(theta, u[:, None], s.f, ginf, jnp.maximum(s.it - 1, 0), s.status)
        return LaplaceOptimum(sol, llf, active, cov, lam_u(theta[kf:], u, data.ident, data.corr),
                              jnp.sqrt(var_tot), jnp.sqrt(var_cond))

    return solve


def fit_laplace(family: Family, data: Data, prior: Prior, k_fep: int, *, mode, priors: bool,
                start=None, opts: LaplaceOptions | None = None, integrate: bool = False,
                n_points: int | None = None) -> LaplaceFit:
    """Maximise the Laplace marginal likelihood (``priors=False``: lme4's glmer, nAGQ = 1) or
    the Laplace marginal posterior (``priors=True``) of θ = (fe, vcp).

    Parameters
    ----------
    family : families.Family
    data : kernels.glmm.Data, as a model's ``_data()``; its dtype is the fit's
    prior : kernels.glmm.Prior
    k_fep : int
        Number of fixed effects (``data.X.shape[1]``).
    mode : ``"diag"``, ``"dense"`` or ``("schur", c, k_c)``
        How H_uu is factored: ``design.ellpack.design_mode`` of the design (models compute
        it once, at construction).
    priors : bool
        Add statsmodels' priors N(0, fe_p²) on fe and N(0, vcp_p²) on vcp.
    start : (k_fep + k_vcp,) array, optional
        Starting θ; default fe = 0, vcp = 0.
    opts : LaplaceOptions, optional
        Default :func:`default_options` for the data's dtype.
    integrate : bool
        Also compute :func:`fits.integrate.integrate_vcp` (``priors=True`` only) into
        ``.integrated``.
    n_points : int, optional
        Gauss–Hermite points per vcp dimension for ``integrate``.

    Returns
    -------
    LaplaceFit

    Examples
    --------
    >>> m = BinomialBayesMixedGLM.from_formula("incidence ~ C(period)",
    ...     {"herd": "0 + C(herd)"}, datasets.load("cbpp"), n_trials="size")  # doctest: +SKIP
    >>> mode = design_mode(*m.re_design, m.ident)                           # doctest: +SKIP
    >>> fit = fit_laplace(m.family, m._data(), m._prior(), m.k_fep, mode=mode,
    ...                   priors=False)                                     # doctest: +SKIP
    >>> np.exp(fit.vcp)                                                     # doctest: +SKIP
    array([0.64207])
    """
    dtype = np.dtype(data.y.dtype)
    opts = default_options(dtype) if opts is None else opts
    if integrate and not priors:
        raise ValueError("integrate=True needs priors=True (the vcp posterior must be proper)")
    k_vc = int(data.ident.shape[0])
    k_vcp = int(np.max(np.asarray(data.ident))) + 1 if k_vc else 0
    k_vcp += sum(int(b.z_idx.shape[0]) for b in data.corr)  # correlation parameters
    if data.corr and mode == "diag":  # pragma: no cover - a correlated term has q ≥ 2 per row
        raise ValueError("correlated terms need the dense or Schur factorisation")
    if mode != "diag" and k_vc > DENSE_VC_MAX:
        raise ValueError(f"fit_laplace with crossed random effects forms the dense {k_vc}×{k_vc}"
                         f" Hessian of the random effects; at most {DENSE_VC_MAX} supported")
    if k_fep != data.X.shape[1]:
        raise ValueError(f"k_fep={k_fep} but X has {data.X.shape[1]} columns")
    if start is None:
        theta0 = np.zeros(k_fep + k_vcp)
    else:
        theta0 = np.asarray(start, np.float64)
        if theta0.shape != (k_fep + k_vcp,):
            raise ValueError(f"start must have shape ({k_fep + k_vcp},), got {theta0.shape}")
    solve = laplace_functions(family, mode, bool(priors), opts)
    with precision(dtype):
        opt = jax.device_get(solve(jnp.asarray(theta0, dtype), jnp.zeros(k_vc, dtype), data,
                                   prior))
    f64 = lambda x: np.asarray(x, np.float64)  # noqa: E731
    sol = opt.solution.host()
    active = np.asarray(opt.active, bool)
    out = LaplaceFit(
        solution=sol,
        fe=sol.a[:k_fep],
        vcp=sol.a[k_fep:],
        cov=f64(opt.cov),
        vc=f64(opt.vc),
        vc_sd=f64(opt.vc_sd),
        vc_sd_cond=f64(opt.vc_sd_cond),
        llf=f64(opt.llf),
        log_post=-sol.value if priors else np.asarray(np.nan),
        singular=active[k_fep:],
    )
    if integrate:
        from .integrate import integrate_vcp

        out = out._replace(integrated=integrate_vcp(family, data, prior, out, mode=mode,
                                                    n_points=n_points, opts=opts))
    return out
