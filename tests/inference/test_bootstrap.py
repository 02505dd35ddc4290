"""The vmapped parametric bootstrap: each replicate's refit equals MixedLM.fit of the simulated
response, and the cross-products of a replicate equal those the model builds."""

import numpy as np
import pytest

from bayesglmm import datasets, mixedlm
from bayesglmm.inference._lmm import lmm_parts
from bayesglmm.inference.bootstrap import _batched_crossprod, bootstrap, simulate


def test_batched_crossproducts_match_the_model(sleep_fits):
    m = sleep_fits["m1"].model
    parts = lmm_parts(m)
    cpb = _batched_crossprod(m, parts.cp, (m.design.y - parts.yshift)[:, None])
    np.testing.assert_allclose(cpb.b1[0], parts.cp.b1, rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(cpb.b2[0], parts.cp.b2, rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(cpb.xy[0], parts.cp.xy, rtol=1e-12, atol=1e-6)


@pytest.mark.slow  # over ~8 s on CI's two cores (.ci/run runs it)
@pytest.mark.parametrize("formula", ["Reaction ~ Days + (Days | Subject)",
                                     "Reaction ~ Days + (1 | Subject)"])
def test_replicates_equal_individual_fits(formula):
    df = datasets.load("sleepstudy")
    r = mixedlm(formula, df).fit()
    Y = simulate(r, 3, np.random.default_rng(5))
    b = bootstrap(r, n=3, seed=np.random.default_rng(5), batch=2)  # padded last batch
    assert b.converged.all() and b.replicates.shape[0] == 3
    for j in range(3):
        rr = mixedlm(formula, df.assign(Reaction=Y[:, j])).fit()
        np.testing.assert_allclose(b.replicates.iloc[j][list(rr.fe_params.index)],
                                   rr.fe_params, rtol=1e-6)
        assert b.replicates.iloc[j]["sigma"] == pytest.approx(np.sqrt(rr.scale), rel=1e-5)


@pytest.mark.slow  # over ~8 s on CI's two cores (.ci/run runs it)
def test_no_spurious_boundary_fits():
    """Replicates 6 and 89 of this stream have interior optima that a Newton iteration bounded
    at θ_jj ≥ 0 missed (stuck at θ_jj = 0, where ∂d/∂θ_jj = 0): they match MixedLM.fit."""
    df = datasets.load("sleepstudy")
    r = mixedlm("Reaction ~ Days + (Days | Subject)", df).fit()
    Y = simulate(r, 100, np.random.default_rng(7))
    b = bootstrap(r, n=100, seed=np.random.default_rng(7))
    for j in (6, 89):
        rr = mixedlm("Reaction ~ Days + (Days | Subject)", df.assign(Reaction=Y[:, j])).fit()
        cor = rr.varcorr["sdcor"].iloc[2]
        assert b.replicates.iloc[j]["cor_Days.Intercept|Subject"] == pytest.approx(cor, abs=1e-4)


def test_percentile_intervals_and_checks(sleep_fits):
    b = sleep_fits["m0"].bootstrap(n=200, seed=0)
    assert b.replicates.shape == (200, 4)
    q = b.replicates.quantile([0.025, 0.975]).T.to_numpy()
    np.testing.assert_allclose(b.conf_int.to_numpy(), q)
    est = b.estimate
    assert (b.conf_int[0] < est).all() and (est < b.conf_int[1]).all()
    with pytest.raises(ValueError, match="n must be a positive integer"):
        bootstrap(sleep_fits["m0"], n=0)
    with pytest.raises(TypeError, match="MixedLMResults"):
        bootstrap(object())
