"""The trusted side of grading: code that learner code cannot patch, read or reach.

* :mod:`.kernel` starts the learner's kernel inside the sandbox and talks to the kernel agent;
* :mod:`.remote` gives the checks learner objects (functions, classes) that live in that kernel;
* :mod:`.runner` turns a test cell into a check call, runs it here and writes the outputs nbgrader scores;
* :mod:`.preprocessor` fits all of it into nbgrader's autograde pipeline (``SandboxedExecute``).
"""
