"""The certificate policy (course/grading.md) on a gradebook built through nbgrader's API: each rule can
keep a learner out, a resolved flag or a person's grade lets them in, codes verify only against the grades
they were made from, and the LMS files have the columns Canvas and Moodle import."""
from __future__ import annotations

import csv
import shutil

import pytest
from click.testing import CliRunner

from autograder import certificate as certs
from autograder.course import Module
from autograder.sandbox import Policy
from autograder.store import FLAG_PREFIX, open_gradebook

MODULES = (Module("m1", "One", "", "", 0, Policy()), Module("m2", "Two (capstone)", "", "", 0, Policy()))
SECRET = b"k" * 32
NB = "nb"


def _gradebook(path):
    """Two modules, each a notebook with a 10-point test cell and a 2-point written answer."""
    url = f"sqlite:///{path}"
    with open_gradebook(url) as gb:
        for m in MODULES:
            gb.add_assignment(m.assignment)
            gb.add_notebook(NB, m.assignment)
            gb.add_grade_cell("test_a", NB, m.assignment, max_score=10, cell_type="code")
            gb.add_grade_cell("q_written", NB, m.assignment, max_score=2, cell_type="markdown")
            gb.add_solution_cell("q_written", NB, m.assignment)
    return url


def _submit(url, student, assignment, auto=10.0, written="graded", flag=None, manual_auto=None):
    """written: 'graded' (full marks by hand), 'ungraded' (submitted, waiting) or 'blank' (left as released)."""
    with open_gradebook(url) as gb:
        gb.update_or_create_student(student, first_name=student.title())
        sub = gb.add_submission(assignment, student)
        nb = sub.notebooks[0]
        for g in nb.grades:
            if g.name == "test_a":
                g.auto_score, g.needs_manual_grade = auto, False
                g.manual_score = manual_auto
            elif written == "graded":
                g.auto_score, g.manual_score, g.needs_manual_grade = None, 2.0, False
            elif written == "ungraded":
                g.auto_score, g.needs_manual_grade = None, True
            else:  # nbgrader's mark of an unchanged answer
                g.auto_score, g.needs_manual_grade = 0.0, False
        if flag:
            nb.flagged = True
            nb.comments[0].auto_comment = FLAG_PREFIX + flag
        gb.db.commit()


@pytest.fixture(scope="module")
def _class_db(tmp_path_factory):
    path = tmp_path_factory.mktemp("class") / "gradebook.db"
    url = _gradebook(path)
    for student in ("ada", "ben", "cai", "dan", "eve", "fin", "gil", "hal"):
        for m in MODULES:
            if student == "fin" and m.assignment == "m2":
                continue                                         # no capstone
            _submit(url, student, m.assignment,
                    auto={"ben": 6.0, "gil": 7.0}.get(student, 10.0) if m.assignment == "m1" else 10.0,
                    written={"cai": "blank", "dan": "ungraded"}.get(student, "graded") if m.assignment == "m2"
                    else "graded",
                    flag="the kernel died while running this cell" if student == "eve" and m.assignment == "m1"
                    else None,
                    manual_auto=9.0 if student == "hal" and m.assignment == "m1" else None)
    return path


@pytest.fixture
def klass(tmp_path, _class_db):
    """A copy of the class gradebook per test (building one runs nbgrader's migrations: seconds)."""
    shutil.copy(_class_db, tmp_path / "gradebook.db")
    return tmp_path, f"sqlite:///{tmp_path / 'gradebook.db'}"


def test_each_rule_keeps_a_learner_out_and_says_what_is_missing(klass):
    _, url = klass
    st = {s.student: s for s in certs.standings(url, modules=MODULES)}
    assert st["ada"].qualifies and st["ada"].missing == []
    assert st["ben"].missing == ["One (m1): 6 of 10 autograded points (60%; 70% needed)"]
    assert st["cai"].missing == ["Two (capstone) (m2): written answer(s) not submitted: q_written"]
    assert st["dan"].missing == ["Two (capstone) (m2): written answer(s) not graded yet: q_written"]
    assert st["eve"].missing == ["One (m1): unresolved review flag (the kernel died while running this cell)"]
    assert st["fin"].missing_lines() == ["no submission of m2"]
    assert st["gil"].qualifies, "exactly 70% of the autograded points passes"
    assert st["hal"].qualifies and st["hal"].modules[0].auto == 9.0, "a person's override of a test counts"
    assert [s.student for s in certs.standings(url, students=("eve", "ada"), modules=MODULES)] == ["ada", "eve"]


