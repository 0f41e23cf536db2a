"""The environment `make` builds: what every command's start depends on."""
import subprocess
import sys


def test_nbformat_starts_without_the_slow_iri_format_checker():
    """rfc3987-syntax (an optional jsonschema format checker) costs 1.5 s at every import of nbformat, i.e. at
    every nbgrader and bncourse command and grading run; the Makefile removes it (no Jupyter schema uses it)."""
    code = "import sys, nbformat, jsonschema; print('rfc3987_syntax' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "False", "rfc3987-syntax is installed: run `make venv` (its install step removes it)"
