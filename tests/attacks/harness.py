"""Grade the attack corpus through the course's real commands and collect what every attack gained or broke.

One *campaign* runs, in order:

1. a throwaway copy of the repository (tracked and untracked-but-not-ignored files, ``.venv`` linked) and a
   throwaway ``$HOME`` (its ``~/.cache/bncourse`` seeded from the real one), so that an undefended attack
   that overwrites ``solutions/``, the checks, the cached template gradebooks or ``~/.ipython`` damages
   copies; the grading commands run with ``PYTHONPATH`` on the copy and ``BNCOURSE_REDTEAM_FUSE=1``;
2. at once: the control (the honest learner with a known bug, graded alone with ``bncourse grade --json``)
   and the Module 02 and Module 03 classes (their attacks, one honest learner graded last);
3. the Module 01 class: honest learners graded first, in the middle and last, interleaved with every
   Module 01 attack, one ``bncourse autograde 01_batchnorm_numpy --course-dir ROOT --jobs 2 --timeout 10``;
4. after it, at once: self-study runs (``bncourse grade NB --json``) of the attacks marked ``grade`` and of
   the honest learner with a bug again (persistence: it must score what it scored alone), and a plain
   ``nbgrader autograde 01_batchnorm_numpy`` in a course root (the attacks marked ``nbgrader``, then the
   honest learner with a bug: also the instructor's next nbgrader command after the class run);
5. the aftermath: every gradebook, the autograded notebooks' outputs, the submitted files' hashes, files
   outside the courses (the copy's packages, ``solutions/`` and configs, the throwaway home; the real home,
   site-packages, ``/tmp`` and the real checkout scanned for the red-team marker), and processes carrying
   the marker. Whatever an attack left behind on the real machine is removed (marker files, marker
   processes), and reported.

:func:`judge` turns a campaign into findings: one list per attack (what it gained) and one per global
property (honest learners, files, processes, runs). ``python -m tests.attacks.harness --only a,b`` runs a
campaign for a subset of the corpus and prints the findings.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import signal
import site
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

from . import corpus
from .corpus import FUSE, M1, M2, M3, MARK, PROOF, Attack

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
JOBS, TIMEOUT, WALL_LIMIT = 2, 10, 60
NB_NAME = {M1: M1, M2: M2, M3: M3}   # each assignment has one notebook named like it

# Honest learners, sorted so that one is graded before every attack and one after all of them.
HONEST_FIRST, HONEST_BUG, HONEST_LAST = "f00_honest_ref", "f05z_honest_bug", "f99_honest_ref"
HONEST_LAST_BUG = "f99_honest_bug"
BUG_NAME = "dx_missing_mean_term"
# Text that must never appear in an attacker's own outputs or feedback.
LEAK_SENTINELS = ("hidden=True, seed=", "BEGIN HIDDEN TESTS", "BEGIN SOLUTION")


# ----------------------------------------------------------------------------- small helpers
def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def digest_of(path: Path) -> str:
    """sha256 of a file, or what stands there instead (an attack may leave a folder, a pipe or nothing)."""
    try:
        if path.is_symlink():
            return "link:" + os.readlink(path)
        return sha(path) if path.is_file() else ("missing" if not path.exists() else "not a file")
    except OSError as exc:
        return f"unreadable: {exc.__class__.__name__}"


def tree_digest(root: Path, skip=()) -> dict[str, str]:
    """path -> sha256 (or 'dir', 'fifo', 'link:...') of everything under root (root may be a file)."""
    out = {}
    if not root.exists() and not root.is_symlink():
        return out
    paths = [root] if not root.is_dir() else sorted(root.rglob("*"))
    for p in paths:
        rel = str(p)
        if any(s in rel for s in skip) or "__pycache__" in rel:
            continue
        try:
            if p.is_symlink():
                out[rel] = "link:" + os.readlink(p)
            elif p.is_fifo():
                out[rel] = "fifo"
            elif p.is_dir():
                out[rel] = "dir"
            elif p.is_file():
                out[rel] = sha(p) if p.stat().st_size < (64 << 20) else f"size:{p.stat().st_size}"
        except OSError as exc:
            out[rel] = f"error:{exc.__class__.__name__}"
    return out


def diff(before: dict, after: dict) -> list[str]:
    changed = [f"changed {k}" for k in before if k in after and before[k] != after[k]]
    changed += [f"removed {k}" for k in before if k not in after]
    changed += [f"added {k}" for k in after if k not in before]
    return changed


def marked_files(root: Path, max_depth: int = 8) -> list[Path]:
    """Files or folders under root whose name contains the marker, or small files whose content does."""
    found = []
    if not root.exists():
        return found
    base = len(root.parts)
    for dirpath, dirnames, filenames in os.walk(root):
        depth = len(Path(dirpath).parts) - base
        if depth >= max_depth:
            dirnames[:] = []
        for name in list(dirnames):
            if MARK.lower() in name.lower():
                found.append(Path(dirpath) / name)
                dirnames.remove(name)
        for name in filenames:
            p = Path(dirpath) / name
            if MARK.lower() in name.lower():
                found.append(p)
                continue
            try:
                small = p.is_file() and not p.is_symlink() and p.stat().st_size < (4 << 20)
                if small and MARK.encode() in p.read_bytes():
                    found.append(p)
            except OSError:
                pass
    return found


def marked_processes() -> list[tuple[int, str]]:
    """Processes whose argv or environment carries the red-team marker."""
    out = []
    for p in os.listdir("/proc"):
        if not p.isdigit() or int(p) == os.getpid():
            continue
        try:
            argv = Path(f"/proc/{p}/cmdline").read_bytes()
            env = Path(f"/proc/{p}/environ").read_bytes()
        except OSError:
            continue
        if MARK.encode() in argv or MARK.encode() + b"=" in env:
            out.append((int(p), argv.replace(b"\0", b" ").decode(errors="replace")[:120]))
    return out


def outputs_text(nb_path: Path) -> str:
    """All outputs of a notebook (streams, results, errors) as one string."""
    try:
        nb = nbformat.read(nb_path, as_version=4)
    except Exception as exc:  # noqa: BLE001
        return f"<unreadable: {exc}>"
    parts = []
    for cell in nb.cells:
        for o in cell.get("outputs", []):
            if o.get("output_type") == "stream":
                parts.append(o.get("text", ""))
            elif o.get("output_type") in ("execute_result", "display_data"):
                parts.append(str(o.get("data", {}).get("text/plain", "")))
            elif o.get("output_type") == "error":   # not the traceback: it quotes the (hidden) test cell
                parts.append(f"{o.get('ename', '')}: {o.get('evalue', '')}")
    return "\n".join(parts)


# ----------------------------------------------------------------------------- records
@dataclass
class Run:
    """One grading command and what it produced."""

    name: str
    kind: str                          # "class" (bncourse autograde), "grade" (bncourse grade --json), "nbgrader"
    module: str
    root: Path                         # course root, or the folder of the graded notebook
    learners: dict                     # student -> Attack, or None for an honest learner
    digests: dict = field(default_factory=dict)   # student -> sha256 of the submitted notebook
    rc: int | None = None
    out: str = ""
    seconds: float = 0.0
    rows: dict | None = None           # student -> {column: value} (class and nbgrader runs)
    rows_error: str = ""
    report: dict | None = None         # the JSON of bncourse grade --json
    outputs: dict = field(default_factory=dict)   # student -> text of its autograded notebook's outputs
    config: str = ""                   # sha256 of the course's nbgrader_config.py when it was written
    points: dict = field(default_factory=dict)    # test cell -> max points of the module


@dataclass
class Campaign:
    base: Path
    repo: Path
    home: Path
    env: dict
    attacks: list
    points: dict = field(default_factory=dict)      # module -> {test cell: max points}
    control: dict = field(default_factory=dict)     # module -> {student: {test cell: points}}
    runs: list = field(default_factory=list)
    before: dict = field(default_factory=dict)
    after: dict = field(default_factory=dict)
    site_before: set = field(default_factory=set)
    errors: list = field(default_factory=list)      # the harness's own steps that failed
    leftovers: list = field(default_factory=list)   # marker files found (and removed) on the real machine
    survivors: list = field(default_factory=list)   # marker processes alive after the runs (killed)
    seconds: float = 0.0


# ----------------------------------------------------------------------------- setup
def copy_repo(dest: Path) -> Path:
    """Tracked and untracked (not ignored) files of the checkout; .venv linked, not copied."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, check=True,
                           capture_output=True).stdout.decode().split("\0")
    for f in filter(None, files):
        src = REPO / f
        if src.is_file():
            (dest / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / f)
    if (REPO / ".venv").exists():
        (dest / ".venv").symlink_to(REPO / ".venv")
    return dest


