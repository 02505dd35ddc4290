"""The integrated fit (fits/integrate.py, fits/nodes.py): the node designs' exactness, the
third derivatives against plain nested autodiff, clear errors where a fit cannot be
integrated, accuracy against NUTS (cbpp, grouseticks), and time and peak memory on
grouseticks, a VerbAgg-shaped crossed binary design and four crossed factors, each fit in a
subprocess (benchmarks/bench_integrate.py's worker)."""

import itertools
import json
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import sparse

import bayesglmm as bg
from bayesglmm._precision import precision
from bayesglmm.exceptions import IntegrationWarning
import bayesglmm.fits.integrate as integrate_mod
from bayesglmm.fits.integrate import (_last_value, _node_eval_kernel, _node_kernel,
                                       integrate_vcp)
from bayesglmm.fits.joint import node_hessian_kernel
from bayesglmm.fits.laplace import default_options, fit_laplace, laplace_kernels
from bayesglmm.fits.nodes import MAX_DIM, ccd, node_design, two_level
from bayesglmm.kernels.laplace_correction import laplace_correction
from bayesglmm.kernels.marginal import conditional_mode, objective
from benchmarks.bench_integrate import model as bench_model
from benchmarks.bench_integrate import run_worker
from tests.helpers import gen_crossed_logit

REF = Path(__file__).parents[1] / "reference"


# ----------------------------------------------------------------------------- node designs
@pytest.mark.parametrize("m", range(1, 9))
def test_node_design_is_exact_for_low_moments(m):
    """Σw = 1, E[z] = 0, E[zzᵀ] = I, all third moments 0 under N(0, I) — and for the CCD
    (m ≥ 3) the mixed fourth moments of distinct coordinates 0 too."""
    z, w = node_design(m)
    assert z.shape == (w.shape[0], m) and np.all(w > 0)
    np.testing.assert_allclose(w.sum(), 1.0, atol=1e-13)
    np.testing.assert_allclose(w @ z, 0.0, atol=1e-13)
    np.testing.assert_allclose(np.einsum("k,ki,kj->ij", w, z, z), np.eye(m), atol=1e-12)
    for i, j, k in itertools.product(range(m), repeat=3):
        assert abs(w @ (z[:, i] * z[:, j] * z[:, k])) < 1e-12
    for idx in itertools.combinations(range(m), 4):
        assert abs(w @ np.prod(z[:, idx], axis=1)) < 1e-12
    expected = {1: 7, 2: 25, 3: 15, 4: 25, 5: 27, 6: 45, 7: 79, 8: 81}
    assert z.shape[0] == expected[m]


@pytest.mark.parametrize("m", range(3, MAX_DIM + 1))
def test_two_level_design_has_resolution_five(m):
    """No product of 1 to 4 distinct columns is constant (no word of length ≤ 4): main effects
    and two-factor interactions are mutually orthogonal."""
    s = two_level(m)
    assert set(np.unique(s)) == {-1.0, 1.0}
    for r in (1, 2, 3, 4):
        for idx in itertools.combinations(range(m), r):
            assert np.prod(s[:, idx], axis=1).mean() == 0.0


def test_ccd_points_lie_on_the_sphere():
    z, w = ccd(5, f0=1.1)
    np.testing.assert_allclose(np.linalg.norm(z[1:], axis=1), 1.1 * np.sqrt(5))
    np.testing.assert_allclose(w[0], 1 - 1 / 1.1**2)


def test_node_design_rejects_bad_dimensions():
    with pytest.raises(ValueError, match="no variance parameters"):
        node_design(0)
    with pytest.raises(ValueError, match=f"more than {MAX_DIM}"):
        node_design(MAX_DIM + 1)
    with pytest.raises(ValueError, match="n_points"):
        node_design(2, n_points=0)
    assert node_design(3, n_points=3)[0].shape == (27, 3)


