"""The full Pendulum experiment of Module 06, whose committed results the notebook plots.

    .venv/bin/python -m cases.rl_runs                 # 5 variants x 5 seeds x 6,000 steps, 2 processes
    .venv/bin/python -m cases.rl_runs --seeds 0 1 2 3 4 5 6 7 --steps 10000 --jobs 1 --out /tmp/runs.json

Every variant of :data:`cases.rl.VARIANTS` is trained with the reference functions of :mod:`cases.rl` (one
torch thread per process, seeds fixed), and the evaluation returns (deterministic policy, eval mode, mean
of ``eval_episodes`` episodes) are written with the machine, the software versions, the configuration and
the wall-clock time to :data:`RESULTS` (``cases/results/rl_pendulum.json``). The notebook reads that file;
re-running this script regenerates it (the numbers then change only with the machine's floating-point
behaviour, not between runs on one machine).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

RESULTS = Path(__file__).parent / "results" / "rl_pendulum.json"
SEEDS = (0, 1, 2, 3, 4)


def full_config():
    """The configuration of the stored runs: :class:`cases.rl.Config` with 6,000 steps,
    evaluated every 500 steps on 3 episodes."""
    from .rl import Config
    return Config(steps=6000, eval_every=500, eval_episodes=3)


def _one(job):
    name, seed, config = job
    from .rl import Config, train_agent
    from .runtime import limit_threads
    limit_threads(1)
    run = train_agent(name, seed, Config(**config))
    return {"variant": name, "seed": seed, "eval_steps": run.eval_steps, "eval_returns": run.eval_returns,
            "train_returns": run.train_returns, "seconds": round(run.seconds, 1), "diverged": run.diverged}


def run_all(seeds=SEEDS, config=None, variants=None, jobs: int = 2, show_progress: bool = True) -> dict:
    """Train every variant for every seed (``jobs`` processes) and return the results file's content."""
    import torch

    from .report import _machine
    from .rl import VARIANTS
    from .runtime import progress
    config = config or full_config()
    names = list(variants or VARIANTS)
    work = [(n, s, dataclasses.asdict(config)) for n in names for s in seeds]
    start = time.perf_counter()
    if jobs > 1:
        with ProcessPoolExecutor(jobs) as pool:
            it = pool.map(_one, work)
            runs = list(progress(it, desc="runs", total=len(work)) if show_progress else it)
    else:
        runs = [_one(w) for w in (progress(work, desc="runs") if show_progress else work)]
    import gymnasium
    return {"experiment": "Pendulum-v1: SAC, naive BN with a target network, CrossQ (BN, Batch Renorm), no BN "
                          "and no target network",
            "command": "python -m cases.rl_runs", "config": dataclasses.asdict(config), "seeds": list(seeds),
            "runs": runs,
            "machine": {"cpu": _machine(), "processes": jobs, "threads_per_process": 1,
                        "torch": torch.__version__, "gymnasium": gymnasium.__version__,
                        "python": platform.python_version(), "date": time.strftime("%Y-%m-%d"),
                        "seconds": round(time.perf_counter() - start, 1)}}


def load(path: Path = RESULTS) -> dict:
    """The stored results (see :func:`run_all`)."""
    return json.loads(Path(path).read_text())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS))
    parser.add_argument("--steps", type=int, default=None, help="environment steps per run (default 6000)")
    parser.add_argument("--jobs", type=int, default=2, help="processes (each on one thread)")
    parser.add_argument("--variants", nargs="+", default=None, help="names from cases.rl.VARIANTS (default: all)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    config = full_config()
    if args.steps:
        config = dataclasses.replace(config, steps=args.steps)
    data = run_all(args.seeds, config, args.variants, args.jobs)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(data, indent=1) + "\n")
    print(f"{len(data['runs'])} runs in {data['machine']['seconds']:.0f} s on {data['machine']['cpu']} -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
