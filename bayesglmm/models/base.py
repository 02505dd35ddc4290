"""What the model classes share: input ingestion, the ``minim_opts`` dialect, and warnings
from a fit's status code.

``minim_opts`` (statsmodels' name) is a dict with any of

* ``maxiter``: most iterations of the (outer) optimiser;
* ``gtol``: stop when the gradient's ∞-norm is at most this;
* ``ftol``: ... or when the Newton decrement ½·gᵀH⁻¹g is at most ftol·(1 + |f|).

Each fit module supplies its defaults for the model's dtype; :func:`parse_minim_opts` applies
the dict to them, so the dialect is the same for ``fit_map``, ``fit_vb`` and ``fit_laplace``.
"""

from __future__ import annotations

import functools
import warnings
from typing import TYPE_CHECKING, NamedTuple, TypeVar

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from .._precision import precision, resolve_dtype
from .. import sharding as _sharding
from ..covariance import CorrBlock
from ..design import buckets as _buckets
from ..design.ellpack import REDesign, colors, design_layout, from_scipy, schur_component
from ..boundary import check_fit
from ..exceptions import ConvergenceWarning, IgnoredArgumentWarning, RankDeficientWarning
from ..families import Binomial, Family, Poisson
from ..fits.map import scale_columns, use_dense
from ..kernels.glmm import Data, Params, Prior, jitted_kernels
from ..quadrature import Rule, get_rule
from ..results.glmm import ParamLayout
from ..solvers.solution import STATUS_MESSAGES, OptimizeResult, Solution
from ..budgets import check_integrate, check_laplace
from ..checks import (aliased_columns, check_bool, check_int, check_number, check_start,
                      check_width, nan_rows, rank_message)
from ..validation import check_1d, check_2d, check_finite, check_ident, check_length

if TYPE_CHECKING:
    from collections.abc import Sequence

    import scipy.sparse as sp
    from numpy.typing import ArrayLike, DTypeLike

__all__ = ["GLMMInputs", "MixedGLMBase", "check_vb_start", "exog_arrays", "ingest_glmm",
           "optimize_result", "parse_method", "parse_minim_opts"]

MINIM_OPTS = ("maxiter", "gtol", "ftol")
# scipy's options that statsmodels passes on through minim_opts and that do not change what a
# fit estimates (printing, its line search and finite differences): warned about and ignored
SCIPY_ONLY_OPTS = ("disp", "return_all", "eps", "norm", "maxcor", "maxls", "maxfun", "iprint",
                   "finite_diff_rel_step", "xrtol", "c1", "c2", "xatol", "fatol", "adaptive")
_METHODS = {"newton": "newton", "trust-ncg": "newton", "newton-cg": "newton", "bfgs": "lbfgs",
            "l-bfgs": "lbfgs", "l-bfgs-b": "lbfgs", "lbfgs": "lbfgs"}


def _put(x: np.ndarray):
    """A numpy array on the device as it is (no conversion program is compiled)."""
    return jax.device_put(x)


def parse_method(name: str, auto: bool = False) -> str:
    """``"newton"`` or ``"lbfgs"`` from a method name (scipy's names accepted); ``"auto"`` too
    where ``auto``."""
    key = str(name).lower()
    if auto and key == "auto":
        return key
    if key not in _METHODS:
        first = "'auto' (default), 'newton'" if auto else "'newton' (default)"
        raise ValueError(f"unknown method {name!r}; use {first} or 'lbfgs'/'BFGS'")
    return _METHODS[key]


_Options = TypeVar("_Options", bound=NamedTuple)  # a fit's options (NewtonOptions, ...)


def parse_minim_opts(minim_opts: dict | None, defaults: _Options) -> _Options:
    """``defaults`` (a fit's options NamedTuple) with the entries of ``minim_opts`` applied."""
    if minim_opts is not None and not isinstance(minim_opts, dict):
        raise TypeError(f"minim_opts must be a dict such as {{'maxiter': 50}}, got "
                        f"{type(minim_opts).__name__}")
    opts = dict(minim_opts or {})
    for key in sorted(set(opts) & set(SCIPY_ONLY_OPTS)):
        warnings.warn(f"minim_opts[{key!r}] is an option of scipy's optimisers, which "
                      "bayesglmm's fits do not use: ignored", IgnoredArgumentWarning,
                      stacklevel=4)
        opts.pop(key)
    unknown = sorted(set(opts) - set(MINIM_OPTS))
    if unknown:
        raise ValueError(f"unknown minim_opts {unknown}; use maxiter, gtol, ftol")
    clean = {key: (check_int(val, f"minim_opts['{key}']") if key == "maxiter" else
                   check_number(val, f"minim_opts['{key}']", nonnegative=True))
             for key, val in opts.items()}
    return defaults._replace(**{key: type(getattr(defaults, key))(val)
                                for key, val in clean.items()})


