"""Bad input: each a ValueError whose message names the problem."""

import numpy as np
import pandas as pd
import pytest
from scipy import sparse

import bayesglmm as bg
from bayesglmm import datasets


@pytest.fixture
def data():
    rs = np.random.default_rng(0)
    n, k = 40, 4
    X = rs.normal(size=(n, 2))
    g = np.arange(n) % k
    Z = sparse.csr_array((np.ones(n), (np.arange(n), g)), shape=(n, k))
    y = (rs.uniform(size=n) < 0.5).astype(float)
    return y, X, Z, np.zeros(k, dtype=int)


def test_binomial_response_not_binary(data):
    y, X, Z, ident = data
    y = y.copy()
    y[3] = 2
    with pytest.raises(ValueError, match="0/1.*2"):
        bg.BinomialBayesMixedGLM(y, X, Z, ident)
    with pytest.raises(ValueError, match="both 0 and 1"):
        bg.BinomialBayesMixedGLM(np.ones_like(y), X, Z, ident)


def test_poisson_counts(data):
    y, X, Z, ident = data
    with pytest.raises(ValueError, match="negative"):
        bg.PoissonBayesMixedGLM(y - 1, X, Z, ident)
    with pytest.raises(ValueError, match="integer"):
        bg.PoissonBayesMixedGLM(y + 0.5, X, Z, ident)


@pytest.mark.parametrize("where", ["endog", "exog", "exog_vc"])
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_or_inf_anywhere(data, where, bad):
    y, X, Z, ident = data
    y, X, Zd = y.copy(), X.copy(), Z.toarray()
    {"endog": y, "exog": X, "exog_vc": Zd}[where].flat[5] = bad
    kind = "NaN" if np.isnan(bad) else "inf"
    with pytest.raises(ValueError, match=f"{where} contains 1 non-finite value.*{kind}"):
        bg.BinomialBayesMixedGLM(y, X, Zd, ident)


def test_nan_in_sparse_exog_vc(data):
    y, X, Z, ident = data
    Z = Z.copy()
    Z.data[0] = np.nan
    with pytest.raises(ValueError, match="exog_vc contains"):
        bg.BinomialBayesMixedGLM(y, X, Z, ident)


def test_ident_wrong_length_or_type(data):
    y, X, Z, ident = data
    with pytest.raises(ValueError, match="ident has length 3 but exog_vc has 4 columns"):
        bg.BinomialBayesMixedGLM(y, X, Z, ident[:3])
    with pytest.raises(ValueError, match="ident must have an integer dtype"):
        bg.BinomialBayesMixedGLM(y, X, Z, ident.astype(float))
    with pytest.raises(ValueError, match="one-dimensional"):
        bg.BinomialBayesMixedGLM(y, X, Z, ident[:, None])


def test_row_count_mismatch(data):
    y, X, Z, ident = data
    with pytest.raises(ValueError, match="exog has 39 rows but endog has 40"):
        bg.BinomialBayesMixedGLM(y, X[:-1], Z, ident)
    with pytest.raises(ValueError, match="exog_vc has 39 rows but endog has 40"):
        bg.BinomialBayesMixedGLM(y, X, Z[:-1], ident)
    with pytest.raises(ValueError, match="n_trials has 39 rows"):
        bg.BinomialBayesMixedGLM(y, X, Z, ident, n_trials=np.ones(39))
    with pytest.raises(ValueError, match="offset has 39 rows"):
        bg.PoissonBayesMixedGLM(y, X, Z, ident, offset=np.ones(39))


def test_formula_missing_column_suggests_close_match():
    df = pd.DataFrame({"Points": [1, 0, 1, 1, 0, 1], "Minutes": [1.0, 2, 3, 4, 5, 6],
                       "Team": list("aabbcc")})
    with pytest.raises(ValueError, match=r"'points' \(did you mean 'Points'\?\)"):
        bg.BinomialBayesMixedGLM.from_formula("points ~ Minutes", {"t": "0 + C(Team)"}, df)
    with pytest.raises(ValueError, match=r"'team' \(did you mean 'Team'\?\)"):
        bg.BinomialBayesMixedGLM.from_formula("Points ~ Minutes", {"t": "0 + C(team)"}, df)
    with pytest.raises(ValueError, match=r"'size' \(did you mean 'sizes'\?\)"):
        bg.BinomialBayesMixedGLM.from_formula(
            "Points ~ Minutes", {"t": "0 + C(Team)"}, df.assign(sizes=1), n_trials="size")


