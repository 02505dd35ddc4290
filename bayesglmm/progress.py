"""Progress of a running fit, reported from the host.

A fit called with ``progress=True`` reports its iterations on stderr once it has run for
``after`` seconds (2 by default: quick fits stay quiet), at most one line per ``every``
seconds, and a closing line — iteration, objective, gradient norm, elapsed time::

    fit_map   iter 12   objective 1.234567e+04   |grad| 3.2e-03   2.1 s

Host-driven loops (``fit_laplace``'s outer Newton iteration, the LMM's θ iteration) call
:func:`report` between iterations; batch loops (the parametric bootstrap) call
:func:`report_count` (``bootstrap  400/1000 replicates  3.2 s``).  Compiled loops
(``fit_map``/``fit_vb``'s Newton ``while_loop``) are compiled with a ``jax.debug.callback``
to :func:`report` when progress is on — a separate program, compiled once — never a
``print`` inside ``jit``.  :func:`report`
forwards to the reporter made active by :func:`reporting`, and does nothing without one.

Examples
--------
>>> import io
>>> out = io.StringIO()
>>> with reporting(Progress(after=0.0, every=0.0, stream=out), "demo"):
...     for it in range(2):
...         report(it, 10.0 / (it + 1), 0.5 ** it)
>>> print(out.getvalue().splitlines()[0].split()[:7])
['demo', 'iter', '0', 'objective', '1.000000e+01', '|grad|', '1.0e+00']
"""

from __future__ import annotations

import contextlib
import sys
import time

__all__ = ["Progress", "bar", "report", "report_count", "reporting", "resolve"]

_ACTIVE: list = []  # the reporters of the fits running in this thread, innermost last


class Progress:
    """Prints a fit's iterations on ``stream`` (default stderr).

    Parameters
    ----------
    after : float
        Seconds of silence before the first line (a fit that ends sooner prints nothing).
    every : float
        Least seconds between two lines.
    stream : file-like, optional
        Where lines go (``sys.stderr`` at the time of printing by default).
    """

    def __init__(self, after: float = 2.0, every: float = 1.0, stream=None):
        for name, val in (("after", after), ("every", every)):
            if isinstance(val, bool) or not isinstance(val, (int, float)) or val < 0:
                raise TypeError(f"Progress({name}=...) must be a number of seconds >= 0, "
                                f"got {val!r}")
        self.after, self.every, self.stream = float(after), float(every), stream
        self.label = "fit"
        self.start: float = time.perf_counter()
        self.last: float | None = None
        self.lines = 0
        self.last_values: tuple[int, float, float] | None = None
        self.last_count: tuple[int, int, str] | None = None

    def _write(self, text: str) -> None:
        stream = self.stream if self.stream is not None else sys.stderr
        stream.write(text + "\n")
        stream.flush()

    def begin(self, label: str) -> None:
        self.label, self.start, self.last, self.lines = label, time.perf_counter(), None, 0
        self.last_values = self.last_count = None

    def update(self, it, objective, gnorm) -> None:
        """One iteration's figures; printed if ``after`` and ``every`` allow."""
        now = time.perf_counter()
        self.last_values = (int(it), float(objective), float(gnorm))
        if now - self.start < self.after or (self.last is not None
                                             and now - self.last < self.every):
            return
        self.last = now
        self.lines += 1
        self._write(self._line(int(it), float(objective), float(gnorm), now - self.start))

    def count(self, done: int, total: int, what: str) -> None:
        """A batch loop's progress (``done`` of ``total`` ``what``), as :meth:`update`."""
        now = time.perf_counter()
        self.last_values = None
        self.last_count = (int(done), int(total), what)
        if now - self.start < self.after or (self.last is not None
                                             and now - self.last < self.every):
            return
        self.last = now
        self.lines += 1
        self._write(self._count_line(now - self.start))

    def _count_line(self, elapsed: float) -> str:
        done, total, what = self.last_count or (0, 0, "")
        return f"{self.label:<12} {done}/{total} {what}   {elapsed:.1f} s"

    def end(self) -> None:
        """The closing line, if anything was printed and the last iteration was not."""
        if self.lines and self.last_values is not None:
            self._write(self._line(*self.last_values, time.perf_counter() - self.start)
                        + "   done")
        elif self.lines and self.last_count is not None:
            self._write(self._count_line(time.perf_counter() - self.start) + "   done")

    def _line(self, it: int, objective: float, gnorm: float, elapsed: float) -> str:
        return (f"{self.label:<12} iter {it:<5d} objective {objective: .6e}   "
                f"|grad| {gnorm:.1e}   {elapsed:.1f} s")


def resolve(progress) -> Progress | None:
    """The reporter for a fit's ``progress`` argument: ``True`` (defaults), ``False``/``None``
    (none) or a :class:`Progress`."""
    if progress is None or progress is False:
        return None
    if progress is True:
        return Progress()
    if isinstance(progress, Progress):
        return progress
    raise TypeError(f"progress must be True, False or a bayesglmm.progress.Progress, "
                    f"got {progress!r}")


@contextlib.contextmanager
def reporting(progress, label: str):
    """Make ``resolve(progress)`` the active reporter while a fit runs; yields it (or None)."""
    reporter = resolve(progress)
    if reporter is None:
        yield None
        return
    reporter.begin(label)
    _ACTIVE.append(reporter)
    try:
        yield reporter
    finally:
        _ACTIVE.pop()
        reporter.end()


@contextlib.contextmanager
def bar(progress, total: int, what: str, label: str):
    """A progress bar over ``total`` items for a batch loop; yields ``update(done)``.

    With ``progress`` true: tqdm's bar when tqdm is installed (``progress=True``), else the
    count lines of :meth:`Progress.count` (``fit_many  3/10 chunks  4.2 s``; a
    :class:`Progress` given as ``progress`` always prints those).  Without: a no-op update.
    """
    if progress is True:
        try:
            from tqdm.auto import tqdm
        except ImportError:
            tqdm = None
        if tqdm is not None:
            with tqdm(total=total, desc=label, unit=what.rstrip("s")) as t:
                yield lambda done: t.update(done - t.n)
            return
    reporter = resolve(progress)
    if reporter is None:
        yield lambda done: None
        return
    # not made the active reporter: the fits inside the loop report nothing themselves
    reporter.begin(label)
    try:
        yield lambda done: reporter.count(done, total, what)
    finally:
        reporter.end()


def report_count(done, total, what: str) -> None:
    """Forward a batch loop's progress to the active reporter (no-op without one)."""
    if _ACTIVE:
        _ACTIVE[-1].count(done, total, what)


def active() -> bool:
    """Whether a reporter is active (a compiled loop then needs its callback)."""
    return bool(_ACTIVE)


def report(it, objective, gnorm) -> None:
    """Forward one iteration to the active reporter (a host callback; no-op without one)."""
    if _ACTIVE:
        _ACTIVE[-1].update(it, objective, gnorm)
