"""The second-order correction of the Laplace approximation of the random effects' integral.

With h(u; θ) the penalised deviance of kernels.marginal (f = −h: Σ_i loglik_i(η_i) − ½‖u‖²,
η = X·fe + ZΛu + offset), the Laplace approximation log ∫ e^f du ≈ f(u*) + (k/2) log 2π
− ½ log det H_uu has relative error O(1/n per random effect).  Expanding f to fourth order
about u* (x = u − u*, x ~ N(0, V), V = H_uu⁻¹) and E[e^{T3 + T4}] ≈ 1 + E[T4] + ½E[T3²]
(Tierney, Kass & Kadane 1989; Shun & McCullagh 1995, JRSS-B 57, eq. 2.2; Raudenbush, Yang &
Yosef 2000, "Laplace6") gives

    δ = ⅛ Σ f_abcd V_ab V_cd + ⅛ Σ f_abc f_def V_ab V_cd V_ef + 1/12 Σ f_abc f_def V_ad V_be V_cf.

The observations are conditionally independent, so with ẑ_i the rows of ZΛ,
f_abc = Σ_i ℓ‴_i ẑ_ia ẑ_ib ẑ_ic and f_abcd = Σ_i ℓ⁗_i ẑ_ia ẑ_ib ẑ_ic ẑ_id (ℓ⁽ʳ⁾_i =
∂ʳloglik_i/∂ηʳ, by nested forward autodiff of the family's loglik), and with
v_ij = ẑ_iᵀ V ẑ_j, q_i = v_ii the leverages:

    δ = ⅛ Σ_i ℓ⁗_i q_i²                          (t4)
      + ⅛ Σ_ij ℓ‴_i q_i v_ij q_j ℓ‴_j = ⅛ TᵀH_uu⁻¹T,  T = ΛZᵀ(ℓ‴ ⊙ q)       (t33a)
      + 1/12 Σ_ij ℓ‴_i ℓ‴_j v_ij³                                           (t33b)

t4 and t33a need the leverages (kernels.h_uu.inverse_entries: from the factor, as the fit's
log-determinant derivative) and one solve.  t33b is a double sum over the rows, O(n²) in
general; it is computed exactly in ``"diag"`` mode (one grouping factor: v_ij = ẑ_iẑ_j/H_ll
for rows i, j of level l, zero across levels, so Σ_ij = Σ_l (Σ_{i∈l} ℓ‴_i ẑ_i³)² / H_ll³, a
segment sum) and by its i = j terms, 1/12 Σ_i ℓ‴_i² q_i³, in the other modes (crossed
designs: the pairs i ≠ j, largest for rows that share a level, are left out; on grouseticks
that moves the integrated vcp means by ≤ 0.03 posterior SD).  So δ costs what one evaluation
of the log-determinant's derivative costs, never an n × n or a dense n × k_vc matrix.
Independent terms only (inverse_entries); fits.integrate skips δ for correlated terms.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from .._xla import large_options, light_options
from ..covariance import lam_t, lam_u
from ..design.ellpack import matvec, rmatvec
from ..families import Family
from ..linalg import psd
from .glmm import Data, split_disp
from .h_uu import inverse_entries

__all__ = ["correction_terms", "laplace_correction", "loglik_derivatives"]


def loglik_derivatives(family: Family, eta, data: Data, disp=None):
    """(ℓ‴, ℓ⁗), (n,) each: the third and fourth derivatives of the rows' loglik in η, by
    nested forward-mode autodiff along ones (loglik is elementwise in η)."""

    def rows(e):
        if disp is None:
            return family.loglik(data.y, e, data.n_trials, data.weights)
        return family.loglik(data.y, e, data.n_trials, data.weights, disp)

    ones = jnp.ones_like(eta)

    def d1(e):
        return jax.jvp(rows, (e,), (ones,))[1]

    def d2(e):
        return jax.jvp(d1, (e,), (ones,))[1]

    def d3(e):
        return jax.jvp(d2, (e,), (ones,))[1]

    l3, l4 = jax.jvp(d3, (eta,), (ones,))
    return l3, l4


@functools.cache
def laplace_correction(family: Family, mode, small: bool = False):
    """``delta(θ, u*, F, data) -> (3,)``: the terms (t4, t33a, t33b) of the second-order
    correction δ of the Laplace log-integral over u at θ (module docstring); their sum is
    added to the Laplace log marginal.  ``F`` is the factorisation of H_uu at u* (as the
    fit's ``vgh`` returns it); independent terms only.  ``small``: compiled with the light
    options (_xla.light_options), as the fit's own programs on small data.

    Examples
    --------
    cbpp at lme4's estimates (herd SD e^−0.44): δ = t4 + t33a + t33b ≈ 0.04.

    >>> import numpy as np
    >>> from bayesglmm import BinomialBayesMixedGLM, datasets
    >>> from bayesglmm._precision import precision
    >>> from bayesglmm.kernels.marginal import conditional_mode, penalised
    >>> m = BinomialBayesMixedGLM.from_formula("incidence ~ C(period)",
    ...     {"herd": "0 + C(herd)"}, datasets.load("cbpp"), n_trials="size")
    >>> theta = jnp.asarray([-1.3985, -0.9923, -1.1287, -1.5803, -0.4428])
    >>> with precision(np.float64):
    ...     d = m._data()
    ...     u = conditional_mode(m.family, "diag")(theta, jnp.zeros(m.k_vc), d)
    ...     F = penalised(m.family, "diag")(theta, u, d)[2]  # H_uu's factor at u*
    ...     terms = laplace_correction(m.family, "diag")(theta, u, F, d)
    >>> np.round(np.asarray(terms), 3)
    array([-0.045,  0.053,  0.036])
    """

    @functools.partial(jax.jit, compiler_options=light_options() if small else large_options())
    def delta(theta, u, F, data: Data):
        kf = data.X.shape[1]
        q_hd = inverse_entries(theta[kf:], F, mode, data)  # leverages, diag(H_uu⁻¹)
        return correction_terms(family, mode, theta, u, F, data, q_hd)[0]

    return delta


def correction_terms(family: Family, mode, theta, u, F, data: Data, q_hd):
    """Traceable: ``(δ's terms (t4, t33a, t33b), T, H_uu⁻¹T)`` at θ with T = ΛZᵀ(ℓ‴ ⊙ q)
    (module docstring), given ``q_hd`` = (leverages, diag(H_uu⁻¹)) from
    kernels.h_uu.inverse_entries.  H_uu⁻¹T is also the third-order shift of the random
    effects' conditional mean (fits.integrate), so a caller that needs both solves once."""
    kf = data.X.shape[1]
    vcp = theta[kf:]
    k = u.shape[0]
    q, hd = q_hd
    eta = data.X @ theta[:kf] + matvec(data.Z, lam_u(vcp, u, data.ident)) + data.offset
    l3, l4 = loglik_derivatives(family, eta, data, split_disp(family, vcp))
    t4 = jnp.sum(l4 * q**2) / 8
    T = lam_t(vcp, rmatvec(data.Z, l3 * q, k), data.ident)  # ΛZᵀ(ℓ‴ ⊙ q)
    HiT = psd.solve(F, T, mode)
    t33a = jnp.sum(T * HiT) / 8
    if mode == "diag":
        # Σ_{i∈l} ℓ‴_i ẑ_i³ per level l, ẑ_i = z_i·e_l
        e3 = jnp.exp(3 * vcp[data.ident])
        s = e3 * rmatvec(data.Z._replace(vals=data.Z.vals**3), l3, k)
        t33b = jnp.sum(s**2 * hd**3) / 12
    else:
        t33b = jnp.sum(l3**2 * q**3) / 12
    return jnp.stack([t4, t33a, t33b]), T, HiT
