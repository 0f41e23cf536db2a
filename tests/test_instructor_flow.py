"""An instructor's class with standard nbgrader, end to end, on this course's configuration.

* the documented flow: generate, release to an exchange, three learners fetch and submit under their own
  identities, collect, plain ``nbgrader autograde``, manual grading, feedback, export;
* the course's configuration is honoured by ``bncourse autograde`` (late penalty, database URL);
* formgrader's Autograde button (its HTTP API) grades a hostile submission in the sandbox: the gradebook
  survives.
"""
import csv
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from datetime import datetime, timedelta
from pathlib import Path

import nbformat
import pytest

from autograder import grading
from autograder.bank import apply_bug, solution_sources
from autograder.bank.m01 import BUGS
from autograder.config import COURSE_ID, RELEASE, config_file_text
from autograder.samples import Sample, build, strip_markers
from autograder.samples.m01 import samples

pytestmark = pytest.mark.slow
A = "01_batchnorm_numpy"
NB = grading.notebook_name(A)
BIN = Path(sys.executable).parent
REF = {k: strip_markers(v) for k, v in solution_sources(A).items()}
HOSTILE = next(s for s in samples() if s.student == "hal")   # overwrites gradebooks it finds, kills its kernel
AUTO_MAX = 21.0


def sh(*args, cwd, env=None, check=True):
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}", **(env or {}))
    proc = subprocess.run([str(BIN / args[0]), *args[1:]], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=900)
    if check:
        assert proc.returncode == 0, f"{args}: {proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    return proc


