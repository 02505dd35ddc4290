"""The public modules type-check with mypy (issue: user tools — a typed API, ``py.typed``).

The modules a user imports (the top level with its lazy exports, results' helpers, plots,
ArviZ export, the command line, datasets, progress) are checked; imports they make are
followed silently (their own errors are not reported here).  Skips when mypy is absent.
"""

import os
import subprocess
import sys

import pytest

PUBLIC = ["bayesglmm/__init__.py", "bayesglmm/progress.py", "bayesglmm/plot.py",
          "bayesglmm/arviz.py", "bayesglmm/cli.py", "bayesglmm/tables.py",
          "bayesglmm/exceptions.py", "bayesglmm/datasets/__init__.py", "bayesglmm/_cache.py",
          "bayesglmm/posterior_draws.py"]


@pytest.mark.slow  # over ~8 s on CI's two cores (.ci/run runs it)
def test_public_modules_type_check(tmp_path):
    pytest.importorskip("mypy")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run(
        [sys.executable, "-m", "mypy", *PUBLIC, "--ignore-missing-imports",
         "--follow-imports=silent", "--cache-dir", str(tmp_path / "mypy")],
        cwd=root, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
