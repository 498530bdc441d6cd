"""In-context linear regression (SPEC section 6, vkla.icl): the training path through vkla's
LION against plain float64 PyTorch, the closed-form single-layer loss, and the --quick run."""
import json

import pytest

torch = pytest.importorskip("torch", reason="torch is missing (Debian: python3-torch)")

from vkla import icl  # noqa: E402


def test_noise_specs():
    assert icl.Noise("U(0,2)").mean_var() == pytest.approx(4 / 3)
    assert icl.Noise("{1,3}").mean_var() == pytest.approx(5)
    assert icl.Noise("{1, 3, 5}").sigma_max == 5
    with pytest.raises(ValueError):
        icl.Noise("N(0,1)")


def test_data_and_tokens():
    gen = torch.Generator().manual_seed(0)
    x, y, s = icl.sample(64, icl.Noise("U(0,0)"), gen, d=4, n=6)
    assert x.shape == (64, 7, 4) and y.shape == (64, 7) and (s == 0).all()
    w = torch.linalg.lstsq(x[:, :-1], y[:, :-1, None]).solution[..., 0]
    assert torch.allclose(torch.einsum("btd,bd->bt", x, w), y, atol=1e-10)   # noiseless: exact
    e = icl.tokens(x, y)
    assert e.shape == (64, 7, 5) and (e[:, -1, -1] == 0).all()
    assert (e[:, :-1, -1] == y[:, :-1]).all()


def test_training_path_matches_float64_pytorch():
    """100 Adam steps, same seed and data: L = 2 models of each parametrisation with their
    attention on vkla (float32, forward and backward on the device) and in float64 PyTorch."""
    noise, hist = icl.Noise.uniform(1), {}
    for backend in ("vkla", "torch"):
        models = [icl.LSA(m, 2, backend=backend, seed=5) for m in icl.MODELS]
        hist[backend] = torch.tensor(icl.train(models, [noise] * 3, 100, batch=32, lr=1e-2,
                                               seed=0))
    ref = hist["torch"]
    rel = ((hist["vkla"] - ref).abs() / ref.abs()).max()
    assert float(rel) < 1e-4, rel
    assert (ref[-10:].mean(0) < ref[:10].mean(0)).all()


def test_single_layer_theory():
    """SPEC 6's closed form for one step of GD with the best step size, on 100,000 evaluation
    sequences (the GD-1 baseline), and a 1-layer DIAG model set to that step through vkla gives
    the same predictions."""
    for smax in (0, 2, 4):
        noise = icl.Noise.uniform(smax)
        preds, info = icl.baseline_predictors(noise, None, 10, 20)
        losses, _ = icl.evaluate({"GD-1": preds["GD-1"]}, noise, 100_000, 8192, 10, 20)
        assert losses["GD-1"] == pytest.approx(icl.theory_loss(noise), rel=0.015)
    model = icl.LSA("DIAG", 1, backend="vkla")
    with torch.no_grad():
        model.p.copy_(torch.tensor([[0.0, -info["GD-1"]["eta"]]]))
        model.q.copy_(torch.tensor([[1.0, 0.0]]))
    x, y, sigma = next(icl.batches(512, 512, noise, 7, 10, 20))
    got = model(icl.tokens(x, y)).detach()
    want = preds["GD-1"](x, y, sigma, icl.ridge_parts(x, y))
    assert torch.allclose(got, want, rtol=1e-4, atol=1e-4)


def test_quick_run_and_resume(tmp_path, capsys):
    out = tmp_path / "icl.jsonl"
    assert icl.main(["--quick", "--no-progress", "--out", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    names = {r["model"] for r in rows}
    assert names == set(icl.MODELS) | set(icl.BASELINES)
    for r in rows:
        for field in ("model", "layers", "noise", "sigma_max", "loss", "adjusted_loss",
                      "eval_sequences", "steps", "seed"):
            assert field in r
        assert r["noise"] == "U(0,1)" and r["adjusted_loss"] >= -1e-9
    zero_loss = 0.5 * 10      # the zero predictor: 0.5 E[<w, x_t>^2] = d / 2
    for r in rows:
        assert r["loss"] < 0.5 * zero_loss, r
    # a second run finds everything done and adds nothing
    assert icl.main(["--quick", "--no-progress", "--out", str(out)]) == 0
    assert len(out.read_text().splitlines()) == len(rows)
    assert "| GD++ L=1 |" in icl.report(str(out))


def test_parallel_jobs_match_serial_and_resume(tmp_path):
    """--jobs 2 runs the table's tasks in worker processes: the same records as one process
    (same seeds, same data, bit for bit), and a partial file is completed, not redone."""
    small = ["--no-progress", "--layers", "1,2", "--sigma-max", "0,1", "--steps", "6",
             "--batch", "64", "--eval-sequences", "1024", "--tune-sequences", "1024",
             "--eval-batch", "512", "--baselines", "GD-1,AdaRR", "--lr", "1e-2"]
    serial, parallel = tmp_path / "serial.jsonl", tmp_path / "parallel.jsonl"
    assert icl.main(small + ["--out", str(serial)]) == 0
    rows = [json.loads(line) for line in serial.read_text().splitlines()]
    assert len(rows) == 2 * (2 + 2 * 3)
    # the parallel run starts from a file that already holds one group's records
    keep = [r for r in rows if r["layers"] == 1 and r["noise"] == "U(0,0)"]
    parallel.write_text("".join(json.dumps(r) + "\n" for r in keep))
    assert icl.main(small + ["--out", str(parallel), "--jobs", "2"]) == 0
    got = [json.loads(line) for line in parallel.read_text().splitlines()]
    assert len(got) == len(rows)
    by_key = {icl._key(r): r for r in got}
    assert len(by_key) == len(rows)
    for r in rows:
        assert by_key[icl._key(r)]["loss"] == r["loss"], r
