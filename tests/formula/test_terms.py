"""One parser for both model kinds: lme4-style bars, statsmodels' vc_formula(s)."""

import pytest

from bayesglmm.formula.terms import TermSpec, glmm_specs, lmm_specs, split_formula


def test_split_formula_bars_nesting_and_double_bar():
    fixed, terms = split_formula("y ~ x + (1 | s) + (x || g) + (0 + x | a/b)")
    assert fixed == "y ~ x"
    assert terms == [TermSpec("1", ("s",), "re", "s"), TermSpec("x", ("g",), "diag", "g"),
                     TermSpec("0 + x", ("a",), "re", "a"),
                     TermSpec("0 + x", ("a", "b"), "re", "a:b")]


def test_split_formula_errors():
    with pytest.raises(ValueError, match="must have the form 'response ~ terms'"):
        split_formula("x + (1 | g)")
    with pytest.raises(ValueError, match="no grouping factor"):
        split_formula("y ~ (1 | )")
    with pytest.raises(ValueError, match="could not read random-effect term"):
        split_formula("y ~ x + 1 | g")


def test_glmm_specs_vc_formulas_first_then_bars():
    fixed, terms = glmm_specs("y ~ x + (1 + x | g)", {"h": "0 + C(h)", "s": "0 + C(h):x"})
    assert fixed == "y ~ x"
    assert terms == [TermSpec("0 + C(h)", (), "vc", "h"), TermSpec("0 + C(h):x", (), "vc", "s"),
                     TermSpec("1 + x", ("g",), "re", "g")]
    assert glmm_specs("y ~ x", None) == ("y ~ x", [])
    with pytest.raises(ValueError, match="vc_formulas must be a dict"):
        glmm_specs("y ~ x", ["0 + C(h)"])


def test_lmm_specs_groups_terms_then_bars():
    _, terms = lmm_specs("y ~ x", "g", "~x", {"p": "0 + C(p)"})
    assert terms == [TermSpec("x", ("g",), "re", "g"), TermSpec("0 + C(p)", ("g",), "vc", "p")]
    # with vc_formula and no re_formula: no random intercept (statsmodels)
    assert [t.kind for t in lmm_specs("y ~ x", "g", None, {"p": "0 + C(p)"})[1]] == ["vc"]
    # lme4-style terms and groups: no implicit intercept of groups
    assert lmm_specs("y ~ x + (1 | s)", "g", None, None)[1] == [TermSpec("1", ("s",), "re", "s")]
    with pytest.raises(ValueError, match="give groups="):
        lmm_specs("y ~ x", None, None, None)
    with pytest.raises(ValueError, match="need groups="):
        lmm_specs("y ~ x + (1 | s)", None, "~x", None)
    with pytest.raises(ValueError, match="no random effects"):
        lmm_specs("y ~ x", "g", "0", None)
