"""formula.simple against formulaic: the same columns, names and values, or a fallback."""

import pickle
import warnings

import formulaic
import numpy as np
import pandas as pd
import pytest

from bayesglmm.formula.simple import names, parse


@pytest.fixture(scope="module")
def df():
    rng = np.random.default_rng(0)
    n = 40
    return pd.DataFrame({
        "y": rng.normal(size=n), "x": rng.integers(0, 9, n), "z": rng.normal(size=n),
        "f": rng.choice(["b", "a", "c"], n), "g": rng.choice(["v", "u"], n),
        "p": rng.choice([3, 1, 2], n), "s": pd.array(rng.choice(["q", "r"], n), dtype="str"),
    })


SIMPLE = ["y ~ x + f", "y ~ C(f) + x", "y ~ 0 + C(f) + C(g)", "y ~ 0 + x + C(f)", "y ~ C(p)",
          "y ~ x + 1", "y ~ -1 + C(f)", "y ~ C(f) - 1", "y ~ x + x", "y ~ 1", "y ~ 0 + f + g",
          "y~x+z", "y ~ C(f) + C(f)", "y ~ s + C(g) + z", "y ~ 0 + z + g + C(p)",
          "0 + z", "1 + z", "1", "0 + C(f)", "z", "f + C(p)"]


@pytest.mark.parametrize("formula", SIMPLE)
def test_same_design_as_formulaic(df, formula):
    lhs, spec = parse(formula, df)
    mm = formulaic.model_matrix(formula, df, na_action="raise")
    rhs = mm.rhs if "~" in formula else mm
    # formulaic's columns, in patsy's order (test_patsy_order)
    assert sorted(spec.column_names) == sorted(str(c) for c in rhs.columns)
    np.testing.assert_array_equal(spec.matrix(df),
                                  np.asarray(rhs[list(spec.column_names)], dtype=np.float64))
    assert lhs == ("y" if "~" in formula else None)
    assert spec.required_variables == {str(v) for v in rhs.model_spec.required_variables}
    assert names(formula) == list(dict.fromkeys(
        sorted(formulaic.Formula(formula).required_variables, key=formula.find)))


@pytest.mark.parametrize("formula", SIMPLE)
def test_patsy_order(df, formula):
    """statsmodels' (patsy's) column order: intercept, categorical terms, numeric terms."""
    patsy = pytest.importorskip("patsy")
    _, spec = parse(formula, df)
    want = patsy.dmatrix(formula.partition("~")[2] if "~" in formula else formula,
                         df.astype({"s": object})).design_info.column_names
    assert list(spec.column_names) == want


@pytest.mark.parametrize("formula", [
    "y ~ np.log(z)", "y ~ x:z", "y ~ x * z", "y ~ 0 + 1", "y ~ C(f, Treatment('b'))",
    "np.log(z) ~ x", "y ~ C(z)", "y ~ b", "y ~ x + I(x**2)", "~ x", "y ~ y + x"])
def test_everything_else_goes_to_formulaic(df, formula):
    assert parse(formula, df) is None


def test_columns_formulaic_codes_otherwise_go_to_formulaic(df):
    d = df.assign(c=pd.Categorical(df.f), b=df.x > 4, n=pd.array(df.x, dtype="Int64"),
                  t=pd.array(df.f, dtype="string"), m=df.z.where(df.z > 0))
    for formula in ["y ~ c", "y ~ C(c)", "y ~ b", "y ~ n", "y ~ C(n)", "y ~ t", "y ~ m",
                    "m ~ x"]:
        assert parse(formula, d) is None, formula


def test_new_data_as_formulaic_including_unseen_levels(df):
    formula = "y ~ C(f) + x + g"
    _, spec = parse(formula, df)
    ref = formulaic.model_matrix(formula, df).rhs.model_spec
    new = pd.DataFrame({"f": ["a", "d", "c"], "x": [1, 2, 3], "g": ["u", "v", "u"]})
    with warnings.catch_warnings(record=True) as ours:
        warnings.simplefilter("always")
        got = spec.get_model_matrix(new)
    with warnings.catch_warnings(record=True) as theirs:
        warnings.simplefilter("always")
        want = ref.get_model_matrix(new)
    assert list(got.columns) == list(spec.column_names)
    np.testing.assert_array_equal(np.asarray(got, float), np.asarray(want[list(got.columns)], float))
    assert [w.category for w in ours] == [w.category for w in theirs]


def test_pickles_without_its_formulaic_spec(df):
    _, spec = parse("y ~ C(p) + z", df)
    spec.formulaic_spec()
    back = pickle.loads(pickle.dumps(spec))
    assert back._formulaic is None and back.column_names == spec.column_names
    np.testing.assert_array_equal(np.asarray(back.get_model_matrix(df), float), spec.matrix(df))


def _imported(code: str) -> list[str]:
    """Which of the heavy optional imports a fresh process running ``code`` loaded."""
    import os
    import subprocess
    import sys

    code += ("\nprint(sorted(m for m in ('formulaic', 'optax', 'scipy.optimize', 'scipy.special',"
             " 'scipy.stats') if m in sys.modules))\n")
    env = {**os.environ, "BAYESGLMM_CACHE_DIR": "0"}
    out = subprocess.run([sys.executable, "-c", "import sys\n" + code], capture_output=True,
                         text=True, env=env)
    assert out.returncode == 0, out.stderr
    return eval(out.stdout.strip().splitlines()[-1])


MODELS = ("from bayesglmm import PoissonBayesMixedGLM, mixedlm, datasets\n"
          "d = datasets.load('cbpp')\n"
          "m = PoissonBayesMixedGLM.from_formula('incidence ~ C(period)', {'herd': '0 + C(herd)'}"
          ", d)\n"
          "s = datasets.load('sleepstudy')\n"
          "lm = mixedlm('Reaction ~ Days', s, groups='Subject', re_formula='~Days')\n")


def test_plain_formulas_do_not_import_formulaic():
    assert _imported(MODELS) == []


@pytest.mark.slow
def test_plain_fits_and_summaries_import_none_of_the_heavy_modules():
    assert _imported(MODELS + "m.fit_vb().summary()\nlm.fit().summary()\n"
                     "m.fit_map().summary()\n") == []
