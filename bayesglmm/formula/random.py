"""Random-effect terms met with the data, for both model kinds.

A term is stored as level codes and covariates, never as a dense ``n × levels`` matrix: row i
belongs to level ``codes[i]`` and carries the ``q`` covariates ``z[i]`` that multiply that
level's random-effect vector, ``Z = [z ⊗ indicator(codes)]`` (Bates et al. 2015 §2).  The
MixedLM uses the terms as they are; the GLMMs lay them out as ELLPACK columns
(:mod:`.glmm`).  Each term keeps a small picklable recipe (:class:`LevelRows`,
:class:`CellRows`) that rebuilds its keys and covariates for new data by the same code path.

The GLMM's ``vc_formulas`` of the forms ``0 + C(g)`` and ``0 + C(g):x`` become such terms
straight from the factor codes; any other vc formula goes through formulaic's sparse output
(:class:`SparseTerm`).  Neither forms a dense ``n × k_vc`` matrix.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..design import ellpack
from ..validation import check_columns
from .fixed import formulaic_design, patsy_kinds, spec_columns
from . import simple
from .frame import group_keys, index_codes, level_codes
from .terms import TermSpec

__all__ = ["CellRows", "ColumnZ", "FormulaZ", "LevelRows", "SparseTerm", "Term", "build_terms",
           "check_covariates", "vc_terms"]

# "0 + C(g)" (an indicator per level of g) and "0 + C(g):x" (a slope on x per level)
_FACTOR_TERM = re.compile(
    r"^\s*0\s*\+\s*C\(\s*([A-Za-z_][\w.]*)\s*\)\s*(?::\s*([A-Za-z_][\w.]*)\s*)?$")


# ---------------------------------------------------------------- covariates of new rows
@dataclass(frozen=True)
class FormulaZ:
    """z from a formulaic ModelSpec: all its columns, or column ``j``."""

    spec: object
    j: int | None = None

    @property
    def columns(self) -> list[str]:
        return spec_columns(self.spec)

    def __call__(self, data: pd.DataFrame, na_action: str) -> np.ndarray:
        data = patsy_kinds(data, [c for c in spec_columns(self.spec) if c in data.columns])
        z = self.spec.get_model_matrix(data, na_action=na_action).to_numpy(dtype=np.float64)
        return z if self.j is None else z[:, self.j:self.j + 1]


@dataclass(frozen=True)
class ColumnZ:
    """z = 1, or one numeric column: the ``0 + C(g)`` and ``0 + C(g):x`` fast paths."""

    column: str | None = None

    @property
    def columns(self) -> list[str]:
        return [] if self.column is None else [self.column]

    def __call__(self, data: pd.DataFrame, na_action: str = "raise") -> np.ndarray:
        if self.column is None:
            return np.ones((len(data), 1))
        return data[self.column].to_numpy(dtype=np.float64)[:, None]


# ---------------------------------------------------------------- keys of new rows
@dataclass(frozen=True)
class LevelRows:
    """A row's level is its key of ``factors``; its covariates come from ``cov``."""

    factors: tuple
    cov: FormulaZ | ColumnZ

    @property
    def columns(self) -> list[str]:
        return list(self.factors) + self.cov.columns

    def __call__(self, data, na_action):
        return group_keys(data, self.factors), self.cov(data, na_action), None


@dataclass(frozen=True)
class CellRows:
    """statsmodels variance component with one non-zero per row: the level is the cell
    (group, vc column) of that non-zero, its value the covariate."""

    factors: tuple
    cov: FormulaZ
    cols: tuple  # names of the vc formula's columns

    @property
    def columns(self) -> list[str]:
        return list(self.factors) + self.cov.columns

    def __call__(self, data, na_action):
        return _cells(group_keys(data, self.factors), self.cov(data, na_action), self.cols)


def _cells(gkeys, v, cols):
    """Keys (group, column of the row's non-zero), its value (n, 1) and which rows have one."""
    j = np.argmax(v != 0, axis=1)
    val = v[np.arange(len(v)), j]
    keys = pd.MultiIndex.from_arrays([gkeys, np.asarray(cols, dtype=object)[j]])
    return keys, val[:, None], val != 0


