"""Every module's bank of buggy implementations, in-process: the notebook's own test cells (hidden ones
included) run against each bug and each independently written correct variant."""
import importlib

import pytest

from autograder.bank import apply_bug, grade_in_process, solution_sources

MODULES = {"m01": 20, "m02": 10, "m03": 15}   # module -> minimum bank size the issues ask for
BANKS = {m: importlib.import_module(f"autograder.bank.{m}") for m in MODULES}
CASES = [(m, b) for m, bank in BANKS.items() for b in bank.BUGS]
VARIANTS = [(m, name) for m, bank in BANKS.items() for name in sorted(bank.CORRECT_VARIANTS)]


def totals(result):
    return sum(v[0] for v in result.values()), sum(v[1] for v in result.values())


@pytest.mark.parametrize("module", MODULES)
def test_reference_solution_gets_full_marks(module):
    bank = BANKS[module]
    got, top = totals(grade_in_process(bank.ASSIGNMENT, solution_sources(bank.ASSIGNMENT)))
    assert top > 0 and got == top


@pytest.mark.parametrize("module", MODULES)
def test_bank_is_large_and_covers_every_graded_function(module):
    bank = BANKS[module]
    assert len(bank.BUGS) >= MODULES[module]
    assert len({b.name for b in bank.BUGS}) == len(bank.BUGS)
    assert {b.grade_id for b in bank.BUGS} == set(solution_sources(bank.ASSIGNMENT))


@pytest.mark.parametrize("module,bug", CASES, ids=[f"{m}-{b.name}" for m, b in CASES])
def test_every_bug_loses_points_on_its_own_function(module, bug):
    bank = BANKS[module]
    result = grade_in_process(bank.ASSIGNMENT, apply_bug(solution_sources(bank.ASSIGNMENT), bug))
    got, top = totals(result)
    assert got < top, f"{bug.name} ({bug.mistake}) kept full marks"
    own = [v for k, v in result.items() if k in (f"test_{bug.grade_id}", f"test_{bug.grade_id}_hidden")]
    assert own and sum(v[0] for v in own) < sum(v[1] for v in own), f"{bug.name} lost nothing on {bug.grade_id}"


@pytest.mark.parametrize("module,name", VARIANTS, ids=[f"{m}-{n}" for m, n in VARIANTS])
def test_independent_correct_variants_get_full_marks(module, name):
    bank = BANKS[module]
    result = grade_in_process(bank.ASSIGNMENT, {**solution_sources(bank.ASSIGNMENT), **bank.CORRECT_VARIANTS[name]})
    got, top = totals(result)
    assert got == top, {k: v[2] for k, v in result.items() if v[0] < v[1]}
