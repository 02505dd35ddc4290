"""The parts of statsmodels' ``MixedLM`` that code written for it reads from a model.

:class:`StatsmodelsModelMixin` gives :class:`~bayesglmm.MixedLM` statsmodels' attributes
(``data``, ``groups``, ``group_labels``, ``n_groups``, ``row_indices``, ``exog_re``, ``k_re``,
``k_vc``, ``use_sqrt``, ``reml``) and methods: ``loglike``, ``score``, ``hessian`` and
``get_fe_params`` on statsmodels' packed parameters (:mod:`bayesglmm.kernels.lmm_psi`: the
derivatives are ``jax.grad``/``jax.hessian``), ``predict`` (the fixed part) and
``get_distribution`` (simulation from the model).
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import pandas as pd

from .lmm_params import MixedLMParams, as_components

if TYPE_CHECKING:
    from numpy.typing import ArrayLike

    from ..results.lmm import MixedLMResults
    from .lmm import MixedLM
    from .lmm_regularized import Penalty

__all__ = ["ModelData", "StatsmodelsModelMixin"]


class ModelData:
    """statsmodels' ``model.data``: names, the original data and its row labels."""

    def __init__(self, model):
        d = model.design
        self.xnames = list(d.xnames)
        self.ynames = d.yname
        self.endog, self.exog = d.y, d.X
        self.frame = model._frame
        self.row_labels = model._row_labels
        self.exog_re_names = model._re_names()
        self.exog_re_names_full = model._re_names_full()
        self.param_names = self.xnames + self.exog_re_names_full
        self.exog_vc_names = model._vc_names()

    @property
    def cov_names(self):
        return self.param_names


