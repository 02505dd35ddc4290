"""Formulas → fixed-effects design X and the sparse random-effects design Z.

The fixed part uses formulaic (statsmodels' formula engine, so column names match).  Each
variance-component formula ``vc_formulas[name]`` becomes one block of random-effect columns
sharing one variance parameter.  The common forms ``0 + C(g)`` (an indicator per level of g) and
``0 + C(g):x`` (a slope on x per level) are built straight from the factor codes; any other
formula goes through formulaic's sparse output.  Neither path forms a dense n × k_vc matrix.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import formulaic
import numpy as np
import pandas as pd

from ..design import ellpack as sparse
from ..validation import check_columns

__all__ = ["FixedDesign", "VCDesign", "VCTerm", "build_fixed", "build_vc", "required_columns"]

_FACTOR_TERM = re.compile(r"^\s*0\s*\+\s*C\(\s*([A-Za-z_][\w.]*)\s*\)\s*(?::\s*([A-Za-z_][\w.]*)\s*)?$")


def required_columns(formula: str) -> list[str]:
    """Data columns a formula reads (both sides)."""
    try:
        req = formulaic.Formula(formula).required_variables
    except Exception as err:  # formulaic raises several parser exception types
        raise ValueError(f"cannot parse formula {formula!r}: {err}") from None
    return sorted(str(v) for v in req)


def _check_data(formulas: list[str], data: pd.DataFrame, extra: list[str] = ()) -> None:
    if not isinstance(data, pd.DataFrame):
        raise ValueError(f"data must be a pandas DataFrame, got {type(data).__name__}")
    cols = set(map(str, data.columns))
    need: list[str] = []
    for f in formulas:
        # formulaic also lists names of transforms it knows (C, np, ...) only when they are
        # data columns; anything else it reports is a variable the data must hold
        for v in required_columns(f):
            if v not in need and (v in cols or not _is_builtin(v)):
                need.append(v)
    need += [c for c in extra if c not in need]
    check_columns(need, data, what="formula")
    for c in need:
        col = data[c]
        if col.isna().any():
            raise ValueError(
                f"column {c!r} has {int(col.isna().sum())} missing value(s) (NaN/None); "
                "drop or impute those rows first — nothing is dropped silently"
            )
        if pd.api.types.is_numeric_dtype(col) and not np.all(np.isfinite(col.to_numpy(dtype=float))):
            raise ValueError(f"column {c!r} has infinite value(s)")


def _is_builtin(name: str) -> bool:
    return name in {"C", "np", "log", "exp", "center", "scale", "poly", "I", "Q", "bs"}


@dataclass
class FixedDesign:
    endog: np.ndarray  # (n,) response
    exog: np.ndarray  # (n, k_fep)
    endog_name: str
    exog_names: list[str]
    spec: object  # formulaic ModelSpec of the right-hand side, to rebuild X for new data


def build_fixed(formula: str, data: pd.DataFrame, extra_columns=()) -> FixedDesign:
    """X and y from a two-sided formula; every column used is checked first."""
    if "~" not in formula:
        raise ValueError(f"formula {formula!r} needs a response: 'y ~ x'")
    _check_data([formula], data, list(extra_columns))
    mm = formulaic.model_matrix(formula, data, na_action="raise")
    lhs, rhs = mm.lhs, mm.rhs
    if lhs.shape[1] != 1:
        raise ValueError(f"the left-hand side of {formula!r} must be one column, got {lhs.shape[1]}")
    return FixedDesign(
        endog=np.asarray(lhs, dtype=np.float64).ravel(),
        exog=np.asarray(rhs, dtype=np.float64),
        endog_name=str(lhs.columns[0]),
        exog_names=[str(c) for c in rhs.columns],
        spec=rhs.model_spec,
    )


@dataclass
class VCTerm:
    """How one variance-component formula maps rows to random-effect columns."""

    name: str
    formula: str
    offset: int  # first column of this term in Z
    size: int  # number of columns
    factor: str | None = None  # fast path: the grouping column
    slope: str | None = None  # fast path: the covariate multiplying the indicator
    levels: list = field(default_factory=list)  # fast path: level of each column
    spec: object = None  # general path: formulaic ModelSpec
    bar: dict | None = None  # lme4-style term: factors, cov_spec, q, j (column) or corr

    def row_entries(self, data: pd.DataFrame, unseen: str = "zero"):
        """(cols, vals) for new data; rows whose level was not seen get value 0."""
        if self.bar is not None:
            b = self.bar
            codes = pd.Index(self.levels).get_indexer(_group_keys(data, b["factors"]))
            miss = codes < 0
            if miss.any() and unseen == "raise":
                bad = pd.unique(_group_keys(data, b["factors"])[miss])[:5]
                raise ValueError(f"levels of {':'.join(b['factors'])!r} not seen in fitting: "
                                 f"{list(bad)}")
            Q = np.asarray(b["cov_spec"].get_model_matrix(data, na_action="raise"), float)
            codes = np.where(miss, 0, codes)
            if b["corr"]:
                q = Q.shape[1]
                cols = self.offset + codes[:, None] * q + np.arange(q)[None, :]
                return cols, np.where(miss[:, None], 0.0, Q)
            return (self.offset + codes)[:, None], np.where(miss, 0.0, Q[:, b["j"]])[:, None]
        if self.factor is not None:
            codes = pd.Index(self.levels).get_indexer(data[self.factor]).astype(np.int64)
            miss = codes < 0
            if miss.any() and unseen == "raise":
                bad = pd.unique(np.asarray(data[self.factor])[miss])[:5]
                raise ValueError(f"levels of {self.factor!r} not seen in fitting: {list(bad)}")
            vals = np.ones(len(data)) if self.slope is None else data[self.slope].to_numpy(float)
            vals = np.where(miss, 0.0, vals)
            return (np.where(miss, 0, codes) + self.offset)[:, None], vals[:, None]
        mat = self.spec.get_model_matrix(data, output="sparse")
        c, v, _ = sparse.from_scipy(mat)
        return c + self.offset, v  # general formulas: formulaic maps unseen levels to zeros


@dataclass
class VCDesign:
    cols: np.ndarray  # (n, m) int32
    vals: np.ndarray  # (n, m)
    k_vc: int
    ident: np.ndarray  # (k_vc,)
    vc_names: list[str]
    vcp_names: list[str]
    terms: list[VCTerm]


def new_fixed(fixed: FixedDesign, data: pd.DataFrame) -> np.ndarray:
    """X for new data from the fitted formula's right-hand side (same columns, same coding)."""
    _check_data([], data, _spec_columns(fixed.spec))
    mm = fixed.spec.get_model_matrix(data, na_action="raise")
    return np.asarray(mm, dtype=np.float64)


