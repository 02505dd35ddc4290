"""bayesglmm.progress: reporting a fit's iterations from the host."""

import io

import jax.numpy as jnp
import numpy as np
import pytest

from bayesglmm.progress import Progress, report, reporting, resolve
from bayesglmm.solvers.newton import newton
from bayesglmm.solvers.projected_newton import projected_newton_host
from tests.helpers import assert_reproduced


def _lines(buf):
    return [ln for ln in buf.getvalue().splitlines() if ln]


def test_quiet_fits_print_nothing_and_slow_ones_print_throttled_lines():
    buf = io.StringIO()
    with reporting(Progress(after=3600.0, stream=buf), "quick"):
        for it in range(5):
            report(it, 1.0, 1.0)
    assert buf.getvalue() == ""  # ended before `after`
    buf = io.StringIO()
    with reporting(Progress(after=0.0, every=3600.0, stream=buf), "slow"):
        for it in range(5):
            report(it, 10.0 - it, 0.1)
    lines = _lines(buf)
    # the first iteration, then nothing for `every` seconds, then the closing line
    assert len(lines) == 2
    assert lines[0].split()[:3] == ["slow", "iter", "0"]
    assert lines[1].split()[:3] == ["slow", "iter", "4"] and lines[1].endswith("done")


def test_report_without_an_active_reporter_does_nothing(capsys):
    report(1, 2.0, 3.0)
    with reporting(False, "off") as r:
        report(1, 2.0, 3.0)
    assert r is None
    assert capsys.readouterr().err == ""


def test_progress_argument_is_validated():
    assert resolve(None) is None and resolve(False) is None
    assert isinstance(resolve(True), Progress)
    with pytest.raises(TypeError, match="progress must be"):
        resolve("yes")
    with pytest.raises(TypeError, match="after"):
        Progress(after=-1)


def test_the_compiled_newton_loop_reports_through_a_callback():
    f = lambda a, v: jnp.sum((a - 1.0) ** 4) + jnp.sum((v - a[0]) ** 2)  # noqa: E731
    quiet = newton(f, jnp.zeros(1), jnp.zeros((3, 1)))
    buf = io.StringIO()
    with reporting(Progress(after=0.0, every=0.0, stream=buf), "newton"):
        loud = newton(f, jnp.zeros(1), jnp.zeros((3, 1)))
    lines = _lines(buf)
    assert len(lines) >= 3 and all(ln.startswith("newton") for ln in lines)
    # iterations are reported in order, and the objective decreases
    objs = [float(ln.split()[4]) for ln in lines[:-1]]
    assert objs == sorted(objs, reverse=True)
    # reporting does not change the result
    np.testing.assert_array_equal(quiet.a, loud.a)
    assert int(quiet.n_iter) == int(loud.n_iter)


def test_the_host_driven_loop_reports_each_iteration():
    def value(x, u, aux, dx):
        return np.sum((x - 2.0) ** 4), u

    def vgh(x, u):
        return (np.sum((x - 2.0) ** 4), 4 * (x - 2.0) ** 3, np.diag(12 * (x - 2.0) ** 2 + 1e-12),
                None)

    buf = io.StringIO()
    with reporting(Progress(after=0.0, every=0.0, stream=buf), "laplace"):
        state, _ = projected_newton_host(vgh, value, np.zeros(2), None, np.full(2, -np.inf))
    lines = _lines(buf)
    assert len(lines) == int(state.it) + 1  # each iteration, and the closing line
    assert [int(ln.split()[2]) for ln in lines[:-1]] == list(range(int(state.it)))


def test_every_fit_takes_progress(sleep):
    """fit_map, fit_vb, fit_laplace and MixedLM.fit report through bayesglmm.progress (here
    from the first iteration), and give the same numbers as without it."""
    import bayesglmm as bg
    from bayesglmm import datasets

    model = bg.BinomialBayesMixedGLM.from_formula(
        "incidence ~ C(period)", {"herd": "0 + C(herd)"}, datasets.load("cbpp"),
        n_trials="size")
    for name, fit in [("fit_map", lambda **k: model.fit_map(rng=0, **k)),
                      ("fit_vb", lambda **k: model.fit_vb(rng=0, **k)),
                      ("fit_laplace", lambda **k: model.fit_laplace(priors=False, **k)),
                      ("MixedLM.fit", lambda **k: bg.mixedlm(
                          "Reaction ~ Days", sleep, groups="Subject",
                          re_formula="~Days").fit(**k))]:
        buf = io.StringIO()
        loud = fit(progress=Progress(after=0.0, every=0.0, stream=buf))
        quiet = fit()
        lines = _lines(buf)
        assert len(lines) >= 2 and all(ln.startswith(name) for ln in lines), (name, lines)
        assert_reproduced(np.asarray(loud.params), np.asarray(quiet.params))
    with pytest.raises(TypeError, match="progress must be"):
        model.fit_map(progress="yes")


def test_the_bootstrap_reports_replicates(sleep):
    import bayesglmm as bg

    r = bg.mixedlm("Reaction ~ Days + (1 | Subject)", sleep).fit()
    buf = io.StringIO()
    b = r.bootstrap(n=30, seed=0, batch=10, progress=Progress(after=0.0, every=0.0, stream=buf))
    lines = _lines(buf)
    assert [ln.split()[1] for ln in lines] == ["10/30", "20/30", "30/30", "30/30"]
    assert lines[-1].endswith("done") and b.replicates.shape[0] == 30
