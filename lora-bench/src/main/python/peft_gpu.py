#!/usr/bin/env python3
"""PEFT itself on a GPU: the side-by-side baseline of `bin/lora-bench device --device gpu`,
run on the same GPU by gpu/device-run.sh (stage peft).

The workload is the Java side's: the SDXL attention weights (--shapes, written by `bin/lora-bench
shapes`: name, rows, columns; 722 fp16 Linear weights) and two rank-32 adapters over them, "style"
(alpha 32) and "subject" (alpha 16), merged with weights 0.7 and 0.5, density 0.5, target rank 32.

- torch/fuse_loop, torch/unfuse_loop: a plain fp16 loop, W += (B @ A) * scale in place, fp16
  factors on the device (the least a fuse can cost);
- peft/merge_adapter, peft/unmerge_adapter: PEFT 0.21 (get_peft_model with init_lora_weights=False,
  so B is not zero) merging the "style" adapter into the fp16 base weights and unmerging it; PEFT
  keeps fp16 models' LoRA weights in float32 (autocast_adapter_dtype). Peak device memory the
  merge allocates on top of the model is reported (torch.cuda.max_memory_allocated);
- peft/merge/<method>: PEFT's add_weighted_adapter(["style", "subject"], [0.7, 0.5],
  combination_type=method, svd_rank=32, density=0.5, majority_sign_method="total"), the new
  adapter deleted untimed after each run. The *_svd types run a full SVD of every module's dense
  delta (svd_full_matrices=True by default; minutes for all modules on an H100), so they are timed
  on a model of every --svd-every'th module and scaled to all of them by each module's
  rows*columns*min(rows, columns) share of the SVD cost, as peft_cpu.py does.

Each operation runs once untimed, then --runs times (--svd-runs for the sampled *_svd), with
torch.cuda.synchronize() before the clock stops. --deadline-s skips what would start after that
many seconds; the JSON (--json, rewritten after every operation, and stdout at the end) lists
what ran and what was skipped. --device cpu runs the torch parts on the CPU (a check of the script
where there is no GPU; PEFT is then only used if installed).
"""
import argparse
import json
import math
import os
import statistics
import sys
import time

import torch

METHODS = ["cat", "linear", "svd", "ties", "dare_linear", "dare_ties", "magnitude_prune",
           "ties_svd", "dare_linear_svd", "dare_ties_svd", "magnitude_prune_svd"]


def log(message):
    print(message, file=sys.stderr, flush=True)


