"""Likelihood families: the log-likelihood of a row given its linear predictor, and its
expectation under a normal linear predictor (for variational Bayes).

Each family is a frozen (hashable) object, so kernels close over it statically.  Rows carry a
number of trials ``n`` (binomial; 1 for 0/1 data) and a frequency weight ``w``; a row with
weight w counts as w identical rows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from .quadrature import Rule
from .validation import check_binary, check_counts

__all__ = ["Binomial", "Family", "Log", "Logit", "NegativeBinomial", "Poisson"]


class Logit:
    """The logit link g(μ) = log(μ / (1 − μ)) on numpy arrays, with statsmodels' method names
    (``family.link.inverse(eta)``: the mean of a linear predictor)."""

    def __call__(self, mu):
        mu = np.asarray(mu, dtype=np.float64)
        return np.log(mu) - np.log1p(-mu)

    def inverse(self, eta):
        eta = np.asarray(eta, dtype=np.float64)
        return np.exp(-np.logaddexp(0.0, -eta))  # 1 / (1 + e^−η), without overflow

    def deriv(self, mu):
        mu = np.asarray(mu, dtype=np.float64)
        return 1.0 / (mu * (1.0 - mu))

    def inverse_deriv(self, eta):
        e = np.exp(-np.abs(np.asarray(eta, dtype=np.float64)))  # μ(1 − μ), symmetric in η
        return e / (1.0 + e) ** 2


class Log:
    """The log link g(μ) = log μ on numpy arrays, with statsmodels' method names."""

    def __call__(self, mu):
        return np.log(np.asarray(mu, dtype=np.float64))

    def inverse(self, eta):
        return np.exp(np.asarray(eta, dtype=np.float64))

    def deriv(self, mu):
        return 1.0 / np.asarray(mu, dtype=np.float64)

    def inverse_deriv(self, eta):
        return self.inverse(eta)


def _lgamma(x) -> np.ndarray:
    """log Γ(x) elementwise on the host, for the log-likelihood constants.

    Counts and trial sizes are small integers: a table of ``math.lgamma`` serves them, so a
    fit need not import scipy.special (0.1-0.2 s of start-up); other values go to scipy.
    """
    x = np.asarray(x, dtype=np.float64)
    if x.size == 0:
        return x
    top = float(x.max())
    if float(x.min()) >= 1 and top <= 1 << 16 and np.array_equal(x, np.floor(x)):
        table = np.array([math.lgamma(k) for k in range(1, int(top) + 1)])
        return table[x.astype(np.int64) - 1]
    from scipy.special import gammaln

    return gammaln(x)


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
    """A likelihood family.  ``n_disp`` dispersion parameters (0, or 1 for the negative
    binomial's log θ) are estimated with the variance parameters: they are the last
    ``n_disp`` entries of vcp, and ``disp`` (n_disp,) is passed to the methods below (None
    for families without)."""

    name: str = ""
    n_disp: ClassVar[int] = 0  # number of dispersion parameters (trailing entries of vcp)

    def loglik(self, y, eta, n, w, disp=None):  # pragma: no cover - interface
        """(n,) w·log p(y | η) without the data-only constant (:meth:`constant`)."""
        raise NotImplementedError

    def expected_loglik(self, y, tm, tv, n, w, rule, disp=None,
                        disp_var=None):  # pragma: no cover - interface
        """(n,) E[loglik] with η ~ N(tm, tv) and, for families with a dispersion, its
        parameters ~ N(disp, disp_var) independently (mean-field)."""
        raise NotImplementedError

    def mean(self, eta, n=1.0, disp=None):  # pragma: no cover - interface
        raise NotImplementedError

    def constant(self, y, n, w) -> float:  # pragma: no cover - interface
        raise NotImplementedError

    def check_endog(self, y, n, name="endog"):  # pragma: no cover - interface
        raise NotImplementedError


