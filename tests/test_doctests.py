"""Every docstring example in the package runs as a doctest (issue: user tools).

One test per module: ``doctest`` finds the examples of the module's functions, classes and
methods and runs them with ``ELLIPSIS`` and ``NORMALIZE_WHITESPACE``.  Examples are not
skipped: a ``+SKIP`` directive fails the suite, so an example either runs or is not an
example.
"""

import doctest
import importlib
import pkgutil
import warnings

import pytest

import bayesglmm

# modules that exist only to warn or to run: importing them has effects of their own
_EXCLUDE = {"bayesglmm.lmm", "bayesglmm.__main__"}


def _modules():
    names = ["bayesglmm"]
    for info in pkgutil.walk_packages(bayesglmm.__path__, "bayesglmm."):
        if info.name not in _EXCLUDE:
            names.append(info.name)
    return sorted(names)


MODULES = _modules()
# modules whose examples take over ~8 s on CI's two cores (satterthwaite's fits and
# differentiates an LMM): run with the slow tests
_SLOW = {"bayesglmm.inference.satterthwaite"}


def _tests(name):
    module = importlib.import_module(name)
    finder = doctest.DocTestFinder(exclude_empty=True)
    return [t for t in finder.find(module, name, globs=dict(vars(module)))
            if t.examples and t.name.startswith(name)]


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in _SLOW else n
                                  for n in MODULES])
def test_docstring_examples_run(name):
    flags = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
    runner = doctest.DocTestRunner(optionflags=flags)
    failures = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for test in _tests(name):
            skipped = [ex.source for ex in test.examples
                       if ex.options.get(doctest.SKIP)]
            assert not skipped, f"{test.name}: examples marked +SKIP: {skipped}"
            result = runner.run(test, out=failures.append)
            assert result.failed == 0, f"{test.name}:\n" + "".join(failures)


def test_the_package_has_examples():
    """The collection above is not empty: the modules with examples are found."""
    assert sum(len(_tests(n)) for n in ("bayesglmm.design.buckets", "bayesglmm.datasets")) >= 2