def optimize_result(sol: Solution, what: str, *, counters: bool = True, stacklevel: int = 3):
    """An ``OptimizeResult`` (scipy's interface) for a host :class:`Solution`; a ``ConvergenceWarning``
    (naming ``what`` and the gradient norm) unless it converged.  ``counters``: include the
    Newton driver's work counters (``n_warm``, ``n_fev``, ``n_cg``)."""
    status = int(sol.status)
    if status != 0:
        warnings.warn(f"{what} fitting did not converge ({STATUS_MESSAGES[status]}), "
                      f"|gradient|={float(sol.grad_norm):.6g}", ConvergenceWarning,
                      stacklevel=stacklevel)
    out = OptimizeResult(success=status == 0, status=status, message=STATUS_MESSAGES[status],
                         fun=float(sol.value), nit=int(sol.n_iter),
                         grad_norm=float(sol.grad_norm))
    if counters:
        out.update(n_warm=int(sol.n_warm), n_fev=int(sol.n_fev), n_cg=int(sol.n_cg))
    return out


def check_vb_start(mean, sd, p: int):
    """``fit_vb``'s starting ``mean`` and ``sd`` (each None or of length p; sd positive)."""
    if mean is not None:
        if np.ndim(mean) != 1 or len(mean) != p:
            raise ValueError(f"mean has incorrect length, {np.size(mean)} != {p}")
        mean = check_start(mean, "mean", p)
    if sd is not None:
        if np.ndim(sd) != 1 or len(sd) != p:
            raise ValueError(f"sd has incorrect length, {np.size(sd)} != {p}")
        sd = check_start(sd, "sd", p)
        if np.any(sd <= 0):
            raise ValueError("sd must be positive")
    return mean, sd


def exog_arrays(endog, exog, exog_vc, fep_names, vc_names):
    """``(y, X, fep_names, cols, vals, k_vc, vc_names, named)`` from statsmodels' array
    arguments: exog_vc (dense, DataFrame or scipy.sparse) becomes ELLPACK arrays, never a
    dense n × k_vc matrix of ours; ``named`` when a DataFrame supplied names."""
    y = check_1d(endog, "endog")
    n = len(y)
    if n == 0:
        raise ValueError("endog is empty; a model needs at least one row of data")
    if exog is None:
        X = np.zeros((n, 0))
    else:
        X = check_2d(exog, "exog")
        check_length(n, X.shape[0], "exog")
    named = isinstance(exog, pd.DataFrame)
    if fep_names is None:
        fep_names = ([str(c) for c in exog.columns] if named
                     else [f"FE_{k + 1}" for k in range(X.shape[1])])
    if len(fep_names) != X.shape[1]:
        raise ValueError(f"fep_names has {len(fep_names)} names but exog has {X.shape[1]} "
                         "columns")
    if exog_vc is None:
        return y, X, fep_names, np.zeros((n, 1), np.int32), np.zeros((n, 1)), 0, vc_names, named
    if isinstance(exog_vc, pd.DataFrame):
        named = True
        if vc_names is None:
            vc_names = [str(c) for c in exog_vc.columns]
    import scipy.sparse as sp  # here: a formula model never needs it (0.15 s of start-up)

    if sp.issparse(exog_vc):
        mat = sp.csr_array(exog_vc)
        check_finite(mat.data, "exog_vc")
    else:
        mat = sp.csr_array(check_2d(np.asarray(exog_vc), "exog_vc"))
    check_length(n, mat.shape[0], "exog_vc")
    cols, vals, k_vc = from_scipy(mat)
    return y, X, fep_names, cols, vals, k_vc, vc_names, named