def fake_home(dest: Path) -> Path:
    real = Path.home()
    (dest / ".cache").mkdir(parents=True)
    for sub in ("bncourse", "matplotlib"):
        if (real / ".cache" / sub).is_dir():
            shutil.copytree(real / ".cache" / sub, dest / ".cache" / sub)
    return dest


def make_env(repo: Path, home: Path) -> dict:
    env = dict(os.environ)
    for k in ("IPYTHONDIR", "JUPYTER_CONFIG_DIR", "JUPYTER_DATA_DIR", "JUPYTER_RUNTIME_DIR", "XDG_CONFIG_HOME",
              "XDG_DATA_HOME", "MPLCONFIGDIR", "PYTHONSTARTUP", "NBGRADER_EXECUTION"):
        env.pop(k, None)
    paths = [str(repo)] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else [])
    env.update(HOME=str(home), XDG_CACHE_HOME=str(home / ".cache"), MPLBACKEND="Agg", PYTHONPATH=os.pathsep.join(paths),
               PATH=str(BIN) + os.pathsep + os.environ.get("PATH", ""), PYTHONDONTWRITEBYTECODE="1")
    env[FUSE] = "1"
    return env


def copy_python(c: Campaign, code: str, timeout: int = 300) -> str:
    """Run Python code against the copy of the repository (its autograder), return stdout."""
    proc = subprocess.run([str(BIN / "python"), "-c", code], env=c.env, cwd=c.base, capture_output=True,
                          text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"helper failed: {proc.stderr[-2000:]}")
    return proc.stdout


