"""The course's autograder: nbgrader configuration, the checks that test cells call, the bank of buggy
implementations, sample submissions, and the ``bncourse`` command."""
