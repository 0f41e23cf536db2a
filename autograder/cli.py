"""``bncourse``: release the assignments, self-grade one notebook, autograde a class, run the demo."""
from __future__ import annotations

import filecmp
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import click
import nbformat

from . import grading
from .config import CELL_TIMEOUT, RELEASE, REPO, SOLUTIONS

DEFAULT_JOBS = max(1, min(4, os.cpu_count() or 1))


def _table(header, rows) -> str:
    def fmt(v):
        if isinstance(v, float):
            return f"{v:g}"
        return str(v)
    cells = [[fmt(v) for v in row] for row in [header] + rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _short_header(header):
    return [h.replace("test_", "").replace("batchnorm_", "bn_") for h in header]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main():
    """Deep Dive into Batch Normalization: course tools built on nbgrader."""


# ----------------------------------------------------------------------------- release
@main.command()
@click.option("--check", is_flag=True, help="Only report whether notebooks/ is up to date (exit 1 if not).")
@click.argument("assignments", nargs=-1)
def release(check, assignments):
    """Regenerate the learners' notebooks/ from solutions/ with nbgrader generate_assignment."""
    names = list(assignments) or grading.assignments()
    stale = []
    with tempfile.TemporaryDirectory(prefix="bncourse-release-") as tmp:
        tmp = Path(tmp)
        for a in names:
            grading.generate(a, tmp, tmp / "release")
            new, old = tmp / "release" / a, RELEASE / a
            new_files = sorted(p.relative_to(new) for p in new.rglob("*") if p.is_file())
            old_files = sorted(p.relative_to(old) for p in old.rglob("*") if p.is_file()) if old.exists() else []
            differs = new_files != old_files or any(not filecmp.cmp(new / f, old / f, shallow=False)
                                                   for f in new_files)
            if differs:
                stale.append(a)
            if not check and differs:
                if old.exists():
                    shutil.rmtree(old)
                shutil.copytree(new, old)
                for f in new_files:
                    (old / f).chmod(0o644)
                click.echo(f"released {a} -> notebooks/{a}/")
            elif not check:
                click.echo(f"notebooks/{a}/ is up to date")
    if check:
        if stale:
            click.echo("notebooks/ is out of date for: " + ", ".join(stale)
                       + ". Run `bncourse release` (never edit notebooks/ by hand).", err=True)
            sys.exit(1)
        click.echo("notebooks/ matches solutions/ for: " + ", ".join(names))


# ----------------------------------------------------------------------------- grade one notebook
def _model_answers(assignment: str) -> dict[str, str]:
    """grade_id -> the instructor's answer to each written question (solutions/ only)."""
    source = SOLUTIONS / assignment / f"{grading.notebook_name(assignment)}.ipynb"
    nb = nbformat.read(source, as_version=4)
    return {c.metadata["nbgrader"]["grade_id"]: c.source.strip() for c in nb.cells if c.cell_type == "markdown"
            and c.metadata.get("nbgrader", {}).get("grade") and c.metadata["nbgrader"].get("solution")}


def _find_assignment(path: Path, assignment: str | None) -> str:
    """The assignment a notebook belongs to: named, else told by its cells' nbgrader grade_ids (so a renamed
    copy works), else by its file name."""
    if assignment:
        return assignment
    try:
        nb = nbformat.read(path, as_version=4)
        ids = {c.metadata.get("nbgrader", {}).get("grade_id") for c in nb.cells} - {None}
    except Exception:  # noqa: BLE001 - an unreadable notebook: try its name
        ids = set()
    best = None
    for a in grading.assignments():
        source = nbformat.read(SOLUTIONS / a / f"{grading.notebook_name(a)}.ipynb", as_version=4)
        graded = {c.metadata["nbgrader"]["grade_id"] for c in source.cells
                  if c.metadata.get("nbgrader", {}).get("solution")}
        if graded and graded <= ids:
            best = a
    if best:
        return best
    for a in grading.assignments():
        if grading.notebook_name(a) == path.stem:
            return a
    raise click.UsageError(f"cannot tell which assignment {path.name} belongs to; pass --assignment "
                           f"(one of {', '.join(grading.assignments())})")


@main.command()
@click.argument("notebook", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--assignment", help="Assignment id (default: the one whose notebook has this file's name).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of a table.")
@click.option("--timeout", default=CELL_TIMEOUT, show_default=True, help="Seconds one cell may run.")
@click.option("--sandbox", type=click.Choice(["auto", "bwrap", "none"]), default="auto", show_default=True,
              help="Where your code runs while graded ('auto': bubblewrap when this machine has it).")
def grade(notebook, assignment, as_json, timeout, sandbox):
    """Autograde one filled-in NOTEBOOK through nbgrader (hidden tests included) and print the points.

    Exits 0 whenever grading ran, whatever the score.
    """
    visible_only = grading.learner_edition()
    if visible_only:
        res = grading.grade_visible(notebook, sandbox, timeout)
    else:
        a = _find_assignment(notebook, assignment)
        with tempfile.TemporaryDirectory(prefix="bncourse-grade-") as tmp:
            sub = Path(tmp) / grading.STUDENT
            sub.mkdir()
            shutil.copy(notebook, sub / f"{grading.notebook_name(a)}.ipynb")
            cfg = grading.course_config(None)
            cfg.SandboxedExecute.sandbox = sandbox
            res = next(grading.grade_many(a, {grading.STUDENT: sub}, jobs=1, timeout=timeout, cfg=cfg))
    tests = [dict(grade_id=g["grade_id"], points=float(g["auto_score"] or 0.0), max_points=float(g["max_score"]),
                  message=res.messages.get(g["grade_id"], ""))
             for g in res.grades if g["cell_type"] == "code"]
    # Written answers: graded by hand, except an unchanged answer cell, which nbgrader scores 0.
    manual = [dict(grade_id=g["grade_id"], points=None if g["needs_manual_grade"] else float(g["auto_score"] or 0),
                   max_points=float(g["max_score"]),
                   message="graded by hand" if g["needs_manual_grade"] else "not answered")
              for g in res.grades if g["cell_type"] != "code"]
    if not visible_only:
        # self-check: for a written answer you gave, the instructor's model answer (never in the release)
        answers = _model_answers(a)
        for m in manual:
            if m["points"] is None and m["grade_id"] in answers:
                m["model_answer"] = answers[m["grade_id"]]
    out = dict(total=round(sum(t["points"] for t in tests), 4), max_total=sum(t["max_points"] for t in tests),
               tests=tests, manual=manual, flags=res.flags, sandboxed=res.sandboxed, sandbox=res.sandbox,
               hidden_tests="not run here: they run when your instructor grades" if visible_only else "included")
    if not res.success:
        out["error"] = grading.summarize_error(res.error)
    if as_json:
        click.echo(json.dumps(out, indent=2))
        return
    if not res.success:
        click.echo(f"Grading failed: {out['error']}")
        return
    rows = [[t["grade_id"], t["points"], t["max_points"]] for t in tests]
    click.echo(_table(["test cell", "points", "max"], rows))
    by_hand = sum(m["max_points"] for m in manual if m["points"] is None)
    unanswered = sum(m["max_points"] for m in manual if m["points"] is not None)
    click.echo(f"\nAutograded total: {out['total']:g} / {out['max_total']:g}"
               + (f"; written answers worth {by_hand:g} points will be graded by hand" if by_hand else "")
               + (f"; {unanswered:g} points of written answers not answered" if unanswered else ""))
    for t in tests:
        if t["points"] < t["max_points"] and t["message"]:
            click.echo(f"\n{t['message']}")
    for m in manual:
        if m.get("model_answer"):
            click.echo(f"\nSelf-check of your written answer {m['grade_id']} ({m['max_points']:g} points by hand "
                       f"in a class). The model answer:\n{m['model_answer']}")
    for f in res.flags:
        click.echo(f"flagged for review: {f}")
    if visible_only:
        click.echo("\nThese are the visible tests only: this is the learner edition, without the hidden tests, "
                   "which run when your instructor grades your submission.")
    if not res.sandboxed:
        click.echo("\nNote: graded WITHOUT a sandbox (bubblewrap is not available here), so your code ran as you. "
                   "The points are computed the same way as in a class.")


# ----------------------------------------------------------------------------- autograde a class
def autograde_class(course: Path, assignment: str, jobs: int, timeout: int | None, wall_limit: float,
                    students=(), sandbox: str | None = None, force: bool = True, db_url: str | None = None,
                    cluster: str | None = None, show_progress: bool = True):
    """Grade course/submitted/<student>/<assignment>/ (all students, or ``students``) with the course's
    nbgrader configuration and merge the results into its gradebook, one at a time as they finish (an
    interrupted run leaves a consistent gradebook). Without ``force``, a submission whose files, the
    assignment's source, the course configuration and the grader are unchanged since it was graded is
    skipped. Returns (results, seconds, cfg, skipped)."""
    from tqdm import tqdm
    cfg = grading.course_config(course)
    if sandbox:
        cfg.SandboxedExecute.sandbox = sandbox
    if db_url:
        cfg.CourseDirectory.db_url = db_url
    submitted = course / cfg.CourseDirectory.get("submitted_directory", "submitted")
    subs = {p.parent.name: p for p in sorted(submitted.glob(f"*/{assignment}")) if p.is_dir()}
    if students:
        missing = sorted(set(students) - set(subs))
        if missing:
            raise click.UsageError(f"no submission of {assignment} for: {', '.join(missing)}")
        subs = {k: v for k, v in subs.items() if k in students}
    if not subs:
        raise click.UsageError(f"no submissions under {submitted}/*/{assignment}/")
    grading.ensure_assignment(course, assignment, cfg)
    grading.register_students(course, subs, cfg)
    keep = course / cfg.CourseDirectory.get("autograded_directory", "autograded")
    version = grading.grader_version(assignment)
    digests = {s: grading.input_digest(assignment, p, cfg, course, version) for s, p in subs.items()}
    skipped = []
    if not force:
        graded = {r[0] for r in grading.gradebook_rows(course, assignment, cfg)[1]}
        skipped = sorted(s for s in subs if s in graded and grading.recorded_digest(keep, s, assignment) == digests[s])
        subs = {k: v for k, v in subs.items() if k not in skipped}
    results = []
    t0 = time.perf_counter()
    with tqdm(total=len(subs), desc=f"autograde {assignment}", unit="submission", file=sys.stdout,
              disable=not show_progress) as bar:
        def progress(res):
            bar.set_postfix_str(f"{res.student}: {'ok' if res.success else 'FAILED'}")
            bar.update()
        try:
            for res in grading.grade_many(assignment, subs, jobs=jobs, timeout=timeout, wall_limit=wall_limit,
                                          progress=progress, keep=keep, course=course, cfg=cfg, cluster=cluster):
                grading.merge(course, assignment, res, cfg)
                grading.write_record(keep, res, assignment, digests[res.student], subs[res.student])
                results.append(res)
        except KeyboardInterrupt:
            bar.close()
            click.echo(f"\nInterrupted: {len(results)} of {len(subs)} submission(s) graded and recorded; the "
                       "gradebook is consistent. Run the same command again to grade the rest.")
            sys.exit(130)
    return results, time.perf_counter() - t0, cfg, skipped


def _report(course: Path, assignment: str, results, seconds: float, cfg=None) -> None:
    header, rows = grading.gradebook_rows(course, assignment, cfg)
    click.echo(f"\nGradebook: {assignment} ({grading.db_url_of(cfg or grading.course_config(course), course)})\n")
    click.echo(_table(_short_header(header), rows))
    problems = [r for r in results if not r.success or r.flags]
    if problems:
        click.echo("\nNeeds attention:")
        for r in sorted(problems, key=lambda r: r.student):
            if not r.success:
                why = grading.summarize_error(r.error)[:160]
                click.echo(f"  {r.student}: could not be graded ({why}); recorded with 0 auto points, flagged")
            for f in r.flags:
                click.echo(f"  {r.student}: flagged: {f}")
    boxes = sorted({r.sandbox for r in results if r.sandbox})
    unsandboxed = [r for r in results if r.success and not r.sandboxed]
    if unsandboxed:
        click.echo(f"\nWARNING: {len(unsandboxed)} submission(s) were graded WITHOUT a sandbox (no bubblewrap here): "
                   "learner code ran as you. Scores were still computed outside the learner's kernel.")
    elif boxes:
        click.echo("\nLearner code ran " + boxes[0].split(" (")[0] + " (bubblewrap: own uid, no network, no course files).")
    n = len(results)
    if n:
        click.echo(f"{n} submission(s) graded in {seconds:.1f} s ({seconds / n:.1f} s per submission).")
    overhead = sorted(r.seconds - r.cells_seconds for r in results if r.cells_seconds is not None)
    if overhead:
        click.echo(f"Fixed overhead per submission (grading process minus cells and checks): median "
                   f"{overhead[len(overhead) // 2]:.2f} s, max {overhead[-1]:.2f} s.")


@main.command()
@click.argument("assignment")
@click.option("--course-dir", type=click.Path(file_okay=False, path_type=Path), default=Path("."),
              show_default=True, help="Course directory holding nbgrader_config.py, submitted/ and the gradebook.")
@click.option("--student", "students", multiple=True, help="Grade only this student (repeatable).")
@click.option("--jobs", "-j", default=DEFAULT_JOBS, show_default=True, help="Submissions graded at once.")
@click.option("--timeout", type=int, default=None, help="Seconds one cell may run (default: the course's "
              "Execute.timeout).")
@click.option("--wall-limit", default=900.0, show_default=True, help="Seconds one submission may take in all.")
@click.option("--sandbox", type=click.Choice(["auto", "bwrap", "none"]), default=None,
              help="Where learner code runs (default: the course's SandboxedExecute.sandbox, 'auto').")
@click.option("--force", is_flag=True, help="Regrade every submission (default: skip those unchanged since they "
              "were graded: same files, assignment source, course configuration and grader).")
@click.option("--db-url", default=None, help="Gradebook database URL (default: the course's "
              "CourseDirectory.db_url, sqlite:///COURSE_DIR/gradebook.db), e.g. postgresql://user@host/db.")
@click.option("--cluster", default=None, metavar="ADDRESS", help="Grade on the workers of a Dask cluster "
              "(e.g. tcp://10.0.0.5:8786; start workers with `dask worker ADDRESS`); results merge here.")
def autograde(assignment, course_dir, students, jobs, timeout, wall_limit, sandbox, force, db_url, cluster):
    """Autograde the submissions of ASSIGNMENT under COURSE_DIR/submitted/ and print the gradebook."""
    course = course_dir.resolve()
    try:
        results, seconds, cfg, skipped = autograde_class(course, assignment, jobs, timeout, wall_limit, students,
                                                         sandbox, force=force or bool(students), db_url=db_url,
                                                         cluster=cluster)
        _report(course, assignment, results, seconds, cfg)
    except KeyboardInterrupt:
        click.echo("\nInterrupted: what was graded is recorded and the gradebook is consistent. Run the same "
                   "command again to grade the rest.")
        sys.exit(130)
    if skipped:
        click.echo(f"{len(skipped)} submission(s) unchanged since they were graded: skipped (--force regrades).")


# ----------------------------------------------------------------------------- class report
@main.command()
@click.argument("assignment")
@click.option("--course-dir", type=click.Path(file_okay=False, path_type=Path), default=Path("."),
              show_default=True, help="Course directory holding nbgrader_config.py and the gradebook.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Where to write the page (default: COURSE_DIR/reports/ASSIGNMENT.html).")
def report(assignment, course_dir, out):
    """Write one self-contained HTML page about ASSIGNMENT's graded class: score distribution, pass rate per
    test cell, the most frequent mistakes, flagged and late submissions."""
    from . import report as reports
    course = course_dir.resolve()
    out = (out or course / "reports" / f"{assignment}.html").resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    data = reports.write(course, assignment, out)
    click.echo(f"{len(data['students'])} learners; report written to {out}")


# ----------------------------------------------------------------------------- certificates
@main.command()
@click.option("--course-dir", type=click.Path(file_okay=False, path_type=Path), default=Path("."),
              show_default=True, help="Course directory holding nbgrader_config.py and the gradebook.")
@click.option("--student", "students", multiple=True, help="Only this learner (repeatable).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where certificates, summary.csv and the LMS exports go (default: COURSE_DIR/certificates).")
@click.option("--verify", "code", default=None, metavar="CODE",
              help="Check a certificate's verification code against the gradebook instead.")
@click.option("--db-url", default=None, help="The class gradebook's database URL (default: the course's).")
def certificate(course_dir, students, out, code, db_url):
    """Apply the certificate policy (course/grading.md) to the gradebook: list who qualifies and what each
    other learner misses; write a certificate page per qualifying learner, summary.csv, nbgrader's
    grades.csv and Canvas/Moodle grade imports. With --verify CODE, check a certificate instead."""
    from . import certificate as certs
    from .trusted.runner import course_secret
    course = course_dir.resolve()
    cfg = grading.course_config(course)
    db_url = db_url or grading.db_url_of(cfg, course)
    course_id = grading.course_id_of(cfg)
    if db_url.startswith("sqlite:///") and not Path(db_url[len("sqlite:///"):]).is_file():
        raise click.UsageError(f"no gradebook at {db_url}: autograde the class first (bncourse autograde)")
    secret = course_secret(course)
    if code is not None:
        verdict = certs.verify(code, db_url, course_id, secret, course)
        click.echo(verdict.message)
        sys.exit(0 if verdict.valid else 1)
    out = (out or course / "certificates").resolve()
    result, codes = certs.issue(course, db_url, course_id, secret, out, students)
    if not result:
        click.echo("No learners in the gradebook.")
        return
    click.echo(f"Certificate policy: every module with at least {certs.PASS_FRACTION:.0%} of its autograded "
               "points, every written answer submitted and graded, no unresolved review flag.")
    for st in result:
        if st.qualifies:
            click.echo(f"  {st.student}: qualifies; certificate {out / (certs._safe(st.student) + '.html')} "
                       f"(code {codes[st.student]})")
        else:
            click.echo(f"  {st.student}: does not qualify yet; missing:")
            for why in st.missing_lines():
                click.echo(f"      - {why}")
    click.echo(f"{len(codes)} of {len(result)} learner(s) qualify. Summary: {out / 'summary.csv'}; LMS imports: "
               f"{out / 'canvas.csv'}, {out / 'moodle.csv'}; nbgrader's CSV: {out / 'grades.csv'}.")


# ----------------------------------------------------------------------------- a learner's workspace
WORKSPACE = REPO / "workspace"
# The learner's Lab: nbgrader's instructor tools (create assignment, formgrader, course list) are off;
# assignment fetching and Validate stay.
LEARNER_DISABLED = ["@jupyter/nbgrader:create-assignment", "@jupyter/nbgrader:formgrader",
                    "@jupyter/nbgrader:course-list"]


def start_workspace(ws: Path) -> list[str]:
    """Fill ``ws`` with the released notebooks the learner does not have yet; never overwrite a learner's
    copy. A newer release of a notebook the learner already has is put beside it as
    ``<name>.new-release.ipynb``. Returns what was done, one line each."""
    import hashlib
    ws.mkdir(parents=True, exist_ok=True)
    state_file = ws / ".release.json"
    state = json.loads(state_file.read_text()) if state_file.is_file() else {}
    done = []
    for folder in sorted(p for p in RELEASE.iterdir() if p.is_dir()):
        for src in sorted(folder.glob("*.ipynb")):
            key = f"{folder.name}/{src.name}"
            digest = hashlib.sha256(src.read_bytes()).hexdigest()
            dest = ws / folder.name / src.name
            dest.parent.mkdir(exist_ok=True)
            if not dest.exists():
                shutil.copy(src, dest)
                done.append(f"new: {dest.relative_to(ws)}")
            elif state.get(key) not in (None, digest):
                side = dest.with_name(dest.stem + ".new-release.ipynb")
                shutil.copy(src, side)
                done.append(f"a newer release of {dest.relative_to(ws)} is beside it as {side.name} "
                            "(your copy is untouched)")
            state[key] = digest
    state_file.write_text(json.dumps(state, indent=1))
    return done


def learner_lab_env(ws: Path) -> dict:
    """Environment for a learner's JupyterLab: its own config folder with nbgrader's instructor tools off."""
    conf = ws / ".jupyter"
    (conf / "labconfig").mkdir(parents=True, exist_ok=True)
    (conf / "labconfig" / "page_config.json").write_text(
        json.dumps({"disabledExtensions": {name: True for name in LEARNER_DISABLED}}, indent=1))
    (conf / "jupyter_server_config.json").write_text(json.dumps(
        {"ServerApp": {"jpserver_extensions": {"nbgrader.server_extensions.formgrader": False,
                                               "nbgrader.server_extensions.course_list": False}}}, indent=1))
    return dict(os.environ, JUPYTER_CONFIG_DIR=str(conf))


@main.command()
@click.option("--workspace", type=click.Path(file_okay=False, path_type=Path), default=WORKSPACE,
              show_default=True, help="Your own folder of notebooks (never overwritten by any command).")
@click.option("--lab/--no-lab", default=True, help="Open JupyterLab on it (a learner's Lab, without "
              "nbgrader's instructor tools).")
def start(workspace, lab):
    """Copy the course's notebooks you do not have yet into your workspace, then open JupyterLab there."""
    ws = workspace.resolve()
    for line in start_workspace(ws) or ["your workspace is up to date"]:
        click.echo(line)
    click.echo(f"Work in {ws}; self-check a notebook with: bncourse grade <notebook>")
    if lab:
        os.execvpe(str(Path(sys.executable).parent / "jupyter"), ["jupyter", "lab", str(ws)], learner_lab_env(ws))


# ----------------------------------------------------------------------------- learner package
LEARNER_README = """# Deep Dive into Batch Normalization: learner edition

```bash
make lab      # set up .venv, copy the notebooks into workspace/ (yours; never overwritten), open JupyterLab
```

Work in `workspace/`. Run each visible test cell: it prints what it checked and what is wrong. Self-check a
whole notebook with `.venv/bin/bncourse grade workspace/01_batchnorm_numpy/01_batchnorm_numpy.ipynb`.
This edition has the library (`bnlib/`), the checks and the notebooks; the hidden tests and model answers
stay with your instructor and run when your submission is graded. Course pages: `course/`.
"""

LEARNER_MAKEFILE = """PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
TORCH_SPEC ?= torch==2.13.0

.PHONY: venv lab
venv: $(VENV)/.installed
$(VENV)/.installed: pyproject.toml
\ttest -x $(PY) || $(PYTHON) -m venv $(VENV)
\t$(PY) -m pip install -q --upgrade pip
\t$(PY) -m pip install -q $(TORCH_SPEC)
\t$(PY) -m pip install -q -e .
\ttouch $@
lab: venv
\t$(VENV)/bin/bncourse start --no-lab
\t$(VENV)/bin/jupyter lab workspace/
"""


def build_learner_package(out: Path) -> Path:
    """A copy of the course for learners of a graded class: the library, the case-study helpers, the
    checks, the released notebooks and the course pages; no solutions/, no hidden tests, no bank of bugs,
    no tests."""
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    skip = shutil.ignore_patterns("__pycache__", "*.pyc", ".ipynb_checkpoints")
    shutil.copytree(REPO / "bnlib", out / "bnlib", ignore=skip)
    if (REPO / "cases").is_dir():   # the case studies' experiment helpers (Modules 04-06)
        shutil.copytree(REPO / "cases", out / "cases", ignore=skip)
    shutil.copytree(REPO / "autograder", out / "autograder",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "bank", "samples"))
    shutil.copytree(RELEASE, out / "notebooks", ignore=skip)
    shutil.copytree(REPO / "course", out / "course", ignore=skip)
    shutil.copy(REPO / "pyproject.toml", out / "pyproject.toml")
    (out / "README.md").write_text(LEARNER_README)
    (out / "Makefile").write_text(LEARNER_MAKEFILE)
    (out / ".gitignore").write_text(".venv/\nworkspace/\n__pycache__/\n")
    return out


@main.command("learner-package")
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
def learner_package(out):
    """Write the learner edition of the course to OUT (no solutions/, hidden tests or bank)."""
    if grading.learner_edition():
        raise click.UsageError("this is already the learner edition")
    path = build_learner_package(out.resolve())
    click.echo(f"learner edition written to {path} (bnlib, checks, notebooks, course pages; no solutions, "
               "hidden tests or bank)")


# ----------------------------------------------------------------------------- demo
@main.command()
@click.option("--course-dir", type=click.Path(file_okay=False, path_type=Path), default=REPO / ".demo",
              show_default=True, help="Where the demo course is created (replaced if it exists).")
@click.option("--jobs", "-j", default=DEFAULT_JOBS, show_default=True)
@click.option("--timeout", default=20, show_default=True, help="Seconds one cell may run.")
def demo(course_dir, jobs, timeout):
    """Release the assignments, autograde the bundled sample class, print the gradebook."""
    if grading.learner_edition():
        raise click.UsageError("the demo grades a sample class with the hidden tests: it needs the full course "
                               "repository, not the learner edition")
    import nbformat

    from .samples import build
    from .samples.m01 import ASSIGNMENT, samples

    course = course_dir.resolve()
    if course.exists():
        shutil.rmtree(course)
    course.mkdir(parents=True)
    from .config import config_file_text
    (course / "nbgrader_config.py").write_text(config_file_text(course, SOLUTIONS, course / "release", timeout))
    click.echo(f"Demo course: {course}\n1. Releasing the assignments (nbgrader generate_assignment)")
    for a in grading.assignments():
        grading.generate(a, course, course / "release", timeout)
        click.echo(f"   released {a} -> {course / 'release' / a}")
    nb_name = grading.notebook_name(ASSIGNMENT)
    released = nbformat.read(course / "release" / ASSIGNMENT / f"{nb_name}.ipynb", as_version=4)
    click.echo("2. Sample submissions")
    for s in samples():
        dest = course / "submitted" / s.student / ASSIGNMENT
        dest.mkdir(parents=True)
        nbformat.write(build(released, s), dest / f"{nb_name}.ipynb")
        click.echo(f"   {s.student:4s} {s.story}")
    click.echo("3. Autograding")
    results, seconds, cfg, _ = autograde_class(course, ASSIGNMENT, jobs, timeout, 600.0)
    _report(course, ASSIGNMENT, results, seconds, cfg)
    _demo_rest_of_course(course, jobs, timeout, cfg)
    click.echo(f"\nnbgrader works on this course as usual, e.g.:\n  cd {course} && nbgrader generate_feedback "
               f"{ASSIGNMENT}\n(written answers are graded by hand in formgrader: `make instructor-lab`; class report: "
               f"`bncourse report`; certificates: `bncourse certificate --course-dir {course}`).")


def _demo_rest_of_course(course: Path, jobs: int, timeout: int, cfg) -> None:
    """The demo's steps 4-6: two learners go on through the course, written answers are graded, and the
    certificate policy is applied."""
    import nbformat

    from . import certificate as certs
    from .samples import build
    from .samples.course import CONTINUING, class_after_module_01
    from .trusted.runner import course_secret
    later = class_after_module_01()
    if not later:
        return
    click.echo(f"\n4. The rest of the course: {', '.join(CONTINUING)} submit the model answers of modules "
               f"{', '.join(a[:2] for a in later)} ({CONTINUING[-1]} skips the last, the capstone); points before "
               "the written answers are graded by hand:")
    for a, subs in later.items():
        nb_name = grading.notebook_name(a)
        released = nbformat.read(course / "release" / a / f"{nb_name}.ipynb", as_version=4)
        for s in subs:
            dest = course / "submitted" / s.student / a
            dest.mkdir(parents=True)
            nbformat.write(build(released, s), dest / f"{nb_name}.ipynb")
    for a, subs in later.items():
        results, seconds, _, _ = autograde_class(course, a, jobs, timeout, 600.0, show_progress=False)
        header, rows = grading.gradebook_rows(course, a, cfg)
        scores = ", ".join(f"{r[0]} {r[-3]:g}/{r[-2]:g}" + (" (flagged)" if "flagged" in r[-1] else "")
                           for r in rows)
        click.echo(f"   {a}: {scores}  [{seconds:.0f} s]")
    db_url, course_id = grading.db_url_of(cfg, course), grading.course_id_of(cfg)
    graded = _demo_grade_written_answers(db_url, course_id)
    click.echo(f"5. The instructor grades the written answers in formgrader; the demo plays that part: {graded} "
               "submitted answers marked (full marks: they are the model answers or close to them)")
    out = course / "certificates"
    result, codes = certs.issue(course, db_url, course_id, course_secret(course), out)
    click.echo(f"6. Certificates (bncourse certificate): every module >= {certs.PASS_FRACTION:.0%} of its autograded "
               "points, every written answer submitted and graded, no unresolved review flag")
    for st in result:
        if st.qualifies:
            click.echo(f"   {st.student}: qualifies: {out / (certs._safe(st.student) + '.html')}, "
                       f"verification code {codes[st.student]}")
        else:
            click.echo(f"   {st.student}: not yet: " + "; ".join(st.missing_lines()))
    if codes:
        first = next(iter(codes.values()))
        verdict = certs.verify(first, db_url, course_id, course_secret(course), course)
        click.echo(f"   bncourse certificate --verify {first}: {verdict.message}")


def _demo_grade_written_answers(db_url: str, course_id: str) -> int:
    """Full marks for every submitted, ungraded written answer (what an instructor does in formgrader)."""
    from .store import open_gradebook
    n = 0
    with open_gradebook(db_url, course_id) as gb:
        for a in gb.assignments:
            for sub in a.submissions:
                for nb in sub.notebooks:
                    written = {c.name for c in nb.notebook.solution_cells}
                    for g in nb.grades:
                        if g.name in written and g.manual_score is None and g.needs_manual_grade:
                            g.manual_score = float(g.max_score)
                            g.needs_manual_grade = False
                            n += 1
        gb.db.commit()
    return n
