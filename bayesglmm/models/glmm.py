"""``BinomialBayesMixedGLM`` and ``PoissonBayesMixedGLM``: statsmodels' classes on JAX.

The classes validate input, hold the data, and dispatch to the pure kernels (kernels.py) and
fitting engines (laplace.py, vb.py); results are :class:`BayesMixedGLMResults`.
"""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy.optimize import OptimizeResult

from ..design import ellpack as sparse
from ..formula import glmm_design as design
from .._precision import precision, resolve_dtype
from ..exceptions import ConvergenceWarning, SingularFitWarning
from ..families import Binomial, Family, Poisson
from ..covariance import CorrBlock
from ..kernels.glmm import Data, Params, Prior, make_elbo, make_logposterior
from ..fits.map import DENSE_COV_MAX, DENSE_COV_WORK_MAX, DENSE_MAX, DENSE_WORK_MAX, map_functions
from ..quadrature import get_rule
from ..results.glmm import BayesMixedGLMResults
from ..solvers import STATUS_MESSAGES, NewtonOptions
from ..validation import (
    check_1d,
    check_2d,
    check_finite,
    check_ident,
    check_length,
    check_random_state,
)
from ..fits.vb import split_vb, vb_functions

__all__ = ["BinomialBayesMixedGLM", "PoissonBayesMixedGLM"]

_METHODS = {"newton": "newton", "trust-ncg": "newton", "newton-cg": "newton", "bfgs": "lbfgs",
            "l-bfgs": "lbfgs", "l-bfgs-b": "lbfgs", "lbfgs": "lbfgs"}


def _method(name: str) -> str:
    key = str(name).lower()
    if key not in _METHODS:
        raise ValueError(f"unknown method {name!r}; use 'newton' (default) or 'lbfgs'/'BFGS'")
    return _METHODS[key]


def _jitted_kernels(family, rule):
    key = (family, rule)
    if key not in _KERNEL_CACHE:
        lp = make_logposterior(family)
        el = make_elbo(family, rule)
        _KERNEL_CACHE[key] = (
            jax.jit(lp),
            jax.jit(jax.grad(lp)),
            jax.jit(el),
            jax.jit(jax.grad(el, argnums=(0, 1))),
        )
    return _KERNEL_CACHE[key]


_KERNEL_CACHE: dict = {}


