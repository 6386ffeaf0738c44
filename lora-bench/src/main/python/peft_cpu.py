#!/usr/bin/env python3
"""PEFT's LoRA arithmetic in PyTorch on the CPU: the side-by-side baseline of
`bin/lora-bench e2e --vs-pytorch`, which runs this script after its own table.

Written from the formulas in docs/design.md (Semantics) and PEFT 0.21's sources (its
add_weighted_adapter combination types, merge_utils' task_arithmetic / ties / dare / magnitude
prune, LoraLayer.merge), not by importing PEFT: it needs only Debian's python3-torch. It reads
the files the Java harness wrote into its cache (two kohya LoRAs and the fp16 base UNet), holds
everything in memory before timing, then times each operation --runs times after one warm-up.
Merges hold the factors in float32, as PEFT does with fp16 adapters (autocast_adapter_dtype);
the fuse adds one adapter into the fp16 base weights in place the way an fp16 diffusers pipeline's
fuse_lora does: fp16 factors, their product in float32 on the CPU, cast to fp16, added in fp16.
Progress goes to stderr, the result as JSON to stdout.

The *_svd types run a full SVD of every module's dense delta (PEFT's svd_full_matrices=True),
about a second per module on a 2-core CPU, so they are timed on every --svd-every'th module and
scaled to the whole model by each module's out*in*min(out, in) share of the SVD cost.

Check only: --check prints the BLAS torch loaded and exits 0 with OpenBLAS, 3 without it.
"""
import argparse
import json
import math
import os
import re
import statistics
import struct
import sys
import time

try:
    import torch
except ImportError:
    print(f"peft_cpu.py: {sys.executable} has no torch module", file=sys.stderr)
    sys.exit(2)

METHODS = ["cat", "linear", "svd", "ties", "ties_svd", "dare_linear", "dare_ties", "dare_linear_svd",
           "dare_ties_svd", "magnitude_prune", "magnitude_prune_svd"]
DTYPES = {"F16": torch.float16, "BF16": torch.bfloat16, "F32": torch.float32, "F64": torch.float64}


def log(message):
    print(message, file=sys.stderr, flush=True)


def loaded_blas():
    """The BLAS library mapped into this process (torch links libblas.so.3, which Debian's
    alternatives point at OpenBLAS when installed, else at the reference BLAS)."""
    torch.ones(8, 8) @ torch.ones(8, 8)
    paths = []
    with open("/proc/self/maps") as maps:
        for line in maps:
            path = line.split()[-1]
            name = os.path.basename(path)
            if ("blas" in name or "mkl" in name) and path not in paths:
                paths.append(path)
    for path in paths:
        if "openblas" in os.path.basename(path) or "mkl" in os.path.basename(path):
            return path, True
    return (paths[0] if paths else "none found"), False


# --- safetensors, read with json + struct -------------------------------------------------------

def header(path):
    with open(path, "rb") as file:
        (size,) = struct.unpack("<Q", file.read(8))
        entries = json.loads(file.read(size))
    entries.pop("__metadata__", None)
    return 8 + size, entries


def tensor(file, data_start, entry):
    begin, end = entry["data_offsets"]
    file.seek(data_start + begin)
    data = bytearray(file.read(end - begin))
    values = torch.frombuffer(data, dtype=DTYPES[entry["dtype"]]) if data else torch.empty(0)
    return values.reshape(entry["shape"])


def read_kohya(path):
    """{module name: (down, up, alpha)} in file order, the way the Java kohya reader groups keys:
    the name up to the first dot is the module; alpha defaults to the rank."""
    data_start, entries = header(path)
    parts = {}
    with open(path, "rb") as file:
        for name, entry in entries.items():
            module, _, suffix = name.partition(".")
            parts.setdefault(module, {})[suffix] = tensor(file, data_start, entry)
    modules = {}
    for module, tensors in parts.items():
        down = tensors["lora_down.weight"]
        up = tensors["lora_up.weight"]
        alpha = float(tensors["alpha"]) if "alpha" in tensors else float(down.shape[0])
        modules[module] = (down, up, alpha)
    return modules


def kohya_name(diffusers_path):
    """The kohya SDXL name of a UNet attention module, from its diffusers path (the original
    checkpoint's input_blocks / middle_block / output_blocks numbering, dots as underscores)."""
    parts = diffusers_path.split(".")
    if parts[0] == "down_blocks" and parts[2] == "attentions":
        parts = ["input_blocks", str(3 * int(parts[1]) + int(parts[3]) + 1), "1"] + parts[4:]
    elif parts[0] == "mid_block" and parts[1] == "attentions":
        parts = ["middle_block", "1"] + parts[3:]
    elif parts[0] == "up_blocks" and parts[2] == "attentions":
        parts = ["output_blocks", str(3 * int(parts[1]) + int(parts[3])), "1"] + parts[4:]
    else:
        return None
    return "lora_unet_" + "_".join(parts)


