"""``devices=``: fits with the rows sharded over devices (bayesglmm.sharding).

Several CPU devices need ``XLA_FLAGS=--xla_force_host_platform_device_count=4`` before JAX
is imported, so the comparisons run in a subprocess (tests/sharding_check.py), once per mode
(a module-scoped fixture), and each test asserts on one item of its JSON.  Two processes under
``jax.distributed`` (tests/sharding_worker.py) check the multi-host path.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from bayesglmm import BinomialBayesMixedGLM, datasets, mixedlm
from bayesglmm.sharding import (make_mesh, n_shards, padded_rows, put_rows, replicate,
                                row_bytes)

HERE = Path(__file__).parent
ROOT = HERE.parent
OBJ_TOL = 1e-12  # objectives and gradients: 4 devices against 1, relative
FIT_TOL = 1e-6  # estimates of the fits


def _run(script: str, *args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu")
    env.pop("XLA_FLAGS", None)
    return subprocess.run([sys.executable, str(HERE / script), *args], capture_output=True,
                          text=True, timeout=timeout, env=env, cwd=ROOT)


def _check(mode: str) -> dict:
    proc = _run("sharding_check.py", mode)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


@pytest.fixture(scope="module")
def quick():
    return _check("quick")


@pytest.fixture(scope="module")
def slow():
    return _check("slow")


# ---------------------------------------------------------------- (a) objectives, gradients
def test_map_vb_objectives_equal(quick):
    """cbpp: −log p (non-centred, fit_map's) and −ELBO (fit_vb's) with their gradients."""
    assert max(quick["glmm.cbpp"].values()) <= OBJ_TOL, quick["glmm.cbpp"]


def test_lmm_deviance_equal(quick):
    """sleepstudy (random slope): REML and ML deviance and gradient from cross-products
    summed on 4 devices."""
    assert max(quick["lmm.sleepstudy"].values()) <= OBJ_TOL, quick["lmm.sleepstudy"]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["cbpp", "crossed", "poisson"])
def test_glmm_objectives_equal(slow, name):
    """fit_map, fit_vb and fit_laplace (value with its inner solve; gradient and Hessian)
    objectives, binomial one factor and crossed, Poisson two factors."""
    out = slow[f"glmm.{name}"]
    assert set(out) == {"map", "vb", "laplace_value", "laplace_grad"}
    assert max(out.values()) <= OBJ_TOL, out


@pytest.mark.slow
@pytest.mark.parametrize("name", ["sleepstudy", "crossed"])
def test_lmm_objectives_equal(slow, name):
    assert max(slow[f"lmm.{name}"].values()) <= OBJ_TOL, slow[f"lmm.{name}"]


# ---------------------------------------------------------------- (b) the fits
FITS = [f"{m}.{f}" for m in ("cbpp", "crossed", "poisson")
        for f in ("fit_map", "fit_vb", "fit_laplace")] + ["cbpp.integrate", "cbpp.scale_fe",
                                                          "negbin.fit_laplace.ml",
                                                          "negbin.fit_laplace.priors"]


@pytest.mark.slow
@pytest.mark.parametrize("key", FITS)
def test_glmm_fit_agrees(slow, key):
    out = slow[key]
    assert out["converged"], out
    assert out["params"] <= FIT_TOL and out["sd"] <= FIT_TOL, out


@pytest.mark.slow
@pytest.mark.parametrize("key", [f"lmm.{m}.{c}" for m in ("sleepstudy", "crossed")
                                 for c in ("reml", "ml")])
def test_lmm_fit_agrees(slow, key):
    out = slow[key]
    assert max(out.values()) <= FIT_TOL, out


# ---------------------------------------------------------------- (c) really sharded
def test_rows_sharded(quick):
    """403 rows padded to 404, 101 on each device; level-wise arrays on every device whole;
    the padding inert (objective unchanged)."""
    p = quick["placement"]
    assert p["n"] == 403 and p["n_rows"] == 404
    assert p["shard_rows"] == [101] * 4
    assert p["shard_shape"] == [101, 2] and p["cols_shards"] == [[101, 2]] * 4
    assert p["level_replicated"] and p["pad_inert"]
    assert p["pad_rel"] <= OBJ_TOL and p["shard_rows_rel"] <= OBJ_TOL


def test_lmm_rows_sharded(quick):
    """dyestuff: 30 rows padded to 32 for the pass; cross-products equal the host's."""
    p = quick["placement"]
    assert p["lmm_shard_rows"] == [8] * 4
    assert p["lmm_pad_rel"] <= OBJ_TOL


