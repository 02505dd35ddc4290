"""Plots of fitted mixed models (the optional ``[plot]`` extra: matplotlib).

Each function draws on given matplotlib axes (or new ones) and returns them:

* :func:`caterpillar` — random effects per factor, sorted, with central intervals;
* :func:`forest` — fixed effects of one or several fits side by side, with intervals;
* :func:`fitted` — observed against fitted values, and residuals against fitted values;
* :func:`deviance_profile` — the profiled (RE)ML deviance of a ``MixedLM`` fit as one
  covariance parameter varies (numbers from :func:`profile_table`).

The result classes have thin wrappers: ``result.plot_caterpillar()``, ``plot_forest()``,
``plot_fitted()`` and, for ``MixedLMResults``, ``plot_profile()``.

Intervals are mean ± z·SD with z the normal quantile of ``1 − alpha/2``: the posterior SDs of a
Bayesian fit, the standard errors of a MixedLM fit, and for a MixedLM's random effects the
conditional SDs of lme4's ``condVar`` (see :func:`lmm_random_effects`).

Examples
--------
>>> import matplotlib; matplotlib.use("Agg")
>>> from bayesglmm import datasets, mixedlm, plot
>>> r = mixedlm("Reaction ~ Days + (Days | Subject)", datasets.load("sleepstudy")).fit()
>>> axes = plot.caterpillar(r)        # one panel per random coefficient
>>> [ax.get_title() for ax in axes]
['Subject: Intercept', 'Subject: Days']
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from ._labels import level_labels

__all__ = ["caterpillar", "deviance_profile", "fitted", "forest", "lmm_random_effects",
           "profile_table", "theta_names"]


def _pyplot():
    try:
        import matplotlib.pyplot as plt
    except ImportError as err:
        raise ImportError("bayesglmm.plot needs matplotlib: pip install 'bayesglmm[plot]'") from err
    return plt


def _z(alpha: float) -> float:
    from scipy.stats import norm

    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha}")
    return float(norm.ppf(1 - alpha / 2))


def _is_lmm(result) -> bool:
    from .results.lmm import MixedLMResults

    return isinstance(result, MixedLMResults)


# ---------------------------------------------------------------------- random effects
JOINT_MAX = 4000  # largest number of LMM random effects for the exact joint condVar


def _lmm_cond_var(result) -> list[np.ndarray]:
    """Per term (levels, q) conditional variances Var(b | y, β̂, θ̂) (lme4's ``condVar``).

    With u the spherical random effects, b = Λu and Var(u | y) = σ²(ΛᵀZᵀZΛ + I)⁻¹; the
    blocks of σ²ΛM⁻¹Λᵀ on each level's diagonal.  Up to :data:`JOINT_MAX` random effects M
    is the joint matrix of all terms (lme4's numbers); above, each term's M is formed alone,
    i.e. conditional on the other terms' random effects (a little narrow for crossed designs).
    """
    terms, s2 = result.model.design.terms, result.scale
    roots = []
    for cov in result.term_cov:
        lam, V = np.linalg.eigh(cov.to_numpy() / s2)
        roots.append(V * np.sqrt(np.maximum(lam, 0.0)))  # (q, q) L with LLᵀ = Σ/σ²
    sizes = [t.n_levels * t.q for t in terms]
    if sum(sizes) <= JOINT_MAX:
        import scipy.sparse as sp

        blocks = []
        for t, L in zip(terms, roots):
            ok = t.codes >= 0
            rows = np.repeat(np.flatnonzero(ok), t.q)
            cols = (t.codes[ok, None] * t.q + np.arange(t.q)).ravel()
            blocks.append(sp.csr_array(((t.z[ok] @ L).ravel(), (rows, cols)),
                                       shape=(len(t.codes), t.n_levels * t.q)))
        ZL = sp.hstack(blocks).tocsc()  # (n, K): the columns of ZΛ
        Minv = np.linalg.inv((ZL.T @ ZL).toarray() + np.eye(ZL.shape[1]))
        out, o = [], 0
        for t, L, k in zip(terms, roots, sizes):
            B = Minv[o:o + k, o:o + k].reshape(t.n_levels, t.q, t.n_levels, t.q)
            blk = B[np.arange(t.n_levels), :, np.arange(t.n_levels), :]  # (levels, q, q)
            out.append(s2 * np.einsum("ij,ljk,ik->li", L, blk, L))
            o += k
        return out
    out = []
    for t, L in zip(terms, roots):
        ok = t.codes >= 0
        A = np.zeros((t.n_levels, t.q, t.q))
        np.add.at(A, t.codes[ok], t.z[ok, :, None] * t.z[ok, None, :])  # A_l = Σ z zᵀ
        M = L.T @ A @ L + np.eye(t.q)
        out.append(s2 * np.einsum("ij,ljk,ik->li", L, np.linalg.inv(M), L))
    return out


def lmm_random_effects(result) -> list[tuple[str, list, np.ndarray, np.ndarray]]:
    """Per (term, covariate) of a MixedLM fit: ``(title, levels, BLUPs (L,), SDs (L,))``, the
    SDs from :func:`_lmm_cond_var` (lme4's ``condVar``)."""
    out = []
    blups = result.random_effects_by_term.items()
    for t, var, (name, blup) in zip(result.model.design.terms, _lmm_cond_var(result), blups):
        labels = [", ".join(map(str, k)) if isinstance(k, tuple) else str(k) for k in blup.index]
        for j, c in enumerate(blup.columns):
            title = name if t.q == 1 else f"{name}: {c}"
            out.append((title, labels, blup.iloc[:, j].to_numpy(),
                        np.sqrt(np.maximum(var[:, j], 0.0))))
    return out


def _glmm_random_effects(result) -> list[tuple[str, list, np.ndarray, np.ndarray]]:
    out = []
    for term in result.layout.vcp_names[:result.layout.k_sd]:
        re = result.random_effects(term)
        labels = level_labels([str(s) for s in re.index])
        out.append((str(term), labels, re["Mean"].to_numpy(), re["SD"].to_numpy()))
    return out


def caterpillar(result, term=None, *, alpha: float = 0.05, max_labels: int = 40, axes=None):
    """Caterpillar plot: each factor's random effects, sorted, with 1 − alpha intervals.

    Parameters
    ----------
    result : BayesMixedGLMResults or MixedLMResults
    term : str, optional
        One factor (a variance-component name of a GLMM, a term or ``"term: covariate"`` of a
        MixedLM); default all, one panel each.
    alpha : float
        Intervals are mean ± z·SD with z = Φ⁻¹(1 − alpha/2).
    max_labels : int
        Levels are labelled on the y axis up to this many per panel.
    axes : sequence of matplotlib Axes, optional
        One per panel; new figure otherwise.

    Returns
    -------
    numpy array of Axes
        One per factor; each panel holds one errorbar container whose y order is the sorted
        order of the means.
    """
    z = _z(alpha)
    panels = lmm_random_effects(result) if _is_lmm(result) else _glmm_random_effects(result)
    if term is not None:
        titles = [p[0] for p in panels]
        if term not in titles:
            raise ValueError(f"unknown term {term!r}; terms: {titles}")
        panels = [panels[titles.index(term)]]
    if axes is None:
        plt = _pyplot()
        rows = max(len(p[1]) for p in panels)
        height = 0.18 * rows if rows <= max_labels else 0.04 * rows  # labelled rows need room
        fig, axes = plt.subplots(1, len(panels), squeeze=False, layout="constrained",
                                 figsize=(4.2 * len(panels), float(np.clip(height + 1, 2.5, 12))))
        axes = axes[0]
    axes = np.atleast_1d(np.asarray(axes, dtype=object))
    for ax, (title, labels, mean, sd) in zip(axes, panels):
        order = np.argsort(mean, kind="stable")
        y = np.arange(len(order))
        dense = len(order) > max_labels
        ax.errorbar(mean[order], y, xerr=z * sd[order], fmt="o", ms=1.5 if dense else 3,
                    lw=0.5 if dense else 1, capsize=0)
        ax.axvline(0.0, color="0.5", lw=0.8, ls="--")
        if len(order) <= max_labels:
            ax.set_yticks(y, [labels[i] for i in order])
        else:
            ax.set_yticks([])
        ax.set_title(title)
        ax.set_xlabel(f"random effect ({100 * (1 - alpha):g}% interval)")
    return axes


# ---------------------------------------------------------------------- fixed effects
def _fixed(result) -> pd.DataFrame:
    if _is_lmm(result):
        return pd.DataFrame({"mean": result.fe_params, "sd": result.bse_fe})
    names = [str(s) for s in result.layout.fep_names]
    return pd.DataFrame({"mean": result.fe_mean, "sd": result.fe_sd}, index=names)


def _label(result) -> str:
    return f"{type(result.model).__name__} {result.method}"


def forest(results, labels: Sequence[str] | None = None, *, params: Sequence[str] | None = None,
           alpha: float = 0.05, ax=None):
    """Forest plot of the fixed effects of one or several fits, side by side.

    Parameters
    ----------
    results : result, sequence of results, or dict ``{label: result}``
        Fits of any kind (their fixed effects are matched by name).
    labels : sequence of str, optional
        Legend labels; default the dict keys, else "model class + method".
    params : sequence of str, optional
        Which fixed effects, in this order; default all (in the first fit's order, then new
        names of later fits).
    alpha : float
        Intervals are estimate ± z·SD (posterior SD or standard error).
    ax : matplotlib Axes, optional

    Returns
    -------
    matplotlib Axes
        One errorbar container per fit; y tick labels are the parameter names (top to bottom).
    """
    if isinstance(results, Mapping):
        labels = list(results) if labels is None else list(labels)
        results = list(results.values())
    elif not isinstance(results, (list, tuple)):
        results = [results]
    labels = [_label(r) for r in results] if labels is None else list(labels)
    if len(labels) != len(results):
        raise ValueError(f"{len(labels)} labels for {len(results)} fits")
    z = _z(alpha)
    k = len(results)
    tabs = [_fixed(r) for r in results]
    if params is None:
        params = list(dict.fromkeys(n for t in tabs for n in t.index))
    params = list(params)
    if ax is None:
        _, ax = _pyplot().subplots(figsize=(6.5, 1.2 + 0.4 * len(params) * max(1, k / 2)),
                                   layout="constrained")
    step = 0.7 / max(k, 1)
    y0 = -np.arange(len(params), dtype=float)  # first parameter on top
    for i, (tab, lab) in enumerate(zip(tabs, labels)):
        tab = tab.reindex(params)
        y = y0 + (k - 1) * step / 2 - i * step
        ax.errorbar(tab["mean"].to_numpy(float), y, xerr=z * tab["sd"].to_numpy(float), fmt="o",
                    ms=4, capsize=2, label=lab)
    ax.axvline(0.0, color="0.5", lw=0.8, ls="--")
    ax.set_yticks(y0, params)
    ax.set_xlabel(f"estimate ({100 * (1 - alpha):g}% interval)")
    if k > 1:
        ax.legend(loc="best", fontsize="small")
    return ax


# ---------------------------------------------------------------------- fit and residuals
def _fitted_values(result) -> tuple[np.ndarray, np.ndarray, np.ndarray, str, str]:
    """``(observed, fitted, residual, observed label, residual label)`` on the model's rows."""
    m = result.model
    if _is_lmm(result):
        fit = result.fittedvalues
        return (m.endog, fit, result.resid / np.sqrt(result.scale), str(m.endog_names),
                "standardised residual (y − fitted) / σ̂")
    mu = result.predict(include_random=True)  # per trial for the binomial
    y = np.asarray(m.endog, float)
    if m.family.name == "Binomial":
        n = np.ones_like(y) if m.n_trials is None else np.asarray(m.n_trials, float)
        var = n * mu * (1 - mu)
        resid = (y - n * mu) / np.sqrt(var)
        obs, name = y / n, ("observed proportion" if m.n_trials is not None else "observed")
    else:
        resid, obs, name = (y - mu) / np.sqrt(mu), y, "observed count"
    return obs, mu, resid, name, "Pearson residual"


def fitted(result, axes=None):
    """Observed against fitted values (with the line y = x), and residuals against fitted values.

    Fitted values include the random effects (GLMM: posterior means; MixedLM: BLUPs); for a
    binomial model with trials the observed value is the proportion y / n_trials.  Residuals:
    Pearson residuals for a GLMM, (y − fitted)/σ̂ for a MixedLM.

    Returns
    -------
    numpy array of two Axes
    """
    obs, fit, resid, yname, rname = _fitted_values(result)
    if axes is None:
        _, axes = _pyplot().subplots(1, 2, figsize=(9, 4), layout="constrained")
    ax1, ax2 = axes
    ax1.scatter(fit, obs, s=10, alpha=0.7)
    lo, hi = float(np.nanmin([fit.min(), obs.min()])), float(np.nanmax([fit.max(), obs.max()]))
    ax1.plot([lo, hi], [lo, hi], color="0.4", lw=0.8, ls="--")
    ax1.set_xlabel("fitted")
    ax1.set_ylabel(yname)
    ax1.set_title("observed vs fitted")
    ax2.scatter(fit, resid, s=10, alpha=0.7)
    ax2.axhline(0.0, color="0.4", lw=0.8, ls="--")
    ax2.set_xlabel("fitted")
    ax2.set_ylabel(rname)
    ax2.set_title("residuals vs fitted")
    return np.asarray(axes)


# ---------------------------------------------------------------------- deviance profile
def theta_names(model) -> list[tuple[str, bool]]:
    """``(name, is a diagonal entry)`` of each θ of a MixedLM (lme4's θ: the entries of the
    lower-triangular relative covariance factors, column by column, one block per term)."""
    out, seen = [], set()
    for t in model.design.terms:
        if t.tkey in seen:
            continue
        seen.add(t.tkey)
        pat = t.theta_pattern()
        for k in range(int(pat.max()) + 1):
            i, j = (int(a[0]) for a in np.nonzero(pat == k))
            g = t.tkey[3:] if t.kind == "vc" else t.group
            out.append((f"{g}: {t.cols[i]}" if i == j else f"{g}: {t.cols[i]}, {t.cols[j]}",
                        i == j))
    if len(out) != model.n_theta:  # a layout this reading does not know: plain names
        return [(f"theta[{k}]", False) for k in range(model.n_theta)]
    return out


def profile_table(result, param=0, grid=None, *, reoptimise: bool = True,
                  n_points: int = 31) -> pd.DataFrame:
    """The profiled deviance of a MixedLM fit along one covariance parameter θ_k.

    Each row evaluates the public ``model.deviance(theta, reml=result.reml)`` (β and σ²
    profiled out) at θ_k = ``grid`` value, with the other θ either re-optimised (Powell's
    derivative-free method, started from the neighbouring grid point, walking out from θ̂) or
    fixed at θ̂ (``reoptimise=False``: a slice, not a profile).

    Parameters
    ----------
    result : MixedLMResults
    param : int or str
        Index into ``result.theta`` or a name from :func:`theta_names` (e.g.
        ``"Subject: Days"``).  Diagonal entries are relative SDs (SD / residual SD).
    grid : array_like, optional
        Values of θ_k; default ``n_points`` from 0 (diagonal entries; θ̂ − 2·max(|θ̂|, 0.5)
        otherwise) to θ̂ + 2·max(|θ̂|, 0.5), with θ̂ itself included.
    reoptimise : bool

    Returns
    -------
    DataFrame
        Columns ``theta`` (θ_k), ``deviance`` and ``delta`` (deviance − deviance at θ̂).
    """
    from scipy.optimize import minimize

    if not _is_lmm(result):
        raise TypeError("deviance profiles need a MixedLM fit (the GLMM fits expose no "
                        "deviance at fixed variance parameters)")
    model, th = result.model, np.asarray(result.theta, float)
    names = theta_names(model)
    if isinstance(param, str):
        keys = [n for n, _ in names]
        if param not in keys:
            raise ValueError(f"unknown parameter {param!r}; parameters: {keys}")
        param = keys.index(param)
    k = int(param)
    if not 0 <= k < len(th):
        raise ValueError(f"param index {k} out of range (0..{len(th) - 1})")
    diag = [d for _, d in names]
    if grid is None:
        w = 2 * max(abs(th[k]), 0.5)
        grid = np.linspace(0.0 if diag[k] else th[k] - w, th[k] + w, n_points)
        grid = np.union1d(grid[np.abs(grid - th[k]) > 1e-9 * w], [th[k]])
    grid = np.asarray(grid, float)
    dev = lambda t: model.deviance(t, reml=result.reml)  # noqa: E731
    d_hat = dev(th)
    others = [i for i in range(len(th)) if i != k]
    bounds = [(0.0, None) if diag[i] else (None, None) for i in others]
    out = np.empty(len(grid))

    def at(v, start):
        t = th.copy()
        t[k] = v
        if not reoptimise or not others:
            return dev(t), start
        f = lambda x: dev(_put(t, others, x))  # noqa: E731
        r = minimize(f, start, method="Powell", bounds=bounds, options={"xtol": 1e-6, "ftol": 1e-10})
        return float(r.fun), r.x

    i0 = int(np.argmin(np.abs(grid - th[k])))
    for idx in (range(i0, len(grid)), range(i0 - 1, -1, -1)):  # walk out from θ̂ both ways
        start = th[others]
        for i in idx:
            out[i], start = at(grid[i], start)
    return pd.DataFrame({"theta": grid, "deviance": out, "delta": out - d_hat})


def _put(t: np.ndarray, idx: list, x: np.ndarray) -> np.ndarray:
    t = t.copy()
    t[idx] = x
    return t


def deviance_profile(result, param=0, grid=None, *, reoptimise: bool = True, level: float = 0.95,
                     ax=None):
    """Plot :func:`profile_table`: Δ deviance along θ_k, with the χ²₁ cut-off of ``level``
    (where the curve crosses it are the ends of the profile-likelihood interval).

    Returns
    -------
    matplotlib Axes
    """
    from scipy.stats import chi2

    tab = profile_table(result, param, grid, reoptimise=reoptimise)
    if ax is None:
        _, ax = _pyplot().subplots(figsize=(5.5, 3.8), layout="constrained")
    names = theta_names(result.model)
    k = param if isinstance(param, int) else [n for n, _ in names].index(param)
    ax.plot(tab["theta"], tab["delta"], "-o", ms=2.5)
    ax.axhline(chi2.ppf(level, 1), color="C3", lw=0.8, ls="--",
               label=f"χ²₁ {100 * level:g}% cut-off")
    ax.axvline(result.theta[k], color="0.5", lw=0.8, ls=":")
    how = "others re-optimised" if reoptimise else "others fixed at θ̂"
    ax.set_xlabel(f"θ[{names[k][0]}] (relative to the residual SD)")
    ax.set_ylabel(f"Δ {'REML ' if result.reml else ''}deviance")
    ax.set_title(f"deviance profile ({how})")
    ax.legend(loc="upper center", fontsize="small")
    return ax