def as_learner(user, *args, cwd):
    """nbgrader as learner ``user``: nbgrader takes the learner's id from the OS account; the test runs
    as one account, so the id is set here (a trial with real separate accounts: course/instructors.md)."""
    code = ("import sys, nbgrader.utils as u; name = sys.argv[1]; u.get_osusername = lambda: name; "
            "from nbgrader.apps.nbgraderapp import main; sys.argv = ['nbgrader'] + sys.argv[2:]; main()")
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}", HOME=str(cwd))
    proc = subprocess.run([sys.executable, "-c", code, user, *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, f"{args}: {proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"


def course(root: Path, extra: str = "") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "nbgrader_config.py").write_text(config_file_text(root, extra=extra))
    return root


def totals(root: Path, cfg=None) -> dict:
    header, rows = grading.gradebook_rows(root, A, cfg)
    return {r[0]: dict(zip(header, r)) for r in rows}


def auto(row) -> float:
    return sum(v for k, v in row.items() if k.startswith("test_") and isinstance(v, float))


def test_exchange_flow_with_three_learners(tmp_path):
    root = course(tmp_path / "course")
    sh("nbgrader", "generate_assignment", A, cwd=root)
    assert (root / "release" / A / f"{NB}.ipynb").is_file() and (root / "gradebook.db").is_file()
    sh("nbgrader", "release_assignment", A, cwd=root)
    exchange = root / "exchange"
    assert (exchange / COURSE_ID / "outbound" / A / f"{NB}.ipynb").is_file()
    work = {"ann": Sample("ann", "", sources=REF, answers={"q_batch_size": "GroupNorm, Wu & He 2018."}),
            "bob": Sample("bob", "", sources=apply_bug(REF, next(b for b in BUGS if b.name == "running_var_biased"))),
            "cat": HOSTILE}
    for user, sample in work.items():
        home = tmp_path / f"home-{user}"
        home.mkdir()
        as_learner(user, "fetch_assignment", A, "--course", COURSE_ID, f"--Exchange.root={exchange}", cwd=home)
        path = home / A / f"{NB}.ipynb"
        nbformat.write(build(nbformat.read(path, as_version=4), sample), path)
        as_learner(user, "submit", A, "--course", COURSE_ID, f"--Exchange.root={exchange}", cwd=home)
    sh("nbgrader", "collect", A, cwd=root)
    assert sorted(p.name for p in (root / "submitted").iterdir()) == ["ann", "bob", "cat"]
    db_before = (root / "gradebook.db").stat().st_size
    sh("nbgrader", "autograde", A, cwd=root)
    rows = totals(root)
    assert auto(rows["ann"]) == AUTO_MAX
    assert 0 < auto(rows["bob"]) < AUTO_MAX
    assert "flagged" in rows["cat"]["status"] and "flagged" not in rows["ann"]["status"]
    assert (root / "gradebook.db").stat().st_size >= db_before           # the hostile code never reached it
    assert all((root / "autograded" / s / A / f"{NB}.ipynb").is_file() for s in work)

    # the same submissions through bncourse: the export is identical
    sh("nbgrader", "export", "--to", str(tmp_path / "plain.csv"), cwd=root)
    twin = course(tmp_path / "twin")
    shutil.copytree(root / "submitted", twin / "submitted")
    sh("bncourse", "autograde", A, "--course-dir", str(twin), "--jobs", "2", cwd=twin)
    sh("nbgrader", "export", "--to", str(tmp_path / "bncourse.csv"), cwd=twin)
    assert (tmp_path / "plain.csv").read_text() == (tmp_path / "bncourse.csv").read_text()

    from nbgrader.api import Gradebook     # manual grading, as formgrader does it
    with Gradebook(f"sqlite:///{root / 'gradebook.db'}") as gb:
        grade = gb.find_grade("q_batch_size", NB, A, "ann")
        grade.manual_score = 2.0
        gb.db.commit()
    sh("nbgrader", "generate_feedback", A, cwd=root)
    html = (root / "feedback" / "bob" / A / f"{NB}.html").read_text()
    assert "running_var must be updated with the unbiased" in html
    sh("bncourse", "report", A, "--course-dir", str(root), cwd=root)
    page = (root / "reports" / f"{A}.html").read_text()
    assert page.count("data:image/png;base64,") == 2 and "<h2>Test cells</h2>" in page
    assert "running_var must be updated with the unbiased" in page          # bob's mistake, by name
    assert "cat" in page and "os._exit" in page                             # flagged, with the reason
    sh("nbgrader", "export", cwd=root)
    with open(root / "grades.csv") as f:
        exported = {r["student_id"]: r for r in csv.DictReader(f)}
    assert float(exported["ann"]["score"]) == AUTO_MAX + 2.0
    assert exported["cat"]["flagged"] == "True" and "os._exit" in exported["cat"]["flag_reasons"]
    assert exported["ann"]["flagged"] == "False"
    with Gradebook(f"sqlite:///{root / 'gradebook.db'}") as gb:   # graders see the rubric beside the answer
        comment = gb.find_comment("q_batch_size", NB, A, "ann").auto_comment
        assert comment.startswith("Rubric") and "With m = 2 the batch mean" in comment


def test_bncourse_honours_the_course_configuration(tmp_path):
    """A late submission under a zero-points policy, and a gradebook at a non-default URL."""
    other = tmp_path / "elsewhere" / "class.db"
    other.parent.mkdir()
    root = course(tmp_path / "course", extra=(
        f"c.CourseDirectory.db_url = 'sqlite:///{other}'\n"
        "c.LateSubmissionPlugin.penalty_method = 'zero'\n"))
    released = nbformat.read(RELEASE / A / f"{NB}.ipynb", as_version=4)
    due = datetime(2026, 11, 1, 12, 0, 0)
    for student, when in (("early", due - timedelta(hours=1)), ("late", due + timedelta(hours=1))):
        dest = root / "submitted" / student / A
        dest.mkdir(parents=True)
        nbformat.write(build(released, Sample(student, "", sources=REF)), dest / f"{NB}.ipynb")
        (dest / "timestamp.txt").write_text(when.strftime("%Y-%m-%d %H:%M:%S.%f UTC"))
    cfg = grading.course_config(root)
    grading.ensure_assignment(root, A, cfg)
    from autograder import store
    with store.open_gradebook(f"sqlite:///{other}", COURSE_ID) as gb:
        gb.update_or_create_assignment(A, duedate=due)
    sh("bncourse", "autograde", A, "--course-dir", str(root), "--jobs", "2", cwd=root)
    assert not (root / "gradebook.db").exists(), "the course's db_url must be used, not a new gradebook.db"
    rows = totals(root, cfg)
    assert rows["early"]["total"] == AUTO_MAX and "late" not in rows["early"]["status"]
    assert "late (-21)" in rows["late"]["status"], rows["late"]          # zero points: the whole score off
    with store.open_gradebook(f"sqlite:///{other}", COURSE_ID) as gb:
        assert gb.find_submission(A, "late").timestamp is not None


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_formgrader_autograde_button_grades_a_hostile_submission_in_the_sandbox(tmp_path):
    root = course(tmp_path / "course")
    released = nbformat.read(RELEASE / A / f"{NB}.ipynb", as_version=4)
    for sample in (Sample("ann", "", sources=REF), HOSTILE):
        dest = root / "submitted" / sample.student / A
        dest.mkdir(parents=True)
        nbformat.write(build(released, sample), dest / f"{NB}.ipynb")
    grading.ensure_assignment(root, A)
    port, token = _free_port(), "formgrader-test"
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}", JUPYTER_CONFIG_DIR=str(tmp_path / "jupyter"))
    server = subprocess.Popen([str(BIN / "jupyter"), "server", f"--port={port}", "--no-browser", "--allow-root",
                               f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}"],
                              cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(120):
            try:
                urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2)
                break
            except OSError:
                time.sleep(0.5)
        results = {}
        for student in ("ann", "hal"):
            req = urllib.request.Request(f"{base}/formgrader/api/submission/{A}/{student}/autograde", data=b"",
                                         method="POST", headers={"Authorization": f"token {token}"})
            results[student] = json.loads(urllib.request.urlopen(req, timeout=600).read())
        assert results["ann"]["success"], results["ann"].get("log", "")[-2000:]
    finally:
        server.terminate()
        server.wait(timeout=30)
    rows = totals(root)
    assert auto(rows["ann"]) == AUTO_MAX
    assert "flagged" in rows["hal"]["status"]
    assert auto(rows["hal"]) < AUTO_MAX
    shutil.copy(root / "gradebook.db", tmp_path / "check.db")   # still a readable SQLite gradebook


