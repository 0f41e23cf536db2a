"""Grading a class on a Dask cluster (``bncourse autograde --cluster``), here a local one with two worker
processes: the same grades as a local run, merged by the one parent."""
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from autograder import grading
from autograder.bank import apply_bug, solution_sources
from autograder.bank.m01 import BUGS
from autograder.config import RELEASE, config_file_text
from autograder.samples import Sample, build, strip_markers

pytestmark = pytest.mark.slow
A = "01_batchnorm_numpy"
BIN = Path(sys.executable).parent


def test_class_graded_on_a_local_dask_cluster(tmp_path):
    distributed = pytest.importorskip("distributed", reason="distributed is not installed (pip install -e '.[dev]')")
    root = tmp_path / "course"
    root.mkdir()
    (root / "nbgrader_config.py").write_text(config_file_text(root))
    released = nbformat.read(RELEASE / A / f"{A}.ipynb", as_version=4)
    ref = {k: strip_markers(v) for k, v in solution_sources(A).items()}
    bug = next(b for b in BUGS if b.name == "dx_missing_mean_term")
    learners = {"ca": ref, "cb": apply_bug(ref, bug), "cc": ref}
    for student, sources in learners.items():
        dest = root / "submitted" / student / A
        dest.mkdir(parents=True)
        nbformat.write(build(released, Sample(student, "", sources=sources)), dest / f"{A}.ipynb")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                  silence_logs=40) as cluster:
        env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}")
        proc = subprocess.run([str(BIN / "bncourse"), "autograde", A, "--course-dir", str(root), "--cluster",
                               cluster.scheduler_address], cwd=root, env=env, capture_output=True, text=True,
                              timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    header, rows = grading.gradebook_rows(root, A)
    table = {r[0]: dict(zip(header, r)) for r in rows}
    auto = {s: sum(v for k, v in row.items() if k.startswith("test_") and isinstance(v, float))
            for s, row in table.items()}
    assert auto == {"ca": 21.0, "cb": 14.0, "cc": 21.0}
    assert all((root / "autograded" / s / A / f"{A}.ipynb").is_file() for s in learners)
    assert "sandboxed (bubblewrap" in proc.stdout
