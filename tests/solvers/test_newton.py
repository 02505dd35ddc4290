"""The structured Newton step against the dense-Hessian step, and the driver against scipy."""

import jax.numpy as jnp
import numpy as np
import pytest
from scipy import optimize
from scipy import sparse as sp

import bayesglmm as bg
from bayesglmm._precision import precision
from bayesglmm.fits.map import map_objective, map_program
from bayesglmm.fits.vb import vb_objective, vb_program
from bayesglmm.solvers import NewtonOptions, newton
from bayesglmm.solvers.newton import dense_step, structured_step
from tests.helpers import gen_crossed_logit, gen_simple_poisson


def _setup(gen, vb=False):
    y, X, Z, ident = gen
    model = bg.BinomialBayesMixedGLM(y, X, Z, ident) if set(np.unique(y)) <= {0, 1} else \
        bg.PoissonBayesMixedGLM(y, X, Z, ident)
    f = vb_objective(model.family, model.vb_rule) if vb else map_objective(model.family)
    return model, f


@pytest.mark.slow
@pytest.mark.parametrize("vb", [False, True])
@pytest.mark.parametrize("gen", [gen_simple_poisson(10, 10, 0.5), gen_crossed_logit(8, 8, 1, 2)],
                         ids=["one_factor", "crossed"])
