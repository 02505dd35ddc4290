"""Pure log-density and ELBO kernels of the Bayesian mixed GLM (statsmodels' model).

    log p(y, fe, vc, vcp) = Σ_i loglik(y_i | η_i) + const
                            − ½ Σ_j vc_j² · exp(−2·vcp[ident_j]) − Σ_j vcp[ident_j]
                            − ½ Σ_k vcp_k² / vcp_p² − ½ Σ fe² / fe_p²,
    η = X·fe + Z·vc + offset.

As in statsmodels the Gaussian normalising constants (−½ log 2π per term) are left out.
Correlated terms (covariance.py) replace their columns' independent N(0, exp(vcp)²) terms by
the multivariate normal N(0, D·R·D) per level.  The
family's factorial terms ``const`` (−Σ log y! for Poisson, Σ log C(n, y) for binomial with
trials) are kept, so ``logposterior`` equals statsmodels' to rounding.

Families with a dispersion parameter (the negative binomial's log θ, ``family.n_disp`` = 1)
carry it as the last entry of vcp (:func:`split_disp`): it enters loglik, not the random
effects, and has its own prior N(0, disp_p²) (``Prior.disp_p``) instead of N(0, vcp_p²).

The mean-field ELBO (statsmodels' ``vb_elbo``) uses q = Π N(mean, sd²) over all parameters:

    ELBO = Σ_i E_q[loglik_i] − ½ Σ_j (m_vc² + s_vc²)·exp(2·s_vcp² − 2·m_vcp)[ident_j]
           − Σ_j m_vcp[ident_j] − ½ Σ (m_vcp² + s_vcp²)/vcp_p² − ½ Σ (m_fe² + s_fe²)/fe_p²
           + Σ log s  (entropy, constants dropped).

Padded levels (design.buckets; ``Data.level_w`` = 0) are inert: their terms in Σ_j are
removed.  The non-centred log posterior keeps −½u_j² for them (0 at u_j = 0, where they stay,
and curvature 1 for the optimiser); the ELBO replaces their terms by
−½(m_j² + s_j²) + log s_j + ½, which is 0 with zero gradient at (m, s) = (0, 1).

Factories close over the static family (and quadrature rule); data and priors are arguments.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ..covariance import log_prior_blocks
from ..families import Family
from ..quadrature import Rule
from ..design.ellpack import REDesign, matvec

__all__ = ["Data", "Kernels", "Params", "Prior", "jitted_kernels", "linear_predictor",
           "make_elbo", "make_logposterior", "split_disp", "unpack", "vcp_prior_sq"]


class Params(NamedTuple):
    fe: jax.Array  # (k_fep,) fixed effects
    vcp: jax.Array  # (k_vcp,) log SDs of the variance components (then correlation and
    #                 dispersion parameters, see module docstring)
    vc: jax.Array  # (k_vc,) random-effect realisations


class Data(NamedTuple):
    y: jax.Array  # (n,) response: 0/1, successes out of n_trials, or counts
    X: jax.Array  # (n, k_fep) fixed-effects design
    Z: REDesign  # (n, m) ELLPACK random-effects design with k_vc columns
    ident: jax.Array  # (k_vc,) int32: variance component of each random effect
    n_trials: jax.Array  # (n,) binomial trials (ones for 0/1 data; unused by Poisson)
    weights: jax.Array  # (n,) frequency weights (ones by default)
    offset: jax.Array  # (n,) offset added to the linear predictor (zeros by default)
    const: jax.Array  # () Σ w·log C(n, y) (binomial) or −Σ w·log y! (Poisson)
    corr: tuple = ()  # covariance.CorrBlock per correlated term, e.g. (1 + x | g)
    indep: jax.Array | None = None  # (k_vc,) 1 for independent columns, 0 in correlated terms
    level_w: jax.Array | None = None  # (k_vc,) 1 for real levels, 0 for padding (buckets)
    re_blocks: jax.Array | None = None  # (nb, q) int32: H_uu's diagonal blocks' columns (k in
    #                                     unused slots), in the ("block", q) mode only


class Prior(NamedTuple):
    fe_p: jax.Array  # () prior SD of the fixed effects
    vcp_p: jax.Array  # () prior SD of the log SDs
    disp_p: jax.Array | None = None  # () prior SD of the dispersion parameters (NB: log θ);
    #                                  None: the family has none (or vcp_p is used)


def split_disp(family: Family, vcp):
    """The family's dispersion parameters, the last ``family.n_disp`` entries of vcp
    ((n_disp,), e.g. (log θ,)), or None for families without."""
    if not family.n_disp:
        return None
    return vcp[vcp.shape[0] - family.n_disp:]


def vcp_prior_sq(sq, prior: Prior, n_disp: int = 0):
    """½ Σ sq_k / prior_sd_k² over vcp: vcp_p for the variance parameters and disp_p (vcp_p
    when None) for the last ``n_disp`` (dispersion) entries; ``sq`` (k_vcp,) holds vcp² (log
    posterior) or E_q vcp² = m² + s² (ELBO)."""
    if not n_disp:
        return 0.5 * jnp.sum(sq) / prior.vcp_p**2
    k = sq.shape[0] - n_disp
    dp = prior.vcp_p if prior.disp_p is None else prior.disp_p
    return 0.5 * jnp.sum(sq[:k]) / prior.vcp_p**2 + 0.5 * jnp.sum(sq[k:]) / dp**2


def unpack(vec, k_fep: int, k_vcp: int, dtype) -> Params:
    """Params in ``dtype`` from a vector packed (fe, vcp, vc), as statsmodels' ``params``."""
    vec = np.asarray(vec, dtype=np.float64)
    kf, kp = k_fep, k_vcp
    return Params(jnp.asarray(vec[:kf], dtype), jnp.asarray(vec[kf:kf + kp], dtype),
                  jnp.asarray(vec[kf + kp:], dtype))


