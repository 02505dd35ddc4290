"""The command line, by subprocess (``python -m bayesglmm``) and in-process (``cli.main``)."""

import json
import subprocess
import sys
import warnings

import numpy as np
import pandas as pd
import pytest

from bayesglmm import BinomialBayesMixedGLM, bench, cli, datasets, mixedlm, tables


def _run(*args, timeout=240):
    return subprocess.run([sys.executable, "-m", "bayesglmm", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    datasets.load("cbpp").to_csv(d / "cbpp.csv", index=False)
    return d


def test_fit_csv_binomial_writes_json(files):
    out = files / "est.json"
    p = _run("fit", files / "cbpp.csv", "incidence ~ C(period) + (1 | herd)", "--family",
             "binomial", "--fit", "vb", "--trials", "size", "--out", out)
    assert p.returncode == 0, p.stderr
    assert "Binomial Mixed GLM Results" in p.stdout and "mean-field VB" in p.stdout
    doc = json.loads(out.read_text())
    assert (doc["family"], doc["fit"], doc["nobs"]) == ("binomial", "vb", 56)
    # the same fit in this process: the file holds its estimates
    df = pd.read_csv(files / "cbpp.csv")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = BinomialBayesMixedGLM.from_formula("incidence ~ C(period) + (1 | herd)", {}, df,
                                               n_trials="size").fit_vb(rng=0)
    ref = tables.estimates(r)
    got = pd.DataFrame(doc["estimates"])
    assert list(got["name"]) == list(ref["name"]) == ["Intercept", "C(period)[T.2]",
                                                      "C(period)[T.3]", "C(period)[T.4]", "herd"]
    np.testing.assert_allclose(got["estimate"], ref["estimate"], rtol=1e-6)
    np.testing.assert_allclose(got["std_err"], ref["std_err"], rtol=1e-6)
    re = pd.DataFrame(doc["random_effects"])
    assert len(re) == 15 and set(re["term"]) == {"herd"}


def test_fit_parquet_gaussian_writes_csv(files):
    pytest.importorskip("pyarrow")
    sleep = datasets.load("sleepstudy")
    sleep.to_parquet(files / "sleep.parquet")
    out = files / "est.csv"
    p = _run("fit", files / "sleep.parquet", "Reaction ~ Days + (Days | Subject)", "--family",
             "gaussian", "--fit", "ml", "--out", out)
    assert p.returncode == 0, p.stderr
    assert "Mixed Linear Model Regression Results" in p.stdout and "ML" in p.stdout
    got = pd.read_csv(out)
    r = mixedlm("Reaction ~ Days + (Days | Subject)", sleep).fit(reml=False)
    assert list(got["kind"]) == ["fixed", "fixed", "variance", "variance", "covariance", "variance"]
    np.testing.assert_allclose(got["estimate"][:2], r.fe_params, rtol=1e-6)
    np.testing.assert_allclose(got["std_err"][:2], r.bse_fe, rtol=1e-6)
    assert got["name"].iloc[-1] == "Residual"
    assert got["estimate"].iloc[-1] == pytest.approx(r.scale, rel=1e-6)


def test_bad_formula_is_one_line_exit_2(files):
    p = _run("fit", files / "cbpp.csv", "incidence ~ C(period) + (1 | herd", "--family",
             "binomial", "--trials", "size")
    assert p.returncode == 2
    assert p.stdout == ""
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bayesglmm: error: could not read random-eff")


def test_missing_file_is_one_line_exit_2(files):
    p = _run("fit", files / "nope.csv", "y ~ x + (1 | g)", "--family", "poisson")
    assert p.returncode == 2
    assert p.stderr.strip() == f"bayesglmm: error: no such data file: '{files / 'nope.csv'}'"
    with pytest.raises(FileNotFoundError):  # --debug: the exception itself, traceback and all
        cli.main(["--debug", "fit", str(files / "nope.csv"), "y ~ x", "--family", "poisson"])


def test_input_errors_in_process(files, capsys):
    cases = [
        (["fit", str(files / "cbpp.csv"), "y ~ x"], "required: --family"),
        (["fit", str(files / "cbpp.csv"), "y ~ x", "--family", "gaussian", "--fit", "vb"],
         "--fit vb does not apply to the gaussian family"),
        (["fit", str(files / "cbpp.csv"), "incidence ~ C(period)", "--family", "binomial",
          "--trials", "size"], "no random effects"),
        (["fit", str(files / "cbpp.csv"), "y ~ x", "--family", "binomial", "--out", "a.txt"],
         "use .json or .csv"),
        (["fit", str(files / "cbpp.csv"), "y ~ x", "--family", "binomial", "--vc", "herd"],
         "NAME=FORMULA"),
        (["fit", str(files / "cbpp.csv"), "incidence ~ C(period) + (1 | cow)", "--family",
          "binomial"], "not in data: 'cow'"),
        (["datasets", "cpbb"], "unknown dataset 'cpbb'"),
        (["nonsense"], "invalid choice"),
    ]
    for argv, message in cases:
        assert cli.main(argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], (argv, err)


def test_datasets_list_and_export(tmp_path, capsys):
    assert cli.main(["datasets"]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in listed] == datasets.names()
    assert cli.main(["datasets", "dyestuff"]) == 0
    csv = capsys.readouterr().out
    assert csv.splitlines()[0] == "Batch,Yield" and len(csv.splitlines()) == 31
    pytest.importorskip("pyarrow")
    assert cli.main(["datasets", "cbpp", "--out", str(tmp_path / "c.parquet")]) == 0
    back = tables.read_table(tmp_path / "c.parquet")
    pd.testing.assert_frame_equal(back, datasets.load("cbpp"))


def test_bench_prints_its_table(monkeypatch, capsys):
    calls = []
    monkeypatch.setattr(bench, "cases", lambda: [("toy", "f", 3, lambda: calls.append(1))])
    assert cli.main(["bench"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["data", "fit", "rows", "first", "(s)", "again", "(s)"]
    assert out[1].split()[:3] == ["toy", "f", "3"] and len(calls) == 2


def test_cache_and_warmup_are_subcommands(monkeypatch, capsys):
    assert cli.main(["cache", "info"]) == 0
    assert "entries:" in capsys.readouterr().out
    monkeypatch.setattr(cli, "_warmup", lambda: 7)
    assert cli.main(["warmup"]) == 7


@pytest.mark.slow
def test_bench_runs_packaged_cases():
    p = _run("bench", timeout=300)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.strip().splitlines()
    assert len(lines) == 1 + len(bench.cases())
    assert all(float(line.split()[-1]) < 30 for line in lines[1:])
