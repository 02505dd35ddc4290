"""One process of the multi-host test (tests/test_sharding.py::test_two_processes).

    python tests/sharding_worker.py PROCESS_ID N_PROCESSES PORT N_LOCAL_DEVICES

Each process joins ``jax.distributed`` on localhost (CPU collectives: gloo), with
``N_LOCAL_DEVICES`` CPU devices of its own, fits cbpp (fit_map, fit_vb, fit_laplace) and
sleepstudy (MixedLM.fit) with ``devices="all"``, and prints its results as JSON on stdout:
the estimates, and how many rows of the sharded data its own devices hold.
"""

from __future__ import annotations

import json
import os
import sys

pid, nproc, port, n_local = (int(a) for a in sys.argv[1:5])
os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={n_local}"
os.environ["JAX_PLATFORMS"] = "cpu"
os.environ["BAYESGLMM_CACHE_DIR"] = "0"  # no two processes writing one cache

import jax  # noqa: E402

jax.config.update("jax_cpu_collectives_implementation", "gloo")
jax.distributed.initialize(coordinator_address=f"localhost:{port}", num_processes=nproc,
                           process_id=pid, initialization_timeout=120)

import numpy as np  # noqa: E402

from bayesglmm import BinomialBayesMixedGLM, datasets, mixedlm  # noqa: E402
from bayesglmm.sharding import make_mesh  # noqa: E402


def main() -> dict:
    model = BinomialBayesMixedGLM.from_formula(
        "incidence ~ C(period)", {"herd": "0 + C(herd)"}, datasets.load("cbpp"),
        n_trials="size")
    out = {"process": jax.process_index(), "n_devices": len(jax.devices()),
           "n_local": len(jax.local_devices())}
    for fit, kw in (("fit_map", {"rng": 0}), ("fit_vb", {"rng": 0}), ("fit_laplace", {})):
        r = getattr(model, fit)(devices="all", **kw)
        out[fit] = [float(v) for v in np.concatenate([r.params, r.fe_sd, r.vcp_sd])]
    data = model._data(True, model._fine(model.k_fep + model.k_vcp + model.k_vc),
                       make_mesh("all"))
    out["rows"] = int(data.y.shape[0])
    out["local_rows"] = int(sum(s.data.shape[0] for s in data.y.addressable_shards))
    r = mixedlm("Reaction ~ Days + (Days | Subject)", datasets.load("sleepstudy")).fit(
        devices="all")
    out["lmm"] = [float(v) for v in np.concatenate([r.params, r.bse])]
    return out


if __name__ == "__main__":
    result = main()
    jax.distributed.shutdown()
    print("RESULT " + json.dumps(result), flush=True)
