"""The blocked profiled deviance against a plain dense multivariate-normal log-density."""

import numpy as np
import pandas as pd
import pytest

from bayesglmm import mixedlm

from tests.helpers import dense_deviance


def _crossed(seed=0, n=150):
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({
        "a": rng.integers(0, 12, n).astype(str),
        "b": rng.integers(0, 7, n).astype(str),
        "c": rng.integers(0, 4, n).astype(str),
        "x": rng.normal(size=n),
    })
    df["y"] = 1 + 0.5 * df.x + rng.normal(size=n)
    df["x2"] = rng.normal(size=n)
    df["x3"] = rng.normal(size=n)
    return df


CASES = [
    # (label, data name, formula, kwargs)
    ("intercept", "sleep", "Reaction ~ Days", {"groups": "Subject"}),
    ("slope", "sleep", "Reaction ~ Days", {"groups": "Subject", "re_formula": "~Days"}),
    ("uncorrelated", "sleep", "Reaction ~ Days + (1 | Subject) + (0 + Days | Subject)", {}),
    ("double-bar", "sleep", "Reaction ~ Days + (Days || Subject)", {}),
    ("crossed", "pen", "diameter ~ 1 + (1 | plate) + (1 | sample)", {}),
    ("crossed3+slope", "sim", "y ~ x + (x | a) + (1 | b) + (0 + x2 | c)", {}),
    ("slope-in-rest", "sim", "y ~ x + (1 | a) + (x | b)", {}),
    ("nested", "sim", "y ~ x + (1 | c/b)", {}),
    ("four-covariates", "sim", "y ~ x + (x + x2 + x3 | a) + (1 | b)", {}),
    ("vc", "sim", "y ~ x", {"groups": "c", "vc_formula": {"b": "0 + C(b)"}}),
    ("vc+re", "sim", "y ~ x", {"groups": "c", "re_formula": "~x", "vc_formula": {"b": "0 + C(b)"}}),
    ("vc-general", "sim", "y ~ x", {"groups": "c", "re_formula": "0", "vc_formula": {"xs": "0 + x + x2"}}),
]


@pytest.fixture(scope="module")
def data(sleep, penicillin):
    return {"sleep": sleep, "pen": penicillin, "sim": _crossed()}