class StatsmodelsModelMixin:
    """statsmodels' model attributes and methods (mixed into :class:`~bayesglmm.MixedLM`)."""

    design: Any  # provided by MixedLM: its formula.lmm design and θ-block layout
    _blocks: list
    k_fe: int

    if TYPE_CHECKING:  # provided by MixedLM
        def _crossprod(self, dtype: Any, sparse: Any = None, mesh: Any = None) -> Any: ...

    # ------------------------------------------------------------------ layout
    @functools.cached_property
    def _re_term(self):
        """The term ``cov_re`` describes (statsmodels' ``groups`` random effects), or None."""
        d = self.design
        if d.groups_term is not None:
            return d.terms[d.groups_term]
        return next((t for t in d.terms if t.kind != "vc"), None)

    @property
    def k_re(self) -> int:
        return 0 if self._re_term is None else self._re_term.q

    @property
    def k_re2(self) -> int:
        return self.k_re * (self.k_re + 1) // 2

    @property
    def k_vc(self) -> int:
        return sum(int(kind == "vc") for kind, _ in self._blocks)

    def _re_names(self):
        return [] if self._re_term is None else list(self._re_term.cols)

    def _re_names_full(self):
        names = self._re_names()
        full = [f"{names[i]} Var" if i == j else f"{names[j]} x {names[i]} Cov"
                for i in range(len(names)) for j in range(i + 1)]
        return full + [f"{v} Var" for v in self._vc_names()]

    def _vc_names(self):
        seen = []
        for t in self.design.terms:
            if t.kind == "vc" and t.tkey[3:] not in seen:
                seen.append(t.tkey[3:])
        return seen

    @functools.cached_property
    def data(self) -> ModelData:
        return ModelData(self)

    @property
    def groups(self) -> np.ndarray:
        g = self.design.group_labels
        return np.asarray(g) if g is not None else np.asarray(self._re_term.index)[
            self._re_term.codes]

    @functools.cached_property
    def group_labels(self) -> list:
        return list(pd.unique(np.sort(self.groups)))

    @property
    def n_groups(self) -> int:
        return len(self.group_labels)

    @functools.cached_property
    def row_indices(self) -> dict:
        g = self.groups
        return {lab: np.flatnonzero(g == lab) for lab in self.group_labels}

    @property
    def exog_re(self) -> np.ndarray | None:
        return None if self._re_term is None else self._re_term.z

    # ------------------------------------------------------------------ statsmodels' ψ
    def _layout(self):
        from ..kernels.lmm_psi import Layout

        non_vc = [b for b in self._blocks if b[0] != "vc"]
        if len(non_vc) > 1:
            raise ValueError(
                "statsmodels' parameter layout (cov_re of `groups` and variance components) "
                f"does not describe this model: it has {len(non_vc)} correlated random terms")
        shift = np.zeros(self.k_fe)
        self._crossprod(np.float64)  # sets _yshift
        if self._yshift:
            shift[int(np.flatnonzero(np.all(self.design.X == 1.0, axis=0))[0])] = self._yshift
        blocks = tuple((kind, tuple(int(v) for v in ti.ravel()), ti.shape[0])
                       for kind, ti in self._blocks)
        return Layout(self.k_fe, self.k_re, blocks, tuple(float(s) for s in shift))

    def _packed(self, params, profile_fe, use_sqrt=None):
        """statsmodels' packed vector (fe first unless ``profile_fe``) from params."""
        use_sqrt = self.use_sqrt if use_sqrt is None else use_sqrt
        if hasattr(params, "cov_re"):
            fe, cov, vc = as_components(params, self.k_fe, self.k_re, use_sqrt)
            p = MixedLMParams.from_components(fe, cov_re=cov, vcomp=vc)
            if not profile_fe and fe is None:
                raise ValueError("params has no fe_params; pass profile_fe=True")
            return p.get_packed(use_sqrt, has_fe=not profile_fe)
        x = np.asarray(params, np.float64).ravel()
        n_cov = self.k_re2 + self.k_vc
        if x.shape[0] == self.k_fe + n_cov and profile_fe:
            x = x[self.k_fe :]  # statsmodels reads a packed vector without fe here
        want = n_cov + (0 if profile_fe else self.k_fe)
        if x.shape[0] != want:
            raise ValueError(f"params must have {want} values, got {x.shape[0]}")
        return x

    def _psi_eval(self, fn, params, profile_fe, use_sqrt=None):
        import jax.numpy as jnp

        from .._precision import precision

        use_sqrt = self.use_sqrt if use_sqrt is None else use_sqrt
        x = self._packed(params, profile_fe, use_sqrt)
        with precision(np.float64):
            cp, st = self._crossprod(np.float64)
            return np.asarray(fn(jnp.asarray(x), cp, st, self._layout(), bool(self.reml),
                                 bool(profile_fe), bool(use_sqrt)))

    def loglike(self, params: MixedLMParams | ArrayLike, profile_fe: bool = True) -> float:
        """statsmodels' log-likelihood (REML if the last fit was) at ``params``: a
        :class:`MixedLMParams` or a packed vector; σ² is profiled out, and β too with
        ``profile_fe`` (then β̂ is the GLS estimate at the covariances)."""
        from ..kernels.lmm_psi import loglike

        return float(self._psi_eval(loglike, params, profile_fe))

    def score(self, params: MixedLMParams | ArrayLike, profile_fe: bool = True) -> np.ndarray:
        """Gradient of :meth:`loglike` over the packed vector (``use_sqrt`` layout), by
        ``jax.grad``; without the fixed effects when ``profile_fe``."""
        from ..kernels.lmm_psi import loglike_score

        return np.array(self._psi_eval(loglike_score, params, profile_fe))

    def hessian(self, params: MixedLMParams | ArrayLike) -> tuple[np.ndarray, bool]:
        """``(H, singular)``: the Hessian of :meth:`loglike` (β not profiled) over
        ``[fe_params, cov_re[tril], vcomp]`` (``use_sqrt=False``), by ``jax.hessian``."""
        from ..kernels.lmm_psi import loglike_hessian

        h = np.array(self._psi_eval(loglike_hessian, params, False, use_sqrt=False))
        ok = np.all(np.isfinite(h))
        sing = not ok or np.linalg.matrix_rank(h) < h.shape[0]
        return h, bool(sing)

    def get_fe_params(self, cov_re: ArrayLike, vcomp: ArrayLike, tol: float = 1e-10
                      ) -> tuple[np.ndarray, bool]:
        """``(β̂, singular)``: the GLS fixed effects at the relative covariances."""
        import jax.numpy as jnp

        from .._precision import precision
        from ..kernels.lmm_psi import fe_hat

        p = MixedLMParams.from_components(None, cov_re=np.reshape(cov_re, (self.k_re,) * 2),
                                          vcomp=vcomp)
        x = p.get_packed(use_sqrt=False)
        with precision(np.float64):
            cp, st = self._crossprod(np.float64)
            beta, txx = fe_hat(jnp.asarray(x), cp, st, self._layout(), False)
        sing = np.linalg.cond(np.asarray(txx)) > 1 / tol
        return np.asarray(beta), bool(sing)

    def fit_regularized(self, start_params: ArrayLike | MixedLMParams | None = None,
                        method: str | Penalty = "l1", alpha: float | ArrayLike = 0,
                        ceps: float = 1e-4, ptol: float = 1e-6, maxit: int = 200,
                        **fit_kwargs: Any) -> MixedLMResults:
        """L1-penalised (or ``method``-penalised) fixed effects, as statsmodels; see
        :func:`bayesglmm.models.lmm_regularized.fit_regularized`."""
        from .lmm_regularized import fit_regularized

        return fit_regularized(cast("MixedLM", self), start_params, method, alpha, ceps, ptol,
                               maxit, **fit_kwargs)

    # ------------------------------------------------------------------ prediction, simulation
    def predict(self, params: MixedLMParams | ArrayLike, exog: ArrayLike | None = None
                ) -> np.ndarray:
        """The fixed part ``exog @ fe_params`` (statsmodels' ``MixedLM.predict``); ``params``
        a :class:`MixedLMParams`, or a vector whose first ``k_fe`` values are the fixed
        effects."""
        X = self.design.X if exog is None else np.asarray(exog, np.float64)
        fe = params.fe_params if hasattr(params, "fe_params") else np.asarray(params)[: self.k_fe]
        return X @ np.asarray(fe, np.float64)

    def get_distribution(self, params: MixedLMParams | ArrayLike, scale: float,
                         exog: ArrayLike | None = None) -> _Distribution:
        """A simulator of the response at ``params`` (packed with fixed effects, covariances
        relative to ``scale``) and residual variance ``scale``; ``.rvs(n=None, rng=None)``."""
        return _Distribution(self, params, float(scale), exog)


