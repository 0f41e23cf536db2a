"""Benchmark BatchNorm training passes side by side: torch's own kernel, bnlib's torch backend (eager and
torch.compile routes) and bnlib's NumPy backend; peak memory; the cost of SyncBatchNorm's collectives.

One run measures every implementation on the same tensors, interleaved rep by rep (so a noisy neighbour
slows all of them alike), with the threads pinned (torch and bnlib's NumPy pool to the same count), so
ratios are comparable; absolute times are asserted nowhere. Memory traffic is counted in "units" (one pass
over the tensor, ../shared/course-design.md): a streaming training forward needs 3 units (statistics, then
read x and write y) and forward+backward 8, so effective GB/s = units * tensor bytes / time; it is compared
with the machine's measured copy bandwidth (CPU) or the card's peak (GPU).

    python -m bench.run [--device cpu|cuda] [--quick] [--reps N] [--routes eager,compile] [--no-sync]

writes bench/results/<machine>.json and bench/results/<machine>.md.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import tempfile
import time
import tracemalloc
from pathlib import Path

# torch's OpenMP workers spin after each parallel region by default and then slow down whatever runs next
# in the process (here: the NumPy backend, timed right after torch); passive waiting treats all alike
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402

import bnlib  # noqa: E402
import bnlib.nn as bnn  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
UNITS = {"forward": 3, "forward+backward": 8}
GPU_PEAK_GBS = {"H100": 3350.0, "H200": 4800.0, "A100": 2039.0}   # vendor HBM figures (SXM parts)
TORCH = "torch kernel"
EAGER, COMPILE, NUMPY = "bnlib torch", "bnlib torch compile", "bnlib numpy"

# ResNet-50's stages at batch 32 (conv2_x .. conv5_x: the narrow and the wide BN of each stage) and 1x1 planes
CPU_CASES = [("conv2 56x56 C=64", (32, 64, 56, 56)), ("conv2 56x56 C=256", (32, 256, 56, 56)),
             ("conv3 28x28 C=128", (32, 128, 28, 28)), ("conv3 28x28 C=512", (32, 512, 28, 28)),
             ("conv4 14x14 C=256", (32, 256, 14, 14)), ("conv4 14x14 C=1024", (32, 1024, 14, 14)),
             ("conv5 7x7 C=512", (32, 512, 7, 7)), ("conv5 7x7 C=2048", (32, 2048, 7, 7)),
             ("1x1 planes N=256 C=2048", (256, 2048, 1, 1)), ("1x1 planes N=262144 C=16", (262_144, 16, 1, 1))]
QUICK_CASES = [("conv4 14x14 C=256", (32, 256, 14, 14)), ("1x1 planes N=256 C=2048", (256, 2048, 1, 1))]
# >= 4x the L2 cache (50 MB on H100) so the tensors stream from HBM
GPU_CASES = [("conv2 56x56 C=256", (128, 256, 56, 56)), ("conv4 14x14 C=1024", (256, 1024, 14, 14)),
             ("1x1 planes N=8388608 C=16", (8_388_608, 16, 1, 1))]
MEMORY_CASES = ["conv2 56x56 C=64", "conv4 14x14 C=256", "1x1 planes N=262144 C=16"]


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "cpu"


def machine_slug(device: str) -> str:
    name = torch.cuda.get_device_name() if device == "cuda" else f"{cpu_name()} {os.cpu_count()}c"
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


def interleaved(fns: dict, device: str, reps: int, warmup: int = 2) -> dict:
    """Median seconds of each function, timed round-robin so that load on the machine hits all alike."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    sync(device)
    times = {k: [] for k in fns}
    for _ in range(reps):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            sync(device)
            times[name].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def copy_bandwidth(device, nbytes=256 * 2**20) -> float:
    """Measured copy bandwidth in GB/s (read + write counted)."""
    if device == "cuda":
        a = torch.empty(nbytes // 4, device="cuda")
        b = torch.empty_like(a)
        t = interleaved({"copy": lambda: b.copy_(a)}, device, 10)["copy"]
    else:
        a = np.ones(nbytes // 8)
        b = np.empty_like(a)
        t = interleaved({"copy": lambda: np.copyto(b, a)}, device, 7)["copy"]
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


# ----------------------------------------------------------------------------- the implementations
def implementations(shape, device, channels_last, routes, numpy_ok=True):
    """{impl: {"forward": fn, "forward+backward": fn}} on one shared input."""
    c = shape[1]
    x = torch.randn(shape, device=device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    dy = torch.randn_like(x)
    layer_t = torch.nn.BatchNorm2d(c).to(device)
    out = {}

    def torch_pair(layer):
        xg = x.detach().clone().requires_grad_()

        def fwd():
            with torch.no_grad():
                layer(x)

        def fwd_bwd():
            layer(xg).backward(dy)
            xg.grad = None
        return {"forward": fwd, "forward+backward": fwd_bwd}

    out[TORCH] = torch_pair(layer_t)
    for route, name in (("eager", EAGER), ("compile", COMPILE)):
        if route in routes:
            layer_b = bnn.BatchNorm2d(c).to(device)
            fns = torch_pair(layer_b)
            out[name] = {k: (lambda f=f, r=route: _with_route(r, f)) for k, f in fns.items()}
    if device == "cpu" and not channels_last and numpy_ok:
        xn, dyn = x.numpy(), dy.numpy()
        w, b = np.ones(c, np.float32), np.zeros(c, np.float32)
        rm, rv = np.zeros(c, np.float32), np.ones(c, np.float32)

        def np_fwd():
            return bnlib.batch_norm.batch_norm_forward(xn, weight=w, bias=b, running_mean=rm, running_var=rv,
                                                       training=True)
        def np_fwd_bwd():            # y stays alive through the backward pass, as it does in autograd
            y, saved = np_fwd()
            return y, bnlib.batch_norm_backward(dyn, saved)
        out[NUMPY] = {"forward": np_fwd, "forward+backward": np_fwd_bwd}
    return out, x, layer_t


def _with_route(route, fn):
    old = bnlib.torch_route()
    bnlib.set_torch_route(route)
    try:
        return fn()
    finally:
        bnlib.set_torch_route(old)


def speed_rows(device, cases, routes, reps):
    rows = []
    for label, shape in cases:
        for channels_last in (False, True):
            if channels_last and shape[2] * shape[3] == 1:
                continue                          # a 1x1 plane is the same memory in both formats
            impls, x, layer_t = implementations(shape, device, channels_last, routes)
            kernel = torch_kernel(layer_t, x)
            nbytes = x.numel() * x.element_size()
            for phase in ("forward", "forward+backward"):
                t = interleaved({k: v[phase] for k, v in impls.items()}, device, reps)
                for impl, sec in t.items():
                    rows.append(dict(case=label, shape=list(shape), format="channels_last" if channels_last else "NCHW",
                                     dtype="float32", impl=impl, phase=phase, median_ms=1e3 * sec,
                                     ratio_to_torch=sec / t[TORCH], gbs=UNITS[phase] * nbytes / sec / 1e9,
                                     mbytes=nbytes / 2**20, torch_backend=kernel if impl == TORCH else "bnlib"))
            del impls, x, layer_t
    return rows


# ----------------------------------------------------------------------------- memory
def _torch_peak(fn) -> int:
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = sorted((e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"),
                    key=lambda e: e.start_ns())
    cur = peak = 0
    for e in events:
        cur += e.nbytes()
        peak = max(peak, cur)
    return peak


def _numpy_peak(fn) -> int:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def memory_rows(cases, routes):
    """Peak bytes allocated by a forward+backward beyond the input and dy, as a multiple of the input's
    size; 'extra' leaves out the output y and the gradient dx (2x, which every implementation returns)."""
    rows = []
    for label, shape in cases:
        impls, x, _ = implementations(shape, "cpu", False, routes)
        nbytes = x.numel() * x.element_size()
        for impl, fns in impls.items():
            fn = fns["forward+backward"]
            fn()                                       # warm (compiles, pools)
            peak = _numpy_peak(fn) if impl == NUMPY else _torch_peak(fn)
            rows.append(dict(case=label, shape=list(shape), impl=impl, peak_x=peak / nbytes,
                             extra_x=peak / nbytes - 2.0))
    return rows


# ----------------------------------------------------------------------------- SyncBatchNorm
SYNC_CASES = [("conv4 14x14 C=256", (16, 256, 14, 14)), ("conv2 56x56 C=64", (16, 64, 56, 56)),
              ("1x1 planes C=2048", (128, 2048, 1, 1))]


def _sync_worker(rank, init_file, out_file, reps):
    import torch.distributed as dist
    torch.set_num_threads(1)
    bnlib.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        rows = []
        for label, shape in SYNC_CASES:
            c = shape[1]
            x = torch.randn(shape, requires_grad=True)
            dy = torch.randn(shape)
            local, synced = bnn.BatchNorm2d(c), bnn.SyncBatchNorm(c)
            gather = [torch.empty(2 * c + 1, dtype=torch.float64) for _ in range(2)]
            vec = torch.zeros(2 * c + 1, dtype=torch.float64)

            def step(layer):
                layer(x).backward(dy)
                x.grad = None

            def collectives():
                dist.all_gather(gather, vec)
                dist.all_reduce(vec)

            fns = {"local": lambda: step(local), "sync": lambda: step(synced), "collectives": collectives}
            for fn in fns.values():
                fn()
            dist.barrier()
            times = {k: [] for k in fns}
            for _ in range(reps):
                for k, fn in fns.items():
                    dist.barrier()
                    t0 = time.perf_counter()
                    fn()
                    times[k].append(time.perf_counter() - t0)
            med = {k: statistics.median(v) for k, v in times.items()}
            rows.append(dict(case=label, per_process_shape=list(shape), processes=2,
                             local_ms=1e3 * med["local"], sync_ms=1e3 * med["sync"],
                             collectives_us=1e6 * med["collectives"], bytes_exchanged=2 * 8 * (2 * c + 1),
                             overhead=med["sync"] / med["local"] - 1))
        if rank == 0:
            Path(out_file).write_text(json.dumps(rows))
    finally:
        dist.destroy_process_group()


def sync_rows(reps):
    import torch.multiprocessing as mp
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "sync.json"
        mp.spawn(_sync_worker, args=(str(Path(tmp) / "init"), str(out), reps), nprocs=2, join=True)
        return json.loads(out.read_text())


# ----------------------------------------------------------------------------- report
def targets(rows, memory):
    """Which of issue 14's targets this run meets (worst case of each)."""
    def worst(impl, pred=lambda r: True):
        rs = [r["ratio_to_torch"] for r in rows if r["impl"] == impl and pred(r)]
        return max(rs) if rs else None
    big = lambda r: r["shape"][2] * r["shape"][3] >= 28 * 28   # noqa: E731
    out = []
    for impl in (EAGER, COMPILE):
        w = worst(impl)
        if w is not None:
            out.append((f"{impl}: within 1.2x of torch's kernel everywhere", w, w <= 1.2))
    w_big, w_all = worst(NUMPY, big), worst(NUMPY)
    if w_big is not None:
        out.append((f"{NUMPY}: within 1.0x on planes >= 28x28", w_big, w_big <= 1.0))
    if w_all is not None:
        out.append((f"{NUMPY}: within 1.5x everywhere", w_all, w_all <= 1.5))
    for impl in sorted({m["impl"] for m in memory} - {TORCH}):
        w = max(m["extra_x"] for m in memory if m["impl"] == impl)
        out.append((f"{impl}: peak extra memory of forward+backward <= 2x the input", w, w <= 2.0))
    return out


def markdown(meta, rows, memory, sync_table, goals) -> str:
    ref = meta["copy_gbs"] if meta["device"] == "cpu" else meta.get("peak_gbs")
    ref_name = "measured copy bandwidth" if meta["device"] == "cpu" else "card peak"
    impls = [i for i in (TORCH, EAGER, COMPILE, NUMPY) if any(r["impl"] == i for r in rows)]
    lines = [f"# BatchNorm benchmark: {meta['machine']}", "",
             f"- device: {meta['device_name']}; torch {meta['torch']}, numpy {meta['numpy']}; threads pinned: torch "
             f"{meta['torch_threads']}, bnlib NumPy pool {meta['bnlib_threads']}, OMP_WAIT_POLICY="
             f"{meta.get('omp_wait_policy')}; {meta['date']}",
             f"- measured copy bandwidth: {meta['copy_gbs']:.1f} GB/s"
             + (f"; card peak {meta['peak_gbs']:.0f} GB/s" if meta.get("peak_gbs") else ""),
             f"- median of {meta['reps']} interleaved runs, float32, training mode. Ratio = time / torch kernel's time "
             f"in the same run (< 1 is faster). Effective GB/s = units x tensor bytes / time, 3 units for the forward "
             f"and 8 for forward+backward; % is of the {ref_name}.",
             "- NumPy has no channels_last: its rows are NCHW only. The compile route's times exclude compilation.",
             "", "## Time", "",
             "| case | format | phase | " + " | ".join(f"{i} ms" for i in impls) + " | "
             + " | ".join(f"{i} ratio" for i in impls[1:]) + " | " + " | ".join(f"{i} %" for i in impls) + " |",
             "|---|---|---|" + "---:|" * (3 * len(impls) - 1)]
    keyed = {(r["case"], r["format"], r["phase"], r["impl"]): r for r in rows}
    for case, fmt, phase in dict.fromkeys((r["case"], r["format"], r["phase"]) for r in rows):
        get = lambda i: keyed.get((case, fmt, phase, i))   # noqa: E731
        ms = [f"{get(i)['median_ms']:.2f}" if get(i) else "" for i in impls]
        ratios = [f"{get(i)['ratio_to_torch']:.2f}" if get(i) else "" for i in impls[1:]]
        pct = [f"{100 * get(i)['gbs'] / ref:.0f}%" if get(i) and ref else "" for i in impls]
        lines.append(f"| {case} | {fmt} | {phase} | " + " | ".join(ms + ratios + pct) + " |")
    lines += ["", f"torch kernel: {', '.join(sorted({r['torch_backend'] for r in rows if r['impl'] == TORCH}))}", ""]
    if memory:
        lines += ["## Peak memory of a forward+backward", "",
                  "Bytes allocated beyond x and dy, as a multiple of x's size; 'extra' leaves out y and dx (2x).", "",
                  "| case | implementation | peak | extra |", "|---|---|---:|---:|"]
        lines += [f"| {m['case']} | {m['impl']} | {m['peak_x']:.2f}x | {m['extra_x']:.2f}x |" for m in memory]
        lines.append("")
    if sync_table:
        lines += ["## SyncBatchNorm: the cost of the collectives (2 gloo processes, 1 thread each)", "",
                  "| case | per-process shape | local BN fwd+bwd ms | SyncBN fwd+bwd ms | overhead | all_gather + "
                  "all_reduce alone | bytes sent per process |", "|---|---|---:|---:|---:|---:|---:|"]
        lines += [f"| {s['case']} | {'x'.join(map(str, s['per_process_shape']))} | {s['local_ms']:.2f} | "
                  f"{s['sync_ms']:.2f} | {100 * s['overhead']:+.0f}% | {s['collectives_us']:.0f} us | "
                  f"{s['bytes_exchanged']} |" for s in sync_table]
        lines.append("")
    if goals:
        lines += ["## Targets (issue 14)", "", "| target | worst in this run | met |", "|---|---:|---|"]
        lines += [f"| {name} | {value:.2f} | {'yes' if ok else 'no'} |" for name, value, ok in goals]
    return "\n".join(lines) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--quick", action="store_true", help="two shapes, eager route, no memory or sync (smoke test)")
    ap.add_argument("--reps", type=int, default=9)
    ap.add_argument("--routes", default="eager,compile", help="bnlib torch routes to time: eager, compile")
    ap.add_argument("--no-sync", action="store_true", help="skip the SyncBatchNorm measurement")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    threads = os.cpu_count() or 1
    torch.set_num_threads(threads)
    bnlib.set_num_threads(threads)
    routes = ["eager"] if args.quick else args.routes.split(",")
    if args.device == "cuda":
        cases = GPU_CASES
    else:
        cases = QUICK_CASES if args.quick else CPU_CASES
    rows = speed_rows(args.device, cases, routes, args.reps)
    memory = [] if args.quick or args.device != "cpu" else memory_rows(
        [c for c in cases if c[0] in MEMORY_CASES], routes)
    sync_table = [] if args.quick or args.no_sync or args.device != "cpu" else sync_rows(args.reps)
    name = torch.cuda.get_device_name() if args.device == "cuda" else cpu_name()
    meta = dict(machine=machine_slug(args.device), device=args.device, device_name=name,
                torch=torch.__version__, numpy=np.__version__, torch_threads=torch.get_num_threads(),
                bnlib_threads=threads, omp_wait_policy=os.environ.get("OMP_WAIT_POLICY"),
                date=time.strftime("%Y-%m-%d"), reps=args.reps,
                copy_gbs=copy_bandwidth(args.device),
                peak_gbs=next((v for k, v in GPU_PEAK_GBS.items() if k in name), None) if args.device == "cuda" else None)
    goals = targets(rows, memory)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = meta["machine"] + ("-quick" if args.quick else "")
    (args.out / f"{stem}.json").write_text(json.dumps(
        dict(meta=meta, rows=rows, memory=memory, sync=sync_table,
             targets=[dict(target=n, worst=v, met=ok) for n, v, ok in goals]), indent=1) + "\n")
    text = markdown(meta, rows, memory, sync_table, goals)
    (args.out / f"{stem}.md").write_text(text)
    print(text)
    print(f"wrote {args.out / stem}.json and .md")


if __name__ == "__main__":
    main()
