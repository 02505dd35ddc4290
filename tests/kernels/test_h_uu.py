"""kernels.h_uu: the factorisations of H_uu and the hand-written JVP of log det H_uu against
a plain dense reference (jnp.linalg.slogdet of the dense H_uu, differentiated by JAX)."""

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import pytest

import bayesglmm as bg
from bayesglmm._precision import precision
from bayesglmm.design.ellpack import design_mode
from bayesglmm.kernels.h_uu import factor_h_uu, inverse_entries, logdet_h_uu, var_vc
from bayesglmm.linalg import psd
from tests.helpers import gen_crossed_logit, gen_simple_logit


def _dense_h(vcp, w, data):
    """H_uu = ΛZᵀdiag(w)ZΛ + I formed densely from the ELLPACK arrays."""
    k = data.ident.shape[0]
    n, m = data.Z.cols.shape
    Z = jnp.zeros((n, k), vcp.dtype).at[jnp.arange(n)[:, None], data.Z.cols].add(data.Z.vals)
    e = jnp.exp(vcp[data.ident])
    Zl = Z * e[None, :]
    return Zl.T @ (w[:, None] * Zl) + jnp.eye(k, dtype=vcp.dtype)


def _model(kind):
    if kind == "diag":
        y, X, Z, ident = gen_simple_logit(6, 8, 1.0)
    elif kind == "block":  # (x || g): an intercept and a slope per level, independent
        y, X, Z, ident = gen_simple_logit(6, 8, 1.0)
        Z = np.hstack([Z, Z * X[:, :1]])
        ident = np.r_[ident, ident + 1]
    else:
        y, X, Z, ident = gen_crossed_logit(5, 6, 1.0, 0.7)
    if kind == "crossed_block":  # (x || g) + (1 | h): g's pairs eliminated onto h's columns
        y, X, Z, ident = gen_simple_logit(6, 8, 1.0)
        h = np.random.default_rng(2).integers(0, 3, len(y))
        Z = np.hstack([Z, Z * X[:, :1], np.eye(3)[h]])
        ident = np.r_[ident, ident + 1, np.full(3, 2)]
    if kind == "olre":  # and an observation-level effect: one row per level
        Z = np.hstack([Z, np.eye(len(y))])
        ident = np.concatenate([ident, np.full(len(y), ident.max() + 1)])
    return bg.BinomialBayesMixedGLM(y, X, Z, ident)


def test_design_mode_keeps_an_observation_level_component_by_rows():
    for kind, first in [("crossed", "schur"), ("olre", "schur_obs"), ("block", "block"),
                        ("crossed_block", "schur_block")]:
        m = _model(kind)
        assert design_mode(*m.re_design, m.ident)[0] == first
    assert _model("block")._design_mode == ("block", 2)
    # the rest of the observation-level mode: two crossed factors, the first (5 levels) with
    # a diagonal block of the Schur complement (factored by blocks; its tests below)
    assert _model("olre")._design_mode == ("schur_obs", 2, 30, 5)


def test_lead_diagonal_is_the_rests_first_grouping_factor():
    """k_1 of ``("schur_obs", c, k_c, k_1)``: the rest's leading component's columns when no
    row touches two of them (grouseticks' nested BROOD, 118 of 181), else 0 (a random slope
    first: two non-zeros a row in its block)."""
    rng = np.random.default_rng(5)
    n = 60
    brood = rng.integers(0, 12, n)
    loc = brood // 3  # nested: each brood at one location
    Z = np.hstack([np.eye(12)[brood], np.eye(n), np.eye(4)[loc]])
    ident = np.r_[np.zeros(12, int), np.ones(n, int), np.full(4, 2)]
    m = bg.PoissonBayesMixedGLM(rng.poisson(2.0, n), np.ones((n, 1)), Z, ident)
    assert m._design_mode == ("schur_obs", 1, n, 12)
    x = rng.normal(size=n)
    Zs = np.hstack([np.eye(4)[loc], np.eye(4)[loc] * x[:, None], np.eye(n)])
    ids = np.r_[np.zeros(8, int), np.ones(n, int)]  # one component: intercept and slope
    ms = bg.PoissonBayesMixedGLM(rng.poisson(2.0, n), np.ones((n, 1)), Zs, ids)
    assert ms._design_mode[:3] == ("schur_obs", 1, n) and ms._design_mode[3] == 0


