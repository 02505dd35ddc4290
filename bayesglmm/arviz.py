"""Export a Bayesian mixed GLM fit to ArviZ (the optional ``[arviz]`` extra).

Examples
--------
>>> from bayesglmm import BinomialBayesMixedGLM, datasets
>>> df = datasets.load("cbpp")
>>> r = BinomialBayesMixedGLM.from_formula(
...     "incidence ~ C(period)", {"herd": "0 + C(herd)"}, df, n_trials="size").fit_vb(rng=0)
>>> idata = r.to_inference_data(draws=400, rng=0)
>>> sorted(idata.groups())
['constant_data', 'log_likelihood', 'observed_data', 'posterior']
>>> idata.posterior["re_herd"].shape          # (chain, draw, herd)
(4, 100, 15)

The posterior draws come from the fit's approximation (see :mod:`bayesglmm.posterior_draws`);
the draws are independent, laid out as ``chains`` pseudo-chains so that ArviZ's R-hat and ESS
(which need two chains or more) run: expect R-hat ≈ 1 and ESS ≈ the number of draws.
"""

from __future__ import annotations

import numpy as np

from . import __version__
from ._labels import level_labels
from .posterior_draws import (APPROXIMATIONS, Draws, approximation, check_bayesian, draw,
                              linear_predictor, pointwise_loglik, predictive)

__all__ = ["RE_MAX_LEVELS", "to_inference_data"]

RE_MAX_LEVELS = 10_000  # random-effect draws are stored by default up to this many levels

_LOGLIK_NOTE = ("pointwise log p(y_i | fe, vc) of each row, conditional on each draw's random "
                "effects (not integrated over them), times the row's frequency weight; LOO "
                "then leaves out single rows, not whole groups")


def _import_arviz():
    try:
        import arviz
    except ImportError as err:
        raise ImportError("to_inference_data needs ArviZ: pip install 'bayesglmm[arviz]'") from err
    return arviz


def _re_groups(model) -> list[tuple[str, str, np.ndarray, list]]:
    """Per log-SD index k: (variable name, dim name, columns of vc, level labels)."""
    out = []
    names = list(model.vc_names) if model.vc_names is not None else None
    for k in range(model.layout.k_sd):
        ii = np.flatnonzero(model.ident == k)
        term = str(model.vcp_names[k])
        labels = ([str(i) for i in range(len(ii))] if names is None
                  else level_labels([names[i] for i in ii]))
        out.append((f"re_{term}", f"{term}_level", ii, labels))
    return out


