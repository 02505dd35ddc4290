"""The compiler options of bayesglmm's programs (bayesglmm._xla): each backend's own, and only
options its compiler knows."""

import jax
import pytest

from bayesglmm import _xla


@pytest.fixture
def fresh(monkeypatch):
    _xla._known.cache_clear()
    yield monkeypatch
    monkeypatch.undo()
    _xla._known.cache_clear()


def test_options_compile(fresh):
    backend = jax.default_backend()
    small, light, large = _xla.small_options(), _xla.light_options(), _xla.large_options()
    if backend == "cpu":
        assert small and set(small) <= set(_xla.SMALL_CPU)
        assert light is None or set(light) <= set(_xla.LIGHT_CPU)
        assert large is None  # XLA's defaults
    else:
        assert small == light == large and (large is None or set(large) <= set(_xla.GPU))
    jax.jit(lambda x: x * 2, compiler_options=small)(1.0)
    jax.jit(lambda x: x * 2, compiler_options=large)(1.0)


def test_an_option_the_compiler_lacks_is_left_out(fresh):
    """As jax 0.11 dropped xla_cpu_use_fusion_emitters: a program naming it would not compile."""
    if jax.default_backend() != "cpu":
        pytest.skip("the options tested are the CPU compiler's")
    fresh.setattr(_xla, "VERIFIED", set())  # probe, whatever the release
    fresh.setitem(_xla.SMALL_CPU, "xla_cpu_no_such_option", True)
    assert not _xla._compiles({"xla_cpu_no_such_option": True})
    small = _xla.small_options()
    assert "xla_cpu_no_such_option" not in small
    # the others are kept where this compiler takes them (jax 0.11's lacks one of ours)
    assert set(small) == {k for k, v in _xla.SMALL_CPU.items() if _xla._compiles({k: v})}


def test_each_backend_its_own(fresh):
    """A GPU gets GPU's options only (a CPU name would be refused there), other backends
    XLA's defaults; the probe is not run for a backend without options."""
    fresh.setattr(_xla, "_known", lambda backend: frozenset(_xla.GPU))
    fresh.setattr(jax, "default_backend", lambda: "gpu")
    assert _xla.small_options() == _xla.light_options() == _xla.large_options() == _xla.GPU
    fresh.setattr(jax, "default_backend", lambda: "tpu")
    assert _xla.small_options() is None and _xla.large_options() is None


def test_a_verified_release_is_not_probed(fresh):
    """On a VERIFIED (backend, jaxlib) pair every option is taken without compiling (a
    process whose programs all come from the persistent cache compiles nothing)."""
    backend = jax.default_backend()
    fresh.setattr(_xla, "VERIFIED", {(backend, _xla._jaxlib_minor())})

    def no_compile(options):
        raise AssertionError("probed")

    fresh.setattr(_xla, "_compiles", no_compile)
    every = _xla.SMALL_CPU | _xla.LIGHT_CPU if backend == "cpu" else _xla.GPU
    assert _xla._known(backend) == frozenset(every)