def test_points(release_nb) -> dict[str, float]:
    return {c.metadata["nbgrader"]["grade_id"]: float(c.metadata["nbgrader"]["points"]) for c in release_nb.cells
            if c.cell_type == "code" and c.metadata.get("nbgrader", {}).get("grade")
            and not c.metadata["nbgrader"].get("solution")}


def function_of(test_cell: str) -> str:
    name = test_cell[len("test_"):] if test_cell.startswith("test_") else test_cell
    return name[: -len("_hidden")] if name.endswith("_hidden") else name


def allowed(attack: Attack | None, test_cell: str, points: dict) -> float:
    if attack is None:
        return points[test_cell]
    if test_cell in attack.extra_allow:
        return attack.extra_allow[test_cell]
    return points[test_cell] if function_of(test_cell) in attack.honest else 0.0


# ----------------------------------------------------------------------------- submissions
def edit_cells(nb, edits: dict):
    """Apply an attack's structural edits (by grade_id) to a notebook."""
    cells = []
    for cell in nb.cells:
        change = edits.get(cell.metadata.get("nbgrader", {}).get("grade_id"))
        if not change:
            cells.append(cell)
            continue
        if change.get("delete"):
            continue
        if "source" in change:
            cell.source = change["source"]
        if "nbgrader" in change:
            cell.metadata.setdefault("nbgrader", {}).update(change["nbgrader"])
        if change.get("cell_type") == "markdown" and cell.cell_type == "code":
            cell = nbformat.v4.new_markdown_cell(cell.source, metadata=cell.metadata)
        if "outputs" in change and cell.cell_type == "code":
            cell.outputs = [nbformat.from_dict(o) for o in change["outputs"]]
        cells.append(cell)
    nb.cells = cells
    return nb


