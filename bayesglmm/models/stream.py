"""``StreamingBayesMixedGLM``: a Bayesian mixed GLM whose data stay in a Parquet file.

Made by ``BinomialBayesMixedGLM.from_parquet`` / ``PoissonBayesMixedGLM.from_parquet``.  The
constructor checks the file in one pass and builds the design's coding from a few rows per
level (design.stream); :meth:`StreamingBayesMixedGLM.fit_vb` maximises the same mean-field
ELBO as the in-memory ``fit_vb`` over minibatches read from the file (fits.vb_stream), in
memory O(batch + levels).  The result is the usual ``BayesMixedGLMResults``.  See
docs/out_of_core.md.
"""

from __future__ import annotations

import warnings

import numpy as np

from .._precision import resolve_dtype
from ..checks import check_int, check_number
from ..design.ellpack import colors
from ..design.stream import open_parquet
from ..exceptions import ConvergenceWarning
from ..families import Binomial, Family, Poisson
from ..fits.vb_stream import StreamOptions, fit_vb_stream
from ..progress import reporting
from ..quadrature import get_rule
from ..results.glmm import BayesMixedGLMResults, ParamLayout
from ..solvers.solution import STATUS_MESSAGES, OptimizeResult
from ..validation import check_random_state

__all__ = ["StreamingBayesMixedGLM", "from_parquet"]

DEFAULT_ROWS = 1 << 14  # batch size when none is given (faster per row than 2^16 on CPU)