def test_interrupted_class_run_leaves_a_consistent_gradebook_and_resumes(tmp_path):
    """Ctrl-C in the middle of a class: what was graded is recorded, nothing the run started survives,
    and the next run grades only the rest (unchanged submissions are skipped unless --force)."""
    import signal
    root = course(tmp_path / "course")
    released = nbformat.read(RELEASE / A / f"{NB}.ipynb", as_version=4)
    students = [f"s{i}" for i in range(5)]
    for s in students:
        dest = root / "submitted" / s / A
        dest.mkdir(parents=True)
        nbformat.write(build(released, Sample(s, "", sources=REF)), dest / f"{NB}.ipynb")
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}")
    # an interactive shell's Ctrl-C: SIGINT at its default disposition in the child (a shell starting this
    # suite in the background would otherwise pass SIGINT on as ignored)
    proc = subprocess.Popen([str(BIN / "bncourse"), "autograde", A, "--course-dir", str(root), "--jobs", "1"],
                            cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 300
    while time.time() < deadline and len(list((root / "autograded").glob(f"*/{A}/.bncourse-graded.json"))) < 2:
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, out[-2000:]
    assert "Interrupted" in out
    done = {p.parent.parent.name for p in (root / "autograded").glob(f"*/{A}/.bncourse-graded.json")}
    rows = totals(root)
    assert 2 <= len(done) < len(students) and all(auto(rows[s]) == AUTO_MAX for s in done)
    time.sleep(1)
    leftovers = [p for p in Path("/proc").iterdir() if p.name.isdigit()
                 and b"kernel_agent.launch" in _cmdline(p) and str(root).encode() in _environ(p)]
    assert not leftovers
    again = sh("bncourse", "autograde", A, "--course-dir", str(root), "--jobs", "2", cwd=root)
    assert f"{len(done)} submission(s) unchanged since they were graded: skipped" in again.stdout
    rows = totals(root)
    assert all(auto(rows[s]) == AUTO_MAX for s in students)


def _cmdline(p):
    try:
        return (p / "cmdline").read_bytes()
    except OSError:
        return b""


def _environ(p):
    try:
        return (p / "environ").read_bytes()
    except OSError:
        return b""
