"""The user-facing linear mixed model, with statsmodels' ``MixedLM`` API."""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd

from ..checks import check_bool, check_formula, check_int, check_response_varies, check_start
from ..exceptions import SINGULAR_TOL, ConvergenceWarning, SingularFitWarning
from ..design.crossprod import cross_products
from ..formula.lmm import Design, design_from_arrays, lmm_design
from ..formula.random import check_covariates
from ..fits.lmm import fit_lmm, lmm_dtype, start_theta  # building a model imports no JAX
from .lmm_options import subset_rows as _subset, unused_keywords as _unused
from .lmm_statsmodels import StatsmodelsModelMixin

if TYPE_CHECKING:  # building a model imports no JAX
    from collections.abc import Mapping, Sequence

    from numpy.typing import ArrayLike, DTypeLike
    from typing_extensions import Self

    from ..progress import Progress
    from ..results.lmm import MixedLMResults
    from ..sharding import DevicesLike
    from .lmm_params import MixedLMParams

__all__ = ["MixedLM", "mixedlm"]


class MixedLM(StatsmodelsModelMixin):
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
        statsmodels' dict of dicts ``{name: {group: (n_g, k_g) array}}`` is accepted too
        (with statsmodels' ``FutureWarning``).
    use_sqrt : bool
        statsmodels' layout of packed covariance parameters (``loglike``, ``score``,
        ``start_params``): Cholesky factor and square roots (default) or the relative
        covariances themselves.  The fit does not depend on it.
    missing : {"none", "raise", "drop"}
        Rows with NaN in any array: an error, or dropped (with a warning).
    dtype : float32 or float64, optional
        Precision of the JAX computations (float64 by default on CPU).

    Other statsmodels attributes and methods (``data``, ``groups``, ``group_labels``,
    ``loglike``, ``score``, ``hessian``, ``get_distribution``...) are described in
    :mod:`bayesglmm.models.lmm_statsmodels`.

    Examples
    --------
    >>> from bayesglmm import datasets, mixedlm
    >>> df = datasets.load("sleepstudy")
    >>> r = mixedlm("Reaction ~ Days", df, groups="Subject", re_formula="~Days").fit()
    >>> print(round(r.fe_params["Days"], 4))
    10.4673
    """

    def __init__(self, endog: ArrayLike, exog: ArrayLike, groups: ArrayLike,
                 exog_re: ArrayLike | None = None,
                 exog_vc: Mapping[str, ArrayLike | Mapping[Any, ArrayLike]] | None = None,
                 use_sqrt: bool = True, missing: Literal["none", "raise", "drop"] = "none", *,
                 dtype: DTypeLike | None = None, **kwargs: Any) -> None:
        _unused(kwargs, "MixedLM")
        self._init(design_from_arrays(endog, exog, groups, exog_re, exog_vc, missing), None,
                   dtype)
        self.use_sqrt = bool(use_sqrt)
        self._is_pandas = any(isinstance(a, (pd.Series, pd.DataFrame)) for a in (endog, exog))

    def _init(self, design: Design, formula, dtype):
        check_covariates(design.terms)  # a covariate zero in every row: not identified
        check_response_varies(design.y, design.X)
        self.design = design
        self.formula = formula
        self.dtype = lmm_dtype(dtype)
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
        self._cp: dict = {}
        # statsmodels' side: θ blocks in θ order as (kind, θ indices), the layout of ψ
        blocks: dict = {}
        for t, ti in zip(d.terms, self._theta_index):
            blocks.setdefault(t.tkey, (t.kind, ti))
        self._blocks = sorted(blocks.values(), key=lambda b: int(b[1][b[1] >= 0].min()))
        self.use_sqrt, self.reml, self._is_pandas = True, True, formula is not None
        self._frame = None
        self._row_labels = d.row_index

    @classmethod
    def from_formula(cls, formula: str, data: pd.DataFrame, re_formula: str | None = None,
                     vc_formula: Mapping[str, str] | None = None,
                     subset: ArrayLike | None = None, use_sparse: bool = False,
                     missing: Literal["none", "raise", "drop"] = "none", *,
                     groups: str | ArrayLike | None = None, use_sqrt: bool = True,
                     dtype: DTypeLike | None = None, **kwargs: Any) -> Self:
        """Model from a formula; see :func:`mixedlm` (statsmodels' positional order:
        ``formula, data, re_formula, vc_formula, subset, use_sparse, missing``; ``groups`` by
        keyword).  statsmodels' ``subset`` (a boolean mask or row labels of ``data``) selects
        rows first; ``use_sparse`` is accepted (the cross-products choose their storage
        themselves)."""
        _unused(kwargs, "MixedLM.from_formula")
        _check_positional_groups(formula, data, groups, re_formula)
        data, groups = _subset(data, groups, subset)
        obj = cls.__new__(cls)
        check_formula(formula)
        obj._init(lmm_design(formula, data, groups, re_formula, vc_formula, missing), formula,
                  dtype)
        obj.use_sqrt = bool(use_sqrt)
        obj._frame = data
        return obj

    # ------------------------------------------------------------------ internals
    def _crossprod(self, dtype, sparse=None, mesh=None):
        """Cross-products and structure, cached per (dtype, storage, mesh); with a ``mesh``
        (bayesglmm.sharding) the pass over the rows runs on its devices, rows sharded
        (design.crossprod_sharded)."""
        key = (np.dtype(dtype).name, sparse) if mesh is None else (np.dtype(dtype).name, sparse,
                                                                   mesh)
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
            args = (X, y, [t.codes for t in terms], [t.z for t in terms],
                    [self._theta_index[i] for i in self._order], self.n_theta, dtype, sparse)
            if mesh is None:
                self._cp[key] = cross_products(*args)
            else:
                from ..design.crossprod_sharded import cross_products_sharded

                self._cp[key] = cross_products_sharded(*args, mesh)
        return self._cp[key]

    def deviance(self, theta: ArrayLike, reml: bool = True, dtype: DTypeLike | None = None,
                 sparse: bool | None = None) -> float:
        """Profiled deviance (ML) or REML criterion at ``theta`` (lme4's θ layout).

        ``sparse`` forces the storage of the cross-term block (for tests); ``None`` chooses.
        """
        import jax.numpy as jnp

        from .._precision import precision
        from ..kernels.lmm import deviance

        dt = lmm_dtype(dtype or self.dtype)
        with precision(dt):
            cp, st = self._crossprod(dt, sparse)
            return float(deviance(jnp.asarray(theta, dt), cp, st, reml))

    def fit(self, start_params: ArrayLike | MixedLMParams | None = None, reml: bool = True,
            niter_sa: int = 0, do_cg: bool = True, fe_pen: Any = None, cov_pen: Any = None,
            free: MixedLMParams | None = None, full_output: bool = False,
            method: str | Sequence[str] | None = "auto", *, maxiter: int = 1000,
            dtype: DTypeLike | None = None, gtol: float | None = None,
            cov_type: str | None = None, progress: bool | Progress = False,
            devices: DevicesLike = None, **fit_kwargs: Any) -> MixedLMResults:
        """Fit by minimising the profiled deviance (``reml=True``: the REML criterion).
        statsmodels' positional order (``start_params, reml, niter_sa, do_cg, fe_pen,
        cov_pen, free, full_output, method``); the rest by keyword.

        Parameters
        ----------
        reml : bool
            REML (default) or maximum likelihood.
        method : str
            ``"auto"`` (the default: ``"newton"`` where the exact autodiff Hessian is cheap,
            a small dense block, else ``"lbfgs-only"``; ``fits.lmm.default_method``),
            ``"newton"`` (bound-constrained Newton with the exact Hessian), ``"lbfgs"``
            (scipy's L-BFGS-B on the value and gradient, then the same Newton steps while they
            can still lower the deviance) or ``"lbfgs-only"`` (L-BFGS-B alone).  All stop at
            the same optimum; see ``fits.lmm_theta.minimise_theta``.
            statsmodels' method names (``"bfgs"``, ``"cg"``, ``"powell"``...) and lists of
            them run ``"newton"``.
        start_params : (n_theta,) array_like or MixedLMParams, optional
            Starting θ (default: λ = I, as lme4); also statsmodels' forms (a
            :class:`~bayesglmm.models.lmm_params.MixedLMParams`, or a packed vector with or
            without the fixed effects first).
        maxiter : int
        dtype : float32 or float64, optional
        free : MixedLMParams, optional
            statsmodels' mask of estimated parameters: a diagonal ``cov_re`` fits independent
            random effects; other masks warn and are not applied.
        gtol : float, optional
            Largest acceptable gradient: the fit stops on its Newton decrement (tighter); a
            ``ConvergenceWarning`` if the final gradient exceeds ``gtol``.
        full_output : bool
            Keep a record of the optimiser in ``results.hist``.
        progress : bool or bayesglmm.progress.Progress
            Report each deviance evaluation on stderr (evaluation count, deviance, largest
            gradient entry, elapsed time) once the fit has run for 2 s (``bayesglmm.progress``).
        devices : None, "all", int, list of jax.Device or one-axis jax.sharding.Mesh
            Where the one pass over the rows runs (bayesglmm.sharding): ``None`` (default) on
            the host, as always; otherwise with the rows sharded over these devices (``"all"``:
            every device, across processes under ``jax.distributed``; an int: the first n),
            the cross-products summed across them.  The deviance depends on the
            cross-products only, so the minimisation that follows is the same on every
            process.  See docs/scaling.md.
        cov_type, niter_sa, do_cg, fe_pen, cov_pen, **fit_kwargs
            statsmodels' other keywords: accepted; one that cannot be honoured gives an
            :class:`~bayesglmm.exceptions.IgnoredArgumentWarning` saying why.

        Returns
        -------
        MixedLMResults
        """
        from ..results.lmm import MixedLMResults

        from .lmm_options import fit_options
        from .lmm_params import theta_from_start

        if isinstance(start_params, (bool, np.bool_)):
            raise TypeError(
                f"fit's first positional argument is start_params (statsmodels' order: "
                f"start_params, reml, ...), got {start_params!r}: pass reml={start_params!r} "
                "by keyword")
        fit_kwargs.update({k: v for k, v in (("fe_pen", fe_pen), ("cov_pen", cov_pen))
                           if v is not None})
        methods = {"auto": "auto", "newton": "newton", "lbfgs": "lbfgs", "lbfgsb": "lbfgs",
                   "L-BFGS-B": "lbfgs", "lbfgs-only": "lbfgs-only"}
        ours = isinstance(method, str) and method in methods
        opts = fit_options(self, "newton" if ours or method is None else method, free, gtol,
                           full_output, cov_type, niter_sa, do_cg, stacklevel=2, **fit_kwargs)
        if not ours or not isinstance(method, str):  # statsmodels' names: the default
            method = "auto"  # method reaches the same optimum
        re_term = self._re_term
        if opts.diag_re and re_term is not None and re_term.kind == "re" and re_term.q > 1:
            res = self._diag_model().fit(reml=reml, method=method, maxiter=maxiter,
                                         dtype=dtype, gtol=gtol, full_output=full_output,
                                         progress=progress, devices=devices)
            self.reml = res.reml
            return res
        if start_params is not None and (hasattr(start_params, "cov_re") or not self.use_sqrt
                                         or np.shape(start_params) != (self.n_theta,)):
            start_params = theta_from_start(start_params, self)
        reml = check_bool(reml, "reml")
        maxiter = check_int(maxiter, "maxiter")
        dt = lmm_dtype(dtype or self.dtype)
        if start_params is not None:
            start_params = check_start(start_params, "start_params", self.n_theta)
        if devices is None:
            cp, st = self._crossprod(dt)
        else:
            from ..sharding import make_mesh

            cp, st = self._crossprod(dt, None, make_mesh(devices))
        theta0 = (self._start(cp, st) if start_params is None
                  else np.asarray(start_params, np.float64))
        if theta0.shape != (self.n_theta,):
            raise ValueError(f"start_params must have {self.n_theta} values, got {theta0.shape}")
        from ..progress import reporting

        with reporting(progress, "MixedLM.fit"):
            est = fit_lmm(cp, st, theta0, self._lower, self._diag, reml, dt, maxiter=maxiter,
                          method=methods[method])
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
        blups: list[np.ndarray | None] = [None] * len(self.design.terms)
        off = 0
        for pos, i in enumerate(self._order):
            t = self.design.terms[i]
            if pos == 0:
                blups[i] = est.b1
            else:
                size = t.n_levels * t.q
                blups[i] = est.b2[off : off + size].reshape(t.n_levels, t.q)
                off += size
        self.reml = reml  # statsmodels' loglike/score/hessian follow the last fit
        if opts.gtol is not None and fitres.grad_norm > opts.gtol:
            warnings.warn(
                f"the fit stopped with gradient norm {fitres.grad_norm:.3g} > gtol={opts.gtol:g}",
                ConvergenceWarning, stacklevel=2)
        res = MixedLMResults(
            model=self, theta=theta, fe=beta, cov_fe=est.sigma2 * est.txx_inv, scale=est.sigma2,
            deviance=est.deviance, reml=reml, blups=blups, fit=fitres, is_singular=singular,
            cov_psi=est.cov_psi,
        )
        if opts.full_output:
            res.hist = [{"theta": theta, "deviance": est.deviance, "n_evals": fitres.n_evals,
                         "grad_norm": fitres.grad_norm, "message": fitres.message}]
        return res

    def _diag_model(self):
        """This model with the ``groups`` random effects independent (diagonal ``cov_re``):
        statsmodels' ``fit(free=...)`` with a diagonal mask."""
        import copy
        import dataclasses

        if not hasattr(self, "_diag_cache"):
            d = self.design
            terms = [dataclasses.replace(t, kind="diag") if t is self._re_term else t
                     for t in d.terms]
            new = MixedLM.__new__(MixedLM)
            new._init(dataclasses.replace(d, terms=terms), self.formula, self.dtype)
            for k in ("use_sqrt", "_is_pandas", "_frame", "_row_labels"):
                setattr(new, k, copy.copy(getattr(self, k)))
            new._sm_full_layout = True  # results list cov_re's covariances (held at 0)
            self._diag_cache = new
        return self._diag_cache

    def _start(self, cp=None, struct=None):
        """Starting θ: λ = I (lme4), with moment estimates for scalar terms from the
        cross-products (:func:`bayesglmm.fits.lmm.start_theta`; the model's own, in its dtype,
        unless given)."""
        if cp is None:
            cp, struct = self._crossprod(lmm_dtype(self.dtype))
        return start_theta(cp, struct, self._theta0)

    def __repr__(self) -> str:
        """Formula, rows, fixed effects and each factor's levels (bayesglmm._repr)."""
        from .._repr import lmm_repr

        return lmm_repr(self)


