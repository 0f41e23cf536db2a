"""How fast a class is graded: bncourse against plain nbgrader (and an older engine), in one run.

A class of N complete Module 01 submissions (the reference and the bank's correct variants, in turn) is
graded in alternating rounds by

* ``nbgrader autograde`` over the whole class, as the README's standard flow runs it (serial), and
* ``bncourse autograde --jobs J``,
* optionally, with ``--baseline REV`` (a git worktree of an earlier commit with the same virtual
  environment), that commit's ``nbgrader autograde`` and ``bncourse autograde --jobs J`` with its own course
  configuration: for 761ebf8, plain nbgrader without the sandbox, the reference issue 15 measured against.

Seconds per submission are reported per round (median and range over rounds), plus the ratio of plain
nbgrader to bncourse, and bncourse's fixed overhead per submission: the grading process's wall time minus
the time spent running the notebook's cells and checks (from the autograded notebooks' metadata). Every
engine grades with the same course configuration; scores are checked equal.

    python -m bench.grading [--n 40] [--rounds 3] [--jobs 2] [--baseline 761ebf8]

writes bench/results/grading-<machine>.json and .md. Never asserted anywhere (no timed asserts).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
A = "01_batchnorm_numpy"


def machine() -> str:
    from bench.run import cpu_name
    import re
    return re.sub(r"[^a-z0-9]+", "-", f"{cpu_name()} {os.cpu_count()}c".lower()).strip("-")


def build_class(root: Path, tree: Path, n: int) -> None:
    """``n`` complete submissions under root/submitted, made with ``tree``'s own course files."""
    code = f"""
import sys
from pathlib import Path
import nbformat
sys.path.insert(0, {str(tree)!r})
from autograder.config import config_file_text
from autograder.bank import solution_sources
from autograder.bank import m01
from autograder.samples import Sample, build, strip_markers
root = Path({str(root)!r}); root.mkdir(parents=True, exist_ok=True)
(root / 'nbgrader_config.py').write_text(config_file_text(root))
released = nbformat.read(Path({str(tree)!r}) / 'notebooks' / {A!r} / {A + '.ipynb'!r}, as_version=4)
ref = {{k: strip_markers(v) for k, v in solution_sources({A!r}).items()}}
variants = [ref] + [{{**ref, **v}} for v in m01.CORRECT_VARIANTS.values()]
for i in range({n}):
    d = root / 'submitted' / f's{{i:02d}}' / {A!r}
    d.mkdir(parents=True)
    nbformat.write(build(released, Sample(f's{{i}}', '', sources=variants[i % len(variants)])), d / {A + '.ipynb'!r})
"""
    subprocess.run([sys.executable, "-c", code], check=True, env=_env(tree))