class _Distribution:
    """y = Xβ + Σ_terms z·b[level] + ε, b ~ N(0, scale · ψ), ε ~ N(0, scale)."""

    def __init__(self, model, params, scale, exog):
        fe, cov, vc = as_components(params, model.k_fe, model.k_re, False, has_fe=True)
        self.model, self.fe, self.cov, self.vc, self.scale = model, fe, cov, vc, scale
        self.exog = model.design.X if exog is None else np.asarray(exog, np.float64)

    def rvs(self, n: int | None = None,
            rng: int | np.random.Generator | np.random.RandomState | None = None
            ) -> np.ndarray:
        """One draw of the response (``n`` is ignored: the model's rows, as statsmodels)."""
        rng = np.random.default_rng(rng) if not isinstance(rng, np.random.RandomState) else rng
        y = self.exog @ self.fe
        k = 0
        vc_index = {name: i for i, name in enumerate(self.model._vc_names())}
        for t in self.model.design.terms:
            if t.kind == "vc":
                v = self.vc[vc_index[t.tkey[3:]]] * self.scale
                b = np.sqrt(max(v, 0.0)) * rng.standard_normal((t.n_levels, 1))
            else:
                c = self.scale * np.asarray(self.cov)[: t.q, : t.q]
                if t.kind == "diag":
                    c = np.diag(np.diag(c))
                w, u = np.linalg.eigh(c)
                b = rng.standard_normal((t.n_levels, t.q)) @ (u * np.sqrt(np.clip(w, 0, None))).T
                k += 1
            y = y + np.einsum("nq,nq->n", t.z, b[t.codes])
        return y + np.sqrt(self.scale) * rng.standard_normal(len(y))
