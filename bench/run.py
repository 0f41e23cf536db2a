"""Benchmark BatchNorm forward and forward+backward: bnlib (NumPy), bnlib (torch), torch's own kernel.

One run measures every implementation on the same tensors, so ratios are comparable; absolute times are
not asserted anywhere. Memory traffic is counted in "units" (one pass over the tensor, see
../shared/course-design.md): a streaming training forward needs 3 units (statistics, then read x and write
y) and a streaming backward 5, so effective GB/s = units * tensor bytes / time. It is compared with the
machine's measured copy bandwidth (CPU) or the card's peak (GPU).

    python -m bench.run [--device cpu|cuda] [--quick]

writes bench/results/<machine>.json and bench/results/<machine>.md.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import time
from pathlib import Path

import numpy as np
import torch

import bnlib
import bnlib.nn as bnn

RESULTS = Path(__file__).resolve().parent / "results"
UNITS = {"forward": 3, "forward+backward": 8}
GPU_PEAK_GBS = {"H100": 3350.0, "H200": 4800.0, "A100": 2039.0}   # vendor HBM figures (SXM parts)


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "cpu"


def machine_slug(device: str) -> str:
    if device == "cuda":
        name = torch.cuda.get_device_name()
    else:
        name = f"{cpu_name()} {os.cpu_count()}c"
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


def median_time(fn, device, reps, warmup=2) -> float:
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def copy_bandwidth(device, nbytes=256 * 2**20) -> float:
    """Measured copy bandwidth in GB/s (read + write counted)."""
    if device == "cuda":
        a = torch.empty(nbytes // 4, device="cuda")
        b = torch.empty_like(a)
        t = median_time(lambda: b.copy_(a), device, 10)
    else:
        a = np.ones(nbytes // 8)
        b = np.empty_like(a)
        t = median_time(lambda: np.copyto(b, a), device, 7)
    return 2 * nbytes / t / 1e9


def torch_kernel(layer, x) -> str:
    """Which ATen/cuDNN batch-norm kernel torch ran, read from the profiler."""
    from torch.profiler import ProfilerActivity, profile
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if x.is_cuda else [])
    with profile(activities=acts) as prof:
        layer(x)
    names = [e.key for e in prof.key_averages()]
    for pat in ("cudnn_batch_norm", "miopen_batch_norm", "native_batch_norm", "_batch_norm_impl_index"):
        hits = [n for n in names if pat in n]
        if hits:
            return hits[0]
    return "unknown"


def cases(device: str, quick: bool):
    if device == "cuda":
        # >= 4x the L2 cache (50 MB on H100) so the tensors stream from HBM
        cases_ = [("resnet conv2 NCHW", (128, 256, 56, 56), False), ("resnet conv4 NCHW", (256, 1024, 14, 14), False),
                  ("BatchNorm1d large-N small-C", (8_388_608, 16), False),
                  ("resnet conv2 channels_last", (128, 256, 56, 56), True)]
    else:
        cases_ = [("resnet conv2 NCHW", (32, 64, 56, 56), False), ("resnet conv4 NCHW", (32, 256, 14, 14), False),
                  ("resnet conv5 NCHW", (32, 512, 7, 7), False),
                  ("BatchNorm1d large-N small-C", (262_144, 16), False),
                  ("resnet conv2 channels_last", (32, 64, 56, 56), True)]
    return cases_[:2] if quick else cases_


def run(device: str, quick: bool, reps: int):
    torch.manual_seed(0)
    rows = []
    for label, shape, channels_last in cases(device, quick):
        c = shape[1]
        x = torch.randn(shape, device=device)
        if channels_last:
            x = x.to(memory_format=torch.channels_last)
        dy = torch.randn_like(x)
        nbytes = x.numel() * x.element_size()
        layer_t = torch.nn.BatchNorm2d(c) if len(shape) == 4 else torch.nn.BatchNorm1d(c)
        layer_b = bnn.BatchNorm2d(c) if len(shape) == 4 else bnn.BatchNorm1d(c)
        layer_t.to(device), layer_b.to(device)
        impls = {}
        for name, layer in (("torch kernel", layer_t), ("bnlib torch", layer_b)):
            xg = x.detach().clone().requires_grad_()
            impls[name] = {
                "forward": lambda layer=layer: layer(x),
                "forward+backward": lambda layer=layer, xg=xg: layer(xg).backward(dy),
            }
        if device == "cpu" and not channels_last:
            xn, dyn = x.numpy(), dy.numpy()
            w, b = np.ones(c, np.float32), np.zeros(c, np.float32)
            rm, rv = np.zeros(c, np.float32), np.ones(c, np.float32)
            fwd = lambda: bnlib.batch_norm_forward(xn, w, b, rm, rv, True)  # noqa: E731
            impls["bnlib numpy"] = {
                "forward": fwd,
                "forward+backward": lambda: bnlib.batch_norm_backward(dyn, fwd()[1]),
            }
        kernel = torch_kernel(layer_t, x)
        for impl, fns in impls.items():
            for phase, fn in fns.items():
                t = median_time(fn, device, reps)
                rows.append(dict(case=label, shape=list(shape), channels_last=channels_last, dtype="float32",
                                 impl=impl, phase=phase, median_ms=1e3 * t,
                                 gbs=UNITS[phase] * nbytes / t / 1e9, mbytes=nbytes / 2**20,
                                 torch_backend=kernel if impl == "torch kernel" else "bnlib"))
    base = {(r["case"], r["phase"]): r["median_ms"] for r in rows if r["impl"] == "torch kernel"}
    for r in rows:
        r["ratio_to_torch"] = r["median_ms"] / base[(r["case"], r["phase"])]
    return rows


def markdown(meta, rows) -> str:
    ref = meta["copy_gbs"] if meta["device"] == "cpu" else meta.get("peak_gbs")
    ref_name = "measured copy bandwidth" if meta["device"] == "cpu" else "card peak"
    lines = [f"# BatchNorm benchmark: {meta['machine']}", "",
             f"- device: {meta['device_name']}; torch {meta['torch']}, numpy {meta['numpy']}, "
             f"torch threads {meta['torch_threads']}; {meta['date']}",
             f"- measured copy bandwidth: {meta['copy_gbs']:.1f} GB/s"
             + (f"; card peak {meta['peak_gbs']:.0f} GB/s" if meta.get("peak_gbs") else ""),
             f"- median of {meta['reps']} runs, float32, training mode. Effective GB/s = units x tensor bytes / "
             f"time, with 3 units for the forward and 8 for forward+backward; % is of the {ref_name}.",
             f"- ratio: time / torch kernel's time in the same run (< 1 is faster than torch).", "",
             "| case | shape | phase | implementation | median ms | ratio to torch | GB/s | % | torch backend |",
             "|---|---|---|---|---:|---:|---:|---:|---|"]
    for r in rows:
        pct = f"{100 * r['gbs'] / ref:.0f}%" if ref else ""
        lines.append(f"| {r['case']} | {'x'.join(map(str, r['shape']))} | {r['phase']} | {r['impl']} | "
                     f"{r['median_ms']:.2f} | {r['ratio_to_torch']:.2f} | {r['gbs']:.1f} | {pct} | "
                     f"{r['torch_backend']} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--quick", action="store_true", help="two shapes only (for a smoke test)")
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    torch.set_num_threads(os.cpu_count() or 1)
    rows = run(args.device, args.quick, args.reps)
    name = torch.cuda.get_device_name() if args.device == "cuda" else cpu_name()
    meta = dict(machine=machine_slug(args.device), device=args.device, device_name=name,
                torch=torch.__version__, numpy=np.__version__, torch_threads=torch.get_num_threads(),
                date=time.strftime("%Y-%m-%d"), reps=args.reps, copy_gbs=copy_bandwidth(args.device),
                peak_gbs=next((v for k, v in GPU_PEAK_GBS.items() if k in name), None) if args.device == "cuda" else None)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = meta["machine"] + ("-quick" if args.quick else "")
    (args.out / f"{stem}.json").write_text(json.dumps(dict(meta=meta, rows=rows), indent=1) + "\n")
    (args.out / f"{stem}.md").write_text(markdown(meta, rows))
    print(markdown(meta, rows))
    print(f"wrote {args.out / stem}.json and .md")


if __name__ == "__main__":
    main()
