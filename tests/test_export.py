"""Traced programs kept on disk (``bayesglmm._export``): keyed by value, loaded without tracing."""

import functools
import logging
import pickle

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bayesglmm import _cache, _export
from bayesglmm._export import Opaque, fingerprint, persistent_jit
from bayesglmm._precision import precision


@pytest.fixture(autouse=True)
def _trust_this_module(monkeypatch):
    """Functions of this test module may be fingerprinted (normally only bayesglmm's)."""
    monkeypatch.setattr(_export, "TRUSTED", _export.TRUSTED + (__name__,))


def _scaled(c):
    def f(x):
        return jnp.sin(x) * c
    return f


def test_fingerprint_follows_closed_over_values():
    assert fingerprint(_scaled(2.0)) == fingerprint(_scaled(2.0))
    assert fingerprint(_scaled(2.0)) != fingerprint(_scaled(3.0))
    assert fingerprint(_scaled(np.arange(3.0))) != fingerprint(_scaled(np.arange(4.0)))
    assert fingerprint(_scaled(np.arange(3.0))) != fingerprint(_scaled(np.arange(3)))
    assert fingerprint(functools.partial(jnp.add, 1)) != fingerprint(functools.partial(jnp.add, 2))
    # the code itself counts: two lambdas with the same closure but different bodies
    a, b = (lambda x: x + 1), (lambda x: x - 1)
    assert fingerprint(a) != fingerprint(b)


def test_fingerprint_refuses_what_it_cannot_describe():
    class Thing:
        pass

    with pytest.raises(Opaque):
        fingerprint(_scaled(Thing()))
    with pytest.raises(Opaque):
        fingerprint(np.array([object()]))
    with pytest.raises(Opaque):  # a function from elsewhere: the globals it reads are unknown
        fingerprint(pytest.approx)


def _enable(monkeypatch, path):
    """bayesglmm's cache on, in ``path`` (as a fit's ``precision`` context would)."""
    monkeypatch.setattr(_cache, "traced_dir", lambda: path)


TRACES = []  # a global, not a closure cell: not part of the fingerprint


def _counting():
    def f(x, y):
        TRACES.append(1)  # runs once per trace
        return {"s": jnp.sum(jnp.exp(x) * y), "v": x @ x.T}
    return f


def test_a_second_instance_loads_instead_of_tracing(tmp_path, monkeypatch):
    _enable(monkeypatch, tmp_path)
    x, y = np.random.default_rng(0).normal(size=(2, 4, 4))
    traces = TRACES
    with precision(np.float64):
        want = jax.jit(_counting())(x, y)
        traces.clear()
        first = persistent_jit(_counting())
        got = first(x, y)
        n = len(traces)
        assert n >= 1 and len(list(tmp_path.glob("*-traced"))) == 1
        again = persistent_jit(_counting())(x, y)  # as a new process would: from disk
        assert len(traces) == n
        for out in (got, again):
            np.testing.assert_array_equal(out["s"], want["s"])
            np.testing.assert_array_equal(out["v"], want["v"])
        # the outputs (committed to their device) fed back, and host arrays again: nothing
        # is traced or compiled again
        compiled = []
        yj, vh = jnp.asarray(y), np.asarray(got["v"])

        def listen(event, secs, **kw):
            if event.startswith("/jax/core/compile"):
                compiled.append(event)

        jax.monitoring.register_event_duration_secs_listener(listen)
        try:
            first(got["v"], yj)
            first(vh, y)
            first(got["v"], y)
        finally:
            jax.monitoring.unregister_event_duration_listener(listen)
        assert compiled == [] and len(list(tmp_path.glob("*-traced"))) == 1
        # another shape is another program; another closure value another key
        persistent_jit(_counting())(x[:3], y[:3])
        assert len(list(tmp_path.glob("*-traced"))) == 2