@dataclass(frozen=True)
class Binomial(Family):
    """Binomial with logit link: y successes out of n trials, log p = y·η − n·log(1 + e^η)."""

    name: str = "Binomial"
    link: ClassVar[Logit] = Logit()  # statsmodels' ``family.link``

    def loglik(self, y, eta, n, w, disp=None):
        return w * (y * eta - n * softplus(eta))

    def expected_loglik(self, y, tm, tv, n, w, rule, disp=None, disp_var=None):
        """E[loglik] with η ~ N(tm, tv): y·tm − n·E[softplus(η)] by quadrature.

        With statsmodels' rule the expectation is differentiated through the rule, as
        statsmodels does; otherwise through the Gaussian identities (``softplus_moments``)."""
        if rule.name == "statsmodels":
            return w * (y * tm - n * _expect(softplus, tm, _sqrt(tv), rule))
        return w * (y * tm - n * softplus_moments(0, rule, tm, tv)[0])

    def mean(self, eta, n=1.0, disp=None):
        return n * jax.nn.sigmoid(eta)

    def constant(self, y, n, w):
        """Σ w·log C(n, y): zero for 0/1 data."""
        return float(np.sum(w * (_lgamma(n + 1) - _lgamma(y + 1) - _lgamma(n - y + 1))))

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
    link: ClassVar[Log] = Log()

    def loglik(self, y, eta, n, w, disp=None):
        return w * (y * eta - jnp.exp(eta))

    def expected_loglik(self, y, tm, tv, n, w, rule, disp=None, disp_var=None):
        """E[y·η − e^η] with η ~ N(tm, tv).  E[e^η] = exp(tm + tv/2) exactly; with the
        statsmodels rule the quadrature is used instead, to match statsmodels' ELBO."""
        if rule.name == "statsmodels":
            return w * (y * tm - _expect(jnp.exp, tm, _sqrt(tv), rule))
        return w * (y * tm - jnp.exp(tm + 0.5 * tv))

    def mean(self, eta, n=1.0, disp=None):
        return jnp.exp(eta)

    def constant(self, y, n, w):
        """−Σ w·log y!."""
        return float(-np.sum(w * _lgamma(y + 1)))

    def check_endog(self, y, n, name="endog"):
        check_counts(y, name)


@jax.custom_jvp
def _sigmoid(x):
    """The logistic σ(x) = 1/(1 + e^{−x}), accurate to relative rounding in both tails, with
    derivative σ(x)·σ(−x) (also accurate in both tails: 1 − σ(x) would cancel for x ≫ 0)."""
    return jax.nn.sigmoid(x)


@_sigmoid.defjvp
def _sigmoid_jvp(primals, tangents):
    (x,), (dx,) = primals, tangents
    return _sigmoid(x), _sigmoid(x) * _sigmoid(-x) * dx


@jax.custom_jvp
def log1pexp(x):
    """log(1 + eˣ) as :func:`softplus`, with the derivative σ(x) accurate to relative rounding
    for x ≪ 0 as well (:func:`softplus`'s ½ + ½·tanh(x/2) keeps only absolute accuracy there,
    enough where it is multiplied by n trials but not by a large θ)."""
    return jnp.maximum(x, 0) + jnp.log1p(jnp.exp(-jnp.abs(x)))


@log1pexp.defjvp
def _log1pexp_jvp(primals, tangents):
    (x,), (dx,) = primals, tangents
    return log1pexp(x), _sigmoid(x) * dx


# Stirling's series of lgamma: δ(x) = lgamma(x) − (x − ½)·log x + x − ½·log 2π, from
# STIRLING_MIN on (truncation error below 1e-12 there)
STIRLING_MIN = 10.0
DISP_NODES = 10  # Gauss–Hermite nodes over log θ in the ELBO's expected log-likelihood


def _stirling_delta(x):
    """δ(x) = 1/(12x) − 1/(360x³) + 1/(1260x⁵) − 1/(1680x⁷) (x ≥ ``STIRLING_MIN``)."""
    r = 1.0 / x
    r2 = r * r
    return r * (1.0 / 12 - r2 * (1.0 / 360 - r2 * (1.0 / 1260 - r2 / 1680)))


