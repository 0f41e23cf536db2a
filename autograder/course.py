"""The course's modules, in one place: assignment id, checks, bank, and what a grading kernel may use.

Tests, the CLI and the grading engine read this registry instead of keeping their own lists of modules.
"""
from __future__ import annotations

from dataclasses import dataclass

from .sandbox import Policy

BASE_DENY = ("bnlib", "autograder", "nbgrader")
TORCH = ("torch", "functorch", "torchgen")
# imported when a kernel starts (ahead of time when bncourse pre-starts kernels): what setup cells need;
# pyplot is only drawn with by experiments, which grading skips: it loads on first use
NOTEBOOK_IMPORTS = ("numpy", "matplotlib")
LAZY = ("matplotlib.pyplot",)


@dataclass(frozen=True)
class Module:
    assignment: str
    title: str
    checks: str          # module holding the check_* functions
    bank: str            # module holding BUGS and CORRECT_VARIANTS
    min_bank: int        # bank size the module's issue asks for
    policy: Policy       # what the grading kernel may use


MODULES = (
    Module("01_batchnorm_numpy", "BatchNorm from scratch (NumPy)", "autograder.checks.m01", "autograder.bank.m01", 20,
           Policy(deny=BASE_DENY + TORCH, preload=NOTEBOOK_IMPORTS, lazy=LAZY)),
    Module("02_batchnorm_pytorch", "BatchNorm in PyTorch and on the GPU", "autograder.checks.m02",
           "autograder.bank.m02", 10, Policy(deny=BASE_DENY, torch_normalization=False,
                                                  preload=NOTEBOOK_IMPORTS + ("torch",), lazy=LAZY)),
    Module("03_normalization_family", "The normalization family and its pitfalls", "autograder.checks.m03",
           "autograder.bank.m03", 15, Policy(deny=BASE_DENY + TORCH, preload=NOTEBOOK_IMPORTS, lazy=LAZY)),
    # torch stays whole (ResidualBlock and adapt_bn_statistics need its BN layers); its ready-made BN folding
    # refuses: the fusion helpers in every module that holds them after `import torch` (each named, since a
    # hidden function is replaced in its own module), and the JIT passes behind torch.jit.freeze and
    # fuse_conv_bn_jit
    Module("04_case_study_vision", "Case study: vision", "autograder.checks.m04", "autograder.bank.m04", 15,
           Policy(deny=BASE_DENY + ("cases",), preload=NOTEBOOK_IMPORTS + ("torch",), lazy=LAZY,
                  hide=tuple(f"{m}:{f}" for f in ("fuse_conv_bn_weights", "fuse_conv_bn_eval", "fuse_linear_bn_weights",
                                                   "fuse_linear_bn_eval")
                             for m in ("torch.nn.utils.fusion", "torch.nn.utils"))
                  + tuple(f"torch.ao.nn.{m}:fuse_conv_bn_weights" for m in (
                      "intrinsic.qat.modules.conv_fused", "quantized.modules.conv", "intrinsic.quantized.modules.conv_relu"))
                  + tuple(f"torch.ao.nn.{m}:fuse_linear_bn_weights" for m in (
                      "intrinsic.qat.modules.linear_fused", "quantized.modules.linear"))
                  + tuple(f"torch._C:{f}" for f in ("_jit_pass_fold_convbn", "_jit_pass_fold_frozen_conv_bn",
                                                     "_jit_pass_optimize_frozen_graph")))),
    # torch without its normalization layers: LayerNormLSTMCell's layer norms must be the learner's own (masked
    # batch norm is NumPy); torch 2.13 ships no LN-LSTM cell and no masked batch or layer norm to hide
    Module("05_case_study_nlp", "Case study: NLP", "autograder.checks.m05", "autograder.bank.m05", 15,
           Policy(deny=BASE_DENY + ("cases",), torch_normalization=False, preload=NOTEBOOK_IMPORTS + ("torch",),
                  lazy=LAZY)),
    # torch whole (the networks use nn.BatchNorm1d); gymnasium is for the experiments, which grading skips
    Module("06_case_study_rl", "Case study: reinforcement learning", "autograder.checks.m06", "autograder.bank.m06", 12,
           Policy(deny=BASE_DENY + ("cases", "gymnasium"), preload=NOTEBOOK_IMPORTS + ("torch",), lazy=LAZY)),
    # torch whole (the setups train BN networks); the reference fixes in cases stay out of reach
    Module("07_capstone", "Capstone: debugging normalization in real training code", "autograder.checks.m07",
           "autograder.bank.m07", 15, Policy(deny=BASE_DENY + ("cases",), preload=NOTEBOOK_IMPORTS + ("torch",), lazy=LAZY)),
)


def find(assignment: str) -> Module | None:
    return next((m for m in MODULES if m.assignment == assignment), None)


def policy(assignment: str) -> Policy:
    """The kernel policy of an assignment; an assignment this course does not know gets the strictest
    general one (no course packages; torch present but without its normalization layers)."""
    module = find(assignment)
    return module.policy if module else Policy(deny=BASE_DENY, torch_normalization=False)
