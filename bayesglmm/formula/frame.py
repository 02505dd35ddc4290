"""The data a model reads: which columns, whether they are usable, and the grouping factors.

Both model kinds go through the same three steps before any design matrix is built:

1. :func:`used_columns` — every column a formula, a grouping factor or a named argument
   (``n_trials="size"``) reads; a name not in the data is an error suggesting the closest
   column (``'points' (did you mean 'Points'?)``).
2. :func:`model_frame` — NaN in a used column raises, naming the column, or (``missing="drop"``)
   drops those rows with a warning; ±inf in a numeric used column always raises.
3. :func:`level_codes` — each row's level of a grouping factor (``g``, or ``a:b`` for an
   interaction) as an integer code into the sorted levels.  A random term's design is then
   ``Z = [z ⊗ indicator(codes)]`` (Bates et al. 2015 §2), never a dense ``n × levels`` matrix.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Sequence
from typing import NamedTuple

import numpy as np
import pandas as pd

from ..validation import check_columns
from . import simple

__all__ = ["MISSING", "Frame", "group_keys", "level_codes", "model_frame", "required_columns",
           "used_columns"]

MISSING = ("none", "raise", "drop")  # "none" and "raise" both raise (statsmodels' names)

# names formulaic may report that are transforms rather than data columns
_BUILTINS = {"C", "np", "log", "exp", "center", "scale", "poly", "I", "Q", "bs"}


class Frame(NamedTuple):
    """The rows a model is built from."""

    data: pd.DataFrame  # the usable rows (index reset when rows were dropped)
    keep: np.ndarray | None  # (n_input,) bool: rows kept; None when none were dropped
    n_dropped: int


def required_columns(formula: str) -> list[str]:
    """Data columns a formula reads (both sides), in the order they appear in its text."""
    plain = simple.names(formula)
    if plain is not None:
        return plain
    import formulaic

    try:
        req = formulaic.Formula(formula).required_variables
    except Exception as err:  # formulaic raises several parser exception types
        raise ValueError(f"cannot parse formula {formula!r}: {err}") from None
    return sorted((str(v) for v in req), key=lambda v: (_position(formula, v), v))


def _position(text: str, name: str) -> int:
    pos = text.find(name)
    return pos if pos >= 0 else len(text)


def used_columns(formulas: Iterable[str], data: pd.DataFrame, extra: Sequence[str] = (),
                 what: str = "formula") -> list[str]:
    """Columns read by ``formulas`` and the names in ``extra`` (grouping factors, named
    arguments), first appearance first; raise if any is not in ``data``."""
    cols = set(map(str, data.columns))
    need: list[str] = []
    for f in formulas:
        need += [v for v in required_columns(f) if v in cols or v not in _BUILTINS]
    need += [str(c) for c in extra]
    need = list(dict.fromkeys(need))
    check_columns(need, data, what=what)
    return need


def model_frame(data: pd.DataFrame, cols: Sequence[str], missing: str = "raise",
                stacklevel: int = 2) -> Frame:
    """Check the used columns ``cols`` of ``data`` for NaN and infinite values.

    Parameters
    ----------
    data : DataFrame
    cols : list of str
        The columns the model reads (see :func:`used_columns`).
    missing : {"none", "raise", "drop"}
        NaN/None in a used column: raise ``ValueError`` naming the columns (``"none"``,
        ``"raise"``), or drop those rows with a ``UserWarning`` (``"drop"``).
    stacklevel : int
        Of the warning, counted from the caller of this function.

    Returns
    -------
    Frame
        The usable rows, which rows were kept and how many were dropped.
    """
    if missing not in MISSING:
        raise ValueError(f"missing must be 'none', 'raise' or 'drop', got {missing!r}")
    cols = list(cols)
    if len(data) == 0:
        raise ValueError("data has no rows; a model needs data (check the filter that built "
                         "the DataFrame)")
    bad = data[cols].isna()
    keep, n_drop = None, 0
    if bad.to_numpy().any():
        counts = {c: int(bad[c].sum()) for c in cols if bad[c].any()}
        if missing != "drop":
            desc = "; ".join(f"column {c!r} has {k} missing value(s) (NaN/None)"
                             for c, k in counts.items())
            raise ValueError(f"{desc}; remove or impute those rows, or pass missing='drop' to "
                             "drop them — nothing is dropped silently")
        keep = ~bad.any(axis=1).to_numpy()
        n_drop = int((~keep).sum())
        warnings.warn(f"dropped {n_drop} row(s) with missing values in {', '.join(counts)}",
                      UserWarning, stacklevel=stacklevel + 1)
        data = data.loc[keep].reset_index(drop=True)
        if len(data) == 0:
            raise ValueError(f"missing='drop' dropped every row (missing values in "
                             f"{', '.join(counts)}); no data are left to fit")
    for c in cols:
        col = data[c]
        if pd.api.types.is_numeric_dtype(col) and not np.all(np.isfinite(col.to_numpy(float))):
            k = int((~np.isfinite(col.to_numpy(float))).sum())
            raise ValueError(f"column {c!r} has infinite value(s) ({k} row(s)); remove or "
                             "replace those rows (missing='drop' drops only NaN)")
    return Frame(data, keep, n_drop)


def group_keys(data: pd.DataFrame, factors: Sequence[str]) -> np.ndarray:
    """(n,) each row's level of the grouping factor: the column, or ``"a:b"`` strings."""
    if len(factors) == 1:
        return data[factors[0]].to_numpy()
    out = data[factors[0]].astype(str).to_numpy().astype(object)
    for f in factors[1:]:
        out = out + ":" + data[f].astype(str).to_numpy().astype(object)
    return out


def level_codes(data: pd.DataFrame, factors: Sequence[str], *,
                declared: bool = False) -> tuple[pd.Index, np.ndarray]:
    """Levels of a grouping factor and each row's code into them.

    Parameters
    ----------
    data : DataFrame
    factors : sequence of str
        One column, or several whose interaction is the factor (keys ``"a:b"``).
    declared : bool
        A single categorical column keeps its declared categories, in their order and unused
        ones included (formulaic's coding of ``C(g)``, used by ``vc_formulas``).  Otherwise
        the levels are the sorted distinct keys.

    Returns
    -------
    index : Index (L,)
        The levels.
    codes : ndarray of int64 (n,)
        ``index[codes[i]]`` is row i's level.
    """
    if declared and len(factors) == 1 and isinstance(data[factors[0]].dtype, pd.CategoricalDtype):
        cat = data[factors[0]].array
        return pd.Index(cat.categories), np.asarray(cat.codes, np.int64)
    return index_codes(group_keys(data, factors))


def index_codes(keys) -> tuple[pd.Index, np.ndarray]:
    """Sorted distinct ``keys`` (hash-based, fast for strings) and each key's position."""
    codes, uniq = pd.factorize(np.asarray(keys), sort=True)
    if len(codes) and codes.min() < 0:
        raise ValueError("a grouping factor has missing values")
    return pd.Index(uniq), codes.astype(np.int64)
