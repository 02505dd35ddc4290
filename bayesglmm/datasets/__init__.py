"""Small real datasets shipped with bayesglmm (copied from the R packages lme4 and doBy).

>>> from bayesglmm import datasets
>>> df = datasets.load("cbpp")
>>> df.shape
(56, 4)
"""

from __future__ import annotations

from importlib import resources

import numpy as np
import pandas as pd

__all__ = ["expand_binomial", "load", "names"]

# name -> (columns read as categorical strings, read the first column as the index)
_SPECS = {
    "cbpp": (["herd", "period"], False),
    "grouseticks": (["INDEX", "BROOD", "YEAR", "LOCATION"], False),
    "dietox": ([], True),
    "sleepstudy": (["Subject"], False),
    "dyestuff": (["Batch"], False),
    "penicillin": (["plate", "sample"], False),
}


def names() -> list[str]:
    """Names of the bundled datasets."""
    return sorted(_SPECS)


def load(name: str) -> pd.DataFrame:
    """Load a bundled dataset as a DataFrame.

    Grouping columns are returned as strings, so formulas treat them as factors.

    Parameters
    ----------
    name : str
        One of :func:`names`: ``cbpp`` (lme4; contagious bovine pleuropneumonia, 56 herd-periods),
        ``grouseticks`` (lme4; ticks on red grouse chicks, 403 rows), ``dietox`` (doBy; pig
        growth, 861 rows), ``sleepstudy``, ``dyestuff`` and ``penicillin`` (lme4).
    """
    if name not in _SPECS:
        import difflib

        close = difflib.get_close_matches(name, list(_SPECS), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown dataset {name!r}{hint} Available: {', '.join(names())}")
    cats, has_index = _SPECS[name]
    path = resources.files(__name__).joinpath("data", f"{name}.csv")
    with path.open("r") as fh:
        df = pd.read_csv(fh, index_col=0 if has_index else None)
    if has_index:
        df = df.reset_index(drop=True)
    for c in cats:
        df[c] = df[c].astype(str)
    return df


def expand_binomial(df: pd.DataFrame, successes: str, trials: str, response: str = "y") -> pd.DataFrame:
    """Expand binomial counts to one 0/1 row per trial.

    Each row with ``df[successes]`` successes out of ``df[trials]`` becomes ``df[trials]`` rows,
    the first ``successes`` of them with ``response = 1``.

    >>> from bayesglmm import datasets
    >>> long = datasets.expand_binomial(datasets.load("cbpp"), "incidence", "size")
    >>> len(long), int(long["y"].sum())
    (842, 99)
    """
    k = df[successes].to_numpy().astype(np.int64)
    n = df[trials].to_numpy().astype(np.int64)
    if np.any(k < 0) or np.any(k > n):
        raise ValueError(f"{successes!r} must lie between 0 and {trials!r}")
    rows = np.repeat(np.arange(len(df)), n)
    out = df.iloc[rows].drop(columns=[successes, trials]).reset_index(drop=True)
    # within each original row, the first k trials are successes
    start = np.repeat(np.cumsum(n) - n, n)
    pos = np.arange(len(rows)) - start
    out[response] = (pos < np.repeat(k, n)).astype(np.int64)
    return out
