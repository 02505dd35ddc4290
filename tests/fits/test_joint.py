"""fits/joint.py: the joint profile's fe derivatives against nested autodiff and the dense
Schur complement, the node program's exact parts against the fit's ``vgh``, the contracted
third derivatives against the full tensor, and the integrated fit with the approximate node
Hessians against the exact ones."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import sparse

import bayesglmm as bg
from bayesglmm._precision import precision
from bayesglmm.fits.integrate import integrate_vcp
from bayesglmm.fits.joint import joint_third_kernel, node_hessian_kernel, skew_vector
from bayesglmm.fits.laplace import default_options, fit_laplace, laplace_kernels
from bayesglmm.kernels.marginal import conditional_mode, marginal_loglik
from benchmarks.bench_integrate import model as bench_model
from tests.helpers import gen_crossed_logit

THETA = np.array([-0.3, 0.4, 0.2, 0.4])  # (fe, log SDs) of the crossed model below


@pytest.fixture(scope="module")
def crossed():
    y, X, Z, ident = gen_crossed_logit(6, 5, 1, 2)
    X = np.column_stack([X, np.linspace(-1, 1, len(y))])
    return bg.BinomialBayesMixedGLM(y, X, sparse.csr_array(Z), ident, vcp_p=0.5)


def _profile(m):
    """ℓ_j(θ) = Σ loglik(y | X·fe + ZΛu*(θ)) − ½‖u*‖², plain jnp with u* differentiated
    through kernels.marginal.conditional_mode, and the dense pieces at θ."""
    data = m._data()
    X, Z = jnp.asarray(m.exog), jnp.asarray(m.exog_vc.toarray())
    y = jnp.asarray(m.endog)
    ident = np.asarray(m.ident)
    kf = m.k_fep
    u_star = conditional_mode(m.family, m._design_mode)

    def lj(theta):
        u = u_star(theta, jnp.zeros(m.k_vc), data)
        eta = X @ theta[:kf] + Z @ (jnp.exp(theta[kf:][ident]) * u)
        return jnp.sum(y * eta - jnp.logaddexp(0.0, eta)) - 0.5 * jnp.sum(u**2)

    def dense_schur(theta):
        """−∂²ℓ_j/∂fe² = XᵀWX − XᵀWẐ(I + ẐᵀWẐ)⁻¹ẐᵀWX with Ẑ = ZΛ."""
        u = u_star(theta, jnp.zeros(m.k_vc), data)
        Zh = Z * jnp.exp(theta[kf:][ident])
        p = jax.nn.sigmoid(X @ theta[:kf] + Zh @ u)
        W = p * (1 - p)
        Huu = jnp.eye(m.k_vc) + Zh.T @ (W[:, None] * Zh)
        XWZ = X.T @ (W[:, None] * Zh)
        return X.T @ (W[:, None] * X) - XWZ @ jnp.linalg.solve(Huu, XWZ.T)

    return lj, dense_schur


@pytest.mark.slow
def test_node_hessian_kernel_against_nested_autodiff_and_the_fit(crossed):
    """−∂(∇_fe ℓ_j)/∂θ against jacfwd ∘ jacfwd of ℓ_j (all of θ) and the dense Schur
    complement (the fe block); J's value and gradient, du*/dθ equal the fit's ``vgh``."""
    m = crossed
    mode, kf = m._design_mode, m.k_fep
    opts = default_options(np.float64)
    with precision(np.float64):
        data, prior = m._data(), m._prior()
        theta = jnp.asarray(THETA)
        u = conditional_mode(m.family, mode)(theta, jnp.zeros(m.k_vc), data)
        f, g, H, (du, _) = node_hessian_kernel(m.family, mode, opts)(theta, u, data, prior)
        f0, g0, _, (du0, _) = laplace_kernels(m.family, mode, True, opts).vgh(theta, u, data,
                                                                               prior)
        lj, dense = _profile(m)
        ref = np.asarray(jax.jacfwd(jax.jacfwd(lj))(theta))
        schur = np.asarray(dense(theta))
    H = np.asarray(H)
    assert H.shape == (kf, THETA.size)
    np.testing.assert_allclose(-H, ref[:kf], rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(H[:, :kf], schur, rtol=1e-9, atol=1e-11)
    for a, b in ((f, f0), (g, g0), (du, du0)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-12, atol=1e-13)
    # fe_only (a fixed design's nodes): the same fe columns, zero vcp columns
    with precision(np.float64):
        f1, g1, H1, (du1, _) = node_hessian_kernel(m.family, mode, opts, fe_only=True)(
            theta, u, data, prior)
    H1, du1 = np.asarray(H1), np.asarray(du1)
    assert H1.shape == H.shape and du1.shape == du.shape
    np.testing.assert_allclose(H1[:, :kf], H[:, :kf], rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(du1[:, :kf], np.asarray(du)[:, :kf], rtol=1e-12, atol=1e-13)
    assert not np.any(H1[:, kf:]) and not np.any(du1[:, kf:])
    np.testing.assert_allclose(np.asarray(g1), np.asarray(g), rtol=1e-12, atol=1e-13)
    assert float(f1) == float(f)


@pytest.mark.slow
def test_skew_vector_against_the_full_third_derivative_tensor(crossed):
    """skew_vector (second directional derivatives of ∇_fe ℓ_j along a square root of
    C = P⁻¹, summed) against ℓ_j's third derivatives by jacfwd ∘ jacfwd ∘ grad contracted
    with C; each column of the program against the tensor; None for an indefinite P."""
    m = crossed
    mode, kf = m._design_mode, m.k_fep
    with precision(np.float64):
        data = m._data()
        theta = jnp.asarray(THETA)
        u = conditional_mode(m.family, mode)(theta, jnp.zeros(m.k_vc), data)
        lj, _ = _profile(m)

        def lj_fe(fe):
            return lj(jnp.concatenate([fe, theta[kf:]]))

        F = np.asarray(jax.jacfwd(jax.jacfwd(jax.grad(lj_fe)))(theta[:kf]))
        P = -np.asarray(jax.hessian(lj_fe)(theta[:kf])) + np.array([[0.3, 0.1], [0.1, 0.2]])
        third = joint_third_kernel(m.family, mode)
        T = skew_vector(lambda th, uu, V: third(th, uu, V, data), THETA, u, P)
        V = np.array([[1.0, 0.5], [-0.3, 2.0]])
        D = np.asarray(third(THETA, u, V, data))
    np.testing.assert_allclose(T, np.einsum("ijl,jl->i", F, np.linalg.inv(P)), rtol=1e-8,
                               atol=1e-11)
    np.testing.assert_allclose(D, np.einsum("ijl,jm,lm->im", F, V, V), rtol=1e-8, atol=1e-11)
    assert skew_vector(third, THETA, u, -P) is None


@pytest.mark.slow
def test_exact_j_hessian_differs_from_the_profile_by_the_log_determinant(crossed):
    """What the node program leaves out: J's exact fe Hessian minus ℓ_j's is the Hessian of
    −½ log det H_uu (+ the prior's −1/fe_p²) — nonzero, so the remainder at the mode is
    needed, and small beside ℓ_j's."""
    m = crossed
    kf = m.k_fep
    with precision(np.float64):
        data, prior = m._data(), m._prior()
        lj, _ = _profile(m)

        def J(theta):
            return marginal_loglik(theta, data, prior, family=m.family, mode=m._design_mode,
                                   priors=True)

        theta = jnp.asarray(THETA)
        HJ = np.asarray(jax.hessian(J)(theta))[:kf, :kf]
        Hl = np.asarray(jax.hessian(lj)(theta))[:kf, :kf]
    rest = HJ - Hl + np.eye(kf) / m.fe_p**2
    assert 1e-4 < np.abs(rest).max() < 0.2 * np.abs(Hl).max()


@pytest.mark.slow
@pytest.mark.parametrize("case", ["cbpp", "crossed-binary"])
def test_integrated_fit_with_approximate_node_hessians_matches_exact(case):
    """The default nodes (ℓ_j's Hessian + the remainder at the mode) against J's exact
    Hessian at every node: fe and vcp means within 0.01 posterior SD (crossed-binary's item
    log SD moves most, 0.006 SD), SDs within 0.5 %, the same nodes."""
    model = bench_model(case)
    with precision(np.float64):
        data, prior, mode = model._data(), model._prior(), model._design_mode
        fit = fit_laplace(model.family, data, prior, model.k_fep, mode=mode, priors=True)
        approx = integrate_vcp(model.family, data, prior, fit, mode=mode)
        exact = integrate_vcp(model.family, data, prior, fit, mode=mode, exact_nodes=True)
    np.testing.assert_array_equal(approx.nodes, exact.nodes)
    sd = np.sqrt(np.diag(exact.cov))
    err = np.r_[approx.fe_mean, approx.vcp_mean] - np.r_[exact.fe_mean, exact.vcp_mean]
    assert np.all(np.abs(err) <= 0.01 * sd), err / sd
    np.testing.assert_allclose(np.sqrt(np.diag(approx.cov)), sd, rtol=0.005)
    np.testing.assert_allclose(approx.vc_sd, exact.vc_sd, rtol=0.005)
