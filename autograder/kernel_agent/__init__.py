"""Code that runs inside the learner's (sandboxed) kernel while a notebook is graded.

This package is mounted read-only into the sandbox as the top-level package ``kernel_agent`` and talks to
the trusted grader through one channel: the grader sends an ``execute_request`` that calls
:func:`kernel_agent.agent.serve` with a JSON request; the agent calls the learner's object and publishes a
JSON response (plain data only, :mod:`kernel_agent.protocol`) as display data.

Nothing here is trusted: learner code shares the interpreter and can replace any of it. That is fine by
design: the agent holds no expected values, no reference implementation and no secret, so replacing it can
only change what the learner's own objects appear to return. Every score is computed by the grader, outside
the sandbox, from the data it receives. Keep this package free of imports from ``autograder`` (it is not
mounted in the sandbox): only the standard library, NumPy and, lazily, torch.
"""