class _BayesMixedGLM:
    family: Family

    def __init__(self, endog, exog, exog_vc=None, ident=None, vcp_p=1, fe_p=2, fep_names=None,
                 vcp_names=None, vc_names=None, *, n_trials=None, offset=None, exposure=None,
                 freq_weights=None, dtype=None, vb_rule="gh20"):
        exog_is_frame = isinstance(exog, pd.DataFrame)
        y = check_1d(endog, "endog")
        n = len(y)
        if exog is None:
            X = np.zeros((n, 0))
        else:
            X = check_2d(exog, "exog")
            check_length(n, X.shape[0], "exog")
        if fep_names is None:
            fep_names = ([str(c) for c in exog.columns] if exog_is_frame
                         else [f"FE_{k + 1}" for k in range(X.shape[1])])
        if len(fep_names) != X.shape[1]:
            raise ValueError(f"fep_names has {len(fep_names)} names but exog has {X.shape[1]} columns")

        # random-effects design: ELLPACK arrays, never a dense n x k_vc matrix of ours
        if exog_vc is None:
            cols, vals, k_vc = np.zeros((n, 1), np.int32), np.zeros((n, 1)), 0
            vc_is_frame = False
        else:
            vc_is_frame = isinstance(exog_vc, pd.DataFrame)
            if vc_is_frame and vc_names is None:
                vc_names = [str(c) for c in exog_vc.columns]
            if sp.issparse(exog_vc):
                mat = sp.csr_array(exog_vc)
                check_finite(mat.data, "exog_vc")
            else:
                mat = sp.csr_array(check_2d(np.asarray(exog_vc), "exog_vc"))
            check_length(n, mat.shape[0], "exog_vc")
            cols, vals, k_vc = sparse.from_scipy(mat)
        self._init_arrays(y, X, cols, vals, k_vc, ident, vcp_p, fe_p, fep_names, vcp_names,
                          vc_names, n_trials, offset, exposure, freq_weights, dtype, vb_rule)
        self._named = exog_is_frame or vc_is_frame

    # The formula path calls this directly with ELLPACK arrays built from factor codes.
    def _init_arrays(self, y, X, cols, vals, k_vc, ident, vcp_p, fe_p, fep_names, vcp_names,
                     vc_names, n_trials, offset, exposure, freq_weights, dtype, vb_rule,
                     corr=()):
        n = len(y)
        if ident is None:
            if k_vc:
                raise ValueError("ident is required when exog_vc is given")
            ident = np.zeros(0, np.int32)
        ident = check_ident(ident, k_vc)
        k_sd = int(ident.max()) + 1 if k_vc else 0
        # correlated terms (from_formula's (1 + x | g)): their correlation parameters follow
        # the log SDs in vcp
        self._corr, z0 = [], k_sd
        for bcols, sd_idx, znames in corr:
            self._corr.append((np.asarray(bcols, np.int32), np.asarray(sd_idx, np.int32),
                               np.arange(z0, z0 + len(znames), dtype=np.int32)))
            z0 += len(znames)
        k_vcp = z0
        self._k_sd = k_sd
        if vcp_names is None:
            vcp_names = [f"VC_{k + 1}" for k in range(k_vcp)]
        elif len(vcp_names) != k_vcp:
            raise ValueError(f"vcp_names has {len(vcp_names)} names but ident defines {k_vcp} "
                             "variance components")
        if vc_names is not None and len(vc_names) != k_vc:
            raise ValueError(f"vc_names has {len(vc_names)} names but exog_vc has {k_vc} columns")
        for name, val in (("vcp_p", vcp_p), ("fe_p", fe_p)):
            if not np.isfinite(val) or val <= 0:
                raise ValueError(f"{name} must be a positive number, got {val}")

        trials = self._check_trials(n_trials, n)
        self.family.check_endog(y, trials)
        w = np.ones(n) if freq_weights is None else check_1d(freq_weights, "freq_weights")
        check_length(n, len(w), "freq_weights")
        if np.any(w < 0):
            raise ValueError("freq_weights must be non-negative")
        off = np.zeros(n) if offset is None else check_1d(offset, "offset")
        check_length(n, len(off), "offset")
        if exposure is not None:
            if not isinstance(self.family, Poisson):
                raise ValueError("exposure= applies to the Poisson family only; use offset=")
            ex = check_1d(exposure, "exposure")
            check_length(n, len(ex), "exposure")
            if np.any(ex <= 0):
                raise ValueError("exposure must be positive")
            off = off + np.log(ex)

        self.endog, self.exog = y, X
        self._cols, self._vals = cols, vals
        self.ident = ident
        self.k_fep, self.k_vcp, self.k_vc = X.shape[1], k_vcp, k_vc
        self.fep_names, self.vcp_names = list(fep_names), list(vcp_names)
        self.vc_names = None if vc_names is None else list(vc_names)
        self.vcp_p, self.fe_p = float(vcp_p), float(fe_p)
        self.n_trials = trials
        self.freq_weights = w
        self.offset = off
        self.nobs = n
        self.dtype = resolve_dtype(dtype)
        self.vb_rule = get_rule(vb_rule)
        self._const = self.family.constant(y, 1.0 if trials is None else trials, w)
        self._color, self._n_colors = sparse.colors(cols, vals, ident, k_vc)
        self._indep = np.ones(k_vc)
        for bcols, _, _ in self._corr:
            self._indep[bcols.ravel()] = 0.0
        self._data_cache = {}
        self._named = False
        self._formula = None

    def _check_trials(self, n_trials, n):
        if n_trials is None:
            return None
        if not isinstance(self.family, Binomial):
            raise ValueError("n_trials= applies to the binomial family only")
        t = check_1d(n_trials, "n_trials")
        check_length(n, len(t), "n_trials")
        if np.any(t < 1) or np.any(t != np.round(t)):
            raise ValueError("n_trials must be positive integers")
        return t

    # ------------------------------------------------------------------ data
    @property
    def names(self):
        return self.fep_names + self.vcp_names + (self.vc_names or [])

    @property
    def exog_vc(self):
        """The random-effects design as a scipy CSR array (built on request)."""
        n, m = self._cols.shape
        rows = np.repeat(np.arange(n), m)
        return sp.csr_array((self._vals.ravel(), (rows, self._cols.ravel())), shape=(n, self.k_vc))

    def _data(self) -> Data:
        """Device arrays in the model's dtype (cached)."""
        dt = self.dtype
        if dt not in self._data_cache:
            with precision(dt):
                n = self.nobs
                trials = np.ones(n) if self.n_trials is None else self.n_trials
                self._data_cache[dt] = Data(
                    y=jnp.asarray(self.endog, dt),
                    X=jnp.asarray(self.exog, dt),
                    Z=sparse.REDesign(jnp.asarray(self._cols, jnp.int32), jnp.asarray(self._vals, dt)),
                    ident=jnp.asarray(self.ident, jnp.int32),
                    n_trials=jnp.asarray(trials, dt),
                    weights=jnp.asarray(self.freq_weights, dt),
                    offset=jnp.asarray(self.offset, dt),
                    const=jnp.asarray(self._const, dt),
                    corr=tuple(CorrBlock(jnp.asarray(c), jnp.asarray(si), jnp.asarray(zi))
                               for c, si, zi in self._corr),
                    indep=jnp.asarray(self._indep, dt) if self._corr else None,
                )
        return self._data_cache[dt]

    def _prior(self) -> Prior:
        return Prior(jnp.asarray(self.fe_p, self.dtype), jnp.asarray(self.vcp_p, self.dtype))

    def _unpack(self, vec):
        kf, kp = self.k_fep, self.k_vcp
        return vec[:kf], vec[kf:kf + kp], vec[kf + kp:]

    def _params(self, vec) -> Params:
        vec = np.asarray(vec, dtype=np.float64)
        p = self.k_fep + self.k_vcp + self.k_vc
        if vec.shape != (p,):
            raise ValueError(f"params must have shape ({p},), got {vec.shape}")
        fe, vcp, vc = self._unpack(vec)
        return Params(jnp.asarray(fe, self.dtype), jnp.asarray(vcp, self.dtype),
                      jnp.asarray(vc, self.dtype))

    # ------------------------------------------------------------------ formula
    @classmethod
    def from_formula(cls, formula, vc_formulas, data, vcp_p=1, fe_p=2, *, n_trials=None,
                     offset=None, exposure=None, freq_weights=None, dtype=None, vb_rule="gh20"):
        """Build the model from a formula and a dict of variance-component formulas.

        Parameters
        ----------
        formula : str
            ``"y ~ x1 + C(f)"``: response and fixed effects (formulaic syntax, as statsmodels).
        vc_formulas : dict
            ``{name: one-sided formula}``; each entry is one set of random effects with a
            common variance, e.g. ``{"herd": "0 + C(herd)"}``.
        data : DataFrame
        vcp_p, fe_p : float
            Prior SDs of the log SDs and of the fixed effects.
        n_trials, offset, exposure, freq_weights : str or array, optional
            A column name of ``data`` or an array (binomial trials, offset on the linear
            predictor, Poisson exposure, frequency weights).

        Examples
        --------
        >>> from bayesglmm import BinomialBayesMixedGLM, datasets
        >>> df = datasets.expand_binomial(datasets.load("cbpp"), "incidence", "size")
        >>> model = BinomialBayesMixedGLM.from_formula("y ~ C(period)", {"herd": "0 + C(herd)"}, df)
        >>> model.k_fep, model.k_vcp, model.k_vc
        (4, 1, 15)
        """
        from ..formula.terms import split_formula

        cols_named = [v for v in (n_trials, offset, exposure, freq_weights) if isinstance(v, str)]
        fixed_formula, bars = split_formula(formula) if "|" in formula else (formula, [])
        fixed = design.build_fixed(fixed_formula, data, extra_columns=cols_named)
        vc = design.build_vc(vc_formulas, data)
        corr = []
        if bars:
            k_sd0 = len(vc.vcp_names)
            bar = design.build_bar_terms(bars, data, vc.k_vc, k_sd0)
            if vc.k_vc:
                vc.cols = np.concatenate([vc.cols, bar.cols], axis=1)
                vc.vals = np.concatenate([vc.vals, bar.vals], axis=1)
            else:
                vc.cols, vc.vals = bar.cols, bar.vals
            vc.ident = np.concatenate([vc.ident, bar.ident])
            vc.k_vc += len(bar.ident)
            vc.vc_names += bar.vc_names
            vc.vcp_names += bar.sd_names
            vc.terms += bar.terms
            corr = bar.corr
            vc.vcp_names += [zn for _, _, znames in corr for zn in znames]

        def col(v):
            return data[v].to_numpy(dtype=np.float64) if isinstance(v, str) else v

        model = cls.__new__(cls)
        model._init_arrays(
            fixed.endog, fixed.exog, vc.cols, vc.vals, vc.k_vc, vc.ident, vcp_p, fe_p,
            fixed.exog_names, vc.vcp_names, vc.vc_names, col(n_trials), col(offset),
            col(exposure), col(freq_weights), dtype, vb_rule, corr)
        model._named = True
        model._formula = (formula, dict(vc_formulas or {}), fixed, vc)
        model.endog_name = fixed.endog_name
        return model

    # ------------------------------------------------------------------ kernels
    def logposterior(self, params):
        """log p(y, fe, vcp, vc) up to the constants statsmodels also omits."""
        with precision(self.dtype):
            lp = _jitted_kernels(self.family, self.vb_rule)[0]
            return float(lp(self._params(params), self._data(), self._prior()))

    def logposterior_grad(self, params):
        """Gradient of :meth:`logposterior` (autodiff), packed like ``params``."""
        with precision(self.dtype):
            g = _jitted_kernels(self.family, self.vb_rule)[1](self._params(params), self._data(),
                                                               self._prior())
            return np.concatenate([np.asarray(x, np.float64) for x in g])

    def vb_elbo(self, vb_mean, vb_sd):
        """The mean-field ELBO at (vb_mean, vb_sd), each packed like ``params``."""
        with precision(self.dtype):
            el = _jitted_kernels(self.family, self.vb_rule)[2]
            return float(el(self._params(vb_mean), self._params(vb_sd), self._data(), self._prior()))

    def vb_elbo_grad(self, vb_mean, vb_sd):
        """Gradients of :meth:`vb_elbo` with respect to ``vb_mean`` and ``vb_sd``."""
        with precision(self.dtype):
            gm, gs = _jitted_kernels(self.family, self.vb_rule)[3](
                self._params(vb_mean), self._params(vb_sd), self._data(), self._prior())
            cat = lambda p: np.concatenate([np.asarray(x, np.float64) for x in p])
            return cat(gm), cat(gs)

    def predict(self, params, exog=None, linear=False):
        """Mean of the fixed-effects part: ``exog @ params[:k_fep]`` (plus the model's offset
        when ``exog`` is omitted), through the inverse link unless ``linear``."""
        params = np.asarray(params, dtype=np.float64)
        if exog is None:
            lin = self.exog @ params[:self.k_fep] + self.offset
        else:
            ex = check_2d(exog, "exog")
            lin = ex @ params[:ex.shape[1]]
        if linear:
            return lin
        with precision(np.float64):
            return np.asarray(self.family.mean(jnp.asarray(lin)))

    # ------------------------------------------------------------------ fitting helpers
    def _options(self, minim_opts) -> NewtonOptions:
        f64 = self.dtype == np.float64
        base = NewtonOptions(gtol=1e-8 if f64 else 1e-3, ftol=1e-13 if f64 else 1e-7,
                             cg_tol=1e-10 if f64 else 1e-5)
        opts = dict(minim_opts or {})
        if "maxiter" in opts:
            base = base._replace(maxiter=int(opts.pop("maxiter")))
        if "gtol" in opts:
            base = base._replace(gtol=float(opts.pop("gtol")))
        if "ftol" in opts:
            base = base._replace(ftol=float(opts.pop("ftol")))
        if opts:
            raise ValueError(f"unknown minim_opts {sorted(opts)}; use maxiter, gtol, ftol")
        return base

    def _scaled(self, scale_fe):
        """``(model to fit, transform)``; ``transform`` maps fitted fe back (see fit_map)."""
        if not scale_fe or self.k_fep == 0:
            return self, None
        X = self.exog
        mn, sc = X.mean(0), X.std(0)
        ixs = np.flatnonzero(sc > 1e-8)
        const = np.flatnonzero((sc <= 1e-8) & (np.abs(mn) > 0))
        center = len(const) > 0  # only an intercept can absorb the centring
        A = np.eye(self.k_fep)  # fe_original = A @ fe_scaled
        Xs = X.copy()
        if center:
            Xs[:, ixs] -= mn[ixs]
            A[const[0], ixs] = -mn[ixs] / sc[ixs] / mn[const[0]]
        Xs[:, ixs] /= sc[ixs]
        A[ixs, ixs] = 1 / sc[ixs]
        clone = object.__new__(type(self))
        clone.__dict__.update(self.__dict__)
        clone.exog = Xs
        clone._data_cache = {}
        return clone, A

    def _no_corr(self, what):
        if self._corr:
            raise ValueError(
                f"{what} does not support correlated random effects such as (1 + x | g): the "
                "joint mode drives their variances to zero and the mean-field family has no "
                "closed-form expectation for them; use fit_laplace(), or uncorrelated terms "
                "(1 | g) + (0 + x | g)")

    def _check_result(self, sol, what):
        status = int(sol.status)
        if status != 0:
            warnings.warn(
                f"{what} fitting did not converge ({STATUS_MESSAGES[status]}), "
                f"|gradient|={float(sol.grad_norm):.6g}",
                ConvergenceWarning, stacklevel=3)
        return OptimizeResult(
            success=status == 0, status=status, message=STATUS_MESSAGES[status],
            fun=float(sol.value), nit=int(sol.n_iter), grad_norm=float(sol.grad_norm),
            n_warm=int(sol.n_warm), n_fev=int(sol.n_fev), n_cg=int(sol.n_cg),
        )

    # ------------------------------------------------------------------ fits
    def fit(self, method="newton", minim_opts=None):
        """Equivalent to :meth:`fit_map`."""
        return self.fit_map(method, minim_opts)

    def fit_map(self, method="newton", minim_opts=None, scale_fe=False, rng=None):
        """Laplace approximation at the joint posterior mode of (fe, vcp, vc).

        Parameters
        ----------
        method : str
            ``"newton"`` (default): structured modified Newton with exact autodiff Hessians;
            ``"lbfgs"`` (alias ``"BFGS"``): optax's L-BFGS.
        minim_opts : dict, optional
            ``maxiter``, ``gtol`` (gradient ∞-norm), ``ftol`` (Newton decrement, relative).
        scale_fe : bool
            Fit with the fixed-effect columns centred (when there is an intercept) and scaled to
            unit variance, then map back to the original scale.  The fe prior then applies to
            the scaled coefficients (as in statsmodels).
        rng : None, int, numpy Generator or RandomState
            For the random starting values of the random effects (as statsmodels: fe = 0,
            vcp = 1, vc ~ N(0, 1)).  The solver moves the random effects to their prior mode
            (0) first when that has a higher posterior: far-out random starts in the flat
            tails of the likelihood otherwise cost many damped Newton steps.

        Returns
        -------
        BayesMixedGLMResults
            ``cov_params()`` is the inverse of the exact Hessian of −log p at the mode.
        """
        self._no_corr("fit_map")
        model, A = self._scaled(scale_fe)
        rng = check_random_state(rng)
        start_vc = rng.normal(size=self.k_vc)
        p = self.k_fep + self.k_vcp + self.k_vc
        dense = p <= DENSE_MAX and p * self.nobs <= DENSE_WORK_MAX
        # the full matrix: from the Schur complement (one colour) or, for crossed designs, from
        # p Hessian-vector products — only while that stays cheap
        full = p <= DENSE_COV_MAX and (self._n_colors == 1 or p * self.nobs <= DENSE_COV_WORK_MAX)
        opts = self._options(minim_opts)
        solve, covariance, _ = map_functions(self.family, dense, self._n_colors, _method(method),
                                             opts, full)
        with precision(self.dtype):
            dt = self.dtype
            a0 = jnp.concatenate([jnp.zeros(self.k_fep, dt), jnp.ones(self.k_vcp, dt)])
            v0 = jnp.asarray(start_vc, dt)[:, None]
            data, prior, color = model._data(), self._prior(), jnp.asarray(self._color)
            sol, u = solve(a0, v0, data, prior, color)
            cov = covariance(sol.a, u, data, prior, color)
            a, v = np.asarray(sol.a, np.float64), np.asarray(sol.v[:, 0], np.float64)
            cov_a, var_v = np.asarray(cov.cov_a, np.float64), np.asarray(cov.var_v, np.float64)
            cov_full = np.asarray(cov.full, np.float64) if full else None
        retvals = self._check_result(sol, "Laplace")
        retvals.x = np.concatenate([a, v])
        retvals.method = method
        params = retvals.x.copy()
        if A is not None:  # back to the original fe scale: fe = A fe_scaled
            kf = self.k_fep
            T = np.eye(p)
            T[:kf, :kf] = A
            params = T @ params
            cov_a = T[:len(a), :len(a)] @ cov_a @ T[:len(a), :len(a)].T
            if cov_full is not None:
                cov_full = T @ cov_full @ T.T
        variances = np.concatenate([np.diag(cov_a), var_v])
        cov_params = cov_full if cov_full is not None else cov_a
        return BayesMixedGLMResults(self, params, cov_params, retvals, variances=variances,
                                    method="map",
                                    extra={"cov_exact": bool(cov.exact)})

    def fit_vb(self, mean=None, sd=None, fit_method="newton", minim_opts=None, scale_fe=False,
               verbose=False, rng=None):
        """Mean-field variational Bayes: maximise the ELBO over (mean, log sd).

        Parameters
        ----------
        mean, sd : array_like, optional
            Starting values (packed like ``params``).  Defaults as statsmodels: mean 0 and
            log sd = −0.5 + 0.1·N(0, 1); the vcp means and all log sds are floored at −1.
        fit_method : str
            ``"newton"`` (default, structured Newton) or ``"lbfgs"``/``"BFGS"`` (optax L-BFGS).
        minim_opts : dict, optional
            ``maxiter``, ``gtol``, ``ftol``.
        scale_fe : bool
            As in :meth:`fit_map`.
        verbose : bool
            Print the optimiser's report after fitting.
        rng : None, int, Generator or RandomState
            For the random starting log-SDs (used only when ``sd`` is None).

        Returns
        -------
        BayesMixedGLMResults
            ``cov_params()`` is the vector of posterior variances.
        """
        self._no_corr("fit_vb")
        model, A = self._scaled(scale_fe)
        kf, kp, k = self.k_fep, self.k_vcp, self.k_vc
        p = kf + kp + k
        if mean is None:
            m = np.zeros(p)
        else:
            m = np.array(mean, dtype=np.float64)
            if len(m) != p:
                raise ValueError(f"mean has incorrect length, {len(m)} != {p}")
        if sd is None:
            s = -0.5 + 0.1 * check_random_state(rng).normal(size=p)
        else:
            sd = np.asarray(sd, dtype=np.float64)
            if len(sd) != p:
                raise ValueError(f"sd has incorrect length, {len(sd)} != {p}")
            if np.any(sd <= 0):
                raise ValueError("sd must be positive")
            s = np.log(sd)
        m[kf:kf + kp] = np.where(m[kf:kf + kp] < -1, -1, m[kf:kf + kp])
        s = np.where(s < -1, -1, s)
        if sd is None and not np.isfinite(model.vb_elbo(m, np.exp(s))):
            # statsmodels' start overflows when a covariate has a large scale (exp(η) with
            # Var(η) ∝ x²): start each fixed effect's sd at the default over the column's RMS
            rms = np.sqrt(np.mean(model.exog**2, axis=0))
            s[:kf] -= np.log(np.maximum(rms, 1.0))
        dense = 2 * p <= DENSE_MAX and 2 * p * self.nobs <= DENSE_WORK_MAX
        opts = self._options(minim_opts)
        solve, _ = vb_functions(self.family, self.vb_rule, dense, self._n_colors,
                                _method(fit_method), opts)
        with precision(self.dtype):
            dt = self.dtype
            a0 = jnp.asarray(np.concatenate([m[:kf + kp], s[:kf + kp]]), dt)
            v0 = jnp.asarray(np.stack([m[kf + kp:], s[kf + kp:]], axis=1), dt)
            data, prior, color = model._data(), self._prior(), jnp.asarray(self._color)
            sol = solve(a0, v0, data, prior, color)
            mean_p, sd_p = split_vb(sol.a, sol.v, kf)
            params = np.concatenate([np.asarray(x, np.float64) for x in mean_p])
            sds = np.concatenate([np.asarray(x, np.float64) for x in sd_p])
        retvals = self._check_result(sol, "VB")
        retvals.x = np.concatenate([params, np.log(sds)])
        retvals.method = fit_method
        if verbose:
            print(retvals)
        va = sds**2
        if A is not None:
            # independent factors in q: the variance of fe = A fe_scaled keeps the diagonal only
            params[:kf] = A @ params[:kf]
            va[:kf] = (A**2) @ va[:kf]
        return BayesMixedGLMResults(self, params, va, retvals, method="vb")


    def fit_laplace(self, priors=True, integrate=False, start=None, minim_opts=None):
        """Marginal Laplace: integrate the random effects out, then optimise (fe, vcp).

        At each (fe, vcp) the random effects' conditional mode is found by an inner Newton
        solve (differentiated implicitly) and ∫ p(y, vc | fe, vcp) dvc is replaced by its
        Laplace approximation.  ``priors=False`` maximises that approximate marginal
        likelihood — lme4's ``glmer`` (nAGQ = 1); ``priors=True`` finds the mode of the
        marginal posterior of (fe, vcp) under this model's priors.  Their covariance is the
        inverse of the exact autodiff Hessian there.

        Parameters
        ----------
        priors : bool
            Include the N(0, fe_p²) and N(0, vcp_p²) priors (default) or not (lme4).
        integrate : bool
            With ``priors=True``: also integrate over vcp by Gauss–Hermite quadrature
            (INLA-style), mixing the Gaussian approximations of fe | vcp.  The most accurate
            posterior summaries here (cbpp: fixed-effect means within 0.02 posterior SD and
            SDs within 3% of NUTS); see docs/which_fit.md.
        start : array_like, optional
            Starting (fe, vcp).
        minim_opts : dict, optional
            ``maxiter``, ``gtol``, ``ftol`` of the outer Newton iteration.

        Returns
        -------
        BayesMixedGLMResults
            With ``method="laplace"``; ``cov_params()`` is the covariance of (fe, vcp);
            extra attributes ``llf`` (the Laplace log-likelihood, lme4's logLik),
            ``log_post`` (log marginal posterior, priors only), ``is_singular``.
        """
        from ..fits.laplace import MarginalOptions, fit_marginal

        if integrate and not priors:
            raise ValueError("integrate=True needs priors=True (it integrates over the prior)")
        opts = MarginalOptions()
        for key, val in dict(minim_opts or {}).items():
            if key not in ("maxiter", "gtol", "ftol"):
                raise ValueError(f"unknown minim_opts {key!r}; use maxiter, gtol, ftol")
            opts = opts._replace(**{key: type(getattr(opts, key))(val)})
        if start is not None:
            start = np.asarray(start, dtype=np.float64)
            if start.shape != (self.k_fep + self.k_vcp,):
                raise ValueError(f"start must have shape ({self.k_fep + self.k_vcp},)")
        with precision(self.dtype):
            fit = fit_marginal(self.family, self._data(), self._prior(), self.k_fep,
                               priors=priors, start=start, dtype=self.dtype, opts=opts,
                               integrate=integrate)
        if not fit.success:
            warnings.warn(f"Marginal Laplace fitting did not converge ({fit.message}), "
                          f"|gradient|={float(fit.grad_norm):.6g}", ConvergenceWarning,
                          stacklevel=2)
        retvals = OptimizeResult(success=bool(fit.success), status=int(fit.status),
                                 message=fit.message, nit=int(fit.nit),
                                 grad_norm=float(fit.grad_norm), fun=float(-fit.llf
                                 if not priors else -fit.log_post), method="newton")
        if integrate:
            it = fit.integrated
            fe, vcp, cov = it.fe_mean, it.vcp_mean, it.cov
            vc, vc_sd = it.vc_mean, it.vc_sd
        else:
            fe, vcp, cov, vc, vc_sd = fit.fe, fit.vcp, fit.cov, fit.vc, fit.vc_sd
        params = np.concatenate([fe, vcp, vc])
        variances = np.concatenate([np.diag(cov), np.asarray(vc_sd) ** 2])
        if fit.is_singular:
            warnings.warn("A variance component is estimated at zero (singular fit); its log "
                          "SD is reported at the lower bound and its SD as NaN",
                          SingularFitWarning, stacklevel=2)
        return BayesMixedGLMResults(
            self, params, cov, retvals, variances=variances,
            method="laplace-integrated" if integrate else "laplace",
            extra={"llf": float(fit.llf), "log_post": float(fit.log_post),
                   "is_singular": bool(fit.is_singular), "priors": bool(priors),
                   "vc_sd_cond": np.asarray(fit.vc_sd_cond), "marginal": fit})


