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


def test_more_random_effects_than_rows_is_an_error(sleep):
    """lme4's check.nobs.vs.nRE: ``(Days | Subject)`` with Days as text codes ten covariates
    per subject, 180 random effects for 180 rows (the fit took 41 s and reported a
    meaningless optimum)."""
    s = sleep.assign(Days=sleep.Days.astype(str))
    with pytest.raises(ValueError, match=r"180 random effects \(18 levels of 'Subject' × 10"):
        lmm_design("Reaction ~ 1 + (Days | Subject)", s)
    lmm_design("Reaction ~ 1 + (Days | Subject)", sleep)  # numeric Days: 36 random effects


def test_r_spellings_are_errors_saying_what_to_write(sleep):
    from bayesglmm import BinomialBayesMixedGLM, datasets, mixedlm

    with pytest.raises(ValueError, match=r"bitwise XOR .* write I\(Days\*\*2\)"):
        mixedlm("Reaction ~ Days + I(Days^2) + (1 | Subject)", sleep)
    mixedlm("Reaction ~ Days + I(Days**2) + (1 | Subject)", sleep)
    cbpp = datasets.load("cbpp")
    for formula, what in [("cbind(incidence, size - incidence) ~ period + (1|herd)", "n_trials="),
                          ("incidence ~ factor(period) + (1|herd)", r"C\(x\)"),
                          ("incidence ~ period + offset(size) + (1|herd)", "offset=")]:
        with pytest.raises(ValueError, match=rf"R's \w+\(\).*{what}"):
            BinomialBayesMixedGLM.from_formula(formula, None, cbpp, n_trials="size")
    with pytest.raises(ValueError, match="weights= .* not supported"):
        mixedlm("Reaction ~ Days + (1 | Subject)", sleep.assign(w=1.0), weights="w")
