"""Likelihood families: the log-likelihood of a row given its linear predictor, and its
expectation under a normal linear predictor (for variational Bayes).

Each family is a frozen (hashable) object, so kernels close over it statically.  Rows carry a
number of trials ``n`` (binomial; 1 for 0/1 data) and a frequency weight ``w``; a row with
weight w counts as w identical rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from scipy.special import gammaln

from .quadrature import Rule
from .validation import check_binary, check_counts

__all__ = ["Binomial", "Family", "Poisson"]


@jax.custom_jvp
def softplus(x):
    """log(1 + eˣ) = max(x, 0) + log1p(e^{−|x|}): stable for any x, and on CPU several times
    faster than ``jax.nn.softplus`` (whose logaddexp guards against infinities).  Its
    derivative is the logistic sigmoid."""
    return jnp.maximum(x, 0) + jnp.log1p(jnp.exp(-jnp.abs(x)))


@softplus.defjvp
def _softplus_jvp(primals, tangents):
    (x,), (dx,) = primals, tangents
    return softplus(x), (0.5 + 0.5 * jnp.tanh(0.5 * x)) * dx


def _sqrt(v):
    """√v with derivative 0 (not ∞) at v = 0: rows whose linear predictor has no variance
    under q (padded rows, design.buckets) then add 0, not 0·∞ = NaN, to the gradient."""
    pos = v > 0
    return jnp.where(pos, jnp.sqrt(jnp.where(pos, v, 1.0)), 0.0)


def _expect(h, tm, sd, rule: Rule):
    """E[h(tm + sd·z)], z ~ N(0, 1), by the quadrature ``rule``: one (n, k) broadcast that XLA
    fuses with the weighted sum over the k nodes (written as a sum, not ``@ w``: a dot is not
    fused and costs ~5× more on CPU)."""
    x = jnp.asarray(rule.nodes, tm.dtype)
    w = jnp.asarray(rule.weights, tm.dtype)
    return jnp.sum(h(tm[:, None] + sd[:, None] * x) * w, axis=1)


def _sigma_polys(K: int) -> list[np.ndarray]:
    """Coefficients (in powers of σ) of the k-th derivative of softplus, k = 1..K:
    h₁ = σ and h_{k+1} = h_k'(σ)·σ(1 − σ), since dσ/dx = σ(1 − σ)."""
    P = np.polynomial.polynomial
    polys = [np.array([0.0, 1.0])]
    for _ in range(K - 1):
        polys.append(P.polymul(P.polyder(polys[-1]), [0.0, 1.0, -1.0]))
    return polys[:K]


def _moments(K: int, rule: Rule, m, v):
    """E[softplus⁽ᵏ⁾(m + √v·z)] for k = 0..K, shape (K + 1, n): softplus and its derivatives
    (polynomials in σ) on the (n, nodes) grid, summed over the nodes in one variadic reduce.

    One exponential per grid point serves both: with e = exp(−|x|), softplus(x) =
    max(x, 0) + log1p(e) and σ(x) = (1 if x ≥ 0 else e)/(1 + e).  Separate sums (one per
    moment) would each recompute the grid (a transcendental per point and moment); this costs
    about half as much for K = 2 and 4 on CPU and never materialises an (n, nodes) array."""
    x = m[:, None] + jnp.sqrt(v)[:, None] * jnp.asarray(rule.nodes, m.dtype)
    w = jnp.asarray(rule.weights, m.dtype)
    e = jnp.exp(-jnp.abs(x))
    terms = [(jnp.maximum(x, 0) + jnp.log1p(e)) * w]
    if K >= 1:
        sig = jnp.where(x >= 0, 1.0, e) / (1.0 + e)
        for c in _sigma_polys(K):
            h = jnp.zeros_like(sig) + c[-1]
            for ci in c[-2::-1]:  # Horner, unrolled so that XLA fuses it into one loop
                h = h * sig + ci
            terms.append(h * w)
    zeros = tuple(jnp.zeros((), m.dtype) for _ in terms)
    sums = lax.reduce(tuple(terms), zeros, lambda p, q: tuple(a + b for a, b in zip(p, q)), (1,))
    return jnp.stack(sums)


@partial(jax.custom_jvp, nondiff_argnums=(0, 1))
def softplus_moments(K: int, rule: Rule, m, v):
    """E[softplus⁽ᵏ⁾(m + √v·z)], k = 0..K, z ~ N(0, 1), by quadrature, as functions of the
    mean m and variance v of the argument; shape (K + 1, n).

    Derivatives follow the Gaussian (Stein/Price) identities ∂/∂m E[h] = E[h'] and
    ∂/∂v E[h] = ½·E[h''], so the JVP of moments 0..K is moments 1..K+2 — again one pass over
    the grid, shared by all tangents.  Differentiating through the rule instead would carry each
    tangent through every node (k_a + 2 tangents × n × nodes in a Newton step) and is singular
    at v = 0 through √v.
    """
    return _moments(K, rule, m, v)


@softplus_moments.defjvp
def _softplus_moments_jvp(K, rule, primals, tangents):
    m, v = primals
    dm, dv = tangents
    ext = softplus_moments(K + 2, rule, m, v)
    return ext[:K + 1], ext[1:K + 2] * dm + 0.5 * ext[2:K + 3] * dv


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
        return w * (y * eta - n * softplus(eta))

    def expected_loglik(self, y, tm, tv, n, w, rule):
        """E[loglik] with η ~ N(tm, tv): y·tm − n·E[softplus(η)] by quadrature.

        With statsmodels' rule the expectation is differentiated through the rule, as
        statsmodels does; otherwise through the Gaussian identities (``softplus_moments``)."""
        if rule.name == "statsmodels":
            return w * (y * tm - n * _expect(softplus, tm, _sqrt(tv), rule))
        return w * (y * tm - n * softplus_moments(0, rule, tm, tv)[0])

    def mean(self, eta, n=1.0):
        return n * jax.nn.sigmoid(eta)

    def constant(self, y, n, w):
        """Σ w·log C(n, y): zero for 0/1 data."""
        return float(np.sum(w * (gammaln(n + 1) - gammaln(y + 1) - gammaln(n - y + 1))))

    def check_endog(self, y, n, name="endog"):
        if n is None:
            check_binary(y, name)
            if len(y) > 1 and np.all(y == y[0]):
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
            return w * (y * tm - _expect(jnp.exp, tm, _sqrt(tv), rule))
        return w * (y * tm - jnp.exp(tm + 0.5 * tv))

    def mean(self, eta, n=1.0):
        return jnp.exp(eta)

    def constant(self, y, n, w):
        """−Σ w·log y!."""
        return float(-np.sum(w * gammaln(y + 1)))

    def check_endog(self, y, n, name="endog"):
        check_counts(y, name)
