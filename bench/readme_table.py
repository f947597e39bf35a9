"""The README's benchmark table, generated from the files in results/.

    python bench/readme_table.py           # print the table
    python bench/readme_table.py --write   # replace the table in README.md

Every figure in the table is read from a results file, and the hardware is what that file
recorded. `tests/repo/test_readme_results.py` checks that README.md holds exactly this table, so a
re-run that changes a result fails the tests until the README is regenerated.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from resnet_edu.locations import RESULTS_DIR

ROOT = Path(__file__).resolve().parents[1]
RESULTS = RESULTS_DIR
START, END = "<!-- benchmark table: bench/readme_table.py -->", "<!-- end of benchmark table -->"
HEADER = "| what | command | hardware | result |\n|---|---|---|---|"


def pct(fraction: float) -> str:
    return f"{100 * fraction:.2f} %"


def _read(name: str) -> dict | None:
    path = RESULTS / name
    return json.loads(path.read_text()) if path.is_file() else None


def _hardware(text: str, cpu: str | None = None) -> str:
    """The recorded hardware; CPU runs without a recorded model say so."""
    if cpu:
        return cpu
    return text if not text.startswith("CPU: x86_64") else f"{text} (CPU model not recorded)"


def _load(load: dict | None) -> str:
    if not load:
        return "load not recorded"
    return (f"load average {load['loadavg_before'][0]:.2f} before, "
            f"other programs {load['other_processes_cores']} cores during")


def cpu_preset_rows() -> list[str]:
    path = RESULTS / "bench_cpu.jsonl"
    runs = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
    rows = []
    for run in [r for r in runs if r["preset"] == "cpu"][-1:]:
        what = (f"`cpu` preset, {run['epochs']} epochs" if not run.get("budget_s") else
                f"`cpu` preset, {run['budget_s'] / 60:g}-minute budget")
        command = f"`{run['command']}`" if "command" in run else "command not recorded"
        rows.append(
            f"| {what} | {command} | {_hardware(run['hardware'], run.get('cpu'))}, torch "
            f"{run['torch'].split('+')[0]} | {pct(run['final_test_acc'])} test "
            f"({pct(run['final_test_acc_tta'])} with flip TTA), {pct(run['final_val_acc'])} "
            f"val, {run['epochs']} epochs in {run['wall_time_to_final_epoch_s']:.0f} s of "
            f"training ({run['wall_time_incl_eval_s']:.0f} s with per-epoch evaluation), "
            f"{run['images_per_s']:,.0f} images/s (`results/bench_cpu.jsonl`) |")
    if not any(r["preset"] == "gpu" for r in runs):
        rows.append("| `gpu` preset | `python bench/train_cifar.py --preset gpu` | not measured "
                    "yet | no GPU run is stored |")
    return rows


def peer_rows() -> list[str]:
    rows = []
    for name in ("peer_cpu.json", "peer_gpu.json"):
        r = _read(name)
        if r is None:
            continue
        ours, theirs = r["ours"], r["classic"]
        rows.append(
            f"| ours against the classic recipe, same net, {r['budget_s'] / 60:g}-minute "
            f"budget | `{r['command']}` | {r['hardware']['cpu']}, {r['hardware']['cores']} "
            f"cores, torch {r['torch'].split('+')[0]} | ours {pct(ours['test_acc'])} test "
            f"({pct(ours['test_acc_tta'])} with flip TTA) in {ours['wall_s']:.0f} s, "
            f"{ours['epochs']} epochs at {ours['images_per_s']:,.0f} images/s; classic "
            f"{pct(theirs['test_acc'])} in {theirs['wall_s']:.0f} s, {theirs['epochs']} "
            f"epochs at {theirs['images_per_s']:,.0f} images/s; {_load(r['machine_load'])} "
            f"(`results/{name}`) |")
    return rows


def profile_rows() -> list[str]:
    r = _read("profile_step_cpu.json")
    if r is None:
        return []
    sizes = "; ".join(
        f"{size} px: {row['step_ms']:.0f} ms per step of {r['batch_size']} ("
        + ", ".join(f"{k} {100 * v:.0f} %" for k, v in row["share"].items()) + ")"
        for size, row in r["per_crop_size"].items())
    return [f"| one `cpu`-preset step, profiled | `{r['command']}` | {r['hardware']['cpu']}, "
            f"{r['hardware']['cores']} cores, torch {r['torch'].split('+')[0]} | {sizes}; "
            f"{_load(r['machine_load'])} (`results/profile_step_cpu.json`) |"]


def sample_rows() -> list[str]:
    r = _read("sample_epochs.json")
    if r is None:
        return []
    runs = ", ".join(f"{run['epochs']} epochs {pct(run['val_acc'])}" for run in r["runs"])
    return [f"| `cpu` preset on the shipped sample (notebook 04 without the full set) | "
            f"`{r['command']}` | {r['hardware']['cpu']}, {r['hardware']['cores']} cores | "
            f"validation accuracy after {runs}; notebook 04 trains {r['chosen_epochs']} "
            f"there: {r['rule']}; {_load(r['machine_load'])}"
            + (", recorded with --allow-busy: the accuracies of fixed-epoch runs do not depend "
               "on the load, their seconds do" if r["machine_load"]["overridden"] else "")
            + " (`results/sample_epochs.json`) |"]


def ablation_rows() -> list[str]:
    rows = []
    for name in ("ablations_cpu.json", "ablations_gpu.json"):
        r = _read(name)
        if r is None:
            continue
        cells = "; ".join(
            f"{variant} " + "/".join(f"{100 * run['val_acc']:.1f}" for run in runs) + " %"
            for variant, runs in r["runs"].items())
        rows.append(f"| the `cpu` preset minus one ingredient, {r['budget_s'] / 60:g}-minute "
                    f"budget | `{r['command']}` | {r['hardware']['cpu']}, "
                    f"{r['hardware']['cores']} cores | validation accuracy per seed: {cells}; "
                    f"{_load(r['machine_load'])} (`results/{name}`) |")
    return rows


def degradation_rows() -> list[str]:
    r = _read("degradation_cpu.json")
    if r is None:
        return []
    errors = ", ".join(f"{name} {100 * net['train_error'][-1]:.1f} %"
                       for name, net in r["nets"].items())
    return [f"| degradation (notebook 02) | `{r['command']}` | {_hardware(r['hardware'])} | "
            f"{r['note']}: final running train error {errors} "
            f"(`results/degradation_cpu.json`) |"]


def softmax_rows() -> list[str]:
    r = _read("softmax_vs_ce.json")
    if r is None:
        return []
    runs = "; ".join(f"{run['model']} (seed {run['seed']}): {pct(run['test_acc'])} test"
                     for run in r["runs"])
    return [f"| softmax + CE (notebook 05) | `{r['command']}` | "
            f"{_hardware(r['environment']['device_name'])} | {r['data']}: {runs} "
            f"(`results/softmax_vs_ce.json`) |"]


def small_nets_rows() -> list[str]:
    r = _read("small_nets.json")
    if r is None:
        return []
    nets = r["nets"]
    accs = ", ".join(f"{name} {pct(n['test_acc_fp16'])} test (val {pct(n['val_acc'])}, "
                     f"{n['train_time_s'] / 60:.1f} min)" for name, n in nets.items())
    commands = "; ".join(f"`{n['command']}`" for n in nets.values())
    return [f"| small nets (notebook 06) | {commands} | {_hardware(r['hardware'])}, the "
            f"processes side by side | {r['config']['epochs']} epochs on "
            f"{r['data']['train_images']:,} training images: {accs} "
            f"(`results/small_nets.json`, `weights/manifest.json`) |"]


def family_rows() -> list[str]:
    r = _read("family.json")
    if r is None:
        return []
    nets = r["nets"]
    cells = ", ".join(f"{name} {100 * n['train_error'][-1]:.1f} / {100 * n['test_error']:.2f} %"
                      for name, n in nets.items())
    hardware = "; ".join(sorted({n["hardware"] for n in nets.values()}))
    return [f"| trained family (notebooks 00, 02, 06, 07) | `{r['commands'][0]}` | {hardware} | "
            f"{r['config']['epochs']} epochs each on {r['data']['train_images']:,} images, "
            f"train / test error: {cells} (`results/family.json`, `weights/manifest.json`) |"]


def landscape_rows() -> list[str]:
    r = _read("landscapes.json")
    if r is None:
        return []
    s = r["settings"]
    cells = ", ".join(f"{name} {n['hessian']['ratio']:.3g} ({n['seconds'] / 60:.1f} min)"
                      for name, n in r["nets"].items())
    return [f"| loss landscapes (notebook 07) | `{r['command']}` | {r['hardware']['cpu']}, "
            f"{r['hardware']['cores']} cores, torch {r['torch'].split('+')[0]} | "
            f"{s['grid']} x {s['grid']} grid on {s['images']:,} training images, Hessian "
            f"ratio abs(lambda_min / lambda_max) at the trained weights "
            f"({s['lanczos_steps']} Lanczos steps): {cells} (`results/landscapes.json`) |"]


def table() -> str:
    rows = (cpu_preset_rows() + peer_rows() + ablation_rows() + profile_rows() + sample_rows()
            + family_rows() + landscape_rows() + degradation_rows() + softmax_rows()
            + small_nets_rows())
    return "\n".join([START, HEADER, *rows, END])


def write(readme: Path = ROOT / "README.md") -> None:
    text = readme.read_text()
    if START not in text or END not in text:
        raise SystemExit(f"{readme} has no {START} ... {END} block to replace")
    head, rest = text.split(START, 1)
    tail = rest.split(END, 1)[1]
    readme.write_text(head + table() + tail)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--write", action="store_true", help="replace the table in README.md")
    args = p.parse_args()
    if args.write:
        write()
    else:
        print(table())
    return 0


if __name__ == "__main__":
    sys.exit(main())
