"""Certificates: the policy of ``course/grading.md`` applied to the class gradebook.

A learner qualifies when, for every module of the course (:data:`autograder.course.MODULES`, the capstone
included): the submission scores at least :data:`PASS_FRACTION` of the module's autograded points, every
written answer was submitted (changed from the released placeholder) and has been graded by a person,
and the submission carries no unresolved review flag (formgrader's flag toggle resolves one).

Each certificate is one self-contained HTML page with a verification code: an HMAC of the course, the
learner and the scores behind it, keyed with the course secret (``<course>/.bncourse/secret``), so
``bncourse certificate --verify CODE`` can check it against the gradebook without a registry, and a code
stops verifying when the grades behind it change. Issued codes are also recorded in
``<course>/.bncourse/certificates.json`` so that such a code can be told apart from a made-up one.
"""
from __future__ import annotations

import base64
import csv
import hashlib
import hmac
import html
import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import store
from .course import MODULES, Module

PASS_FRACTION = 0.70
COURSE_TITLE = "Deep Dive into Batch Normalization"
CODE_PATTERN = re.compile(r"^BN(-[A-Z2-7]{4}){4}$")


@dataclass
class ModuleStanding:
    """One learner's standing in one module, read from the gradebook."""

    assignment: str
    title: str
    submitted: bool = False
    in_gradebook: bool = True        # False: the class has no graded assignment of this module yet
    auto: float = 0.0                # autograded points (nbgrader's score: a person's override counts)
    auto_max: float = 0.0
    written: float = 0.0             # points of written answers graded by hand
    written_max: float = 0.0
    blank: list = field(default_factory=list)      # written answers left as released
    ungraded: list = field(default_factory=list)   # written answers not graded by a person yet
    flagged: bool = False
    flag_reasons: list = field(default_factory=list)

    @property
    def fraction(self) -> float:
        return self.auto / self.auto_max if self.auto_max else 0.0

    def missing(self) -> list[str]:
        """What keeps this module from counting, one phrase each ([] when it counts)."""
        if not self.in_gradebook:
            return ["not graded for this class yet"]
        if not self.submitted:
            return ["no submission"]
        out = []
        if self.fraction < PASS_FRACTION:
            out.append(f"{self.auto:g} of {self.auto_max:g} autograded points ({self.fraction:.0%}; "
                       f"{PASS_FRACTION:.0%} needed)")
        if self.blank:
            out.append("written answer(s) not submitted: " + ", ".join(self.blank))
        if self.ungraded:
            out.append("written answer(s) not graded yet: " + ", ".join(self.ungraded))
        if self.flagged:
            why = "; ".join(self.flag_reasons) if self.flag_reasons else "see formgrader"
            out.append(f"unresolved review flag ({why})")
        return out


@dataclass
class Standing:
    """A learner's standing in the whole course."""

    student: str
    name: str
    modules: list

    @property
    def missing(self) -> list[str]:
        return [f"{m.title} ({m.assignment}): {why}" for m in self.modules for why in m.missing()]

    @property
    def qualifies(self) -> bool:
        return not self.missing

    def missing_lines(self) -> list[str]:
        """:attr:`missing`, with the modules not submitted at all gathered on one line."""
        absent = [m.assignment for m in self.modules if m.in_gradebook and not m.submitted]
        lines = [f"no submission of {', '.join(absent)}"] if absent else []
        return lines + [f"{m.assignment}: {why}" for m in self.modules if m.submitted or not m.in_gradebook
                        for why in m.missing()]


def _module_standing(gb, module: Module, student: str, assignments: set) -> ModuleStanding:
    from nbgrader.api import MissingEntry
    ms = ModuleStanding(module.assignment, module.title)
    if module.assignment not in assignments:
        ms.in_gradebook = False
        return ms
    try:
        sub = gb.find_submission(module.assignment, student)
    except MissingEntry:
        return ms
    ms.submitted = True
    for nb in sub.notebooks:
        written_names = {c.name for c in nb.notebook.solution_cells} | {c.name for c in nb.notebook.task_cells}
        for g in nb.grades:
            if g.name in written_names:
                ms.written_max += float(g.max_score)
                if g.manual_score is not None:
                    ms.written += float(g.manual_score)
                elif g.auto_score == 0 and not g.needs_manual_grade:
                    # nbgrader's mark of an answer left as released (its checksum is unchanged)
                    ms.blank.append(g.name)
                else:
                    ms.ungraded.append(g.name)
            else:
                ms.auto_max += float(g.max_score)
                ms.auto += float(g.score or 0.0)
        if nb.flagged:
            ms.flagged = True
            for c in nb.comments:
                if c.auto_comment and c.auto_comment.startswith(store.FLAG_PREFIX):
                    ms.flag_reasons = c.auto_comment[len(store.FLAG_PREFIX):].split("\n\n")[0].split("; ")
    return ms


