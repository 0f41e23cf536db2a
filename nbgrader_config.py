# nbgrader configuration for this course: run nbgrader commands from the repository root, e.g.
#   nbgrader generate_assignment 01_batchnorm_numpy      (solutions/ -> notebooks/)
#   nbgrader autograde 01_batchnorm_numpy                (submitted/<student>/... -> autograded/)
# The settings live in autograder/config.py, shared with the bncourse command.
from autograder.config import apply

apply(get_config())  # noqa: F821 - get_config is provided by traitlets when it loads this file
