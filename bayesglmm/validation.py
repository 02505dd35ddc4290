"""Input checks at the boundary of the library.

Each ``check_*`` function returns a clean array or raises ``ValueError`` with a message that
names the offending argument or column.  Kernels trust their input; only models call these.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd

__all__ = [
    "check_1d",
    "check_2d",
    "check_binary",
    "check_columns",
    "check_counts",
    "check_finite",
    "check_ident",
    "check_length",
    "check_random_state",
    "suggest",
]


def suggest(name: str, choices: Iterable[str]) -> str | None:
    """The closest of ``choices`` to ``name``: a case-insensitive match first, then difflib."""
    choices = [str(c) for c in choices]
    lower = {c.lower(): c for c in choices}
    if name.lower() in lower:
        return lower[name.lower()]
    close = difflib.get_close_matches(name, choices, n=1, cutoff=0.6)
    return close[0] if close else None


def check_columns(names: Sequence[str], data: pd.DataFrame, what: str = "formula") -> None:
    """Raise if any of ``names`` is not a column of ``data``, suggesting close matches."""
    cols = [str(c) for c in data.columns]
    missing = [n for n in names if n not in cols]
    if not missing:
        return
    from .checks import R_FUNCTIONS

    for n in missing:
        if n in R_FUNCTIONS:  # an lme4 formula's function, read as a column name
            raise ValueError(f"{what} uses R's {n}(), which is not a column or a function "
                             f"here: {R_FUNCTIONS[n]}")
    parts = []
    for n in missing:
        s = suggest(n, cols)
        parts.append(f"{n!r} (did you mean {s!r}?)" if s else repr(n))
    noun = "column" if len(missing) == 1 else "columns"
    raise ValueError(
        f"{what} names {noun} not in data: {', '.join(parts)}. "
        f"Available columns: {', '.join(cols)}"
    )


def check_finite(x: np.ndarray, name: str) -> np.ndarray:
    """Raise if ``x`` holds NaN or inf, saying how many and where the first is."""
    x = np.asarray(x)
    if x.dtype.kind in "fc":
        bad = ~np.isfinite(x)
        if bad.any():
            idx = np.argwhere(bad)[0]
            kind = "NaN" if np.isnan(x[tuple(idx)]) else "inf"
            loc = int(idx[0]) if len(idx) == 1 else tuple(int(i) for i in idx)
            raise ValueError(
                f"{name} contains {int(bad.sum())} non-finite value(s) ({kind} at {loc}); "
                "remove or impute them first"
            )
    elif x.dtype.kind not in "biu":
        raise ValueError(f"{name} must be numeric, got dtype {x.dtype}")
    return x


def check_1d(x, name: str, dtype=np.float64) -> np.ndarray:
    """A 1-D numeric array from ``x`` (a column vector is flattened)."""
    if isinstance(x, (pd.DataFrame,)) and x.shape[1] == 1:
        x = x.iloc[:, 0]
    try:
        arr = np.asarray(x, dtype=dtype)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be numeric: {err}") from None
    if arr.ndim == 2 and 1 in arr.shape:
        arr = arr.ravel()
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {arr.shape}")
    return check_finite(arr, name)


def check_2d(x, name: str, dtype=np.float64) -> np.ndarray:
    """A 2-D numeric array from ``x`` (a vector becomes one column)."""
    try:
        arr = np.asarray(x, dtype=dtype)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be numeric: {err}") from None
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise ValueError(f"{name} must have one or two dimensions, got shape {arr.shape}")
    return check_finite(arr, name)


def check_length(n_expected: int, n: int, name: str, ref: str = "endog") -> None:
    if n != n_expected:
        raise ValueError(f"{name} has {n} rows but {ref} has {n_expected}")


def check_binary(y: np.ndarray, name: str = "endog") -> np.ndarray:
    """Raise unless ``y`` holds only 0 and 1."""
    bad = (y != 0) & (y != 1)
    if bad.any():
        vals = np.unique(y[bad])[:5]
        raise ValueError(
            f"{name} must be 0/1 for a binomial model; found {int(bad.sum())} other value(s), "
            f"e.g. {', '.join(f'{v:g}' for v in vals)}. For counts out of a number of trials, "
            "pass n_trials="
        )
    return y


def check_counts(y: np.ndarray, name: str = "endog") -> np.ndarray:
    """Raise unless ``y`` holds non-negative integers."""
    if np.any(y < 0):
        raise ValueError(f"{name} must be non-negative counts; found {int((y < 0).sum())} negative value(s)")
    if np.any(y != np.round(y)):
        bad = int((y != np.round(y)).sum())
        raise ValueError(f"{name} must be integer counts; found {bad} non-integer value(s)")
    return y


def check_ident(ident, k_vc: int) -> np.ndarray:
    """``ident`` maps each random-effect column to its variance parameter."""
    arr = np.asarray(ident)
    if arr.ndim != 1:
        raise ValueError(f"ident must be a one-dimensional array, got shape {arr.shape}")
    if len(arr) != k_vc:
        raise ValueError(f"ident has length {len(arr)} but exog_vc has {k_vc} columns")
    if arr.dtype.kind not in "iu":
        if arr.dtype.kind == "f" and np.all(arr == np.round(arr)):
            raise ValueError("ident must have an integer dtype (got floats; cast with .astype(int))")
        raise ValueError(f"ident must have an integer dtype, got {arr.dtype}")
    if len(arr) and arr.min() < 0:
        raise ValueError("ident must be non-negative")
    return arr.astype(np.int32)


def check_random_state(rng) -> np.random.Generator | np.random.RandomState:
    """``None`` or an int seed -> a new Generator; a Generator or RandomState is used as is."""
    if rng is None or (isinstance(rng, (int, np.integer)) and not isinstance(rng, bool)):
        return np.random.default_rng(rng)
    if isinstance(rng, (Sequence, np.ndarray)) and not isinstance(rng, str):
        return np.random.default_rng(rng)
    if isinstance(rng, (np.random.Generator, np.random.RandomState)):
        return rng
    raise ValueError(f"rng must be None, an int, a numpy Generator or RandomState, got {type(rng).__name__}")
