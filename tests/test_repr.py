"""Printable models and summaries, the typing marker, and the declared version floors."""

import importlib.metadata
import re
import tomllib
from importlib import resources
from pathlib import Path

import numpy as np

from bayesglmm import (BinomialBayesMixedGLM, MixedLM, PoissonBayesMixedGLM, datasets, mixedlm)

ROOT = Path(__file__).resolve().parents[1]


def test_glmm_repr_names_family_formula_rows_and_levels():
    df = datasets.load("cbpp")
    m = BinomialBayesMixedGLM.from_formula("incidence ~ C(period)", {"herd": "0 + C(herd)"}, df,
                                           n_trials="size")
    assert repr(m) == ("<BinomialBayesMixedGLM: incidence ~ C(period) + {herd: 0 + C(herd)} | "
                       "n=56, fixed=4, random: herd (15 levels)>")
    g = datasets.load("grouseticks")
    m = PoissonBayesMixedGLM.from_formula("TICKS ~ YEAR + (1 | BROOD) + (1 | LOCATION)", {}, g)
    assert repr(m) == ("<PoissonBayesMixedGLM: TICKS ~ YEAR + (1 | BROOD) + (1 | LOCATION) | "
                       "n=403, fixed=3, random: BROOD (118 levels), LOCATION (63 levels)>")
    m = BinomialBayesMixedGLM(np.r_[0, 1, 1, 0, 1], np.ones((5, 1)), np.eye(5)[:, :2],
                              np.zeros(2, int))
    assert repr(m) == "<BinomialBayesMixedGLM: (arrays) | n=5, fixed=1, random: VC_1 (2 levels)>"


def test_lmm_repr():
    sleep = datasets.load("sleepstudy")
    m = MixedLM.from_formula("Reaction ~ Days + (Days | Subject)", sleep)
    assert repr(m) == ("<MixedLM: Reaction ~ Days + (Days | Subject) | n=180, fixed=2, "
                       "random: Subject (18 levels)>")
    m = mixedlm("diameter ~ 1 + (1|plate) + (1|sample)", datasets.load("penicillin"))
    assert repr(m).endswith("n=144, fixed=1, random: plate (24 levels), sample (6 levels)>")


def test_summaries_have_an_html_view():
    r = mixedlm("Yield ~ 1 + (1 | Batch)", datasets.load("dyestuff")).fit()
    html = r.summary()._repr_html_()
    assert html.startswith("<h4>Mixed Linear Model Regression Results</h4>")
    assert html.count("<table") == 1 and "Intercept" in html


def test_py_typed_is_shipped():
    assert resources.files("bayesglmm").joinpath("py.typed").is_file()
    conf = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "py.typed" in conf["tool"]["setuptools"]["package-data"]["bayesglmm"]


def _version(s: str) -> tuple:
    return tuple(int(x) for x in re.findall(r"\d+", s)[:3])


def test_installed_jax_and_optax_satisfy_the_declared_floors():
    conf = tomllib.loads((ROOT / "pyproject.toml").read_text())
    floors = {}
    for dep in conf["project"]["dependencies"]:
        m = re.fullmatch(r"([A-Za-z0-9_.-]+)>=([0-9.]+)", dep.replace(" ", ""))
        if m:
            floors[m.group(1)] = m.group(2)
    for name in ("jax", "jaxlib", "optax"):
        assert _version(importlib.metadata.version(name)) >= _version(floors[name]), name
    # the floor is what the suite runs on (CHANGELOG: raised from 0.4.30, never tested)
    assert _version(floors["jax"]) >= (0, 10)