def _spec_columns(spec) -> list[str]:
    try:
        req = spec.required_variables
    except AttributeError:  # pragma: no cover - older formulaic
        req = formulaic.Formula(str(spec.formula)).required_variables
    return sorted(str(v) for v in req)


def new_vc(vc: VCDesign, data: pd.DataFrame, unseen: str = "population"):
    """ELLPACK (cols, vals) of Z for new data: levels seen in fitting get their columns; rows
    of unseen levels get value 0 there (the population value) or, with ``unseen="raise"``, an
    error naming the levels."""
    if unseen not in ("population", "raise"):
        raise ValueError(f"unseen must be 'population' or 'raise', got {unseen!r}")
    n = len(data)
    if not vc.terms:
        return np.zeros((n, 1), np.int32), np.zeros((n, 1))
    need = []
    for t in vc.terms:
        if t.bar is not None:
            need += list(t.bar["factors"]) + _spec_columns(t.bar["cov_spec"])
        elif t.factor is not None:
            need += [c for c in (t.factor, t.slope) if c]
        else:
            need += _spec_columns(t.spec)
    _check_data([], data, sorted(set(need)))
    cols, vals = [], []
    for t in vc.terms:
        c, v = t.row_entries(data, unseen="raise" if unseen == "raise" else "zero")
        cols.append(c)
        vals.append(v)
    return np.concatenate(cols, axis=1).astype(np.int32), np.concatenate(vals, axis=1)


def _group_keys(data: pd.DataFrame, factors) -> np.ndarray:
    """The grouping factor's level of each row: the column, or ``a:b`` for interactions."""
    if len(factors) == 1:
        return data[factors[0]].to_numpy()
    return data[list(factors)].astype(str).agg(":".join, axis=1).to_numpy()


@dataclass
class BarDesign:
    """lme4-style random terms ``(expr | g)`` of a GLMM formula."""

    cols: np.ndarray  # (n, m) int32
    vals: np.ndarray  # (n, m)
    ident: np.ndarray  # (k,) log-SD parameter of each column (offset by the caller)
    vc_names: list[str]
    sd_names: list[str]  # one per log-SD parameter
    corr: list[tuple]  # (cols (G, q), sd ids (q,), corr names) per correlated term
    terms: list[VCTerm]


