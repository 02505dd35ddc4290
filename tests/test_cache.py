"""The persistent compilation cache (``bayesglmm._cache``).

Each scenario runs in a fresh process (JAX opens its on-disk cache once per process), with
``BAYESGLMM_CACHE_DIR`` pointing into ``tmp_path``.  The child counts JAX's monitoring events:
``/jax/compilation_cache/cache_hits`` (an executable loaded from disk) and
``/jax/compilation_cache/cache_misses`` (an executable written to disk).
"""

import json
import os
import subprocess
import sys
import time

import pytest

from bayesglmm import _cache

CHILD = r'''
import json, sys, warnings
import jax
events = {"hits": 0, "writes": 0, "traces": 0}
def _listen(name, **kw):
    if name == "/jax/compilation_cache/cache_hits":
        events["hits"] += 1
    elif name == "/jax/compilation_cache/cache_misses":
        events["writes"] += 1
def _duration(name, secs, **kw):
    if name == "/jax/core/compile/jaxpr_trace_duration":
        events["traces"] += 1
jax.monitoring.register_event_listener(_listen)
jax.monitoring.register_event_duration_secs_listener(_duration)
if len(sys.argv) > 2:  # the user configures JAX's cache in-process
    jax.config.update("jax_compilation_cache_dir", sys.argv[2])
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    if sys.argv[1] == "fit":  # a tiny real fit through the public API
        import bayesglmm
        df = bayesglmm.datasets.load("cbpp")
        bayesglmm.BinomialBayesMixedGLM.from_formula(
            "incidence ~ 1", {"herd": "0 + C(herd)"}, df, n_trials="size").fit_map()
    elif sys.argv[1] == "crossed":  # a linear mixed model with a dense block (two factors)
        import numpy as np, pandas as pd
        import bayesglmm
        rng = np.random.default_rng(0)
        a, b = rng.integers(0, 30, 300), rng.integers(0, 12, 300)
        y = rng.normal(0, 1, 30)[a] + rng.normal(0, 0.5, 12)[b] + rng.normal(0, 1, 300)
        df = pd.DataFrame({"y": y, "a": a.astype(str), "b": b.astype(str)})
        for method in ("newton", "lbfgs-only"):  # the Hessian program, then the value program
            bayesglmm.mixedlm("y ~ 1 + (1|a) + (1|b)", df).fit(method=method).summary()
    else:  # one small program inside bayesglmm's context
        import numpy as np
        from bayesglmm._precision import precision
        with precision(np.float64):
            jax.jit(lambda x: jax.numpy.sin(x) @ x)(np.ones((3, 3))).block_until_ready()
events["warnings"] = [f"{w.category.__name__}: {w.message}" for w in caught
                      if not issubclass(w.category, DeprecationWarning)]
events["jax_dir"] = jax.config.jax_compilation_cache_dir
events["jax_min_time"] = jax.config.jax_persistent_cache_min_compile_time_secs
print(json.dumps(events))
'''