class BinomialBayesMixedGLM(_BayesMixedGLM):
    """Bayesian mixed logistic regression (statsmodels' ``BinomialBayesMixedGLM``).

    Parameters
    ----------
    endog : array_like (n,)
        0/1 responses, or success counts when ``n_trials`` is given.
    exog : array_like (n, k_fep)
        Fixed-effects design.
    exog_vc : array_like, DataFrame or scipy.sparse (n, k_vc)
        Random-effects design; kept sparse.
    ident : array_like of int (k_vc,)
        Variance component of each column of ``exog_vc``.
    vcp_p, fe_p : float
        Prior SDs of the log SDs (vcp) and of the fixed effects.
    fep_names, vcp_names, vc_names : list of str, optional
    n_trials : array_like, optional
        Binomial trials per row (keyword only; an extension of statsmodels).
    offset, freq_weights : array_like, optional
        Offset on the logit scale; frequency weights (a row of weight w counts w times).
    dtype : float32 or float64, optional
        Default float64 on CPU, float32 on accelerators.
    vb_rule : str
        Quadrature for the ELBO: ``"gh20"`` (Gauss–Hermite, 20 nodes; default), ``"ghK"`` or
        ``"statsmodels"`` (statsmodels' 10-point Gauss–Legendre rule, for exact parity).

    Examples
    --------
    >>> from bayesglmm import BinomialBayesMixedGLM, datasets
    >>> df = datasets.load("cbpp")
    >>> model = BinomialBayesMixedGLM.from_formula(
    ...     "incidence ~ C(period)", {"herd": "0 + C(herd)"}, df, n_trials="size")
    >>> result = model.fit_vb(rng=0)
    >>> round(float(result.fe_mean[0]), 1)
    -1.4
    """

    family = Binomial()


class PoissonBayesMixedGLM(_BayesMixedGLM):
    """Bayesian mixed Poisson regression (statsmodels' ``PoissonBayesMixedGLM``).

    Same parameters as :class:`BinomialBayesMixedGLM`, with ``exposure`` (a positive array;
    log(exposure) is added to the offset) instead of ``n_trials``.  The ELBO's E[exp(η)] is
    computed exactly (exp(m + v/2)) unless ``vb_rule="statsmodels"``.
    """

    family = Poisson()
