"""The fixed part of a model: response y, design X and their names, from a formula.

formulaic is statsmodels' formula engine here, so column names match statsmodels'
(``Intercept``, ``C(period)[T.2]``).  The right-hand side's ``ModelSpec`` is kept to rebuild X
for new data with the fitted coding.
"""

from __future__ import annotations

import warnings
from typing import NamedTuple

import numpy as np
import pandas as pd

from ..checks import aliased_columns, rank_message
from . import simple
from .frame import model_frame, used_columns

__all__ = ["Fixed", "aliased_columns", "check_rank", "fixed_design", "missing_rows", "new_exog",
           "rank_message", "spec_columns"]


class Fixed(NamedTuple):
    """y and X of a two-sided formula."""

    y: np.ndarray  # (n,) response
    X: np.ndarray  # (n, p) fixed-effects design
    yname: str
    xnames: list  # (p,) column names of X
    spec: object  # formulaic ModelSpec or simple.SimpleSpec of the right-hand side (new data)


def fixed_design(formula: str, data: pd.DataFrame) -> Fixed:
    """y and X from ``"y ~ x + C(f)"``; ``data`` has been checked (:func:`.frame.model_frame`).

    Plain formulas are built by :mod:`.simple` (same columns, no formulaic import); any
    other by formulaic."""
    fast = simple.parse(formula, data)
    if fast is not None and fast[0] is not None:
        yname, spec = fast
        y, X = data[yname].to_numpy(dtype=np.float64), spec.matrix(data)
        xnames: list = list(spec.column_names)
    else:
        import formulaic

        mm = formulaic.model_matrix(formula, data, na_action="raise")
        lhs, rhs = mm.lhs, mm.rhs
        if lhs.shape[1] != 1:
            raise ValueError(_response_message(formula, lhs, data))
        y, X = np.asarray(lhs, dtype=np.float64).ravel(), np.asarray(rhs, dtype=np.float64)
        yname, xnames, spec = str(lhs.columns[0]), [str(c) for c in rhs.columns], rhs.model_spec
    for name, col in [(yname, y[:, None])] + [
            (str(c), X[:, j:j + 1]) for j, c in enumerate(xnames)]:
        bad = ~np.isfinite(col)
        if bad.any():  # a transform such as np.log(x) at x = 0
            raise ValueError(f"term {name!r} of {formula!r} has {int(bad.sum())} non-finite "
                             f"value(s) (first in row {int(np.argmax(bad))}); transform or "
                             "filter the data so that it is finite")
    return Fixed(y, X, yname, xnames, spec)


def _response_message(formula: str, lhs, data: pd.DataFrame) -> str:
    """Why the left-hand side of ``formula`` is not one numeric column."""
    names = [str(v) for v in lhs.model_spec.required_variables if str(v) in data.columns]
    for v in names:
        col = data[v]
        if not pd.api.types.is_numeric_dtype(col) or pd.api.types.is_bool_dtype(col):
            kind = "categorical" if isinstance(col.dtype, pd.CategoricalDtype) else (
                "boolean" if pd.api.types.is_bool_dtype(col) else "text")
            return (f"the response {v!r} of {formula!r} is a {kind} column "
                    f"({col.nunique()} distinct values); it must be one numeric column — "
                    f"recode it, e.g. data[{v!r}] = (data[{v!r}] == <level>).astype(int)")
    return (f"the response of {formula!r} must be a single numeric column, got "
            f"{lhs.shape[1]} columns")


def spec_columns(spec) -> list[str]:
    """Data columns a formulaic ModelSpec reads."""
    return sorted(str(v) for v in spec.required_variables)


def new_exog(spec, data: pd.DataFrame, *, na_action: str = "raise") -> np.ndarray:
    """X for new data with the fitted columns and coding.

    Every column the formula reads must be in ``data`` (else an error suggesting the
    closest).  ``na_action="raise"``: NaN or inf there is an error naming the column;
    ``"ignore"``: rows with NaN give NaN rows.
    """
    cols = used_columns([], data, spec_columns(spec))
    if na_action == "raise":
        model_frame(data, cols, "raise")
    else:
        missing_rows(data, cols, "new data", stacklevel=4)
    return np.asarray(spec.get_model_matrix(data, na_action=na_action), dtype=np.float64)


def missing_rows(data: pd.DataFrame, cols, what: str = "new data",
                 stacklevel: int = 3) -> np.ndarray:
    """(n,) bool: rows of ``data`` with a missing value in ``cols``; warns naming those
    columns (statsmodels' predict policy: such rows predict NaN)."""
    cols = list(cols)
    if not cols or len(data) == 0:
        return np.zeros(len(data), bool)
    bad = data[cols].isna()
    rows = bad.any(axis=1).to_numpy()
    if rows.any():
        named = [c for c in cols if bad[c].any()]
        warnings.warn(f"{int(rows.sum())} row(s) of {what} have missing values in "
                      f"{', '.join(repr(c) for c in named)}; their predictions are NaN",
                      UserWarning, stacklevel=stacklevel)
    return rows


def check_rank(X: np.ndarray, names: list) -> None:
    """Raise ValueError naming the columns of X that are linear combinations of others
    (:func:`aliased_columns`), or when X has at least as many columns as rows."""
    n, p = X.shape
    if p == 0:
        return
    if p >= n:
        raise ValueError(
            f"the model has {p} fixed-effect parameters but only {n} rows; "
            "it needs more rows than fixed effects"
        )
    dep = aliased_columns(X)
    if dep:
        raise ValueError(rank_message(X, names, dep))