def _child(tmp_path, kind="jit", env=None, jax_dir=None) -> dict:
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    full = {k: v for k, v in os.environ.items()
            if not k.startswith(("BAYESGLMM_CACHE", "JAX_COMPILATION_CACHE"))}
    full["XDG_CACHE_HOME"] = str(tmp_path / "xdg")
    full.update(env or {})
    argv = [sys.executable, str(script), kind] + ([str(jax_dir)] if jax_dir else [])
    out = subprocess.run(argv, env=full, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def _entries(path) -> int:
    return len(list(path.glob("*-cache"))) if path.is_dir() else 0


def test_second_process_loads_what_the_first_compiled(tmp_path):
    cache = tmp_path / "cache"
    env = {"BAYESGLMM_CACHE_DIR": str(cache)}
    first = _child(tmp_path, "fit", env)
    n = _entries(cache)
    assert first["writes"] == n > 0 and first["hits"] == 0
    traced = sorted(cache.glob("*-traced"))  # the Newton program, traced (bayesglmm._export)
    assert len(traced) == 1
    second = _child(tmp_path, "fit", env)
    assert second["hits"] == n and second["writes"] == 0
    assert _entries(cache) == n and sorted(cache.glob("*-traced")) == traced
    # the second process loads the traced Newton program instead of tracing it again
    assert second["traces"] < first["traces"]
    for run in (first, second):
        assert run["warnings"] == []
        # JAX's global settings are untouched: the cache options were set thread-locally
        assert run["jax_dir"] is None and run["jax_min_time"] == 1.0


def test_crossed_lmm_programs_are_cached_and_stored(tmp_path):
    """A crossed LMM's programs (their dense block's S⁻¹ included: triangular solves in XLA, no
    host callback) are written to the cache and stored traced; a second process compiles and
    traces none of them."""
    cache = tmp_path / "cache"
    env = {"BAYESGLMM_CACHE_DIR": str(cache)}
    first = _child(tmp_path, "crossed", env)
    n = _entries(cache)
    assert first["writes"] == n > 0 and first["hits"] == 0
    assert len(list(cache.glob("*-traced"))) >= 2  # the Hessian program and the value program
    second = _child(tmp_path, "crossed", env)
    assert second["writes"] == 0 and second["hits"] == n
    assert second["traces"] < first["traces"]


def test_default_directory_is_under_xdg_cache_home(tmp_path):
    run = _child(tmp_path)
    assert run["writes"] > 0
    assert _entries(tmp_path / "xdg" / "bayesglmm") == run["writes"]


def test_size_cap_is_enforced_when_the_cache_opens(tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    stale = _fake_entry(cache, "stale", 10_000, age_s=3600)
    run = _child(tmp_path, env={"BAYESGLMM_CACHE_DIR": str(cache),
                                "BAYESGLMM_CACHE_MAX_BYTES": "5000"})
    assert not stale.exists()
    assert run["writes"] == _entries(cache) > 0


def test_zero_disables_the_cache(tmp_path):
    run = _child(tmp_path, env={"BAYESGLMM_CACHE_DIR": "0"})
    assert run["writes"] == run["hits"] == 0
    assert not (tmp_path / "xdg").exists()


@pytest.mark.parametrize("how", ["under_a_file", "read_only"])
def test_unwritable_directory_means_no_cache_and_no_warning(tmp_path, how):
    if how == "under_a_file":
        (tmp_path / "file").write_text("")
        cache = tmp_path / "file" / "cache"
    else:
        cache = tmp_path / "ro"
        cache.mkdir()
        cache.chmod(0o500)
        if os.access(cache, os.W_OK):  # root ignores the mode bits
            cache.chmod(0o700)
            pytest.skip("permissions are not enforced for this user")
    try:
        run = _child(tmp_path, env={"BAYESGLMM_CACHE_DIR": str(cache)})
    finally:
        if how == "read_only":
            cache.chmod(0o700)
    assert run["warnings"] == []
    assert run["writes"] == run["hits"] == 0


@pytest.mark.parametrize("how", ["environment", "jax_config"])
def test_user_configured_jax_cache_is_left_alone(tmp_path, how):
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    env = {"BAYESGLMM_CACHE_DIR": str(ours)}
    if how == "environment":
        env["JAX_COMPILATION_CACHE_DIR"] = str(theirs)
        run = _child(tmp_path, env=env)
    else:
        run = _child(tmp_path, env=env, jax_dir=theirs)
    assert run["jax_dir"] == str(theirs)
    # the user's own thresholds apply (JAX's default: only programs compiling for >= 1 s)
    assert run["jax_min_time"] == 1.0
    assert run["writes"] == 0 and not ours.exists()


def _fake_entry(path, key, size, age_s):
    f = path / f"{key}-cache"
    f.write_bytes(b"x" * size)
    t = time.time() - age_s
    os.utime(f, (t, t))
    (path / f"{key}-atime").write_bytes(b"")
    return f


def test_prune_removes_least_recently_used_entries_first(tmp_path):
    old = _fake_entry(tmp_path, "old", 100, age_s=300)
    mid = _fake_entry(tmp_path, "mid", 100, age_s=200)
    new = _fake_entry(tmp_path, "new", 100, age_s=100)
    assert _cache._prune(tmp_path, 250) == 1
    assert not old.exists() and not (tmp_path / "old-atime").exists()
    assert mid.exists() and new.exists()
    assert _cache._prune(tmp_path, -1) == 0 and mid.exists()


def test_clear_cache_removes_only_cache_files(tmp_path, monkeypatch):
    monkeypatch.setenv("BAYESGLMM_CACHE_DIR", str(tmp_path))
    _fake_entry(tmp_path, "a", 10, 0)
    _fake_entry(tmp_path, "b", 10, 0)
    (tmp_path / "c-traced").write_bytes(b"x" * 5)  # a traced program (bayesglmm._export)
    (tmp_path / "notes.txt").write_text("keep me")
    info = _cache.cache_info()
    assert info["enabled"] and info["entries"] == 3 and info["bytes"] == 25
    import bayesglmm

    assert bayesglmm.clear_cache() == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]
    assert _cache.cache_info()["entries"] == 0


def test_settings_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.delenv("BAYESGLMM_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert _cache.cache_dir() == tmp_path / "bayesglmm"
    monkeypatch.setenv("BAYESGLMM_CACHE_DIR", "0")
    assert _cache.cache_dir() is None
    assert _cache.cache_info()["enabled"] is False
    monkeypatch.setenv("BAYESGLMM_CACHE_MAX_BYTES", "1e6")
    assert _cache.max_bytes() == 1_000_000
    monkeypatch.setenv("BAYESGLMM_CACHE_MAX_BYTES", "lots")
    assert _cache.max_bytes() == _cache.DEFAULT_MAX_BYTES


def test_command_line_info_and_clear(tmp_path):
    _fake_entry(tmp_path, "a", 10, 0)
    env = {**os.environ, "BAYESGLMM_CACHE_DIR": str(tmp_path)}
    run = lambda *a: subprocess.run([sys.executable, "-m", "bayesglmm", *a], env=env,
                                    capture_output=True, text=True, timeout=60, check=True).stdout
    assert "entries: 1" in run("cache", "info")
    assert "removed 1 entries" in run("cache", "clear")
    assert not (tmp_path / "a-cache").exists()
