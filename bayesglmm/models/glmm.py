"""``BinomialBayesMixedGLM`` and ``PoissonBayesMixedGLM``: statsmodels' classes on JAX.

The classes validate and ingest their input (models.base), dispatch to the fits (fits.map,
fits.vb, fits.laplace), warn from the fits' status codes and name the results
(:class:`BayesMixedGLMResults`).  ``minim_opts`` is documented in models.base.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd

from ..checks import check_bool, check_formula
from ..exceptions import SingularFitWarning
from ..families import Binomial, Poisson
from ..fits import laplace as _laplace
from ..fits import map as _map
from ..fits import vb as _vb
from ..progress import reporting
from ..results.glmm import BayesMixedGLMResults
from ..sharding import DevicesLike, make_mesh
from ..solvers.newton import default_options
from ..validation import check_length, check_random_state
from .base import MixedGLMBase, check_vb_start, optimize_result, parse_method, parse_minim_opts
from .glmm_statsmodels import StatsmodelsGLMMMixin

if TYPE_CHECKING:
    from collections.abc import Sequence

    import pandas as pd
    from numpy.typing import ArrayLike, DTypeLike
    from typing_extensions import Self

    from ..progress import Progress
    from .stream import StreamingBayesMixedGLM

__all__ = ["BinomialBayesMixedGLM", "PoissonBayesMixedGLM"]


class _BayesMixedGLM(StatsmodelsGLMMMixin, MixedGLMBase):
    _results_class = BayesMixedGLMResults  # what the fits return (models.negbin: a subclass)

    @classmethod
    def from_formula(cls, formula: str, vc_formulas: dict[str, str] | None, data: pd.DataFrame,
                     vcp_p: float = 1, fe_p: float = 2, *, n_trials: str | ArrayLike | None = None,
                     offset: str | ArrayLike | None = None,
                     exposure: str | ArrayLike | None = None,
                     freq_weights: str | ArrayLike | None = None, dtype: DTypeLike | None = None,
                     vb_rule: str = "statsmodels",
                     missing: Literal["raise", "none", "drop"] = "raise",
                     vcp_names: Sequence[str] | None = None,
                     vc_names: Sequence[str] | None = None) -> Self:
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
        missing : {"raise", "none", "drop"}
            NaN in a used column raises ``ValueError`` naming it (``"raise"``, ``"none"``) or
            its rows are dropped with a warning (``"drop"``; arrays given for ``n_trials``,
            ``offset``, ... are subset alike).
        vcp_names, vc_names : list of str, optional
            Names of the variance parameters and of the random effects, instead of those
            derived from ``vc_formulas`` (statsmodels' keywords).

        Examples
        --------
        >>> from bayesglmm import BinomialBayesMixedGLM, datasets
        >>> df = datasets.expand_binomial(datasets.load("cbpp"), "incidence", "size")
        >>> model = BinomialBayesMixedGLM.from_formula("y ~ C(period)", {"herd": "0 + C(herd)"}, df)
        >>> model.k_fep, model.k_vcp, model.k_vc
        (4, 1, 15)
        """
        from ..formula.glmm import glmm_design

        check_formula(formula)
        # offset/exposure given as columns: read from new data by predict (results.glmm)
        offset_cols = {k: v for k, v in (("offset", offset), ("exposure", exposure))
                       if isinstance(v, str)}
        args = {"n_trials": n_trials, "offset": offset, "exposure": exposure,
                "freq_weights": freq_weights}
        if missing == "drop" and isinstance(data, pd.DataFrame):
            # arrays given for these arguments: their rows with NaN are dropped as the data's
            # (through a column of their own, named after the argument)
            arrays = {k: np.asarray(v) for k, v in args.items()
                      if v is not None and not isinstance(v, str) and np.ndim(v) == 1}
            for k, v in arrays.items():
                check_length(len(data), len(v), k)
            if arrays:  # (assign copies the frame)
                data = data.assign(**{f"{k}=<array>": v for k, v in arrays.items()})
                args.update({k: f"{k}=<array>" for k in arrays})
        named = [v for v in args.values() if isinstance(v, str)]
        d = glmm_design(formula, vc_formulas, data, extra=named, missing=missing)

        def col(v):
            return d.extra[v] if isinstance(v, str) else d.subset(v)

        n_trials, offset, exposure, freq_weights = (args[k] for k in (
            "n_trials", "offset", "exposure", "freq_weights"))

        model = cls.__new__(cls)
        model._init_arrays(
            d.fixed.y, d.fixed.X, d.cols, d.vals, d.k_vc, d.ident, vcp_p, fe_p,
            d.fixed.xnames, _names(vcp_names, d.vcp_names, "vcp_names"),
            _names(vc_names, d.vc_names, "vc_names"), col(n_trials), col(offset),
            col(exposure), col(freq_weights), dtype, vb_rule, d.corr)
        model._named = True
        model._formula = (formula, dict(vc_formulas or {}), d)
        model._offset_cols = offset_cols
        model.endog_name = d.fixed.yname
        return model

    @classmethod
    def from_parquet(cls, path: str, formula: str, vc_formulas: dict | None = None, *,
                     n_trials: str | None = None, offset: str | None = None,
                     exposure: str | None = None, vcp_p: float = 1, fe_p: float = 2,
                     batch_rows: int | None = None, missing: str = "raise",
                     dtype: object = None, vb_rule: str = "statsmodels"
                     ) -> StreamingBayesMixedGLM:
        """A model whose rows stay in a Parquet file, fitted out of core by ``fit_vb``.

        One pass over ``path`` checks the used columns as :meth:`from_formula` does and finds
        the levels; ``fit_vb`` then streams minibatches of ``batch_rows`` rows (default
        16,384) in memory O(batch + levels).  ``n_trials``, ``offset``, ``exposure`` are
        column names.  Returns a ``models.stream.StreamingBayesMixedGLM``; see
        docs/out_of_core.md.
        """
        from .stream import from_parquet

        return from_parquet(cls.family, path, formula, vc_formulas, n_trials=n_trials,
                            offset=offset, exposure=exposure, vcp_p=vcp_p, fe_p=fe_p,
                            batch_rows=batch_rows, missing=missing, dtype=dtype,
                            vb_rule=vb_rule)

    # ------------------------------------------------------------------ fits
    def fit(self, method: str = "newton", minim_opts: dict[str, float] | None = None, *,
            devices: DevicesLike = None) -> BayesMixedGLMResults:
        """Equivalent to :meth:`fit_map`."""
        return self.fit_map(method, minim_opts, devices=devices)

    def fit_map(self, method: str = "newton", minim_opts: dict[str, float] | None = None,
                scale_fe: bool = False,
                rng: int | np.random.Generator | np.random.RandomState | None = None,
                progress: bool | Progress = False, *, devices: DevicesLike = None
                ) -> BayesMixedGLMResults:
        """Laplace approximation at the joint posterior mode of (fe, vcp, vc) (fits.map).

        Parameters
        ----------
        method : str
            ``"newton"`` (default): structured modified Newton with exact autodiff Hessians;
            ``"lbfgs"`` (alias ``"BFGS"``): optax's L-BFGS.
        minim_opts : dict, optional
            ``maxiter``, ``gtol``, ``ftol`` (models.base).
        scale_fe : bool
            Fit with the fixed-effect columns centred (when there is an intercept) and scaled to
            unit variance, then map back to the original scale.  The fe prior then applies to
            the scaled coefficients (as in statsmodels).
        rng : None, int, numpy Generator or RandomState
            For the random start of the random effects (as statsmodels: fe = 0, vcp = 1,
            vc ~ N(0, 1)); the solver first moves them to their prior mode 0 where that has a
            higher posterior.
        progress : bool or bayesglmm.progress.Progress
            Report the iterations on stderr (iteration, objective, gradient norm, elapsed
            time) once the fit has run for 2 s (``bayesglmm.progress``).
        devices : None, "all", int, list of jax.Device or one-axis jax.sharding.Mesh
            Devices the rows are sharded over (bayesglmm.sharding): ``None`` (default) one
            device; ``"all"`` every device ``jax.devices()`` lists (across processes under
            ``jax.distributed``); an int n the first n; a list of devices; or a mesh with one
            axis.  Row arrays are split along that axis, parameters and level-wise arrays
            replicated; results are the same to rounding.  See docs/scaling.md.

        Returns
        -------
        BayesMixedGLMResults
            ``cov_params()`` is the inverse of the exact Hessian of −log p at the mode.
        """
        self._no_corr("fit_map")
        self._check_rank("fit_map")
        scale_fe = check_bool(scale_fe, "scale_fe")
        mesh = make_mesh(devices)
        fine = self._fine(self.k_fep + self.k_vcp + self.k_vc)
        data, _, A = self._fit_data(scale_fe, fine, mesh)
        color, _ = self._padded_design(fine)
        with reporting(progress, "fit_map"):
            fit = _map.fit_map(self.family, data, self._prior(), color=color,
                               n_colors=self._n_colors, method=parse_method(method),
                               opts=parse_minim_opts(minim_opts, default_options(self.dtype)),
                               rng=check_random_state(rng), fe_transform=A, k_vc=self.k_vc,
                               nobs=self.nobs)
        retvals = optimize_result(fit.solution, "Laplace")
        retvals.x = np.concatenate([fit.solution.a, fit.solution.v[:, 0]])
        retvals.method = method
        self._check_fit(retvals, fit.params, fit.variances, "fit_map")
        return self._results_class(self, fit.params, fit.cov, retvals, variances=fit.variances,
                                    method="map", extra={"cov_exact": fit.cov_exact})

    def fit_vb(self, mean: ArrayLike | None = None, sd: ArrayLike | None = None,
               fit_method: str = "auto", minim_opts: dict[str, float] | None = None,
               scale_fe: bool = False, verbose: bool = False,
               rng: int | np.random.Generator | np.random.RandomState | None = None,
               progress: bool | Progress = False, *, devices: DevicesLike = None
               ) -> BayesMixedGLMResults:
        """Mean-field variational Bayes: maximise the ELBO over (mean, log sd) (fits.vb).

        Parameters
        ----------
        mean, sd : array_like, optional
            Starting values (packed like ``params``).  Defaults as statsmodels: mean 0 and
            log sd = −0.5 + 0.1·N(0, 1); the vcp means and all log sds are floored at −1.
        fit_method : str
            ``"auto"`` (default): BFGS driven from the host over one compiled
            value-and-gradient program for small float64 problems (up to 300 parameters and
            parameters × rows ≤ 10⁵, where compiling the Newton loop would cost more than the
            fit), the structured Newton otherwise (fits.vb); ``"newton"`` (structured Newton)
            or ``"lbfgs"``/``"BFGS"`` (optax L-BFGS) always.
        minim_opts : dict, optional
            ``maxiter``, ``gtol``, ``ftol`` (models.base); on the host BFGS route ``maxiter``
            caps its iterations (default 2,000).
        scale_fe : bool
            As in :meth:`fit_map`.
        verbose : bool
            Print the optimiser's report after fitting.
        rng : None, int, Generator or RandomState
            For the random starting log-SDs (used only when ``sd`` is None).
        progress : bool or bayesglmm.progress.Progress
            Report the iterations on stderr (iteration, objective, gradient norm, elapsed
            time) once the fit has run for 2 s (``bayesglmm.progress``).
        devices : None, "all", int, list of jax.Device or one-axis jax.sharding.Mesh
            As in :meth:`fit_map`.

        Returns
        -------
        BayesMixedGLMResults
            ``cov_params()`` is the vector of posterior variances.
        """
        self._no_corr("fit_vb")
        self._check_rank("fit_vb")
        scale_fe = check_bool(scale_fe, "scale_fe")
        mean, sd = check_vb_start(mean, sd, self.k_fep + self.k_vcp + self.k_vc)
        mesh = make_mesh(devices)
        fine = self._fine(2 * (self.k_fep + self.k_vcp + self.k_vc))
        data, X, A = self._fit_data(scale_fe, fine, mesh)
        color, _ = self._padded_design(fine)
        with reporting(progress, "fit_vb"):
            fit = _vb.fit_vb(self.family, self.vb_rule, data, self._prior(), color=color,
                             n_colors=self._n_colors, k_vcp=self.k_vcp, X=X,
                             method=parse_method(fit_method, auto=True),
                             opts=parse_minim_opts(minim_opts, default_options(self.dtype)),
                             mean=mean, sd=sd,
                             rng=None if sd is not None else check_random_state(rng),
                             fe_transform=A, k_vc=self.k_vc,
                             bfgs_maxiter=None if not minim_opts or "maxiter" not in minim_opts
                             else int(minim_opts["maxiter"]))
        retvals = optimize_result(fit.solution, "VB")
        retvals.x = fit.x
        retvals.method = fit_method
        self._check_fit(retvals, fit.params, fit.variances, "fit_vb")
        if verbose:
            print(retvals)
        return self._results_class(self, fit.params, fit.variances, retvals, method="vb")

    def fit_laplace(self, priors: bool = True, integrate: bool | int | str = False,
                    start: ArrayLike | None = None, minim_opts: dict[str, float] | None = None,
                    progress: bool | Progress = False, *, devices: DevicesLike = None
                    ) -> BayesMixedGLMResults:
        """Marginal Laplace: integrate the random effects out, then optimise (fe, vcp).

        At each (fe, vcp) the random effects' conditional mode is found by an inner Newton
        solve (differentiated implicitly) and ∫ p(y, vc | fe, vcp) dvc is replaced by its
        Laplace approximation (fits.laplace).  ``priors=False`` maximises that approximate
        marginal likelihood — lme4's ``glmer`` (nAGQ = 1); ``priors=True`` finds the mode of
        the marginal posterior of (fe, vcp) under this model's priors.  Their covariance is
        the inverse of the exact autodiff Hessian there.

        Parameters
        ----------
        priors : bool
            Include the N(0, fe_p²) and N(0, vcp_p²) priors (default) or not (lme4).
        integrate : bool, int or str
            With ``priors=True``: also integrate over vcp by Gauss–Hermite quadrature
            (INLA-style, fits.integrate), mixing the Gaussian approximations of fe | vcp.  The
            most accurate posterior summaries here (cbpp and grouseticks: means within 0.04
            posterior SD and SDs within 2% of NUTS); see docs/which_fit.md.  ``True``: the
            default node design — a product grid up to two variance parameters; beyond, the
            central composite design (CCD), replaced by a lattice that follows the posterior
            (fits.lattice, ~10× the nodes) when log p(vcp | y) at the CCD's points departs
            from the mode's Gaussian (three variance parameters; with more, an
            ``IntegrationWarning`` says so); ``"ccd"`` or ``"grid"``: that design; an int
            n ≥ 2: the product grid of n points per variance parameter (n^k nodes).
        start : array_like, optional
            Starting (fe, vcp).
        minim_opts : dict, optional
            ``maxiter``, ``gtol``, ``ftol`` of the outer Newton iteration (models.base).
        progress : bool or bayesglmm.progress.Progress
            Report the iterations on stderr (iteration, objective, gradient norm, elapsed
            time) once the fit has run for 2 s (``bayesglmm.progress``).
        devices : None, "all", int, list of jax.Device or one-axis jax.sharding.Mesh
            As in :meth:`fit_map`.

        Returns
        -------
        BayesMixedGLMResults
            With ``method="laplace"``; ``cov_params()`` is the covariance of (fe, vcp);
            extra attributes ``llf`` (the Laplace log-likelihood, lme4's logLik),
            ``log_post`` (log marginal posterior, priors only), ``is_singular``.
        """
        opts = parse_minim_opts(minim_opts, _laplace.default_options(self.dtype))
        priors, integrate, start, keep = self._laplace_checks(priors, integrate, start)
        mesh = make_mesh(devices)
        fine = self._fine(self.k_fep + self.k_vcp + self.k_vc)
        _, mode = self._padded_design(fine)
        data = self._drop_columns(self._data(True, fine, mesh), keep)
        with reporting(progress, "fit_laplace"):
            fit = _laplace.fit_laplace(
                self.family, data, self._prior(), data.X.shape[1], mode=mode, priors=priors,
                start=start, opts=opts, integrate=bool(integrate),
                n_points=integrate if type(integrate) is int else None,
                design=integrate if isinstance(integrate, str) else "auto")
        fit = self._restore_columns(_real_levels(fit, self.k_vc), keep)
        return self._laplace_results(fit, keep, priors, bool(integrate), stacklevel=3)

    def _laplace_results(self, fit: _laplace.LaplaceFit, keep, priors: bool, integrate: bool,
                         stacklevel: int = 2) -> BayesMixedGLMResults:
        """The results of a fits.laplace fit on the real levels and columns (``keep``: the
        fixed-effect columns fitted, None for all), with the warnings of the fit; also how
        ``fit_many``'s ``result(j)`` builds them."""
        retvals = optimize_result(fit.solution, "Marginal Laplace", counters=False)
        retvals.method = "newton"
        if fit.is_singular:
            n_sd = self._k_sd
            what = [str(self.vcp_names[j]) for j in np.flatnonzero(fit.singular)]
            sds = [w for j, w in zip(np.flatnonzero(fit.singular), what) if j < n_sd]
            msg = "singular fit (lme4's isSingular):"
            if sds:
                msg += (f" variance component(s) {', '.join(map(repr, sds))} estimated at "
                        "zero, their log SD reported at the lower bound and their SD as NaN;")
            if len(sds) < len(what):
                msg += (" a correlated term's covariance is singular (a correlation at ±1), "
                        f"its correlation parameter(s) {', '.join(map(repr, what[len(sds):]))} "
                        "reported without SEs;")
            warnings.warn(msg + " consider a simpler random-effects structure",
                          SingularFitWarning, stacklevel=stacklevel)
        dropped = [j for j in range(self.k_fep) if keep is not None and j not in keep]
        self._check_fit(retvals, fit.params, fit.variances, "fit_laplace",
                        skip=dropped + [self.k_fep + j for j in np.flatnonzero(fit.singular)],
                        stacklevel=stacklevel + 2)
        return self._results_class(
            self, fit.params, fit.params_cov, retvals, variances=fit.variances,
            method="laplace-integrated" if integrate else "laplace",
            extra={"llf": float(fit.llf), "log_post": float(fit.log_post),
                   "is_singular": fit.is_singular, "priors": bool(priors),
                   "dropped": [self.fep_names[j] for j in dropped],
                   "vc_sd_cond": fit.vc_sd_cond, "marginal": fit})

    def __repr__(self) -> str:
        """Family, formula, rows, fixed effects and each factor's levels (bayesglmm._repr)."""
        from .._repr import glmm_repr

        return glmm_repr(self)