def lgamma_ratio(y, theta):
    """D(y, θ) = lgamma(y + θ) − lgamma(θ) − y·log θ, stable for large θ.

    For θ ≥ ``STIRLING_MIN`` from Stirling's series,
    D = (θ + y − ½)·log1p(y/θ) − y + δ(θ + y) − δ(θ), which tends to 0 as θ → ∞ without the
    cancellation of two lgamma values of size θ·log θ; below, directly.  Both branches are
    evaluated at safe arguments (``where`` twice), so that gradients stay finite."""
    big = theta >= STIRLING_MIN
    tb = jnp.where(big, theta, STIRLING_MIN)
    ts = jnp.where(big, 1.0, theta)
    large = (tb + y - 0.5) * jnp.log1p(y / tb) - y + _stirling_delta(tb + y) - _stirling_delta(tb)
    small = lax.lgamma(y + ts) - lax.lgamma(ts) - y * jnp.log(ts)
    return jnp.where(big, large, small)


@dataclass(frozen=True)
class NegativeBinomial(Family):
    """Negative binomial (NB2) with log link: mean μ = e^η, variance μ + μ²/θ, θ > 0 estimated
    (``disp`` = (log θ,)); glmmTMB's ``nbinom2`` (θ is its ``sigma``) and lme4's ``glmer.nb``.

        log p(y) = lgamma(y + θ) − lgamma(θ) − log y! + θ·log θ + y·η − (y + θ)·log(θ + e^η)

    written as D(y, θ) + y·η − (y + θ)·softplus(η − log θ) − log y! (:func:`log1pexp`) with
    D = lgamma(y + θ) − lgamma(θ) − y·log θ (:func:`lgamma_ratio`), using
    log(θ + e^η) = log θ + softplus(η − log θ): stable for every η and θ, and as θ → ∞ it
    tends to the Poisson y·η − e^η − log y!.  −log y! is the data-only :meth:`constant`.
    """

    name: str = "NegativeBinomial"
    n_disp: ClassVar[int] = 1
    link: ClassVar[Log] = Log()

    def loglik(self, y, eta, n, w, disp=None):
        if disp is None:
            raise ValueError("the negative binomial's loglik needs its dispersion parameters: "
                             "disp = (log θ,), the last entry of vcp (kernels.glmm.split_disp)")
        log_theta = disp[0]
        theta = jnp.exp(log_theta)
        return w * (lgamma_ratio(y, theta) + y * eta - (y + theta) * log1pexp(eta - log_theta))

    def expected_loglik(self, y, tm, tv, n, w, rule, disp=None, disp_var=None):
        """E[loglik] with η ~ N(tm, tv) and log θ ~ N(disp, disp_var) independently: a
        ``DISP_NODES``-point Gauss–Hermite rule over log θ (nodes ℓ_k, θ_k = e^{ℓ_k}) times
        ``rule`` over η for E[softplus(η − ℓ_k)] (``softplus_moments``, differentiated by
        the Gaussian identities):

            Σ_k ω_k [D(y, θ_k) + y·tm − (y + θ_k)·E softplus(η − ℓ_k)].
        """
        from .quadrature import gauss_hermite

        gh = gauss_hermite(DISP_NODES)
        z = jnp.asarray(gh.nodes, tm.dtype)
        om = jnp.asarray(gh.weights, tm.dtype)
        ell = disp[0] + jnp.sqrt(disp_var[0]) * z  # (K,) nodes of log θ
        theta = jnp.exp(ell)[:, None]  # (K, 1)
        K, n_rows = z.shape[0], tm.shape[0]
        m = (tm[None, :] - ell[:, None]).reshape(-1)
        v = jnp.broadcast_to(tv, (K, n_rows)).reshape(-1)
        sp = softplus_moments(0, rule, m, v)[0].reshape(K, n_rows)
        per_node = lgamma_ratio(y, theta) + y * tm - (y + theta) * sp  # (K, n)
        return w * jnp.sum(om[:, None] * per_node, axis=0)

    def mean(self, eta, n=1.0, disp=None):
        return jnp.exp(eta)

    def variance(self, mu, disp):
        """Var(y) = μ + μ²/θ."""
        return mu + mu**2 * jnp.exp(-disp[0])

    def constant(self, y, n, w):
        """−Σ w·log y! (the θ-dependent lgamma terms are in :meth:`loglik`)."""
        return float(-np.sum(w * _lgamma(y + 1)))

    def check_endog(self, y, n, name="endog"):
        check_counts(y, name)