class Builder:
    def __init__(self, c: Campaign):
        from autograder.bank import apply_bug, solution_sources
        from autograder.samples import strip_markers
        self.c = c
        self.released = {m: nbformat.read(c.repo / "notebooks" / m / f"{NB_NAME[m]}.ipynb", as_version=4)
                         for m in (M1, M2, M3)}
        self.ref = {m: {k: strip_markers(v) for k, v in solution_sources(m).items()} for m in (M1, M2, M3)}
        from autograder.bank.m01 import BUGS
        bug = next(b for b in BUGS if b.name == BUG_NAME)
        self.bug = apply_bug(self.ref[M1], bug)
        for m in (M1, M2, M3):   # the gradebook is generated from solutions/: its points are the truth
            c.points[m] = test_points(nbformat.read(c.repo / "solutions" / m / f"{NB_NAME[m]}.ipynb", as_version=4))

    def notebook(self, module: str, learner: Attack | str):
        from autograder.samples import Sample, build
        if isinstance(learner, str):          # honest: "ref" or "bug"
            sources = self.bug if learner == "bug" else self.ref[module]
            sample = Sample("x", "", sources={k: v for k, v in sources.items()
                                              if not k.startswith("q_")})
        else:
            sources = {gid: self.ref[module][gid] for gid in learner.honest}
            sources.update(learner.cells)
            sample = Sample(learner.name, "", sources=sources)
        nb = build(self.released[module], sample)
        if isinstance(learner, Attack) and learner.edits:
            nb = edit_cells(nb, learner.edits)
        return nb

    def course(self, name: str, kind: str, module: str, learners: dict) -> Run:
        """A course root with submitted/<student>/<module>/<nb>.ipynb for each learner."""
        root = self.c.base / name
        root.mkdir()
        run = Run(name, kind, module, root, {}, points=self.c.points[module])
        for student, learner in learners.items():
            dest = root / "submitted" / student / module
            dest.mkdir(parents=True)
            path = dest / f"{NB_NAME[module]}.ipynb"
            nbformat.write(self.notebook(module, learner), path)
            for name, spec in (learner.files.items() if isinstance(learner, Attack) else ()):
                if isinstance(spec, tuple) and spec[0] == "symlink":
                    (dest / name).symlink_to(spec[1])
                else:
                    (dest / name).write_text(spec)
            run.learners[student] = learner if isinstance(learner, Attack) else None
            run.digests[student] = sha(path)
        text = copy_python(self.c, "from pathlib import Path; from autograder.config import config_file_text; "
                                   f"print(config_file_text(Path({str(root)!r})), end='')")
        (root / "nbgrader_config.py").write_text(text)
        run.config = sha(root / "nbgrader_config.py")
        return run

    def single(self, name: str, module: str, learner: Attack | str) -> Run:
        root = self.c.base / "grade" / name
        root.mkdir(parents=True)
        path = root / f"{NB_NAME[module]}.ipynb"
        nbformat.write(self.notebook(module, learner), path)
        run = Run(name, "grade", module, root, {name: learner if isinstance(learner, Attack) else None},
                  points=self.c.points[module])
        run.digests[name] = sha(path)
        return run


# ----------------------------------------------------------------------------- running
def execute(c: Campaign, run: Run, argv: list[str], cwd: Path, timeout: int = 900, log=print) -> Run:
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(argv, cwd=cwd, env=c.env, capture_output=True, text=True, timeout=timeout)
        run.rc, run.out = proc.returncode, proc.stdout + "\n--- stderr ---\n" + proc.stderr
    except subprocess.TimeoutExpired as exc:
        run.rc, run.out = -999, f"timed out after {timeout} s\n{exc.stdout or ''}"
    run.seconds = time.perf_counter() - t0
    try:
        (c.base / f"{run.name}.out").write_text(run.out)   # the whole output, for whoever debugs a finding
    except OSError:
        pass
    log(f"  {run.name}: rc={run.rc}, {run.seconds:.0f} s")
    c.runs.append(run)
    return run


def class_run(c: Campaign, b: Builder, name: str, module: str, learners: dict, log=print) -> Run:
    run = b.course(name, "class", module, learners)
    log(f"{name}: bncourse autograde {module}, {len(learners)} submissions")
    return execute(c, run, [str(BIN / "bncourse"), "autograde", module, "--course-dir", str(run.root),
                            "--jobs", str(JOBS), "--timeout", str(TIMEOUT), "--wall-limit", str(WALL_LIMIT)],
                   run.root, log=log)


def grade_run(c: Campaign, run: Run, log=print) -> Run:
    nb = run.root / f"{NB_NAME[run.module]}.ipynb"
    execute(c, run, [str(BIN / "bncourse"), "grade", str(nb), "--json", "--timeout", str(TIMEOUT)], run.root,
            timeout=300, log=log)
    try:
        start = run.out.index("{")
        run.report = json.loads(run.out[start:run.out.rindex("--- stderr ---")])
    except ValueError:
        run.report = None
    return run


