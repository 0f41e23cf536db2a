"""``bncourse report``: one self-contained HTML page about a graded class.

Read from the class gradebook (scores, flags, timestamps, late penalties) and from the autograded
notebooks (what each test cell printed, for the most frequent mistakes). Figures are drawn with matplotlib
and embedded as PNG, so the page is one file that opens anywhere.
"""
from __future__ import annotations

import base64
import collections
import html
import io
import re
from pathlib import Path

import nbformat

from . import grading, store

CAUSE = re.compile(r"Likely cause: (.+?)(?:$|\n)")
FAIL = re.compile(r"^\s*FAIL\s+(.+?):\s", re.M)


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def collect(course: Path, assignment: str, cfg=None) -> dict:
    """Everything the page shows, as plain data (also used by the tests)."""
    cfg = cfg if cfg is not None else grading.course_config(course)
    db_url, course_id = grading.db_url_of(cfg, course), grading.course_id_of(cfg)
    header, rows = store.gradebook_rows(db_url, assignment, course_id)
    tests = [h for h in header[1:-3] if h.startswith("test_")]
    written = [h for h in header[1:-3] if not h.startswith("test_")]
    maxima = {}
    with store.open_gradebook(db_url, course_id) as gb:
        a = gb.find_assignment(assignment)
        for nb in a.notebooks:
            for gc in nb.grade_cells:
                maxima[gc.name] = float(gc.max_score)
        late = []
        for sub in a.submissions:
            if sub.late_submission_penalty or (a.duedate and sub.timestamp and sub.timestamp > a.duedate):
                late.append({"student": sub.student.id, "timestamp": str(sub.timestamp),
                             "penalty": float(sub.late_submission_penalty or 0)})
    students = []
    for r in rows:
        row = dict(zip(header, r))
        auto = sum(row[t] for t in tests if isinstance(row[t], float))
        students.append({"student": row["student"], "auto": auto, "status": row["status"],
                         "flags": store.flag_reasons(db_url, assignment, row["student"], course_id)
                         if "flagged" in row["status"] else [],
                         "scores": {t: row[t] for t in tests}})
    auto_max = sum(maxima.get(t, 0.0) for t in tests)
    pass_rate = {t: (sum(1 for s in students if s["scores"][t] == maxima.get(t)) / max(1, len(students)),
                     sum(s["scores"][t] for s in students if isinstance(s["scores"][t], float)) / max(1, len(students)))
                 for t in tests}
    causes, failures = collections.Counter(), collections.Counter()
    autograded = course / cfg.CourseDirectory.get("autograded_directory", "autograded")
    for path in sorted(autograded.glob(f"*/{assignment}/*.ipynb")):
        try:
            nb = nbformat.read(path, as_version=4)
        except Exception:  # noqa: BLE001 - an unreadable record is skipped, not fatal
            continue
        seen = set()
        for cell in nb.cells:
            if cell.cell_type != "code" or not cell.metadata.get("nbgrader", {}).get("grade"):
                continue
            text = "".join(o.get("text", "") for o in cell.get("outputs", []) if o.get("output_type") == "stream")
            for cause in CAUSE.findall(text):
                seen.add(cause.strip())
            for name in FAIL.findall(text):
                failures[name.strip()] += 1
        causes.update(seen)
    return {"assignment": assignment, "students": students, "tests": tests, "written": written,
            "maxima": maxima, "auto_max": auto_max, "pass_rate": pass_rate, "causes": causes.most_common(12),
            "failures": failures.most_common(12), "late": sorted(late, key=lambda x: x["student"])}


