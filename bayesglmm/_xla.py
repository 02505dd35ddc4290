"""XLA compiler options for small problems, for the backend that runs them.

On CPU, small problems compile several times faster with XLA's classic elemental emitters
rather than its MLIR fusion emitters and without LLVM's optimisation passes (measured in
solvers/newton.py and kernels/lmm.py, where they are used), and run about as fast.  The
option names are the CPU backend's: other backends (GPU, TPU) reject them, so there the
programs compile with XLA's defaults.
"""

from __future__ import annotations

import jax

__all__ = ["SMALL_CPU", "small_options"]

SMALL_CPU = {"xla_backend_optimization_level": 0, "xla_cpu_use_fusion_emitters": False}


def small_options() -> dict | None:
    """The compiler options of a small program on the default backend: ``SMALL_CPU`` on CPU,
    None (XLA's defaults) elsewhere."""
    return dict(SMALL_CPU) if jax.default_backend() == "cpu" else None
