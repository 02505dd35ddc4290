"""Checks of scalar arguments, start values and prediction inputs, at the library's boundary.

Each ``check_*`` returns a clean value or raises ``TypeError`` (wrong kind of value) or
``ValueError`` (right kind, bad value) naming the argument and what it accepts, before any
JAX program is traced: ``fit(reml="yes")`` or ``maxiter="ten"`` never reach a tracer.
:func:`nan_rows` is the statsmodels policy for missing covariates in ``predict``: those rows
predict NaN, with a warning naming the columns.
"""

from __future__ import annotations

import numbers
import warnings
from collections.abc import Sequence

import numpy as np

__all__ = ["aliased_columns", "check_bool", "check_formula", "check_int", "check_number", "check_start",
           "check_response_varies", "check_width", "nan_rows", "rank_message"]


def check_bool(val, name: str) -> bool:
    """``val`` if it is a bool (numpy's included), else ``TypeError``."""
    if isinstance(val, (bool, np.bool_)):
        return bool(val)
    raise TypeError(f"{name} must be True or False, got {val!r} ({type(val).__name__})")


def check_int(val, name: str, minimum: int = 1) -> int:
    """``val`` as an int ≥ ``minimum``; strings, floats with a fraction and bools refused.

    Examples
    --------
    >>> check_int(10.0, "maxiter")
    10
    >>> check_int("ten", "maxiter")
    Traceback (most recent call last):
    ...
    TypeError: maxiter must be an integer, got 'ten' (str)
    """
    if isinstance(val, (bool, np.bool_)) or not isinstance(val, (numbers.Integral, float,
                                                                 np.floating)):
        raise TypeError(f"{name} must be an integer, got {val!r} ({type(val).__name__})")
    if not np.isfinite(val) or val != int(val):
        raise ValueError(f"{name} must be a whole number, got {val!r}")
    if int(val) < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {int(val)}")
    return int(val)


def check_number(val, name: str, *, positive: bool = False,
                 nonnegative: bool = False) -> float:
    """``val`` as a finite float (``positive``: > 0, ``nonnegative``: ≥ 0); strings and bools
    refused."""
    if isinstance(val, (bool, np.bool_)) or not isinstance(val, numbers.Real):
        raise TypeError(f"{name} must be a number, got {val!r} ({type(val).__name__}); "
                        f"e.g. {name}=1.0")
    val = float(val)
    if not np.isfinite(val) or (positive and val <= 0) or (nonnegative and val < 0):
        kind = "positive" if positive else ("non-negative" if nonnegative else "finite")
        raise ValueError(f"{name} must be a {kind} number, got {val}")
    return val


# R's functions in lme4 formulas that have other spellings here (validation.check_columns)
R_FUNCTIONS = {
    "cbind": "binomial counts are the response with n_trials= (`incidence ~ x`, "
             "n_trials='size'), not cbind(successes, failures)",
    "factor": "write C(x) for a categorical term (factor(x) in R)",
    "as.factor": "write C(x) for a categorical term (as.factor(x) in R)",
    "offset": "pass the offset as offset= (a column name or an array); exposure= takes its "
              "exponential (Poisson)",
}


def _inside_I(formula: str):
    """The texts inside ``I(...)`` in ``formula``."""
    out, i = [], 0
    while (i := formula.find("I(", i)) >= 0:
        if i and (formula[i - 1].isalnum() or formula[i - 1] in "_."):
            i += 2
            continue
        depth, j = 1, i + 2
        while j < len(formula) and depth:
            depth += {"(": 1, ")": -1}.get(formula[j], 0)
            j += 1
        out.append(formula[i + 2:j - 1])
        i = j
    return out


def check_formula(formula, name: str = "formula") -> str:
    """A formula is a string such as ``"y ~ x"``.  An R spelling that would silently mean
    something else here, ``I(x^2)`` (Python's bitwise XOR), is an error saying what to
    write; R functions that name no column here (``cbind``, ``factor``, ``offset``) are
    explained where the formula's columns are looked up (:data:`R_FUNCTIONS`)."""
    if not isinstance(formula, str):
        raise TypeError(f"{name} must be a string such as 'y ~ x', got "
                        f"{type(formula).__name__}")
    for inner in _inside_I(formula):
        if "^" in inner:
            raise ValueError(f"{name} {formula!r}: I({inner}) computes Python's bitwise XOR "
                             f"(^), not a power as in R: write I({inner.replace('^', '**')})")
    return formula


def check_start(val, name: str, size: int) -> np.ndarray:
    """Start values: a finite float vector of length ``size``."""
    try:
        arr = np.asarray(val, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a numeric vector of {size} values, got "
                        f"{type(val).__name__}") from None
    if arr.shape != (size,):
        raise ValueError(f"{name} must have {size} values, got shape {arr.shape}")
    bad = ~np.isfinite(arr)
    if bad.any():
        raise ValueError(f"{name} contains {int(bad.sum())} non-finite value(s) (first at "
                         f"position {int(np.argmax(bad))}); start values must be finite — "
                         f"omit {name} for the default start")
    return arr