def render(data: dict) -> str:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    students, tests = data["students"], data["tests"]
    figs = []
    if students:
        fig, ax = plt.subplots(figsize=(6.4, 3.0))
        ax.hist([s["auto"] for s in students], bins=min(20, max(5, len(students) // 2)), range=(0, data["auto_max"] or 1),
                color="tab:blue", edgecolor="white")
        ax.axvline(0.7 * data["auto_max"], color="tab:red", ls="--", lw=1, label="70% (certificate bar)")
        ax.set_xlabel(f"autograded points (of {data['auto_max']:g})")
        ax.set_ylabel("learners")
        ax.set_title(f"Score distribution, {data['assignment']} ({len(students)} learners)")
        ax.legend(fontsize=8)
        figs.append(_png(fig))
        fig, ax = plt.subplots(figsize=(6.4, 0.35 * len(tests) + 1.0))
        rates = [100 * data["pass_rate"][t][0] for t in tests]
        ax.barh(range(len(tests)), rates, color="tab:green")
        ax.set_yticks(range(len(tests)), [t.replace("test_", "") for t in tests], fontsize=8)
        ax.invert_yaxis()
        ax.set_xlim(0, 100)
        ax.set_xlabel("learners with full points on the test cell (%)")
        ax.set_title("Pass rate per test cell")
        figs.append(_png(fig))
    e = html.escape
    flagged = [s for s in students if "flagged" in s["status"]]
    rows = "".join(f"<tr><td>{e(s['student'])}</td><td>{s['auto']:g}</td><td>{e(s['status'])}</td></tr>"
                   for s in sorted(students, key=lambda s: s["student"]))
    causes = "".join(f"<tr><td>{n}</td><td>{e(c)}</td></tr>" for c, n in data["causes"]) or \
        "<tr><td colspan=2>none</td></tr>"
    failures = "".join(f"<tr><td>{n}</td><td>{e(c)}</td></tr>" for c, n in data["failures"]) or \
        "<tr><td colspan=2>none</td></tr>"
    flags = "".join(f"<tr><td>{e(s['student'])}</td><td>{e('; '.join(s['flags']) or 'flagged')}</td></tr>"
                    for s in flagged) or "<tr><td colspan=2>none</td></tr>"
    late = "".join(f"<tr><td>{e(x['student'])}</td><td>{e(x['timestamp'])}</td><td>{x['penalty']:g}</td></tr>"
                   for x in data["late"]) or "<tr><td colspan=3>none</td></tr>"
    tests_rows = "".join(f"<tr><td>{e(t)}</td><td>{100 * data['pass_rate'][t][0]:.0f}%</td>"
                         f"<td>{data['pass_rate'][t][1]:.2f} / {data['maxima'].get(t, 0):g}</td></tr>" for t in tests)
    images = "".join(f'<img alt="figure" src="{src}">' for src in figs)
    mean = sum(s["auto"] for s in students) / max(1, len(students))
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>Class report: {e(data['assignment'])}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:1000px;margin:2em auto;color:#222}}
table{{border-collapse:collapse;margin:0.5em 0 1.5em}}td,th{{border:1px solid #ccc;padding:3px 8px;text-align:left}}
th{{background:#f3f3f3}}img{{max-width:100%;display:block;margin:1em 0}}.kpi{{font-size:1.2em}}</style></head><body>
<h1>Class report: {e(data['assignment'])}</h1>
<p class="kpi">{len(students)} learners graded; mean {mean:.1f} of {data['auto_max']:g} autograded points;
{sum(1 for s in students if s['auto'] >= 0.7 * data['auto_max'])} at or above 70%; {len(flagged)} flagged;
{len(data['late'])} late.</p>
{images}
<h2>Test cells</h2><table><tr><th>test cell</th><th>full points</th><th>mean points</th></tr>{tests_rows}</table>
<h2>Most frequent likely causes</h2><p>Learners whose feedback named this mistake.</p>
<table><tr><th>learners</th><th>likely cause</th></tr>{causes}</table>
<h2>Most frequently failed checks</h2><table><tr><th>times</th><th>check</th></tr>{failures}</table>
<h2>Flagged for review</h2><table><tr><th>learner</th><th>reasons</th></tr>{flags}</table>
<h2>Late submissions</h2><table><tr><th>learner</th><th>submitted</th><th>penalty</th></tr>{late}</table>
<h2>All learners</h2><table><tr><th>learner</th><th>autograded</th><th>status</th></tr>{rows}</table>
</body></html>"""


def write(course: Path, assignment: str, out: Path, cfg=None) -> dict:
    data = collect(course, assignment, cfg)
    out.write_text(render(data))
    return data
