"""Formula models pickle (no local closures in their designs) and predict alike afterwards."""

import pickle

import numpy as np

import bayesglmm as bg
from bayesglmm import datasets, mixedlm


def test_formula_mixedlm_round_trip(sleep):
    model = mixedlm("Reaction ~ Days + (Days | Subject) + (1 | Days)", sleep)
    clone = pickle.loads(pickle.dumps(model))
    theta = np.array([1.0, 0.2, 0.5, 0.3])
    assert clone.deviance(theta) == model.deviance(theta)
    new = sleep.head(4).assign(Subject=["308", "308", "none", "309"])
    for a, b in zip(model.design.terms, clone.design.terms):
        for u, v in zip(a.new_rows(new, "ignore"), b.new_rows(new, "ignore")):
            np.testing.assert_array_equal(u, v)
    assert clone.design.terms[0].new_rows(new, "ignore")[0][2] == -1


def test_formula_glmm_round_trip():
    df = datasets.load("cbpp")
    model = bg.BinomialBayesMixedGLM.from_formula(
        "incidence ~ C(period) + (1 | period)", {"herd": "0 + C(herd)", "p": "0 + C(period):size"},
        df, n_trials="size")
    clone = pickle.loads(pickle.dumps(model))
    x = np.random.default_rng(0).normal(size=model.k_fep + model.k_vcp + model.k_vc)
    assert clone.logposterior(x) == model.logposterior(x)
    r = bg.BayesMixedGLMResults(clone, x, np.ones(len(x)), method="vb")
    r0 = bg.BayesMixedGLMResults(model, x, np.ones(len(x)), method="vb")
    new = df.head(3).assign(herd=["1", "unseen", "2"])
    np.testing.assert_array_equal(r.predict(new), r0.predict(new))
