"""Module 03's checks name known mistakes (issue 11, item 6)."""
from autograder.bank import apply_bug, grade_in_process, solution_sources
from autograder.bank.m03 import ASSIGNMENT, BUGS


def test_layernorm_backward_names_gamma_factored_out_of_the_sums():
    """Module 01's closed form with the axes swapped and gamma factored out is wrong for layer norm (gamma
    varies along the summed axis); every failing dx check says so, instead of blaming the mean term."""
    bug = next(b for b in BUGS if b.name == "ln_bwd_gamma_factored_out")
    result = grade_in_process(ASSIGNMENT, apply_bug(solution_sources(ASSIGNMENT), bug))
    for cell in ("test_layernorm_backward", "test_layernorm_backward_hidden"):
        got, top, text = result[cell]
        assert got == 0
        dx_failures = [line for line in text.splitlines() if line.strip().startswith("FAIL") and "dx" in line]
        assert dx_failures and all("gamma was factored out of the sums" in line for line in dx_failures), text
        assert "the mean term is missing" not in text
