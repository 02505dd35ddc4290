"""bayesglmm/checks.py: the aliased columns of a fixed-effects design against a plain rank
computation (SVD), in R's order (a column in the span of the ones before it goes)."""

import numpy as np
import pytest

from bayesglmm import checks


def _reference(X):
    """Column j is aliased iff adding it to the kept columns before it leaves their rank
    (numpy's SVD rank) unchanged."""
    kept, out = [], []
    for j in range(X.shape[1]):
        r0 = np.linalg.matrix_rank(X[:, kept]) if kept else 0
        if np.linalg.matrix_rank(X[:, kept + [j]]) == r0:
            out.append(j)
        else:
            kept.append(j)
    return out


@pytest.mark.parametrize("seed", range(6))
def test_aliased_columns_match_the_rank_reference(seed):
    rng = np.random.default_rng(seed)
    n, p = 40, 8
    X = rng.normal(size=(n, p)) * rng.uniform(0.01, 100, p)  # columns of different scales
    a, b = rng.choice(p, 2, replace=False)
    X[:, max(a, b)] = 3 * X[:, min(a, b)] - 0.5 * X[:, 0]  # a later column made dependent
    X[:, rng.integers(p)] = 0.0
    assert checks.aliased_columns(X) == _reference(X)


def test_the_later_column_goes_and_more_columns_than_rows():
    x = np.arange(6.0)
    assert checks.aliased_columns(np.column_stack([2 * x + 1, np.ones(6), x])) == [2]
    X = np.random.default_rng(1).normal(size=(3, 5))
    assert checks.aliased_columns(X) == [3, 4]
    assert checks.aliased_columns(np.zeros((4, 0))) == []


def test_tall_designs_use_the_blocked_r_factor(monkeypatch):
    rng = np.random.default_rng(2)
    X = rng.normal(size=(1_000, 5))
    X[:, 3] = X[:, 1] + X[:, 2]
    monkeypatch.setattr(checks, "_QR_ROWS", 64)  # 16 row blocks
    assert checks._r_factor(X).shape == (16 * 5, 5)
    assert checks.aliased_columns(X) == [3]
