"""fit_many (fits/many.py, results/many.py): each response's numbers equal a single fit's on
that response; Y is validated per column; result(j) is the ordinary results object; the
chunks, the padding of the last chunk and the progress bar."""

import io
import json
import os
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pandas as pd
import pytest

import bayesglmm as bg
from bayesglmm.exceptions import RankDeficientWarning
from bayesglmm.fits.many import bytes_per_response, default_chunk_size
from bayesglmm.progress import Progress
from benchmarks._report import COUNT_COMPILES
from tests.helpers import assert_reproduced

TOL = 1e-8


def _poisson_data(k=5, n=120, G=8, seed=0):
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({"x": rng.normal(size=n), "g": np.repeat(np.arange(G), n // G)})
    u = rng.normal(0, 0.6, (G, k))
    Y = rng.poisson(np.exp(0.3 + 0.4 * df.x.to_numpy()[:, None] + u[df.g]))
    return df, pd.DataFrame(Y, columns=[f"gene{j}" for j in range(k)])


def _poisson_model(df, y):
    return bg.PoissonBayesMixedGLM.from_formula("y ~ x", {"g": "0 + C(g)"}, df.assign(y=y))


@pytest.fixture(scope="module")
def poisson():
    df, Y = _poisson_data()
    model = _poisson_model(df, Y.iloc[:, 0])
    res = bg.fit_many(model, Y, priors=False, chunk_size=2)  # 3 chunks, the last filled up
    return df, Y, model, res


def _same(single, many_j, tol=TOL):
    """Two BayesMixedGLMResults of fit_laplace agree to ``tol`` (NaN where the other is)."""
    for a, b in ((single.params, many_j.params),
                 (np.asarray(single.cov_params()), np.asarray(many_j.cov_params())),
                 (single.vc_sd, many_j.vc_sd), (single.vc_sd_cond, many_j.vc_sd_cond)):
        np.testing.assert_allclose(b, a, rtol=tol, atol=tol)
    assert many_j.llf == pytest.approx(single.llf, rel=tol, abs=tol)
    assert np.isnan(single.log_post) == np.isnan(many_j.log_post)
    assert many_j.optim_retvals.status == single.optim_retvals.status
    assert many_j.optim_retvals.nit == single.optim_retvals.nit
    assert many_j.is_singular == single.is_singular


def _check_single(res, df, Y, build, js, **kw):
    for j in js:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            single = build(df, Y.iloc[:, j]).fit_laplace(**kw)
            mine = res.result(j)
        _same(single, mine)
        row = res.names[j]
        np.testing.assert_allclose(res.fe_mean.loc[row], single.fe_mean, rtol=TOL, atol=TOL)
        np.testing.assert_allclose(res.fe_sd.loc[row], single.fe_sd, rtol=TOL, atol=TOL)
        np.testing.assert_allclose(res.vcp_mean.loc[row], single.vcp_mean, rtol=TOL, atol=TOL)
        np.testing.assert_allclose(res.vcp_sd.loc[row], single.vcp_sd, rtol=TOL, atol=TOL)
        assert res.llf[row] == pytest.approx(single.llf, rel=TOL)


def test_poisson_matches_single_fits(poisson):
    df, Y, model, res = poisson
    # responses of the first, second and last (filled-up) chunk
    _check_single(res, df, Y, _poisson_model, [0, 3, 4], priors=False)
    assert list(res.fe_mean.index) == list(Y.columns)
    assert list(res.fe_mean.columns) == model.fep_names
    assert list(res.vcp_mean.columns) == model.vcp_names
    assert res.converged.all() and res.chunk_size == 2 and len(res) == 5
    assert (res.n_iter > 0).all() and res.log_post.isna().all()


def test_result_is_the_ordinary_results(poisson):
    df, Y, model, res = poisson
    r = res.result("gene3")
    assert isinstance(r, bg.BayesMixedGLMResults) and r.method == "laplace"
    np.testing.assert_array_equal(r.params, res.result(3).params)
    np.testing.assert_array_equal(r.params, res.result(-2).params)
    assert r.model.endog_name == "gene3"
    np.testing.assert_array_equal(r.model.endog, Y["gene3"].to_numpy())
    assert model.endog_name == "y"  # the model itself is untouched
    assert "gene3" not in repr(model)
    with pytest.raises(KeyError, match="no response 'nope'"):
        res.result("nope")
    with pytest.raises(IndexError, match="out of range"):
        res.result(5)
    assert res.message(0) == "converged"
    assert "5 responses" in repr(res)


def test_second_call_and_progress(poisson):
    """Same shapes again (different responses, fewer of them): the same programs; a
    Progress reporter prints the chunk count."""
    df, Y, model, res = poisson
    out = io.StringIO()
    res2 = bg.fit_many(model, Y.iloc[:, ::-1].to_numpy()[:, :3], priors=False, chunk_size=2,
                       progress=Progress(after=0.0, every=0.0, stream=out))
    assert list(res2.names) == ["y0", "y1", "y2"]
    np.testing.assert_allclose(res2.fe_mean.to_numpy(), res.fe_mean.to_numpy()[::-1][:3],
                               rtol=1e-12, atol=1e-12)
    assert "fit_many" in out.getvalue() and "chunks" in out.getvalue()


def test_chunks_in_threads(poisson, monkeypatch):
    """Chunks fitted side by side in threads (fits.many.map_chunks) or one after the other:
    the same numbers, bit for bit, in chunk order."""
    from bayesglmm.fits import many

    df, Y, model, res = poisson
    monkeypatch.setattr(many, "n_workers", lambda: 1)
    one = bg.fit_many(model, Y, priors=False, chunk_size=2)
    monkeypatch.setattr(many, "n_workers", lambda: 3)
    three = bg.fit_many(model, Y, priors=False, chunk_size=2)
    for r in (res, three):
        assert_reproduced(r.fe_mean.to_numpy(), one.fe_mean.to_numpy())
        assert_reproduced(r.vcp_sd.to_numpy(), one.vcp_sd.to_numpy())
        np.testing.assert_array_equal(r.n_iter.to_numpy(), one.n_iter.to_numpy())
    parts = many.map_chunks(lambda full, n_real, d: (list(full), n_real), model,
                            Y.to_numpy(float), model._data(True, model._fine(3 + model.k_vc)),
                            2, False, workers=2)
    assert [p[0] for p in parts] == [[0, 1], [2, 3], [4, 4]]  # the last one filled up
    assert [p[1] for p in parts] == [2, 2, 1]


def test_default_chunk_size():
    per = bytes_per_response(2048, 1, 64, 3, "diag", 8)
    assert default_chunk_size(10_000, per) == 512  # 1 GiB / ~1.6 MB, a power of two
    assert default_chunk_size(3, per) == 4  # at most the power of two ≥ k
    assert default_chunk_size(1, per) == 1
    assert default_chunk_size(10**6, 1) == 4096  # MAX_CHUNK
    assert default_chunk_size(100, 2**40) == 1


def test_bad_inputs(poisson):
    df, Y, model, _ = poisson
    Yn = Y.to_numpy().astype(float)
    with pytest.raises(ValueError, match="Y has 119 rows but the model has 120"):
        bg.fit_many(model, Yn[:-1])
    with pytest.raises(ValueError, match="must be 2-D"):
        bg.fit_many(model, Yn[:, 0])
    with pytest.raises(ValueError, match="no columns"):
        bg.fit_many(model, Yn[:, :0])
    bad = Y.astype(float)
    bad.iloc[7, 2] = np.nan
    with pytest.raises(ValueError, match="Y column 'gene2' contains 1 NaN.*row 7"):
        bg.fit_many(model, bad)
    bad = Y.copy()
    bad.iloc[3, 4] = -1
    with pytest.raises(ValueError, match="Y column 'gene4'"):
        bg.fit_many(model, bad)
    bad = Y.astype(float)
    bad.iloc[3, 1] = 0.5
    with pytest.raises(ValueError, match="Y column 'gene1'"):
        bg.fit_many(model, bad)
    with pytest.raises(TypeError, match="numeric"):
        bg.fit_many(model, Y.astype(str).assign(gene0="a"))
    with pytest.raises(ValueError, match="duplicated column names"):
        bg.fit_many(model, Y.set_axis(["a", "a", "b", "c", "d"], axis=1))
    with pytest.raises(ValueError, match="unknown method 'fit_nuts'.*'fit_vb'"):
        bg.fit_many(model, Y, method="fit_nuts")
    with pytest.raises(TypeError, match="chunk_size"):
        bg.fit_many(model, Y, chunk_size="big")
    with pytest.raises(ValueError, match="chunk_size"):
        bg.fit_many(model, Y, chunk_size=0)
    with pytest.raises(TypeError, match="mixed GLM"):
        bg.fit_many("model", Y)
    with pytest.raises(ValueError, match="integrate"):
        bg.fit_many(model, Y, integrate=True)
    with pytest.raises(ValueError, match=r"start must be finite, of shape \(3,\) or \(5, 3\)"):
        bg.fit_many(model, Y, start=np.zeros((4, 3)))
    with pytest.raises(ValueError, match="start"):
        bg.fit_many(model, Y, start=np.zeros(2))
    with pytest.raises(TypeError, match="unexpected keyword"):
        bg.fit_many(model, Y, prior=True)
    binary = bg.BinomialBayesMixedGLM.from_formula(
        "y ~ x", {"g": "0 + C(g)"}, df.assign(y=(Y.iloc[:, 0] > 1).astype(float)))
    with pytest.raises(ValueError, match="Y column 'gene0'"):
        bg.fit_many(binary, Y)  # counts are not 0/1


@pytest.mark.slow
@pytest.mark.parametrize("method, kw", [("fit_map", {"rng": 0}),
                                        ("fit_vb", {"rng": 0, "scale_fe": True})])
def test_map_and_vb_match_single_fits(method, kw):
    """fit_map / fit_vb: the compiled Newton loop vmapped over responses, every response
    from the same draw of the random start (as the single fit with that seed)."""
    df, Y = _poisson_data()
    res = bg.fit_many(_poisson_model(df, Y.iloc[:, 0]), Y, method=method, chunk_size=2, **kw)
    assert res.method == method[4:] and res.converged.all() and res.llf.isna().all()
    for j in (0, 4):
        single = getattr(_poisson_model(df, Y.iloc[:, j]), method)(**kw)
        mine = res.result(j)
        assert mine.method == single.method
        for a, b in ((single.params, mine.params), (single.vc_sd, mine.vc_sd),
                     (np.asarray(single.cov_params()), np.asarray(mine.cov_params())),
                     (single.optim_retvals.x, mine.optim_retvals.x)):
            np.testing.assert_allclose(b, a, rtol=TOL, atol=TOL)
        assert mine.optim_retvals.fun == pytest.approx(single.optim_retvals.fun, rel=1e-12)
        assert mine.optim_retvals.status == single.optim_retvals.status
        np.testing.assert_allclose(res.fe_mean.iloc[j], single.fe_mean, rtol=TOL, atol=TOL)
        np.testing.assert_allclose(res.vcp_sd.iloc[j], single.vcp_sd, rtol=TOL, atol=TOL)


@pytest.mark.slow
def test_binomial_crossed_priors_and_starts():
    """Two crossed factors (Schur mode), priors, a shared and per-response starts,
    maxiter reached (status 1) as in the single fit."""
    rng = np.random.default_rng(3)
    n, k = 300, 4
    df = pd.DataFrame({"x": rng.normal(size=n), "a": rng.integers(0, 9, n),
                       "b": rng.integers(0, 6, n)})
    eta = (-0.3 + 0.6 * df.x.to_numpy()[:, None] + rng.normal(0, 0.8, (9, k))[df.a]
           + rng.normal(0, 0.5, (6, k))[df.b])
    Y = pd.DataFrame((rng.random((n, k)) < 1 / (1 + np.exp(-eta))).astype(float))

    def build(df, y):
        return bg.BinomialBayesMixedGLM.from_formula(
            "y ~ x", {"a": "0 + C(a)", "b": "0 + C(b)"}, df.assign(y=y))

    model = build(df, Y.iloc[:, 0])
    assert isinstance(model._design_mode, tuple)
    res = bg.fit_many(model, Y, priors=True)
    _check_single(res, df, Y, build, range(k), priors=True)
    start = np.array([0.1, 0.2, -0.5, -0.5])
    res = bg.fit_many(model, Y, priors=True, start=start)
    _check_single(res, df, Y, build, [1], priors=True, start=start)
    starts = np.tile(start, (k, 1)) + 0.1 * np.arange(k)[:, None]
    with pytest.warns(bg.ConvergenceWarning, match="4 of 4 responses did not converge"):
        res = bg.fit_many(model, Y, priors=True, start=starts, minim_opts={"maxiter": 2})
    assert (res.status == 1).all()
    for j in (0, 3):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            single = build(df, Y.iloc[:, j]).fit_laplace(start=starts[j],
                                                         minim_opts={"maxiter": 2})
            mine = res.result(j)
        _same(single, mine)


@pytest.mark.slow
def test_singular_rank_deficient_and_correlated():
    """A correlated (1 + x | g) term, an aliased fixed-effect column (dropped, NaN, as
    fit_laplace(priors=False) does) and a response without group variation (singular)."""
    rng = np.random.default_rng(5)
    n, G, k = 240, 12, 3
    df = pd.DataFrame({"x": rng.normal(size=n), "g": np.repeat(np.arange(G), n // G)})
    df["x2"] = 2 * df.x
    x = df.x.to_numpy()[:, None]
    b0, b1 = rng.normal(0, 0.5, (G, k)), rng.normal(0, 0.3, (G, k))
    Y = rng.poisson(np.exp(0.2 + 0.3 * x + b0[df.g] + b1[df.g] * x))
    Y[:, 2] = rng.poisson(np.exp(0.2 + 0.3 * x[:, 0]))
    Y = pd.DataFrame(Y, columns=["a", "b", "flat"])

    def build(df, y):
        return bg.PoissonBayesMixedGLM.from_formula("y ~ x + x2 + (1 + x | g)", {},
                                                    df.assign(y=y))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", bg.SingularFitWarning)
        with pytest.warns(RankDeficientWarning, match="'x2'"):
            res = bg.fit_many(build(df, Y.iloc[:, 0]), Y, priors=False)
    assert res.fe_mean["x2"].isna().all() and res.fe_sd["x2"].isna().all()
    _check_single(res, df, Y, build, range(k), priors=False)
    assert bool(res.singular["flat"]) == res.result("flat").is_singular


@pytest.mark.slow
def test_negative_binomial():
    """The NB family: log θ at the end of θ (fits.laplace.theta_layout), its moment start per
    response, and result(j) of the family's results class."""
    rng = np.random.default_rng(7)
    n, G, k = 200, 10, 3
    df = pd.DataFrame({"x": rng.normal(size=n), "g": np.repeat(np.arange(G), n // G)})
    mu = np.exp(0.5 + 0.3 * df.x.to_numpy()[:, None] + rng.normal(0, 0.5, (G, k))[df.g])
    Y = pd.DataFrame(rng.negative_binomial(2.0, 2.0 / (2.0 + mu)))

    def build(df, y):
        return bg.NegativeBinomialBayesMixedGLM.from_formula("y ~ x", {"g": "0 + C(g)"},
                                                             df.assign(y=y))

    res = bg.fit_many(build(df, Y.iloc[:, 0]), Y, priors=False)
    _check_single(res, df, Y, build, range(k), priors=False)
    single = build(df, Y.iloc[:, 1]).fit_laplace(priors=False)
    mine = res.result(1)
    assert type(mine) is type(single)
    assert mine.theta == pytest.approx(single.theta, rel=TOL)


@pytest.mark.slow
def test_second_call_compiles_nothing():
    """A second fit_many with the same model shapes and chunk size (other responses, another
    count of them) compiles nothing new (cache disabled: every program is compiled)."""
    script = textwrap.dedent("""
        import json, warnings
        import numpy as np
        import bayesglmm as bg
        from tests.fits.test_many import _poisson_data, _poisson_model

        warnings.simplefilter("ignore")
    """) + textwrap.dedent(COUNT_COMPILES) + textwrap.dedent("""
        df, Y = _poisson_data(k=6)
        model = _poisson_model(df, Y.iloc[:, 0])
        bg.fit_many(model, Y, priors=False, chunk_size=4)
        first = compiles[0]
        df2, Y2 = _poisson_data(k=7, seed=1)
        res = bg.fit_many(_poisson_model(df, Y2.iloc[:, 0]), Y2, priors=False, chunk_size=4)
        res.result(2).summary()
        print(json.dumps({"first": first, "second": compiles[0] - first}))
    """)
    env = dict(os.environ, BAYESGLMM_CACHE_DIR="0")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         env=env, cwd=os.path.dirname(os.path.dirname(os.path.dirname(
                             os.path.abspath(__file__)))), timeout=600)
    assert out.returncode == 0, out.stderr
    counts = json.loads(out.stdout.strip().splitlines()[-1])
    assert counts["first"] > 0
    assert counts["second"] == 0, counts