@pytest.mark.parametrize("label,dname,formula,kw", CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("reml", [True, False])
def test_deviance_matches_dense_mvn(data, label, dname, formula, kw, reml):
    model = mixedlm(formula, data[dname], **kw)
    rng = np.random.default_rng(1)
    theta = model._theta0 + 0.3 * rng.uniform(size=model.n_theta)
    ref = dense_deviance(model, theta, reml)
    for sparse in (True, False):
        got = model.deviance(theta, reml=reml, sparse=sparse)
        np.testing.assert_allclose(got, ref, rtol=1e-9, err_msg=f"sparse={sparse}")


@pytest.mark.parametrize("formula,sparse", [
    ("y ~ x + (x | a) + (1 | b) + (1 | c)", None),  # scalar terms after the largest
    ("y ~ x + (1 | a) + (x | b)", True),  # a correlated term inside the dense block
    ("y ~ x + (1 | a) + (x | b)", False),  # dense cross block
])
def test_gradient_matches_central_differences(data, formula, sparse):
    import jax.numpy as jnp

    from bayesglmm._precision import precision
    from bayesglmm.kernels.lmm import evaluate

    model = mixedlm(formula, data["sim"])
    theta = model._theta0 + 0.2
    with precision(np.float64):
        cp, st = model._crossprod(np.float64, sparse)
        _, g, _ = evaluate(jnp.asarray(theta), cp, st, True)  # the fit's value and gradient
    h = 1e-6
    fd = [
        (model.deviance(theta + h * e, sparse=sparse) - model.deviance(theta - h * e, sparse=sparse))
        / (2 * h)
        for e in np.eye(len(theta))
    ]
    np.testing.assert_allclose(np.asarray(g), fd, rtol=1e-5, atol=1e-6)


def test_float32_fit_close_to_float64(sleep):
    m = mixedlm("Reaction ~ Days", sleep, groups="Subject", re_formula="~Days")
    r64 = m.fit()
    r32 = m.fit(dtype=np.float32)
    np.testing.assert_allclose(r32.fe_params, r64.fe_params, rtol=1e-3)
    np.testing.assert_allclose(r32.llf, r64.llf, rtol=1e-4)
    np.testing.assert_allclose(r32.scale, r64.scale, rtol=2e-2)


@pytest.mark.parametrize("label,dname,formula,kw", CASES, ids=[c[0] for c in CASES])
def test_psi_theta_round_trip(data, label, dname, formula, kw):
    """statsmodels' ψ (per block the lower triangle of λλᵀ) maps back to θ (λ with a positive
    diagonal) on every term structure."""
    import jax.numpy as jnp

    from bayesglmm._precision import precision
    from bayesglmm.kernels.lmm import psi_to_theta, theta_to_psi

    model = mixedlm(formula, data[dname], **kw)
    rng = np.random.default_rng(2)
    theta = model._theta0 + 0.3 * rng.uniform(size=model.n_theta) - 0.1 * (model._lower < 0)
    _, st = model._crossprod(np.float64)
    psi = theta_to_psi(theta, st)
    with precision(np.float64):
        back = np.asarray(psi_to_theta(jnp.asarray(psi), st))
    np.testing.assert_allclose(back, theta, rtol=1e-12)


@pytest.mark.parametrize("formula,kw,sparse,reml", [
    ("y ~ x + (x | a) + (1 | b) + (1 | c)", {}, None, True),  # scalar terms after the largest
    ("y ~ x + (1 | a) + (x | b)", {}, True, False),  # a correlated term inside the dense block
    ("y ~ x", {"groups": "c", "re_formula": "~x", "vc_formula": {"b": "0 + C(b)"}}, False, True),
])
def test_second_order_matches_central_differences(data, formula, kw, sparse, reml):
    """The fit's Hessian program (kernels.lmm.second_order as kernels.lmm.programs compiles it,
    jax.jacfwd of jax.grad of the deviance through linalg.cholesky.logdet_solve_inverse): its
    value, gradient and estimates' maps equal evaluate's, its Hessian central differences of
    evaluate's gradient, and its ψ-Hessian central differences of ½d(θ(ψ))
    (tests/models/test_lmm.py compares it with psi_hessian)."""
    import jax.numpy as jnp

    from bayesglmm._precision import precision
    from bayesglmm.kernels.lmm import evaluate, programs, psi_to_theta, theta_to_psi

    model = mixedlm(formula, data["sim"], **kw)
    rng = np.random.default_rng(3)
    theta = model._theta0 + 0.3 * rng.uniform(size=model.n_theta) - 0.1 * (model._lower < 0)
    with precision(np.float64):
        cp, st = model._crossprod(np.float64, sparse)
        second_order = programs(cp, st)[1]
        psi = theta_to_psi(theta, st)
        val, grad, hess, h_psi, aux2 = second_order(theta, psi, cp, st, reml)
        dev, g, aux = evaluate(theta, cp, st, reml)
        np.testing.assert_allclose(val, dev, rtol=1e-12)
        np.testing.assert_allclose(grad, g, rtol=1e-9, atol=1e-9)
        for a, b in zip(aux2, aux):  # t, B1, B2: the estimates' maps
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-9, atol=1e-9)
        hess, h_psi = np.asarray(hess), np.asarray(h_psi)
        h = 1e-5
        fd = np.array([(np.asarray(evaluate(theta + h * e, cp, st, reml)[1])
                        - np.asarray(evaluate(theta - h * e, cp, st, reml)[1])) / (2 * h)
                       for e in np.eye(len(theta))])
        np.testing.assert_allclose(hess, fd, rtol=1e-5, atol=1e-5)

        def half_dev(p):
            return 0.5 * float(evaluate(psi_to_theta(jnp.asarray(p), st), cp, st, reml)[0])

        k = len(psi)
        hp, fd_psi = 1e-4, np.zeros((k, k))
        for i, ei in enumerate(np.eye(k) * hp):
            for j, ej in list(enumerate(np.eye(k) * hp))[: i + 1]:
                fd_psi[i, j] = fd_psi[j, i] = (
                    half_dev(psi + ei + ej) - half_dev(psi + ei - ej)
                    - half_dev(psi - ei + ej) + half_dev(psi - ei - ej)) / (4 * hp * hp)
    np.testing.assert_allclose(h_psi, fd_psi, rtol=1e-4, atol=1e-4 * np.abs(h_psi).max())


