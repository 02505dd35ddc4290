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
          "bayesglmm/posterior_draws.py", "bayesglmm/models", "bayesglmm/results",
          "bayesglmm/inference/lrt.py", "bayesglmm/sharding.py"]


@pytest.mark.slow  # over ~8 s on CI's two cores (.ci/run runs it)
def test_public_modules_type_check(tmp_path):
    pytest.importorskip("mypy")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run(
        [sys.executable, "-m", "mypy", *PUBLIC, "--ignore-missing-imports",
         "--follow-imports=silent", "--cache-dir", str(tmp_path / "mypy")],
        cwd=root, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]


def _public_callables():
    """(qualified name, function) of every public function and method of the top-level API."""
    import inspect

    import bayesglmm

    for name in bayesglmm.__all__:
        obj = getattr(bayesglmm, name)
        if inspect.isfunction(obj):
            yield name, obj
        elif inspect.isclass(obj) and not issubclass(obj, Warning):
            for attr, member in inspect.getmembers(obj):
                if attr.startswith("_"):
                    continue
                f = member.fget if isinstance(member, property) else member
                f = getattr(f, "__func__", f)  # classmethods
                if inspect.isfunction(f) and f.__module__.startswith("bayesglmm"):
                    yield f"{name}.{attr}", f


def test_public_api_is_annotated():
    """Every public function and method (properties included) of the top-level names has
    a return annotation and annotated parameters (``self``/``cls`` aside)."""
    import inspect

    missing = []
    for qual, f in _public_callables():
        sig = inspect.signature(f)
        params = [p for n, p in sig.parameters.items() if n not in ("self", "cls")]
        if sig.return_annotation is inspect.Signature.empty or any(
                p.annotation is inspect.Parameter.empty for p in params):
            missing.append(qual)
    assert not missing, f"{len(missing)} without annotations: {sorted(set(missing))}"