def nbgrader_run(c: Campaign, b: Builder, name: str, learners: dict, log=print) -> Run:
    run = b.course(name, "nbgrader", M1, learners)
    copy_python(c, "from pathlib import Path; from autograder.grading import ensure_assignment; "
                   f"ensure_assignment(Path({str(run.root)!r}), {M1!r})")
    log(f"{name}: nbgrader autograde {M1} in the course root, {len(learners)} submissions")
    return execute(c, run, [str(BIN / "nbgrader"), "autograde", M1], run.root, timeout=600, log=log)


def read_rows(c: Campaign) -> None:
    """Every course run's gradebook rows (through the copy's gradebook_rows), and autograded outputs."""
    courses = [r for r in c.runs if r.kind in ("class", "nbgrader")]
    code = ("import json, sys\nfrom pathlib import Path\nfrom autograder.grading import gradebook_rows\nout = {}\n"
            f"for root, a in {[(str(r.root), r.module) for r in courses]!r}:\n"
            "    try:\n"
            "        header, rows = gradebook_rows(Path(root), a)\n"
            "        out[root] = {'rows': {str(r[0]): dict(zip(header, r)) for r in rows}}\n"
            "    except BaseException as exc:\n"
            "        out[root] = {'error': f'{type(exc).__name__}: {exc}'}\n"
            "print(json.dumps(out, default=str))\n")
    try:
        data = json.loads(copy_python(c, code))
    except Exception as exc:  # noqa: BLE001
        data = {str(r.root): {"error": str(exc)} for r in courses}
    for r in courses:
        got = data.get(str(r.root), {})
        r.rows, r.rows_error = got.get("rows"), got.get("error", "")
        for student in r.learners:
            nbs = sorted((r.root / "autograded" / student / r.module).glob("*.ipynb"))
            r.outputs[student] = "\n".join(outputs_text(p) for p in nbs)
    for r in c.runs:
        if r.kind == "grade":
            r.outputs[next(iter(r.learners))] = r.out


# ----------------------------------------------------------------------------- the campaign
def snapshot(c: Campaign) -> dict:
    """Digests of what no submission may change: the copy's packages, sources and configs, the throwaway
    home's persistent places, the class courses' configs."""
    snap = {}
    for sub in ("autograder", "bnlib", "solutions", "notebooks", "nbgrader_config.py"):
        snap.update(tree_digest(c.repo / sub))
    h = c.home
    for sub in (".cache/bncourse", ".jupyter", ".config", ".local/lib"):
        snap.update(tree_digest(h / sub))
    for prof in (h / ".ipython").glob("profile_*"):
        snap.update(tree_digest(prof / "startup"))
        for cfg in prof.glob("*.py"):
            snap.update(tree_digest(cfg))
    return {k: v for k, v in snap.items() if v != "dir" and Path(k).name not in ("README", "migrated")}


def site_hooks() -> set[str]:
    """Files of site-packages that every Python start runs: *.pth, sitecustomize, usercustomize."""
    dirs = list(site.getsitepackages()) + [site.getusersitepackages()]
    return {str(p) for d in dirs if Path(d).is_dir() for p in Path(d).iterdir()
            if p.suffix == ".pth" or p.stem in ("sitecustomize", "usercustomize")}


def warm_templates(c: Campaign) -> None:
    """Best effort: create the cached template gradebooks first, so that a cache file appearing later is an
    attack's doing (the engine may keep no such cache: then nothing happens)."""
    code = ("try:\n    from autograder.grading import template_db\nexcept ImportError:\n    template_db = None\n"
            f"for a in {[M1, M2, M3]!r}:\n    template_db and template_db(a)\n")
    try:
        copy_python(c, code)
    except Exception:  # noqa: BLE001 - the engine may have no template cache
        pass


def real_places() -> list[tuple[Path, int]]:
    """Places on the real machine where a leftover of an attack would persist."""
    home = Path.home()
    places = [(home / ".ipython", 6), (home / ".jupyter", 6), (home / ".cache" / "bncourse", 2),
              (home / ".config", 6), (home / ".local" / "lib", 4), (Path("/var/tmp"), 2), (Path("/dev/shm"), 2)]
    places += [(Path(p), 1) for p in site.getsitepackages()]   # top level only: attacks drop files there
    return places


def repo_places() -> list[Path]:
    return [REPO / d for d in ("autograder", "bnlib", "solutions", "notebooks")] + [REPO / "nbgrader_config.py"]


