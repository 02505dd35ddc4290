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