def standings(db_url: str, course_id: str = "default_course", students=(), modules=MODULES) -> list[Standing]:
    """Every learner's standing (or only ``students``'), sorted by student id."""
    with store.open_gradebook(db_url, course_id) as gb:
        assignments = {a.name for a in gb.assignments}
        known = {s.id: s for s in gb.students}
        ids = sorted(students) if students else sorted(known)
        out = []
        for sid in ids:
            s = known.get(sid)
            name = " ".join(p for p in ((s.first_name or "", s.last_name or "") if s else ()) if p) or sid
            out.append(Standing(sid, name, [_module_standing(gb, m, sid, assignments) for m in modules]))
    return out


# ----------------------------------------------------------------------------- verification codes
def _payload(course_id: str, standing: Standing) -> bytes:
    rows = [[m.assignment, round(m.auto, 4), round(m.auto_max, 4), round(m.written, 4), round(m.written_max, 4)]
            for m in standing.modules]
    return json.dumps(["certificate", course_id, standing.student, rows], separators=(",", ":")).encode()


def verification_code(secret: bytes, course_id: str, standing: Standing) -> str:
    """``BN-XXXX-XXXX-XXXX-XXXX``: 80 bits of HMAC-SHA256 over the course, the learner and the scores."""
    digest = hmac.new(secret, _payload(course_id, standing), hashlib.sha256).digest()
    text = base64.b32encode(digest[:10]).decode()
    return "BN-" + "-".join(text[i:i + 4] for i in range(0, 16, 4))


def normalize_code(code: str) -> str:
    """A code as typed (any case, spaces or dashes anywhere) in its canonical form; '' when malformed."""
    raw = re.sub(r"[\s-]", "", code.upper())
    raw = raw[2:] if raw.startswith("BN") else raw
    text = "BN-" + "-".join(raw[i:i + 4] for i in range(0, len(raw), 4))
    return text if CODE_PATTERN.match(text) else ""


def _ledger_path(course: Path) -> Path:
    return course / ".bncourse" / "certificates.json"


def _ledger(course: Path) -> dict:
    path = _ledger_path(course)
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


@dataclass
class Verdict:
    valid: bool
    message: str
    standing: Standing | None = None


def verify(code: str, db_url: str, course_id: str, secret: bytes, course: Path, modules=MODULES) -> Verdict:
    """Check ``code`` against the gradebook as it is now: valid when a learner who qualifies today has
    exactly the scores the code was made from."""
    canonical = normalize_code(code)
    if not canonical:
        return Verdict(False, f"{code!r} is not a certificate code (expected BN-XXXX-XXXX-XXXX-XXXX)")
    for st in standings(db_url, course_id, modules=modules):
        if st.qualifies and hmac.compare_digest(verification_code(secret, course_id, st), canonical):
            scores = ", ".join(f"{m.assignment} {m.auto + m.written:g}/{m.auto_max + m.written_max:g}"
                               for m in st.modules)
            issued = _ledger(course).get(canonical, {}).get("date")
            return Verdict(True, f"VALID: {COURSE_TITLE}, awarded to {st.name} ({st.student})"
                                 + (f" on {issued}" if issued else "") + f"; {scores}", st)
    entry = _ledger(course).get(canonical)
    if entry:
        return Verdict(False, f"NOT VALID: issued to {entry.get('student')} on {entry.get('date')}, but the "
                              "gradebook no longer holds the grades it certified (regraded or changed since)")
    return Verdict(False, "NOT VALID: no certificate of this course has this code")


# ----------------------------------------------------------------------------- the certificate page
def render(standing: Standing, code: str, date: str, course_id: str) -> str:
    """One certificate as a self-contained, printable HTML page."""
    rows = "\n".join(
        f"<tr><td>{html.escape(m.title)}</td><td>{m.auto:g} / {m.auto_max:g}</td>"
        f"<td>{m.written:g} / {m.written_max:g}</td><td>{m.fraction:.0%}</td></tr>" for m in standing.modules)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>Certificate: {html.escape(standing.name)}, {COURSE_TITLE}</title>
