"""The benchmark scripts' own machinery: the idle-machine guard, the per-net stored results,
the trained family's train-and-ship round trip, the README table made from the stored
results."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import idle  # bench/idle.py (pytest's pythonpath)
import per_net  # bench/per_net.py
import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]


def _fake_machine(monkeypatch, busy: list[float], own: list[float], seconds: float,
                  load_before: float) -> None:
    busy_it, own_it, clock = iter(busy), iter(own), iter([0.0, seconds])
    monkeypatch.setattr(idle, "_busy_seconds", lambda: next(busy_it))
    monkeypatch.setattr(idle, "_own_seconds", lambda: next(own_it))
    monkeypatch.setattr(idle.time, "time", lambda: next(clock))
    monkeypatch.setattr(idle.os, "getloadavg", lambda: (load_before, 1.0, 1.0))


def test_the_guard_refuses_when_other_programs_used_the_cpu(monkeypatch):
    # 100 s: the machine was busy 290 core-seconds, the benchmark itself 200 -> others 0.9 cores
    _fake_machine(monkeypatch, busy=[1000.0, 1290.0], own=[5.0, 205.0], seconds=100.0,
                  load_before=0.3)
    with idle.LoadGuard(every_s=60) as guard:
        pass
    assert guard.others_cores == pytest.approx(0.9)
    with pytest.raises(SystemExit, match=r"other processes used 0\.90 cores on average"):
        guard.check()
    guard.check(allow_busy=True)  # overridden: the report says so
    report = guard.report(allow_busy=True)
    assert report["overridden"] and report["other_processes_cores"] == 0.9


def test_the_guard_lets_an_idle_run_through_however_busy_the_benchmark_itself(monkeypatch):
    # the benchmark kept both cores busy (load average ~2 by itself); nobody else ran
    _fake_machine(monkeypatch, busy=[1000.0, 1205.0], own=[5.0, 205.0], seconds=100.0,
                  load_before=0.2)
    with idle.LoadGuard(every_s=60) as guard:
        pass
    guard.check()
    assert guard.report()["busy"] == [] and not guard.report()["overridden"]


def test_the_guard_refuses_a_machine_busy_before_the_run(monkeypatch):
    _fake_machine(monkeypatch, busy=[0.0, 200.0], own=[0.0, 200.0], seconds=100.0,
                  load_before=1.9)
    with idle.LoadGuard(every_s=60) as guard:
        pass
    with pytest.raises(SystemExit, match=r"load average was 1\.90 before the run"):
        guard.check()


def test_per_net_results_are_reused_only_for_the_same_settings_and_weights(tmp_path, capsys):
    weights = tmp_path / "weights"
    weights.mkdir()
    for name in ("a", "b"):
        (weights / f"{name}.pt").write_bytes(name.encode())
    calls = []

    def measure(name):
        calls.append(name)
        return {"value": len(calls), "weights_sha256": per_net.weights_sha256(name, str(weights))}

    def run(settings):
        return per_net.measure_each(["a", "b"], tmp_path / "runs", settings, "cmd", str(weights),
                                    measure, lambda name, r: f"{name} measured")

    first = run({"images": 10})
    assert calls == ["a", "b"] and first["b"]["value"] == 2
    assert run({"images": 10}) == first and calls == ["a", "b"]  # stored: not measured again
    assert "a: done before" in capsys.readouterr().out
    (weights / "b.pt").write_bytes(b"other weights")
    run({"images": 10})
    assert calls == ["a", "b", "b"]  # only the net whose weights changed
    run({"images": 20})
    assert calls == ["a", "b", "b", "a", "b"]  # other settings: every net again
    stored = json.loads((tmp_path / "runs" / "a.json").read_text())
    # where a script writes: its own runs folder; results/ shipped unless told otherwise
    full = argparse.Namespace(out_dir=None, quick=False)
    assert per_net.output_roots(full, "ensembles") == (Path("runs/ensembles"), None)
    quick = argparse.Namespace(out_dir=None, quick=True)
    assert per_net.output_roots(quick, "ensembles") == (
        Path("runs/ensembles-quick/runs/ensembles"), Path("runs/ensembles-quick"))
    assert stored["settings"] == {"images": 20} and stored["command"] == "cmd"
    assert not list((tmp_path / "runs").glob("*.tmp"))


def test_the_family_script_trains_resumes_and_ships_loadable_weights(tmp_path):
    from resnet_edu.pretrained import FAMILY, build, read_weights

    script = [sys.executable, str(ROOT / "bench/train_family.py")]
    common = ["--quick", "--out-dir", str(tmp_path)]
    subprocess.run([*script, "train", *common, "--nets", "resnet20"], check=True,
                   capture_output=True, cwd=ROOT)
    refused = subprocess.run([*script, "ship", *common], capture_output=True, text=True,
                             cwd=ROOT)
    assert refused.returncode != 0 and "plain20" in refused.stderr  # not trained yet
    done = subprocess.run([*script, "train", *common], check=True, capture_output=True,
                          text=True, cwd=ROOT)
    assert "resnet20/checkpoint.pt is finished" in done.stdout  # not trained twice
    subprocess.run([*script, "ship", *common], check=True, capture_output=True, cwd=ROOT)
    results = json.loads((tmp_path / "results/family.json").read_text())
    manifest = json.loads((tmp_path / "weights/manifest.json").read_text())
    assert set(results["nets"]) == set(manifest) == set(FAMILY)
    for name, net in results["nets"].items():
        assert len(net["train_error"]) == len(net["val_error"]) == net["epochs"] == 2
        state = read_weights(tmp_path / "weights" / f"{name}.pt", manifest[name]["sha256"])
        assert all(v.dtype == torch.float16 for v in state.values() if v.is_floating_point())
        build(name).load_state_dict(state)  # the architecture the manifest names
    from resnet_edu.plots import plot_training_curves  # what notebooks 00 and 02 draw from it

    ax = plot_training_curves(results["nets"], chance=0.9)
    assert len(ax.get_lines()) == 3 * len(FAMILY) + 1  # train, val, the final test; chance

    # the landscapes of two of those nets (bench/landscapes.py), from their weight files
    from resnet_edu.data import load_sample
    from resnet_edu.evaluation import evaluate
    from resnet_edu.pretrained import initial, load_pretrained

    land = [sys.executable, str(ROOT / "bench/landscapes.py"), "--quick", "--out-dir",
            str(tmp_path), "--weights-dir", str(tmp_path / "weights"), "--nets", "plain56",
            "resnet20"]
    subprocess.run(land, check=True, capture_output=True, cwd=ROOT)
    again = subprocess.run(land, check=True, capture_output=True, text=True, cwd=ROOT)
    assert again.stdout.count("done before") == 2  # stored per net: not measured twice
    stored = json.loads((tmp_path / "results/landscapes.json").read_text())
    images = load_sample().train.subset(slice(0, stored["settings"]["images"]))
    for name, r in stored["nets"].items():
        trained = load_pretrained(name, tmp_path / "weights" / f"{name}.pt")
        loss = evaluate(trained, images)["loss"]
        assert r["trained"]["loss"] == pytest.approx(loss, rel=1e-4)
        g = r["grid"]
        assert g["loss"][len(g["alpha"]) // 2][len(g["beta"]) // 2] == pytest.approx(loss,
                                                                                     rel=1e-4)
        line = r["init_line"]  # alpha 0: the initial weights (with the trained BN statistics)
        start = initial(name)
        start.load_state_dict({**trained.state_dict(), **dict(start.named_parameters())})
        at = {round(a, 3): v for a, v in zip(line["alpha"], line["loss"], strict=True)}
        assert at[1.0] == pytest.approx(loss, rel=1e-3)
        assert at[0.0] == pytest.approx(evaluate(start, images)["loss"], rel=1e-3)
        h = r["hessian"]
        assert h["lam_max"] >= h["lam_min"]
        assert h["ratio"] == pytest.approx(abs(h["lam_min"] / h["lam_max"]), rel=1e-3)

    # Veit et al.'s lesions and paths on three of them (bench/ensembles.py)
    from resnet_edu.ensembles import accuracy_without, predicted_gradient_share

    veit = [sys.executable, str(ROOT / "bench/ensembles.py"), "--quick", "--out-dir",
            str(tmp_path), "--weights-dir", str(tmp_path / "weights"), "--nets", "resnet56",
            "plain20", "resnet20"]
    subprocess.run(veit, check=True, capture_output=True, cwd=ROOT)
    again = subprocess.run(veit, check=True, capture_output=True, text=True, cwd=ROOT)
    assert again.stdout.count("done before") == 3
    stored = json.loads((tmp_path / "results/ensembles.json").read_text())
    images = load_sample().test.subset(slice(0, stored["settings"]["images"]))
    for name, r in stored["nets"].items():
        model = load_pretrained(name, tmp_path / "weights" / f"{name}.pt")
        assert r["blocks"] == {"resnet56": 27}.get(name, 9)
        assert r["intact_acc"] == pytest.approx(evaluate(model, images)["acc"])
        last = r["blocks"] - 1
        assert r["single_deletion_acc"][last] == pytest.approx(
            accuracy_without(model, images, [last]))
        calibration = load_sample().train.subset(slice(0, stored["settings"]["calibration_images"]))
        assert r["single_deletion_acc_recalibrated"][0] == pytest.approx(
            accuracy_without(model, images, [0], recalibrate=calibration))
        ks = [int(k) for k in r["random_deletion_acc"]]
        assert ks == ([2, 3] if name == "plain20" else
                      [1, 2, 3, 4, 5, 6, 8, 12, 16] if name == "resnet56" else list(range(1, 10)))
        assert all(len(a) == (1 if k == r["blocks"] else stored["settings"]["draws"])
                   for k, a in zip(ks, r["random_deletion_acc"].values(), strict=True))
        assert ("paths" in r) == name.startswith("resnet")
    paths = stored["nets"]["resnet56"]["paths"]
    assert len(paths["per_path"]) == len(paths["share"]) == 28
    assert sum(paths["share"]) == pytest.approx(1, abs=1e-3)
    assert paths["predicted_share"] == pytest.approx(
        predicted_gradient_share(27, paths["attenuation"]), abs=1e-4)


def test_the_readme_table_is_the_one_made_from_results():
    import readme_table

    readme = (ROOT / "README.md").read_text()
    assert readme_table.table() in readme, (
        "README.md's benchmark table differs from the stored results: run "
        "python bench/readme_table.py --write")