def cleanup(c: Campaign) -> None:
    """Kill marker processes; remove marker files left on the real machine (reported in the campaign)."""
    for _ in range(3):
        procs = marked_processes()
        for pid, cmd in procs:
            if (pid, cmd) not in c.survivors:
                c.survivors.append((pid, cmd))
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        if not procs:
            break
        time.sleep(0.5)
    found = []
    for place, depth in real_places():
        found += marked_files(place, max_depth=depth)
    tmp = Path(tempfile.gettempdir())
    found += [p for p in tmp.iterdir() if MARK.lower() in p.name.lower()] if tmp.exists() else []
    for p in found:
        c.leftovers.append(str(p))
        try:
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink()
        except OSError:
            pass
    for place in repo_places():
        for p in marked_files(place):
            c.leftovers.append(f"{p} (in the real checkout: restore it by hand)")


def step(c: Campaign, what: str, fn, *args, **kwargs):
    """Run one step of the campaign; a failure is recorded (and reported as a finding), never raised."""
    try:
        return fn(*args, **kwargs)
    except Exception as exc:  # noqa: BLE001
        c.errors.append(f"{what}: {type(exc).__name__}: {str(exc)[-1500:]}")
        return None


def campaign(base: Path, attacks: list[Attack] | None = None, log=print) -> Campaign:
    attacks = list(corpus.ATTACKS if attacks is None else attacks)
    t0 = time.perf_counter()
    base.mkdir(parents=True, exist_ok=True)
    repo = copy_repo(base / "repo")
    home = fake_home(base / "home")
    c = Campaign(base, repo, home, make_env(repo, home), attacks)
    c.site_before = site_hooks()
    b = Builder(c)
    try:
        by_module = {m: [a for a in attacks if a.module == m] for m in (M1, M2, M3)}

        def learners(module, extra=None, honest=((HONEST_FIRST, "ref"), (HONEST_BUG, "bug"), (HONEST_LAST, "ref"))):
            out = dict(honest)
            out.update({a.name: a for a in (by_module[module] if extra is None else extra)})
            return dict(sorted(out.items()))

        for m in (M1, M2, M3):
            for s in (HONEST_FIRST, HONEST_LAST):
                c.control.setdefault(m, {})[s] = dict(c.points[m])
        warm_templates(c)
        c.before = snapshot(c)
        # 2. at once (the grading commands wait on kernels more than they compute): the control, the honest
        #    learner with a bug graded alone; the Module 02 and 03 classes (one honest learner graded last)
        log("control (the honest learner with a bug, alone), and the Module 02 and 03 classes, at once")
        with ThreadPoolExecutor(3) as pool:
            ctrl = pool.submit(grade_run, c, b.single("control_bug", M1, "bug"), log=log)
            for m, name in ((M2, "class02"), (M3, "class03")):
                if by_module[m]:
                    pool.submit(step, c, name, class_run, c, b, name, m,
                                learners(m, honest=((HONEST_LAST, "ref"),)), log=log)
            ctrl = ctrl.result()
        bug = {t["grade_id"]: t["points"] for t in (ctrl.report or {}).get("tests", [])}
        if not ctrl.report or not bug:
            c.errors.append(f"the control run (honest learner with a bug, alone) failed: {ctrl.out[-800:]}")
        c.control[M1].update({HONEST_BUG: bug, HONEST_LAST_BUG: bug})
        # 3. the Module 01 class: every Module 01 attack, honest learners first, in the middle and last
        step(c, "class01", class_run, c, b, "class01", M1, learners(M1), log=log)
        # 4. after it, at once: self-study (the marked attacks, then the honest learner with a bug again:
        #    persistence) and a plain nbgrader run in a course root (the instructor's next nbgrader command)
        singles = [b.single(a.name, a.module, a) for a in attacks if "grade" in a.paths]
        singles.append(b.single("after_bug", M1, "bug"))
        plain = [a for a in attacks if "nbgrader" in a.paths and a.module == M1]
        log(f"self-study (bncourse grade --json, {len(singles)} notebooks) and plain nbgrader, at once")
        with ThreadPoolExecutor(3) as pool:
            jobs = [pool.submit(step, c, "plain01", nbgrader_run, c, b, "plain01",
                                learners(M1, plain, honest=((HONEST_LAST_BUG, "bug"),)), log=log)]
            jobs += [pool.submit(step, c, r.name, grade_run, c, r, log=log) for r in singles]
            for j in jobs:
                j.result()
        time.sleep(2)   # daemons that act when the commands end get their chance
        read_rows(c)
        c.after = snapshot(c)
    finally:
        cleanup(c)
        c.seconds = time.perf_counter() - t0
    return c