def test_formula_nan_in_used_column_is_an_error_not_a_drop():
    df = datasets.load("cbpp").astype({"size": float})
    df.loc[4, "size"] = np.nan
    with pytest.raises(ValueError, match="column 'size' has 1 missing value"):
        bg.BinomialBayesMixedGLM.from_formula("incidence ~ C(period)", {"h": "0 + C(herd)"}, df,
                                              n_trials="size")


def test_formula_missing_drop_subsets_rows_and_array_arguments():
    df = datasets.load("cbpp").astype({"size": float})
    df.loc[[4, 9], "size"] = np.nan
    off = np.linspace(-1, 1, len(df))
    with pytest.warns(UserWarning, match="dropped 2 row"):
        m = bg.BinomialBayesMixedGLM.from_formula("incidence ~ C(period)", {"h": "0 + C(herd)"},
                                                  df, n_trials="size", offset=off, missing="drop")
    keep = df["size"].notna().to_numpy()
    ref = bg.BinomialBayesMixedGLM.from_formula(
        "incidence ~ C(period)", {"h": "0 + C(herd)"}, df[keep].reset_index(drop=True),
        n_trials="size", offset=off[keep])
    assert m.nobs == 54
    for a in ("endog", "exog", "n_trials", "offset", "_cols", "_vals"):
        np.testing.assert_array_equal(getattr(m, a), getattr(ref, a))
    assert m.vc_names == ref.vc_names
    with pytest.raises(ValueError, match="missing must be 'none', 'raise' or 'drop'"):
        bg.BinomialBayesMixedGLM.from_formula("incidence ~ 1", {}, df, missing="skip")


def test_trials_and_exposure_checks(data):
    y, X, Z, ident = data
    with pytest.raises(ValueError, match="exceeds n_trials"):
        bg.BinomialBayesMixedGLM(y * 3, X, Z, ident, n_trials=np.full(40, 2.0))
    with pytest.raises(ValueError, match="exposure must be positive"):
        bg.PoissonBayesMixedGLM(y, X, Z, ident, exposure=np.zeros(40))
    with pytest.raises(ValueError, match="Poisson family only"):
        bg.BinomialBayesMixedGLM(y, X, Z, ident, exposure=np.ones(40))
    with pytest.raises(ValueError, match="freq_weights must be non-negative"):
        bg.BinomialBayesMixedGLM(y, X, Z, ident, freq_weights=-np.ones(40))


def test_wrong_types_and_names(data):
    y, X, Z, ident = data
    with pytest.raises(ValueError, match="exog must be numeric"):
        bg.BinomialBayesMixedGLM(y, np.array([["a", "b"]] * 40), Z, ident)
    with pytest.raises(ValueError, match="vcp_names has 2 names"):
        bg.BinomialBayesMixedGLM(y, X, Z, ident, vcp_names=["a", "b"])
    with pytest.raises(ValueError, match="vcp_p must be a positive"):
        bg.BinomialBayesMixedGLM(y, X, Z, ident, vcp_p=0)
    with pytest.raises(ValueError, match="data must be a pandas DataFrame"):
        bg.BinomialBayesMixedGLM.from_formula("y ~ x", {}, {"y": [1]})
    with pytest.raises(ValueError, match="vc_formulas must be a dict"):
        bg.BinomialBayesMixedGLM.from_formula("Points ~ 1", ["0 + C(Team)"],
                                              pd.DataFrame({"Points": [0, 1], "Team": ["a", "b"]}))
    model = bg.BinomialBayesMixedGLM(y, X, Z, ident)
    with pytest.raises(ValueError, match="unknown method"):
        model.fit_map(method="simplex")
    with pytest.raises(ValueError, match="unknown minim_opts"):
        model.fit_vb(minim_opts={"tol": 1})
    with pytest.raises(ValueError, match="mean has incorrect length"):
        model.fit_vb(mean=np.zeros(3))
    with pytest.raises(ValueError, match="params must have shape"):
        model.logposterior(np.zeros(3))
    with pytest.raises(ValueError, match="rng must be"):
        model.fit_map(rng="seed")
