"""Floating-point precision: float64 by default on CPU, float32 on request.

JAX runs in float32 unless ``jax_enable_x64`` is set.  Rather than flip that global switch for
the user's whole program at import, every public entry point that runs JAX code wraps itself in
``precision(dtype)``, a context that enables 64-bit types only while bayesglmm computes.  The
same context enables bayesglmm's persistent compilation cache (``_cache``), also only while
bayesglmm computes, and full-precision matrix products: on GPUs JAX's default lets float32
products run in TF32 (10-bit mantissas), which stopped most float32 fits from converging on an
H100 (many-response fits; single fits took twice the Newton steps).  On CPUs it changes nothing.

The environment variable ``BAYESGLMM_DTYPE`` (``float32`` or ``float64``) replaces the
per-backend default for every call that passes no ``dtype=`` (float64 on a GPU, say).
"""

from __future__ import annotations

import contextlib
import os

import jax
import numpy as np

from ._cache import cache_scope
from ._lapack import preload as preload_lapack

__all__ = ["precision", "resolve_dtype"]

ENV_DTYPE = "BAYESGLMM_DTYPE"


def resolve_dtype(dtype=None) -> np.dtype:
    """``None`` -> ``$BAYESGLMM_DTYPE`` if set, else float64 on CPU and float32 on
    accelerators; otherwise float32 or float64."""
    if dtype is None:
        env = os.environ.get(ENV_DTYPE, "").strip().lower()
        if env:
            if env not in ("float32", "float64"):
                raise ValueError(f"{ENV_DTYPE} must be float32 or float64, got {env!r}")
            return np.dtype(env)
        return np.dtype(np.float64 if jax.default_backend() == "cpu" else np.float32)
    dt = np.dtype(dtype)
    if dt not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise ValueError(f"dtype must be float32 or float64, got {dt}")
    return dt


@contextlib.contextmanager
def precision(dtype):
    """Run the enclosed JAX code with 64-bit types on iff ``dtype`` is float64, full-precision
    matrix products (never TF32) and bayesglmm's persistent compilation cache (see
    ``bayesglmm._cache``)."""
    preload_lapack()  # once per process: JAX's LAPACK without scipy.linalg's import
    with (jax.enable_x64(np.dtype(dtype) == np.float64), jax.default_matmul_precision("highest"),
          cache_scope()):
        yield