class GLMMInputs(NamedTuple):
    """A mixed GLM's validated inputs; :meth:`attributes` names them as the model's."""

    endog: np.ndarray  # (n,)
    exog: np.ndarray  # (n, k_fep)
    cols: np.ndarray  # (n, m) int32 ELLPACK columns of exog_vc (design.ellpack)
    vals: np.ndarray  # (n, m) its values
    ident: np.ndarray  # (k_vc,) int32 variance component of each random effect
    k_fep: int
    k_vcp: int  # log SDs, then correlation parameters
    k_vc: int
    k_sd: int  # log SDs among the k_vcp
    fep_names: list
    vcp_names: list
    vc_names: list | None
    vcp_p: float
    fe_p: float
    n_trials: np.ndarray | None  # (n,) binomial trials
    freq_weights: np.ndarray  # (n,)
    offset: np.ndarray  # (n,) offset, log(exposure) included
    nobs: int
    dtype: np.dtype
    vb_rule: Rule
    const: float  # the family's constant Σ w·log C(n, y) or −Σ w·log y!
    color: np.ndarray  # (k_vc,) colouring of Z's columns (design.ellpack.colors)
    n_colors: int
    design_mode: str | tuple  # how fit_laplace factors H_uu (design.ellpack.design_layout)
    re_blocks: np.ndarray | None  # (nb, q) H_uu's diagonal blocks' columns in the block mode
    corr: list  # (cols (G, q), sd_idx (q,), z_idx) per correlated term
    indep: np.ndarray  # (k_vc,) 1 for independent random effects, 0 in correlated terms

    def attributes(self) -> dict:
        """The model's attribute names: statsmodels' public ones, the others private."""
        return {(k if k in _PUBLIC else "_" + k): v for k, v in self._asdict().items()}


_PUBLIC = {"endog", "exog", "ident", "k_fep", "k_vcp", "k_vc", "fep_names", "vcp_names",
           "vc_names", "vcp_p", "fe_p", "n_trials", "freq_weights", "offset", "nobs", "dtype",
           "vb_rule"}


def ingest_glmm(family: Family, y, X, cols, vals, k_vc, ident, vcp_p, fe_p, fep_names,
                vcp_names, vc_names, n_trials, offset, exposure, freq_weights, dtype, vb_rule,
                corr=()) -> GLMMInputs:
    """Validate a mixed GLM's arrays (ELLPACK random-effects design ``cols``, ``vals``) and
    compute what every fit needs once: the colouring and the H_uu factorisation mode.

    ``corr``: per correlated term (from_formula's (1 + x | g)), ``(cols (G, q), sd_idx (q,),
    names of its correlation parameters)``; those parameters follow the log SDs in vcp.
    """
    n = len(y)
    if ident is None:
        if k_vc:
            raise ValueError("ident is required when exog_vc is given")
        ident = np.zeros(0, np.int32)
    ident = check_ident(ident, k_vc)
    k_sd = int(ident.max()) + 1 if k_vc else 0
    blocks, z0 = [], k_sd
    for bcols, sd_idx, znames in corr:
        blocks.append((np.asarray(bcols, np.int32), np.asarray(sd_idx, np.int32),
                       np.arange(z0, z0 + len(znames), dtype=np.int32)))
        z0 += len(znames)
    k_vcp = z0
    if vcp_names is None:
        vcp_names = [f"VC_{k + 1}" for k in range(k_vcp)]
    elif len(vcp_names) != k_vcp:
        raise ValueError(f"vcp_names has {len(vcp_names)} names but ident defines {k_vcp} "
                         "variance components")
    if vc_names is not None and len(vc_names) != k_vc:
        raise ValueError(f"vc_names has {len(vc_names)} names but exog_vc has {k_vc} columns")
    vcp_p = check_number(vcp_p, "vcp_p", positive=True)
    fe_p = check_number(fe_p, "fe_p", positive=True)
    trials = _check_trials(family, n_trials, n)
    family.check_endog(y, trials)
    w = np.ones(n) if freq_weights is None else check_1d(freq_weights, "freq_weights")
    check_length(n, len(w), "freq_weights")
    if np.any(w < 0):
        raise ValueError("freq_weights must be non-negative")
    if not np.any(w > 0):
        raise ValueError("freq_weights are all zero: no row counts, there is nothing to fit")
    _check_components(cols, vals, ident, k_sd, vcp_names)
    off = np.zeros(n) if offset is None else check_1d(offset, "offset")
    check_length(n, len(off), "offset")
    if exposure is not None:
        if not isinstance(family, Poisson) and family.name != "NegativeBinomial":
            raise ValueError("exposure= applies to the Poisson family only (and the negative "
                             "binomial); use offset=")
        ex = check_1d(exposure, "exposure")
        check_length(n, len(ex), "exposure")
        if np.any(ex <= 0):
            raise ValueError("exposure must be positive")
        off = off + np.log(ex)
    color, n_colors = colors(cols, vals, ident, k_vc)
    mode, re_blocks = design_layout(cols, vals, ident, [b[0] for b in blocks])
    indep = np.ones(k_vc)
    for bcols, _, _ in blocks:
        indep[bcols.ravel()] = 0.0
    return GLMMInputs(
        y, X, cols, vals, ident, X.shape[1], k_vcp, k_vc, k_sd, list(fep_names),
        list(vcp_names), None if vc_names is None else list(vc_names), float(vcp_p),
        float(fe_p), trials, w, off, n, resolve_dtype(dtype), get_rule(vb_rule),
        family.constant(y, 1.0 if trials is None else trials, w), color, n_colors,
        mode, re_blocks, blocks, indep)