<style>
@page {{ size: A4 landscape; margin: 14mm; }}
body {{ font-family: Georgia, serif; color: #222; margin: 0; }}
.sheet {{ border: 6px double #345; padding: 28px 44px; max-width: 980px; margin: 16px auto; text-align: center; }}
h1 {{ font-size: 30px; letter-spacing: 2px; margin: 4px 0; }}
.name {{ font-size: 34px; margin: 18px 0 6px; font-style: italic; }}
table {{ margin: 18px auto; border-collapse: collapse; font-family: Helvetica, Arial, sans-serif; font-size: 13px; }}
th, td {{ border-bottom: 1px solid #bbb; padding: 4px 12px; text-align: left; }}
.code {{ font-family: monospace; font-size: 16px; letter-spacing: 1px; }}
.small {{ font-size: 12px; color: #555; }}
</style></head>
<body><div class="sheet">
<div class="small">{html.escape(course_id)}</div>
<h1>Certificate of completion</h1>
<div>{COURSE_TITLE}</div>
<div class="name">{html.escape(standing.name)}</div>
<div class="small">learner id {html.escape(standing.student)}</div>
<p>has completed every module of the course, the capstone included, with at least {PASS_FRACTION:.0%} of
the autograded points in each, every written answer graded, and no open review.</p>
<table><tr><th>module</th><th>autograded points</th><th>written answers (graded by hand)</th>
<th>autograded share</th></tr>
{rows}
</table>
<p>Issued {html.escape(date)}. Verification code: <span class="code">{code}</span></p>
<p class="small">The course's instructors check a code against the gradebook with
<code>bncourse certificate --verify {code}</code>.</p>
</div></body></html>
"""


# ----------------------------------------------------------------------------- LMS exports
def _lms_rows(gb, modules):
    from nbgrader.api import MissingEntry
    assignments = {a.name: a for a in gb.assignments}
    for s in sorted(gb.students, key=lambda s: s.id):
        scores = []
        for m in modules:
            try:
                sub = gb.find_submission(m.assignment, s.id) if m.assignment in assignments else None
            except MissingEntry:
                sub = None
            # nbgrader export's score: after the late penalty
            scores.append(0.0 if sub is None else max(0.0, sub.score - (sub.late_submission_penalty or 0.0)))
        yield s, scores


def write_lms(db_url: str, course_id: str, out: Path, qualified: set, modules=MODULES) -> list[Path]:
    """``grades.csv`` (nbgrader's export, with the review flags), ``canvas.csv`` (Canvas' gradebook import:
    one column per module, a 'Points Possible' row, learners matched by SIS Login ID) and ``moodle.csv``
    (Moodle's grade import: learners matched by ID number or email; one column per module and one for the
    certificate, 1 or 0)."""
    from .export import FlaggedCsvExport
    written = []
    with store.open_gradebook(db_url, course_id) as gb:
        path = out / "grades.csv"
        FlaggedCsvExport(to=str(path)).export(gb)
        written.append(path)
        maxima = {a.name: a.max_score for a in gb.assignments}
        rows = list(_lms_rows(gb, modules))
    titles = [f"{m.title} ({m.assignment})" for m in modules]
    path = out / "canvas.csv"
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["Student", "ID", "SIS User ID", "SIS Login ID", "Section"] + titles)
        w.writerow(["Points Possible", "", "", "", ""] + [f"{maxima.get(m.assignment, 0.0):g}" for m in modules])
        for s, scores in rows:
            name = ", ".join(p for p in (s.last_name, s.first_name) if p) or s.id
            w.writerow([name, "", s.id, s.id, ""] + [f"{v:g}" for v in scores])
    written.append(path)
    path = out / "moodle.csv"
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["ID number", "Email address", "First name", "Last name"] + titles + ["Certificate"])
        for s, scores in rows:
            w.writerow([s.id, s.email or "", s.first_name or "", s.last_name or ""] + [f"{v:g}" for v in scores]
                       + [1 if s.id in qualified else 0])
    written.append(path)
    return written


# ----------------------------------------------------------------------------- all together
def issue(course: Path, db_url: str, course_id: str, secret: bytes, out: Path, students=(),
          date: str | None = None, modules=MODULES) -> tuple[list[Standing], dict]:
    """Evaluate the class (or ``students``), write a certificate page per qualifying learner, the summary
    (``summary.csv``: who qualifies, what the others miss) and the LMS exports under ``out``, and record
    the issued codes. Returns the standings and {student: code} of those who qualify."""
    date = date or time.strftime("%Y-%m-%d")
    out.mkdir(parents=True, exist_ok=True)
    result = standings(db_url, course_id, students, modules)
    codes = {}
    ledger = _ledger(course)
    for st in result:
        if not st.qualifies:
            continue
        code = verification_code(secret, course_id, st)
        codes[st.student] = code
        (out / f"{_safe(st.student)}.html").write_text(render(st, code, date, course_id))
        ledger.setdefault(code, {"student": st.student, "date": date})
    path = _ledger_path(course)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(ledger, indent=1, sort_keys=True))
    with open(out / "summary.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["student", "name", "qualifies", "verification_code", "missing"])
        for st in result:
            w.writerow([st.student, st.name, "yes" if st.qualifies else "no", codes.get(st.student, ""),
                        "; ".join(st.missing)])
    write_lms(db_url, course_id, out, set(codes), modules)
    return result, codes


def _safe(student: str) -> str:
    """A learner id as a file name; an id that had to be changed gets a short hash, so two never collide."""
    safe = re.sub(r"[^A-Za-z0-9_.@-]", "_", student).lstrip(".")[:80]
    if safe != student or not safe:
        safe = f"{safe or 'learner'}-{hashlib.sha256(student.encode()).hexdigest()[:8]}"
    return safe