def _env(tree: Path) -> dict:
    return dict(os.environ, PYTHONPATH=str(tree), PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")


def _fresh(root: Path) -> None:
    for name in ("autograded", "feedback"):
        shutil.rmtree(root / name, ignore_errors=True)
    db = root / "gradebook.db"
    if db.exists():
        db.unlink()


def _scores(root: Path, tree: Path) -> dict:
    code = f"""
import json, sys
sys.path.insert(0, {str(tree)!r})
from autograder import grading
from pathlib import Path
h, rows = grading.gradebook_rows(Path({str(root)!r}), {A!r})
print(json.dumps({{r[0]: r[h.index('total')] for r in rows}}))
"""
    out = subprocess.run([sys.executable, "-c", code], check=True, env=_env(tree), capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _overhead(output: str) -> float | None:
    """bncourse's summary line: the grading process's time minus its notebook's cells and checks."""
    for line in output.splitlines():
        if line.startswith("Fixed overhead per submission"):
            return float(line.split("median ")[1].split(" s")[0])
    return None


def run_engine(kind: str, root: Path, tree: Path, jobs: int) -> tuple[float, str]:
    _fresh(root)
    env = _env(tree)
    if kind == "nbgrader":
        subprocess.run([sys.executable, "-c", f"import sys; sys.path.insert(0, {str(tree)!r}); "
                        f"from autograder.grading import ensure_assignment; from pathlib import Path; "
                        f"ensure_assignment(Path({str(root)!r}), {A!r})"], check=True, env=env)
        cmd = [str(Path(sys.executable).parent / "nbgrader"), "autograde", A]
    else:
        cmd = [sys.executable, "-c", "from autograder.cli import main; main()", "autograde", A, "--course-dir",
               str(root), "--jobs", str(jobs)]
    t = time.perf_counter()
    proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t
    if proc.returncode != 0:
        raise RuntimeError(f"{kind} failed: {proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return seconds, proc.stdout


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=40)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--baseline", help="a git revision whose bncourse is measured too (e.g. 761ebf8)")
    ap.add_argument("--cluster-workers", default="", help="also grade on a local Dask cluster with these numbers "
                    "of worker processes, e.g. 1,2,4 (throughput of --cluster)")
    args = ap.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="bench-grading-"))
    trees = {"current": REPO}
    if args.baseline:
        trees["baseline"] = work / "baseline"
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(trees["baseline"]), args.baseline],
                       check=True, capture_output=True)
    engines = [("nbgrader", "current"), ("bncourse", "current")]
    engines += [("nbgrader", "baseline"), ("bncourse", "baseline")] if args.baseline else []
    roots = {}
    for kind, tree in engines:
        roots[(kind, tree)] = work / f"{kind}-{tree}"
        build_class(roots[(kind, tree)], trees[tree], args.n)
    times = {f"{k}-{t}": [] for k, t in engines}
    scores, overhead = {}, []
    try:
        for r in range(args.rounds):
            order = engines if r % 2 == 0 else engines[::-1]       # alternate the order between rounds
            for kind, tree in order:
                seconds, output = run_engine(kind, roots[(kind, tree)], trees[tree], args.jobs)
                times[f"{kind}-{tree}"].append(seconds / args.n)
                scores[f"{kind}-{tree}"] = _scores(roots[(kind, tree)], trees[tree])
                if (kind, tree) == ("bncourse", "current") and _overhead(output) is not None:
                    overhead.append(_overhead(output))
                print(f"round {r + 1}: {kind} ({tree}) {seconds / args.n:.2f} s per submission", flush=True)
    finally:
        if args.baseline:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(trees["baseline"])],
                           capture_output=True)
    one_worker = None
    if args.jobs != 1:
        # the same class with one grading process: its overhead without a second process and the kernels
        # started ahead sharing the cores
        seconds, output = run_engine("bncourse", roots[("bncourse", "current")], REPO, 1)
        one_worker = {"seconds_per_submission": seconds / args.n, "overhead_median": _overhead(output)}
        print(f"one worker: bncourse (current) {seconds / args.n:.2f} s per submission", flush=True)
    cluster = {}
    for n in [int(w) for w in args.cluster_workers.split(",") if w]:
        import distributed
        root = work / f"cluster-{n}"
        build_class(root, REPO, args.n)
        with distributed.LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None,
                                      silence_logs=40) as lc:
            t = time.perf_counter()
            proc = subprocess.run([sys.executable, "-c", "from autograder.cli import main; main()", "autograde", A,
                                   "--course-dir", str(root), "--cluster", lc.scheduler_address],
                                  cwd=root, env=_env(REPO), capture_output=True, text=True)
            seconds = time.perf_counter() - t
        if proc.returncode != 0:
            raise RuntimeError(proc.stdout[-2000:] + proc.stderr[-2000:])
        cluster[n] = seconds / args.n
        print(f"cluster, {n} worker(s): {cluster[n]:.2f} s per submission", flush=True)
    shutil.rmtree(work, ignore_errors=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    result = {
        "machine": machine(), "cpus": os.cpu_count(), "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%d"), "submissions": args.n, "rounds": args.rounds, "jobs": args.jobs,
        "baseline": args.baseline, "seconds_per_submission": times, "median": med,
        "speedup_vs_plain_nbgrader": med["nbgrader-current"] / med["bncourse-current"],
        "overhead_seconds_per_submission": {"median": statistics.median(overhead) if overhead else None,
                                            "max": max(overhead) if overhead else None},
        "one_worker": one_worker,
        # the current engines must agree; an earlier commit may weigh the tests differently
        "scores_equal": len({json.dumps(s, sort_keys=True) for k, s in scores.items() if k.endswith("current")}) == 1,
    }
    if args.baseline:
        result["current_vs_baseline"] = med["bncourse-current"] / med["bncourse-baseline"]
        result["speedup_vs_baseline_plain_nbgrader"] = med["nbgrader-baseline"] / med["bncourse-current"]
    if cluster:
        result["cluster_seconds_per_submission"] = cluster
        best = min(cluster.values())
        # 2,000 learners x 7 modules, if each of W machines like this one runs as many workers as cores
        result["projection_2000x7_hours_per_machine"] = 2000 * 7 * best / 3600
    RESULTS.mkdir(exist_ok=True)
    slug = f"grading-{result['machine']}"
    (RESULTS / f"{slug}.json").write_text(json.dumps(result, indent=1))
    lines = [f"# Grading speed on {result['machine']} ({result['date']})", "",
             f"{args.n} complete Module 01 submissions, {args.rounds} alternating rounds, bncourse with --jobs {args.jobs}.",
             "", "| engine | s per submission (median) | rounds |", "|---|---|---|"]
    for k, v in times.items():
        lines.append(f"| {k} | {med[k]:.2f} | {', '.join(f'{x:.2f}' for x in v)} |")
    lines += ["", f"bncourse is {result['speedup_vs_plain_nbgrader']:.2f}x faster than serial plain nbgrader."]
    if args.baseline:
        lines.append(f"bncourse now takes {result['current_vs_baseline']:.2f}x the time of {args.baseline}'s bncourse, "
                     f"and is {result['speedup_vs_baseline_plain_nbgrader']:.2f}x faster than {args.baseline}'s serial "
                     "nbgrader autograde (no sandbox).")
    o = result["overhead_seconds_per_submission"]
    if o["median"] is not None:
        lines.append(f"Fixed overhead per submission (grading process wall time minus cells and checks): "
                     f"median {o['median']:.2f} s, max {o['max']:.2f} s.")
    if one_worker and one_worker["overhead_median"] is not None:
        lines.append(f"With one grading process (--jobs 1): {one_worker['seconds_per_submission']:.2f} s per "
                     f"submission, fixed overhead median {one_worker['overhead_median']:.2f} s (with --jobs "
                     f"{args.jobs}, the grading processes and the kernels started ahead share the cores, which "
                     "stretches each process's wall time).")
    lines.append(f"Scores identical between nbgrader and bncourse (current): {result['scores_equal']}.")
    if cluster:
        lines += ["", "| local Dask workers | s per submission |", "|---|---|"]
        lines += [f"| {n} | {v:.2f} |" for n, v in cluster.items()]
        lines.append(f"Projection: 2,000 learners x 7 modules = 14,000 submissions take "
                     f"{result['projection_2000x7_hours_per_machine']:.1f} machine-hours at the best rate above "
                     "(Module 01-sized notebooks; W such machines as workers divide it by W).")
    (RESULTS / f"{slug}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return result


if __name__ == "__main__":
    main()