def test_too_many_variance_parameters_fail_before_fitting():
    """13 grouping factors: a clear ValueError naming the fallback, before any compilation."""
    rng = np.random.default_rng(0)
    n, k = 60, MAX_DIM + 1
    g = rng.integers(0, 3, size=(n, k))
    Z = sparse.hstack([sparse.csr_array((np.ones(n), (np.arange(n), g[:, c])), shape=(n, 3))
                       for c in range(k)]).tocsr()
    m = bg.BinomialBayesMixedGLM(rng.integers(0, 2, n).astype(float), np.ones((n, 1)), Z,
                                 np.repeat(np.arange(k), 3))
    with pytest.raises(ValueError, match="without integrate"):
        fit_laplace(m.family, m._data(), m._prior(), m.k_fep, mode=m._design_mode,
                    priors=True, integrate=True)


# ----------------------------------------------------------------------------- small model
@pytest.fixture(scope="module")
def crossed():
    y, X, Z, ident = gen_crossed_logit(6, 5, 1, 2)
    X = np.column_stack([X, np.linspace(-1, 1, len(y))])
    return bg.BinomialBayesMixedGLM(y, X, sparse.csr_array(Z), ident, vcp_p=0.5)


@pytest.mark.slow
def test_node_eval_program_equals_the_two_it_fuses(crossed, monkeypatch):
    """_node_eval_kernel: fits.joint's vg and the node's terms from one program, equal to
    the two programs' outputs; an integrated fit then calls the node program alone only for
    a solve that did not stop at such an evaluation (none here), with the same moments; and
    the same again when the mode fit's last evaluation is not handed over (at_mode)."""
    m = crossed
    mode = m._design_mode
    opts = default_options(np.float64)
    with precision(np.float64):
        data, prior = m._data(), m._prior()
        theta = jnp.array([-0.3, 0.4, 0.2, 0.4])
        u = conditional_mode(m.family, mode)(theta, jnp.zeros(m.k_vc), data)
        *vg, terms = _node_eval_kernel(m.family, mode, opts)(theta, u, data, prior)
        ref_vg = node_hessian_kernel(m.family, mode, opts)(theta, u, data, prior)
        ref_terms = _node_kernel(m.family, mode)(theta, u, *ref_vg[3], data)
    for a, b in zip(jax.tree.leaves((vg, terms)), jax.tree.leaves((ref_vg, ref_terms))):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-12, atol=1e-13)
    fit = _integrated(m)
    calls = []
    real = integrate_mod._node_kernel

    def counted(*args, **kw):
        node = real(*args, **kw)
        return lambda *a: calls.append(1) or node(*a)

    monkeypatch.setattr(integrate_mod, "_node_kernel", counted)
    again = _integrated(m)
    assert not calls
    np.testing.assert_array_equal(again.fe_mean, fit.fe_mean)
    np.testing.assert_array_equal(again.cov, fit.cov)
    np.testing.assert_array_equal(again.vc_sd, fit.vc_sd)
    with precision(np.float64):  # J's exact Hessian at the nodes: the node program's route
        mode_fit = fit_laplace(m.family, data, prior, m.k_fep, mode=mode, priors=True)
        exact = integrate_vcp(m.family, data, prior, mode_fit, mode=mode, exact_nodes=True)
        # without the mode fit's last evaluation (at_mode), evaluated again: the same fit
        alone = integrate_vcp(m.family, data, prior, mode_fit, mode=mode)
    np.testing.assert_array_equal(alone.cov, fit.cov)
    assert calls
    np.testing.assert_allclose(exact.fe_mean, fit.fe_mean, atol=0.01 * np.sqrt(fit.cov[0, 0]))