def test_a_module_the_class_has_not_been_graded_on_keeps_everyone_out(klass):
    _, url = klass
    more = MODULES + (Module("m3", "Three", "", "", 0, Policy()),)
    ada = certs.standings(url, students=("ada",), modules=more)[0]
    assert ada.missing == ["Three (m3): not graded for this class yet"]


def test_resolving_a_flag_in_the_gradebook_lets_the_learner_qualify(klass):
    _, url = klass
    with open_gradebook(url) as gb:                              # what formgrader's flag toggle does
        gb.find_submission_notebook(NB, "m1", "eve").flagged = False
        gb.db.commit()
    assert certs.standings(url, students=("eve",), modules=MODULES)[0].qualifies


def test_issue_writes_pages_summary_and_lms_files(klass):
    course, url = klass
    out = course / "certificates"
    result, codes = certs.issue(course, url, "bn101", SECRET, out, date="2026-11-29", modules=MODULES)
    assert set(codes) == {"ada", "gil", "hal"}
    page = (out / "ada.html").read_text()
    assert "Ada" in page and codes["ada"] in page and "2026-11-29" in page and "<script" not in page
    assert not (out / "ben.html").exists()
    summary = {r["student"]: r for r in csv.DictReader(open(out / "summary.csv"))}
    assert summary["ada"]["qualifies"] == "yes" and summary["ben"]["qualifies"] == "no"
    assert "6 of 10" in summary["ben"]["missing"] and summary["ben"]["verification_code"] == ""
    canvas = list(csv.reader(open(out / "canvas.csv")))
    assert canvas[0][:5] == ["Student", "ID", "SIS User ID", "SIS Login ID", "Section"]
    assert canvas[1][0] == "Points Possible" and canvas[1][5:] == ["12", "12"]
    assert {r[3]: r[5:] for r in canvas[2:]}["fin"] == ["12", "0"]
    moodle = {r["ID number"]: r for r in csv.DictReader(open(out / "moodle.csv"))}
    assert moodle["ada"]["Certificate"] == "1" and moodle["ben"]["Certificate"] == "0"
    assert moodle["ben"]["One (m1)"] == "8"
    assert (out / "grades.csv").read_text().startswith("assignment,")


def test_codes_verify_against_the_grades_they_were_made_from(klass):
    course, url = klass
    _, codes = certs.issue(course, url, "bn101", SECRET, course / "out", date="2026-11-29", modules=MODULES)
    code = codes["ada"]
    ok = certs.verify(code, url, "bn101", SECRET, course, modules=MODULES)
    assert ok.valid and "awarded to Ada (ada) on 2026-11-29" in ok.message
    typed = code.lower().replace("-", " ")
    assert certs.verify(typed, url, "bn101", SECRET, course, modules=MODULES).valid
    assert not certs.verify(code, url, "bn101", b"another course", course, modules=MODULES).valid
    assert not certs.verify(code, url, "other_course", SECRET, course, modules=MODULES).valid
    garbage = certs.verify("hello", url, "bn101", SECRET, course, modules=MODULES)
    assert not garbage.valid and "not a certificate code" in garbage.message
    forged = certs.verify("BN-AAAA-AAAA-AAAA-AAAA", url, "bn101", SECRET, course, modules=MODULES)
    assert not forged.valid and "no certificate of this course" in forged.message
    with open_gradebook(url) as gb:                              # regraded after the certificate was issued
        gb.find_grade("test_a", NB, "m2", "ada").manual_score = 8.0
        gb.db.commit()
    changed = certs.verify(code, url, "bn101", SECRET, course, modules=MODULES)
    assert not changed.valid and "issued to ada on 2026-11-29" in changed.message


def test_learner_ids_become_safe_distinct_file_names():
    assert certs._safe("ada") == "ada"
    odd = [certs._safe(s) for s in ("../x", "_./x", "a b", "a_b")]
    assert all("/" not in s and not s.startswith(".") for s in odd) and len(set(odd)) == 4


def test_cli_verify_exits_nonzero_on_a_bad_code(tmp_path):
    from autograder import cli
    (tmp_path / "nbgrader_config.py").write_text("c = get_config()\nc.CourseDirectory.course_id = 'bn101'\n")
    with open_gradebook(f"sqlite:///{tmp_path / 'gradebook.db'}"):
        pass
    res = CliRunner().invoke(cli.main, ["certificate", "--course-dir", str(tmp_path), "--verify", "BN-AAAA-AAAA-AAAA-AAAA"])
    assert res.exit_code == 1 and "NOT VALID" in res.output
    res = CliRunner().invoke(cli.main, ["certificate", "--course-dir", str(tmp_path), "--out", str(tmp_path / "c")])
    assert res.exit_code == 0, res.output
    assert "No learners" in res.output