def _check_positional_groups(formula, data, groups, re_formula) -> None:
    """A column name where statsmodels' order puts ``re_formula``: the grouping factor passed
    by position (``groups`` is keyword-only, as in statsmodels)."""
    if (groups is None and isinstance(re_formula, str) and "~" not in re_formula
            and "|" not in str(formula) and isinstance(data, pd.DataFrame)
            and re_formula.strip() in map(str, data.columns)):
        raise TypeError(
            f"mixedlm's third positional argument is re_formula (statsmodels' order: formula, "
            f"data, re_formula, vc_formula, subset, use_sparse, missing), and got the column "
            f"name {re_formula!r} with no groups: pass the grouping factor by keyword, "
            f"groups={re_formula!r}")


def mixedlm(formula: str, data: pd.DataFrame, re_formula: str | None = None,
            vc_formula: Mapping[str, str] | None = None, subset: ArrayLike | None = None,
            use_sparse: bool = False, missing: Literal["none", "raise", "drop"] = "none", *,
            groups: str | ArrayLike | None = None, dtype: DTypeLike | None = None,
            **kwargs: Any) -> MixedLM:
    """A linear mixed model from a formula, as ``statsmodels.formula.api.mixedlm`` (the same
    positional order; ``groups`` by keyword, as there).

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
    subset : array_like, optional
        statsmodels' row selection: a boolean mask or row labels of ``data``.
    use_sparse : bool
        Accepted (the cross-products choose their storage themselves).
    missing : {"none", "raise", "drop"}
        NaN in a used column raises ``ValueError`` (``"none"``, ``"raise"``) or the rows are
        dropped with a warning (``"drop"``; the count is ``model.n_dropped``).
    **kwargs
        ``use_sqrt`` as statsmodels (see :meth:`MixedLM.from_formula`).

    Examples
    --------
    >>> from bayesglmm import datasets
    >>> from bayesglmm.lmm import mixedlm
    >>> pen = datasets.load("penicillin")
    >>> r = mixedlm("diameter ~ 1 + (1 | plate) + (1 | sample)", pen).fit()
    >>> round(r.llf, 3)
    -165.43
    """
    _check_positional_groups(formula, data, groups, re_formula)
    return MixedLM.from_formula(formula, data, re_formula, vc_formula, subset, use_sparse,
                                missing, groups=groups, dtype=dtype, **kwargs)

