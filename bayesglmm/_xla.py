"""XLA compiler options for small problems, for the backend that runs them.

On CPU, small problems compile several times faster with XLA's classic elemental emitters
rather than its MLIR fusion emitters and without LLVM's optimisation passes (measured in
solvers/newton.py and kernels/lmm.py, where they are used), and run about as fast.  The
option names are the CPU backend's: other backends (GPU, TPU) reject them, so there the
programs compile with XLA's defaults.
"""

from __future__ import annotations

import jax

__all__ = ["LIGHT_CPU", "SMALL_CPU", "light_options", "small_options"]

SMALL_CPU = {"xla_backend_optimization_level": 0, "xla_cpu_use_fusion_emitters": False}
# XLA's classic emitters with LLVM's optimisation passes kept: compiles about 40% faster than
# the defaults and runs about as fast (the fits of fits.laplace, measured there)
LIGHT_CPU = {"xla_cpu_use_fusion_emitters": False}


def small_options() -> dict | None:
    """The compiler options of a small program on the default backend: ``SMALL_CPU`` on CPU,
    None (XLA's defaults) elsewhere."""
    return dict(SMALL_CPU) if jax.default_backend() == "cpu" else None


def light_options() -> dict | None:
    """``LIGHT_CPU`` on CPU, None (XLA's defaults) elsewhere."""
    return dict(LIGHT_CPU) if jax.default_backend() == "cpu" else None
