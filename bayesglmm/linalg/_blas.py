"""Run OpenBLAS single-threaded for the duration of a fit.

JAX's CPU Cholesky and triangular solves (:mod:`.cholesky`) call LAPACK from the
OpenBLAS that scipy bundles.  Called from inside XLA's own thread pool, multi-threaded
OpenBLAS oversubscribes the cores: on a 2-core machine with other processes running, one
1,126 × 1,126 Cholesky measured 1.0–1.6 s with 2 OpenBLAS threads against 25–40 ms with one;
grouseticks' 181 × 181 block of H_uu 224 → 154 µs, its integrated fit's 204 nodes 1.9 →
0.9 s.  :func:`single_threaded_blas` sets every loaded OpenBLAS to one thread and restores the
previous count on exit; where no OpenBLAS can be found it does nothing.  Every fit driver
(fits.lmm, fits.laplace, fits.integrate, fits.map, fits.vb, fits.vb_stream, fits.many) and
the profile and bootstrap refits (inference.profile, inference.bootstrap) run inside it.
"""

from __future__ import annotations

import contextlib
import ctypes
import threading

from .. import _lapack

__all__ = ["single_threaded_blas"]

_SYMBOLS = (
    ("scipy_openblas_set_num_threads", "scipy_openblas_get_num_threads"),
    ("scipy_openblas_set_num_threads64_", "scipy_openblas_get_num_threads64_"),
    ("openblas_set_num_threads", "openblas_get_num_threads"),
    ("openblas_set_num_threads64_", "openblas_get_num_threads64_"),
)
_lock = threading.Lock()
_depth = 0
_saved: list = []
_handles: list | None = None


def _openblas_handles() -> list:
    """(set, get) function pairs of the OpenBLAS libraries loaded in this process."""
    global _handles
    if _handles is not None:
        return _handles
    out = []
    try:
        if not _lapack.loaded():  # else loaded already, without scipy.linalg's package
            import scipy.linalg.cython_lapack  # noqa: F401  (scipy's OpenBLAS, used by jaxlib)
        for path in _mapped_openblas():
            lib = ctypes.CDLL(path)
            for set_name, get_name in _SYMBOLS:
                if hasattr(lib, set_name) and hasattr(lib, get_name):
                    setter, getter = getattr(lib, set_name), getattr(lib, get_name)
                    setter.argtypes, getter.restype = [ctypes.c_int], ctypes.c_int
                    out.append((setter, getter))
                    break
    except Exception:  # no /proc (not Linux), no OpenBLAS, …: leave threading alone
        out = []
    _handles = out
    return out


def _mapped_openblas() -> list:
    """Paths of the OpenBLAS libraries mapped into this process (Linux)."""
    with open("/proc/self/maps") as fh:
        return sorted({ln.split()[-1] for ln in fh if "openblas" in ln.lower() and ".so" in ln})


@contextlib.contextmanager
def single_threaded_blas():
    """Context in which OpenBLAS (if loaded) uses one thread; re-entrant."""
    global _depth, _saved
    with _lock:
        if _depth == 0:
            _saved = []
            for setter, getter in _openblas_handles():
                try:
                    _saved.append((setter, int(getter())))
                    setter(1)
                except Exception:
                    pass
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                for setter, n in _saved:
                    try:
                        setter(max(n, 1))
                    except Exception:
                        pass
                _saved = []