@pytest.mark.slow  # over ~8 s on CI's two cores (.ci/run runs it)
@pytest.mark.parametrize("kind, force", [("diag", None), ("crossed", None),
                                         ("crossed", "dense"), ("olre", None), ("block", None),
                                         ("crossed_block", None)])
def test_logdet_and_its_derivatives_match_the_dense_reference(kind, force):
    model = _model(kind)
    with precision(np.float64):
        data = model._data()
        mode = force or design_mode(np.asarray(data.Z.cols), np.asarray(data.Z.vals),
                                    np.asarray(data.ident))
        if kind != "diag" and force is None:
            assert mode[0] == {"olre": "schur_obs", "block": "block",
                               "crossed_block": "schur_block"}.get(kind, "schur")
        rng = np.random.default_rng(0)
        vcp = jnp.asarray(rng.normal(0, 0.5, model.k_vcp))
        w = jnp.asarray(rng.uniform(0.05, 0.3, data.y.shape[0]))
        ld = logdet_h_uu(mode)

        def ref(v, ww):
            return jnp.linalg.slogdet(_dense_h(v, ww, data))[1]

        np.testing.assert_allclose(ld(vcp, w, data), ref(vcp, w), rtol=1e-12)
        for argnums in (0, 1):
            g = jax.grad(ld, argnums)(vcp, w, data)
            np.testing.assert_allclose(g, jax.grad(ref, argnums)(vcp, w), rtol=1e-9,
                                       atol=1e-12)
        # second derivatives (the Laplace fit's Hessian): forward over the custom JVP
        h = jax.hessian(ld)(vcp, w, data)
        np.testing.assert_allclose(h, jax.hessian(ref)(vcp, w), rtol=1e-8, atol=1e-11)
        # ... and a finite-difference check of the gradient along a direction
        d = jnp.asarray(rng.normal(size=model.k_vcp))
        eps = 1e-6
        fd = (ld(vcp + eps * d, w, data) - ld(vcp - eps * d, w, data)) / (2 * eps)
        np.testing.assert_allclose(jnp.dot(jax.grad(ld)(vcp, w, data), d), fd, rtol=1e-6)


@pytest.mark.parametrize("kind, padded", [("diag", False), ("crossed", False), ("olre", False),
                                          ("olre", True), ("crossed", True), ("block", False),
                                          ("block", True), ("crossed_block", False),
                                          pytest.param("crossed_block", True,
                                                       marks=pytest.mark.slow)])
