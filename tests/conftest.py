"""Shared fixtures.  bayesglmm enables 64-bit JAX types only inside its own calls; tests that
evaluate kernels directly wrap them in ``precision(np.float64)``."""

import os
import tempfile
import warnings

import pytest

from bayesglmm import datasets

warnings.filterwarnings("ignore", category=DeprecationWarning, module="formulaic")

# The suite never touches the user's compilation cache (~/.cache/bayesglmm): it gets its own,
# fresh per session, so the cache code still runs and no test depends on an earlier run
# (BAYESGLMM_CACHE_DIR=0 in the environment runs it with the cache off).
if os.environ.get("BAYESGLMM_CACHE_DIR") != "0":
    os.environ["BAYESGLMM_CACHE_DIR"] = tempfile.mkdtemp(prefix="bayesglmm-test-cache-")


@pytest.fixture
def no_warnings():
    """Turn every warning inside the test into an error."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        yield


@pytest.fixture(scope="session")
def sleep():
    return datasets.load("sleepstudy")


@pytest.fixture(scope="session")
def dietox():
    return datasets.load("dietox")


@pytest.fixture(scope="session")
def penicillin():
    return datasets.load("penicillin")
