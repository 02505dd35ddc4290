"""Used columns, NaN/inf checks with missing=, grouping-factor level codes."""

import numpy as np
import pandas as pd
import pytest

from bayesglmm.formula.frame import (
    group_keys,
    level_codes,
    model_frame,
    required_columns,
    used_columns,
)


@pytest.fixture
def df():
    return pd.DataFrame({"y": [1.0, 2, 3, 4], "x": [0.5, np.nan, 1.5, 2.0],
                         "Team": ["b", "a", "b", "c"], "k": [2, 1, 2, 10],
                         "w": [1.0, 1.0, np.nan, np.inf]})


def test_required_and_used_columns(df):
    assert required_columns("y ~ np.log(x) + C(Team)") == ["y", "x", "Team"]
    assert used_columns(["y ~ x", "0 + C(Team)"], df, ["k", "x"]) == ["y", "x", "Team", "k"]
    with pytest.raises(ValueError, match=r"'team' \(did you mean 'Team'\?\)"):
        used_columns(["y ~ x + C(team)"], df)
    with pytest.raises(ValueError, match=r"'size' \(did you mean 'sizes'\?\)"):
        used_columns(["y ~ x"], df.assign(sizes=1), ["size"])
    with pytest.raises(ValueError, match="cannot parse formula"):
        required_columns("y ~ (x")


def test_missing_values_raise_naming_each_column(df):
    for missing in ("none", "raise"):
        with pytest.raises(ValueError, match=r"column 'x' has 1 missing value\(s\) \(NaN/None\); "
                                             r"column 'w' has 1 missing"):
            model_frame(df, ["y", "x", "w"], missing)
    with pytest.raises(ValueError, match="missing must be 'none', 'raise' or 'drop'"):
        model_frame(df, ["y"], "skip")
    frame = model_frame(df, ["y", "Team"], "raise")
    assert frame.data is df and frame.keep is None and frame.n_dropped == 0


def test_missing_drop_keeps_complete_rows(df):
    with pytest.warns(UserWarning, match="dropped 1 row"):
        frame = model_frame(df, ["y", "x"], "drop")
    np.testing.assert_array_equal(frame.keep, [True, False, True, True])
    assert frame.n_dropped == 1 and list(frame.data["y"]) == [1.0, 3, 4]
    assert list(frame.data.index) == [0, 1, 2]


def test_infinite_values_raise_naming_the_column(df):
    with pytest.warns(UserWarning, match="dropped 1 row"), \
            pytest.raises(ValueError, match="column 'w' has infinite value"):
        model_frame(df, ["y", "w"], "drop")


def test_level_codes_sorted_and_interactions(df):
    index, codes = level_codes(df, ("Team",))
    assert list(index) == ["a", "b", "c"] and list(codes) == [1, 0, 1, 2]
    index, codes = level_codes(df, ("k",))
    assert list(index) == [1, 2, 10] and list(codes) == [1, 0, 1, 2]  # numeric order
    assert list(group_keys(df, ("Team", "k"))) == ["b:2", "a:1", "b:2", "c:10"]
    index, codes = level_codes(df, ("Team", "k"))
    assert list(index) == ["a:1", "b:2", "c:10"] and list(codes) == [1, 0, 1, 2]
    assert codes.dtype == np.int64


def test_level_codes_declared_categories():
    cat = pd.DataFrame({"g": pd.Categorical(["b", "a", "b"], categories=["c", "b", "a"])})
    index, codes = level_codes(cat, ("g",), declared=True)  # formulaic's C(g): c, b, a
    assert list(index) == ["c", "b", "a"] and list(codes) == [1, 2, 1]
    index, codes = level_codes(cat, ("g",))  # grouping factors: the levels that occur, sorted
    assert list(index) == ["a", "b"] and list(codes) == [1, 0, 1]
