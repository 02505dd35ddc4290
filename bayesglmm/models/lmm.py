"""The user-facing linear mixed model, with statsmodels' ``MixedLM`` API."""

from __future__ import annotations

import warnings

import jax.numpy as jnp
import numpy as np

from .._precision import precision, resolve_dtype
from ..exceptions import SINGULAR_TOL, ConvergenceWarning, SingularFitWarning
from ..design.crossprod import cross_products
from ..formula.lmm import Design, design_from_arrays, lmm_design
from ..kernels.lmm import deviance
from ..fits.lmm import fit_lmm

__all__ = ["MixedLM", "mixedlm"]


class MixedLM:
    """Linear mixed model ``y = Xβ + Zb + ε``, ``b ~ N(0, Σθ)``, ``ε ~ N(0, σ² I)``.

    Parameters
    ----------
    endog : (n,) array_like
        Response.
    exog : (n, p) array_like
        Fixed-effects design (include a constant column for an intercept).
    groups : (n,) array_like
        Group labels.
    exog_re : (n, q) array_like, optional
        Random-effects design within each group (correlated, unstructured covariance).
        Default: a random intercept.
    exog_vc : dict of str -> (n, k) array_like, optional
        Variance components: within each group, each of the ``k`` columns of
        ``exog_vc[name]`` is an independent random coefficient, all with the variance
        ``name``.
    dtype : float32 or float64, optional
        Precision of the JAX computations (float64 by default on CPU).

    Examples
    --------
    >>> from bayesglmm import datasets, mixedlm
    >>> df = datasets.load("sleepstudy")
    >>> r = mixedlm("Reaction ~ Days", df, groups="Subject", re_formula="~Days").fit()
    >>> print(round(r.fe_params["Days"], 4))
    10.4673
    """

    def __init__(self, endog, exog, groups, exog_re=None, exog_vc=None, *, dtype=None):
        self._init(design_from_arrays(endog, exog, groups, exog_re, exog_vc), None, dtype)

    def _init(self, design: Design, formula, dtype):
        self.design = design
        self.formula = formula
        self.dtype = resolve_dtype(dtype)
        d = design
        self.nobs = len(d.y)
        self.k_fe = d.X.shape[1]
        self.exog_names = list(d.xnames)
        self.endog_names = d.yname
        self.n_dropped = d.n_dropped
        self.endog, self.exog = d.y, d.X
        # θ layout: one block per distinct parameter key (vc terms may share a block)
        offsets, n_theta = {}, 0
        self._theta_index = []
        for t in d.terms:
            pat = t.theta_pattern()
            if t.tkey not in offsets:
                offsets[t.tkey] = n_theta
                n_theta += int(pat.max()) + 1
            self._theta_index.append(np.where(pat >= 0, pat + offsets[t.tkey], -1))
        self.n_theta = n_theta
        lower = np.full(n_theta, -np.inf)
        theta0 = np.zeros(n_theta)
        for ti in self._theta_index:
            dg = np.diag(ti)
            lower[dg] = 0.0
            theta0[dg] = 1.0
        self._lower, self._theta0 = lower, theta0
        self._diag = np.unique(np.concatenate([np.diag(ti) for ti in self._theta_index]))
        k_params = self.k_fe + n_theta + 1
        if k_params > self.nobs:
            raise ValueError(
                f"the model has {k_params} parameters ({self.k_fe} fixed effects, {n_theta} "
                f"covariance parameters and the residual variance) but only {self.nobs} rows"
            )
        # terms sorted by number of levels, largest first (stable): its block is diagonal
        self._order = sorted(range(len(d.terms)), key=lambda i: -d.terms[i].n_levels)
        self._cp = {}

    @classmethod
    def from_formula(cls, formula, data, groups=None, re_formula=None, vc_formula=None,
                     missing="none", *, dtype=None):
        """Model from a formula; see :func:`mixedlm`."""
        obj = cls.__new__(cls)
        obj._init(lmm_design(formula, data, groups, re_formula, vc_formula, missing), formula,
                  dtype)
        return obj

    # ------------------------------------------------------------------ internals
    def _crossprod(self, dtype, sparse=None):
        key = (np.dtype(dtype).name, sparse)
        if key not in self._cp:
            d = self.design
            terms = [d.terms[i] for i in self._order]
            X, y = d.X, d.y
            # centre y when X holds a constant: same deviance, better conditioned in float32
            if X.shape[1] and np.any(np.all(X == 1.0, axis=0)):
                y = y - y.mean()
                self._yshift = d.y.mean()
            else:
                self._yshift = 0.0
            self._cp[key] = cross_products(
                X, y, [t.codes for t in terms], [t.z for t in terms],
                [self._theta_index[i] for i in self._order], self.n_theta, dtype, sparse,
            )
        return self._cp[key]

    def deviance(self, theta, reml=True, dtype=None, sparse=None):
        """Profiled deviance (ML) or REML criterion at ``theta`` (lme4's θ layout).

        ``sparse`` forces the storage of the cross-term block (for tests); ``None`` chooses.
        """
        dt = resolve_dtype(dtype or self.dtype)
        with precision(dt):
            cp, st = self._crossprod(dt, sparse)
            return float(deviance(jnp.asarray(theta, dt), cp, st, reml))

    def fit(self, reml=True, method="lbfgs", start_params=None, maxiter=1000, dtype=None):
        """Fit by minimising the profiled deviance (``reml=True``: the REML criterion).

        Parameters
        ----------
        reml : bool
            REML (default) or maximum likelihood.
        method : str
            ``"lbfgs"`` (L-BFGS-B on the jitted value and gradient, then Newton polish) or
            ``"lbfgs-only"`` (no polish).
        start_params : (n_theta,) array_like, optional
            Starting θ (default: λ = I, as lme4).
        maxiter : int
        dtype : float32 or float64, optional

        Returns
        -------
        MixedLMResults
        """
        from ..results.lmm import MixedLMResults

        if method not in ("lbfgs", "lbfgs-only", "lbfgsb", "L-BFGS-B"):
            raise ValueError(f"method must be 'lbfgs' or 'lbfgs-only', got {method!r}")
        dt = resolve_dtype(dtype or self.dtype)
        theta0 = self._start() if start_params is None else np.asarray(start_params, np.float64)
        if theta0.shape != (self.n_theta,):
            raise ValueError(f"start_params must have {self.n_theta} values, got {theta0.shape}")
        cp, st = self._crossprod(dt)
        est = fit_lmm(cp, st, theta0, self._lower, self._diag, reml, dt, maxiter=maxiter,
                      polish=method != "lbfgs-only")
        fitres, theta, beta = est.optim, est.theta, est.beta.copy()
        if self._yshift:  # the intercept of the uncentred response
            j = int(np.flatnonzero(np.all(self.design.X == 1.0, axis=0))[0])
            beta[j] += self._yshift
        if not fitres.converged:
            warnings.warn(
                f"the optimiser did not converge ({fitres.message}); largest gradient "
                f"component {fitres.grad_norm:.3g}", ConvergenceWarning, stacklevel=2,
            )
        singular = bool(np.any(theta[self._diag] < SINGULAR_TOL))
        if singular:
            warnings.warn(
                "boundary (singular) fit: a random-effect variance is estimated as (nearly) "
                "zero; see is_singular", SingularFitWarning, stacklevel=2,
            )
        # random effects back to the user's term order
        blups = [None] * len(self.design.terms)
        off = 0
        for pos, i in enumerate(self._order):
            t = self.design.terms[i]
            if pos == 0:
                blups[i] = est.b1
            else:
                size = t.n_levels * t.q
                blups[i] = est.b2[off : off + size].reshape(t.n_levels, t.q)
                off += size
        return MixedLMResults(
            model=self, theta=theta, fe=beta, cov_fe=est.sigma2 * est.txx_inv, scale=est.sigma2,
            deviance=est.deviance, reml=reml, blups=blups, fit=fitres, is_singular=singular,
            cov_psi=est.cov_psi,
        )

    def _start(self):
        """Starting θ: λ = I (lme4), with moment estimates for scalar terms.

        For a scalar term, the spread of per-level means of the OLS residuals gives a rough
        σ²_t; θ_t = σ_t / σ (clipped to [0.1, 10]).  A start nearer the optimum saves
        evaluations on large crossed designs; the optimum itself does not depend on it.
        """
        d = self.design
        theta = self._theta0.copy()
        beta, *_ = np.linalg.lstsq(d.X, d.y, rcond=None)
        r = d.y - d.X @ beta
        v = r.var()
        if v <= 0:
            return theta
        est = {}
        for t, ti in zip(d.terms, self._theta_index):
            if t.q != 1 or t.tkey in est:
                continue
            cnt = np.bincount(t.codes, minlength=t.n_levels).astype(float)
            zr = np.bincount(t.codes, weights=t.z[:, 0] * r, minlength=t.n_levels)
            zz = np.bincount(t.codes, weights=t.z[:, 0] ** 2, minlength=t.n_levels)
            ok = zz > 0
            means = zr[ok] / zz[ok]
            between = np.average(means**2, weights=cnt[ok])
            nbar = np.average(cnt[ok], weights=cnt[ok])
            est[t.tkey] = (int(ti[0, 0]), max(between - v / max(nbar, 1.0), 0.0))
        if not est:
            return theta
        s2 = max(v - sum(e for _, e in est.values()), 0.1 * v)
        for k, e in est.values():
            theta[k] = float(np.clip(np.sqrt(e / s2), 0.1, 10.0))
        return theta

    def __repr__(self) -> str:
        """Formula, rows, fixed effects and each factor's levels (bayesglmm._repr)."""
        from .._repr import lmm_repr

        return lmm_repr(self)