def test_structured_step_equals_dense_step(gen, vb):
    """Near the optimum, where the Hessian is positive definite, both are the Newton step
    (away from it they differ by design: the structured step clips the Schur complement's
    eigenvalues, the dense step the full Hessian's)."""
    model, f = _setup(gen, vb)
    rs = np.random.default_rng(0)
    ka = (model.k_fep + model.k_vcp) * (2 if vb else 1)
    r = 2 if vb else 1
    if vb:
        res = model.fit_vb(rng=0)
        kf, kp = model.k_fep, model.k_vcp
        lsd = np.log(np.sqrt(res.cov_params()))
        a_opt = np.r_[res.params[:kf + kp], lsd[:kf + kp]]
        v_opt = np.column_stack([res.params[kf + kp:], lsd[kf + kp:]])
    else:
        res = model.fit_map(rng=0)
        a_opt = res.params[:ka]
        v_opt = (res.vc_mean * np.exp(-res.vcp_mean[model.ident]))[:, None]  # non-centred u
    with precision(np.float64):
        a = jnp.asarray(a_opt + 0.02 * rs.normal(size=ka))
        v = jnp.asarray(v_opt + 0.02 * rs.normal(size=(model.k_vc, r)))
        args = (model._data(), model._prior())
        color = jnp.asarray(model._color)
        da1, dv1, ga1, gv1, _, _ = structured_step(f, a, v, args, color, model._n_colors,
                                                   NewtonOptions(cg_tol=1e-13))
        da2, dv2, ga2, gv2 = dense_step(f, a, v, args)
    np.testing.assert_allclose(ga1, ga2, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(da1, da2, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(dv1, dv2, rtol=1e-7, atol=1e-9)


def test_newton_minimises_a_plain_function_like_scipy():
    """A small non-convex test function of (a, v): Newton and scipy's BFGS agree."""
    def f(a, v):
        return (jnp.sum((a - 1.0) ** 2) + jnp.sum(jnp.exp(a[0]) * v[:, 0] ** 2)
                + jnp.sum((v[:, 0] - 0.5 * a[1]) ** 2) + 0.1 * jnp.sum(a**4))

    with precision(np.float64):
        sol = newton(f, jnp.zeros(2), jnp.ones((5, 1)), (), opts=NewtonOptions())
        x = np.concatenate([np.asarray(sol.a), np.asarray(sol.v).ravel()])

    def F(x):
        with precision(np.float64):
            return float(f(jnp.asarray(x[:2]), jnp.asarray(x[2:, None])))

    ref = optimize.minimize(F, np.r_[0.0, 0, np.ones(5)], method="BFGS", options={"gtol": 1e-10})
    assert int(sol.status) == 0
    np.testing.assert_allclose(x, ref.x, atol=1e-6)


@pytest.mark.parametrize("dense", [False, True])
def test_an_ascent_direction_is_never_convergence(dense):
    """Where f is not convex in v (H_vv < 0) the v-block solve gives an ascent direction
    (gᵀd > 0); its 'decrement' −½gᵀd < 0 once passed the convergence test, so the driver
    reported status 0 at v0 = 0.1 with |g| = 0.4.  Now −g replaces it and the fit reaches
    a minimum of (v² − 1)²."""
    def f(a, v):
        return jnp.sum((a - 1.0) ** 2) + jnp.sum((v**2 - 1.0) ** 2)

    with precision(np.float64):
        for warm_v in (0, 8):
            sol = newton(f, jnp.zeros(1), jnp.full((1, 1), 0.1), dense=dense,
                         opts=NewtonOptions(warm_v=warm_v))
            assert int(sol.status) == 0
            np.testing.assert_allclose(np.abs(np.asarray(sol.v)), 1.0, atol=1e-8)
            np.testing.assert_allclose(np.asarray(sol.a), 1.0, atol=1e-8)
            assert float(sol.grad_norm) < 1e-6


@pytest.mark.slow
def test_fit_map_iterations_do_not_grow_with_n():
    """From statsmodels' random start (vc ~ N(0, 1)) Newton takes 15-30 iterations whatever n."""
    its = []
    for groups in (20, 200, 2000):
        rs = np.random.default_rng(0)
        n = groups * 50
        g = np.arange(n) % groups
        X = np.column_stack([np.ones(n), rs.normal(size=n)])
        eta = X @ [0.2, 0.5] + 0.7 * rs.normal(size=groups)[g]
        y = rs.poisson(np.exp(eta))
        Z = sp.csr_array((np.ones(n), (np.arange(n), g)), shape=(n, groups))
        model = bg.PoissonBayesMixedGLM(y, X, Z, np.zeros(groups, int))
        its.append(model.fit_map(rng=0).optim_retvals.nit)
    assert max(its) <= 40, its


@pytest.mark.slow
def test_dense_and_structured_fits_agree(monkeypatch):
    y, X, Z, ident = gen_crossed_logit(8, 8, 1, 2)
    model = bg.BinomialBayesMixedGLM(y, X, Z, ident)
    a = model.fit_map(rng=0)
    v = model.fit_vb(rng=0)
    import bayesglmm.fits.map as map_mod

    monkeypatch.setattr(map_mod, "DENSE_MAX", 0)
    b = model.fit_map(rng=0)
    w = model.fit_vb(rng=0)
    np.testing.assert_allclose(a.params, b.params, atol=1e-7)
    np.testing.assert_allclose(a.cov_params(), b.cov_params(), atol=1e-7)
    np.testing.assert_allclose(v.params, w.params, atol=1e-7)


@pytest.mark.slow
@pytest.mark.parametrize("vb", [False, True])
def test_structured_blocks_are_the_dense_hessian_blocks(vb):
    """Every block from the one linearisation of ∇f (crossed design: two colours) against
    ``jax.hessian`` of the flattened objective."""
    import jax

    from bayesglmm.solvers.newton import structured_blocks

    model, f = _setup(gen_crossed_logit(6, 5, 1, 2), vb)
    rs = np.random.default_rng(1)
    r = 2 if vb else 1
    ka = (model.k_fep + model.k_vcp) * r
    k = model.k_vc
    with precision(np.float64):
        a = jnp.asarray(0.3 * rs.normal(size=ka))
        v = jnp.asarray(0.3 * rs.normal(size=(k, r)))
        args = (model._data(), model._prior())
        ga, gv, Haa, Hva, blocks, hvp = structured_blocks(f, a, v, args,
                                                          jnp.asarray(model._color),
                                                          model._n_colors)
        H = jax.hessian(lambda x: f(x[:ka], x[ka:].reshape(k, r), *args))(
            jnp.concatenate([a, v.ravel()]))
        u = jnp.asarray(rs.normal(size=(k, r)))
        hu = hvp(u)
    H = np.asarray(H)
    Hvv = H[ka:, ka:].reshape(k, r, k, r)
    np.testing.assert_allclose(Haa, H[:ka, :ka], rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(Hva, H[ka:, :ka].reshape(k, r, ka), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(blocks, Hvv[np.arange(k), :, np.arange(k), :], rtol=1e-10,
                               atol=1e-10)
    np.testing.assert_allclose(hu, np.einsum("jrks,ks->jr", Hvv, u), rtol=1e-10, atol=1e-10)


def test_solution_counts_all_the_work(monkeypatch):
    """n_iter includes the v-only warm-up steps; line-search evaluations and CG iterations
    are counted too (crossed design, structured path: inexact Newton with CG)."""
    import bayesglmm.fits.map as map_mod

    monkeypatch.setattr(map_mod, "DENSE_MAX", 0)
    y, X, Z, ident = gen_crossed_logit(8, 8, 1, 2)
    model = bg.BinomialBayesMixedGLM(y, X, Z, ident)
    sol = model.fit_map(rng=0).optim_retvals
    assert sol.status == 0
    assert 1 <= sol.n_warm <= NewtonOptions().warm_v
    assert sol.nit > sol.n_warm
    assert sol.n_fev >= sol.nit  # at least one evaluation per step
    assert sol.n_cg >= 1


def test_a_second_fit_does_not_recompile(monkeypatch):
    """The jitted Newton programs (structured path) are traced once per static configuration
    and shape: a new random start, or other iteration limits, reuse them."""
    import bayesglmm.fits.map as map_mod

    monkeypatch.setattr(map_mod, "DENSE_MAX", 0)
    y, X, Z, ident = gen_crossed_logit(8, 8, 1, 2)
    model = bg.BinomialBayesMixedGLM(y, X, Z, ident)
    model.fit_map(rng=0)
    model.fit_vb(rng=0)
    # crossed design with the full covariance: the step at the mode is a gradient
    programs = (map_program(model.family, False, model._n_colors),
                vb_program(model.family, model.vb_rule, False, model._n_colors))
    sizes = lambda: [p._cache_size() for p in programs]  # noqa: E731
    before = sizes()
    assert before == [1, 1]
    model.fit_map(rng=1, minim_opts={"maxiter": 50})
    model.fit_vb(rng=1, minim_opts={"gtol": 1e-7})
    assert sizes() == before
