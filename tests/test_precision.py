"""The default dtype: per backend, or BAYESGLMM_DTYPE."""

import jax
import numpy as np
import pytest

from bayesglmm._precision import ENV_DTYPE, resolve_dtype


def test_default_per_backend(monkeypatch):
    monkeypatch.delenv(ENV_DTYPE, raising=False)
    cpu = jax.default_backend() == "cpu"
    assert resolve_dtype() == (np.float64 if cpu else np.float32)
    assert resolve_dtype(np.float32) == np.float32
    with pytest.raises(ValueError, match="float32 or float64"):
        resolve_dtype(np.int32)


@pytest.mark.parametrize("value, expected", [("float32", np.float32), (" Float64 ", np.float64)])
def test_environment_sets_the_default(monkeypatch, value, expected):
    monkeypatch.setenv(ENV_DTYPE, value)
    assert resolve_dtype() == expected
    assert resolve_dtype(np.float64) == np.float64  # an explicit dtype= still wins


def test_environment_value_is_checked(monkeypatch):
    monkeypatch.setenv(ENV_DTYPE, "half")
    with pytest.raises(ValueError, match=f"{ENV_DTYPE} must be float32 or float64, got 'half'"):
        resolve_dtype()


def test_environment_reaches_the_lmm_default(monkeypatch):
    """The LMM resolves its default without importing JAX on CPU; the variable still wins."""
    from bayesglmm.fits.lmm import lmm_dtype

    monkeypatch.setenv(ENV_DTYPE, "float32")
    assert lmm_dtype(None) == np.float32
    monkeypatch.setenv(ENV_DTYPE, "float16")
    with pytest.raises(ValueError, match=ENV_DTYPE):
        lmm_dtype(None)
