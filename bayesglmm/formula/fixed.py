"""The fixed part of a model: response y, design X and their names, from a formula.

formulaic is the formula engine here; the columns follow statsmodels' (patsy's) names,
kinds and order, so that positions as well as names carry over from a statsmodels script:

* boolean columns and pandas' nullable ``"string"`` columns are categorical, as in patsy
  (formulaic reads both as numbers: ``b`` instead of ``b[T.True]``, or a text column of digits
  as one slope) — :func:`patsy_kinds`;
* the terms are in patsy's order (:func:`patsy_order`): the intercept, then the terms without
  numeric factors, then the terms grouped by the numeric factors they contain, groups in order
  of first appearance, lower-order terms first within a group — ``y ~ x + C(f)`` gives
  ``Intercept, C(f)[T.b], x`` as in statsmodels, where formulaic keeps ``x`` second;
* a categorical level in new data that was not seen in fitting is an error naming the column
  and the level (patsy raises; formulaic would code it as the reference level with a warning).

The right-hand side's spec is kept to rebuild X for new data with the fitted coding.
"""

from __future__ import annotations

import warnings
from typing import NamedTuple

import numpy as np
import pandas as pd

from ..checks import aliased_columns, rank_message
from . import simple
from .frame import model_frame, used_columns

__all__ = ["Fixed", "OrderedSpec", "aliased_columns", "check_rank", "fixed_design",
           "formulaic_design", "missing_rows", "new_exog", "patsy_kinds", "patsy_order",
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
    rhs_text = formula.partition("~")[2] if "~" in formula else formula
    data = patsy_kinds(data, _read(rhs_text, data))
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
        y, yname = np.asarray(lhs, dtype=np.float64).ravel(), str(lhs.columns[0])
        X, xnames, spec = _patsy_ordered(rhs, formula)
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


def _read(text: str, data: pd.DataFrame) -> list[str]:
    """Columns of ``data`` a formula text reads."""
    from .frame import required_columns

    try:
        need = required_columns(text)
    except ValueError:
        return []
    return [c for c in need if c in data.columns]


def patsy_kinds(data: pd.DataFrame, cols) -> pd.DataFrame:
    """``data`` with the columns ``cols`` that patsy reads as categorical and formulaic as
    numeric made categorical: booleans (levels False, True: ``b[T.True]``) and pandas'
    nullable ``"string"`` (as Python strings)."""
    out = {}
    for c in cols:
        col = data[c]
        dt = col.dtype
        if pd.api.types.is_bool_dtype(dt):
            out[c] = pd.Categorical(col, categories=[False, True])
        elif isinstance(dt, pd.StringDtype) and dt.na_value is not np.nan:
            out[c] = col.astype(object).where(col.notna(), np.nan)
    return data.assign(**out) if out else data


def _kind(entry) -> str:
    """The kind (``"numerical"``, ``"categorical"``, ...) of an ``encoder_state`` entry."""
    kind = entry[0]
    return str(getattr(kind, "value", kind))


def patsy_order(formula: str, spec) -> list[int] | None:
    """Column positions of formulaic's ``spec`` (of ``formula``'s right-hand side, or of a
    one-sided ``formula``) in patsy's term order (module docstring;
    patsy.build.design_matrix_builders), or None where formulaic's terms cannot be matched to
    the formula's as written (then left as formulaic orders them)."""
    import formulaic

    slices = getattr(spec, "term_slices", None)
    state = getattr(spec, "encoder_state", None)
    if slices is None or state is None:
        return None
    try:
        parsed = formulaic.Formula(formula, _ordering="none")
        written = list(parsed.rhs if "~" in formula else parsed)
    except Exception:  # formulaic's parser raises several types
        return None
    by_name = {str(t): sl for t, sl in slices.items()}
    if sorted(map(str, written)) != sorted(by_name):
        return None

    def numeric(factor) -> bool:
        return _kind(state.get(str(factor), (None,))) == "numerical"

    def degree(term) -> int:
        return sum(str(f) != "1" for f in term.factors)

    buckets: dict = {}
    for t in written:
        buckets.setdefault(frozenset(str(f) for f in t.factors if numeric(f)), []).append(t)
    keys = sorted(buckets, key=lambda k: len(k) > 0)  # stable: no numeric factors first
    order: list[int] = []
    for k in keys:
        for t in sorted(buckets[k], key=degree):
            sl = by_name[str(t)]
            order += list(range(sl.start, sl.stop))
    return order


class OrderedSpec:
    """A formulaic ``ModelSpec`` whose columns are given in another order (patsy's:
    :func:`patsy_order`); builds X for new data in that order."""

    def __init__(self, spec, column_names):
        self.spec = spec
        self.column_names = tuple(column_names)

    @property
    def required_variables(self):
        return self.spec.required_variables

    @property
    def encoder_state(self):
        return self.spec.encoder_state

    def get_model_matrix(self, data: pd.DataFrame, **kwargs):
        return self.spec.get_model_matrix(data, **kwargs)[list(self.column_names)]


def formulaic_design(formula: str, data: pd.DataFrame):
    """``(X, names, spec)`` of a one-sided formula by formulaic, columns in patsy's order,
    boolean and nullable-string columns categorical (:func:`patsy_kinds`)."""
    import formulaic

    data = patsy_kinds(data, _read(formula, data))
    return _patsy_ordered(formulaic.model_matrix(formula, data, na_action="raise"), formula)


def _patsy_ordered(mm, formula: str):
    """``(X, names, spec)`` of formulaic's model matrix ``mm`` of ``formula`` (its right-hand
    side), columns in patsy's order."""
    X, names, spec = np.asarray(mm, dtype=np.float64), [str(c) for c in mm.columns], mm.model_spec
    order = patsy_order(formula, spec)
    if order is not None and order != list(range(len(names))):
        X, names = X[:, order], [names[i] for i in order]
        spec = OrderedSpec(spec, [spec.column_names[i] for i in order])
    return X, names, spec


def _unseen_levels(spec, data: pd.DataFrame) -> None:
    """Raise naming the column when ``data`` holds a level of a categorical factor (``f``,
    ``C(f)``, ``C(f, ...)``) that the fit did not see (other expressions: formulaic's
    warning)."""
    import re

    for expr, (kind, st) in (getattr(spec, "encoder_state", None) or {}).items():
        if _kind((kind,)) != "categorical" or "categories" not in st:
            continue
        m = re.fullmatch(r"\s*(?:C\(\s*([A-Za-z_]\w*)\s*(?:,.*)?\)|([A-Za-z_]\w*))\s*",
                         str(expr))
        col = m and (m.group(1) or m.group(2))
        if not col or col not in data.columns:
            continue
        vals = data[col].dropna()
        new = pd.unique(vals[~vals.isin(list(st["categories"]))])
        if len(new):
            shown = ", ".join(repr(v.item() if hasattr(v, "item") else v) for v in new[:5])
            raise ValueError(
                f"column {col!r} of the new data has level(s) {shown}"
                f"{' …' if len(new) > 5 else ''} not seen in fitting (fitted levels: "
                f"{', '.join(map(repr, list(st['categories'])[:10]))}"
                f"{' …' if len(st['categories']) > 10 else ''}); a fixed effect has no "
                "estimate for an unseen level — remove those rows or map them to a fitted level")


def spec_columns(spec) -> list[str]:
    """Data columns a formulaic ModelSpec reads."""
    return sorted(str(v) for v in spec.required_variables)


def new_exog(spec, data: pd.DataFrame, *, na_action: str = "raise") -> np.ndarray:
    """X for new data with the fitted columns and coding.

    Every column the formula reads must be in ``data`` (else an error suggesting the
    closest).  ``na_action="raise"``: NaN or inf there is an error naming the column;
    ``"ignore"``: rows with NaN give NaN rows (all their columns).
    """
    cols = used_columns([], data, spec_columns(spec))
    bad = None
    if na_action == "raise":
        model_frame(data, cols, "raise")
    else:
        bad = missing_rows(data, cols, "new data", stacklevel=4)
    data = patsy_kinds(data, cols)
    state_spec = spec.formulaic_spec() if isinstance(spec, simple.SimpleSpec) else spec
    _unseen_levels(state_spec, data)
    with warnings.catch_warnings():  # formulaic's on missing levels: missing_rows' instead
        warnings.filterwarnings("ignore", message=r"Data has categories outside.*\{nan\}")
        X = np.asarray(spec.get_model_matrix(data, na_action=na_action), dtype=np.float64)
    if bad is not None and bad.any():  # formulaic codes a missing level as the reference
        X[bad] = np.nan
    return X


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
