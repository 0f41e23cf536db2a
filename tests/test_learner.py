"""A learner's side: a workspace no command overwrites, a Lab without instructor tools, and the learner
edition of the course (no answers) whose ``bncourse grade`` runs the visible tests."""
import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from autograder import cli
from autograder.bank import solution_sources
from autograder.config import RELEASE
from autograder.samples import Sample, build, strip_markers

A, NB = "01_batchnorm_numpy", "01_batchnorm_numpy"


def test_workspace_is_filled_once_and_never_overwritten(tmp_path):
    ws = tmp_path / "ws"
    first = cli.start_workspace(ws)
    assert any("new:" in line for line in first)
    mine = ws / A / f"{NB}.ipynb"
    nb = nbformat.read(mine, as_version=4)
    nb.cells[0].source = "my own notes"
    nbformat.write(nb, mine)
    assert cli.start_workspace(ws) == []                      # nothing new, nothing touched
    assert nbformat.read(mine, as_version=4).cells[0].source == "my own notes"
    state = json.loads((ws / ".release.json").read_text())
    state[f"{A}/{NB}.ipynb"] = "an older release"
    (ws / ".release.json").write_text(json.dumps(state))
    lines = cli.start_workspace(ws)                         # a newer release comes beside, not over
    assert any("new-release" in line for line in lines)
    assert (ws / A / f"{NB}.new-release.ipynb").is_file()
    assert nbformat.read(mine, as_version=4).cells[0].source == "my own notes"


def test_workspace_is_outside_what_release_and_tests_touch():
    ignored = (cli.REPO / ".gitignore").read_text().split()
    assert "workspace/" in ignored
    assert cli.WORKSPACE.parent == cli.REPO and cli.WORKSPACE != RELEASE


def test_learners_lab_has_no_instructor_tools(tmp_path):
    env = cli.learner_lab_env(tmp_path)
    conf = Path(env["JUPYTER_CONFIG_DIR"])
    page = json.loads((conf / "labconfig" / "page_config.json").read_text())
    assert page["disabledExtensions"]["@jupyter/nbgrader:create-assignment"]
    assert page["disabledExtensions"]["@jupyter/nbgrader:formgrader"]
    server = json.loads((conf / "jupyter_server_config.json").read_text())
    assert server["ServerApp"]["jpserver_extensions"]["nbgrader.server_extensions.formgrader"] is False


@pytest.mark.slow
def test_learner_edition_has_no_answers_and_grades_visible_tests(tmp_path):
    pkg = cli.build_learner_package(tmp_path / "pkg")
    assert not (pkg / "solutions").exists() and not (pkg / "autograder" / "bank").exists()
    assert not (pkg / "tests").exists()
    text = "\n".join(p.read_text() for p in (pkg / "notebooks").rglob("*.ipynb"))
    assert "BEGIN SOLUTION" not in text and "BEGIN HIDDEN TESTS" not in text and "hidden=True" not in text
    ref = {k: strip_markers(v) for k, v in solution_sources(A).items()}
    released = nbformat.read(RELEASE / A / f"{NB}.ipynb", as_version=4)
    work = tmp_path / "anywhere" / "my copy.ipynb"                        # renamed, elsewhere
    work.parent.mkdir()
    nbformat.write(build(released, Sample("me", "", sources=ref)), work)
    env = dict(os.environ, PYTHONPATH=str(pkg))
    proc = subprocess.run([sys.executable, "-c", "from autograder.cli import main; main()", "grade", str(work),
                           "--json"], capture_output=True, text=True, env=env, cwd=work.parent, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout)
    assert out["hidden_tests"].startswith("not run here")
    assert out["total"] == out["max_total"] == 9.0                         # 3 + 3 + 3 visible points
    assert {t["grade_id"] for t in out["tests"]} == {"test_batchnorm_forward", "test_batchnorm_backward",
                                                     "test_batchnorm_backward_alt"}
