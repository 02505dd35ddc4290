"""XLA compiler options for bayesglmm's programs, for the backend that runs them.

On CPU, small problems compile several times faster with XLA's classic elemental emitters
rather than its MLIR fusion emitters and without LLVM's optimisation passes (measured in
solvers/newton.py and kernels/lmm.py, where they are used), and run about as fast.  On GPUs
XLA autotunes the kernels of each fusion at compile time (timing candidate configurations on
the device): on an H100 that took 108 s of the first call of a 10^7-row logit ``fit_vb``
(5.3 s without, and the same steady state, 0.45 against 0.50 s), so every program compiles
without it (``GPU``).  The option names are each backend's own (a backend refuses another's),
and XLA drops options between releases (jax 0.11's CPU compiler no longer knows
``xla_cpu_use_fusion_emitters`` and refuses any program that names it), so an option is
passed only where this process's compiler accepts it (``_known``: one trivial compile,
skipped on the releases where every option was seen accepted, ``VERIFIED``).
"""

from __future__ import annotations

import functools

import jax

__all__ = ["GPU", "LIGHT_CPU", "SMALL_CPU", "large_options", "light_options", "small_options"]

SMALL_CPU = {"xla_backend_optimization_level": 0, "xla_cpu_use_fusion_emitters": False}
# XLA's classic emitters with LLVM's optimisation passes kept: compiles about 40% faster than
# the defaults and runs about as fast (the fits of fits.laplace, measured there)
LIGHT_CPU = {"xla_cpu_use_fusion_emitters": False}
# every program on a GPU: no compile-time autotuning (cuBLAS's and XLA's heuristics choose)
GPU = {"xla_gpu_autotune_level": 0}
_GPU_BACKENDS = ("gpu", "cuda", "rocm")
# (backend, jaxlib's major.minor) where every option above was seen accepted: the CPU's on
# jax 0.10 (CI, the pinned development environment), the GPU's on jax 0.11 (an H100)
VERIFIED = {("cpu", (0, 10)), ("gpu", (0, 11))}


def small_options() -> dict | None:
    """The options of a small program: ``SMALL_CPU`` on CPU, ``GPU`` on GPUs, None (XLA's
    defaults) elsewhere; each only where the compiler knows it."""
    return _for_backend(SMALL_CPU)


def light_options() -> dict | None:
    """``LIGHT_CPU`` on CPU, ``GPU`` on GPUs, None elsewhere (where the compiler knows them)."""
    return _for_backend(LIGHT_CPU)


def large_options() -> dict | None:
    """The options of a program over many rows: XLA's defaults on CPU, ``GPU`` on GPUs."""
    return _for_backend({})


def _for_backend(cpu_options: dict) -> dict | None:
    backend = jax.default_backend()
    if backend == "cpu":
        options = cpu_options
    elif backend in _GPU_BACKENDS:
        options = GPU
    else:
        return None
    known = _known(backend)
    kept = {k: v for k, v in options.items() if k in known}
    return kept or None


@functools.lru_cache(maxsize=None)
def _known(backend: str) -> frozenset:
    """The names among this backend's options that its compiler takes: all of them on a
    ``VERIFIED`` release, else one trivial compile with all of them (~20 ms, once per
    process; one per option if that fails)."""
    every = SMALL_CPU | LIGHT_CPU if backend == "cpu" else GPU
    if (backend, _jaxlib_minor()) in VERIFIED or _compiles(every):
        return frozenset(every)
    return frozenset(k for k, v in every.items() if _compiles({k: v}))


def _jaxlib_minor() -> tuple[int, int]:
    import jaxlib

    major, minor = jaxlib.__version__.split(".")[:2]
    return int(major), int(minor)


def _compiles(options: dict) -> bool:
    try:
        jax.jit(lambda x: x + 1).lower(1.0).compile(compiler_options=options)
    except Exception:  # XLA: INVALID_ARGUMENT "No such compile option"
        return False
    return True