def _pad_blocks(blocks: np.ndarray, k: int, k_pad: int) -> np.ndarray:
    """H_uu's blocks (design.ellpack.design_blocks: -1 in unused slots) for the design padded
    from k to k_pad columns: each padded column a block of its own, unused slots k_pad."""
    extra = np.full((k_pad - k, blocks.shape[1]), -1, np.int32)
    extra[:, 0] = np.arange(k, k_pad)
    out = np.concatenate([blocks, extra])
    return np.where(out < 0, k_pad, out).astype(np.int32)


def _check_components(cols, vals, ident, k_sd: int, vcp_names) -> None:
    """Raise when a variance component's random effects have no non-zero design value: its
    SD is not identified (the fit would report a non-finite covariance)."""
    if not k_sd:
        return
    k_vc = len(ident)
    unused = np.bincount(ident, minlength=k_sd) == 0
    if unused.any():
        raise ValueError(f"ident never uses variance component(s) "
                         f"{', '.join(str(c) for c in np.flatnonzero(unused))}; its values must "
                         f"be 0, 1, ..., {k_sd - 1} without gaps")
    nz = np.zeros(k_vc, bool)
    nz[np.asarray(cols)[np.asarray(vals) != 0]] = True
    empty = np.bincount(ident, weights=nz, minlength=k_sd) == 0
    if empty.any():
        bad = [repr(str(vcp_names[c])) for c in np.flatnonzero(empty)]
        raise ValueError(f"variance component {', '.join(bad)} has an all-zero design (its "
                         "covariate is zero in every row); its variance cannot be estimated — "
                         "remove it")


def _check_trials(family: Family, n_trials, n):
    if n_trials is None:
        return None
    if not isinstance(family, Binomial):
        raise ValueError("n_trials= applies to the binomial family only")
    t = check_1d(n_trials, "n_trials")
    check_length(n, len(t), "n_trials")
    if np.any(t < 1) or np.any(t != np.round(t)):
        raise ValueError("n_trials must be positive integers")
    return t