def test_programs_partitioned(quick):
    """jit partitions the programs: the row sums end in all-reduces and no row array is
    gathered onto one device."""
    for name, ops in quick["collectives"].items():
        assert ops["all-reduce"] >= 1 and ops["all-gather"] == 0, (name, ops)


# ---------------------------------------------------------------- (d) devices=None
def test_default_unchanged(quick):
    d = quick["defaults"]
    assert d["glmm_identical"] and d["lmm_identical"] and d["single_device"]
    assert d["cache_keys"] == [3] and d["lmm_cache_keys"] == [2]  # the keys as before


# ---------------------------------------------------------------- in this process
def test_make_mesh_arguments():
    dev = jax.devices()
    assert make_mesh(None) is None
    for arg in ("all", 1, [dev[0]], jax.sharding.Mesh(np.array(dev[:1]), ("x",))):
        mesh = make_mesh(arg)
        assert len(mesh.axis_names) == 1 and n_shards(mesh) == 1
    assert make_mesh(jax.sharding.Mesh(np.array(dev[:1]), ("x",))).axis_names == ("x",)
    assert padded_rows(403, None) == 403


@pytest.mark.parametrize("arg, err, match", [
    ("gpu", ValueError, "'all'"),
    (0, ValueError, "between 1 and"),
    (10**6, ValueError, "between 1 and"),
    ([], ValueError, "empty"),
    ([0], TypeError, "jax.Device"),
    (2.5, TypeError, "float"),
    (True, TypeError, "bool"),
])
def test_make_mesh_rejects(arg, err, match):
    with pytest.raises(err, match=match):
        make_mesh(arg)


def test_make_mesh_rejects_two_axes():
    mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]).reshape(1, 1), ("a", "b"))
    with pytest.raises(ValueError, match="one axis"):
        make_mesh(mesh)
    with pytest.raises(ValueError, match="one axis"):
        mixedlm("Yield ~ 1 + (1 | Batch)", datasets.load("dyestuff")).fit(devices=mesh)


def test_put_rows_and_bytes():
    mesh = make_mesh(1)
    x = np.arange(10.0).reshape(5, 2)
    a = put_rows(x, mesh)
    assert a.sharding.spec == jax.sharding.PartitionSpec("rows")
    assert replicate(x, mesh).sharding.is_fully_replicated
    assert a.nbytes > 0 and row_bytes({"a": a, "b": replicate(x, mesh)}) == (a.nbytes,) * 2


def test_one_device_mesh_fit():
    """devices=1 (a mesh of one device) runs the sharded path and agrees with None."""
    m = BinomialBayesMixedGLM.from_formula(
        "incidence ~ C(period)", {"herd": "0 + C(herd)"}, datasets.load("cbpp"),
        n_trials="size")
    r0, r1 = m.fit_map(rng=0), m.fit_map(rng=0, devices=1)
    np.testing.assert_allclose(r1.params, r0.params, atol=FIT_TOL)


# ---------------------------------------------------------------- two processes
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes():
    """Two processes under jax.distributed (localhost, gloo CPU collectives), 2 CPU devices
    each: each holds half the rows; every fit agrees with this process's single-device one."""
    port = str(_free_port())
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("XLA_FLAGS", None)
    procs = [subprocess.Popen([sys.executable, str(HERE / "sharding_worker.py"), str(i), "2",
                               port, "2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=env, cwd=ROOT) for i in range(2)]
    outs = []
    try:
        for p in procs:
            out, err = p.communicate(timeout=600)
            assert p.returncode == 0, err[-3000:]
            line = [ln for ln in out.splitlines() if ln.startswith("RESULT ")][-1]
            outs.append(json.loads(line[len("RESULT "):]))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    model = BinomialBayesMixedGLM.from_formula(
        "incidence ~ C(period)", {"herd": "0 + C(herd)"}, datasets.load("cbpp"),
        n_trials="size")
    ref = {}
    for fit, kw in (("fit_map", {"rng": 0}), ("fit_vb", {"rng": 0}), ("fit_laplace", {})):
        r = getattr(model, fit)(**kw)
        ref[fit] = np.concatenate([r.params, r.fe_sd, r.vcp_sd])
    r = mixedlm("Reaction ~ Days + (Days | Subject)", datasets.load("sleepstudy")).fit()
    ref["lmm"] = np.concatenate([r.params, r.bse])
    assert sorted(o["process"] for o in outs) == [0, 1]
    for o in outs:
        assert o["n_devices"] == 4 and o["n_local"] == 2
        assert o["local_rows"] * 2 == o["rows"]  # half the rows on each process
        for key, val in ref.items():
            np.testing.assert_allclose(o[key], val, atol=FIT_TOL, rtol=0, err_msg=key)