def test_off_unexportable_or_opaque_means_a_plain_jit(tmp_path, monkeypatch, caplog):
    x = np.ones(3)

    def with_callback(v):
        jax.debug.callback(lambda t: None, v)
        return v * 2

    class Thing:
        pass

    thing = Thing()

    def opaque(v):
        return v * (thing is not None)

    with precision(np.float64):
        monkeypatch.setattr(_cache, "traced_dir", lambda: None)  # the cache is off
        np.testing.assert_array_equal(persistent_jit(lambda v: v + 1)(x), x + 1)
        _enable(monkeypatch, tmp_path)
        with caplog.at_level(logging.DEBUG, logger="bayesglmm"):
            np.testing.assert_array_equal(persistent_jit(with_callback)(x), 2 * x)
            np.testing.assert_array_equal(persistent_jit(opaque)(x), x)
    # the refusal is remembered (one small entry), so a later process does not try again
    (entry,) = tmp_path.glob("*-traced")
    assert pickle.loads(entry.read_bytes()) == _export.UNEXPORTABLE
    assert "not exportable" in caplog.text and "plain jit" in caplog.text
    with precision(np.float64):
        caplog.clear()
        with caplog.at_level(logging.DEBUG, logger="bayesglmm"):
            np.testing.assert_array_equal(persistent_jit(with_callback)(x), 2 * x)
        assert "not exportable" not in caplog.text


@pytest.mark.parametrize("cache_on", [False, True])
def test_under_another_trace_the_options_are_left_to_the_enclosing_program(
        tmp_path, monkeypatch, cache_on):
    """Called with tracers (vmap, eval_shape, inside a jit) a persistent_jit with compiler
    options is the plain jit without them: jax 0.11 refuses options on a nested jit (a
    ValueError seen on a GPU in fit_many's vmapped Laplace fits), simulated here by a jit
    that refuses tracers; top-level calls keep the options."""
    if cache_on:
        _enable(monkeypatch, tmp_path)
    else:
        monkeypatch.setattr(_cache, "traced_dir", lambda: None)
    pj = persistent_jit(lambda v, w: v * w + 1,
                        compiler_options={"xla_backend_optimization_level": 1})
    top = pj._jit

    def refuse_tracers(*args, **kwargs):
        if any(isinstance(a, jax.core.Tracer) for a in jax.tree_util.tree_leaves(args)):
            raise ValueError("`compiler_options` can only be passed to top-level `jax.jit`")
        return top(*args, **kwargs)

    pj._jit = refuse_tracers
    x, y = np.arange(6.0).reshape(2, 3), np.ones(3)
    with precision(np.float64):
        np.testing.assert_array_equal(jax.vmap(pj, in_axes=(0, None))(x, y), x + 1)
        assert jax.eval_shape(pj, x, y).shape == (2, 3)
        np.testing.assert_array_equal(jax.jit(lambda a: pj(a, y) * 2)(x), 2 * (x + 1))
        np.testing.assert_array_equal(pj(x, y), x + 1)  # top level: the optioned program
    plain = persistent_jit(lambda v: v + 1)
    assert plain._nested is plain._jit  # no options: one jit


def test_a_damaged_entry_is_rewritten(tmp_path, monkeypatch):
    _enable(monkeypatch, tmp_path)
    x = np.arange(3.0)
    with precision(np.float64):
        persistent_jit(_scaled(2.0))(x)
        (entry,) = tmp_path.glob("*-traced")
        entry.write_bytes(b"not a pickle")
        np.testing.assert_allclose(persistent_jit(_scaled(2.0))(x), np.sin(x) * 2.0)
    assert entry.read_bytes() != b"not a pickle"


def test_source_hash_covers_the_package():
    h = _export.source_hash()
    assert len(h) == 64 and h == _export.source_hash()


@pytest.mark.parametrize("x64", [False, True])
def test_leaf_spec_fast_paths_agree_with_jax_typeof(x64):
    """The signature of an argument (numpy and JAX arrays without jax.typeof) is what
    jax.typeof gives, 64-bit types narrowed as JAX narrows them without x64."""
    def reference(x):
        aval = jax.typeof(x)
        return (aval.shape, np.dtype(aval.dtype).str, bool(aval.weak_type))

    with precision(np.float64 if x64 else np.float32):
        leaves = [np.ones(3), np.ones(3, np.int64), np.ones(2, np.float32),
                  np.ones((2, 2), bool), np.ones(2, np.uint8), jnp.ones(3), jnp.asarray(1.0),
                  jnp.ones(3, jnp.int32), jnp.asarray(np.arange(4)), 1.0, 2, True,
                  np.float64(1.0)]
        for x in leaves * 2:  # twice: after the first JAX array, its class's fast path
            assert _export._leaf_spec(x) == reference(x), x
