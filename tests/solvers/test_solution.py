"""The user-facing optimiser report (``OptimizeResult``): scipy's interface, our class."""

import pickle

import pytest

from bayesglmm.solvers.solution import OptimizeResult


def test_keys_are_attributes_and_it_pickles():
    r = OptimizeResult(success=True, nit=3, message="converged")
    assert r.success is True and r["nit"] == 3 and sorted(dir(r)) == ["message", "nit", "success"]
    r.fun = 1.5
    assert r["fun"] == 1.5
    del r.fun
    assert "fun" not in r
    with pytest.raises(AttributeError, match="x"):
        r.x  # noqa: B018
    assert "nit: 3" in repr(r) and repr(OptimizeResult()) == "OptimizeResult()"
    assert pickle.loads(pickle.dumps(r)) == r
