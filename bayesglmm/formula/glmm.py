"""The design of a Bayesian mixed GLM from a formula: X and the sparse random-effects design Z.

``vc_formulas`` and the formula's lme4-style terms become level-coded terms
(:mod:`.random`); here they are laid out as ELLPACK columns of Z (:mod:`..design.ellpack`),
one variance parameter (log SD) per vc formula and per covariate of an lme4-style term, plus
the correlation parameters of correlated terms ``(1 + x | g)`` after all log SDs.  New data go
through the same terms and the same layout (:meth:`GLMMDesign.new_vc`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..design import ellpack
from .fixed import Fixed, fixed_design, new_exog
from .frame import model_frame, used_columns
from .random import SparseTerm, Term, build_terms
from .terms import glmm_specs

__all__ = ["GLMMDesign", "glmm_design"]


@dataclass
class GLMMDesign:
    """Everything a GLMM reads from a formula and a DataFrame."""

    fixed: Fixed
    terms: list  # Term | SparseTerm: vc_formulas in order, then lme4-style terms
    offsets: list  # first column of each term in Z
    cols: np.ndarray  # (n, m) int32: ELLPACK columns of Z
    vals: np.ndarray  # (n, m) float64: their values
    k_vc: int  # columns of Z
    ident: np.ndarray  # (k_vc,) int32: the log-SD parameter of each column
    vc_names: list  # (k_vc,)
    vcp_names: list  # log SDs, then correlation parameters
    corr: list  # (cols (L, q), log-SD ids (q,), names) per correlated term
    sd_labels: list  # (group, variable or None) per log SD, for varcorr tables
    extra: dict  # named argument columns (n_trials="size", ...) as float arrays (n,)
    keep: np.ndarray | None  # (n_input,) rows kept by missing="drop"; None: all

    def subset(self, x):
        """An array argument given for every input row, restricted to the rows kept."""
        return x if x is None or self.keep is None else np.asarray(x)[self.keep]

    def new_exog(self, data: pd.DataFrame) -> np.ndarray:
        """X for new data (same columns, same coding)."""
        return new_exog(self.fixed.spec, data)

    def new_vc(self, data: pd.DataFrame, unseen: str = "population"):
        """ELLPACK ``(cols, vals)`` of Z for new data: levels seen in fitting get their columns;
        rows of unseen levels get value 0 there (the population value) or, with
        ``unseen="raise"``, an error naming the levels."""
        if unseen not in ("population", "raise"):
            raise ValueError(f"unseen must be 'population' or 'raise', got {unseen!r}")
        if not self.terms:
            return np.zeros((len(data), 1), np.int32), np.zeros((len(data), 1))
        need = {c for t in self.terms for c in (t.columns if isinstance(t, SparseTerm)
                                               else t.rows.columns)}
        model_frame(data, used_columns([], data, sorted(need)), "raise")
        blocks = []
        for t, off in zip(self.terms, self.offsets):
            if isinstance(t, SparseTerm):
                c, v = t.new_entries(data)
                blocks.append((c + off, v))
            else:
                blocks.append(_entries(t, off, *t.new_rows(data, "raise", unseen)))
        return (np.concatenate([c for c, _ in blocks], axis=1).astype(np.int32),
                np.concatenate([v for _, v in blocks], axis=1))


def _correlated(t) -> bool:
    return isinstance(t, Term) and t.kind == "re" and t.q >= 2


def _entries(t: Term, off: int, codes: np.ndarray, z: np.ndarray):
    """ELLPACK columns of a level-coded term; code -1 (no level) gives value 0.

    A correlated term keeps each level's q effects together (column ``off + code·q + j``),
    any other puts covariate j's levels in one block (column ``off + j·L + code``).
    """
    miss = codes < 0
    if miss.any():
        codes, z = np.where(miss, 0, codes), np.where(miss[:, None], 0.0, z)
    q = z.shape[1]
    step, stride = (q, 1) if _correlated(t) else (1, t.n_levels)
    return ellpack.from_codes([codes * step + j * stride for j in range(q)],
                              [z[:, j] for j in range(q)], [off] * q)


def sd_labels(t) -> list:
    """``(group, variable)`` of each of a term's log SDs, as lme4's ``VarCorr`` names them:
    ``("Subject", "Days")`` for ``(Days | Subject)``'s slope; a variance component of
    ``vc_formulas`` by its key, variable None."""
    if isinstance(t, SparseTerm) or t.kind == "vc":
        return [(t.name, None)]
    return [(t.group, c) for c in t.cols]


def _names(t, sd: int):
    """``(ident, vc names, log-SD names, correlation names)`` of a term whose first log-SD
    parameter is ``sd``."""
    if isinstance(t, SparseTerm):
        return np.full(len(t.names), sd), t.names, [t.name], []
    levels, q = list(t.index), t.q
    if t.kind == "vc":  # 0 + C(g) or 0 + C(g):x
        slope = t.rows.cov.column
        suffix = "" if slope is None else f":{slope}"
        return np.full(len(levels), sd), [f"C({t.group})[{lv}]{suffix}" for lv in levels], \
            [t.name], []
    g = t.group
    sd_names = [g if c == "Intercept" else f"{g}:{c}" for c in t.cols]
    if _correlated(t):
        return (np.tile(sd + np.arange(q), len(levels)),
                [f"{g}[{lv}]:{c}" for lv in levels for c in t.cols], sd_names,
                [f"{g}:corr({t.cols[j]},{t.cols[i]})" for i in range(q) for j in range(i)])
    return (np.repeat(sd + np.arange(q), len(levels)),
            [f"{g}[{lv}]" + ("" if c == "Intercept" else f":{c}") for c in t.cols
             for lv in levels], sd_names, [])


def glmm_design(formula: str, vc_formulas: dict | None, data: pd.DataFrame,
                extra: Sequence[str] = (), missing: str = "raise") -> GLMMDesign:
    """Build the full design of a GLMM (see ``BinomialBayesMixedGLM.from_formula``).

    ``extra`` names further columns the model reads (``n_trials="size"``); they are checked
    like the formula's and returned in ``extra``.
    """
    if not isinstance(data, pd.DataFrame):
        raise ValueError(f"data must be a pandas DataFrame, got {type(data).__name__}")
    fixed_f, specs = glmm_specs(formula, vc_formulas)
    cols = used_columns([fixed_f] + [s.expr for s in specs], data,
                        [f for s in specs for f in s.factors] + list(extra))
    frame = model_frame(data, cols, missing, stacklevel=3)
    df = frame.data
    fixed = fixed_design(fixed_f, df)
    terms = [t for s in specs for t in build_terms(s, df)]
    blocks, idents, vc_names, sd_names, corr_names, corr, offsets = [], [], [], [], [], [], []
    labels = []
    off = sd = 0
    for t in terms:
        ident, names, sds, znames = _names(t, sd)
        blocks.append((t.cols + off, t.vals) if isinstance(t, SparseTerm)
                      else _entries(t, off, t.codes, t.z))
        if znames:
            corr.append((off + np.arange(len(ident)).reshape(-1, t.q), sd + np.arange(t.q),
                         znames))
        offsets.append(off)
        idents.append(ident)
        vc_names += names
        sd_names += sds
        labels += sd_labels(t)
        corr_names += znames
        off += len(ident)
        sd += len(sds)
    n = len(df)
    if blocks:
        zc = np.concatenate([c for c, _ in blocks], axis=1).astype(np.int32)
        zv = np.concatenate([v for _, v in blocks], axis=1).astype(np.float64)
        ident = np.concatenate(idents).astype(np.int32)
    else:
        zc, zv, ident = np.zeros((n, 1), np.int32), np.zeros((n, 1)), np.zeros(0, np.int32)
    return GLMMDesign(fixed, terms, offsets, zc, zv, off, ident, vc_names,
                      sd_names + corr_names, corr, labels,
                      {c: df[c].to_numpy(dtype=np.float64) for c in extra}, frame.keep)
