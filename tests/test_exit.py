"""The exit-time gc.freeze (``bayesglmm._exit``): on after a fit's import, off on request."""

import os
import subprocess
import sys

import pytest

# counted from the objects frozen before bayesglmm is imported: a site's start-up may freeze
# its own (seen: 375 objects under a PyTorch image's Python)
CHILD = """
import atexit, gc, sys
base = gc.get_freeze_count()
# registered first, so it runs last: after bayesglmm's exit handler
atexit.register(lambda: print("frozen" if gc.get_freeze_count() > base else "not frozen",
                              flush=True))
import bayesglmm
bayesglmm.mixedlm  # a public name: loads the models (and JAX)
print("running", gc.get_freeze_count() - base, flush=True)
"""


@pytest.mark.parametrize("env, want", [({}, "frozen"), ({"BAYESGLMM_FAST_EXIT": "0"},
                                                          "not frozen")])
def test_objects_are_frozen_only_at_exit(env, want):
    full = {k: v for k, v in os.environ.items() if k != "BAYESGLMM_FAST_EXIT"} | env
    out = subprocess.run([sys.executable, "-c", CHILD], env=full, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[:2] == ["running 0", want]  # nothing changes while it runs
