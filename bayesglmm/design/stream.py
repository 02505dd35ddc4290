"""A mixed GLM's design streamed from a Parquet file, one fixed-shape minibatch at a time.

Out-of-core fits (fits.vb_stream) never hold the n rows.  :func:`open_parquet` makes one
*check pass* over the file (``pyarrow.parquet.ParquetFile.iter_batches``, only the columns the
model reads): every batch is checked exactly as the in-memory model checks its data (a column
name not in the file suggests the closest, NaN in a used column names it, counts and trials as
the families require) before any fitting starts, and one representative row is kept for every
level of every grouping factor and categorical column.  Those few rows (O(levels)) build the
*prototype design* with the in-memory code (formula.glmm.glmm_design): the fixed-effect
columns and their coding (formulaic's ModelSpec), the random-effect terms and their level
indices, the names and ``ident``.  Any batch is then laid out by that design's recipes
(``GLMMDesign.new_exog``, ``GLMMDesign.new_vc`` with ``unseen="raise"``), so the columns of X
and Z are identical across batches and equal to those of the in-memory model on the whole file.

:meth:`ParquetSource.batches` yields :class:`StreamBatch` es of exactly ``rows`` rows: the
row groups in an order given by the caller (shuffled per epoch), each split into batches of
``rows`` rows, the last one of a row group padded with inert rows (design.buckets' padding:
weight 0, y = 0, X row 0, Z value 0, n_trials 1, offset 0), so that one compiled program
serves every batch.  Memory: one row group's used columns as Arrow data, one batch's design,
and the prototype.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field
from typing import NamedTuple

import formulaic
import numpy as np
import pandas as pd

from ..families import Binomial, Family, Poisson
from ..formula.fixed import new_exog
from ..formula.frame import group_keys, model_frame, used_columns
from ..formula.glmm import GLMMDesign, glmm_design
from ..formula.terms import glmm_specs
from ..validation import check_binary

__all__ = ["ParquetSource", "StreamBatch", "open_parquet"]

_CALL = re.compile(r"\bC\(\s*([A-Za-z_][\w.]*)")  # C(g): a categorical column
_STATEFUL = re.compile(r"\b(center|scale|standardize|poly|bs|cr|cs|cc|te)\(")


class StreamBatch(NamedTuple):
    """One minibatch (numpy or device arrays), padded to a fixed number of rows B."""

    y: np.ndarray  # (B,) response
    X: np.ndarray  # (B, k_fep) fixed-effects design
    cols: np.ndarray  # (B, m) int32 ELLPACK columns of Z
    vals: np.ndarray  # (B, m) their values (0 in padded rows)
    n_trials: np.ndarray  # (B,) binomial trials (1 otherwise and in padded rows)
    weights: np.ndarray  # (B,) 1 for real rows, 0 for padding
    offset: np.ndarray  # (B,) offset (+ log exposure)


@dataclass
class ParquetSource:
    """A checked Parquet file and the prototype design of the model it feeds."""

    path: str
    family: Family
    columns: list  # the columns the model reads
    response: str  # the left-hand side of the formula
    design: GLMMDesign  # the prototype's design: names, coding, level indices
    nobs: int  # rows used (after missing="drop")
    row_group_rows: list  # rows of each row group
    n_trials: str | None = None
    offset: str | None = None
    exposure: str | None = None
    missing: str = "raise"
    _file: object = field(default=None, repr=False)

    def n_batches(self, rows: int) -> int:
        """Batches of ``rows`` rows per epoch (each row group split on its own)."""
        return int(sum(-(-r // rows) for r in self.row_group_rows if r))

    def batches(self, rows: int, order=None):
        """Yield ``(StreamBatch, n_real)`` over the row groups in ``order`` (default: file order)."""
        order = range(len(self.row_group_rows)) if order is None else order
        for rg in order:
            if not self.row_group_rows[rg]:
                continue
            for rb in self._file.iter_batches(batch_size=rows, row_groups=[int(rg)],
                                              columns=self.columns):
                df = self._frame(rb)
                if len(df):
                    yield self.layout(df, rows), len(df)

    def _frame(self, rb) -> pd.DataFrame:
        df = _plain(rb.to_pandas())
        with warnings.catch_warnings():  # dropped rows were reported by the check pass
            warnings.simplefilter("ignore")
            return model_frame(df, self.columns, self.missing).data if len(df) else df

    def layout(self, df: pd.DataFrame, rows: int) -> StreamBatch:
        """The design of the rows of ``df`` (checked) padded to ``rows`` rows."""
        d, n = self.design, len(df)
        X = new_exog(d.fixed.spec, df)
        cols, vals = d.new_vc(df, unseen="raise")
        y = _response(df, self.response)
        t = np.ones(n) if self.n_trials is None else df[self.n_trials].to_numpy(np.float64)
        off = np.zeros(n) if self.offset is None else df[self.offset].to_numpy(np.float64)
        if self.exposure is not None:
            off = off + np.log(df[self.exposure].to_numpy(np.float64))
        pad = rows - n

        def p(x, value=0):
            return np.concatenate([x, np.full((pad,) + x.shape[1:], value, x.dtype)])

        return StreamBatch(p(y), p(X), p(cols.astype(np.int32)), p(vals), p(t, 1.0),
                           p(np.ones(n)), p(off))


def _plain(df: pd.DataFrame) -> pd.DataFrame:
    """Categorical (Parquet dictionary) columns as their values: each row group has its own
    dictionary, so the levels are the values met, sorted."""
    for c in df.columns:
        if isinstance(df[c].dtype, pd.CategoricalDtype):
            df[c] = df[c].astype(df[c].cat.categories.dtype)
    return df


def _response(df: pd.DataFrame, lhs: str) -> np.ndarray:
    """y (n,) float: the column, or the left-hand side expression evaluated by formulaic."""
    if lhs in df.columns:
        return df[lhs].to_numpy(np.float64)
    return np.asarray(formulaic.model_matrix(f"{lhs} ~ 1", df).lhs, np.float64).ravel()


def _column_arg(value, name: str) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise TypeError(f"{name} must be a column name of the Parquet file (str) for a streamed "
                    f"model, got {type(value).__name__}")


def open_parquet(path, family: Family, formula: str, vc_formulas: dict | None, *,
                 n_trials=None, offset=None, exposure=None, missing: str = "raise",
                 rows: int = 1 << 14) -> ParquetSource:
    """Check ``path`` in one pass and build the prototype design (see the module notes).

    Raises ``ImportError`` without pyarrow (the ``[parquet]`` extra), ``ValueError`` as the
    in-memory model for a column not in the file, NaN (``missing="raise"``), bad counts or
    trials, and ``TypeError`` for array arguments (only column names can be streamed).
    """
    try:
        import pyarrow.parquet as pq
    except ImportError as err:  # pragma: no cover - the [parquet] extra is in [test]
        raise ImportError("from_parquet needs pyarrow: pip install 'bayesglmm[parquet]'") \
            from err
    named = {k: _column_arg(v, k) for k, v in
             (("n_trials", n_trials), ("offset", offset), ("exposure", exposure))}
    if named["n_trials"] is not None and not isinstance(family, Binomial):
        raise ValueError("n_trials= applies to the binomial family only")
    if named["exposure"] is not None and not isinstance(family, Poisson):
        raise ValueError("exposure= applies to the Poisson family only; use offset=")
    if missing not in ("none", "raise", "drop"):
        raise ValueError(f"missing must be 'none', 'raise' or 'drop', got {missing!r}")
    pf = pq.ParquetFile(path)
    empty = _plain(pf.schema_arrow.empty_table().to_pandas())
    fixed_f, specs = glmm_specs(formula, vc_formulas)
    texts = [fixed_f] + [s.expr for s in specs]
    extra = [v for v in named.values() if v is not None]
    cols = used_columns(texts, empty, [f for s in specs for f in s.factors] + extra)
    stateful = [m.group(1) for t in texts for m in [_STATEFUL.search(t)] if m]
    if stateful:
        raise ValueError(f"{stateful[0]}() learns its state from the data it sees; a streamed "
                         "model cannot use it — transform the column in the file instead")
    lhs = fixed_f.split("~", 1)[0].strip()
    cat = {c for t in texts for c in _CALL.findall(t) if c in cols}
    cat |= {c for c in cols if not pd.api.types.is_numeric_dtype(empty[c])
            or pd.api.types.is_bool_dtype(empty[c])}
    cat |= {s.factors[0] for s in specs if len(s.factors) == 1}  # (1 | g), g numeric too
    cat.discard(lhs)
    groups = [tuple(s.factors) for s in specs if len(s.factors) > 1]  # (1 | a:b)
    keys = [(c,) for c in sorted(cat)] + groups
    seen: dict = {k: set() for k in keys}
    reps, nobs, ys = [], 0, set()
    for rb in pf.iter_batches(batch_size=rows, columns=cols):
        df = _plain(rb.to_pandas())
        if not len(df):
            continue
        df = model_frame(df, cols, missing, stacklevel=3).data
        _check_rows(family, df, lhs, named, ys)
        if not reps:
            reps.append(df.iloc[:256])  # numeric columns with their spread
        for k in keys:
            kv = pd.Series(group_keys(df, k) if len(k) > 1 else df[k[0]].to_numpy())
            new = np.flatnonzero(~kv.isin(seen[k]).to_numpy() & ~kv.duplicated().to_numpy())
            if len(new):
                reps.append(df.iloc[new])
                seen[k].update(kv.iloc[new].tolist())
        nobs += len(df)
    if nobs == 0:
        raise ValueError(f"{path} has no rows; a model needs data")
    if isinstance(family, Binomial) and named["n_trials"] is None and len(ys) == 1:
        raise ValueError(f"endog must contain both 0 and 1; all values are {ys.pop():g}")
    proto = pd.concat(reps, ignore_index=True)
    design = glmm_design(formula, vc_formulas, proto, extra=extra)
    md = pf.metadata
    return ParquetSource(str(path), family, cols, lhs, design, nobs,
                         [md.row_group(i).num_rows for i in range(md.num_row_groups)],
                         named["n_trials"], named["offset"], named["exposure"], missing, pf)


def _check_rows(family: Family, df: pd.DataFrame, lhs: str, named: dict, ys: set) -> None:
    """The in-memory model's checks of y, n_trials and exposure on one batch."""
    if lhs in df.columns and not pd.api.types.is_numeric_dtype(df[lhs]):
        return  # the prototype's fixed_design explains a non-numeric response
    y = _response(df, lhs)
    trials = None
    if named["n_trials"] is not None:
        trials = df[named["n_trials"]].to_numpy(np.float64)
        if np.any(trials < 1) or np.any(trials != np.round(trials)):
            raise ValueError("n_trials must be positive integers")
    if isinstance(family, Binomial) and trials is None:
        check_binary(y, "endog")  # "both 0 and 1" is checked on the whole file
        ys.update(np.unique(y).tolist())
    else:
        family.check_endog(y, trials)
    if named["exposure"] is not None and np.any(df[named["exposure"]].to_numpy(float) <= 0):
        raise ValueError("exposure must be positive")