def build_bar_terms(specs, data: pd.DataFrame, col0: int, id0: int) -> BarDesign:
    """Random-effect columns for lme4-style terms: ``(1 | g)`` a random intercept,
    ``(0 + x | g)`` a random slope, ``(1 + x | g)`` correlated intercept and slope (an
    unstructured covariance per level, covstruct.py), ``(1 + x || g)`` uncorrelated."""
    n = len(data)
    need = sorted({f for t in specs for f in t.factors}
                  | {v for t in specs for v in required_columns("~" + t.expr)})
    _check_data([], data, need)
    cols, vals, idents, vc_names, sd_names, corr, terms = [], [], [], [], [], [], []
    off, ident = col0, id0
    for t in specs:
        if t.kind == "vc":  # pragma: no cover - produced only by statsmodels' vc_formula
            raise ValueError("variance-component terms go in vc_formulas")
        keys = _group_keys(data, t.factors)
        cat = pd.Categorical(keys)
        levels, codes = list(cat.categories), np.asarray(cat.codes, np.int64)
        G = len(levels)
        mm = formulaic.model_matrix(t.expr, data, na_action="raise")
        Q = np.asarray(mm, dtype=np.float64)
        cov_names = [str(c) for c in mm.columns]
        q = Q.shape[1]
        gname = ":".join(t.factors)

        def sd_name(c, gname=gname):
            return gname if c == "Intercept" else f"{gname}:{c}"

        if t.kind == "re" and q >= 2:
            c = off + codes[:, None] * q + np.arange(q)[None, :]
            cols.append(c)
            vals.append(Q)
            ids = ident + np.arange(q)
            idents.append(np.tile(ids, G))
            vc_names += [f"{gname}[{lv}]:{cn}" for lv in levels for cn in cov_names]
            sd_names += [sd_name(cn) for cn in cov_names]
            znames = [f"{gname}:corr({cov_names[j]},{cov_names[i]})"
                      for i in range(q) for j in range(i)]
            corr.append((off + np.arange(G * q).reshape(G, q), ids, znames))
            terms.append(VCTerm(t.name, t.expr, off, G * q, levels=levels,
                                bar={"factors": t.factors, "cov_spec": mm.model_spec, "q": q,
                                     "corr": True}))
            off += G * q
            ident += q
        else:
            for j in range(q):
                cols.append((off + codes)[:, None])
                vals.append(Q[:, j:j + 1])
                idents.append(np.full(G, ident))
                vc_names += [f"{gname}[{lv}]" + ("" if cov_names[j] == "Intercept"
                                                 else f":{cov_names[j]}") for lv in levels]
                sd_names.append(sd_name(cov_names[j]))
                terms.append(VCTerm(t.name, t.expr, off, G, levels=levels,
                                    bar={"factors": t.factors, "cov_spec": mm.model_spec,
                                         "q": q, "j": j, "corr": False}))
                off += G
                ident += 1
    if not cols:
        return BarDesign(np.zeros((n, 0), np.int32), np.zeros((n, 0)), np.zeros(0, np.int32),
                         [], [], [], [])
    return BarDesign(np.concatenate(cols, axis=1).astype(np.int32), np.concatenate(vals, axis=1),
                     np.concatenate(idents).astype(np.int32), vc_names, sd_names, corr, terms)


def build_vc(vc_formulas: dict, data: pd.DataFrame) -> VCDesign:
    """Sparse Z from ``{name: one-sided formula}``; one variance parameter per entry."""
    if vc_formulas is None:
        vc_formulas = {}
    if not isinstance(vc_formulas, dict):
        raise ValueError(
            f"vc_formulas must be a dict {{name: formula}}, got {type(vc_formulas).__name__}"
        )
    _check_data(list(vc_formulas.values()), data)
    n = len(data)
    col_blocks, val_blocks, idents, names, terms = [], [], [], [], []
    offset = 0
    for j, (name, fml) in enumerate(vc_formulas.items()):
        m = _FACTOR_TERM.match(fml)
        if m:
            factor, slope = m.group(1), m.group(2)
            cat = pd.Categorical(data[factor])
            levels = list(cat.categories)
            codes = np.asarray(cat.codes, dtype=np.int32)
            vals = np.ones(n) if slope is None else data[slope].to_numpy(dtype=np.float64)
            c, v = codes[:, None] + offset, vals[:, None]
            suffix = "" if slope is None else f":{slope}"
            term_names = [f"C({factor})[{lv}]{suffix}" for lv in levels]
            term = VCTerm(name, fml, offset, len(levels), factor=factor, slope=slope, levels=levels)
        else:
            mat = formulaic.model_matrix(fml, data, output="sparse", na_action="raise")
            c, v, k = sparse.from_scipy(mat)
            c = c + offset
            term_names = [str(x) for x in mat.model_spec.column_names]
            term = VCTerm(name, fml, offset, k, spec=mat.model_spec)
        col_blocks.append(c.astype(np.int32))
        val_blocks.append(v.astype(np.float64))
        idents.append(np.full(term.size, j, dtype=np.int32))
        names += term_names
        terms.append(term)
        offset += term.size
    if col_blocks:
        cols = np.concatenate(col_blocks, axis=1)
        vals = np.concatenate(val_blocks, axis=1)
        ident = np.concatenate(idents)
    else:
        cols = np.zeros((n, 1), np.int32)
        vals = np.zeros((n, 1))
        ident = np.zeros(0, np.int32)
    return VCDesign(cols, vals, offset, ident, names, list(vc_formulas), terms)
