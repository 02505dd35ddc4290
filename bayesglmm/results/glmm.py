"""Results of the Bayesian mixed GLM fits (statsmodels' ``BayesMixedGLMResults``)."""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from ..checks import check_width, nan_rows
from ..validation import check_1d, check_length
from .summary import Summary
from .plots import PlotMethods

__all__ = ["BayesMixedGLMResults", "ParamLayout"]


class ParamLayout(NamedTuple):
    """How a mixed GLM's ``params`` vector is packed and named (a model's ``layout``)."""

    k_fep: int  # fixed effects
    k_sd: int  # log SDs (the first k_sd of the k_vcp variance parameters)
    k_vcp: int  # variance parameters: log SDs, then correlation parameters, then dispersion
    k_vc: int  # random effects
    fep_names: list
    vcp_names: list
    vc_names: list | None
    named: bool  # label tables (names came from a formula or DataFrames)
    k_disp: int = 0  # the family's dispersion parameters (negative binomial: log θ), last

    def split(self, vec):
        """``(fe, vcp, vc)`` blocks of ``vec`` (k_fep + k_vcp + k_vc,)."""
        kf, kp = self.k_fep, self.k_vcp
        return vec[:kf], vec[kf:kf + kp], vec[kf + kp:]


class BayesMixedGLMResults(PlotMethods):
    """Posterior summaries of a ``fit_map`` (Laplace) or ``fit_vb`` (mean-field) fit.

    Attributes
    ----------
    params : ndarray (k_fep + k_vcp + k_vc,)
        Posterior mean (fit_vb) or mode (fit_map): fixed effects, log SDs, random effects.
    fe_mean, fe_sd, vcp_mean, vcp_sd, vc_mean, vc_sd : ndarray
        The posterior means and SDs of each block.
    optim_retvals : OptimizeResult
        The optimiser's report: ``x, fun, nit`` (all Newton steps, warm-up included),
        ``success, status, message, grad_norm, method`` and, for fit_map/fit_vb, the work
        counters ``n_warm`` (warm-up steps in the random effects alone), ``n_fev`` (line-search
        evaluations) and ``n_cg`` (conjugate-gradient iterations, crossed designs).
    method : str
        ``"map"``, ``"vb"``, ``"laplace"`` or ``"laplace-integrated"``.
    llf, log_post, is_singular : float, float, bool
        ``fit_laplace`` only: the Laplace log-likelihood (lme4's logLik), the log marginal
        posterior (NaN without priors) and whether a variance is estimated at zero.

    Notes
    -----
    ``cov_params()`` is the full posterior covariance for a ``fit_map`` fit with at most
    ``fits.map.DENSE_COV_MAX`` parameters.  Above that size forming it would cost
    O(k_vc²) memory, so it returns the covariance of the fixed effects and variance parameters
    only; the random effects' posterior SDs are always in ``vc_sd``.  For ``fit_vb`` it is the
    vector of posterior variances, as in statsmodels.
    """

    def __init__(self, model, params, cov_params, optim_retvals=None, *, variances=None,
                 method: str = "map", extra: dict | None = None):
        self.model = model
        self.params = np.asarray(params, dtype=np.float64)
        self._cov_params = np.asarray(cov_params, dtype=np.float64)
        self.optim_retvals = optim_retvals
        self.method = method
        if variances is None:
            cp = self._cov_params
            variances = np.diag(cp) if cp.ndim == 2 else cp
        variances = np.asarray(variances, dtype=np.float64)
        self.layout = model.layout
        self.fe_mean, self.vcp_mean, self.vc_mean = self.layout.split(self.params)
        sd = np.sqrt(np.maximum(variances, 0.0))
        self.fe_sd, self.vcp_sd, self.vc_sd = self.layout.split(sd)
        for k, v in (extra or {}).items():
            setattr(self, k, v)

    # ------------------------------------------------------------------ tables
    def _names(self, n: int) -> list[str] | None:
        lay = self.layout
        na = list(lay.fep_names) + list(lay.vcp_names) + list(lay.vc_names or [])
        return na[:n] if len(na) >= n else None

    def cov_params(self) -> np.ndarray | pd.DataFrame | pd.Series:
        """Posterior covariance (fit_map: a matrix) or variances (fit_vb: a vector).

        Named (DataFrame / Series) when the model has parameter names (formula models).
        For a large fit_map model (more than ``DENSE_COV_MAX`` parameters) the matrix covers the
        fixed effects and variance parameters only; see the class notes.
        """
        cp = self._cov_params
        names = self._names(cp.shape[0]) if self.layout.named else None
        if names is None:
            return cp
        if cp.ndim == 2:
            return pd.DataFrame(cp, index=names, columns=names)
        return pd.Series(cp, index=names)

    def summary(self) -> Summary:
        """A table of the fixed effects (Type M) and variance parameters (Type V)."""
        m, lay = self.model, self.layout
        k = lay.k_fep + lay.k_vcp
        mean = np.concatenate([self.fe_mean, self.vcp_mean])
        psd = np.concatenate([self.fe_sd, self.vcp_sd])
        k_sd, k_disp = lay.k_sd, lay.k_disp
        df = pd.DataFrame(
            {
                "Type": (["M"] * m.k_fep + ["V"] * k_sd + ["R"] * (m.k_vcp - k_sd - k_disp)
                         + ["D"] * k_disp),
                "Post. Mean": mean,
                "Post. SD": psd,
            },
            index=list(m.fep_names) + list(m.vcp_names),
        )
        fmt = lambda x: f"{x:.3f}"
        idx = np.arange(k)
        is_v = (idx >= m.k_fep) & (idx < m.k_fep + k_sd)
        is_r = (idx >= m.k_fep + k_sd) & (idx < k - k_disp)
        is_d = idx >= k - k_disp  # dispersion: exp shows θ
        for col, x in (("SD", mean), ("SD (LB)", mean - 2 * psd), ("SD (UB)", mean + 2 * psd)):
            with np.errstate(over="ignore"):  # a bound far out (an SE of 10⁴ at ±1): inf
                sd = np.exp(np.where(is_v | is_d, x, 0.0))  # exp only where it is shown
            df[col] = np.where(is_v | is_d, [fmt(v) for v in sd],
                               np.where(is_r, [fmt(v) for v in np.tanh(x)], ""))
        label = {"map": "Laplace (joint mode)", "vb": "mean-field VB",
                 "laplace": "marginal Laplace" + ("" if getattr(self, "priors", True)
                                                  else " ML (lme4)"),
                 "laplace-integrated": "marginal Laplace, integrated over vcp",
                 }.get(self.method, self.method)
        notes = [
            "Parameter types are mean structure (M) and variance structure (V)",
            "Variance parameters are modeled as log standard deviations",
        ]
        if k_disp:
            notes.append("Type D: the dispersion log θ (Var = μ + μ²/θ); its SD columns show "
                         "θ (glmmTMB's sigma)")
        if (m.k_vcp - k_sd - k_disp) > 0:
            notes.append("Type R: correlation parameters z = atanh(partial correlation); their "
                         "SD columns show the correlation tanh(z)")
        if getattr(self, "is_singular", False):
            notes.append("A singular fit: a random-effect SD estimated at (or near) zero, or "
                         "a correlation at ±1.")
        info = {"Method": label, "No. Observations": m.nobs, "Random effects": m.k_vc,
                "Converged": bool(getattr(self.optim_retvals, "success", True))}
        if hasattr(self, "llf"):
            info["Log-likelihood (Laplace)"] = f"{self.llf:.4f}"
        return Summary(f"{m.family.name} Mixed GLM Results", df, notes, info)

    llf: float  # the Laplace log-likelihood, set by fit_laplace only (declared for type checkers)

    @property
    def nobs(self) -> int:
        """Number of rows (observations) of the fitted data."""
        return int(self.model.nobs)

    def _ml_npar(self, what: str) -> int:
        """Parameters of a maximum-likelihood fit (lme4's ``npar``: fixed effects and
        variance parameters); an AttributeError naming the fit that has one otherwise."""
        if not (str(self.method).startswith("laplace") and not getattr(self, "priors", True)
                and hasattr(self, "llf")):
            raise AttributeError(
                f"{what} needs a maximum-likelihood fit, fit_laplace(priors=False) (lme4's "
                f"glmer); this is a Bayesian fit (method={self.method!r})")
        return int(self.model.k_fep + self.model.k_vcp)

    @property
    def aic(self) -> float:
        """−2 llf + 2k (lme4's AIC) of a ``fit_laplace(priors=False)`` fit."""
        k = self._ml_npar("aic")
        return float(-2.0 * self.llf + 2 * k)

    @property
    def bic(self) -> float:
        """−2 llf + k log n (lme4's BIC, n rows) of a ``fit_laplace(priors=False)`` fit."""
        k = self._ml_npar("bic")
        return float(-2.0 * self.llf + k * np.log(self.nobs))

    @property
    def varcorr(self) -> pd.DataFrame:
        """lme4's ``VarCorr`` as a table (as ``MixedLMResults.varcorr``, less the residual):
        group, var1, var2, vcov, sdcor.  Per random-effect term a row per SD (``var2``
        missing; vcov the variance, sdcor the SD) and, for a correlated term such as
        ``(1 + x | g)``, a row per pair (vcov the covariance, sdcor the correlation — the
        whole correlation matrix, where the summary's type-R rows show the partial
        correlations of its parameterisation).  At the estimates in ``params``: SD =
        exp(log SD), the correlations those of the correlation parameters (the mode or
        maximum likelihood; for ``fit_vb`` and ``integrate=True`` the posterior means of
        the log SDs and correlation parameters); an SD at its lower bound (a singular fit) is
        0, as lme4 reports it.  ``vc_formulas``' variance components are named by their keys,
        with no variable."""
        from ..covariance import corr_matrix
        from ..fits.laplace import LOG_SD_MIN

        m, lay = self.model, self.layout
        fm = getattr(m, "_formula", None)
        labels = (fm[2].sd_labels if fm is not None
                  else [(str(n), None) for n in m.vcp_names[:lay.k_sd]])
        log_sd = self.vcp_mean[:lay.k_sd]
        sd = np.where(log_sd <= LOG_SD_MIN + 1e-8, 0.0, np.exp(log_sd))  # singular: 0
        by_first = {int(sd_idx[0]): (np.asarray(sd_idx), np.asarray(z_idx))
                    for _, sd_idx, z_idx in m._corr}
        rows: list = []
        done: set[int] = set()
        for i in range(lay.k_sd):
            if i in done:
                continue
            sd_idx, z_idx = by_first.get(i, (np.array([i]), np.array([], int)))
            done.update(int(j) for j in sd_idx)
            s = sd[sd_idx]
            for j, s_j in zip(sd_idx, s):
                rows.append((labels[j][0], labels[j][1], None, s_j**2, s_j))
            if not len(z_idx):
                continue
            R = corr_matrix(self.vcp_mean[z_idx], len(sd_idx))
            for b in range(len(sd_idx)):
                for a in range(b + 1, len(sd_idx)):
                    rows.append((labels[sd_idx[b]][0], labels[sd_idx[b]][1],
                                 labels[sd_idx[a]][1], R[a, b] * s[a] * s[b], R[a, b]))
        return pd.DataFrame(rows, columns=["group", "var1", "var2", "vcov", "sdcor"])

    def random_effects(self, term: str | int | None = None) -> pd.DataFrame:
        """Posterior mean and SD of the random effects, all or those of one term.

        ``term`` is a variance-component name (a key of ``vc_formulas`` / ``vcp_names``) or its
        position.
        """
        m = self.model
        z, s = self.vc_mean, self.vc_sd
        na = list(m.vc_names) if m.vc_names is not None else None
        if term is not None:
            if isinstance(term, (int, np.integer)):
                termix = int(term)
                k_terms = m.k_vcp - self.layout.k_disp  # the dispersion is no term
                if not 0 <= termix < k_terms:
                    raise ValueError(f"term index {term} out of range (0..{k_terms - 1})")
            else:
                terms = list(m.vcp_names[:m.k_vcp - self.layout.k_disp])
                if term not in terms:
                    from ..validation import suggest

                    if term in m.vcp_names:  # the negative binomial's log θ
                        raise ValueError(f"{term!r} is the family's dispersion parameter, not a "
                                         f"random-effect term. Terms: {terms}")
                    s_ = suggest(str(term), terms)
                    hint = f"; did you mean {s_!r}?" if s_ else ""
                    raise ValueError(f"unknown term {term!r}{hint} Terms: {terms}")
                termix = list(m.vcp_names).index(term)
            ii = np.flatnonzero(m.ident == termix)
            z, s = z[ii], s[ii]
            if na is not None:
                na = [na[i] for i in ii]
        out = pd.DataFrame({"Mean": z, "SD": s})
        if na is not None:
            out.index = na
        return out

    def predict(self, exog: pd.DataFrame | np.ndarray | None = None, linear: bool = False, *,
                include_random: bool | None = None, unseen: str = "population",
                offset: np.ndarray | None = None, exposure: np.ndarray | None = None
                ) -> np.ndarray | pd.Series:
        """Predicted means (or linear predictors with ``linear=True``).

        Parameters
        ----------
        exog : array_like or DataFrame, optional
            An array: the fixed-effects design, and the prediction is the fixed part only
            (statsmodels' meaning).  A DataFrame (formula models): new data, from which the
            fixed and random designs are rebuilt with the fitted coding.  Omitted: the model's
            own rows.
        linear : bool
            Return the linear predictor rather than the mean.
        include_random : bool, optional
            Add the random effects' posterior means: levels seen in fitting get their own,
            unseen levels the population value 0.  Default: True for a DataFrame, False for an
            array or ``None`` (statsmodels' behaviour).
        unseen : {"population", "raise"}
            What to do with levels not seen in fitting.
        offset, exposure : array_like, optional
            Added to the linear predictor (exposure: its log; Poisson).  A model built with
            ``offset=``/``exposure=`` naming a column reads that column from new data given as
            a DataFrame (an error if it is missing there), unless given here.

        Examples
        --------
        >>> from bayesglmm import BinomialBayesMixedGLM, datasets
        >>> df = datasets.load("cbpp")
        >>> m = BinomialBayesMixedGLM.from_formula("incidence ~ C(period)",
        ...                                        {"herd": "0 + C(herd)"}, df, n_trials="size")
        >>> r = m.fit_vb(rng=0)
        >>> new = df.head(2).assign(herd=["1", "99"])   # herd 99 is unseen: population value
        >>> r.predict(new).round(3).tolist()
        [0.302, 0.084]
        """
        return self._linear_and_var(exog, include_random, unseen, offset, exposure,
                                    linear=linear, with_var=False)

    def get_prediction(self, exog: pd.DataFrame | np.ndarray | None = None, *,
                       alpha: float = 0.05, include_random: bool | None = None,
                       unseen: str = "population", offset: np.ndarray | None = None,
                       exposure: np.ndarray | None = None) -> pd.DataFrame:
        """Predictions with posterior credible intervals, as a DataFrame.

        Columns: ``linear`` and ``linear_sd`` (posterior mean and SD of the linear predictor
        under the fitted Gaussian approximation), ``mean`` (inverse link of ``linear``) and
        ``mean_lower``/``mean_upper`` (the inverse link of the central 1 − alpha interval of
        the linear predictor).  The variance uses the full posterior covariance when the fit
        has one (fit_map/fit_laplace with few parameters); otherwise (fit_vb: mean-field;
        large models: the (fe, vcp) block and the random effects' variances) the covariance
        between fixed and random effects is taken as zero.
        """
        from .._normal import ndtri

        lin, var = self._linear_and_var(exog, include_random, unseen, offset, exposure,
                                        linear=True, with_var=True)
        sd = np.sqrt(np.maximum(var, 0))
        z = ndtri(1 - alpha / 2)
        inv = lambda e: self.model.predict(np.ones(1), exog=np.asarray(e)[:, None],  # noqa: E731
                                           linear=False)
        return pd.DataFrame({"linear": lin, "linear_sd": sd, "mean": inv(lin),
                             "mean_lower": inv(lin - z * sd), "mean_upper": inv(lin + z * sd)},
                            index=exog.index if isinstance(exog, pd.DataFrame) else None)

    def _linear_and_var(self, exog, include_random, unseen, offset, exposure, *, linear,
                        with_var):
        m = self.model
        kf, kp = m.k_fep, m.k_vcp
        offset, exposure, na = _checked_offsets(exog, offset, exposure, m)
        if na is not None:  # rows with a missing covariate predict NaN (statsmodels)
            part = self._linear_and_var(
                exog.loc[~na], include_random, unseen,
                None if offset is None else offset[~na],
                None if exposure is None else exposure[~na], linear=linear, with_var=with_var)
            return tuple(_scatter(x, na) for x in part) if with_var else _scatter(part, na)
        if isinstance(exog, pd.DataFrame) and m._formula is not None:
            design = m._formula[2]
            X = design.new_exog(exog)
            if include_random is None or include_random:
                cols, vals = design.new_vc(exog, unseen)
            else:
                cols = vals = None
        else:
            if include_random:
                if exog is not None:
                    raise ValueError("include_random=True needs new data as a DataFrame "
                                     "(formula models) or exog=None")
                cols, vals = m.re_design
            else:
                cols = vals = None
            X = m.exog if exog is None else _as_exog(exog)
            if X.ndim == 1:
                X = X[:, None]
            if exog is not None:
                check_width(X, m.fep_names)
                nan_rows(X, m.fep_names, stacklevel=5)
        dropped = np.isnan(self.fe_mean) if getattr(self, "dropped", None) else None
        fe = self.fe_mean if dropped is None else np.where(dropped, 0.0, self.fe_mean)
        lin = X @ fe[:X.shape[1]]  # columns dropped as aliased (fit_laplace) count as 0
        if exog is None:
            lin = lin + m.offset
        if offset is not None:
            lin = lin + np.asarray(offset, dtype=np.float64)
        if exposure is not None:
            lin = lin + np.log(np.asarray(exposure, dtype=np.float64))
        if cols is not None and m.k_vc:
            lin = lin + np.sum(vals * self.vc_mean[cols], axis=1)
        if not with_var:
            return lin if linear else m.predict(np.ones(1), exog=lin[:, None], linear=False)
        cp = self._cov_params
        full = cp.ndim == 2 and cp.shape[0] == kf + kp + m.k_vc
        cov_fe = cp[:kf, :kf] if cp.ndim == 2 else np.diag(cp[:kf])
        if dropped is not None:
            cov_fe = np.where(dropped[:, None] | dropped[None, :], 0.0, cov_fe)
        var = np.einsum("ij,jk,ik->i", X, cov_fe[:X.shape[1], :X.shape[1]], X)
        if cols is not None and m.k_vc:
            if full:
                # zᵀΣ_vc z + 2 xᵀΣ_fe,vc z, row by row over the few non-zeros of z
                C = cp[kf + kp:, kf + kp:]
                var += np.einsum("is,it,ist->i", vals, vals, C[cols[:, :, None], cols[:, None, :]])
                cross = cp[:X.shape[1], kf + kp:]  # (k_fe, k_vc)
                var += 2 * np.einsum("ij,is,jis->i", X, vals, cross[:, cols])
            else:
                var += np.sum(vals**2 * (self.vc_sd[cols] ** 2), axis=1)
        return lin, var

    def __repr__(self) -> str:
        return f"<{type(self).__name__} ({self.method}) of {type(self.model).__name__}>"

    @property
    def converged(self) -> bool:
        """Whether the optimiser converged and no estimate is on the boundary
        (``optim_retvals.success``; bayesglmm.boundary)."""
        return bool(getattr(self.optim_retvals, "success", True))

    def conf_int(self, alpha: float = 0.05, method: str = "wald") -> pd.DataFrame:
        """Intervals of (fe, vcp): ``"wald"`` (mean ± z·sd) or, for
        ``fit_laplace(priors=False)``, ``"profile"`` (lme4's profile intervals, SD scale):
        :func:`bayesglmm.inference.conf_int_method`."""
        if method == "wald":  # here, without importing bayesglmm.inference (0.1 s)
            from .._normal import ndtri

            z = float(ndtri(1 - alpha / 2))
            mean = np.r_[self.fe_mean, self.vcp_mean]
            sd = np.r_[self.fe_sd, self.vcp_sd]
            return pd.DataFrame({0: mean - z * sd, 1: mean + z * sd},
                                index=list(self.model.fep_names) + list(self.model.vcp_names))
        from ..inference.profile import conf_int_method

        return conf_int_method(self, alpha, method)

    # ------------------------------------------------------------------ ArviZ (plots: PlotMethods)
    def to_inference_data(self, draws: int = 1000, rng: Any = None, **kwargs: Any) -> Any:
        """Posterior draws as an ``arviz.InferenceData`` (the ``[arviz]`` extra); keywords
        and the approximation drawn from: :func:`bayesglmm.arviz.to_inference_data`."""
        from ..arviz import to_inference_data

        return to_inference_data(self, draws, rng, **kwargs)


