"""OpenBLAS runs single-threaded inside every fit (linalg/_blas.py): JAX's CPU Cholesky and
triangular solves call it from XLA's own thread pool, where its threads oversubscribe the
cores (grouseticks' 181 × 181 Cholesky 224 → 154 µs single-threaded; its integrated fit
1.9 → 0.9 s)."""

import numpy as np
import pytest

import bayesglmm as bg
from bayesglmm import datasets
from bayesglmm.linalg import _blas


class _FakeOpenBLAS:
    """A (set, get) pair recording the thread counts set, as _openblas_handles returns."""

    def __init__(self, n=4):
        self.n, self.log = n, []

    def set(self, n):
        self.log.append(n)
        self.n = n

    def get(self):
        return self.n


@pytest.fixture
def fake(monkeypatch):
    lib = _FakeOpenBLAS()
    monkeypatch.setattr(_blas, "_handles", [(lib.set, lib.get)])
    return lib


def test_single_threaded_inside_restored_outside_and_reentrant(fake):
    with _blas.single_threaded_blas():
        assert fake.n == 1
        with _blas.single_threaded_blas():
            assert fake.n == 1
        assert fake.n == 1
    assert fake.n == 4 and fake.log == [1, 4]


@pytest.fixture(scope="module")
def cbpp():
    return bg.BinomialBayesMixedGLM.from_formula(
        "incidence ~ C(period)", {"herd": "0 + C(herd)"}, datasets.load("cbpp"), n_trials="size")


@pytest.mark.parametrize("fit", ["fit_map", "fit_vb", "fit_laplace", "integrate", "many"])
def test_every_glmm_fit_runs_single_threaded(cbpp, fake, fit):
    if fit == "integrate":
        cbpp.fit_laplace(priors=True, integrate=True)
    elif fit == "many":
        bg.fit_many(cbpp, np.column_stack([cbpp.endog, cbpp.endog]), priors=False)
    else:
        getattr(cbpp, fit)()
    assert fake.log[:1] == [1] and fake.log[-1] == 4  # one thread during the fit, then restored
    assert fake.n == 4