def test_inverse_entries_and_conditional_variances_match_the_dense_inverse(kind, padded):
    model = _model(kind)
    with precision(np.float64):
        # padded: zero rows and inert levels (in the eliminated component) of the bucket
        data = model._data(padded=True) if padded else model._data()
        mode = (model._padded_design()[1] if padded else
                design_mode(np.asarray(data.Z.cols), np.asarray(data.Z.vals),
                            np.asarray(data.ident)))
        rng = np.random.default_rng(1)
        vcp = jnp.asarray(rng.normal(0, 0.5, model.k_vcp))
        w = jnp.asarray(rng.uniform(0.05, 0.3, data.y.shape[0]))
        k = data.ident.shape[0]
        b = jnp.asarray(rng.normal(size=(k, 3)))

        @jax.jit  # one program: op by op, the checks compile each operation separately
        def run(vcp, w, b, data):
            F = factor_h_uu(vcp, w, mode, data)
            return (inverse_entries(vcp, F, mode, data), var_vc(vcp, F, mode, data),
                    psd.logdet(F, mode), psd.inv_diag(F, mode), psd.solve(F, b, mode),
                    psd.solve(F, b[:, 0], mode))

        (q, hd), var, logdet, inv_diag, x3, x1 = run(vcp, w, b, data)
        H = _dense_h(vcp, w, data)
        Hi = np.linalg.inv(np.asarray(H))
        np.testing.assert_allclose(hd, np.diag(Hi), rtol=1e-10)
        n, _ = data.Z.cols.shape
        Z = np.zeros((n, k))
        np.add.at(Z, (np.arange(n)[:, None], np.asarray(data.Z.cols)), np.asarray(data.Z.vals))
        Zl = Z * np.exp(np.asarray(vcp)[np.asarray(data.ident)])
        np.testing.assert_allclose(q, np.einsum("ij,jk,ik->i", Zl, Hi, Zl), rtol=1e-10)
        e2 = np.exp(2 * np.asarray(vcp)[np.asarray(data.ident)])
        np.testing.assert_allclose(var, e2 * np.diag(Hi), rtol=1e-10)
        np.testing.assert_allclose(logdet, np.linalg.slogdet(H)[1], rtol=1e-12)
        np.testing.assert_allclose(inv_diag, np.diag(Hi), rtol=1e-10)
        np.testing.assert_allclose(x3, Hi @ np.asarray(b), rtol=1e-9)
        np.testing.assert_allclose(x1, Hi @ np.asarray(b[:, 0]), rtol=1e-9)


def _largest_array(jaxpr) -> int:
    """The most elements of any value in a closed jaxpr, sub-jaxprs included."""
    best = 0

    def walk(j):
        nonlocal best
        for v in list(j.invars) + list(j.outvars) + [o for e in j.eqns for o in e.outvars]:
            shape = getattr(getattr(v, "aval", None), "shape", ())
            best = max(best, int(np.prod(shape)) if shape else 1)
        for e in j.eqns:
            for sub in jax.extend.core.jaxprs_in_params(e.params):
                walk(sub)

    walk(jaxpr.jaxpr)
    return best


def test_an_observation_level_component_never_forms_its_rows_by_levels_block():
    """("schur_obs", c, k_c): H_uu's factor, log det and its first and second derivatives, the
    leverages and a solve hold O(n·m² + k_r²) numbers, never the k_c × k_r block that the
    general Schur factor forms (checked on the traced programs' every value)."""
    rng = np.random.default_rng(0)
    n, levels = 400, 40
    g = rng.integers(0, levels, n)
    Z = np.hstack([np.eye(levels)[g], np.eye(n)])
    ident = np.r_[np.zeros(levels, int), np.ones(n, int)]
    model = bg.PoissonBayesMixedGLM(rng.poisson(2.0, n), np.ones((n, 1)), Z, ident)
    with precision(np.float64):
        data = model._data()
        mode = design_mode(np.asarray(data.Z.cols), np.asarray(data.Z.vals),
                           np.asarray(data.ident))
        assert mode == ("schur_obs", 1, n, levels)  # the rest: one grouping factor
        vcp = jnp.asarray([-0.3, -0.8])
        w = jnp.asarray(rng.uniform(0.5, 3.0, n))
        b = jnp.ones(n + levels)

        def work(m):
            def f(v):
                F = factor_h_uu(v, w, m, data)
                q, hd = inverse_entries(v, F, m, data)
                return jnp.sum(q) + jnp.sum(hd) + jnp.sum(psd.solve(F, b, m))
            return jax.make_jaxpr(lambda v: (jax.hessian(logdet_h_uu(m))(v, w, data),
                                             jax.jacfwd(f)(v)))(vcp)

        block = n * levels  # k_c × k_r
        assert _largest_array(work(mode)) < block / 4
        assert _largest_array(work(("schur",) + mode[1:])) >= block  # the general factor's
