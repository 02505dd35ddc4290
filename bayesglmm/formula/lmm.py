"""The design of a linear mixed model: y, X and its level-coded random terms.

From a formula (:func:`lmm_design`, statsmodels' ``groups``/``re_formula``/``vc_formula`` and
lme4-style terms) or from arrays with statsmodels' meaning (:func:`design_from_arrays`).  The
terms (:class:`.random.Term`) are used as they are: the cross-products of
:mod:`..design.crossprod` read their level codes and covariates.
"""

from __future__ import annotations

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
    _check_terms(terms, len(fixed.y))
    return Design(fixed.y, fixed.X, fixed.yname, fixed.xnames, terms, gterm, glab, fixed.spec,
                  frame.n_dropped)


def design_from_arrays(endog, exog, groups, exog_re=None, exog_vc=None) -> Design:
    """Build a :class:`Design` from arrays, with statsmodels' meaning of each argument.

    ``exog_vc`` is a dict ``name -> (n, k)`` array: within each group, each of the ``k``
    columns is a random coefficient, all ``k`` sharing the variance ``name``.
    """
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
    index, codes = index_codes(g)
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
        terms += vc_terms(name, ("Group",), g, v, vcols)
    if not terms:
        raise ValueError("the model has no random effects (exog_re has no columns and no exog_vc)")
    check_rank(X, xnames)
    _check_terms(terms, n)
    return Design(y, X, yname, xnames, terms, gterm, g, None, 0)