def check_width(X: np.ndarray, names: Sequence[str], what: str = "exog") -> np.ndarray:
    """``X`` (n, k) for a prediction: exactly one column per fixed effect ``names``."""
    if X.ndim != 2 or X.shape[1] != len(names):
        got = X.shape[1] if X.ndim == 2 else X.shape
        raise ValueError(f"{what} has {got} column(s) but the model has {len(names)} fixed "
                         f"effect(s) ({', '.join(map(str, names))}); pass one column per fixed "
                         "effect, in that order")
    return X


def nan_rows(X: np.ndarray, names: Sequence[str], what: str = "exog",
             stacklevel: int = 3) -> np.ndarray:
    """(n,) bool: rows of ``X`` with a NaN; warns naming the columns (their predictions are
    NaN, statsmodels' policy).  ±inf is refused: ``ValueError`` naming the column."""
    X = np.asarray(X, np.float64)
    if np.isinf(X).any():
        j = int(np.argmax(np.isinf(X).any(axis=0)))
        raise ValueError(f"{what} column {names[j]!r} has infinite value(s)")
    bad = np.isnan(X)
    rows = bad.any(axis=1) if X.ndim == 2 else bad
    if rows.any():
        cols = [str(names[j]) for j in np.flatnonzero(bad.any(axis=0))] if X.ndim == 2 else []
        warnings.warn(f"{int(rows.sum())} row(s) of {what} have missing values in "
                      f"{', '.join(repr(c) for c in cols)}; their predictions are NaN",
                      UserWarning, stacklevel=stacklevel)
    return rows


_QR_ROWS = 200_000  # rows per block of the blocked (TSQR) R factor in aliased_columns


def _r_factor(X: np.ndarray) -> np.ndarray:
    """A matrix with X's R factor (RᵀR = XᵀX): X itself, or for tall X the stacked R factors
    of row blocks (TSQR), so no n × p copy is made."""
    if X.shape[0] <= _QR_ROWS:
        return X
    return np.vstack([np.linalg.qr(X[i:i + _QR_ROWS], mode="r")
                      for i in range(0, X.shape[0], _QR_ROWS)])


def aliased_columns(X: np.ndarray) -> list[int]:
    """Indices of the columns of X that are linear combinations of the columns before them
    (all-zero columns included), as R's ``lm``/lme4 drop them.

    >>> x = np.arange(5.0)
    >>> aliased_columns(np.column_stack([np.ones(5), x, 2 * x + 1, np.zeros(5)]))
    [2, 3]
    >>> aliased_columns(np.column_stack([2 * x + 1, np.ones(5), x]))  # the later one goes
    [2]

    LINPACK's limited pivoting (R's ``dqrdc2``, which ``lm`` uses): the columns of the
    column-scaled X (of its R factor for tall X: R(X·D) = R(X)·D) are orthogonalised in order
    (classical Gram–Schmidt, twice) against the ones kept so far, and a column whose residual
    norm is below ``max(n, p)·100·eps`` (of its unit norm) is in their span.  (LAPACK's
    fully pivoted QR, used before, picked columns by norm and could drop an earlier one:
    of (2x + 1, 1, x) it dropped 2x + 1, where ``lm`` and lme4 drop x.)
    """
    n, p = X.shape
    if p == 0:
        return []
    scale = np.linalg.norm(X, axis=0)
    zero = scale == 0
    scale[zero] = 1.0
    R = np.asarray(_r_factor(X) / scale, np.float64)
    tol = max(n, p) * np.finfo(float).eps * 100
    Q = np.empty((R.shape[0], min(R.shape)))  # orthonormal basis of the kept columns
    k = 0
    out = []
    for j in range(p):
        v = R[:, j]
        for _ in range(2):  # CGS2: orthogonal to working precision
            v = v - Q[:, :k] @ (Q[:, :k].T @ v)
        norm = np.linalg.norm(v)
        if zero[j] or norm <= tol or k == Q.shape[1]:
            out.append(j)
        else:
            Q[:, k] = v / norm
            k += 1
    return out


def rank_message(X: np.ndarray, names: list, dep: list[int]) -> str:
    """What :func:`check_rank` says about the aliased columns ``dep``."""
    d = [repr(str(names[i])) for i in dep]
    return (f"fixed-effects design is rank deficient (rank {X.shape[1] - len(dep)} < "
            f"{X.shape[1]} columns): {', '.join(d)} {'is' if len(d) == 1 else 'are'} a linear "
            "combination of other columns (or all zero); drop or recode "
            f"{'it' if len(d) == 1 else 'them'}")


def check_response_varies(y: np.ndarray, X: np.ndarray, name: str = "endog") -> None:
    """A linear mixed model's response must vary beyond its fixed effects: a constant ``y``
    or one fitted exactly by X leaves a residual variance of zero (the deviance is −∞)."""
    if len(y) and np.ptp(y) == 0:
        raise ValueError(f"{name} is constant ({y[0]:g} in every row); there is no variance "
                         "to model")
    if X.shape[1] and X.size <= 50_000_000:
        beta, *_ = np.linalg.lstsq(X, y, rcond=None)
        r = y - X @ beta
        if float(r @ r) <= 1e-20 * float(y @ y):
            raise ValueError(f"{name} is fitted exactly by the fixed effects (residual sum of "
                             "squares zero); there is no variance left to model")