def mixedlm(formula, data, groups=None, re_formula=None, vc_formula=None, missing="none",
            *, dtype=None) -> MixedLM:
    """A linear mixed model from a formula, as ``statsmodels.formula.api.mixedlm``.

    Parameters
    ----------
    formula : str
        ``"y ~ x"``; may also hold lme4-style random terms: ``(1 | g)``, ``(x | g)``
        (correlated intercept and slope), ``(0 + x | g)``, ``(x || g)`` (uncorrelated),
        ``(1 | a/b)`` (nested: ``a`` and ``a:b``), ``(1 | a:b)``, and crossed terms
        ``(1 | s) + (1 | d)``.
    data : DataFrame
    groups : str or array_like, optional
        The grouping factor of ``re_formula`` and ``vc_formula``.  Required unless the
        formula has random terms.  With random terms in the formula, ``groups`` adds no
        implicit random intercept.
    re_formula : str, optional
        Random effects of ``groups``: default a random intercept; ``"~x"`` correlated
        intercept and slope; ``"0"`` none (only variance components).
    vc_formula : dict of str -> str, optional
        Variance components within ``groups``, e.g. ``{"pig": "0 + C(pig)"}``.
    missing : {"none", "raise", "drop"}
        NaN in a used column raises ``ValueError`` (``"none"``, ``"raise"``) or the rows are
        dropped with a warning (``"drop"``; the count is ``model.n_dropped``).

    Examples
    --------
    >>> from bayesglmm import datasets
    >>> from bayesglmm.lmm import mixedlm
    >>> pen = datasets.load("penicillin")
    >>> r = mixedlm("diameter ~ 1 + (1 | plate) + (1 | sample)", pen).fit()
    >>> round(r.llf, 3)
    -165.43
    """
    return MixedLM.from_formula(formula, data, groups=groups, re_formula=re_formula,
                                vc_formula=vc_formula, missing=missing, dtype=dtype)
