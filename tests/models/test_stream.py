"""Out-of-core fit_vb streamed from Parquet (models.stream, design.stream, fits.vb_stream):
the same ELBO and the same optimum as the in-memory fit_vb, the in-memory model's errors."""

import numpy as np
import pandas as pd
import pytest

from bayesglmm import BinomialBayesMixedGLM, PoissonBayesMixedGLM
from bayesglmm._precision import precision
from bayesglmm.kernels.glmm import Prior

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

FORMULA, VC = "y ~ x + C(f)", {"g": "0 + C(g)"}


def simulate(n, levels, seed=0, poisson=False):
    rng = np.random.default_rng(seed)
    g = rng.integers(0, levels, n)
    x = rng.normal(size=n)
    f = rng.choice(["a", "b", "c"], n)
    eta = -0.5 + 0.7 * x + 0.4 * (f == "b") + 0.8 * rng.normal(size=levels)[g]
    if poisson:
        t = rng.integers(1, 4, n).astype(float)
        y = rng.poisson(t * np.exp(eta - 1.0)).astype(float)
    else:
        t = np.ones(n)
        y = (rng.random(n) < 1 / (1 + np.exp(-eta))).astype(float)
    return pd.DataFrame({"y": y, "x": x, "f": f, "g": [f"g{i:05d}" for i in g], "t": t})


def write(df, path, row_group):
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), path,
                   row_group_size=row_group)
    return str(path)


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    df = simulate(6000, 60)
    return df, write(df, tmp_path_factory.mktemp("stream") / "small.parquet", 1500)


@pytest.mark.slow
def test_elbo_over_batches_equals_the_in_memory_elbo(small):
    """Σ_b D_b + P over the padded batches is make_elbo on all rows, at any (mean, sd)."""
    import jax

    from bayesglmm.fits.vb_stream import _put, data_term, prior_term

    _, path = small
    s = BinomialBayesMixedGLM.from_parquet(path, FORMULA, VC, batch_rows=1024)
    m = BinomialBayesMixedGLM.from_formula(FORMULA, VC, pd.read_parquet(path))

    rng = np.random.default_rng(1)
    p = m.k_fep + m.k_vcp + m.k_vc
    mean, sd = 0.3 * rng.normal(size=p), np.exp(-1 + 0.2 * rng.normal(size=p))
    kf, ka = m.k_fep, m.k_fep + m.k_vcp
    with precision(np.float64):
        a = np.concatenate([mean[:ka], np.log(sd[:ka])])
        v = np.stack([mean[ka:], np.log(sd[ka:])], axis=1)
        D = jax.jit(data_term(s.family, s.vb_rule))
        total = sum(float(D(a, v, _put(b, np.float64), s.ident))
                    for b, _ in s.source.batches(1024))
        prior = Prior(np.float64(s.fe_p), np.float64(s.vcp_p))
        total += float(prior_term(a, v, s.ident, prior, kf))
    np.testing.assert_allclose(-total, m.vb_elbo(mean, sd), rtol=1e-12)


@pytest.mark.slow  # ~9 s on two cores (compiles both fits); .ci/run runs it
def test_fit_matches_in_memory_fit_vb(small):
    _, path = small
    s = BinomialBayesMixedGLM.from_parquet(path, FORMULA, VC, batch_rows=1024)
    r = s.fit_vb(epochs=1, rng=0)
    m = BinomialBayesMixedGLM.from_formula(FORMULA, VC, pd.read_parquet(path))
    assert (s.fep_names, s.vcp_names, s.vc_names) == (m.fep_names, m.vcp_names, m.vc_names)
    assert s.nobs == 6000 and s.k_vc == m.k_vc == 60
    # 4 row groups of 1500 rows: 2 batches of 1024 rows each, the second padded
    assert s.source.n_batches(1024) == 8
    ref = m.fit_vb(rng=0)
    assert r.optim_retvals.success
    # the same ELBO (make_elbo summed over the batches) at the same optimum
    np.testing.assert_allclose(r.optim_retvals.fun, ref.optim_retvals.fun, rtol=1e-10)
    assert np.max(np.abs(r.fe_mean - ref.fe_mean)) < 0.01  # the requirement
    np.testing.assert_allclose(r.fe_mean, ref.fe_mean, atol=1e-5)  # same optimum, in fact
    np.testing.assert_allclose(r.fe_sd, ref.fe_sd, rtol=1e-4)
    np.testing.assert_allclose(r.vcp_mean, ref.vcp_mean, atol=1e-4)
    np.testing.assert_allclose(r.vc_mean, ref.vc_mean, atol=1e-4)
    assert 0.5 < np.exp(r.vcp_mean[0]) < 1.2  # simulated SD 0.8
    assert list(r.random_effects().index) == ref.model.vc_names
    assert "Intercept" in str(r.summary())
    # one compiled program per phase for all batches, the padded ones included
    from bayesglmm.fits.vb_stream import _programs

    _, svi_step, blocks, *_ = _programs(s.family, s.vb_rule, s.k_fep, 1)
    assert svi_step._cache_size() == 1 and blocks._cache_size() == 1