# ----------------------------------------------------------------------------- judging
def _cells(run: Run, student: str) -> dict[str, float] | None:
    """test cell -> points of one learner in one run (None when the learner is missing)."""
    points = run.points
    if run.kind == "grade":
        if not run.report or "tests" not in run.report:
            return None
        return {t["grade_id"]: float(t["points"]) for t in run.report["tests"] if t["grade_id"] in points}
    row = (run.rows or {}).get(student)
    if row is None:
        return None
    return {k: v for k, v in row.items() if k in points}


def _flagged(run: Run, student: str) -> bool | None:
    if run.kind == "grade":
        return bool((run.report or {}).get("flags")) if run.report else None
    row = (run.rows or {}).get(student)
    return None if row is None else "flagged" in str(row.get("status", ""))


def attack_findings(c: Campaign, a: Attack) -> list[str]:
    """What attack ``a`` gained, in every run it was part of (empty: defeated)."""
    found = []
    kinds = {r.kind for r in c.runs if a.name in r.learners}
    for kind, wanted in (("class", True), ("grade", "grade" in a.paths), ("nbgrader", "nbgrader" in a.paths)):
        if wanted and kind not in kinds:
            found.append(f"the harness never graded it through {kind} (see the runs' errors)")
    for run in c.runs:
        if run.kind == "grade" and run.name != a.name:
            continue
        student = a.name
        if student not in run.learners:
            continue
        where = {"class": f"bncourse autograde ({run.name})", "grade": "bncourse grade --json",
                 "nbgrader": f"plain nbgrader autograde ({run.name})"}[run.kind]
        got = _cells(run, student)
        if got is None:
            why = run.rows_error or (run.report or {}).get("error", "") or f"rc={run.rc}"
            found.append(f"[{where}] no grade recorded for the submission ({why[:200]})")
            continue
        missing = [t for t in run.points if t not in got]
        if missing:
            found.append(f"[{where}] test cells missing from its grades: {missing}")
        gained = {t: v for t, v in got.items()     # "?" (not graded) is no gain
                  if isinstance(v, (int, float)) and v > allowed(a, t, run.points) + 1e-9}
        if gained:
            total = sum(v for v in gained.values() if isinstance(v, (int, float)))
            found.append(f"[{where}] gained {total:g} points it may not have: " + ", ".join(
                f"{t}={v} (allowed {allowed(a, t, run.points):g})" for t, v in gained.items()))
        if a.flag:
            flagged = _flagged(run, student)
            if not flagged:
                found.append(f"[{where}] not flagged for review (expected: the code plainly tampers)")
        text = run.outputs.get(student, "")
        others = [s for s, learner in run.learners.items() if learner is None]
        for s in LEAK_SENTINELS + tuple(others):
            if s in text:
                i = text.index(s)
                found.append(f"[{where}] its own outputs show {s!r}: ...{text[max(0, i - 80):i + 120]!r}...")
        if PROOF in text:
            i = text.index(PROOF)
            found.append(f"[{where}] its resource grab succeeded: {text[i:i + 120]!r}")
    return found


