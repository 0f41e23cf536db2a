"""Red team: the grader must defeat every cheating and sabotage attack of ``tests/attacks/corpus.py``.

One campaign (``tests/attacks/harness.py``) grades the whole corpus through the course's real commands,
on a throwaway copy of the repository and a throwaway $HOME, with honest learners interleaved:

* ``bncourse autograde 01_batchnorm_numpy --course-dir ROOT --jobs 2 --timeout 10`` over one class holding
  every Module 01 attack (and the same for smaller Module 02 and 03 classes),
* ``bncourse grade NB --json`` (self-study) for a few attacks, and for an honest learner before and after,
* a plain ``nbgrader autograde 01_batchnorm_numpy`` in a course root for a few attacks.

Then: every attack earns at most what its honest parts are worth, leaks nothing into its own outputs and
is flagged where its code plainly tampers (one test per attack, named after it); honest learners score
exactly what they score alone, before and after the attacks; every submission is graded; no submitted
file, no file outside the submissions (packages, solutions, configs, cached gradebooks, ~/.ipython,
~/.jupyter, site-packages) changes; no process an attacker started outlives grading. About 4-5 minutes
on two cores. ``python -m tests.attacks.harness --only NAME`` runs single attacks and prints findings.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from attacks import corpus, harness  # noqa: E402


pytestmark = [pytest.mark.slow, pytest.mark.attacks]


@pytest.fixture(scope="module")
def campaign(tmp_path_factory):
    c = harness.campaign(tmp_path_factory.mktemp("redteam"))
    print(f"\nred-team campaign: {c.seconds:.0f} s ("
          + ", ".join(f"{r.name} {r.seconds:.0f} s" for r in c.runs) + ")")
    return c


@pytest.fixture(scope="module")
def findings(campaign):
    return harness.judge(campaign)


def test_corpus_covers_every_family_and_module():
    names = [a.name for a in corpus.ATTACKS]
    assert len(names) >= 45 and len(set(names)) == len(names)
    per_family = {f: [a.name for a in corpus.ATTACKS if a.family == f] for f in corpus.FAMILIES}
    assert all(len(v) >= 2 for v in per_family.values()), per_family
    assert {a.module for a in corpus.ATTACKS} == {corpus.M1, corpus.M2, corpus.M3}
    assert {p for a in corpus.ATTACKS for p in a.paths} == {"grade", "nbgrader"}


@pytest.mark.parametrize("name", [a.name for a in corpus.ATTACKS])
def test_attack_is_defeated(findings, name):
    per_attack, _ = findings
    a = corpus.by_name()[name]
    assert not per_attack[name], (
        f"attack {name} (family {a.family}, {corpus.FAMILIES[a.family]}; {a.module}) was not defeated.\n"
        f"What it does: {a.story}.\n" + "\n".join(per_attack[name]))


def test_every_run_completes_and_grades_every_submission(findings):
    _, problems = findings
    assert not problems["runs"], "\n".join(problems["runs"])


def test_honest_learners_score_as_when_graded_alone(findings):
    """Interleaved with the attackers, and again after them (self-study, Modules 02/03, plain nbgrader)."""
    _, problems = findings
    assert not problems["honest"], "\n".join(problems["honest"])


def test_submitted_files_are_unchanged(findings):
    _, problems = findings
    assert not problems["submissions"], "\n".join(problems["submissions"])


def test_no_file_outside_the_submissions_changes(findings):
    _, problems = findings
    assert not problems["files"], "\n".join(problems["files"])


def test_no_attacker_process_survives_grading(findings):
    _, problems = findings
    assert not problems["processes"], "\n".join(problems["processes"])
