"""A class gradebook in PostgreSQL: nbgrader's ``CourseDirectory.db_url`` (``bncourse autograde --db-url``),
against a real server started by this test, with two grading runs merging into it at the same time."""
import glob
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
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
PG_BIN = sorted(glob.glob("/usr/lib/postgresql/*/bin"))


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_postgres(*cmd):
    if os.geteuid() == 0:   # the server refuses to run as root
        cmd = ("runuser", "-u", "postgres", "--") + cmd
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def postgres():
    if not PG_BIN:
        pytest.skip("PostgreSQL server binaries are not installed (Debian/Ubuntu: apt-get install postgresql; "
                    "`make` installs them as root)")
    pytest.importorskip("psycopg2", reason="psycopg2 is not installed (pip install -e '.[dev]')")
    base = Path(tempfile.mkdtemp(prefix="bn-pg-"))
    base.chmod(0o755)
    data, sock = base / "data", base / "sock"
    sock.mkdir()
    if os.geteuid() == 0:
        shutil.chown(base, "postgres", "postgres")
        shutil.chown(sock, "postgres", "postgres")
    port = _free_port()
    bin_ = PG_BIN[-1]
    init = _as_postgres(f"{bin_}/initdb", "-D", str(data), "-A", "trust", "-U", "postgres")
    assert init.returncode == 0, init.stderr
    start = _as_postgres(f"{bin_}/pg_ctl", "-D", str(data), "-w", "-l", str(base / "log"), "-o",
                         f"-k {sock} -p {port} -c listen_addresses=''", "start")
    assert start.returncode == 0, start.stderr + (base / "log").read_text()
    try:
        created = _as_postgres(f"{bin_}/createdb", "-h", str(sock), "-p", str(port), "-U", "postgres", "gradebook")
        assert created.returncode == 0, created.stderr
        yield f"postgresql+psycopg2://postgres@/gradebook?host={sock}&port={port}"
    finally:
        _as_postgres(f"{bin_}/pg_ctl", "-D", str(data), "-m", "immediate", "stop")
        shutil.rmtree(base, ignore_errors=True)


def test_class_gradebook_in_postgres_with_concurrent_merges(postgres, tmp_path):
    root = tmp_path / "course"
    root.mkdir()
    (root / "nbgrader_config.py").write_text(config_file_text(root, extra=f"c.CourseDirectory.db_url = {postgres!r}\n"))
    released = nbformat.read(RELEASE / A / f"{A}.ipynb", as_version=4)
    ref = {k: strip_markers(v) for k, v in solution_sources(A).items()}
    bug = next(b for b in BUGS if b.name == "dx_missing_mean_term")
    learners = {"pa": ref, "pb": apply_bug(ref, bug), "pc": ref, "pd": apply_bug(ref, bug)}
    for student, sources in learners.items():
        dest = root / "submitted" / student / A
        dest.mkdir(parents=True)
        nbformat.write(build(released, Sample(student, "", sources=sources)), dest / f"{A}.ipynb")
    cfg = grading.course_config(root)
    grading.ensure_assignment(root, A, cfg)               # nbgrader creates the gradebook's tables there
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}")
    outputs = {}

    def run(students):
        args = [str(BIN / "bncourse"), "autograde", A, "--course-dir", str(root), "--jobs", "1"]
        for s in students:
            args += ["--student", s]
        outputs[students] = subprocess.run(args, cwd=root, env=env, capture_output=True, text=True, timeout=900)
    threads = [threading.Thread(target=run, args=(group,)) for group in (("pa", "pb"), ("pc", "pd"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for group, proc in outputs.items():
        assert proc.returncode == 0, f"{group}: {proc.stdout[-2000:]}{proc.stderr[-2000:]}"
    assert not (root / "gradebook.db").exists()
    header, rows = grading.gradebook_rows(root, A, cfg)
    table = {r[0]: dict(zip(header, r)) for r in rows}
    assert set(table) == set(learners)
    auto = {s: sum(v for k, v in row.items() if k.startswith("test_") and isinstance(v, float))
            for s, row in table.items()}
    assert auto["pa"] == auto["pc"] == 21.0 and auto["pb"] == auto["pd"] < 21.0
