#!/usr/bin/env python3
"""Puts the GPU run's results side by side: the Java bench's e2e.json and merge.json (`bin/lora-bench
device --device gpu`), and each e2e-TILING.json of device-run.sh's tilings stage (rows marked
[TILING]), against peft.json (peft_gpu.py), all from one folder (device-run.sh's
target/gpu-results, or the files fetched back from it). Prints a markdown table and writes the
rows as JSON (--json). A ratio is loramerge's median over PEFT's: below 1, loramerge is faster.
Operations one side lacks show without a ratio; missing files are named, not fatal.
"""
import argparse
import glob
import json
import os
import sys

# loramerge's operation -> (PEFT's, plain torch's)
PAIRS = {"fuse/memory": ("peft/merge_adapter", "torch/fuse_loop"),
         "fuse/memory/factors-kept": ("peft/merge_adapter", "torch/fuse_loop"),
         "unfuse/memory": ("peft/unmerge_adapter", "torch/unfuse_loop")}


def load(folder, name, notes):
    path = os.path.join(folder, name)
    if not os.path.exists(path):
        notes.append(f"{name}: missing")
        return {}
    with open(path) as file:
        report = json.load(file)
    for field in ("skipped", "errors"):
        for entry in report.get(field, []):
            notes.append(f"{name} {field[:-1] if field == 'errors' else 'skipped'}: {entry}")
    return report


def by_name(*reports):
    operations = {}
    for report in reports:
        for operation in report.get("operations", []):
            operations[operation["name"]] = operation
    return operations


def seconds(value):
    return "" if value is None else f"{value:.4g}"


def rows_of(java, peft, mark):
    """The rows of one Java report's operations against PEFT's, their names followed by mark."""
    rows = []
    for name, operation in java.items():
        if "median_s" not in operation:
            continue
        peft_name, torch_name = PAIRS.get(name, ("peft/" + name if name.startswith("merge/") else None, None))
        theirs = peft.get(peft_name, {}).get("median_s") if peft_name else None
        loop = peft.get(torch_name, {}).get("median_s") if torch_name else None
        row = {"operation": name + mark, "loramerge_s": operation["median_s"], "peft": peft_name, "peft_s": theirs,
               "ratio": operation["median_s"] / theirs if theirs else None, "torch_loop_s": loop}
        if "sampled_modules" in peft.get(peft_name or "", {}):
            row["peft_sampled_modules"] = peft[peft_name]["sampled_modules"]
        rows.append(row)
    for swap_name in ("hotswap", "hotswap/factors-kept"):
        swap = java.get(swap_name)
        if not swap or not swap.get("cycles_done"):
            continue
        merge = peft.get("peft/merge_adapter", {}).get("median_s")
        unmerge = peft.get("peft/unmerge_adapter", {}).get("median_s")
        theirs = merge + unmerge if merge and unmerge else None
        rows.append({"operation": f"{swap_name}{mark} (per fuse+unfuse cycle)", "loramerge_s": swap["per_cycle_s"],
                     "peft": "merge_adapter + unmerge_adapter", "peft_s": theirs,
                     "ratio": swap["per_cycle_s"] / theirs if theirs else None,
                     "loop": swap_name + mark, "cycles": swap.get("cycles"), "cycles_done": swap["cycles_done"],
                     "weights": swap.get("weights"), "differing_weights": swap["differing_weights"]})
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", required=True, help="the folder of e2e.json, e2e-TILING.json, merge.json, peft.json")
    parser.add_argument("--json", help="write the rows here")
    args = parser.parse_args()
    notes = []
    java_reports = [load(args.results, name, notes) for name in ("e2e.json", "merge.json")]
    peft_report = load(args.results, "peft.json", notes)
    java = by_name(*java_reports)
    peft = by_name(peft_report)

    rows = rows_of(java, peft, "")
    for path in sorted(glob.glob(os.path.join(args.results, "e2e-*.json"))):
        tiling = os.path.basename(path)[len("e2e-"):-len(".json")]
        rows += rows_of(by_name(load(args.results, os.path.basename(path), notes)), peft, f" [{tiling}]")
    device = next((r.get("device") for r in java_reports if r.get("device")), "?")
    print(f"loramerge on {device} ({next((r.get('engine') for r in java_reports if r.get('engine')), '?')}), "
          f"PEFT {peft_report.get('peft', '?')} / torch {peft_report.get('torch', '?')} on {peft_report.get('gpu', '?')}")
    print()
    print("| operation | loramerge (s) | PEFT (s) | loramerge / PEFT | plain torch loop (s) |")
    print("|---|---|---|---|---|")
    for row in rows:
        sampled = f" (svd on {row['peft_sampled_modules']} modules, scaled)" if "peft_sampled_modules" in row else ""
        ratio = "" if row["ratio"] is None else f"{row['ratio']:.3g}"
        print(f"| {row['operation']} | {seconds(row['loramerge_s'])} | {seconds(row['peft_s'])}{sampled} | {ratio} "
              f"| {seconds(row.get('torch_loop_s'))} |")
    print()
    for row in rows:
        if "cycles_done" in row:
            print(f"{row['loop']}: {row['cycles_done']} of {row['cycles']} cycles, "
                  f"{row['differing_weights']} of {row['weights']} weights differ from the originals")
    for name, operation in java.items():
        if name.startswith("bytes/"):
            print(f"{name}: {operation['differing_elements']} of {operation['elements']} elements differ from the CPU's "
                  f"fuse, {operation['not_restored_weights']} weights not restored")
    memory = next((r.get("device_memory_bytes") for r in java_reports if r.get("device_memory_bytes")), None)
    if memory and any(value is not None for value in memory.values()):
        print("device memory in use (GB): " + ", ".join(
            f"{key} {value / 1e9:.2f}" for key, value in memory.items() if value is not None))
    for note in notes:
        print("note: " + note)
    if args.json:
        with open(args.json, "w") as out:
            json.dump({"rows": rows, "notes": notes, "device_memory_bytes": memory}, out, indent=1)
    return 0 if rows else 1


if __name__ == "__main__":
    sys.exit(main())
