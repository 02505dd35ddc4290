"""The fixed part of a model: response y, design X and their names, from a formula.

formulaic is statsmodels' formula engine here, so column names match statsmodels'
(``Intercept``, ``C(period)[T.2]``).  The right-hand side's ``ModelSpec`` is kept to rebuild X
for new data with the fitted coding.
"""

from __future__ import annotations

from typing import NamedTuple

import formulaic
import numpy as np
import pandas as pd
import scipy.linalg

from .frame import model_frame, used_columns

__all__ = ["Fixed", "check_rank", "fixed_design", "new_exog", "spec_columns"]


class Fixed(NamedTuple):
    """y and X of a two-sided formula."""

    y: np.ndarray  # (n,) response
    X: np.ndarray  # (n, p) fixed-effects design
    yname: str
    xnames: list  # (p,) column names of X
    spec: object  # formulaic ModelSpec of the right-hand side, to rebuild X for new data


def fixed_design(formula: str, data: pd.DataFrame) -> Fixed:
    """y and X from ``"y ~ x + C(f)"``; ``data`` has been checked (:func:`.frame.model_frame`)."""
    mm = formulaic.model_matrix(formula, data, na_action="raise")
    lhs, rhs = mm.lhs, mm.rhs
    if lhs.shape[1] != 1:
        raise ValueError(f"the response of {formula!r} must be a single numeric column, got "
                         f"{lhs.shape[1]} columns (is it a text column?)")
    return Fixed(np.asarray(lhs, dtype=np.float64).ravel(), np.asarray(rhs, dtype=np.float64),
                 str(lhs.columns[0]), [str(c) for c in rhs.columns], rhs.model_spec)


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
    return np.asarray(spec.get_model_matrix(data, na_action=na_action), dtype=np.float64)


def check_rank(X: np.ndarray, names: list) -> None:
    """Raise ValueError naming the columns of X that are linear combinations of others.

    Pivoted QR of the column-scaled X: a diagonal of R below ``max(n, p)·100·eps·|R₁₁|``
    marks a column (``piv[rank:]``) in the span of the ones before it.
    """
    n, p = X.shape
    if p == 0:
        return
    if p >= n:
        raise ValueError(
            f"the model has {p} fixed-effect parameters but only {n} rows; "
            "it needs more rows than fixed effects"
        )
    scale = np.linalg.norm(X, axis=0)
    scale[scale == 0] = 1.0
    _, r, piv = scipy.linalg.qr(X / scale, mode="economic", pivoting=True)
    d = np.abs(np.diag(r))
    rank = int(np.sum(d > max(n, p) * np.finfo(float).eps * 100 * d[0])) if d[0] > 0 else 0
    if rank < p:
        dep = [str(names[i]) for i in sorted(piv[rank:])]
        raise ValueError(
            f"fixed-effects design is rank deficient (rank {rank} < {p} columns): "
            f"{', '.join(repr(d) for d in dep)} {'is' if len(dep) == 1 else 'are'} a linear "
            "combination of other columns; drop or recode them"
        )
