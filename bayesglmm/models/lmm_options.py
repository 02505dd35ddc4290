"""statsmodels' ``MixedLM.fit`` keywords, read once at the boundary.

statsmodels' fit alternates scipy optimisers over a packed parameter vector and takes their
options (``method`` as a name or a list of names, ``gtol``, ``full_output``, ``niter_sa``,
``do_cg``, ``free``, ``cov_type``, anything scipy takes).  bayesglmm minimises the profiled
deviance over θ by a bound-constrained Newton method to a tighter tolerance, so every
statsmodels method name leads to the same optimum.  :func:`fit_options` maps the keywords onto
that fit; a keyword that cannot be honoured gives an
:class:`~bayesglmm.exceptions.IgnoredArgumentWarning` that says why, never a ``TypeError``.
"""

from __future__ import annotations

import warnings
from typing import NamedTuple

import numpy as np
import pandas as pd

from ..exceptions import IgnoredArgumentWarning

__all__ = ["FitOptions", "OUR_METHODS", "fit_options", "subset_rows", "unused_keywords"]

# our optimisers (fits.lmm_theta.minimise_theta)
OUR_METHODS = {"newton": "newton", "lbfgs": "lbfgs", "lbfgsb": "lbfgs", "l-bfgs-b": "lbfgs",
               "lbfgs-only": "lbfgs-only"}
# statsmodels' (scipy's) names: the Newton method reaches the same optimum
SM_METHODS = {"bfgs", "cg", "nm", "powell", "newton", "ncg", "basinhopping", "minimize",
              "trust-constr", "slsqp"}


class FitOptions(NamedTuple):
    method: str  # one of OUR_METHODS' values
    diag_re: bool  # `free` asks for a diagonal cov_re (independent random effects)
    gtol: float | None  # the largest gradient the user accepts (checked after the fit)
    full_output: bool  # keep a history record (results.hist)


def _warn(name: str, why: str, stacklevel: int):
    warnings.warn(f"Argument {name} not used by MixedLM.fit: {why}", IgnoredArgumentWarning,
                  stacklevel=stacklevel + 1)


def _method(method) -> str:
    names = [method] if isinstance(method, str) else list(method or ["newton"])
    if not names or not all(isinstance(m, str) for m in names):
        raise TypeError(f"method must be a string or a list of strings, got {method!r}")
    first = names[0].lower()
    if first in OUR_METHODS:
        return OUR_METHODS[first]
    if all(m.lower() in SM_METHODS or m.lower() in OUR_METHODS for m in names):
        return "newton"
    raise ValueError(
        f"method must be 'newton', 'lbfgs', 'lbfgs-only' or one of statsmodels' names "
        f"{sorted(SM_METHODS)} (or a list of them), got {method!r}")


def _free(free, model, stacklevel) -> bool:
    """Whether ``free`` (statsmodels' mask: 1 = estimated) asks for a diagonal ``cov_re``."""
    from .lmm_params import as_components

    fe, cov, vc = as_components(free, model.k_fe, model.k_re, False, has_fe=True)
    fe_ok = fe is None or np.all(np.asarray(fe) != 0)
    vc_ok = np.all(np.asarray(vc) != 0)
    cov = np.asarray(cov)
    full = np.all(cov != 0)
    diag = cov.size and np.all(np.diag(cov) != 0) and np.all(cov[~np.eye(len(cov), dtype=bool)] == 0)
    if fe_ok and vc_ok and (full or diag):
        return bool(diag) and not full
    _warn("free", "only masks that estimate every fixed effect and variance component and "
          "all of cov_re or its diagonal (independent random effects) are supported; the "
          "unconstrained model is fitted", stacklevel + 1)
    return False


def fit_options(model, method="newton", free=None, gtol=None, full_output=False,
                cov_type=None, niter_sa=0, do_cg=True, stacklevel=2, **other) -> FitOptions:
    """Read statsmodels' fit keywords; warn for each one that cannot be honoured."""
    meth = _method(method)
    if cov_type is not None:
        _warn("cov_type", "the covariance of the estimates is the inverse observed information "
              "(lme4's vcov for the fixed effects); no robust covariance is available",
              stacklevel + 1)
    if niter_sa:
        _warn("niter_sa", "statsmodels' alternating steepest-ascent iterations are not needed by "
              "the Newton method, which converges to the same optimum", stacklevel + 1)
    if do_cg is not True:
        _warn("do_cg", "the fit always runs its Newton method to convergence", stacklevel + 1)
    for name in other:
        why = ("statsmodels' penalised fit is not available: the estimates are the unpenalised "
               "REML/ML ones" if name in ("fe_pen", "cov_pen") else
               "an option of statsmodels' scipy optimisers, which bayesglmm does not use")
        _warn(name, why, stacklevel + 1)
    diag = False if free is None else _free(free, model, stacklevel + 1)
    if gtol is not None and not np.isfinite(float(gtol)):
        raise ValueError(f"gtol must be a finite number, got {gtol!r}")
    return FitOptions(meth, diag, None if gtol is None else float(gtol), bool(full_output))


def unused_keywords(kwargs, where):
    """statsmodels' other constructor keywords: accepted, each with a warning; ``weights``
    (lme4's prior weights, which would change the estimates) is an error."""
    if "weights" in kwargs:
        raise ValueError(f"{where}: weights= (prior weights, as lme4's) is not supported by "
                         "the linear mixed model; fitting without them would give other "
                         "estimates — drop the argument to fit unweighted")
    for name in kwargs:
        warnings.warn(f"Argument {name} not used by {where}: bayesglmm has no such option",
                      IgnoredArgumentWarning, stacklevel=3)


def subset_rows(data, groups, subset):
    """statsmodels' ``subset``: the rows of ``data`` (and of an array ``groups``) to use."""
    if subset is None:
        return data, groups
    df = data if isinstance(data, pd.DataFrame) else pd.DataFrame(data)
    sub = np.asarray(subset)
    pos = np.flatnonzero(sub) if sub.dtype == bool else df.index.get_indexer(sub)
    if sub.dtype == bool and len(sub) != len(df):
        raise ValueError(f"subset has {len(sub)} values but data has {len(df)} rows")
    if np.any(pos < 0):
        raise ValueError("subset names rows that are not in data")
    if groups is not None and not isinstance(groups, str):
        groups = np.asarray(groups)[pos]
    return df.iloc[pos], groups