class StreamingBayesMixedGLM:
    """A mixed GLM (binomial or Poisson) fitted out of core from a Parquet file.

    Use ``BinomialBayesMixedGLM.from_parquet`` or ``PoissonBayesMixedGLM.from_parquet``.
    Attributes as the in-memory model's: ``family``, ``k_fep``, ``k_vcp``, ``k_vc``,
    ``fep_names``, ``vcp_names``, ``vc_names``, ``ident``, ``nobs``, ``vcp_p``, ``fe_p``,
    ``dtype``, ``vb_rule``; ``path`` and ``batch_rows``.  The rows are never held: ``endog``
    and ``exog`` are not available, and ``fit_map``/``fit_laplace`` are in-memory only.
    """

    def __init__(self, family: Family, path: str, formula: str, vc_formulas: dict | None, *,
                 n_trials: str | None = None, offset: str | None = None,
                 exposure: str | None = None, vcp_p: float = 1, fe_p: float = 2,
                 batch_rows: int | None = None, missing: str = "raise", dtype: object = None,
                 vb_rule: str = "statsmodels") -> None:
        if type(family) not in (Binomial, Poisson):
            raise ValueError(f"from_parquet supports the binomial and Poisson families, not "
                             f"{family.name}; fit it in memory (from_formula)")
        self.family = family
        self.batch_rows = DEFAULT_ROWS if batch_rows is None else check_int(
            batch_rows, "batch_rows", minimum=1)
        self.vcp_p = check_number(vcp_p, "vcp_p", positive=True)
        self.fe_p = check_number(fe_p, "fe_p", positive=True)
        self.dtype = resolve_dtype(dtype)
        self.vb_rule = get_rule(vb_rule)
        src = open_parquet(path, family, formula, vc_formulas, n_trials=n_trials,
                           offset=offset, exposure=exposure, missing=missing,
                           rows=self.batch_rows)
        d = src.design
        if d.corr:
            raise ValueError("fit_vb does not support correlated random effects (1 + x | g); "
                             "use (1 + x || g) for independent ones")
        self.source, self.path = src, str(path)
        self.nobs, self.k_fep, self.k_vc = src.nobs, len(d.fixed.xnames), d.k_vc
        self.ident = np.asarray(d.ident, np.int32)
        self.k_vcp = int(self.ident.max()) + 1 if self.k_vc else 0
        self.fep_names, self.vcp_names, self.vc_names = (list(d.fixed.xnames),
                                                         list(d.vcp_names), list(d.vc_names))
        self.endog_name = d.fixed.yname
        self._formula = (formula, dict(vc_formulas or {}), d)
        # one colour per variance component when no row has two levels of one (factors)
        self._color, self._n_colors = colors(d.cols, d.vals, self.ident, self.k_vc)

    @property
    def layout(self) -> ParamLayout:
        return ParamLayout(self.k_fep, self.k_vcp, self.k_vcp, self.k_vc, self.fep_names,
                           self.vcp_names, self.vc_names, True)

    @property
    def exog(self) -> np.ndarray:
        raise ValueError("the rows of a streamed model stay in its Parquet file; pass new "
                         "data as a DataFrame (e.g. result.predict(df))")

    endog = offset = exog

    def predict(self, params: np.ndarray, exog: np.ndarray, linear: bool = False
                ) -> np.ndarray:
        """Linear predictor ``exog @ params[:k]`` or the mean (inverse link)."""
        lin = np.asarray(exog, np.float64) @ np.asarray(params, np.float64)[:exog.shape[1]]
        return lin if linear else np.asarray(self.family.mean(lin))

    def fit_vb(self, epochs: int = 2, batch_rows: int | None = None,
               learning_rate: float = 0.1, rng: object = None, progress: object = False,
               max_passes: int = 30, tol: float | None = None) -> BayesMixedGLMResults:
        """Mean-field variational Bayes over minibatches streamed from the file.

        Parameters
        ----------
        epochs : int
            Stochastic epochs (Adam on the minibatch ELBO scaled to the full data, the step
            size decaying by 0.3 per epoch, the last epoch's iterates averaged) before the
            full passes; 0 goes to them at once.
        batch_rows : int, optional
            Rows per minibatch (default: the model's, 16,384); every batch is padded to it.
        learning_rate : float
            Adam's step size in the first epoch.
        rng : None, int or Generator
            The order of the row groups in each epoch.
        progress : bool or bayesglmm.progress.Progress
            Report each epoch and full pass on stderr.
        max_passes : int
            Full passes over the file (one exact Newton step each) at most.
        tol : float, optional
            Stop when a Newton step's largest component is at most ``tol`` (default 1e-6 in
            float64, 1e-3 in float32).

        Returns
        -------
        BayesMixedGLMResults
            ``method="vb"``; ``optim_retvals`` has ``nit`` (full passes), ``n_epochs``,
            ``n_steps`` (stochastic steps) and ``svi_params`` (the means before the passes).
        """
        rows = self.batch_rows if batch_rows is None else check_int(batch_rows, "batch_rows",
                                                                     minimum=1)
        opts = StreamOptions(check_int(epochs, "epochs", minimum=0),
                             check_number(learning_rate, "learning_rate", positive=True),
                             max_passes=check_int(max_passes, "max_passes", minimum=1),
                             tol=None if tol is None else check_number(tol, "tol", positive=True))
        rs = check_random_state(rng)
        gen = rs if isinstance(rs, np.random.Generator) else np.random.default_rng(
            rs.randint(2**31))
        with reporting(progress, "fit_vb (stream)"):
            fit = fit_vb_stream(self.family, self.vb_rule, self.source,
                                self.fe_p, self.vcp_p, ident=self.ident,
                                color=self._color, n_colors=self._n_colors, k_fep=self.k_fep,
                                k_vcp=self.k_vcp, rows=rows, rng=gen, dtype=self.dtype,
                                opts=opts, progress=progress is not False)
        sol = fit.solution
        status = int(sol.status)
        if status != 0:
            warnings.warn(f"VB (streamed) fitting did not converge ({STATUS_MESSAGES[status]}"
                          f"), |gradient|={float(sol.grad_norm):.6g}", ConvergenceWarning,
                          stacklevel=2)
        retvals = OptimizeResult(success=status == 0, status=status,
                                 message=STATUS_MESSAGES[status], fun=float(sol.value),
                                 nit=sol.n_iter, grad_norm=float(sol.grad_norm), x=fit.x,
                                 method="stream", n_epochs=fit.n_epochs, n_steps=fit.n_steps,
                                 svi_params=fit.svi_params)
        return BayesMixedGLMResults(self, fit.params, fit.variances, retvals, method="vb")

    def __repr__(self) -> str:
        return (f"<StreamingBayesMixedGLM ({self.family.name}) {self.path}: {self.nobs} rows, "
                f"{self.k_fep} fixed effects, {self.k_vc} random effects>")


def from_parquet(family: Family, path: str, formula: str, vc_formulas: dict | None = None,
                 **kwargs) -> StreamingBayesMixedGLM:
    """A :class:`StreamingBayesMixedGLM` (see ``BinomialBayesMixedGLM.from_parquet``)."""
    return StreamingBayesMixedGLM(family, path, formula, vc_formulas, **kwargs)
