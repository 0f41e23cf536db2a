"""Sample class for Module 01: eight learners, from full marks to hostile."""
from __future__ import annotations

from ..bank import apply_bug, solution_sources
from ..bank.m01 import ASSIGNMENT, BUGS
from . import Sample, strip_markers

F, B, A = "batchnorm_forward", "batchnorm_backward", "batchnorm_backward_alt"


def samples() -> list[Sample]:
    ref = {k: strip_markers(v) for k, v in solution_sources(ASSIGNMENT).items()}
    bug = {b.name: b for b in BUGS}
    answers = {
        "q_batch_size": "With 2 samples the statistics are very noisy and the running averages do not match "
                        "training; use GroupNorm (Wu & He 2018: 10.6% lower error than BN at batch 2).",
        "q_inference_mode": "In training mode each output depends on the rest of the batch; eval mode uses "
                            "the running statistics (Algorithm 2). Stale statistics: recompute (PreciseBN).",
    }
    loop_backward = ref[B].replace("    dx = dxc + dmu / m",
                                   "    i = 0\n    while i < m:          # meant to loop over samples\n"
                                   "        dx = dxc + dmu / m")
    return [
        Sample("ada", "correct throughout", sources=ref, answers=answers),
        Sample("ben", "forward right; staged backward misses the mean term; closed form not attempted",
               sources={F: ref[F], B: apply_bug(ref, bug["dx_missing_mean_term"])[B]},
               answers={"q_batch_size": answers["q_batch_size"]}),
        Sample("cai", "a syntax error in the forward pass (the rest is right)",
               sources={**ref, F: ref[F].replace("if training:", "if training", 1)}, answers=answers),
        Sample("dee", "an infinite loop in the staged backward pass (cut by the cell timeout)",
               sources={**ref, B: loop_backward}, answers=answers),
        Sample("eli", "correct, but deleted two visible test cells (nbgrader restores them)",
               sources=ref, answers=answers, delete=("test_batchnorm_forward", "test_batchnorm_backward")),
        Sample("fay", "submitted the notebook as released (nothing done)"),
        Sample("gus", "hostile: patches the autograder's check so an unwritten backward pass scores",
               sources={F: ref[F], B: "import autograder.checks.m01 as m01\n"
                                      "m01.check_batchnorm_backward = lambda *args, **kwargs: 3.0\n\n"
                                      "def batchnorm_backward(dout, cache):\n"
                                      "    raise NotImplementedError()\n"}),
        Sample("hal", "hostile: overwrites every gradebook it can reach, then kills its kernel",
               sources={**ref, A: "import os, pathlib\n"
                                  "for p in pathlib.Path.cwd().parents:\n"
                                  "    if (p / 'gradebook.db').exists():\n"
                                  "        (p / 'gradebook.db').write_text('gone')\n"
                                  "os._exit(0)\n"}),
    ]
