"""JAX's CPU LAPACK, initialised without importing ``scipy.linalg``.

jaxlib's CPU linear algebra calls the BLAS and LAPACK that scipy bundles: the first program
with a Cholesky or a triangular solve (every fit's) runs ``jaxlib.lapack._lapack.initialize``,
which imports ``scipy.linalg.cython_blas`` and ``scipy.linalg.cython_lapack`` for their
function pointers — and with them the ``scipy.linalg`` package, whose ``__init__`` imports
scipy's array-API layer and the rest of scipy.linalg: 0.15 s of a 0.9 s script (a fresh
process fitting cbpp with a warm compilation cache), for two extension modules that load in
4 ms.

:func:`preload` loads those two extension modules from their files, without their parent
package, runs jaxlib's initialisation with them in ``sys.modules`` and takes them out again,
so a later ``import scipy.linalg`` (the user's, or a fit's that needs scipy.optimize) runs as
it would have.  Where anything differs from what it expects — scipy.linalg already imported,
no such files, another jaxlib — it does nothing and JAX initialises as before.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import logging
import os
import sys
import threading

__all__ = ["loaded", "preload"]

logger = logging.getLogger(__name__)
_MODULES = ("cython_blas", "cython_lapack")
_lock = threading.Lock()
_done = False
_loaded = False


def loaded() -> bool:
    """Whether :func:`preload` loaded scipy's BLAS and LAPACK (and so its OpenBLAS) into this
    process."""
    return _loaded


def preload() -> bool:
    """Initialise jaxlib's CPU LAPACK from scipy's extension modules alone, once per process
    (later calls return at once).  Returns whether this call did it."""
    global _done, _loaded
    if _done:
        return False
    with _lock:
        if _done:
            return False
        _done = True
        if "scipy.linalg" in sys.modules or any(
                f"scipy.linalg.{m}" in sys.modules for m in _MODULES):
            return False  # already paid for, or loaded some other way: nothing to gain
        try:
            from jaxlib import lapack

            initialize = lapack._lapack.initialize
            spec = importlib.util.find_spec("scipy")
            if spec is None or not spec.submodule_search_locations:
                return False
            folder = os.path.join(list(spec.submodule_search_locations)[0], "linalg")
            loaded = {}
            for name in _MODULES:
                full = f"scipy.linalg.{name}"
                path = next((os.path.join(folder, name + s)
                             for s in importlib.machinery.EXTENSION_SUFFIXES
                             if os.path.isfile(os.path.join(folder, name + s))), None)
                if path is None:
                    return False
                loader = importlib.machinery.ExtensionFileLoader(full, path)
                mod_spec = importlib.util.spec_from_file_location(full, path, loader=loader)
                if mod_spec is None:
                    return False
                module = importlib.util.module_from_spec(mod_spec)
                loader.exec_module(module)
                loaded[full] = module
        except Exception as err:  # noqa: BLE001 - an unexpected layout: JAX's own route
            logger.debug("LAPACK preload skipped (%s)", err)
            return False
        sys.modules.update(loaded)
        try:
            initialize()
        except Exception as err:  # noqa: BLE001 - JAX initialises on its first program instead
            logger.debug("LAPACK preload failed (%s)", err)
            return False
        finally:
            for name in loaded:
                sys.modules.pop(name, None)
        _loaded = True
        return True
