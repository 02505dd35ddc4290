"""statsmodels' own test files with the import of the model classes swapped to bayesglmm.

:func:`swapped_suite` copies ``statsmodels/regression/tests/test_lme.py`` or
``statsmodels/genmod/tests/test_bayes_mixed_glm.py`` from the installed statsmodels and changes
only what a migrating user would change: the import of ``MixedLM`` (and of the formula
function ``mixedlm``), ``BinomialBayesMixedGLM`` and ``PoissonBayesMixedGLM``.  statsmodels'
private helpers (``MixedLMParams``, ``_smw_solver``, ...) and result files stay statsmodels';
the relative paths to them are resolved to the installed package.  :func:`run_suite` runs one
such file with pytest in a subprocess and returns each test's outcome.

Run by hand: ``python -m tests.statsmodels_suites lme`` (or ``bayes_mixed_glm``) prints the
outcomes.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

__all__ = ["SUITES", "run_suite", "swapped_suite"]

# suite -> (path inside statsmodels, [(old, new), ...]); each `old` must occur in the file
SUITES = {
    "lme": (
        "regression/tests/test_lme.py",
        [
            ("from statsmodels.regression.mixed_linear_model import (\n    MixedLM,\n",
             "from bayesglmm import MixedLM\n"
             "from statsmodels.regression.mixed_linear_model import (\n"),
            ("from statsmodels.formula.api import mixedlm",
             "from bayesglmm import mixedlm"),
            ("from .results import lme_r_results",
             "from statsmodels.regression.tests.results import lme_r_results"),
        ],
    ),
    "bayes_mixed_glm": (
        "genmod/tests/test_bayes_mixed_glm.py",
        [
            ("from statsmodels.genmod.bayes_mixed_glm import (\n"
             "    BayesMixedGLMResults,\n    BinomialBayesMixedGLM,\n"
             "    PoissonBayesMixedGLM,\n)",
             "from bayesglmm import (\n    BayesMixedGLMResults,\n    BinomialBayesMixedGLM,\n"
             "    PoissonBayesMixedGLM,\n)"),
        ],
    ),
}


def swapped_suite(name: str, directory) -> Path:
    """Write statsmodels' test file ``name`` (a key of :data:`SUITES`), import swapped, into
    ``directory``; return its path.  Raises ``ValueError`` if the file no longer has the
    expected import (another statsmodels version)."""
    import statsmodels

    rel, swaps = SUITES[name]
    src = Path(statsmodels.__file__).resolve().parent / rel
    text = src.read_text(encoding="utf-8")
    for old, new in swaps:
        if old not in text:
            raise ValueError(f"{src} has no {old!r}: the swap needs updating")
        text = text.replace(old, new)
    # result files stay statsmodels': `Path(__file__).resolve().parent` is the installed folder
    text = text.replace("Path(__file__).resolve().parent", f"Path({str(src.parent)!r})")
    out = Path(directory) / src.name
    out.write_text(text, encoding="utf-8")
    return out


_OUTCOME = re.compile(r"^(\S+::\S+)\s+(PASSED|FAILED|ERROR|SKIPPED|XFAIL|XPASS)", re.M)


def run_suite(name: str, timeout: float = 900, extra=()) -> tuple[dict, str]:
    """Run the swapped suite ``name`` with pytest in a subprocess.

    Returns
    -------
    outcomes : dict
        ``{test id (without the file name): "PASSED" | "FAILED" | ...}``
    output : str
        pytest's output, for failure messages.
    """
    with tempfile.TemporaryDirectory(prefix=f"sm-{name}-") as tmp:
        path = swapped_suite(name, tmp)
        Path(tmp, "pytest.ini").write_text(
            "[pytest]\nmarkers =\n    slow: statsmodels' slow tests\n    smoke: smoke\n"
            "    matplotlib: needs matplotlib\n", encoding="utf-8")
        env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
        env["PYTHONPATH"] = os.pathsep.join(
            [str(Path(__file__).resolve().parents[1])] + env.get("PYTHONPATH", "").split(os.pathsep))
        cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rA", "-q",
               "--tb=line", "-c", str(Path(tmp, "pytest.ini")), "--rootdir", tmp,
               str(path), *extra]
        proc = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True,
                              timeout=timeout)
    out = proc.stdout + proc.stderr
    outcomes = {}
    for line in out.splitlines():
        m = _OUTCOME.match(line) or re.match(r"^(PASSED|FAILED|ERROR|SKIPPED\S*) (\S+::\S+)", line)
        if m is None:
            continue
        if m.group(1) in ("PASSED", "FAILED", "ERROR") or m.group(1).startswith("SKIPPED"):
            status, tid = m.group(1), m.group(2)
        else:
            tid, status = m.group(1), m.group(2)
        outcomes[tid.split("::", 1)[1]] = status.split("[")[0]
    return outcomes, out


if __name__ == "__main__":
    suite = sys.argv[1] if len(sys.argv) > 1 else "lme"
    res, text = run_suite(suite, extra=sys.argv[2:])
    for tid, st in sorted(res.items()):
        print(st, tid)
    print({s: sum(v == s for v in res.values()) for s in set(res.values())})
