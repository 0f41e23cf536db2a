"""Every module's bank of buggy implementations, in-process: the notebook's own test cells (hidden ones
included) run against each bug and each independently written correct variant. The same bugs go through
nbgrader too: Modules 01-02 one submission each (tests/test_grading_e2e.py), Modules 03-07 packed one per
graded function (test_grading_e2e.packs_of, called by tests/test_module0*.py)."""
import importlib

import pytest

from autograder.bank import apply_bug, grade_in_process, solution_sources

MODULES = {"m01": 20, "m02": 10, "m03": 15, "m04": 15, "m05": 15, "m06": 12, "m07": 15}   # module -> minimum bank size the issues ask for
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


SINGLE_LAYER = {"m01", "m02"}   # modules about one layer: a mistake that breaks it fails the module


@pytest.mark.parametrize("module,bug", CASES, ids=[f"{m}-{b.name}" for m, b in CASES])
def test_every_bug_loses_points_as_much_as_it_breaks_the_layer(module, bug):
    """course/grading.md: a mistake that breaks the layer keeps < 30% of its function's points (and, in a
    module about one layer, < 70% of the module: under the certificate bar); a slip keeps >= 40%."""
    bank = BANKS[module]
    # In a module of independent functions only the bug's own test cells can change (every function is
    # still defined from the bugged sources); a single-layer module is judged on the whole module.
    own_cells = None if module in SINGLE_LAYER else {f"test_{bug.grade_id}", f"test_{bug.grade_id}_hidden"}
    result = grade_in_process(bank.ASSIGNMENT, apply_bug(solution_sources(bank.ASSIGNMENT), bug), only=own_cells)
    got, top = totals(result)
    assert got < top, f"{bug.name} ({bug.mistake}) kept full marks"
    own = [v for k, v in result.items() if k in (f"test_{bug.grade_id}", f"test_{bug.grade_id}_hidden")]
    own_got, own_top = sum(v[0] for v in own), sum(v[1] for v in own)
    assert own and own_got < own_top, f"{bug.name} lost nothing on {bug.grade_id}"
    if bug.breaks:
        assert own_got < 0.3 * own_top, f"{bug.name} breaks the layer yet keeps {own_got:g}/{own_top:g}"
        if module in SINGLE_LAYER:
            assert got < 0.7 * top, f"{bug.name} breaks the layer yet keeps {got:g}/{top:g} of the module"
    else:
        assert own_got >= 0.4 * own_top, f"{bug.name} is a slip yet keeps only {own_got:g}/{own_top:g}"


@pytest.mark.parametrize("module,name", VARIANTS, ids=[f"{m}-{n}" for m, n in VARIANTS])
def test_independent_correct_variants_get_full_marks(module, name):
    bank = BANKS[module]
    result = grade_in_process(bank.ASSIGNMENT, {**solution_sources(bank.ASSIGNMENT), **bank.CORRECT_VARIANTS[name]})
    got, top = totals(result)
    assert got == top, {k: v[2] for k, v in result.items() if v[0] < v[1]}
