"""Results of a linear mixed-model fit, with statsmodels' ``MixedLMResults`` names."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ..checks import check_width, nan_rows
from ..formula.fixed import new_exog
from .lmm_statsmodels import StatsmodelsResultsMixin
from .plots import PlotMethods
from .summary import info_columns

if TYPE_CHECKING:
    from ..inference.bootstrap import BootstrapResult
    from .lmm_statsmodels import MixedLMSummary

__all__ = ["MixedLMResults"]


class MixedLMResults(StatsmodelsResultsMixin, PlotMethods):
    """Estimates of a :class:`~bayesglmm.MixedLM` fit.

    Attributes
    ----------
    fe_params : Series (p,)
        Fixed effects β̂.
    bse_fe : Series (p,)
        Standard errors of β̂: ``sqrt(diag(σ̂² (XᵀV̂⁻¹X)⁻¹))``, as lme4's ``vcov``.
    bse : Series
        ``bse_fe`` followed by standard errors of the random-effect covariance parameters on
        statsmodels' scale (relative to ``scale``, from the inverse Hessian of the profiled
        log-likelihood); NaN where the Hessian is singular (boundary fits).
    cov_re : DataFrame (q, q)
        Covariance of the random effects of ``groups`` (or of the first random term).
    vcomp : ndarray
        Variances of the variance components (``vc_formula``); for lme4-style formulas,
        of the scalar random terms not shown in ``cov_re``.  Names in ``vcomp_names``.
    scale : float
        Residual variance σ̂² (REML: ``r²/(n−p)``, ML: ``r²/n``).
    llf : float
        Log-likelihood: ML, or the REML log-likelihood ``−d_R/2`` for REML fits (lme4's
        ``logLik``).
    aic, bic : float
        ``−2 llf + 2k`` and ``−2 llf + k log n``, ``k`` = fixed effects + covariance
        parameters + 1 (lme4's convention, also for REML fits; statsmodels returns NaN there).
    is_singular : bool
        Some variance is on the boundary (a diagonal θ below 1e-4).
    random_effects : dict
        Predicted random effects (BLUPs).  With ``groups``: ``{group: Series}`` as
        statsmodels; with lme4-style terms only: ``{term: DataFrame}`` (levels × covariates).

    The fit hands over arrays; the tables above are formed on first access.
    """

    hist: list[dict]  # fit(full_output=True): a record of the optimiser

    def __init__(self, model, theta, fe, cov_fe, scale, deviance, reml, blups, fit,
                 is_singular, cov_psi):
        self.model = model
        self.theta = theta  # (n_theta,) θ̂
        self.method = "REML" if reml else "ML"
        self.reml = reml
        self.nobs = model.nobs
        self.k_fe = model.k_fe
        self._fe = fe  # (p,) β̂
        self._cov_fe = cov_fe  # (p, p) σ̂²(XᵀV̂⁻¹X)⁻¹
        self._blups = blups  # per term (levels, q) BLUPs, in the design's term order
        self._cov_psi = cov_psi  # (n_ψ, n_ψ), None, or a function computing it on first use
        self.scale = scale
        self.deviance = deviance
        self.llf = -deviance / 2.0
        self.k_params = model.k_fe + model.n_theta + 1
        self.aic = deviance + 2 * self.k_params
        self.bic = deviance + self.k_params * np.log(self.nobs)
        self.converged = bool(fit.converged)
        self.optim = fit
        self.is_singular = is_singular
        self.n_dropped = model.n_dropped
        d = model.design
        # the term shown as cov_re: the groups= term, else the first non-vc term
        self._ire = d.groups_term if d.groups_term is not None else (
            0 if d.terms[0].kind != "vc" else None)

    # ------------------------------------------------------------------ tables
    @functools.cached_property
    def _fe_s(self) -> pd.Series:
        return pd.Series(self._fe, index=self.model.design.xnames, name="fe_params")

    @functools.cached_property
    def cov_fe_(self) -> pd.DataFrame:
        names = self.model.design.xnames
        return pd.DataFrame(self._cov_fe, index=names, columns=names)

    @functools.cached_property
    def _bse_fe_s(self) -> pd.Series:
        return pd.Series(np.sqrt(np.diag(self._cov_fe)), index=self.model.design.xnames,
                         name="bse_fe")

    @functools.cached_property
    def term_cov(self) -> list:
        """Per term the covariance of its random effects, σ̂² λλᵀ (DataFrame, q × q)."""
        out = []
        for t, ti in zip(self.model.design.terms, self.model._theta_index):
            lam = np.where(ti >= 0, self.theta[np.maximum(ti, 0)], 0.0)
            out.append(pd.DataFrame(self.scale * lam @ lam.T, index=t.cols, columns=t.cols))
        return out

    @functools.cached_property
    def _cov_re_s(self) -> pd.DataFrame:
        return self.term_cov[self._ire] if self._ire is not None else pd.DataFrame()

    @property
    def k_re(self) -> int:
        return self._cov_re_s.shape[0]

    @functools.cached_property
    def _vcomp(self):
        """(names, variances) of the variance components."""
        d = self.model.design
        names, vals, seen = [], [], set()
        for i, t in enumerate(d.terms):
            if i == self._ire or t.tkey in seen:
                continue
            if t.kind == "vc" or (d.groups_term is None and t.q == 1):
                seen.add(t.tkey)
                names.append(t.tkey[3:] if t.kind == "vc" else t.name)
                vals.append(float(self.term_cov[i].iloc[0, 0]))
        return names, np.asarray(vals)

    @property
    def vcomp(self) -> np.ndarray:
        return self._vcomp[1]

    @property
    def vcomp_names(self) -> list:
        return self._vcomp[0]

    @property
    def k_vc(self) -> int:
        return len(self.vcomp)

    @functools.cached_property
    def random_effects_by_term(self) -> dict:
        """``{term name: DataFrame (levels × covariates)}`` of the BLUPs."""
        out: dict = {}
        for t, b in zip(self.model.design.terms, self._blups):
            out[_unique_key(out, t.name)] = pd.DataFrame(b, index=t.index, columns=t.cols)
        return out

    @functools.cached_property
    def _fitted(self) -> np.ndarray:
        d = self.model.design
        return self._linear(d.X, [(t.codes, t.z) for t in d.terms])

    @functools.cached_property
    def _resid(self) -> np.ndarray:
        return self.model.design.y - self._fitted

    @functools.cached_property
    def _bse_re_names(self) -> list:
        """statsmodels' names ("Subject Var", "Subject x Days Cov"); other lme4-style terms
        are prefixed with their grouping factor ("sample Var", "g: x Var")."""
        d = self.model.design
        names, seen = [], set()
        for i, t in enumerate(d.terms):
            if t.tkey in seen:
                continue
            seen.add(t.tkey)
            if t.kind == "vc":
                names.append(f"{t.tkey[3:]} Var")
                continue
            if i == self._ire:
                cols = [t.name if c == "Intercept" else c for c in t.cols]
            else:
                cols = [t.name if c == "Intercept" else f"{t.name}: {c}" for c in t.cols]
            for j in range(t.q):
                for k in range(j, t.q):
                    if t.kind == "diag" and k != j and not self._full_layout:
                        continue
                    names.append(f"{cols[j]} Var" if k == j else f"{cols[j]} x {cols[k]} Cov")
        return names

    @property
    def _bse_s(self) -> pd.Series:
        """``bse_fe`` then the standard errors of the relative covariance parameters."""
        return pd.concat([self._bse_fe_s, self._bse_re()])

    def _bse_re(self):
        n = len(self._bse_re_names)
        cov = self._psi_full()
        if cov is None:
            return pd.Series(np.full(n, np.nan), index=self._bse_re_names)
        dg = np.diag(cov)
        with np.errstate(invalid="ignore"):
            se = np.where(dg > 0, np.sqrt(np.abs(dg)), np.nan)
        return pd.Series(se, index=self._bse_re_names)

    @property
    def _params_s(self) -> pd.Series:
        """``fe_params`` then the relative covariance parameters (``cov_re / scale``...)."""
        rel, seen = [], set()
        for t, c in zip(self.model.design.terms, self.term_cov):
            if t.tkey in seen:
                continue
            seen.add(t.tkey)
            v = c.to_numpy() / self.scale
            for j in range(t.q if t.kind != "vc" else 1):
                for k in range(j, t.q if t.kind != "vc" else 1):
                    if t.kind == "diag" and k != j and not self._full_layout:
                        continue
                    rel.append(v[k, j])
        return pd.concat([self._fe_s, pd.Series(rel, index=self._bse_re_names)])

    @property
    def _tvalues_s(self) -> pd.Series:
        return self._fe_s / self._bse_fe_s

    @property
    def _pvalues_s(self) -> pd.Series:
        """Two-sided p-values of the fixed effects, normal reference (as statsmodels)."""
        from .._normal import ndtr

        return pd.Series(2 * ndtr(-np.abs(self._tvalues_s.to_numpy())), index=self._fe_s.index)

    def _conf_int_s(self, alpha: float = 0.05) -> pd.DataFrame:
        """Wald confidence intervals of the fixed effects (normal quantiles)."""
        from .._normal import ndtri

        z = ndtri(1 - alpha / 2)  # scipy.stats.norm.ppf
        return pd.DataFrame({0: self._fe_s - z * self._bse_fe_s, 1: self._fe_s + z * self._bse_fe_s})


    @property
    def varcorr(self) -> pd.DataFrame:
        """lme4's ``VarCorr`` as a table: group, var1, var2, vcov, sdcor (Residual last)."""
        rows, seen = [], set()
        for t, c in zip(self.model.design.terms, self.term_cov):
            if t.tkey in seen:
                continue
            seen.add(t.tkey)
            v = c.to_numpy()
            sd = np.sqrt(np.diag(v))
            grp = t.tkey[3:] if t.kind == "vc" else t.group
            for i in range(t.q if t.kind != "vc" else 1):
                rows.append((grp, t.cols[i], None, v[i, i], sd[i]))
            for j in range(t.q if t.kind == "re" else 0):
                for i in range(j + 1, t.q):
                    cor = v[i, j] / (sd[i] * sd[j]) if sd[i] * sd[j] > 0 else np.nan
                    rows.append((grp, t.cols[j], t.cols[i], v[i, j], cor))
        rows.append(("Residual", None, None, self.scale, np.sqrt(self.scale)))
        return pd.DataFrame(rows, columns=["group", "var1", "var2", "vcov", "sdcor"])

    @property
    def random_effects(self) -> dict:
        d = self.model.design
        if d.groups_term is None and not any(t.kind == "vc" for t in d.terms):
            return dict(self.random_effects_by_term)
        glevels = pd.Index(np.unique(d.group_labels)) if d.group_labels is not None else None
        out = {}
        per = []
        for t, b in zip(d.terms, self._blups):
            if t.group != (d.terms[d.groups_term].group if d.groups_term is not None else t.group):
                continue
            per.append((t, b))
        for g in (glevels if glevels is not None else ()):
            vals, names = [], []
            for t, b in per:
                if isinstance(t.index, pd.MultiIndex):
                    sel = np.flatnonzero(t.index.get_level_values(0) == g)
                    vals += list(b[sel, 0])
                    names += [f"{t.name}[{c}]" for c in t.index.get_level_values(1)[sel]]
                else:
                    k = t.index.get_indexer([g])[0]
                    if k >= 0:
                        vals += list(b[k])
                        names += list(t.cols)
            out[g] = pd.Series(vals, index=names, dtype=float)
        return out

    # ------------------------------------------------------------------ prediction
    def _linear(self, X, rows):
        eta = np.asarray(X, np.float64) @ self._fe
        for (codes, z), b in zip(rows, self._blups):
            ok = codes >= 0
            contrib = np.einsum("na,na->n", z, b[np.where(ok, codes, 0)])
            eta = eta + np.where(ok, contrib, 0.0)
        return eta

    def predict(self, exog: pd.DataFrame | np.ndarray | None = None,
                include_random: bool = False) -> pd.Series | np.ndarray:
        """Predictions: the fixed part ``Xβ̂`` (statsmodels), or with ``include_random=True``
        and a DataFrame, plus each row's predicted random effects; levels not seen in fitting
        get the population value (zero random effect).  New data in a DataFrame give a Series
        on its index (statsmodels); a level of a categorical fixed effect not seen in fitting
        is an error naming the column.

        Parameters
        ----------
        exog : DataFrame or (n, p) array, optional
            New data (a DataFrame for formula models); default the fitting data.
        include_random : bool
        """
        d = self.model.design
        if exog is None:
            if include_random:
                return self._wrap_rows(self._fitted.copy())
            return d.X @ self._fe
        if isinstance(exog, pd.DataFrame) and d.fixed_spec is not None:
            X = new_exog(d.fixed_spec, exog, na_action="ignore")
        else:
            try:
                X = np.asarray(exog, np.float64)
            except (TypeError, ValueError) as err:
                raise ValueError(f"exog must be numeric: {err}") from None
            if X.ndim == 1:
                X = X[:, None]
            check_width(X, self.model.exog_names)
            nan_rows(X, self.model.exog_names)
        if not include_random:
            out = X @ self._fe
        elif not isinstance(exog, pd.DataFrame) or any(t.rows is None for t in d.terms):
            raise ValueError("include_random=True needs a formula model and a DataFrame")
        else:
            out = self._linear(X, [t.new_rows(exog, na_action="ignore") for t in d.terms])
        # statsmodels: new data in a DataFrame predict a Series on its index
        return pd.Series(out, index=exog.index) if isinstance(exog, pd.DataFrame) else out

    # ------------------------------------------------------------------ summary
    def summary(self, yname: str | None = None, xname_fe: list[str] | None = None,
                xname_re: list[str] | None = None, title: str | None = None,
                alpha: float = 0.05) -> MixedLMSummary:
        """A statsmodels-like summary (print it, or ``str()``): ``tables[0]`` the header,
        ``tables[1]`` the estimates.  ``yname``, ``xname_fe``, ``xname_re`` rename the
        response, the fixed-effect and the covariance-parameter rows; ``alpha`` sets the
        interval level; ``title`` the title."""
        from .lmm_statsmodels import MixedLMSummary
        d = self.model.design
        if d.group_labels is not None:
            _, counts = np.unique(np.asarray(d.group_labels).astype(str), return_counts=True)
        else:
            counts = np.bincount(d.terms[0].codes)
        left = [
            ("Model:", "MixedLM"),
            ("No. Observations:", str(self.nobs)),
            ("No. Groups:", str(len(counts))),
            ("Min. group size:", str(int(counts.min()))),
            ("Max. group size:", str(int(counts.max()))),
            ("Mean group size:", f"{counts.mean():.1f}"),
        ]
        right = [
            ("Dependent Variable:", d.yname if yname is None else str(yname)),
            ("Method:", self.method),
            ("Scale:", f"{self.scale:.4f}"),
            ("Log-Likelihood:", f"{self.llf:.4f}"),
            ("Converged:", "Yes" if self.converged else "No"),
            ("", ""),
        ]
        ci = self._conf_int_s(alpha)
        lo, hi = f"[{alpha / 2:g}", f"{1 - alpha / 2:g}]"
        tab = pd.DataFrame({
            "Coef.": self._fe_s.map(lambda v: f"{v:.3f}"),
            "Std.Err.": self._bse_fe_s.map(lambda v: f"{v:.3f}"),
            "z": self._tvalues_s.map(lambda v: f"{v:.3f}"),
            "P>|z|": self._pvalues_s.map(lambda v: f"{v:.3f}"),
            lo: ci[0].map(lambda v: f"{v:.3f}"),
            hi: ci[1].map(lambda v: f"{v:.3f}"),
        })
        re_rows = []
        bse_re = self._bse_re()
        pv = self._params_s.iloc[self.k_fe:]
        for name in self._bse_re_names:
            val = pv[name] * self.scale
            se = bse_re[name] * np.sqrt(self.scale)
            re_rows.append(pd.DataFrame({
                "Coef.": [f"{val:.3f}"],
                "Std.Err.": ["" if not np.isfinite(se) else f"{se:.3f}"],
                "z": [""], "P>|z|": [""], lo: [""], hi: [""],
            }, index=[name]))
        tab = pd.concat([tab] + re_rows)
        names = list(tab.index)
        if xname_fe is not None:
            names[: self.k_fe] = _check_names(xname_fe, self.k_fe, "xname_fe")
        if xname_re is not None:
            names[self.k_fe :] = _check_names(xname_re, len(names) - self.k_fe, "xname_re")
        tab.index = names
        notes = []
        if self.is_singular:
            notes.append("Note: boundary (singular) fit: a random-effect variance is estimated "
                         "as zero (is_singular=True).")
        if not self.converged:
            notes.append(f"Warning: the optimiser did not converge ({self.optim.message}).")
        if self.n_dropped:
            notes.append(f"Note: {self.n_dropped} row(s) with missing values were dropped.")
        return MixedLMSummary(title or "Mixed Linear Model Regression Results", tab, notes,
                              info_columns(left, right), left + right)

    def __repr__(self):
        return f"<MixedLMResults {self.method}: llf={self.llf:.4f}, nobs={self.nobs}>"

    # ------------------------------------------------------------------ lme4 inference
    def _conf_int_other(self, alpha, method):
        """``conf_int(method="profile" | "boot")``: bayesglmm.inference (lme4's scale)."""
        from ..inference.profile import conf_int_method

        return conf_int_method(self, alpha, method)

    def ttest_satterthwaite(self, L: np.ndarray | None = None) -> pd.DataFrame:
        """t-tests of the fixed effects (or contrasts ``L``) with Satterthwaite df (lmerTest):
        :func:`bayesglmm.inference.satterthwaite_table`."""
        from ..inference.satterthwaite import satterthwaite_table

        return satterthwaite_table(self, L)

    def bootstrap(self, n: int = 1000, seed: int | None = None, alpha: float = 0.05,
                  batch: int = 100, progress: bool = False) -> BootstrapResult:
        """Parametric bootstrap (lme4's ``bootMer``): :func:`bayesglmm.inference.bootstrap`."""
        from ..inference.bootstrap import bootstrap

        return bootstrap(self, n=n, seed=seed, alpha=alpha, batch=batch, progress=progress)

    # ---------------------------------------- ArviZ and the profile plot (others: PlotMethods)
    def to_inference_data(self, *args: Any, **kwargs: Any) -> Any:
        """Not available: an ML/REML fit has no posterior (``ValueError`` saying what to use)."""
        from ..posterior_draws import check_bayesian

        check_bayesian(self)

    def plot_profile(self, param: int | str = 0, grid: np.ndarray | None = None,
                     **kwargs: Any) -> Any:
        """Profiled deviance along one θ: :func:`bayesglmm.plot.deviance_profile`."""
        from ..plot import deviance_profile

        return deviance_profile(self, param, grid, **kwargs)


def _unique_key(d, name):
    if name not in d:
        return name
    k = 1
    while f"{name}.{k}" in d:
        k += 1
    return f"{name}.{k}"


def _check_names(names, k, arg):
    names = [str(v) for v in names]
    if len(names) != k:
        raise ValueError(f"{arg} must have {k} names, got {len(names)}")
    return names