# ---------------------------------------------------------------- terms
@dataclass
class Term:
    """One random-effect term met with the data."""

    name: str  # label for tables ("Subject", "a:b", vc name)
    group: str  # grouping factor label
    kind: str  # "re" | "diag" | "vc"
    cols: list  # (q,) names of the covariates
    codes: np.ndarray  # (n,) int level of each row
    z: np.ndarray  # (n, q) covariates of each row
    index: pd.Index  # (L,) level keys; vc cells: MultiIndex (group, column)
    tkey: str  # terms with equal tkey share their variance parameters
    rows: LevelRows | CellRows | None = field(default=None, repr=False)  # new-data recipe

    @property
    def n_levels(self) -> int:
        return len(self.index)

    @property
    def q(self) -> int:
        return self.z.shape[1]

    def theta_pattern(self) -> np.ndarray:
        """(q, q) local index of each free entry of the lower-triangular λ, -1 for zeros."""
        q = self.q
        idx = -np.ones((q, q), dtype=np.int64)
        if self.kind == "re":
            k = 0
            for j in range(q):  # column-major lower triangle, as lme4's θ
                for i in range(j, q):
                    idx[i, j] = k
                    k += 1
        else:
            idx[np.arange(q), np.arange(q)] = 0 if self.kind == "vc" else np.arange(q)
        return idx

    def new_rows(self, data: pd.DataFrame, na_action: str = "raise",
                 unseen: str = "population") -> tuple[np.ndarray, np.ndarray]:
        """``(codes (n,), z (n, q))`` for new data; code -1 where a row has no level of this
        term: a level not seen in fitting (``unseen="raise"``: an error naming them)."""
        check_columns(self.rows.columns, data, what="new data")
        keys, z, used = self.rows(data, na_action)
        codes = level_positions(self.index, keys)
        miss = codes < 0 if used is None else (codes < 0) & used
        if unseen == "raise" and miss.any():
            bad = pd.unique(np.asarray(keys)[miss])[:5]
            raise ValueError(f"levels of {self.group!r} not seen in fitting: {list(bad)}")
        return (codes if used is None else np.where(used, codes, -1)), z


def level_positions(index: pd.Index, keys) -> np.ndarray:
    """Positions of ``keys`` in the fitted levels ``index`` (−1: not seen), matching by label
    where the types differ: a grouping column read as numbers in one data set and as text in
    the other (``Subject`` 308 and ``"308"``) names the same levels, as in lme4, whose levels
    are labels (every row of such new data was taken as an unseen level)."""
    codes = index.get_indexer(keys)
    if (codes < 0).any() and len(index):
        labels = pd.Index(index.map(str))
        if labels.is_unique:
            by_label = labels.get_indexer(pd.Index(np.asarray(keys, dtype=object)).map(str))
            codes = np.where(codes < 0, by_label, codes)
    return codes


