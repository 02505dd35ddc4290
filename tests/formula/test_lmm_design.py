"""The MixedLM's design: level-coded terms from formulas and arrays, rebuilt for new data."""

import numpy as np
import pandas as pd
import pytest

from bayesglmm.formula.lmm import design_from_arrays, lmm_design


def test_terms_hold_codes_covariates_and_levels(sleep):
    d = lmm_design("Reaction ~ Days", sleep, groups="Subject", re_formula="~Days")
    (t,) = d.terms
    assert t.cols == ["Subject", "Days"] and t.kind == "re" and d.groups_term == 0
    assert list(t.index) == sorted(sleep["Subject"].unique())
    np.testing.assert_array_equal(t.index[t.codes], sleep["Subject"])
    np.testing.assert_array_equal(t.z, np.column_stack([np.ones(180), sleep["Days"]]))


def test_vc_cells_and_their_new_rows(dietox):
    d = lmm_design("Weight ~ Time", dietox, groups="Litter", re_formula="1",
                   vc_formula={"Pig": "0 + C(Pig)"})
    vc = d.terms[1]
    assert vc.kind == "vc" and vc.index.names == ["Litter", "Pig"] and vc.q == 1
    codes, z = vc.new_rows(dietox)
    np.testing.assert_array_equal(codes, vc.codes)
    np.testing.assert_array_equal(z, vc.z)
    new = dietox.head(3).assign(Litter=[1, 99, 1])  # (99, pig) was never seen
    codes, _ = vc.new_rows(new)
    assert codes[1] == -1 and codes[0] == vc.codes[0]


def test_arrays_and_formula_give_the_same_terms(sleep):
    X = np.column_stack([np.ones(180), sleep["Days"]])
    a = design_from_arrays(sleep["Reaction"], X, sleep["Subject"], exog_re=X)
    f = lmm_design("Reaction ~ Days", sleep, groups="Subject", re_formula="~Days")
    for s, t in zip(a.terms, f.terms):
        np.testing.assert_array_equal(s.codes, t.codes)
        np.testing.assert_array_equal(s.z, t.z)
        assert list(s.index) == list(t.index)


def test_formula_errors(sleep):
    with pytest.raises(ValueError, match=r"'days' \(did you mean 'Days'\?\)"):
        lmm_design("Reaction ~ days", sleep, groups="Subject")
    with pytest.raises(ValueError, match="groups has 3 values"):
        lmm_design("Reaction ~ Days", sleep, groups=np.arange(3))
    with pytest.raises(ValueError, match="has no columns"):
        lmm_design("Reaction ~ Days + (0 | Subject)", sleep)
    with pytest.raises(ValueError, match="column 'Days' has infinite"):
        lmm_design("Reaction ~ Days", sleep.assign(Days=np.inf), groups="Subject")


def test_groups_as_an_array_become_a_column(sleep):
    g = pd.Series(sleep["Subject"].to_numpy(), name="subj")
    d = lmm_design("Reaction ~ Days", sleep, groups=g)
    assert d.terms[0].cols == ["subj"] and d.terms[0].group == "subj"
    np.testing.assert_array_equal(d.group_labels, g)
