"""Designs of a linear mixed model: y, X and, per random term, level codes and covariates.

A random term is never stored as a dense ``n × levels`` matrix: each row carries the index of
its level (``codes``, an int array) and the ``q`` covariates that multiply that level's
random-effect vector (``z``), i.e. ``Z = [z ⊗ indicator(codes)]`` in Bates et al. (2015) §2.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import formulaic
import numpy as np
import pandas as pd
import scipy.linalg

from ..validation import check_columns
from .terms import TermSpec

__all__ = ["Design", "Term", "check_fixed_rank", "design_from_arrays", "design_from_formula"]


@dataclass
class Term:
    """One random-effect term met with the data."""

    name: str  # label for tables ("Subject", "a:b", vc name)
    group: str  # grouping factor label
    kind: str  # "re" | "diag" | "vc"
    cols: list  # (q,) names of the covariates
    codes: np.ndarray  # (n,) int level of each row
    z: np.ndarray  # (n, q) covariates of each row
    index: pd.Index  # (L,) level keys; vc terms: MultiIndex (group, column)
    tkey: str  # terms with equal tkey share their variance parameters
    rows: Callable | None = field(default=None, repr=False)  # df -> (keys, z) for new data

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


@dataclass
class Design:
    """Everything the model needs from the data, validated."""

    y: np.ndarray  # (n,)
    X: np.ndarray  # (n, p)
    yname: str
    xnames: list
    terms: list  # list[Term], in the order the user wrote them
    groups_term: int | None = None  # which term is statsmodels' `groups` random effect
    group_labels: np.ndarray | None = None  # (n,) the `groups` values, for group sizes
    fixed_spec: object = None  # formulaic ModelSpec of X, for predict(new_data)
    n_dropped: int = 0


def _keys(df: pd.DataFrame, factors: tuple):
    """Per-row key of the grouping factor ``factors`` (a single column, or 'a:b' strings)."""
    if len(factors) == 1:
        return df[factors[0]].to_numpy()
    out = df[factors[0]].astype(str).to_numpy().astype(object)
    for f in factors[1:]:
        out = out + ":" + df[f].astype(str).to_numpy().astype(object)
    return out


def _index_of(keys) -> tuple[pd.Index, np.ndarray]:
    """Sorted unique keys and the code of each row."""
    try:  # hash-based: much faster than np.unique's sort for object (string) keys
        codes, uniq = pd.factorize(np.asarray(keys), sort=True)
        if len(codes) and codes.min() < 0:
            raise TypeError("missing keys")
        return pd.Index(uniq), codes.astype(np.int64)
    except TypeError:
        pass
    try:
        idx = pd.Index(np.unique(keys))
    except TypeError:  # mixed types: sort as strings
        keys = np.asarray(keys).astype(str)
        idx = pd.Index(np.unique(keys))
    return idx, idx.get_indexer(keys).astype(np.int64)


def _matrix(expr: str, df: pd.DataFrame):
    mm = formulaic.model_matrix(expr, df, na_action="ignore")
    return mm.to_numpy(dtype=np.float64), list(mm.columns), mm.model_spec


def _build_term(spec: TermSpec, df: pd.DataFrame, rename_intercept: str | None) -> list[Term]:
    factors = spec.factors
    z, cols, mspec = _matrix(spec.expr, df)
    if z.shape[1] == 0:
        raise ValueError(f"random-effect term {spec.expr!r} | {spec.name} has no columns")
    if rename_intercept:
        cols = [rename_intercept if c == "Intercept" else c for c in cols]
    group = ":".join(factors)
    if spec.kind != "vc":

        def rows(d, mspec=mspec, factors=factors):
            return _keys(d, factors), mspec.get_model_matrix(d, na_action="ignore").to_numpy(
                dtype=np.float64
            )

        index, codes = _index_of(_keys(df, factors))
        return [Term(spec.name, group, spec.kind, cols, codes, z, index, spec.name, rows)]
    # statsmodels variance component: within each group every column of the vc design is a
    # separate random effect, all with one variance.  When each row has at most one non-zero
    # column (the usual "0 + C(x)"), that is one scalar term on the factor (group, column).
    nz = z != 0
    gkeys = _keys(df, factors)
    if nz.sum(axis=1).max(initial=0) <= 1:

        def rows(d, mspec=mspec, factors=factors, cols=cols):
            zz = mspec.get_model_matrix(d, na_action="ignore").to_numpy(dtype=np.float64)
            j = np.argmax(zz != 0, axis=1)
            val = zz[np.arange(len(zz)), j]
            g = _keys(d, factors)
            keys = pd.MultiIndex.from_arrays([g, np.asarray(cols, dtype=object)[j]])
            return keys, val[:, None], val != 0

        keys, val, used = rows(df)
        index = pd.MultiIndex.from_tuples(sorted(set(keys[used])), names=[group, spec.name])
        codes = index.get_indexer(keys)
        codes = np.where(used, codes, 0).astype(np.int64)
        return [
            Term(spec.name, group, "vc", [spec.name], codes, val, index, "vc:" + spec.name, rows)
        ]
    # general vc design: one scalar term per column on the group factor, shared variance
    out = []
    index, codes = _index_of(gkeys)
    for j, c in enumerate(cols):

        def rows(d, mspec=mspec, factors=factors, j=j):
            zz = mspec.get_model_matrix(d, na_action="ignore").to_numpy(dtype=np.float64)
            return _keys(d, factors), zz[:, j : j + 1]

        out.append(
            Term(f"{spec.name}[{c}]", group, "vc", [c], codes, z[:, j : j + 1], index,
                 "vc:" + spec.name, rows)
        )
    return out


def _used_columns(fixed: str, specs: list[TermSpec]) -> list[str]:
    names = list(formulaic.Formula(fixed).required_variables)
    for s in specs:
        names += list(formulaic.Formula(s.expr).required_variables) + list(s.factors)
    out = []
    for n in names:
        n = str(n)
        if n not in out:
            out.append(n)
    return out


def _ordered_required(formula: str, names: list[str]) -> list[str]:
    """Order names as they appear in the formula text (for stable error messages)."""
    return sorted(names, key=lambda n: (formula.find(n) if n in formula else len(formula), n))


def handle_missing(df: pd.DataFrame, cols: list[str], missing: str) -> tuple[pd.DataFrame, int]:
    """NaN in a used column: raise (``"none"``/``"raise"``) or drop the rows (``"drop"``)."""
    if missing not in ("none", "raise", "drop"):
        raise ValueError(f"missing must be 'none', 'raise' or 'drop', got {missing!r}")
    bad = df[cols].isna()
    if not bad.to_numpy().any():
        return df, 0
    if missing == "drop":
        keep = ~bad.any(axis=1).to_numpy()
        n_drop = int((~keep).sum())
        warnings.warn(
            f"dropped {n_drop} row(s) with missing values in "
            f"{', '.join(c for c in cols if bad[c].any())}",
            UserWarning,
            stacklevel=4,
        )
        return df.loc[keep].reset_index(drop=True), n_drop
    counts = {c: int(bad[c].sum()) for c in cols if bad[c].any()}
    desc = ", ".join(f"{c!r} ({k} missing)" for c, k in counts.items())
    raise ValueError(
        f"missing values (NaN) in column(s) used by the model: {desc}. "
        "Remove them, or pass missing='drop' to drop those rows"
    )


def check_fixed_rank(X: np.ndarray, names: list) -> None:
    """Raise ValueError naming the columns of X that are linear combinations of others."""
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


def _check_terms(terms: list[Term], n: int) -> None:
    for t in terms:
        if t.n_levels < 2:
            raise ValueError(
                f"grouping factor {t.group!r} of random term {t.name!r} has only "
                f"{t.n_levels} level; a variance needs at least 2 groups"
            )
        if t.n_levels >= n:
            raise ValueError(
                f"grouping factor {t.group!r} has {t.n_levels} levels for {n} rows; its "
                "variance cannot be told apart from the residual variance"
            )


def design_from_formula(formula, data, groups, specs_fixed, specs, missing, group_name):
    """Build a :class:`Design` from a formula and a DataFrame (see ``MixedLM.from_formula``)."""
    if not isinstance(data, pd.DataFrame):
        data = pd.DataFrame(data)
    df = data
    if groups is not None and not isinstance(groups, str):
        g = np.asarray(groups)
        if len(g) != len(df):
            raise ValueError(f"groups has {len(g)} values but data has {len(df)} rows")
        df = df.assign(**{group_name: g})
    used = _used_columns(specs_fixed, specs)
    check_columns(_ordered_required(formula, used), df)
    df, n_drop = handle_missing(df, used, missing)
    mm = formulaic.model_matrix(specs_fixed, df, na_action="ignore")
    ymat = mm.lhs.to_numpy(dtype=np.float64)
    if ymat.ndim != 2 or ymat.shape[1] != 1:
        raise ValueError(f"the response of {formula!r} must be a single numeric column")
    y = ymat[:, 0]
    X = mm.rhs.to_numpy(dtype=np.float64)
    xnames = list(mm.rhs.columns)
    yname = str(mm.lhs.columns[0])
    terms, gterm = [], None
    for s in specs:
        is_group = groups is not None and s.kind == "re" and s.factors == (group_name,)
        rename = group_name if is_group else None
        built = _build_term(s, df, rename)
        if rename and gterm is None:
            gterm = len(terms)
        terms += built
    for i, t in enumerate(terms):
        if t.kind != "vc":
            t.tkey = f"{t.name}#{i}"  # each lme4-style term has its own parameters
    glab = _keys(df, (group_name,)) if groups is not None else None
    check_fixed_rank(X, xnames)
    _check_terms(terms, len(y))
    return Design(y, X, yname, xnames, terms, gterm, glab, mm.rhs.model_spec, n_drop)


def design_from_arrays(endog, exog, groups, exog_re=None, exog_vc=None):
    """Build a :class:`Design` from arrays, with statsmodels' meaning of each argument.

    ``exog_vc`` is a dict ``name -> (n, k)`` array: within each group, each of the ``k``
    columns is a random coefficient, all ``k`` sharing the variance ``name``.
    """
    from ..validation import check_1d, check_2d, check_length

    y = check_1d(endog, "endog")
    n = len(y)
    X = check_2d(exog, "exog")
    check_length(n, X.shape[0], "exog")
    xnames = list(exog.columns) if isinstance(exog, pd.DataFrame) else [
        "const" if np.all(X[:, j] == 1) else f"x{j + 1}" for j in range(X.shape[1])
    ]
    yname = str(getattr(endog, "name", None) or "y")
    g = np.asarray(groups)
    if g.ndim != 1 or len(g) != n:
        raise ValueError(f"groups must be one-dimensional with {n} values, got shape {g.shape}")
    if pd.isna(pd.Series(g)).any():
        raise ValueError("groups contains missing values")
    index, codes = _index_of(g)
    terms = []
    gterm = None
    if exog_re is None:
        z, cols = np.ones((n, 1)), ["Group"]
    else:
        z = check_2d(exog_re, "exog_re")
        check_length(n, z.shape[0], "exog_re")
        cols = list(exog_re.columns) if isinstance(exog_re, pd.DataFrame) else (
            ["Group"] + [f"z{j + 1}" for j in range(1, z.shape[1])]
            if np.all(z[:, 0] == 1) else [f"z{j + 1}" for j in range(z.shape[1])]
        )
    if z.shape[1] > 0:
        terms.append(Term("Group", "Group", "re", cols, codes, z, index, "Group"))
        gterm = 0
    for name, mat in (exog_vc or {}).items():
        v = check_2d(mat, f"exog_vc[{name!r}]")
        check_length(n, v.shape[0], f"exog_vc[{name!r}]")
        vcols = list(mat.columns) if isinstance(mat, pd.DataFrame) else [
            f"{name}[{j}]" for j in range(v.shape[1])
        ]
        nz = v != 0
        if nz.sum(axis=1).max(initial=0) <= 1:
            j = np.argmax(nz, axis=1)
            val = v[np.arange(n), j]
            used = val != 0
            keys = pd.MultiIndex.from_arrays([g, np.asarray(vcols, dtype=object)[j]])
            vidx = pd.MultiIndex.from_tuples(sorted(set(keys[used])), names=["Group", name])
            vcodes = np.where(used, vidx.get_indexer(keys), 0).astype(np.int64)
            terms.append(Term(str(name), "Group", "vc", [str(name)], vcodes, val[:, None], vidx,
                              "vc:" + str(name)))
        else:
            for j, c in enumerate(vcols):
                terms.append(Term(f"{name}[{c}]", "Group", "vc", [c], codes, v[:, j : j + 1],
                                  index, "vc:" + str(name)))
    if not terms:
        raise ValueError("the model has no random effects (exog_re has no columns and no exog_vc)")
    check_fixed_rank(X, xnames)
    _check_terms(terms, n)
    return Design(y, X, yname, xnames, terms, gterm, g, None, 0)
