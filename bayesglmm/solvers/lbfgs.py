"""optax's L-BFGS (zoom line search) run to a gradient tolerance inside ``lax.while_loop``."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax import lax

from .solution import Solution

__all__ = ["lbfgs"]


def lbfgs(f: Callable, a0, v0, args=(), *, maxiter: int = 1000, gtol: float = 1e-6,
          memory_size: int = 20) -> Solution:
    """Minimise ``f(a, v, *args)`` with ``optax.lbfgs``; stops when ‖∇f‖₂ ≤ gtol."""
    import optax  # here, not at import: most fits never use it (0.1-0.2 s of start-up)

    x0 = (a0, v0)

    def fun(x):
        return f(x[0], x[1], *args)

    opt = optax.lbfgs(memory_size=memory_size)
    value_and_grad = optax.value_and_grad_from_state(fun)

    def body(carry):
        x, state, it = carry
        val, g = value_and_grad(x, state=state)
        updates, state = opt.update(g, state, x, value=val, grad=g, value_fn=fun)
        return optax.apply_updates(x, updates), state, it + 1

    def cond(carry):
        _, state, it = carry
        g = optax.tree.get(state, "grad")
        err = optax.tree.norm(g)
        return (it == 0) | ((it < maxiter) & (err >= gtol) & jnp.isfinite(err))

    state = opt.init(x0)
    x, state, it = lax.while_loop(cond, body, (x0, state, 0))
    val, g = jax.value_and_grad(fun)(x)
    gnorm = optax.tree.norm(g)
    status = jnp.where(~jnp.isfinite(gnorm), 3, jnp.where(gnorm <= gtol, 0, 1))
    return Solution(x[0], x[1], val, gnorm, it, status)
