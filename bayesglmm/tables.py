"""Data in and estimates out, as files: what the command line (``bayesglmm fit``) reads and
writes.

* :func:`read_table` — a CSV or Parquet file as a DataFrame (Parquet through pandas with
  pyarrow: the ``[parquet]`` extra);
* :func:`estimates` — one tidy table of a fit's estimates (fixed effects and variance
  parameters);
* :func:`write_estimates` — that table as ``.csv``, or ``.json`` with the random effects too.

>>> from bayesglmm import datasets, mixedlm, tables
>>> r = mixedlm("Yield ~ 1 + (1 | Batch)", datasets.load("dyestuff")).fit()
>>> tables.estimates(r)[["name", "kind"]].values.tolist()
[['Intercept', 'fixed'], ['Batch: Intercept', 'variance'], ['Residual', 'variance']]
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["estimates", "random_effects", "read_table", "write_estimates"]


def read_table(path) -> pd.DataFrame:
    """Read ``path`` (``.csv``, ``.parquet``/``.pq``) into a DataFrame.

    Raises
    ------
    FileNotFoundError
        When the file does not exist.
    ImportError
        For Parquet without pyarrow, naming the ``[parquet]`` extra.
    ValueError
        For another file type.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"no such data file: {str(p)!r}")
    suffix = p.suffix.lower()
    if suffix == ".csv":
        return pd.read_csv(p)
    if suffix in (".parquet", ".pq"):
        try:
            import pyarrow  # noqa: F401
        except ImportError as err:
            raise ImportError("reading Parquet needs pyarrow: pip install "
                              "'bayesglmm[parquet]'") from err
        return pd.read_parquet(p)
    raise ValueError(f"unknown data file type {suffix!r}: use .csv or .parquet")


def _is_lmm(result) -> bool:
    from .results.lmm import MixedLMResults

    return isinstance(result, MixedLMResults)


def estimates(result) -> pd.DataFrame:
    """A fit's estimates as one table.

    Columns: ``name``, ``kind``, ``estimate``, ``std_err``.  Kinds:

    * Bayesian mixed GLMs: ``fixed`` (posterior mean or mode), ``log_sd`` (log SD of a variance
      component), ``corr_z`` (atanh of a partial correlation), ``log_theta`` (the negative
      binomial's log θ); ``std_err`` is the posterior SD.
    * MixedLM: ``fixed`` (with standard errors), then lme4's ``VarCorr``: ``variance`` and
      ``covariance`` rows of each term and the residual variance (``std_err`` empty).
    """
    if _is_lmm(result):
        rows = [(n, "fixed", float(v), float(s))
                for n, v, s in zip(result.fe_params.index, result.fe_params, result.bse_fe)]
        for g, v1, v2, vcov, _ in result.varcorr.itertuples(index=False):
            if g == "Residual":
                rows.append(("Residual", "variance", float(vcov), math.nan))
            elif v2 is None or (isinstance(v2, float) and math.isnan(v2)):
                rows.append((f"{g}: {v1}", "variance", float(vcov), math.nan))
            else:
                rows.append((f"{g}: {v1}, {v2}", "covariance", float(vcov), math.nan))
    else:
        lay = result.layout
        kinds = (["fixed"] * lay.k_fep + ["log_sd"] * lay.k_sd
                 + ["corr_z"] * (lay.k_vcp - lay.k_sd - lay.k_disp) + ["log_theta"] * lay.k_disp)
        names = list(lay.fep_names) + list(lay.vcp_names)
        est = np.concatenate([result.fe_mean, result.vcp_mean])
        sd = np.concatenate([result.fe_sd, result.vcp_sd])
        rows = [(str(n), k, float(e), float(s)) for n, k, e, s in zip(names, kinds, est, sd)]
    return pd.DataFrame(rows, columns=["name", "kind", "estimate", "std_err"])


def random_effects(result) -> pd.DataFrame:
    """The random effects as one table: ``term``, ``level``, ``estimate``, ``std_err`` (GLMM:
    posterior mean and SD; MixedLM: BLUPs, ``std_err`` empty)."""
    out = []
    if _is_lmm(result):
        for term, tab in result.random_effects_by_term.items():
            for col in tab.columns:
                name = term if tab.shape[1] == 1 else f"{term}: {col}"
                for lev, v in tab[col].items():
                    out.append((name, str(lev), float(v), math.nan))
    else:
        m = result.model
        names = list(m.vc_names) if m.vc_names is not None else [str(j) for j in range(m.k_vc)]
        for j in range(m.k_vc):
            out.append((str(m.vcp_names[m.ident[j]]), names[j], float(result.vc_mean[j]),
                        float(result.vc_sd[j])))
    return pd.DataFrame(out, columns=["term", "level", "estimate", "std_err"])


def _records(df: pd.DataFrame) -> list[dict]:
    return [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()}
            for r in df.to_dict(orient="records")]


def write_estimates(result, path, info: dict | None = None) -> Path:
    """Write :func:`estimates` to ``path``: ``.csv`` (that table), or ``.json`` with ``info``
    (e.g. the command line's arguments), the estimates and :func:`random_effects` (NaN as
    null)."""
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix == ".csv":
        estimates(result).to_csv(p, index=False)
    elif suffix == ".json":
        doc = {**(info or {}), "nobs": int(result.model.nobs),
               "estimates": _records(estimates(result)),
               "random_effects": _records(random_effects(result))}
        p.write_text(json.dumps(doc, indent=1) + "\n")
    else:
        raise ValueError(f"unknown output file type {suffix!r}: use .csv or .json")
    return p
