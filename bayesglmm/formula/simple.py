"""The common formulas without formulaic: ``y ~ x + C(f)``, ``0 + Days``, ``1``.

Importing formulaic and materialising a design through it costs a short script 0.3-0.7 s,
more than a small fit.  Most formulas are sums of plain terms, and for those this module
builds the same columns itself, with formulaic's names, order and coding:

* terms: ``1``, ``0``, ``-1`` (``- 1`` at the end), a numeric column ``x``, a text column
  ``f`` or ``C(f)`` (text or integer column ``f``); a left-hand side that is one numeric
  column;
* intercept first, then the categorical terms, then the numeric ones, each as first written
  (repeats ignored): patsy's order, which statsmodels' columns follow (formulaic keeps the
  terms as written; :func:`.fixed.patsy_order`);
* a categorical term is treatment-coded (its first sorted level dropped: ``C(f)[T.b]``,
  ``f[T.b]``), except the first categorical term of a model without intercept, which gets
  one indicator per level (``C(f)[a]``), as formulaic does.

Anything else (transforms, interactions, boolean or pandas-categorical columns, missing
values, other contrasts) returns ``None`` and the caller uses formulaic.  For new data
(``predict``), :class:`SimpleSpec` hands over to a formulaic ``ModelSpec`` built once from the
fitted levels, so unseen levels and missing values behave exactly as formulaic's.
``tests/formula/test_simple.py`` checks the columns against formulaic's.
"""

from __future__ import annotations

import re
from typing import NamedTuple

import numpy as np
import pandas as pd

__all__ = ["SimpleSpec", "names", "parse"]

_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
_TERM = re.compile(rf"^(?:(?P<c>C\(\s*(?P<cname>{_NAME})\s*\))|(?P<name>{_NAME})|(?P<num>[01]))$")


class _Cat(NamedTuple):
    column: str
    label: str  # "C(f)" or "f": the prefix of the column names
    levels: tuple  # sorted distinct values (original Python types)
    full: bool  # one indicator per level (else the first level dropped)


class SimpleSpec:
    """The right-hand side of a simple formula: its columns and how to build them.

    Stands in for formulaic's ``ModelSpec`` where bayesglmm keeps one (``required_variables``,
    ``column_names``, ``get_model_matrix``).
    """

    def __init__(self, rhs: str, intercept: bool, terms: tuple):
        self.rhs = rhs  # the right-hand side as written
        self.intercept = intercept
        self.terms = terms  # str (a numeric column) or _Cat, in column order
        names = ["Intercept"] if intercept else []
        for t in terms:
            if isinstance(t, str):
                names.append(t)
            else:
                lv = t.levels if t.full else t.levels[1:]
                names += [f"{t.label}[{'' if t.full else 'T.'}{v}]" for v in lv]
        self.column_names = tuple(names)
        self.required_variables = {t if isinstance(t, str) else t.column for t in terms}
        self._formulaic = None

    def matrix(self, data: pd.DataFrame) -> np.ndarray:
        """(n, p) float64 design of the data it was built from (levels as fitted)."""
        n = len(data)
        cols = [np.ones((n, 1))] if self.intercept else []
        for t in self.terms:
            if isinstance(t, str):
                cols.append(np.asarray(data[t], dtype=np.float64)[:, None])
                continue
            codes = pd.Index(t.levels).get_indexer(data[t.column])
            ind = codes[:, None] == np.arange(len(t.levels))[None, :]
            cols.append((ind if t.full else ind[:, 1:]).astype(np.float64))
        return np.hstack(cols) if cols else np.zeros((n, 0))

    def get_model_matrix(self, data: pd.DataFrame, **kwargs):
        """The design for new data, by formulaic (see the module docstring), in this spec's
        column order."""
        return self.formulaic_spec().get_model_matrix(data, **kwargs)[list(self.column_names)]

    def formulaic_spec(self):
        """formulaic's ``ModelSpec`` of the same formula and levels (built once, on request):
        from a few synthetic rows that hold every fitted level."""
        if self._formulaic is None:
            import formulaic

            m = max([len(t.levels) for t in self.terms if isinstance(t, _Cat)], default=1)
            frame = pd.DataFrame({
                (t if isinstance(t, str) else t.column):
                    np.zeros(m) if isinstance(t, str) else
                    pd.Series([t.levels[i % len(t.levels)] for i in range(m)], dtype=object)
                for t in self.terms})
            spec = formulaic.model_matrix(self.rhs, frame, na_action="raise").model_spec
            if sorted(map(str, spec.column_names)) != sorted(self.column_names):  # pragma: no cover
                raise RuntimeError(f"formulaic codes {self.rhs!r} as {spec.column_names}, "
                                   f"not {self.column_names}")
            self._formulaic = spec
        return self._formulaic

    def __getstate__(self):
        return {**self.__dict__, "_formulaic": None}