def linear_predictor(params: Params, data: Data) -> jax.Array:
    """η = X·fe + Z·vc + offset, shape (n,)."""
    return data.X @ params.fe + matvec(data.Z, params.vc) + data.offset


def make_logposterior(family: Family, noncentred: bool = False
                      ) -> Callable[[Params, Data, Prior], jax.Array]:
    """``logposterior(params, data, prior) -> scalar`` for ``family``.

    With ``noncentred=True`` the ``vc`` field holds u with vc = exp(vcp[ident])·u: the same
    function of the parameters written in other coordinates (no Jacobian), for the optimiser.
    The prior term −½ vc²·exp(−2·vcp) is then −½ u², which stays finite where vcp → −∞.
    """

    def logposterior(params: Params, data: Data, prior: Prior) -> jax.Array:
        s = params.vcp[data.ident]  # (k_vc,) log SD of each random effect
        if noncentred:
            u = params.vc
            params = params._replace(vc=u * jnp.exp(s))
        eta = linear_predictor(params, data)
        disp = split_disp(family, params.vcp)
        ll = jnp.sum(family.loglik(data.y, eta, data.n_trials, data.weights, disp)) + data.const
        lw = 1.0 if data.level_w is None else data.level_w  # padded levels: 0
        if noncentred:
            ll -= 0.5 * jnp.sum(u**2) + jnp.sum(lw * s)
        else:
            m = lw if data.indep is None else lw * data.indep  # correlated terms: below
            ll -= 0.5 * jnp.sum(m * params.vc**2 * jnp.exp(-2 * s)) + jnp.sum(m * s)
            ll += log_prior_blocks(params.vcp, params.vc, data.corr)
        ll -= vcp_prior_sq(params.vcp**2, prior, family.n_disp)
        ll -= 0.5 * jnp.sum(params.fe**2) / prior.fe_p**2
        return ll

    return logposterior