def _real_levels(fit, k: int):
    """A fits.laplace.LaplaceFit on padded levels (design.buckets) restricted to the first
    k, the real ones."""
    out = fit._replace(solution=fit.solution._replace(v=fit.solution.v[:k]), vc=fit.vc[:k],
                       vc_sd=fit.vc_sd[:k], vc_sd_cond=fit.vc_sd_cond[:k])
    if fit.integrated is not None:
        out = out._replace(integrated=fit.integrated._replace(
            vc_mean=fit.integrated.vc_mean[:k], vc_sd=fit.integrated.vc_sd[:k]))
    return out


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
        Quadrature for the ELBO: ``"statsmodels"`` (the default: statsmodels' 10-point
        Gauss–Legendre rule on [−5, 5], so ``fit_vb`` matches statsmodels), ``"gh20"``
        (Gauss–Hermite, 20 nodes: more accurate; the default in 0.1) or ``"ghK"``.

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
    statsmodels' quadrature by default; with a Gauss–Hermite ``vb_rule`` (``"gh20"``) it is
    computed exactly (exp(m + v/2)).
    """

    family = Poisson()


def _names(given, derived, arg):
    """User-supplied names (checked against the derived count), else the derived ones."""
    if given is None:
        return derived
    given = [str(v) for v in given]
    if derived is not None and len(given) != len(derived):
        raise ValueError(f"{arg} has {len(given)} names but the model has {len(derived)}")
    return given