def _text(col: pd.Series) -> bool:
    """Whether formulaic treats a bare column as categorical text that this module codes."""
    dt = col.dtype
    if isinstance(dt, pd.StringDtype):
        return dt.na_value is np.nan  # pandas' default str; "string" (NA) is formulaic's own
    return dt == np.dtype(object) and all(isinstance(v, str) for v in col.array)


def _numeric(col: pd.Series) -> bool:
    """A plain numpy integer or float column (nullable and boolean columns go to formulaic)."""
    return isinstance(col.dtype, np.dtype) and col.dtype.kind in "iuf"


def _levels(col: pd.Series) -> tuple | None:
    """Sorted distinct values (formulaic's level order), or None when not codable here."""
    if col.isna().any():
        return None
    if _text(col):
        return tuple(sorted(set(map(str, col.array))))
    if isinstance(col.dtype, np.dtype) and col.dtype.kind in "iu":
        return tuple(int(v) for v in np.unique(col.to_numpy()))
    return None


def _split(formula: str) -> tuple[str, str, list[str], bool] | None:
    """``(lhs, right-hand side as written, its terms, intercept)`` of a formula in the simple
    grammar, else None."""
    if not isinstance(formula, str) or formula.count("~") > 1:
        return None
    lhs, tilde, text = formula.partition("~") if "~" in formula else ("", "", formula)
    lhs, text = lhs.strip(), text.strip()
    rhs = text
    if tilde and not re.fullmatch(_NAME, lhs):
        return None  # "~ x" or an expression on the left
    intercept = True
    if re.search(r"-\s*1\s*$", text):  # "x - 1"
        text, intercept = re.sub(r"-\s*1\s*$", "", text).strip(), False
    parts = [p.strip() for p in text.split("+")]
    if parts[0].replace(" ", "") == "-1":  # "-1 + x"
        parts[0], intercept = "0", False
    if not all(_TERM.match(p) for p in parts):
        return None
    return lhs, rhs, parts, intercept


def names(formula: str) -> list[str] | None:
    """Data columns a simple formula reads, in the order written (None: not simple)."""
    split = _split(formula)
    if split is None:
        return None
    lhs, _, parts, _ = split
    out = [lhs] if lhs else []
    for part in parts:
        m = _TERM.match(part)
        if m is not None and m.group("num") is None:
            out.append(m.group("cname") or m.group("name"))
    return list(dict.fromkeys(out))


def parse(formula: str, data: pd.DataFrame) -> tuple[str | None, SimpleSpec] | None:
    """``(lhs column or None, spec)`` when ``formula`` is in the simple subset for ``data``,
    else ``None`` (use formulaic)."""
    split = _split(formula)
    if split is None:
        return None
    lhs, rhs, parts, intercept = split
    if lhs and (lhs not in data.columns or not _numeric(data[lhs]) or data[lhs].isna().any()):
        return None
    terms: list = []
    nums = set()
    for part in parts:
        m = _TERM.match(part)
        if m is None:
            return None
        if m.group("num") is not None:
            nums.add(m.group("num"))
            continue
        name = m.group("cname") or m.group("name")
        if name not in data.columns or name == lhs:
            return None
        col = data[name]
        label = f"C({name})" if m.group("c") else name
        if any(label == (t if isinstance(t, str) else t.label) for t in terms):
            continue  # "x + x": once
        if not m.group("c") and _numeric(col):
            if col.isna().any():
                return None
            terms.append(name)
            continue
        if not m.group("c") and not _text(col):
            return None
        levels = _levels(col)
        if levels is None:
            return None
        terms.append(_Cat(name, label, levels, full=False))
    if nums == {"0", "1"}:
        return None  # "0 + 1": leave the precedence to formulaic
    intercept = intercept and "0" not in nums
    # patsy's order: the terms without numeric factors (the categorical ones) first
    terms = [t for t in terms if isinstance(t, _Cat)] + [t for t in terms if isinstance(t, str)]
    if not intercept:  # the first categorical term spans the missing intercept (formulaic)
        cats = [i for i, t in enumerate(terms) if isinstance(t, _Cat)]
        if cats:
            terms[cats[0]] = terms[cats[0]]._replace(full=True)
    return (lhs or None), SimpleSpec(rhs, intercept, tuple(terms))