class Bench:
    def __init__(self, args):
        self.args = args
        self.device = torch.device(args.device)
        self.start = time.perf_counter()
        self.report = {"torch": torch.__version__, "device": str(self.device), "operations": [], "skipped": [],
                       "errors": []}
        if self.device.type == "cuda":
            self.report["gpu"] = torch.cuda.get_device_name(self.device)
            self.report["tf32_matmul"] = torch.backends.cuda.matmul.allow_tf32

    def sync(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def time_left(self):
        return self.args.deadline_s <= 0 or time.perf_counter() - self.start < self.args.deadline_s

    def write(self):
        if self.args.json:
            temporary = self.args.json + ".tmp"
            with open(temporary, "w") as out:
                json.dump(self.report, out, indent=1)
            os.replace(temporary, self.args.json)

    def skip(self, name, why):
        self.report["skipped"].append(f"{name}: {why}")
        log(f"  {name:<28} skipped: {why}")

    def timed(self, name, runs, operation, after=lambda: None, scale=1.0, extra=None, warm_up=True):
        """Runs operation once untimed (unless not warm_up) and `runs` times timed, after() untimed after each."""
        return self.pair([name], runs, [operation, after], scale, extra, warm_up)[0]

    def pair(self, names, runs, operations, scale=1.0, extra=None, warm_up=True):
        """Times operations[i] as names[i] (the others untimed where names has fewer), in turn."""
        if not self.time_left():
            for name in names:
                self.skip(name, "deadline passed")
            return [None] * len(names)
        seconds = [[] for _ in names]
        try:
            if warm_up:
                for operation in operations:
                    operation()
                self.sync()
            for _ in range(runs):
                if not self.time_left() and seconds[0]:
                    break
                for index, operation in enumerate(operations):
                    self.sync()
                    start = time.perf_counter()
                    operation()
                    self.sync()
                    if index < len(names):
                        seconds[index].append(time.perf_counter() - start)
        except Exception as error:  # reported in the JSON, the other operations still run
            message = f"{'/'.join(names)}: {type(error).__name__}: {error}"
            self.report["errors"].append(message)
            log(f"  {message}")
            self.write()
            return [None] * len(names)
        results = []
        for name, times in zip(names, seconds):
            result = {"name": name, "median_s": statistics.median(times) * scale, "min_s": min(times) * scale,
                      "max_s": max(times) * scale, "runs": len(times)}
            result.update(extra or {})
            self.report["operations"].append(result)
            line = f"  {name:<28} {result['median_s']:9.4f} s (min {result['min_s']:.4f}, {len(times)} runs)"
            if scale != 1.0:
                line += f", scaled x{scale:.2f} from {result.get('sampled_modules')} modules"
            log(line)
            results.append(result)
        self.write()
        return results


def read_shapes(path):
    shapes = []
    with open(path) as lines:
        for line in lines:
            if line.strip():
                name, rows, columns = line.split()
                shapes.append((name, int(rows), int(columns)))
    return shapes


def plain_loop(bench, shapes, rank, runs, dtype):
    """W += (B @ A) * scale over weights and factors of dtype (fp16) on the device."""
    generator = torch.Generator(device=bench.device).manual_seed(1)
    weights, ups, downs = [], [], []
    for _, rows, columns in shapes:
        weights.append(torch.randn(rows, columns, device=bench.device, dtype=dtype, generator=generator)
                       / math.sqrt(columns))
        ups.append(torch.randn(rows, rank, device=bench.device, dtype=dtype, generator=generator) * 0.01)
        downs.append(torch.randn(rank, columns, device=bench.device, dtype=dtype, generator=generator)
                     / math.sqrt(columns))
    scale = 1.0  # alpha 32 / rank 32

    def loop(sign):
        for w, b, a in zip(weights, ups, downs):
            w.add_((b @ a) * scale, alpha=sign)

    bench.pair(["torch/fuse_loop", "torch/unfuse_loop"], runs, [lambda: loop(1), lambda: loop(-1)])
    del weights, ups, downs
    if bench.device.type == "cuda":
        torch.cuda.empty_cache()


def peft_model(bench, shapes, rank):
    """The fp16 layers wrapped by PEFT with the two random adapters."""
    from peft import LoraConfig, get_peft_model

    class Stack(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = torch.nn.ModuleList(
                torch.nn.Linear(columns, rows, bias=False, device=bench.device, dtype=torch.float16)
                for _, rows, columns in shapes)

    torch.manual_seed(2)
    targets = r"layers\.\d+"
    model = get_peft_model(Stack(), LoraConfig(r=rank, lora_alpha=32, target_modules=targets, init_lora_weights=False),
                           adapter_name="style")
    model.add_adapter("subject", LoraConfig(r=rank, lora_alpha=16, target_modules=targets, init_lora_weights=False))
    model.set_adapter("style")
    bench.sync()
    return model


def svd_cost(shape):
    _, rows, columns = shape
    return rows * columns * min(rows, columns)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", required=True, help="`bin/lora-bench shapes` output: name rows columns")
    parser.add_argument("--json", help="write the report here too (rewritten after every operation)")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--loop-dtype", default="float16", choices=["float16", "bfloat16", "float32"],
                        help="the plain loop's dtype (float32 where the CPU torch has no fp16 matmul)")
    parser.add_argument("--rank", type=int, default=32)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--svd-runs", type=int, default=1)
    parser.add_argument("--svd-every", type=int, default=20, help="time the *_svd types on every Nth module")
    parser.add_argument("--modules", type=int, default=0, help="only the first N shapes (0: all)")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--weights", default="0.7,0.5", help="style, subject")
    parser.add_argument("--density", type=float, default=0.5)
    parser.add_argument("--deadline-s", type=float, default=0)
    args = parser.parse_args()
    # The dense methods run on a smaller model made once the full one is deleted, so the others
    # (which use the full model) go first whatever order they are named in.
    methods = sorted((m for m in args.methods.split(",") if m), key=lambda m: m.endswith("svd"))
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        parser.error(f"not a PEFT combination type: {', '.join(unknown)}")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        sys.exit("peft_gpu.py: torch sees no CUDA device; use --device cpu to check the script on the CPU")
    weights = [float(w) for w in args.weights.split(",")]
    shapes = read_shapes(args.shapes)
    if args.modules:
        shapes = shapes[: args.modules]

    bench = Bench(args)
    bench.report["modules"] = len(shapes)
    bench.report["parameters"] = sum(rows * columns for _, rows, columns in shapes)
    log(f"torch {torch.__version__} on {bench.report.get('gpu', args.device)}: {len(shapes)} modules, "
        f"{bench.report['parameters'] / 1e9:.3f} G fp16 parameters, rank {args.rank}")
    plain_loop(bench, shapes, args.rank, args.runs, getattr(torch, args.loop_dtype))

    try:
        import peft
    except ImportError:
        bench.report["errors"].append("peft: not installed")
        log("peft is not installed: only the plain loop ran")
        bench.write()
        print(json.dumps(bench.report, indent=1))
        sys.exit(1)
    bench.report["peft"] = peft.__version__
    try:
        model = peft_model(bench, shapes, args.rank)
        layer = model.base_model.model.layers[0]
        log(f"peft {peft.__version__}: base {layer.base_layer.weight.dtype}, lora_A {layer.lora_A['style'].weight.dtype}")
        memory = {}
        if bench.device.type == "cuda":
            base = torch.cuda.memory_allocated(bench.device)
            torch.cuda.reset_peak_memory_stats(bench.device)
            model.merge_adapter()
            bench.sync()
            memory = {"model_bytes": base, "merge_peak_extra_bytes": torch.cuda.max_memory_allocated(bench.device) - base}
            model.unmerge_adapter()
        merged, _ = bench.pair(["peft/merge_adapter", "peft/unmerge_adapter"], args.runs,
                               [model.merge_adapter, model.unmerge_adapter])
        if merged is not None:
            merged.update(memory)
            bench.write()
    except Exception as error:
        bench.report["errors"].append(f"peft model: {type(error).__name__}: {error}")
        log(bench.report["errors"][-1])
        bench.write()
        print(json.dumps(bench.report, indent=1))
        sys.exit(1)

    if bench.device.type == "cuda":
        torch.linalg.svd(torch.randn(64, 64, device=bench.device))  # cuSOLVER's set-up, outside the timings
    counter = [0]

    def merge(target, method):
        counter[0] += 1
        name = f"merged{counter[0]}"
        target.add_weighted_adapter(["style", "subject"], weights, adapter_name=name, combination_type=method,
                                    svd_rank=args.rank, density=args.density, majority_sign_method="total")
        return name

    def delete_merged(target):
        for name in list(target.peft_config):
            if name.startswith("merged"):
                target.delete_adapter(name)
        target.set_adapter("style")

    sampled = None
    for method in methods:
        if not method.endswith("svd"):
            bench.timed(f"peft/merge/{method}", args.runs, lambda: merge(model, method), after=lambda: delete_merged(model),
                        extra={"modules": len(shapes)})
            continue
        if sampled is None:
            sample = shapes[:: args.svd_every]
            del model
            if bench.device.type == "cuda":
                torch.cuda.empty_cache()
            model = None
            sampled = (peft_model(bench, sample, args.rank),
                       sum(svd_cost(s) for s in shapes) / sum(svd_cost(s) for s in sample), len(sample))
        target, share, count = sampled
        bench.timed(f"peft/merge/{method}", args.svd_runs, lambda: merge(target, method), after=lambda: delete_merged(target),
                    scale=share, extra={"modules": len(shapes), "sampled_modules": count}, warm_up=False)
    bench.write()
    print(json.dumps(bench.report, indent=1))
    sys.exit(1 if bench.report["errors"] else 0)


if __name__ == "__main__":
    main()