def read_touched_base(path, modules):
    """The fp16 base weights the kohya modules touch, keyed by module name."""
    data_start, entries = header(path)
    names = {}
    for name in entries:
        if name.endswith(".weight"):
            kohya = kohya_name(name[: -len(".weight")])
            if kohya is not None:
                names[kohya] = name
    missing = [module for module in modules if module not in names]
    if missing:
        sys.exit(f"peft_cpu.py: {len(missing)} modules have no base weight in {path}, e.g. {missing[0]}")
    with open(path, "rb") as file:
        return {module: tensor(file, data_start, entries[names[module]]) for module in modules}


# --- merge_utils ---------------------------------------------------------------------------------

def stacked_weights(weights, tensors):
    return weights.view([-1] + [1] * (tensors.dim() - 1))


def magnitude_prune_one(tensor, density):
    mask = torch.zeros_like(tensor).reshape(-1)
    k = int(density * tensor.numel())
    top = torch.topk(tensor.abs().reshape(-1), k=k, largest=True)
    mask[top[1]] = 1
    return tensor * mask.reshape(tensor.shape)


def random_prune_one(tensor, density):
    mask = torch.bernoulli(torch.full_like(tensor, density))
    return tensor * mask / density


def majority_sign_mask(tensors):
    """PEFT's 'total' election: the sign of the sum, ties to +."""
    elected = torch.where(tensors.sum(dim=0) >= 0, 1.0, -1.0)
    return tensors.sign() == elected


def disjoint_merge(weighted, mask):
    return (weighted * mask).sum(dim=0) / torch.clamp(mask.sum(dim=0), min=1.0)


def task_arithmetic(tensors, weights):
    tensors = torch.stack(tensors)
    return (tensors * stacked_weights(weights, tensors)).sum(dim=0)


def magnitude_prune(tensors, weights, density):
    return task_arithmetic([magnitude_prune_one(t, density) for t in tensors], weights)


def ties(tensors, weights, density):
    tensors = torch.stack([magnitude_prune_one(t, density) for t in tensors])
    return disjoint_merge(tensors * stacked_weights(weights, tensors), majority_sign_mask(tensors))


def dare_linear(tensors, weights, density):
    return task_arithmetic([random_prune_one(t, density) for t in tensors], weights)


def dare_ties(tensors, weights, density):
    tensors = torch.stack([random_prune_one(t, density) for t in tensors])
    return disjoint_merge(tensors * stacked_weights(weights, tensors), majority_sign_mask(tensors))


COMBINE = {
    "svd": lambda tensors, weights, density: task_arithmetic(tensors, weights),
    "ties": ties, "dare_linear": dare_linear, "dare_ties": dare_ties, "magnitude_prune": magnitude_prune,
}


# --- add_weighted_adapter, one module ------------------------------------------------------------

def merge_module(method, factors, weights, density, rank):
    """factors: [(A (r x in), B (out x r), scale)] per adapter, float32; returns (A', B'), scale 1."""
    if method == "cat":
        return (torch.cat([w * s * a for (a, _, s), w in zip(factors, weights)], dim=0),
                torch.cat([b for _, b, _ in factors], dim=1))
    if method == "linear":
        products = [w * s for (_, _, s), w in zip(factors, weights)]
        a = sum(math.copysign(math.sqrt(abs(c)), c) * a for (a, _, _), c in zip(factors, products))
        b = sum(math.sqrt(abs(c)) * b for (_, b, _), c in zip(factors, products))
        return a, b
    if not method.endswith("svd"):
        # The A's and the B's are merged separately, each adapter weighted by sqrt(w * s).
        roots = torch.tensor([math.sqrt(w * s) for (_, _, s), w in zip(factors, weights)])
        combine = COMBINE[method]
        return (combine([a for a, _, _ in factors], roots, density),
                combine([b for _, b, _ in factors], roots, density))
    # Dense deltas s_i * B_i A_i (get_delta_weight) combined with weights w_i, then a full SVD.
    deltas = [(b @ a) * s for a, b, s in factors]
    delta = COMBINE[method.removesuffix("_svd")](deltas, torch.tensor(weights), density)
    u, singular, vh = torch.linalg.svd(delta, full_matrices=True)
    return vh[:rank], u[:, :rank] @ torch.diag(singular[:rank])


# --- timing ---------------------------------------------------------------------------------------

