"""formula.fixed: statsmodels' (patsy's) columns — order, kinds of boolean and nullable-string
columns — and unseen levels in new data."""

import numpy as np
import pandas as pd
import pytest

from bayesglmm.formula.fixed import fixed_design, new_exog

patsy = pytest.importorskip("patsy")


@pytest.fixture(scope="module")
def df():
    rng = np.random.default_rng(1)
    n = 60
    return pd.DataFrame({
        "y": rng.normal(size=n), "x": rng.normal(size=n), "z": rng.normal(size=n) + 3,
        "w": rng.normal(size=n), "f": rng.choice(["a", "b", "c"], n),
        "g": rng.choice([1, 2, 3, 4], n), "b": rng.choice([True, False], n),
        "s": pd.array(rng.choice(["p", "q"], n), dtype="string"),
    })


FORMULAS = ["y ~ x + C(f)", "y ~ x*f", "y ~ x + f + x:f", "y ~ C(g) + x + C(f)", "y ~ x:z + w",
            "y ~ np.log(z) + C(f)", "y ~ x + z + C(f):x", "y ~ 0 + x + C(f)", "y ~ b + x",
            "y ~ s*x", "y ~ C(f)*C(g) + x", "y ~ x + I(x**2) + f", "y ~ C(f) + x + z + C(f):z",
            "y ~ x - 1 + f", "y ~ f:x"]


@pytest.mark.parametrize("formula", FORMULAS)
def test_columns_as_patsy(df, formula):
    """Names, order and values of patsy's design (statsmodels' formula engine), including
    booleans and nullable strings as categorical."""
    fixed = fixed_design(formula, df)
    rhs = formula.partition("~")[2]
    want = patsy.dmatrix(rhs, df.astype({"s": object}), return_type="dataframe")
    assert fixed.xnames == list(want.columns)
    np.testing.assert_allclose(fixed.X, want.to_numpy(), rtol=1e-12, atol=1e-12)
    # new data: the same columns from the kept spec
    np.testing.assert_allclose(new_exog(fixed.spec, df), fixed.X, rtol=1e-12, atol=1e-12)


def test_digit_strings_in_a_nullable_string_column_are_levels(df):
    d = df.assign(s=pd.array(np.where(df.s == "p", "1", "2"), dtype="string"))
    assert fixed_design("y ~ s", d).xnames == ["Intercept", "s[T.2]"]


@pytest.mark.parametrize("formula", ["y ~ x + C(g)", "y ~ x + f", "y ~ x*f",
                                     "y ~ C(f, Treatment('b'))"])
def test_unseen_level_in_new_data_is_an_error_naming_the_column(df, formula):
    spec = fixed_design(formula, df).spec
    new = df.head(3).copy()
    col = "g" if "g" in formula else "f"
    new[col] = [9, 1, 2] if col == "g" else ["zz", "a", "b"]
    with pytest.raises(ValueError, match=rf"column '{col}' .*not seen in fitting"):
        new_exog(spec, new)


def test_a_level_of_another_type_is_unseen(df):
    spec = fixed_design("y ~ x + C(g)", df).spec
    with pytest.raises(ValueError, match="'1'"):
        new_exog(spec, df.head(2).assign(g=["1", "2"]))


def test_missing_values_in_new_data_still_predict_nan_rows(df):
    spec = fixed_design("y ~ x + f", df).spec
    new = df.head(3).assign(f=["a", None, "b"])
    with pytest.warns(UserWarning, match="missing values"):
        X = new_exog(spec, new, na_action="ignore")
    assert np.isnan(X[1]).all() and np.isfinite(X[[0, 2]]).all()