def test_errors_as_the_in_memory_model(small, tmp_path):
    df, path = small
    with pytest.raises(ValueError, match=r"'xx' \(did you mean 'x'\?\)"):
        BinomialBayesMixedGLM.from_parquet(path, "y ~ xx", VC)
    with pytest.raises(ValueError, match=r"'gg' \(did you mean 'g'\?\)"):
        BinomialBayesMixedGLM.from_parquet(path, FORMULA, {"g": "0 + C(gg)"})
    bad = df.copy()
    bad.loc[4000, "x"] = np.nan
    p2 = write(bad, tmp_path / "nan.parquet", 1500)
    with pytest.raises(ValueError, match="column 'x' has 1 missing value"):
        BinomialBayesMixedGLM.from_parquet(p2, FORMULA, VC)
    with pytest.warns(UserWarning, match="dropped 1 row"):
        assert BinomialBayesMixedGLM.from_parquet(p2, FORMULA, VC, missing="drop").nobs == 5999
    bad = df.copy()
    bad.loc[5999, "y"] = 2.0
    with pytest.raises(ValueError, match="endog must be 0/1"):
        BinomialBayesMixedGLM.from_parquet(write(bad, tmp_path / "y2.parquet", 1500), FORMULA,
                                           VC)
    with pytest.raises(ValueError, match="endog exceeds n_trials"):
        BinomialBayesMixedGLM.from_parquet(write(bad, tmp_path / "y3.parquet", 1500),
                                           FORMULA, VC, n_trials="t")
    bad = df.assign(y=0.0)
    with pytest.raises(ValueError, match="must contain both 0 and 1"):
        BinomialBayesMixedGLM.from_parquet(write(bad, tmp_path / "y0.parquet", 1500), FORMULA,
                                           VC)
    with pytest.raises(TypeError, match="n_trials must be a column name"):
        BinomialBayesMixedGLM.from_parquet(path, FORMULA, VC, n_trials=np.ones(6000))
    with pytest.raises(ValueError, match="exposure= applies to the Poisson family only"):
        BinomialBayesMixedGLM.from_parquet(path, FORMULA, VC, exposure="t")
    with pytest.raises(ValueError, match="center\\(\\) learns its state"):
        BinomialBayesMixedGLM.from_parquet(path, "y ~ center(x)", VC)
    with pytest.raises(TypeError, match="batch_rows"):
        BinomialBayesMixedGLM.from_parquet(path, FORMULA, VC, batch_rows="big")


@pytest.mark.slow
def test_poisson_with_exposure_matches_in_memory(tmp_path):
    df = simulate(5000, 40, seed=3, poisson=True)
    path = write(df, tmp_path / "pois.parquet", 1200)
    r = PoissonBayesMixedGLM.from_parquet(path, FORMULA, VC, exposure="t",
                                          batch_rows=2048).fit_vb(rng=1)
    ref = PoissonBayesMixedGLM.from_formula(FORMULA, VC, pd.read_parquet(path),
                                            exposure=df["t"].to_numpy()).fit_vb(rng=1)
    np.testing.assert_allclose(r.fe_mean, ref.fe_mean, atol=1e-5)
    np.testing.assert_allclose(r.vcp_mean, ref.vcp_mean, atol=1e-4)


@pytest.mark.slow
def test_million_rows_binomial_within_001_of_in_memory(tmp_path):
    """10^6 rows, 10^4 levels, row groups of 2^18: fe within 0.01 of the in-memory fit_vb."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
    from bench_stream import FORMULA as F, VC as V, generate

    path = str(tmp_path / "million.parquet")
    generate(path, 10**6, 10**4, seed=0, row_group=1 << 18)
    r = BinomialBayesMixedGLM.from_parquet(path, F, V).fit_vb(rng=0)
    ref = BinomialBayesMixedGLM.from_formula(F, V, pd.read_parquet(path)).fit_vb(rng=0)
    assert r.optim_retvals.success
    assert np.max(np.abs(r.fe_mean - ref.fe_mean)) < 0.01
    assert abs(r.vcp_mean[0] - ref.vcp_mean[0]) < 0.01


@pytest.mark.slow
def test_crossed_factors_reach_the_in_memory_optimum(small, tmp_path):
    """A second, crossed factor (15 numeric levels) joins the small block of the passes' Newton
    step (fits.vb_stream.split_levels): the same optimum, and predictions for new data."""
    df, _ = small
    df = df.assign(h=np.random.default_rng(5).integers(0, 15, len(df)))  # numeric levels
    path = write(df, tmp_path / "crossed.parquet", 1500)
    f = FORMULA + " + (1 | h)"
    s = BinomialBayesMixedGLM.from_parquet(path, f, VC, batch_rows=1024)
    assert s._n_colors == 2
    r = s.fit_vb(rng=0)
    ref = BinomialBayesMixedGLM.from_formula(f, VC, pd.read_parquet(path)).fit_vb(rng=0)
    assert r.optim_retvals.success
    np.testing.assert_allclose(r.fe_mean, ref.fe_mean, atol=1e-6)
    np.testing.assert_allclose(r.vcp_mean, ref.vcp_mean, atol=1e-5)
    np.testing.assert_allclose(r.predict(df.iloc[:20]), ref.predict(df.iloc[:20]), atol=1e-5)


def test_other_families_are_refused(small):
    negbin = pytest.importorskip("bayesglmm.models.negbin")
    with pytest.raises(ValueError, match="binomial and Poisson families, not NegativeBinomial"):
        negbin.NegativeBinomialBayesMixedGLM.from_parquet(small[1], FORMULA, VC)