def timed(name, modules, runs, operation, after=lambda: None, warm_up=None):
    (warm_up or operation)()
    after()
    seconds = []
    for _ in range(runs):
        start = time.perf_counter()
        operation()
        seconds.append(time.perf_counter() - start)
        after()
    return {"name": name, "median_s": statistics.median(seconds), "min_s": min(seconds),
            "max_s": max(seconds), "runs": runs, "modules": modules}


def report(result):
    line = f"  {result['name']:<24} {result['median_s']:9.3f} s"
    if "sampled_modules" in result:
        line += f" (scaled from {result['sampled_modules']} of {result['modules']} modules)"
    log(line)
    return result


def svd_cost(factors):
    a, b, _ = factors[0]
    out_features, in_features = b.shape[0], a.shape[1]
    return out_features * in_features * min(out_features, in_features)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", default=os.path.expanduser("~/.cache/loramerge-bench"),
                        help="the Java harness's cache: style-rR, subject-rR and sdxl-unet-base.fp16 .safetensors")
    parser.add_argument("--rank", type=int, default=32)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--weights", default="0.7,0.5", help="style, subject")
    parser.add_argument("--density", type=float, default=0.5)
    parser.add_argument("--svd-every", type=int, default=10, help="time the *_svd methods on every Nth module")
    parser.add_argument("--skip-fuse", action="store_true")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    blas, optimised = loaded_blas()
    log(f"PyTorch {torch.__version__}, {torch.get_num_threads()} threads, BLAS {blas}")
    if args.check:
        sys.exit(0 if optimised else 3)
    # The build's BLAS_INFO is "generic": the library behind libblas.so.3 at run time decides.
    config = torch.__config__.show().strip()
    log("\n".join(line for line in config.splitlines() if "Build settings" not in line))
    log("  - " + ", ".join(re.findall(r"(?:BLAS|LAPACK)_INFO=\w+", config)))
    methods = [m for m in args.methods.split(",") if m]
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        parser.error(f"not a PEFT combination type: {', '.join(unknown)}")
    weights = [float(w) for w in args.weights.split(",")]

    start = time.perf_counter()
    adapters = [read_kohya(os.path.join(args.cache, f"{name}-r{args.rank}.safetensors")) for name in ("style", "subject")]
    names = list(adapters[0])
    # Per module and adapter: (A, B, scale) in float32, as PEFT holds fp16 adapters by default;
    # a conv's factors flattened to matrices (PEFT's conv delta is the same product reshaped).
    modules = [[(down.float().reshape(down.shape[0], -1), up.float().reshape(up.shape[0], -1), alpha / down.shape[0])
                for down, up, alpha in (a[n] for a in adapters)] for n in names]
    log(f"read 2 x {len(names)} modules in {time.perf_counter() - start:.1f} s")

    operations = []
    for method in methods:
        if method.endswith("svd"):
            sample = modules[:: args.svd_every]
            share = sum(svd_cost(m) for m in modules) / sum(svd_cost(m) for m in sample)
            result = timed(f"merge/{method}", len(modules), args.runs,
                           lambda: [merge_module(method, m, weights, args.density, args.rank) for m in sample],
                           warm_up=lambda: merge_module(method, sample[0], weights, args.density, args.rank))
            if len(sample) < len(modules):
                for key in ("median_s", "min_s", "max_s"):
                    result[key] *= share
                result["sampled_modules"] = len(sample)
        else:
            result = timed(f"merge/{method}", len(modules), args.runs,
                           lambda: [merge_module(method, m, weights, args.density, args.rank) for m in modules])
        operations.append(report(result))

    if not args.skip_fuse:
        start = time.perf_counter()
        base = read_touched_base(os.path.join(args.cache, "sdxl-unet-base.fp16.safetensors"), names)
        log(f"read {len(base)} fp16 base weights in {time.perf_counter() - start:.1f} s")
        # The adapter as loaded into an fp16 pipeline: fp16 factors, kept in their file shapes.
        style = [(base[n], adapters[0][n]) for n in names]

        def delta(down, up, alpha):
            # get_delta_weight on the CPU for fp16 factors: B @ A * scale in float32, cast back to fp16.
            product = up.float().reshape(up.shape[0], -1) @ down.float().reshape(down.shape[0], -1)
            return (product * (alpha / down.shape[0])).to(up.dtype)

        def fuse():
            # LoraLayer.merge: W += delta, in place in the fp16 weight.
            for weight, factors in style:
                weight += delta(*factors).view_as(weight)

        def unfuse():
            for weight, factors in style:
                weight -= delta(*factors).view_as(weight)

        operations.append(report(timed("fuse/memory", len(style), args.runs, fuse, after=unfuse)))

    json.dump({"torch": torch.__version__, "blas": blas, "threads": torch.get_num_threads(),
               "operations": operations}, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
