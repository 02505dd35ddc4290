"""The design of a linear mixed model: y, X and its level-coded random terms.

From a formula (:func:`lmm_design`, statsmodels' ``groups``/``re_formula``/``vc_formula`` and
lme4-style terms) or from arrays with statsmodels' meaning (:func:`design_from_arrays`).  The
terms (:class:`.random.Term`) are used as they are: the cross-products of
:mod:`..design.crossprod` read their level codes and covariates.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..validation import check_1d, check_2d, check_length
from .fixed import check_rank, fixed_design
from .frame import group_keys, index_codes, model_frame, used_columns
from .random import Term, build_terms, vc_terms
from .terms import lmm_specs

__all__ = ["Design", "design_from_arrays", "lmm_design"]


@dataclass
class Design:
    """Everything a MixedLM needs from the data, validated."""

    y: np.ndarray  # (n,)
    X: np.ndarray  # (n, p)
    yname: str
    xnames: list
    terms: list  # list[Term], in the order the user wrote them
    groups_term: int | None = None  # which term is statsmodels' `groups` random effect
    group_labels: np.ndarray | None = None  # (n,) the `groups` values, for group sizes
    fixed_spec: object = None  # formulaic ModelSpec of X, for predict(new_data)
    n_dropped: int = 0
    row_index: object = None  # (n,) pandas Index of the rows used, when the data had one


def _check_terms(terms: list[Term], n: int, groups_term: int | None = None) -> None:
    """Every term estimable; lme4's rule on the number of random effects for lme4-style terms
    (statsmodels fits ``groups``' ``re_formula`` term with as many: its own test suite does)."""
    for i, t in enumerate(terms):
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
        q = max(len(t.cols), 1)
        if t.kind == "re" and i != groups_term and t.n_levels * q >= n:  # lme4's
            # check.nobs.vs.nRE (lmer: "stop")
            raise ValueError(
                f"random term {t.name!r} has {t.n_levels * q} random effects ({t.n_levels} "
                f"levels of {t.group!r} × {q} covariates: {', '.join(map(str, t.cols))}) for "
                f"{n} rows; its covariance cannot be told apart from the residual variance "
                "(a text or categorical column in the term codes one covariate per level: use "
                "a numeric column for a slope)"
            )


def lmm_design(formula, data, groups=None, re_formula=None, vc_formula=None,
               missing="none") -> Design:
    """Build a :class:`Design` from a formula and a DataFrame (see :func:`..models.lmm.mixedlm`)."""
    gname = None
    if groups is not None:
        gname = groups if isinstance(groups, str) else str(getattr(groups, "name", None) or "Group")
    fixed_f, specs = lmm_specs(formula, gname, re_formula, vc_formula)
    df = data if isinstance(data, pd.DataFrame) else pd.DataFrame(data)
    if groups is not None and not isinstance(groups, str):
        g = np.asarray(groups)
        if len(g) != len(df):
            raise ValueError(f"groups has {len(g)} values but data has {len(df)} rows")
        df = df.assign(**{gname: g})
    cols = used_columns([fixed_f] + [s.expr for s in specs], df,
                        [f for s in specs for f in s.factors])
    frame = model_frame(df, cols, missing, stacklevel=3)
    # the labels of the rows used (model_frame renumbers the rows it keeps)
    row_index = df.index if frame.keep is None else df.index[frame.keep]
    df = frame.data
    fixed = fixed_design(fixed_f, df)
    terms, gterm = [], None
    for s in specs:
        built = build_terms(s, df)
        if groups is not None and s.kind == "re" and s.factors == (gname,):
            for t in built:  # statsmodels names the groups' intercept after the groups
                t.cols = [gname if c == "Intercept" else c for c in t.cols]
            gterm = len(terms) if gterm is None else gterm
        terms += built
    for i, t in enumerate(terms):
        if t.kind != "vc":
            t.tkey = f"{t.name}#{i}"  # each lme4-style term has its own parameters
    glab = group_keys(df, (gname,)) if groups is not None else None
    check_rank(fixed.X, fixed.xnames)
    _check_terms(terms, len(fixed.y), gterm)
    return Design(fixed.y, fixed.X, fixed.yname, fixed.xnames, terms, gterm, glab, fixed.spec,
                  frame.n_dropped, row_index)


def design_from_arrays(endog, exog, groups, exog_re=None, exog_vc=None,
                       missing="none") -> Design:
    """Build a :class:`Design` from arrays, with statsmodels' meaning of each argument.

    ``exog_vc`` is a dict ``name -> (n, k)`` array: within each group, each of the ``k``
    columns is a random coefficient, all ``k`` sharing the variance ``name``; statsmodels'
    older dict of dicts ``name -> {group: (n_g, k_g) array}`` is converted to that form
    (:func:`vc_from_dicts`).  ``missing="drop"`` drops the rows with a NaN in any array.
    """
    if missing not in ("none", "raise", "drop"):
        raise ValueError(f"missing must be 'none', 'raise' or 'drop', got {missing!r}")
    if exog_vc and any(isinstance(v, dict) for v in exog_vc.values()):
        exog_vc = vc_from_dicts(exog_vc, groups)
    n_dropped = 0
    if missing == "drop":
        endog, exog, groups, exog_re, exog_vc, n_dropped = _drop_rows(
            endog, exog, groups, exog_re, exog_vc)
    y = check_1d(endog, "endog")
    n = len(y)
    X = check_2d(exog, "exog")
    check_length(n, X.shape[0], "exog")
    xnames = list(exog.columns) if isinstance(exog, pd.DataFrame) else _exog_names(X)
    yname = str(getattr(endog, "name", None) or "y")
    g = np.asarray(groups)
    if g.ndim != 1 or len(g) != n:
        raise ValueError(f"groups must be one-dimensional with {n} values, got shape {g.shape}")
    if pd.isna(pd.Series(g)).any():
        raise ValueError("groups contains missing values")
    index, codes = index_codes(g)
    terms = []
    gterm = None
    if exog_re is None and exog_vc:  # statsmodels: variance components only
        z, cols = np.ones((n, 0)), []
    elif exog_re is None:
        z, cols = np.ones((n, 1)), ["Group"]
    else:
        z = check_2d(exog_re, "exog_re")
        check_length(n, z.shape[0], "exog_re")
        cols = list(exog_re.columns) if isinstance(exog_re, pd.DataFrame) else (
            [str(exog_re.name)] if isinstance(exog_re, pd.Series) and exog_re.name is not None
            else [f"x_re{j + 1}" for j in range(z.shape[1])])  # statsmodels' names
    if z.shape[1] > 0:
        terms.append(Term("Group", "Group", "re", cols, codes, z, index, "Group"))
        gterm = 0
    for name, mat in (exog_vc or {}).items():
        v = check_2d(mat, f"exog_vc[{name!r}]")
        check_length(n, v.shape[0], f"exog_vc[{name!r}]")
        vcols = list(mat.columns) if isinstance(mat, pd.DataFrame) else [
            f"{name}[{j}]" for j in range(v.shape[1])
        ]
        terms += vc_terms(name, ("Group",), g, v, vcols)
    if not terms:
        raise ValueError("the model has no random effects (exog_re has no columns and no exog_vc)")
    check_rank(X, xnames)
    _check_terms(terms, n, gterm)
    index = next((a.index for a in (endog, exog) if isinstance(a, (pd.Series, pd.DataFrame))),
                 None)
    return Design(y, X, yname, xnames, terms, gterm, g, None, n_dropped, index)


def _exog_names(X) -> list:
    """statsmodels' names of array columns: ``const`` for a constant, ``x1, x2, ...`` for the
    others in order."""
    names, k = [], 0
    for j in range(X.shape[1]):
        if np.all(X[:, j] == 1):
            names.append("const")
        else:
            k += 1
            names.append(f"x{k}")
    return names


def vc_from_dicts(exog_vc: dict, groups) -> dict:
    """statsmodels' deprecated ``{name: {group: (n_g, k_g) array}}`` as ``{name: (n, K)}``.

    Column j of group g's matrix is random coefficient j of that group; the rows of a group
    are its rows in data order (statsmodels' ``row_indices``).  ``K = max k_g``; a group with
    fewer columns has zeros in the others (coefficients no row loads on).
    """
    warnings.warn("Using deprecated variance components format (a dict of dicts); pass "
                  "exog_vc as {name: (n, k) array}", FutureWarning, stacklevel=4)
    g = np.asarray(groups)
    out = {}
    for name, per in exog_vc.items():
        if not isinstance(per, dict):
            out[name] = per
            continue
        mats = {lab: np.atleast_2d(np.asarray(m, np.float64).reshape(len(m), -1))
                for lab, m in per.items()}
        width = max((m.shape[1] for m in mats.values()), default=0)
        v = np.zeros((len(g), width))
        for lab, m in mats.items():
            rows = np.flatnonzero(g == lab)
            if len(rows) != m.shape[0]:
                raise ValueError(f"exog_vc[{name!r}][{lab!r}] has {m.shape[0]} rows but group "
                                 f"{lab!r} has {len(rows)}")
            v[rows, : m.shape[1]] = m
        out[name] = v
    return out


def _drop_rows(endog, exog, groups, exog_re, exog_vc):
    """statsmodels' ``missing="drop"`` for arrays: the rows without NaN in any array."""
    def nan_rows(a):
        a = np.asarray(a, dtype=object if np.asarray(a).dtype.kind == "O" else None)
        m = pd.isna(pd.DataFrame(a.reshape(len(a), -1))).any(axis=1).to_numpy()
        return m

    arrays = [endog, exog, groups] + ([] if exog_re is None else [exog_re]) + list(
        (exog_vc or {}).values())
    bad = np.zeros(len(np.asarray(endog)), bool)
    for a in arrays:
        bad |= nan_rows(a)
    keep = np.flatnonzero(~bad)

    def take(a):
        return None if a is None else (a.iloc[keep] if hasattr(a, "iloc") else np.asarray(a)[keep])

    if bad.any():
        warnings.warn(f"missing='drop': {int(bad.sum())} row(s) with missing values dropped",
                      UserWarning, stacklevel=4)
    vc = None if exog_vc is None else {k: take(v) for k, v in exog_vc.items()}
    return take(endog), take(exog), take(groups), take(exog_re), vc, int(bad.sum())
