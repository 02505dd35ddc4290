"""Results of :func:`bayesglmm.fit_many`: one mixed GLM fit per response, as tables.

The per-response arrays of the batched fit are stored in full — the estimates and their
covariance (fit_map: as the single fit's cov_params), the random effects' modes or means and
SDs, the optimiser's report — so
:meth:`ManyResults.result` rebuilds response j's ordinary results object from them, without
refitting.  Memory: O(k·(k_a² + k_vc)) floats for k responses.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ..solvers import STATUS_MESSAGES, Solution

if TYPE_CHECKING:
    from .glmm import BayesMixedGLMResults

__all__ = ["ManyResults"]


class ManyResults:
    """The fits of one model to each of k responses (:func:`bayesglmm.fit_many`).

    Attributes
    ----------
    fe_mean, fe_sd : DataFrame (k, k_fep)
        Fixed effects and their posterior SDs (rows: responses, columns: ``fep_names``).
    vcp_mean, vcp_sd : DataFrame (k, k_vcp)
        Log SDs (then correlation parameters) and their SDs (columns: ``vcp_names``); a
        singular component's log SD is at the lower bound and its SD NaN, as in one fit.
    llf : Series (k,)
        The Laplace log-likelihood (lme4's logLik); NaN for fit_map and fit_vb.
    log_post : Series (k,)
        The log marginal posterior (NaN with ``priors=False``); fit_map: log p at the mode;
        fit_vb: NaN.
    converged : Series (k,) of bool
    status : Series (k,) of int
        A key of ``solvers.STATUS_MESSAGES``.
    n_iter : Series (k,) of int
        Outer Newton steps.
    singular : Series (k,) of bool
        Some variance estimated at zero.
    names : list of str
        The responses.
    method : str
        ``"laplace"``, ``"map"`` or ``"vb"``.
    priors : bool
    chunk_size : int
        Responses per vmapped batch.
    """

    def __init__(self, model, Y: np.ndarray, names: list, method: str, arrays: dict,
                 info: dict):
        self.model, self.names, self.method = model, list(names), method
        self._Y, self._arrays = Y, arrays
        self.priors, self._keep = info["priors"], info["keep"]
        self.chunk_size = info["chunk_size"]
        kf, idx = model.k_fep, pd.Index(self.names, name="response")
        ka, k = kf + model.k_vcp, len(self.names)
        if method == "laplace":
            theta = arrays["theta"]
            sd = np.sqrt(np.maximum(np.diagonal(arrays["cov"], axis1=1, axis2=2), 0.0))
            llf, log_post, singular = (arrays["llf"], arrays["log_post"],
                                       arrays["singular"].any(axis=1))
        else:  # map, vb: the posterior modes or means and variances
            theta = arrays["params"][:, :ka]
            sd = np.sqrt(np.maximum(arrays["variances"][:, :ka], 0.0))
            # map: log p(y, fe, vcp, vc) at the mode (the objective is −log p)
            log_post = -arrays["value"] if method == "map" else np.full(k, np.nan)
            llf, singular = np.full(k, np.nan), np.zeros(k, bool)
        frame = lambda a, cols: pd.DataFrame(a, index=idx, columns=list(cols))  # noqa: E731
        self.fe_mean = frame(theta[:, :kf], model.fep_names)
        self.fe_sd = frame(sd[:, :kf], model.fep_names)
        self.vcp_mean = frame(theta[:, kf:], model.vcp_names)
        self.vcp_sd = frame(sd[:, kf:], model.vcp_names)
        self.llf = pd.Series(llf, index=idx, name="llf")
        self.log_post = pd.Series(log_post, index=idx, name="log_post")
        self.status = pd.Series(arrays["status"], index=idx, name="status")
        self.converged = pd.Series(arrays["status"] == 0, index=idx, name="converged")
        self.n_iter = pd.Series(arrays["n_iter"], index=idx, name="n_iter")
        self.singular = pd.Series(singular, index=idx, name="singular")

    def __len__(self) -> int:
        return len(self.names)

    def __repr__(self) -> str:
        return (f"<ManyResults: {len(self)} responses, {self.method}, "
                f"{int(self.converged.sum())} converged>")

    def _index(self, j: int | str) -> int:
        if isinstance(j, (int, np.integer)) and not isinstance(j, bool):
            if not -len(self) <= j < len(self):
                raise IndexError(f"response {j} out of range for {len(self)} responses")
            return int(j) % len(self)
        if isinstance(j, str) and j in self.names:
            return self.names.index(j)
        raise KeyError(f"no response {j!r}; use an int or one of the names "
                       f"({self.names[:3]}...)")

    def model_for(self, j: int | str) -> Any:
        """The model with response j as its endog (a shallow copy sharing the design)."""
        i = self._index(j)
        m, y = copy.copy(self.model), self._Y[:, i].copy()
        trials = 1.0 if m.n_trials is None else m.n_trials
        m.endog, m.endog_name = y, self.names[i]
        m._const = m.family.constant(y, trials, m.freq_weights)
        m._data_cache = {}
        return m

    def result(self, j: int | str) -> BayesMixedGLMResults:
        """The ordinary results of response j (an int or a name), as
        ``model_for(j).fit_laplace(...)`` returns them — built from the stored arrays, not
        refitted; warns (ConvergenceWarning, SingularFitWarning, BoundaryWarning) as that
        fit would."""
        from ..fits.laplace import LaplaceFit

        i, a = self._index(j), self._arrays
        m = self.model_for(i)
        if self.method in ("map", "vb"):
            return self._newton_result(m, i)
        kf = m.k_fep
        theta = a["theta"][i]
        sol = Solution._make([theta, a["u"][i][:, None], a["value"][i], a["grad_norm"][i],
                              int(a["n_iter"][i]), int(a["status"][i]), 0, 0, 0])
        fit = LaplaceFit(solution=sol, fe=theta[:kf], vcp=theta[kf:], cov=a["cov"][i],
                         vc=a["vc"][i], vc_sd=a["vc_sd"][i], vc_sd_cond=a["vc_sd_cond"][i],
                         llf=np.asarray(a["llf"][i]), log_post=np.asarray(a["log_post"][i]),
                         singular=a["singular"][i])
        return m._laplace_results(fit, self._keep, self.priors, False, stacklevel=3)

    def _newton_result(self, m, i: int):
        """Response i's fit_map or fit_vb results (as models.glmm._BayesMixedGLM builds
        them after its fit)."""
        from ..models.base import optimize_result

        a, vb = self._arrays, self.method == "vb"
        sol = Solution._make([a["a"][i], a["v"][i], a["value"][i], a["grad_norm"][i],
                              *(int(a[key][i]) for key in ("n_iter", "status", "n_warm",
                                                           "n_fev", "n_cg"))])
        retvals = optimize_result(sol, "VB" if vb else "Laplace")
        retvals.x = a["x"][i]
        retvals.method = "newton"
        params, variances = a["params"][i], a["variances"][i]
        m._check_fit(retvals, params, variances, "fit_vb" if vb else "fit_map")
        if vb:
            return _results_class(m)(m, params, variances, retvals, method="vb")
        return _results_class(m)(m, params, a["cov"][i], retvals, variances=variances,
                                    method="map", extra={"cov_exact": bool(a["cov_exact"][i])})

    def message(self, j: int | str) -> str:
        """Why response j's optimiser stopped."""
        return STATUS_MESSAGES[int(self._arrays["status"][self._index(j)])]


def _results_class(model):
    """The results class the model's fits return (a subclass for the negative binomial)."""
    from .glmm import BayesMixedGLMResults

    return getattr(model, "_results_class", BayesMixedGLMResults)