@pytest.mark.slow  # over ~8 s on CI's two cores (.ci/run runs it)
@pytest.mark.parametrize("formula,sparse", [
    ("y ~ x + (x | a) + (1 | b) + (1 | c)", True),  # scalar terms after the largest: S built
    ("y ~ x + (x | a) + (1 | b) + (1 | c)", False),  # with both triangles (two scatters)
    ("y ~ x + (1 | a) + (x | b)", True),  # a correlated term inside the dense block
])
def test_second_order_hessian_equals_the_plain_reference(data, formula, sparse):
    """second_order's Hessian (through the JVP rule of logdet_solve_inverse) equals
    deviance_hessian (jax.hessian through JAX's own Cholesky rules) to roundoff."""
    from bayesglmm._precision import precision
    from bayesglmm.kernels.lmm import deviance_hessian, programs, theta_to_psi

    model = mixedlm(formula, data["sim"])
    rng = np.random.default_rng(4)
    theta = model._theta0 + 0.3 * rng.uniform(size=model.n_theta) - 0.1 * (model._lower < 0)
    with precision(np.float64):
        cp, st = model._crossprod(np.float64, sparse)
        assert st.m > 0 and st.sparse == sparse
        hess = np.asarray(programs(cp, st)[1](theta, theta_to_psi(theta, st), cp, st, True)[2])
        ref = np.asarray(deviance_hessian(theta, cp, st, True))
    np.testing.assert_allclose(hess, ref, rtol=1e-10, atol=1e-10 * np.abs(ref).max())


@pytest.mark.slow  # over ~8 s on CI's two cores
def test_programs_chosen_by_size_agree(data, monkeypatch):
    """programs() gives the large-problem evaluate past its threshold (the entries an
    evaluation touches) and the light-options second_order past its own (the dense block's
    rows); the variants compute the same functions (the compiler options differ, not the
    programs)."""
    import jax.numpy as jnp

    from bayesglmm._precision import precision
    from bayesglmm.kernels import lmm as kl

    model = mixedlm("y ~ x + (x | a) + (1 | b) + (1 | c)", data["sim"])
    backend = kl.jax.default_backend()
    with precision(np.float64):
        theta = jnp.asarray(model._theta0 + 0.2)
        cp, st = model._crossprod(np.float64, True)
        small = kl.programs(cp, st)
        assert small == kl._small_programs(backend)  # a small model
        monkeypatch.setattr(kl, "_SMALL_WORK", 0)
        monkeypatch.setattr(kl, "_LIGHT_HESSIAN_M", 0)
        large = kl.programs(cp, st)
        assert large == (kl._large_evaluate(backend), kl._light_second_order(backend))
        ev = [np.asarray(p[0](theta, cp, st, True)[1]) for p in (small, large)]
        psi = kl.theta_to_psi(np.asarray(theta), st, np.float64)
        hess = [np.asarray(p[1](theta, psi, cp, st, True)[2]) for p in (small, large)]
    np.testing.assert_allclose(ev[1], ev[0], rtol=1e-10)
    np.testing.assert_allclose(hess[1], hess[0], rtol=1e-10, atol=1e-12)


def test_hessian_program_has_no_batched_lapack_call(data):
    """A vector random term's per-level blocks are factored entry by entry (linalg.small):
    jaxlib's batched LAPACK kernels deadlock when XLA runs two at once, which hung the fits of
    ``(x1 + x2 + x3 | g)`` with 500 groups (docs/architecture.md).  What LAPACK calls remain
    (the dense block, the fixed effects) are unbatched, tangents folded into their columns."""
    import re

    import jax
    import jax.numpy as jnp

    from bayesglmm._precision import precision
    from bayesglmm.kernels.lmm import deviance

    model = mixedlm("y ~ x + (x + x2 + x3 | a) + (1 | b)", data["sim"])
    with precision(np.float64):
        cp, st = model._crossprod(np.float64)
        theta = jnp.asarray(model._start())
        hlo = jax.jit(lambda t: jax.hessian(deviance)(t, cp, st, True)).lower(theta).as_text()
    calls = [ln for ln in hlo.splitlines() if re.search(r"custom_call @lapack_", ln)]
    batch = [int(b) for ln in calls for b in re.findall(r'num_batch_dims = "(\d+)"', ln)]
    assert len(batch) == len(calls) and not any(batch)


@pytest.mark.slow
def test_vector_terms_fit_without_hanging(tmp_path):
    """End to end, in a subprocess with a time limit (a deadlock never returns): six slopes
    in 40 groups, which hung before linalg.small."""
    import subprocess
    import sys

    code = (
        "import numpy as np, pandas as pd\n"
        "from bayesglmm import mixedlm\n"
        "rng = np.random.default_rng(0); G, n, q = 40, 30, 7\n"
        "g = np.repeat(np.arange(G), n); X = rng.normal(size=(G * n, q - 1))\n"
        "d = pd.DataFrame(X, columns=[f'x{j}' for j in range(1, q)])\n"
        "d['g'] = ['g%d' % i for i in g]; b = rng.normal(size=(G, q))\n"
        "d['y'] = b[g, 0] + (X * b[g, 1:]).sum(1) + rng.normal(size=G * n)\n"
        "xs = ' + '.join(d.columns[:q - 1])\n"
        "r = mixedlm(f'y ~ {xs} + ({xs} | g)', d).fit()\n"
        "print(r.converged, r.llf)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split()[0] == "True"