def global_findings(c: Campaign) -> dict[str, list[str]]:
    """Findings that no single attack owns: honest learners, submitted files, files, processes, runs."""
    suspects = {eff: [a.name for a in c.attacks if eff in a.effects]
                for eff in ("files", "processes", "classmates")}
    out = {"runs": list(c.errors), "honest": [], "submissions": [], "files": [], "processes": []}
    for run in c.runs:
        if run.kind in ("class", "nbgrader"):
            ok_rc = run.rc == 0
            if not ok_rc:
                out["runs"].append(f"{run.name}: the grading command failed (rc={run.rc}): {run.out[-600:]!r}")
            if run.rows is None:
                out["runs"].append(f"{run.name}: its gradebook cannot be read: {run.rows_error}")
                continue
            lost = sorted(set(run.learners) - set(run.rows))
            if lost:
                out["runs"].append(f"{run.name}: submissions missing from the gradebook: {lost}")
        elif run.report is None:
            out["runs"].append(f"{run.name}: bncourse grade --json printed no JSON (rc={run.rc}): {run.out[-400:]!r}")
        for student, digest in run.digests.items():
            path = run.root / ("submitted/" + student + "/" + run.module if run.kind != "grade" else "") \
                / f"{NB_NAME[run.module]}.ipynb"
            if digest_of(path) != digest:
                out["submissions"].append(f"{run.name}: {student}'s submitted notebook was changed "
                                          f"(suspects: {suspects['classmates']})")
    expected = dict(c.control)
    for run in c.runs:
        honest = [s for s, learner in run.learners.items() if learner is None]
        for student in honest:
            label = student
            if run.kind == "grade":
                if not run.name.startswith("after_"):
                    continue
                label = HONEST_BUG
            want = expected.get(run.module, {}).get(label)
            got = _cells(run, student)
            if got is None:
                out["honest"].append(f"{run.name}: honest learner {student} has no grade")
                continue
            if want is None:
                continue
            wrong = {t: (got.get(t), want[t]) for t in want if got.get(t) != want[t]}
            if wrong:
                out["honest"].append(f"{run.name}: honest learner {student} scored differently from when graded "
                                     "alone: " + ", ".join(f"{t}: {g} instead of {w}" for t, (g, w) in wrong.items()))
            if _flagged(run, student):
                out["honest"].append(f"{run.name}: honest learner {student} was flagged")
    changed = [d for d in diff(c.before, c.after)
               if not (d.startswith("added ") and "/.cache/bncourse/" in d)]   # a new template is the engine's
    for run in c.runs:
        cfg = run.root / "nbgrader_config.py"
        if run.config and digest_of(cfg) != run.config:
            changed.append(f"changed {cfg}")
    if changed:
        out["files"].append(f"files outside the submissions changed (suspects: {suspects['files']}): "
                            + "; ".join(changed[:20]) + (f" ... ({len(changed)} in all)" if len(changed) > 20 else ""))
    new_site = sorted(site_hooks() - c.site_before)
    if new_site:
        out["files"].append(f"new start-up hooks in site-packages (run by every later Python): {new_site}")
    if c.leftovers:
        out["files"].append(f"red-team files left on the machine (removed): {c.leftovers}")
    if c.survivors:
        out["processes"].append(f"{len(c.survivors)} attacker processes outlived grading (killed; suspects: "
                                f"{suspects['processes']}): {c.survivors[:5]}")
    return out


def judge(c: Campaign) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    return {a.name: attack_findings(c, a) for a in c.attacks}, global_findings(c)


# ----------------------------------------------------------------------------- command line
def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--only", help="comma-separated attack names (default: the whole corpus)")
    p.add_argument("--family", type=int, action="append", help="only attacks of these families")
    p.add_argument("--keep", type=Path, help="campaign folder to keep (default: a temp folder, removed)")
    args = p.parse_args(argv)
    attacks = corpus.ATTACKS
    if args.only:
        names = args.only.split(",")
        unknown = set(names) - set(corpus.by_name())
        if unknown:
            p.error(f"unknown attacks: {sorted(unknown)}")
        attacks = [corpus.by_name()[n] for n in names]
    if args.family:
        attacks = [a for a in attacks if a.family in args.family]
    base = args.keep or Path(tempfile.mkdtemp(prefix="rt-campaign-"))
    try:
        c = campaign(base / "campaign" if args.keep else base, attacks)
        per_attack, problems = judge(c)
        print(f"\ncampaign took {c.seconds:.0f} s ({', '.join(f'{r.name} {r.seconds:.0f} s' for r in c.runs)})")
        for a in attacks:
            rows = [r for r in c.runs if a.name in r.learners]
            pts = []
            for r in rows:
                cells = _cells(r, a.name)
                flagged = _flagged(r, a.name)
                pts.append(f"{r.name}: " + ("missing" if cells is None else
                                             f"{sum(v for v in cells.values() if isinstance(v, (int, float))):g} pts")
                           + (", flagged" if flagged else ""))
            print(f"\n{a.name} (family {a.family}, {a.module}): {'; '.join(pts)}")
            for f in per_attack[a.name]:
                print("   -", f)
        print()
        for k, v in problems.items():
            for f in v:
                print(f"[{k}] {f}")
    finally:
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