def predictor_moments(mean: Params, sd: Params, data: Data) -> tuple[jax.Array, jax.Array]:
    """Mean ``tm`` and variance ``tv`` (n,) of the linear predictor under the mean-field q."""
    X, Z = data.X, data.Z
    tm = X @ mean.fe + matvec(Z, mean.vc) + data.offset
    tv = (X**2) @ sd.fe**2 + matvec(REDesign(Z.cols, Z.vals**2), sd.vc**2)
    return tm, tv


def make_elbo(family: Family, rule: Rule) -> Callable[[Params, Params, Data, Prior], jax.Array]:
    """``elbo(mean, sd, data, prior) -> scalar``: mean-field ELBO, E_q by ``rule``: the
    expected log-likelihood plus :func:`elbo_prior_entropy`."""

    def elbo(mean: Params, sd: Params, data: Data, prior: Prior) -> jax.Array:
        if data.corr:  # static: the pytree's structure
            raise ValueError("the mean-field ELBO has no closed form for correlated random "
                             "effects (data.corr)")
        tm, tv = predictor_moments(mean, sd, data)
        if family.n_disp:  # E over log θ ~ N(mean, sd²) too
            d_sd = split_disp(family, sd.vcp)
            iv = jnp.sum(family.expected_loglik(data.y, tm, tv, data.n_trials, data.weights,
                                                rule, split_disp(family, mean.vcp), d_sd**2))
        else:
            iv = jnp.sum(family.expected_loglik(data.y, tm, tv, data.n_trials, data.weights,
                                                rule))
        return iv + elbo_prior_entropy(mean, sd, data, prior, family.n_disp)

    return elbo


def elbo_prior_entropy(mean: Params, sd: Params, data: Data, prior: Prior,
                       n_disp: int = 0) -> jax.Array:
    """The ELBO's terms other than the expected log-likelihood (statsmodels' ``_elbo_common``
    plus the entropy): E_q log p(vc | vcp) + E_q log p(vcp) + E_q log p(fe) + entropy of q, up
    to constants; the last ``n_disp`` entries of vcp are dispersion parameters
    (:func:`vcp_prior_sq`)."""
    iv = 0.0
    m = mean.vcp[data.ident]
    s = sd.vcp[data.ident]
    vc2 = mean.vc**2 + sd.vc**2
    log_s = jnp.log(sd.vc)
    if data.level_w is None:
        iv -= 0.5 * jnp.sum(vc2 * jnp.exp(2 * (s**2 - m)))
        iv -= jnp.sum(m)
        entropy_vc = jnp.sum(log_s)
    else:  # padded levels: the inert −½(m² + s²) + log s + ½ instead
        lw = data.level_w
        iv -= 0.5 * jnp.sum(lw * vc2 * jnp.exp(2 * (s**2 - m)))
        iv -= jnp.sum(lw * m)
        entropy_vc = jnp.sum(lw * log_s) + jnp.sum((1 - lw) * (0.5 - 0.5 * vc2 + log_s))
    iv -= vcp_prior_sq(mean.vcp**2 + sd.vcp**2, prior, n_disp)
    iv -= 0.5 * jnp.sum(mean.fe**2 + sd.fe**2) / prior.fe_p**2
    entropy = jnp.sum(jnp.log(sd.fe)) + jnp.sum(jnp.log(sd.vcp)) + entropy_vc
    return iv + entropy


class Kernels(NamedTuple):
    """The kernels jitted, for evaluation at given parameters."""

    logposterior: Callable  # (params, data, prior) -> ()
    logposterior_grad: Callable  # (params, data, prior) -> Params
    elbo: Callable  # (mean, sd, data, prior) -> ()
    elbo_grad: Callable  # (mean, sd, data, prior) -> (Params, Params)


@functools.cache
def jitted_kernels(family: Family, rule: Rule) -> Kernels:
    """:class:`Kernels` for one family and ELBO quadrature rule (one compilation each)."""
    lp = make_logposterior(family)
    el = make_elbo(family, rule)
    return Kernels(jax.jit(lp), jax.jit(jax.grad(lp)), jax.jit(el),
                   jax.jit(jax.grad(el, argnums=(0, 1))))