def _as_exog(exog) -> np.ndarray:
    try:
        return np.asarray(exog, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"exog must be numeric: {err}") from None


def _checked_offsets(exog, offset, exposure, m):
    """``(offset, exposure, na)`` for a prediction: each a finite (n,) array of the new rows
    (named in the error otherwise); ``na`` the rows of a formula model's new data with a
    missing covariate (warned about), or None."""
    n = m.nobs if exog is None else len(exog)
    out = []
    for name, val in (("offset", offset), ("exposure", exposure)):
        column = getattr(m, "_offset_cols", {}).get(name)
        if val is None and column is not None and isinstance(exog, pd.DataFrame):
            if column not in exog.columns:  # the model's own column, as the formula's
                raise ValueError(
                    f"the model was built with {name}={column!r}: the new data need that "
                    f"column (or pass {name}= to predict)")
            val = exog[column].to_numpy()
        if val is not None:
            val = check_1d(val, name)
            check_length(n, len(val), name, "the new data")
            if name == "exposure" and np.any(val <= 0):
                raise ValueError("exposure must be positive")
        out.append(val)
    na = None
    if isinstance(exog, pd.DataFrame) and m._formula is not None:
        from ..formula.fixed import missing_rows, spec_columns
        from ..formula.random import SparseTerm

        d = m._formula[2]
        need = set(spec_columns(d.fixed.spec))
        for t in d.terms:
            need |= set(t.columns if isinstance(t, SparseTerm) else t.rows.columns)
        rows = missing_rows(exog, sorted(c for c in need if c in exog.columns), stacklevel=6)
        na = rows if rows.any() else None
    return out[0], out[1], na


def _scatter(x: np.ndarray, na: np.ndarray) -> np.ndarray:
    """(n,) with ``x`` in the rows not in ``na`` and NaN there."""
    out = np.full(len(na), np.nan)
    out[~na] = x
    return out
