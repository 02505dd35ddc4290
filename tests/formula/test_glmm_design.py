"""The GLMM's random-effects design: level-coded terms laid out as ELLPACK columns."""

import numpy as np
import pandas as pd
import pytest

from bayesglmm.design.ellpack import to_dense
from bayesglmm.formula.glmm import glmm_design


@pytest.fixture(scope="module")
def df():
    rs = np.random.default_rng(3)
    n = 60
    return pd.DataFrame({"y": rs.integers(0, 2, n), "x": rs.normal(size=n),
                         "g": rs.choice(["p", "q", "r"], n), "a": rs.integers(1, 5, n),
                         "b": rs.choice(["u", "v"], n)})


def _indicator(keys, levels):
    return (np.asarray(keys)[:, None] == np.asarray(levels)[None, :]).astype(float)


def test_columns_equal_a_plain_dense_reference(df):
    d = glmm_design("y ~ x + (1 + x | a) + (x || b)",
                    {"g": "0 + C(g)", "gx": "0 + C(g):x", "gb": "0 + C(g):C(b)"}, df)
    G, A, B = ["p", "q", "r"], [1, 2, 3, 4], ["u", "v"]
    x, one = df["x"].to_numpy(), np.ones(len(df))
    Ig, Ia, Ib = _indicator(df["g"], G), _indicator(df["a"], A), _indicator(df["b"], B)
    gb = np.column_stack([Ig[:, i] * Ib[:, j] for j in range(2) for i in range(3)])
    # (1 + x | a): each level's intercept and slope side by side; (x || b): intercepts, slopes
    corr = np.column_stack([Ia[:, k] * v for k in range(4) for v in (one, x)])
    ref = np.hstack([Ig, Ig * x[:, None], gb, corr, Ib, Ib * x[:, None]])
    np.testing.assert_array_equal(to_dense(d.cols, d.vals, d.k_vc), ref)
    assert d.vc_names[:6] == ["C(g)[p]", "C(g)[q]", "C(g)[r]", "C(g)[p]:x", "C(g)[q]:x",
                              "C(g)[r]:x"]
    assert d.vc_names[12:14] == ["a[1]:Intercept", "a[1]:x"]
    assert d.vc_names[-4:] == ["b[u]", "b[v]", "b[u]:x", "b[v]:x"]
    assert d.vcp_names == ["g", "gx", "gb", "a", "a:x", "b", "b:x", "a:corr(Intercept,x)"]
    np.testing.assert_array_equal(d.ident, [0] * 3 + [1] * 3 + [2] * 6 + [3, 4] * 4
                                  + [5, 5, 6, 6])
    (bcols, sd_ids, names), = d.corr
    np.testing.assert_array_equal(bcols, 12 + np.arange(8).reshape(4, 2))
    np.testing.assert_array_equal(sd_ids, [3, 4])


def test_factor_fast_paths_store_one_entry_per_row(df):
    d = glmm_design("y ~ x", {"g": "0 + C(g)", "gx": "0 + C(g):x"}, df)
    assert d.cols.shape == (len(df), 2) and d.cols.dtype == np.int32


@pytest.mark.filterwarnings("ignore:Data has categories outside")  # formulaic: unseen level
def test_new_data_go_through_the_same_layout(df):
    d = glmm_design("y ~ x + (1 + x | a)", {"g": "0 + C(g)", "gb": "0 + C(g):C(b)"}, df)
    cols, vals = d.new_vc(df)
    np.testing.assert_array_equal(cols, d.cols)
    np.testing.assert_array_equal(vals, d.vals)
    np.testing.assert_array_equal(d.new_exog(df), d.fixed.X)
    new = df.head(3).assign(g=["p", "zz", "q"], a=[1, 1, 99])
    cols, vals = d.new_vc(new)
    Z = to_dense(cols, vals, d.k_vc)
    assert np.all(Z[1, :3] == 0) and np.all(Z[2, 9:] == 0)  # unseen: population value
    with pytest.raises(ValueError, match=r"levels of 'g' not seen in fitting: \['zz'\]"):
        d.new_vc(new, unseen="raise")
    with pytest.raises(ValueError, match="unseen must be"):
        d.new_vc(new, unseen="zero")
    with pytest.raises(ValueError, match="column 'x' has 1 missing"):
        d.new_vc(new.assign(x=[1.0, np.nan, 2.0]))


def test_missing_drop_equals_the_complete_rows(df):
    bad = df.assign(x=np.where(np.arange(len(df)) % 7 == 0, np.nan, df["x"]))
    with pytest.raises(ValueError, match="column 'x' has 9 missing"):
        glmm_design("y ~ x", {"g": "0 + C(g)"}, bad)
    with pytest.warns(UserWarning, match="dropped 9 row"):
        d = glmm_design("y ~ x", {"g": "0 + C(g)"}, bad, extra=["a"], missing="drop")
    ok = bad.dropna().reset_index(drop=True)
    ref = glmm_design("y ~ x", {"g": "0 + C(g)"}, ok, extra=["a"])
    np.testing.assert_array_equal(d.fixed.X, ref.fixed.X)
    np.testing.assert_array_equal(d.cols, ref.cols)
    np.testing.assert_array_equal(d.extra["a"], ok["a"].to_numpy(float))
    np.testing.assert_array_equal(d.subset(np.arange(len(df))), np.flatnonzero(bad["x"].notna()))
    assert ref.subset(None) is None
