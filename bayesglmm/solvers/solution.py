"""The optimisers' common result: the optimum, the work done and a status code."""

from __future__ import annotations

from typing import NamedTuple

import jax
import numpy as np

STATUS_MESSAGES = {
    0: "converged",
    1: "maximum number of iterations reached",
    2: "line search failed to decrease the objective",
    3: "non-finite objective or gradient",
}


class OptimizeResult(dict):
    """The optimiser's report as the user sees it: a dict whose keys are also attributes.

    The same interface as ``scipy.optimize.OptimizeResult`` (which statsmodels returns as
    ``optim_retvals``), without importing scipy.optimize (a quarter of a second) in every fit.
    """

    def __getattr__(self, name: str):
        try:
            return self[name]
        except KeyError as err:
            raise AttributeError(name) from err

    __setattr__ = dict.__setitem__  # type: ignore[assignment]
    __delattr__ = dict.__delitem__  # type: ignore[assignment]

    def __dir__(self) -> list[str]:
        return list(self.keys())

    def __repr__(self) -> str:
        if not self:
            return f"{type(self).__name__}()"
        width = max(map(len, self.keys())) + 1
        return "\n".join(f"{k.rjust(width)}: {v!r}" for k, v in self.items())


class Solution(NamedTuple):
    a: jax.Array  # (k_a,) small block at the optimum
    v: jax.Array  # (k_vc, r) large block at the optimum
    value: jax.Array  # () objective value
    grad_norm: jax.Array  # () norm of the gradient (Euclidean; fit_laplace: ∞-norm, free coords)
    n_iter: jax.Array  # () iterations taken (Newton: joint steps plus v-only warm-up steps)
    status: jax.Array  # () int: a key of STATUS_MESSAGES
    n_warm: jax.Array | int = 0  # () of n_iter, the v-only warm-up steps (Newton only)
    n_fev: jax.Array | int = 0  # () objective evaluations in line searches (Newton only)
    n_cg: jax.Array | int = 0  # () CG iterations, each one batched H_vv product (Newton only)

    def host(self) -> Solution:
        """The same on the host: float64 arrays, Python ints for the counters."""
        f64 = lambda x: np.asarray(x, np.float64)  # noqa: E731
        return Solution(f64(self.a), f64(self.v), f64(self.value), f64(self.grad_norm),
                        int(self.n_iter), int(self.status), int(self.n_warm), int(self.n_fev),
                        int(self.n_cg))