def to_inference_data(result, draws: int = 1000, rng=None, *, chains: int = 4,
                      random_effects: bool | None = None, log_likelihood: bool = True,
                      posterior_predictive: bool = False):
    """An ``arviz.InferenceData`` of posterior draws from a Bayesian mixed GLM fit.

    Parameters
    ----------
    result : BayesMixedGLMResults
        From ``fit_map``, ``fit_vb`` or ``fit_laplace(priors=True)`` (with or without
        ``integrate``).  ML fits (``fit_laplace(priors=False)``) and ``MixedLM`` fits have no
        posterior: ``ValueError``.
    draws : int
        Number of independent draws in all, split evenly into ``chains`` pseudo-chains.
    rng : None, int or numpy Generator
        Seed or generator (``numpy.random.default_rng(rng)``).
    chains : int
        Pseudo-chains (must divide ``draws``); the draws are independent either way.
    random_effects : bool, optional
        Store the random-effect draws in the posterior group (one variable per variance
        component, ``re_<name>``, with the factor's levels as coordinates).  Default: when
        the model has at most :data:`RE_MAX_LEVELS` random effects.  They are drawn (and enter
        the log-likelihood) either way.
    log_likelihood : bool
        Add the ``log_likelihood`` group: log p(y_i | fe, vc) per draw and row, conditional on
        the draw's random effects, so that ``arviz.loo`` and ``arviz.compare`` run.
    posterior_predictive : bool
        Add the ``posterior_predictive`` group: responses drawn from the likelihood at each
        draw.

    Returns
    -------
    arviz.InferenceData
        ``posterior``: ``fe`` (dim ``fe_param``), ``log_sd`` and ``sd`` (dim ``vc_term``),
        ``corr_z`` and ``partial_corr`` (dim ``corr_param``, correlated terms only),
        ``log_theta`` and ``theta`` (negative binomial) and the
        ``re_*`` variables; ``observed_data`` (and ``constant_data`` with ``n_trials``);
        optionally ``log_likelihood`` and ``posterior_predictive`` (dim ``obs``).  Each
        group's ``attrs`` record the approximation drawn from (``approximation``) and, for the
        log-likelihood, that it is conditional on the random effects.
    """
    check_bayesian(result)
    az = _import_arviz()
    draws, chains = int(draws), int(chains)
    if draws < 1 or chains < 1 or draws % chains:
        raise ValueError(f"draws ({draws}) must be a positive multiple of chains ({chains})")
    gen = np.random.default_rng(rng)
    model, lay = result.model, result.layout
    if random_effects is None:
        random_effects = lay.k_vc <= RE_MAX_LEVELS
    n = model.nobs
    m = model.re_design.cols.shape[1] if model.k_vc else 1
    chunk = int(max(1, min(draws, 2e7 // max(n * m, 1))))  # bound the (chunk, n, m) gather

    fe, vcp, vc, ll, pp = [], [], [], [], []
    for d in draw(result, draws, gen, chunk=chunk):
        fe.append(d.fe)
        vcp.append(d.vcp)
        if random_effects:
            vc.append(d.vc)
        if log_likelihood or posterior_predictive:
            eta = linear_predictor(model, d)
            if log_likelihood:
                ll.append(pointwise_loglik(model, eta, d.vcp))
            if posterior_predictive:
                pp.append(predictive(model, eta, gen, d.vcp))
    shape = lambda x: np.concatenate(x).reshape(chains, draws // chains, *x[0].shape[1:])  # noqa: E731
    d = Draws(shape(fe), shape(vcp), shape(vc) if vc else np.empty((chains, draws // chains, 0)))

    k_sd = lay.k_sd
    post = {"fe": d.fe, "log_sd": d.vcp[..., :k_sd], "sd": np.exp(d.vcp[..., :k_sd])}
    coords = {"fe_param": [str(s) for s in lay.fep_names],
              "vc_term": [str(s) for s in lay.vcp_names[:k_sd]], "obs": np.arange(n)}
    dims = {"fe": ["fe_param"], "log_sd": ["vc_term"], "sd": ["vc_term"]}
    k_corr = lay.k_vcp - lay.k_disp  # correlation parameters: k_sd..k_corr
    if k_corr > k_sd:
        post["corr_z"] = d.vcp[..., k_sd:k_corr]
        post["partial_corr"] = np.tanh(d.vcp[..., k_sd:k_corr])  # r = tanh(z)
        coords["corr_param"] = [str(s) for s in lay.vcp_names[k_sd:k_corr]]
        dims["corr_z"] = dims["partial_corr"] = ["corr_param"]
    if lay.k_disp:  # negative binomial: log θ and θ (glmmTMB's sigma), scalars
        post["log_theta"] = d.vcp[..., -1]
        post["theta"] = np.exp(d.vcp[..., -1])
    if random_effects:
        for var, dim, ii, labels in _re_groups(model):
            post[var] = d.vc[..., ii]
            coords[dim] = labels
            dims[var] = [dim]

    yname = str(getattr(model, "endog_name", None) or "y")
    groups = {"posterior": post, "observed_data": {yname: np.asarray(model.endog)}}
    dims[yname] = ["obs"]
    if model.n_trials is not None:
        groups["constant_data"] = {"n_trials": np.asarray(model.n_trials)}
        dims["n_trials"] = ["obs"]
    if log_likelihood:
        groups["log_likelihood"] = {yname: shape(ll)}
    if posterior_predictive:
        groups["posterior_predictive"] = {yname: shape(pp)}
    idata = az.from_dict(**groups, coords=coords, dims=dims)

    kind = approximation(result)
    attrs = {"inference_library": "bayesglmm", "inference_library_version": __version__,
             "fit_method": result.method, "approximation": APPROXIMATIONS[kind],
             "draws": "independent draws laid out as pseudo-chains", "family": model.family.name,
             "random_effects_stored": str(bool(random_effects))}
    for g in idata.groups():
        idata[g].attrs.update(attrs)
    if log_likelihood:
        idata.log_likelihood.attrs["log_likelihood"] = _LOGLIK_NOTE
    return idata
