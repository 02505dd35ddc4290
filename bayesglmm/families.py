"""Likelihood families: the log-likelihood of a row given its linear predictor, and its
expectation under a normal linear predictor (for variational Bayes).

Each family is a frozen (hashable) object, so kernels close over it statically.  Rows carry a
number of trials ``n`` (binomial; 1 for 0/1 data) and a frequency weight ``w``; a row with
weight w counts as w identical rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
from scipy.special import gammaln

from .quadrature import Rule
from .validation import check_binary, check_counts

__all__ = ["Binomial", "Poisson", "Family"]


def _expect(h, tm, sd, rule: Rule):
    """E[h(tm + sd·z)], z ~ N(0, 1), by the quadrature ``rule``: one (n, k) broadcast that XLA
    fuses with the weighted sum over the k nodes."""
    x = jnp.asarray(rule.nodes, tm.dtype)
    w = jnp.asarray(rule.weights, tm.dtype)
    return h(tm[:, None] + sd[:, None] * x) @ w


@dataclass(frozen=True)
class Family:
    name: str = ""

    def loglik(self, y, eta, n, w):  # pragma: no cover - interface
        raise NotImplementedError

    def expected_loglik(self, y, tm, tv, n, w, rule):  # pragma: no cover - interface
        raise NotImplementedError

    def mean(self, eta, n=1.0):  # pragma: no cover - interface
        raise NotImplementedError

    def constant(self, y, n, w) -> float:  # pragma: no cover - interface
        raise NotImplementedError

    def check_endog(self, y, n, name="endog"):  # pragma: no cover - interface
        raise NotImplementedError


@dataclass(frozen=True)
class Binomial(Family):
    """Binomial with logit link: y successes out of n trials, log p = y·η − n·log(1 + e^η)."""

    name: str = "Binomial"

    def loglik(self, y, eta, n, w):
        return w * (y * eta - n * jax.nn.softplus(eta))

    def expected_loglik(self, y, tm, tv, n, w, rule):
        """E[loglik] with η ~ N(tm, tv): y·tm − n·E[softplus(η)] by quadrature."""
        return w * (y * tm - n * _expect(jax.nn.softplus, tm, jnp.sqrt(tv), rule))

    def mean(self, eta, n=1.0):
        return n * jax.nn.sigmoid(eta)

    def constant(self, y, n, w):
        """Σ w·log C(n, y): zero for 0/1 data."""
        return float(np.sum(w * (gammaln(n + 1) - gammaln(y + 1) - gammaln(n - y + 1))))

    def check_endog(self, y, n, name="endog"):
        if n is None:
            check_binary(y, name)
            if np.all(y == y[0]) and len(y) > 1:
                raise ValueError(f"{name} must contain both 0 and 1; all values are {y[0]:g}")
            return
        check_counts(y, name)
        if np.any(y > n):
            raise ValueError(f"{name} exceeds n_trials in {int((y > n).sum())} row(s)")


@dataclass(frozen=True)
class Poisson(Family):
    """Poisson with log link: log p = y·η − e^η − log y!."""

    name: str = "Poisson"

    def loglik(self, y, eta, n, w):
        return w * (y * eta - jnp.exp(eta))

    def expected_loglik(self, y, tm, tv, n, w, rule):
        """E[y·η − e^η] with η ~ N(tm, tv).  E[e^η] = exp(tm + tv/2) exactly; with the
        statsmodels rule the quadrature is used instead, to match statsmodels' ELBO."""
        if rule.name == "statsmodels":
            return w * (y * tm - _expect(jnp.exp, tm, jnp.sqrt(tv), rule))
        return w * (y * tm - jnp.exp(tm + 0.5 * tv))

    def mean(self, eta, n=1.0):
        return jnp.exp(eta)

    def constant(self, y, n, w):
        """−Σ w·log y!."""
        return float(-np.sum(w * gammaln(y + 1)))

    def check_endog(self, y, n, name="endog"):
        check_counts(y, name)