@dataclass
class SparseTerm:
    """A GLMM vc formula of any other form: formulaic's sparse design, stored row-wise."""

    name: str  # the vc_formulas key
    spec: object  # formulaic ModelSpec, to rebuild the columns for new data
    cols: np.ndarray  # (n, m) int32 ELLPACK columns (from 0)
    vals: np.ndarray  # (n, m)
    names: list  # (k,) column names

    @property
    def columns(self) -> list[str]:
        return spec_columns(self.spec)

    def new_entries(self, data: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """ELLPACK ``(cols, vals)`` for new data (formulaic maps unseen levels to zeros)."""
        c, v, _ = ellpack.from_scipy(self.spec.get_model_matrix(data, output="sparse"))
        return c, v


def check_covariates(terms) -> None:
    """Raise when a random-effect covariate is zero in every row: its variance (and, in a
    correlated term, its correlations) would not be identified — the fit would report its
    start value, or a non-finite covariance."""
    for t in terms:
        if isinstance(t, SparseTerm):
            if t.vals.size == 0 or not np.any(t.vals):
                raise ValueError(f"variance component {t.name!r} has an all-zero design "
                                 "(every covariate is zero); its variance cannot be estimated "
                                 "— remove it")
            continue
        if not np.all(np.isfinite(t.z)):  # a transform such as np.log(x) at x = 0
            j = int(np.argmax(~np.all(np.isfinite(t.z), axis=0)))
            raise ValueError(f"random-effect covariate {str(t.cols[j])!r} of the term on "
                             f"{t.group!r} has non-finite values; transform or filter the data")
        zero = ~np.any(t.z != 0, axis=0)
        if zero.any() and len(t.z):
            bad = [str(t.cols[j]) for j in np.flatnonzero(zero)]
            raise ValueError(
                f"random-effect covariate {', '.join(map(repr, bad))} of the term on "
                f"{t.group!r} ({t.name}) is zero in every row; its variance cannot be "
                "estimated — remove it from the term (or check the column)")


def _matrix(expr: str, data: pd.DataFrame):
    fast = simple.parse(expr, data)
    if fast is not None and fast[0] is None:  # "1 + Days": no formulaic (see .simple)
        spec = fast[1]
        return spec.matrix(data), list(spec.column_names), FormulaZ(spec)
    z, cols, spec = formulaic_design(expr, data)  # patsy's column order and kinds
    return z, cols, FormulaZ(spec)


def build_terms(spec: TermSpec, data: pd.DataFrame) -> list[Term | SparseTerm]:
    """The terms of one spec: lme4-style ``(expr | g)`` and ``re_formula`` give one term
    with q covariates; a vc formula one term per variance (see :func:`vc_terms`).  A
    covariate that is zero in every row is an error (:func:`check_covariates`)."""
    terms = _build_terms(spec, data)
    check_covariates(terms)
    return terms


def _build_terms(spec: TermSpec, data: pd.DataFrame) -> list[Term | SparseTerm]:
    if spec.kind == "vc" and not spec.factors:  # the GLMM's vc_formulas
        fast = _FACTOR_TERM.match(spec.expr)
        if fast is None:
            import formulaic

            mat = formulaic.model_matrix(spec.expr, data, output="sparse", na_action="raise")
            c, v, _ = ellpack.from_scipy(mat)
            return [SparseTerm(spec.name, mat.model_spec, c, v,
                               [str(x) for x in mat.model_spec.column_names])]
        factor, slope = fast.group(1), fast.group(2)
        index, codes = level_codes(data, (factor,), declared=True)
        cov = ColumnZ(slope)
        return [Term(spec.name, factor, "vc", [slope or "Intercept"], codes, cov(data), index,
                     "vc:" + str(spec.name), LevelRows((factor,), cov))]
    z, cols, cov = _matrix(spec.expr, data)
    if z.shape[1] == 0:
        raise ValueError(f"random-effect term {spec.expr!r} | {spec.name} has no columns")
    if spec.kind == "vc":
        return vc_terms(spec.name, spec.factors, group_keys(data, spec.factors), z, cols, cov)
    index, codes = level_codes(data, spec.factors)
    return [Term(spec.name, ":".join(spec.factors), spec.kind, cols, codes, z, index, spec.name,
                 LevelRows(spec.factors, cov))]


def vc_terms(name, factors, gkeys, v, cols, cov: FormulaZ | None = None) -> list[Term]:
    """statsmodels' variance component ``name`` within groups: each column of ``v`` (n, k)
    is a random coefficient per group, all with one variance.

    When each row has at most one non-zero (the usual ``0 + C(x)``) that is one scalar term
    on the cells (group, column) that occur; otherwise one scalar term per column on the
    group factor, sharing the variance.  ``cov`` rebuilds ``v`` for new data (formula models).
    """
    group = ":".join(factors)
    tkey = "vc:" + str(name)
    if len(v) and not np.any(v):
        raise ValueError(f"variance component {name!r} is zero in every row; its variance "
                         "cannot be estimated — remove it")
    if (v != 0).sum(axis=1).max(initial=0) <= 1:
        keys, val, used = _cells(gkeys, v, cols)
        index = pd.MultiIndex.from_tuples(sorted(set(keys[used])), names=[group, name])
        codes = np.where(used, index.get_indexer(keys), 0).astype(np.int64)
        rows = None if cov is None else CellRows(tuple(factors), cov, tuple(cols))
        return [Term(str(name), group, "vc", [str(name)], codes, val, index, tkey, rows)]
    index, codes = index_codes(gkeys)
    return [Term(f"{name}[{c}]", group, "vc", [c], codes, v[:, j:j + 1], index, tkey,
                 None if cov is None else LevelRows(tuple(factors), FormulaZ(cov.spec, j)))
            for j, c in enumerate(cols)]