class MixedGLMBase:
    """The data side of the mixed GLM classes: validated inputs, device data, and the
    log posterior and ELBO at given parameters.  Parameters: see ``BinomialBayesMixedGLM``."""

    family: Family
    # from_formula's offset/exposure columns by argument, read from new data by predict
    _offset_cols: dict[str, str]
    # set from GLMMInputs.attributes() by _init_arrays (declared for type checkers)
    endog: np.ndarray
    exog: np.ndarray
    ident: np.ndarray
    k_fep: int
    k_vcp: int
    k_vc: int
    fep_names: list
    vcp_names: list
    vc_names: list | None
    vcp_p: float
    fe_p: float
    n_trials: np.ndarray | None
    freq_weights: np.ndarray
    offset: np.ndarray
    nobs: int
    dtype: np.dtype
    vb_rule: Rule
    _cols: np.ndarray
    _vals: np.ndarray
    _k_sd: int
    _const: float
    _color: np.ndarray
    _n_colors: int
    _design_mode: str | tuple
    _re_blocks: np.ndarray | None
    _corr: list
    _indep: np.ndarray
    _data_cache: dict
    _named: bool
    _formula: tuple | None
    _pad: bool

    def __init__(self, endog: ArrayLike, exog: ArrayLike | None,
                 exog_vc: ArrayLike | pd.DataFrame | sp.sparray | sp.spmatrix | None = None,
                 ident: ArrayLike | None = None, vcp_p: float = 1, fe_p: float = 2,
                 fep_names: Sequence[str] | None = None, vcp_names: Sequence[str] | None = None,
                 vc_names: Sequence[str] | None = None, *, n_trials: ArrayLike | None = None,
                 offset: ArrayLike | None = None, exposure: ArrayLike | None = None,
                 freq_weights: ArrayLike | None = None, dtype: DTypeLike | None = None,
                 vb_rule: str = "statsmodels") -> None:
        y, X, fep_names, cols, vals, k_vc, vc_names, named = exog_arrays(
            endog, exog, exog_vc, fep_names, vc_names)
        self._init_arrays(y, X, cols, vals, k_vc, ident, vcp_p, fe_p, fep_names, vcp_names,
                          vc_names, n_trials, offset, exposure, freq_weights, dtype, vb_rule)
        self._named = named

    # The formula path calls this directly with ELLPACK arrays built from factor codes.
    def _init_arrays(self, y, X, cols, vals, k_vc, ident, vcp_p, fe_p, fep_names, vcp_names,
                     vc_names, n_trials, offset, exposure, freq_weights, dtype, vb_rule,
                     corr=()):
        vars(self).update(ingest_glmm(
            self.family, y, X, cols, vals, k_vc, ident, vcp_p, fe_p, fep_names, vcp_names,
            vc_names, n_trials, offset, exposure, freq_weights, dtype, vb_rule, corr
        ).attributes())
        self._data_cache = {}
        self._named = False
        self._formula = None
        self._pad = _buckets.ENABLED  # whether fits run on padded arrays (design.buckets)

    def __getstate__(self) -> dict:
        """Pickle the inputs, not the device arrays: a JAX array unpickled outside
        ``precision(float64)`` would come back in float32 (the cache refills on first use)."""
        state = dict(vars(self))
        state["_data_cache"] = {}
        return state

    @property
    def names(self) -> list[str]:
        return self.fep_names + self.vcp_names + (self.vc_names or [])

    @property
    def layout(self) -> ParamLayout:
        """How ``params`` is packed and named."""
        return ParamLayout(self.k_fep, self._k_sd, self.k_vcp, self.k_vc, self.fep_names,
                           self.vcp_names, self.vc_names, self._named, self.family.n_disp)

    @property
    def re_design(self) -> REDesign:
        """The random-effects design as ELLPACK numpy arrays ``(cols, vals)``, each (n, m)."""
        return REDesign(self._cols, self._vals)  # type: ignore[arg-type]  # numpy, not jax

    @property
    def exog_vc(self) -> sp.csr_array:
        """The random-effects design as a scipy CSR array (built on request)."""
        n, m = self._cols.shape
        rows = np.repeat(np.arange(n), m)
        import scipy.sparse as sp

        return sp.csr_array((self._vals.ravel(), (rows, self._cols.ravel())), shape=(n, self.k_vc))

    def _bucket(self, fine: bool = False) -> _buckets.Buckets:
        """Real and padded numbers of rows and levels (design.buckets; ``fine`` for problems
        that are not small, see :meth:`_fine`)."""
        if not self._pad:
            return _buckets.Buckets(self.nobs, self.nobs, self.k_vc, self.k_vc)
        return _buckets.buckets(self.nobs, self.k_vc, fine)

    def _fine(self, n_params: int) -> bool:
        """Whether a fit with ``n_params`` parameters is not small (its Newton iteration uses
        the structured Hessian, fits.map.use_dense) and so runs in fine buckets."""
        return not use_dense(n_params, self.nobs)

    def _data(self, padded: bool = False, fine: bool = False, mesh=None) -> Data:
        """Device arrays in the model's dtype (cached), padded to the shape bucket
        (design.buckets, ``fine`` or coarse) when ``padded``: what the fits and kernels run on.
        With a ``mesh`` (bayesglmm.sharding.make_mesh) the rows are sharded over its devices
        (padded to a multiple of their number) and the level-wise arrays replicated."""
        dt = self.dtype
        key = (dt, padded, padded and fine) if mesh is None else (dt, padded, fine, mesh)
        if key not in self._data_cache:
            b = self._bucket(fine) if padded else _buckets.Buckets(self.nobs, self.nobs,
                                                                   self.k_vc, self.k_vc)
            n_pad = _sharding.padded_rows(b.n_pad, mesh)
            put = functools.partial(_sharding.replicate, mesh=mesh)  # level-wise: whole

            def rows(x, fill=0, dtype=dt):  # row-wise: split over the mesh (when one)
                return _sharding.put_rows(_buckets.pad(np.asarray(x, dtype), n_pad, fill), mesh)

            trials = np.ones(self.nobs) if self.n_trials is None else self.n_trials
            with precision(dt):
                self._data_cache[key] = Data(
                    y=rows(self.endog),
                    X=rows(self.exog),
                    Z=REDesign(rows(self._cols, dtype=np.int32), rows(self._vals)),
                    ident=put(_buckets.pad(np.asarray(self.ident, np.int32), b.k_pad,
                                           self._pad_component)),
                    n_trials=rows(trials, 1),
                    weights=rows(self.freq_weights),
                    offset=rows(self.offset),
                    const=put(np.asarray(self._const, dt)),
                    corr=tuple(CorrBlock(put(c), put(si), put(zi))
                               for c, si, zi in self._corr),
                    indep=(put(_buckets.pad(np.asarray(self._indep, dt), b.k_pad, 1))
                           if self._corr else None),
                    level_w=(put(_buckets.pad(np.ones(self.k_vc, dt), b.k_pad))
                             if padded and self._pad else None),
                    re_blocks=(None if self._re_blocks is None
                               else put(_pad_blocks(self._re_blocks, self.k_vc, b.k_pad))),
                )
        return self._data_cache[key]

    @property
    def _pad_component(self) -> int:
        """The variance component padded levels are assigned to: the one fit_laplace
        eliminates exactly in the Schur mode (its diagonal block), else the first."""
        c = schur_component(self._design_mode)
        return 0 if c is None else c

    def _padded_design(self, fine: bool = False) -> tuple[np.ndarray, str | tuple]:
        """The colouring and H_uu factorisation mode of the padded levels."""
        k_pad = self._bucket(fine).k_pad
        mode = self._design_mode
        if isinstance(mode, tuple) and schur_component(mode) is not None:
            # ("schur", c, k_c): padded levels join component c
            mode = (mode[0], mode[1], int(mode[2]) + k_pad - self.k_vc, *mode[3:])
        return _buckets.pad(np.asarray(self._color, np.int32), k_pad), mode

    def _prior(self) -> Prior:
        with precision(self.dtype):
            return Prior(_put(np.asarray(self.fe_p, self.dtype)),
                         _put(np.asarray(self.vcp_p, self.dtype)))

    def _params(self, vec, padded: bool = False, vc_fill: float = 0.0, fine: bool = False
                ) -> Params:
        """Params on the device from a vector packed like ``params``; with ``padded`` the
        random effects extended to the level bucket by ``vc_fill`` (for ``_data(True, fine)``)."""
        vec = np.asarray(vec, dtype=np.float64)
        p = self.k_fep + self.k_vcp + self.k_vc
        if vec.shape != (p,):
            raise ValueError(f"params must have shape ({p},), got {vec.shape}")
        kf, kp, dt = self.k_fep, self.k_vcp, self.dtype
        vc = vec[kf + kp:]
        if padded:
            vc = _buckets.pad(vc, self._bucket(fine).k_pad, vc_fill)
        with precision(dt):
            return Params(*(_put(np.asarray(x, dt)) for x in (vec[:kf], vec[kf:kf + kp], vc)))

    def _fit_data(self, scale_fe, fine: bool, mesh=None):
        """``(data, X, A)``: the padded device data (``fine`` or coarse bucket; rows sharded
        over ``mesh`` when given) with the fe columns scaled when ``scale_fe``
        (fits.map.scale_columns), its real rows of X (numpy) and the map back fe = A·fe_s (or
        None)."""
        data = self._data(padded=True, fine=fine, mesh=mesh)
        if not scale_fe or self.k_fep == 0:
            return data, self.exog, None
        Xs, A = scale_columns(self.exog)
        with precision(self.dtype):
            Xp = _sharding.put_rows(_buckets.pad(np.asarray(Xs, self.dtype),
                                                 _sharding.padded_rows(self._bucket(fine).n_pad,
                                                                       mesh)), mesh)
            return data._replace(X=Xp), Xs, A

    def _real(self, p: Params) -> np.ndarray:
        """A Params (padded levels) as a vector packed like ``params``."""
        return np.concatenate([np.asarray(p.fe, np.float64), np.asarray(p.vcp, np.float64),
                               np.asarray(p.vc, np.float64)[:self.k_vc]])

    def _no_corr(self, what):
        if self._corr:
            raise ValueError(
                f"{what} does not support correlated random effects such as (1 + x | g): the "
                "joint mode drives their variances to zero and the mean-field family has no "
                "closed-form expectation for them; use fit_laplace(), or uncorrelated terms "
                "(1 | g) + (0 + x | g)")

    # ------------------------------------------------------------------ checks before a fit
    def _aliased(self) -> list[int]:
        """Fixed-effect columns that are linear combinations of others (cached)."""
        if "_aliased_cols" not in vars(self):
            self._aliased_cols = aliased_columns(self.exog)
        return self._aliased_cols

    def _check_rank(self, what: str) -> None:
        """fit_map / fit_vb: a rank-deficient X warns, naming the aliased columns.  These fits
        are Bayesian: the prior N(0, fe_p²) on the fixed effects identifies aliased columns
        (their posterior is the prior along the aliased directions; statsmodels fits such
        models, and its own tests do), so the numbers are finite — but rarely what was meant."""
        dep = self._aliased()
        if dep:
            warnings.warn(f"{what}: {rank_message(self.exog, self.fep_names, dep)}; only the "
                          f"prior (fe_p = {self.fe_p:g}) identifies their coefficients "
                          "(fit_laplace(priors=False) drops them, as lme4 does)",
                          RankDeficientWarning, stacklevel=3)

    def _laplace_checks(self, priors, integrate, start):
        """``(priors, integrate, start, keep)`` for fit_laplace, checked before compiling
        (``integrate``: False, True, an int ≥ 2, the points per dimension of a product grid,
        or the design ``"ccd"`` / ``"grid"``):
        the model has random effects, the problem fits the method (budgets), ``start`` is
        finite.  ``keep``: with ``priors=False`` and a rank-deficient X, the fixed-effect
        columns kept (lme4 drops the aliased ones, with a RankDeficientWarning); else None."""
        priors = check_bool(priors, "priors")
        if isinstance(integrate, str):
            if integrate not in ("ccd", "grid"):
                raise ValueError(f"integrate must be True, False, an int ≥ 2 (points per "
                                 f"variance parameter), 'ccd' or 'grid'; got {integrate!r}")
        elif isinstance(integrate, (int, np.integer)) and not isinstance(integrate, (bool,
                                                                                  np.bool_)):
            integrate = check_int(integrate, "integrate", minimum=2)  # points per dimension
        else:
            integrate = check_bool(integrate, "integrate")
        check_laplace(self.k_vc, self._design_mode)
        if integrate:
            if not priors:
                raise ValueError("integrate=True needs priors=True (the vcp posterior must be "
                                 "proper)")
            check_integrate(self.k_vcp, self.k_vc, self.k_fep, self._design_mode,
                            n_points=integrate if type(integrate) is int else None)
        if start is not None:
            start = check_start(start, "start", self.k_fep + self.k_vcp)
        keep = None
        dep = self._aliased() if not priors else []
        if dep:
            names = ", ".join(repr(str(self.fep_names[j])) for j in dep)
            warnings.warn(f"fixed-effect model matrix is rank deficient so dropping {len(dep)} "
                          f"column(s): {names} (a linear combination of other columns or all "
                          "zero); their estimates are reported as NaN", RankDeficientWarning,
                          stacklevel=3)
            keep = [j for j in range(self.k_fep) if j not in dep]
            if start is not None:
                start = np.concatenate([start[keep], start[self.k_fep:]])
        return priors, integrate, start, keep

    def _drop_columns(self, data: Data, keep) -> Data:
        """``data`` with only the fixed-effect columns ``keep`` (None: all)."""
        if keep is None:
            return data
        with precision(self.dtype):
            return data._replace(X=data.X[:, np.asarray(keep)])

    def _restore_columns(self, fit, keep):
        """A fits.laplace.LaplaceFit on the columns ``keep`` with the dropped fixed effects put
        back as NaN (estimate, covariance rows and columns)."""
        if keep is None:
            return fit
        kf, k_a = self.k_fep, self.k_fep + self.k_vcp
        pos = np.concatenate([np.asarray(keep, int), np.arange(kf, k_a)])
        fe = np.full(kf, np.nan)
        fe[keep] = fit.fe
        a = np.full(k_a, np.nan)
        a[pos] = fit.solution.a
        cov = np.full((k_a, k_a), np.nan)
        cov[np.ix_(pos, pos)] = fit.cov
        return fit._replace(fe=fe, cov=cov, solution=fit.solution._replace(a=a))

    def _check_fit(self, retvals, params, variances, what: str, skip=(),
                   stacklevel: int = 4) -> list[str]:
        """BoundaryWarning for non-finite or unidentified estimates (bayesglmm.boundary);
        ``stacklevel`` 4 points at the caller of the method that calls this one."""
        k = self.k_fep + self.k_vcp
        names = list(self.fep_names) + list(self.vcp_names)
        est, var = np.asarray(params)[:k], np.asarray(variances)[:k]
        bad = check_fit(retvals, est, var, names, self.k_fep, what, skip, stacklevel=stacklevel)
        vc_ok = np.all(np.isfinite(np.asarray(params)[k:]))
        if not vc_ok and not bad:
            check_fit(retvals, np.asarray(params)[k:], np.asarray(variances)[k:],
                      self.vc_names or [f"VC_{j}" for j in range(self.k_vc)], 0, what,
                      stacklevel=stacklevel)
        return bad

    # ------------------------------------------------------------------ kernels
    def _kernel_args(self, *vecs, fills=(0.0, 1.0)):
        """Padded Params of each vector (random effects filled with ``fills``), then the
        padded data and the prior, for the jitted kernels (the bucket of a fit_map)."""
        fine = self._fine(self.k_fep + self.k_vcp + self.k_vc)
        params = [self._params(v, True, fill, fine) for v, fill in zip(vecs, fills)]
        return (*params, self._data(padded=True, fine=fine), self._prior())

    def logposterior(self, params: ArrayLike) -> float:
        """log p(y, fe, vcp, vc) up to the constants statsmodels also omits."""
        with precision(self.dtype):
            lp = jitted_kernels(self.family, self.vb_rule).logposterior
            return float(lp(*self._kernel_args(params)))

    def logposterior_grad(self, params: ArrayLike) -> np.ndarray:
        """Gradient of :meth:`logposterior` (autodiff), packed like ``params``."""
        with precision(self.dtype):
            g = jitted_kernels(self.family, self.vb_rule).logposterior_grad(
                *self._kernel_args(params))
            return self._real(g)

    def vb_elbo(self, vb_mean: ArrayLike, vb_sd: ArrayLike) -> float:
        """The mean-field ELBO at (vb_mean, vb_sd), each packed like ``params``.  Models with
        correlated terms ((1 + x | g)) have none: ValueError, as :meth:`fit_vb`."""
        self._no_corr("vb_elbo")
        with precision(self.dtype):
            el = jitted_kernels(self.family, self.vb_rule).elbo
            # padded levels at mean 0, sd 1, where their (inert) terms are 0
            return float(el(*self._kernel_args(vb_mean, vb_sd)))

    def vb_elbo_grad(self, vb_mean: ArrayLike, vb_sd: ArrayLike
                     ) -> tuple[np.ndarray, np.ndarray]:
        """Gradients of :meth:`vb_elbo` with respect to ``vb_mean`` and ``vb_sd``."""
        self._no_corr("vb_elbo_grad")
        with precision(self.dtype):
            gm, gs = jitted_kernels(self.family, self.vb_rule).elbo_grad(
                *self._kernel_args(vb_mean, vb_sd))
            return self._real(gm), self._real(gs)

    def predict(self, params: ArrayLike, exog: ArrayLike | None = None, linear: bool = False
                ) -> np.ndarray:
        """Mean of the fixed-effects part: ``exog @ params[:k_fep]`` (plus the model's offset
        when ``exog`` is omitted), through the inverse link unless ``linear``."""
        params = np.asarray(params, dtype=np.float64)
        if exog is None:
            lin = self.exog @ params[:self.k_fep] + self.offset
        else:
            try:
                ex = np.asarray(exog, dtype=np.float64)
            except (TypeError, ValueError) as err:
                raise ValueError(f"exog must be numeric: {err}") from None
            ex = ex[:, None] if ex.ndim == 1 else ex
            if len(params) >= max(self.k_fep, 2):  # a parameter vector, not (1,) on a column
                ex = check_width(ex, self.fep_names)
                nan_rows(ex, self.fep_names)
            lin = ex @ params[:ex.shape[1]]
        if linear:
            return lin
        with precision(np.float64):
            return np.asarray(self.family.mean(jnp.asarray(lin)))