@pytest.mark.slow
def test_first_evaluation_program_equals_the_two_it_fuses(crossed, monkeypatch):
    """_first_kernel (a fixed design's node's inner solve and first evaluation in one program)
    gives what the fit's ``value`` (to NODE_INNER_TOL) followed by _node_eval_kernel at its u*
    give; an integrated fit evaluates every node with it (and J's remainder at the mode), and
    its moments equal those of the two programs in turn with the inner solve to the fit's
    1e-11."""
    m = crossed
    mode = m._design_mode
    opts = default_options(np.float64)
    calls = []
    real = integrate_mod._first_kernel

    def counted(*args):
        first = real(*args)
        return lambda *a: calls.append(1) or first(*a)

    def unfused(family, mode, opts, small, fe_only, tol=integrate_mod.NODE_INNER_TOL):
        value = laplace_kernels(family, mode, True, opts._replace(inner_tol=tol), small).value
        vg_node = _node_eval_kernel(family, mode, opts, small, fe_only)

        def first(theta, u, du, dtheta, data, prior):
            _, u = value(theta, u, du, dtheta, data, prior)
            return (u, *vg_node(theta, u, data, prior))

        return first

    with precision(np.float64):
        data, prior = m._data(), m._prior()
        theta0, theta = jnp.array([-0.2, 0.3, 0.1, 0.3]), jnp.array([-0.3, 0.4, 0.2, 0.4])
        u0 = conditional_mode(m.family, mode)(theta0, jnp.zeros(m.k_vc), data)
        du = 0.1 * jnp.ones((m.k_vc, 4))
        args = (theta, u0, du, theta - theta0, data, prior)
        got = real(m.family, mode, opts, False, True)(*args)
        want = unfused(m.family, mode, opts, False, True)(*args)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-11, atol=1e-13)
    monkeypatch.setattr(integrate_mod, "_first_kernel", counted)
    monkeypatch.setattr(integrate_mod, "_node_eval_kernel", None)  # not used by a fixed design
    fit = _integrated(m)
    # the 5 × 5 grid's nodes, one call each at least, the central one's (at the mode) that of
    # J's remainder there
    assert len(calls) >= 25
    # the two programs in turn, the inner solve to the fit's own tolerance (1e-11)
    monkeypatch.setattr(integrate_mod, "_first_kernel",
                        lambda *a: unfused(*a, tol=opts.inner_tol))
    ref = _integrated(m)
    np.testing.assert_allclose(fit.fe_mean, ref.fe_mean, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(fit.cov, ref.cov, rtol=1e-8, atol=1e-9)
    np.testing.assert_allclose(fit.vc_sd, ref.vc_sd, rtol=1e-8, atol=1e-9)


@pytest.mark.slow  # over ~8 s on CI's two cores
def test_fixed_designs_take_the_fe_only_derivatives(crossed, monkeypatch):
    """A fixed design (here the 5 × 5 grid) evaluates its nodes with the derivatives along
    fe only (_first_kernel, and not _node_eval_kernel); the lattice (design="grid"), whose
    neighbour starts need those along vcp, with all (_node_eval_kernel) — and the fixed
    design's moments are those of the full derivatives to roundoff."""
    seen = []
    real, real_first = integrate_mod._node_eval_kernel, integrate_mod._first_kernel

    def spy(family, mode, opts, small=False, fe_only=False):
        seen.append(("eval", fe_only))
        return real(family, mode, opts, small, fe_only)

    def spy_first(family, mode, opts, small=False, fe_only=False):
        seen.append(("first", fe_only))
        return real_first(family, mode, opts, small, fe_only)

    monkeypatch.setattr(integrate_mod, "_node_eval_kernel", spy)
    monkeypatch.setattr(integrate_mod, "_first_kernel", spy_first)
    fit = _integrated(crossed)
    assert seen == [("first", True)]
    _integrated(crossed, design="grid")
    assert seen == [("first", True), ("eval", False)]
    monkeypatch.setattr(integrate_mod, "_first_kernel",
                        lambda *args: real_first(*args[:-1], False))  # all directions
    full = _integrated(crossed)
    np.testing.assert_allclose(full.fe_mean, fit.fe_mean, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(full.cov, fit.cov, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(full.vc_sd, fit.vc_sd, rtol=1e-9, atol=1e-12)


@pytest.mark.slow
def test_vc_skewness_correction_matches_dense_reference(crossed):
    """−½ Λ H_uu⁻¹ T from leverages and the Schur factor against the dense formula with the
    full third-derivative tensor of h(u) (jacfwd ∘ jacfwd ∘ grad) and a dense inverse; the node
    program's other outputs equal the fit's ``finish`` and kernels.laplace_correction's."""
    m = crossed
    mode = m._design_mode
    assert mode[0] == "schur"
    with precision(np.float64):
        data = m._data()
        theta = jnp.array([-0.3, 0.4, 0.2, 0.4])
        u = conditional_mode(m.family, mode)(theta, jnp.zeros(m.k_vc), data)
        obj = objective(m.family, mode, True)
        _, _, _, du, F = jax.jit(obj.vgh_at)(theta, u, data, m._prior())
        vc, var, J, terms, got = _node_kernel(m.family, mode)(theta, u, du, F, data)
        kern = laplace_kernels(m.family, mode, True, default_options(np.float64))
        for a, b in zip((vc, var, J), kern.finish(theta, u, (du, F), data, m._prior())):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(np.asarray(terms), np.asarray(
            laplace_correction(m.family, mode)(theta, u, F, data)), rtol=1e-12, atol=1e-14)
        e = jnp.exp(theta[2:][data.ident])
        X, Zd = jnp.asarray(m.exog), jnp.asarray(m.exog_vc.toarray())

        def h(v):
            eta = X @ theta[:2] + Zd @ (e * v)
            return -jnp.sum(m.family.loglik(data.y, eta, data.n_trials, data.weights)) \
                + 0.5 * v @ v

        H = jax.hessian(h)(u)
        h3 = jax.jacfwd(jax.jacfwd(jax.grad(h)))(u)
        Hi = jnp.linalg.inv(H)
        ref = e * (-0.5 * Hi @ jnp.einsum("abc,bc->a", h3, Hi))
    np.testing.assert_allclose(np.asarray(got), np.asarray(ref), rtol=1e-9, atol=1e-12)
    assert np.max(np.abs(np.asarray(ref))) > 1e-3  # not a trivially zero correction


@pytest.mark.slow
def test_singular_or_indefinite_mode_is_a_clear_error(crossed):
    m = crossed
    with precision(np.float64):
        data, prior = m._data(), m._prior()
        fit = fit_laplace(m.family, data, prior, m.k_fep, mode=m._design_mode, priors=True)
        integ = integrate_vcp(m.family, data, prior, fit, mode=m._design_mode)
        assert integ.converged.all() and abs(integ.weights.sum() - 1) < 1e-12
        assert integ.nodes.shape == (25, 2) and integ.vc_sd.shape == (m.k_vc,)
        with pytest.raises(ValueError, match="variance is estimated at zero"):
            integrate_vcp(m.family, data, prior, fit._replace(singular=np.array([True, False])),
                          mode=m._design_mode)
        bad = fit.cov.copy()
        bad[2:, 2:] = [[1.0, 2.0], [2.0, 1.0]]
        with pytest.raises(ValueError, match="not positive definite"):
            integrate_vcp(m.family, data, prior, fit._replace(cov=bad), mode=m._design_mode)


def test_the_last_inner_solve_is_reused_only_for_the_same_arguments():
    """_last_value: a lattice point screened and then solved does its inner solve once; any
    other θ, dθ or warm start (another array, even an equal one) calls through."""
    calls = []

    def value(theta, u, du, dtheta, data, prior):
        calls.append(1)
        return float(theta.sum() + dtheta.sum()), u

    v = _last_value(value)
    th, u, du = np.arange(3.0), jnp.ones(2), jnp.zeros((2, 3))
    first = v(th, u, du, th - 1, "data", "prior")
    assert v(th.copy(), u, du, th - 1, "data", "prior") is first and len(calls) == 1
    v(th + 1, u, du, th - 1, "data", "prior")
    v(th + 1, u, du, th, "data", "prior")
    v(th + 1, jnp.ones(2), du, th, "data", "prior")
    assert len(calls) == 4


def test_lattice_agrees_with_gauss_hermite_in_one_dimension():
    """cbpp (one variance parameter): design="grid" (the lattice, with the second-order
    correction, as the 7-point Gauss–Hermite rule) gives the same posterior moments as the
    default rule, to 1% of the posterior SDs."""
    model = bench_model("cbpp")
    gh = _integrated(model)
    lat = _integrated(model, design="grid")
    assert lat.nodes.shape != gh.nodes.shape or not np.allclose(lat.nodes, gh.nodes)
    sd = np.sqrt(np.diag(gh.cov))
    np.testing.assert_allclose(np.r_[lat.fe_mean, lat.vcp_mean], np.r_[gh.fe_mean, gh.vcp_mean],
                               atol=0.01 * sd.min())
    np.testing.assert_allclose(np.sqrt(np.diag(lat.cov)), sd, rtol=0.01)
    np.testing.assert_allclose(lat.vc_sd, gh.vc_sd, rtol=0.01)


def test_unknown_design_is_a_clear_error_before_fitting(crossed):
    with pytest.raises(ValueError, match="'ccd' or 'grid'; got 'lattice'"):
        crossed.fit_laplace(integrate="lattice")
    with pytest.raises(ValueError, match="design must be one of"):
        integrate_vcp(crossed.family, crossed._data(), crossed._prior(), None,
                      mode=crossed._design_mode, design="sparse")


# ----------------------------------------------------------------------------- NUTS
def _errors(model, integ, ref):
    """Standardised errors against a NUTS reference: (fe/vcp mean errors in posterior SDs,
    fe/vcp SD ratios − 1, vc mean errors in SDs, vc SD ratios − 1)."""
    kf = model.k_fep
    m_ref = np.r_[list(ref["fe_mean"].values()), list(ref["vcp_mean"].values())]
    s_ref = np.r_[list(ref["fe_sd"].values()), list(ref["vcp_sd"].values())]
    mean = np.r_[integ.fe_mean, integ.vcp_mean]
    sd = np.sqrt(np.diag(integ.cov))
    assert len(ref["fe_mean"]) == kf and len(ref["vcp_mean"]) == model.k_vcp
    vc_m, vc_s = [], []
    for name, c in zip(model.vc_names, model.ident):
        level = name.split("[")[-1].rstrip("]")
        comp = model.vcp_names[c]
        vc_m.append(ref["vc_mean"][comp][level])
        vc_s.append(ref["vc_sd"][comp][level])
    vc_m, vc_s = np.array(vc_m), np.array(vc_s)
    return ((mean - m_ref) / s_ref, sd / s_ref - 1, (integ.vc_mean - vc_m) / vc_s,
            integ.vc_sd / vc_s - 1)


def _integrated(model, design="auto"):
    with precision(np.float64):
        fit = fit_laplace(model.family, model._data(), model._prior(), model.k_fep,
                          mode=model._design_mode, priors=True, integrate=True, design=design)
    assert fit.success and fit.integrated.converged.all()
    return fit.integrated


# measured (fe and vcp: max |mean error| in SDs, max |SD ratio − 1|; vc: median and 90th
# percentile of |mean error| in SDs and of |SD ratio − 1|):
#   cbpp        vcp_p = 1:   0.013, 0.012;  vc 0.005 / 0.021,  0.012 / 0.016
#   cbpp        vcp_p = 0.5: 0.012, 0.015;  vc 0.008 / 0.023,  0.014 / 0.020
# (without the second-order Laplace correction: 0.030, 0.016 and 0.024, 0.018; the vcp
# mean error was the largest, 0.030 / 0.024 SD; with it 0.001 / 0.006)
@pytest.mark.slow
@pytest.mark.parametrize("vcp_p", [1.0, 0.5])
def test_cbpp_matches_nuts(vcp_p):
    ref = json.loads((REF / "posterior_nuts_cbpp.json").read_text())["fits"]
    model = bench_model("cbpp", vcp_p=vcp_p)
    dm, ds, vm, vs = _errors(model, _integrated(model), ref[f"vcp_p={vcp_p},fe_p=2.0"])
    np.testing.assert_array_less(np.abs(dm), 0.05)
    np.testing.assert_array_less(np.abs(ds), 0.05)
    assert abs(dm[-1]) < 0.015  # the herd log SD: the Laplace bias corrected
    assert np.median(np.abs(vm)) < 0.05 and np.quantile(np.abs(vm), 0.9) < 0.1
    assert np.median(np.abs(vs)) < 0.05 and np.quantile(np.abs(vs), 0.9) < 0.05


def _grouseticks_errors(vcp_p):
    ref = json.loads((REF / "posterior_nuts_grouseticks.json").read_text())["fits"]
    model = bench_model("grouseticks", vcp_p=vcp_p)
    dm, ds, vm, vs = _errors(model, _integrated(model), ref[f"vcp_p={vcp_p},fe_p=2.0"])
    print(f"grouseticks vcp_p={vcp_p}: mean errors {np.round(dm, 3)}, SD ratios − 1 "
          f"{np.round(ds, 3)}; vc mean errors median {np.median(np.abs(vm)):.3f}, 90% "
          f"{np.quantile(np.abs(vm), 0.9):.3f}; vc SD errors median "
          f"{np.median(np.abs(vs)):.3f}, 90% {np.quantile(np.abs(vs), 0.9):.3f}")
    return dm, ds, vm, vs


# measured on grouseticks (fe: 4 fixed effects, then the log SDs of BROOD, INDEX, LOCATION),
# with the default design: the CCD's misfit (0.77 at vcp_p = 1, 0.51 at 0.5) sends it to the
# lattice (204 and 170 nodes), with the second-order Laplace correction:
#   vcp_p = 1:   fe mean errors ≤ 0.018 SD, SDs within 0.8%; vcp mean errors −0.024, 0.004,
#                −0.017 SD, SD ratios − 1: 0.007, −0.003, 0.003; vc 0.003 / 0.007, 0.005 / 0.011
#   vcp_p = 0.5: fe ≤ 0.014 SD, SDs within 1%; vcp −0.032, 0.010, −0.018 SD, SDs within
#                0.5%; vc 0.003 / 0.007, 0.005 / 0.012
# On the CCD alone (integrate="ccd") the LOCATION log SD — whose posterior has a long left
# tail, bending the other log SDs with it — comes out 29% narrow at vcp_p = 1 and the INDEX
# log SD 0.10 SD low (the Laplace bias the correction removes).
@pytest.mark.slow
@pytest.mark.parametrize("vcp_p", [1.0, 0.5])
def test_grouseticks_matches_nuts(vcp_p):
    """The issue's firm target for fe and vcp (means within 0.05 posterior SD, SDs within 5%)
    and its aim for the random effects (0.1 SD / 10% at the 90th percentile), with the
    default design — which says, with an IntegrationWarning, that it left the CCD."""
    with pytest.warns(IntegrationWarning, match="lattice that follows it"):
        dm, ds, vm, vs = _grouseticks_errors(vcp_p)
    np.testing.assert_array_less(np.abs(dm), 0.05)
    np.testing.assert_array_less(np.abs(ds), 0.05)
    assert np.median(np.abs(vm)) < 0.05 and np.quantile(np.abs(vm), 0.9) < 0.1
    assert np.median(np.abs(vs)) < 0.05 and np.quantile(np.abs(vs), 0.9) < 0.1


@pytest.mark.slow
def test_grouseticks_ccd_on_request_is_what_the_misfit_warns_about():
    """integrate="ccd" keeps the 15-point CCD without a warning, and its LOCATION log SD is
    the 29%-narrow one the lattice corrects."""
    ref = json.loads((REF / "posterior_nuts_grouseticks.json").read_text())["fits"]
    model = bench_model("grouseticks", vcp_p=1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", IntegrationWarning)
        r = model.fit_laplace(priors=True, integrate="ccd")
    assert len(r.marginal.integrated.weights) == 15
    sd_ref = ref["vcp_p=1.0,fe_p=2.0"]["vcp_sd"]["LOCATION"]
    assert r.vcp_sd[2] / sd_ref - 1 < -0.2


def _three_components(case):
    """A simulated Poisson model of tests/reference/nuts_three_components.py (400 rows: an
    observation-level effect and two grouping factors, "nested" or "crossed")."""
    import pandas as pd

    df = pd.read_csv(REF / "three_components.csv")
    df = df[df["case"] == case].drop(columns="case").reset_index(drop=True)
    return bg.PoissonBayesMixedGLM.from_formula(
        "y ~ x", {"A": "0 + C(A)", "B": "0 + C(B)", "O": "0 + C(O)"}, df, vcp_p=1.0)


def _fe_vcp_errors(model, integ, ref):
    """(fe/vcp mean errors in NUTS posterior SDs, fe/vcp SD ratios − 1)."""
    m_ref = np.r_[list(ref["fe_mean"].values()), list(ref["vcp_mean"].values())]
    s_ref = np.r_[list(ref["fe_sd"].values()), list(ref["vcp_sd"].values())]
    assert len(m_ref) == model.k_fep + model.k_vcp
    return ((np.r_[integ.fe_mean, integ.vcp_mean] - m_ref) / s_ref,
            np.sqrt(np.diag(integ.cov)) / s_ref - 1)


# measured against NUTS (fe and vcp, max |mean error| in SDs, max |SD ratio − 1|):
#   nested  (CCD misfit 0.47): lattice 0.013, 0.023;  CCD 0.13, 0.225 (the B log SD)
#   crossed (CCD misfit 0.39): lattice 0.008, 0.011;  CCD 0.12, 0.090
@pytest.mark.slow
@pytest.mark.parametrize("case", ["nested", "crossed"])
def test_a_ccd_that_misfits_by_less_than_half_is_left_for_the_lattice(case):
    """Misfits between CCD_MISFIT (0.35) and the former threshold 0.5: the CCD's log SDs come
    out more than 5% narrow against NUTS, so integrate=True takes the lattice — with the
    warning — which meets the firm target (means within 0.05 SD, SDs within 5%)."""
    from bayesglmm.fits.integrate import CCD_MISFIT

    ref = json.loads((REF / "posterior_nuts_three_components.json").read_text())["fits"][case]
    model = _three_components(case)
    with pytest.warns(IntegrationWarning, match=f"more than {CCD_MISFIT}.*lattice that"):
        integ = _integrated(model)
    assert len(integ.weights) > 100
    dm, ds = _fe_vcp_errors(model, integ, ref)
    np.testing.assert_array_less(np.abs(dm), 0.05)
    np.testing.assert_array_less(np.abs(ds), 0.05)
    ccd = _integrated(model, design="ccd")
    assert len(ccd.weights) == 15
    _, ds_ccd = _fe_vcp_errors(model, ccd, ref)
    assert np.abs(ds_ccd).max() > 0.07


def test_a_ccd_within_its_misfit_adds_the_laplace_correction(monkeypatch):
    """Where the CCD is kept (its misfit within CCD_MISFIT, here raised so that a small model
    keeps it), the default adds the second-order Laplace correction: the same weights as
    correct=True, not correct=False; on request (design="ccd") above the threshold it is
    left out."""
    model = _three_components("crossed")
    with precision(np.float64):
        data, prior, mode = model._data(), model._prior(), model._design_mode
        fit = fit_laplace(model.family, data, prior, model.k_fep, mode=mode, priors=True)

        def run(**kw):
            return integrate_vcp(model.family, data, prior, fit, mode=mode, **kw)

        plain, corrected = run(design="ccd", correct=False), run(design="ccd", correct=True)
        np.testing.assert_allclose(run(design="ccd").weights, plain.weights, rtol=1e-6)
        monkeypatch.setattr(integrate_mod, "CCD_MISFIT", 1.0)
        with warnings.catch_warnings():
            warnings.simplefilter("error", IntegrationWarning)
            auto = run()
    assert len(auto.weights) == 15
    # (equal to the node solves' tolerance: each stops at a Newton decrement, not exactly)
    np.testing.assert_allclose(auto.weights, corrected.weights, rtol=1e-6)
    np.testing.assert_allclose(auto.vcp_mean, corrected.vcp_mean, rtol=1e-6)
    assert np.abs(corrected.vcp_mean - plain.vcp_mean).max() > 1e-3


# ----------------------------------------------------------------------------- scale
@pytest.mark.slow
@pytest.mark.parametrize("case", ["crossed-binary", "four-factors", "grouseticks"])
def test_integrate_time_and_peak_memory(case):
    """Each fit in a fresh process (no compilation cache), first call: integrate=True
    finishes, its nodes converge and its peak memory (VmHWM: ru_maxrss would report this
    pytest process's size, inherited across exec) stays bounded (measured 650–900 MB,
    +150–300 MB over the mode fit: the extra compiled programs; the old vmapped
    version asked for 146 GB on grouseticks and hung at 8 GB on the crossed binary design).
    Its cost against the mode fit is measured, not asserted (benchmarks/bench_integrate.py,
    benchmarks/RESULTS.md)."""
    i = run_worker(case, "integrate", repeats=0, timeout=600)
    assert i["converged"]
    if case == "grouseticks":  # the CCD's misfit sends it to the lattice
        assert 100 < i["nodes"] <= 729
    else:
        assert i["nodes"] == 25
    assert i["peak_mb"] < 1500
    if case == "crossed-binary":
        p = run_worker(case, "priors", repeats=0, timeout=600)
        assert p["converged"]
        assert i["peak_mb"] <= p["peak_mb"] + 500
