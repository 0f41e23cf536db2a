"""Red-team corpus: cheating and sabotage attacks written as learner submissions.

``corpus.py`` holds the attacks as data (:class:`corpus.Attack`), ``harness.py`` grades a class of them
through the real commands and collects what they gained or damaged; ``tests/test_attacks.py`` asserts
that the grader defeats every one. ``python -m tests.attacks.harness --only NAME[,NAME]`` runs a subset
and prints what each attack gained (handy to see which attacks work against an engine).
"""
