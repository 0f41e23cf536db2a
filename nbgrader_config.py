# nbgrader configuration for this course (the repository root is the course directory):
#   nbgrader generate_assignment 01_batchnorm_numpy   solutions/ -> release/ and the gradebook
#   nbgrader release_assignment 01_batchnorm_numpy    release/ -> the exchange (exchange/ by default)
#   nbgrader collect 01_batchnorm_numpy               the exchange -> submitted/<student>/
#   nbgrader autograde 01_batchnorm_numpy             submitted/ -> autograded/ and the gradebook
# Learner code is graded in a sandboxed kernel and scored by the trusted grader (autograder/trusted/).
# The settings live in autograder/config.py, shared with the bncourse command; override them below,
# e.g. for a class on JupyterHub:  c.Exchange.root = "/srv/nbgrader/exchange"  (course/instructors.md).
from autograder.config import apply

c = get_config()  # noqa: F821 - get_config is provided by traitlets when it loads this file
apply(c)
