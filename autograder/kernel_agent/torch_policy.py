"""Make torch's normalization layers unavailable inside a grading kernel.

Used for assignments where learners write batch norm themselves with torch tensor operations: every route
to a ready-made normalization must fail, however it is reached (``F.batch_norm``, ``nn.BatchNorm2d``,
``torch.ops.aten.native_batch_norm``, a ``functools.partial`` of any of them, a pickled reference...).

* Native kernels: each normalization operator (forward, backward, statistics helpers; batch, layer,
  group, instance, RMS norm) gets a kernel that raises, registered with the dispatcher for every backend
  key it has. All Python entry points end in the dispatcher, so they all fail. The registration handle is
  kept alive by an extra reference and no Python name, so learner code cannot find it to undo it.
* Python re-implementations (``torch._decomp``, ``torch._refs`` decompositions): functions and table
  entries with normalization names are replaced or removed from every loaded torch module.
* The layer classes (``nn.BatchNorm2d``, ``nn.LayerNorm``...) refuse to be constructed, so a class that
  inherits one to skip writing its parameters and buffers fails too.
* Their source files cannot be read back (see ``launch.protected_paths``), and the interpreter is closed
  to introspection that could dig the originals out (``gc.get_objects``, ``ctypes``).

Everything else in torch (convolutions, reductions, autograd, optimizers) works as usual.
"""
from __future__ import annotations

import ctypes
import os
import re
import sys
import types
import warnings

MESSAGE = ("torch's normalization layers are not available while this assignment is graded: "
           "write the normalization yourself with tensor operations")
OP_PATTERN = re.compile(r"(^|_)(batch|layer|group|instance|rms)_norm|_norm_legit")
PY_PATTERN = re.compile(r"(batch|layer|group|instance|rms)_?norm|_norm_legit|fuse_conv_bn|fuse_linear_bn",
                        re.IGNORECASE)
KEYS = ("CPU", "CUDA", "MPS", "XPU", "Meta", "QuantizedCPU", "QuantizedCUDA", "MkldnnCPU", "SparseCPU",
        "NestedTensorCPU", "NestedTensorCUDA", "CompositeExplicitAutograd",
        "CompositeExplicitAutogradNonFunctional", "AutogradCPU", "AutogradCUDA", "Autograd")


def _refuse(*args, **kwargs):
    raise RuntimeError(MESSAGE)


def _disable_kernels(torch) -> int:
    names = sorted(o for o in torch._C._dispatch_get_all_op_names()
                   if OP_PATTERN.search(o.split("::", 1)[1].split(".")[0]))
    count = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "overriding a previously registered kernel" is the point
        for ns in sorted({o.split("::")[0] for o in names}):
            lib = torch._C._dispatch_library("IMPL", ns, "", "<grading>", 0)
            for name in names:
                if not name.startswith(ns + "::"):
                    continue
                for key in KEYS:
                    try:
                        has = torch._C._dispatch_has_kernel_for_dispatch_key(name, key)
                    except RuntimeError:
                        has = False
                    if has:
                        lib.impl(name.split("::", 1)[1], key, _refuse, False)
                        count += 1
            # Keep the registrations for the life of the process without a Python reference to them.
            ctypes.pythonapi.Py_IncRef(ctypes.py_object(lib))
            del lib
    return count


def _scrub_python(torch) -> int:
    count = 0

    def bad_key(k) -> bool:
        name = getattr(k, "__name__", None) or str(k)
        return bool(PY_PATTERN.search(name))

    def scrub_dict(d: dict, depth: int = 0) -> int:
        n = 0
        for k in list(d):
            v = d[k]
            if bad_key(k) or (isinstance(v, types.FunctionType) and PY_PATTERN.search(v.__name__)):
                del d[k]
                n += 1
            elif isinstance(v, dict) and depth < 1:
                n += scrub_dict(v, depth + 1)
        return n

    for modname, mod in list(sys.modules.items()):
        if mod is None or not (modname == "torch" or modname.startswith(("torch.", "functorch"))):
            continue
        try:
            namespace = vars(mod)
        except TypeError:
            continue
        for attr, value in list(namespace.items()):
            if isinstance(value, (types.FunctionType, types.BuiltinFunctionType)) and PY_PATTERN.search(attr) \
                    and not modname.startswith("torch._C"):
                namespace[attr] = _refuse
                count += 1
            elif isinstance(value, type) and issubclass(value, torch.nn.Module) \
                    and (PY_PATTERN.search(value.__name__) or value.__name__ == "_NormBase"):
                # the layers themselves, and any class built on them, cannot be constructed
                type.__setattr__(value, "__init__", _refuse)
                count += 1
            elif isinstance(value, dict) and not attr.startswith("__"):
                count += scrub_dict(value)
    for packet_name in dir(torch.ops.aten):
        if OP_PATTERN.search(packet_name):
            packet = getattr(torch.ops.aten, packet_name, None)
            for overload in getattr(packet, "overloads", lambda: [])():
                op = getattr(packet, overload)
                op.py_kernels.clear()
                count += 1
    return count


def first_optimizer_step(torch) -> None:
    """One optimizer step on two numbers: torch imports what it loads on first use (sympy on the first
    backward pass, dynamo and inductor on the first optimizer). Two-element tensors never start torch's
    thread pool, so a process that forks afterwards (the grader) leaves its children a usable one."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        p = torch.nn.Parameter(torch.zeros(2))
        opt = torch.optim.SGD([p], lr=0.1, momentum=0.9)
        p.sum().backward()
        opt.step()


def _load_lazy_parts(torch) -> None:
    """Import what torch loads lazily on first use (an optimizer step pulls in dynamo and inductor,
    which register decompositions of their own), so the scrub below sees it all."""
    first_optimizer_step(torch)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in ("torch._dynamo", "torch._inductor.decomposition", "torch._decomp.decompositions",
                     "torch._refs.nn.functional"):
            try:
                __import__(name)
            except Exception:  # noqa: BLE001 - absent in some builds
                pass


def disable() -> int:
    """Disable torch's normalization in this process; returns how many kernels and functions it replaced."""
    import torch
    _load_lazy_parts(torch)
    return _disable_kernels(torch) + _scrub_python(torch)


def protected_paths() -> list[str]:
    """Files and folders of torch whose source re-implements normalization in Python (reading them back,
    e.g. to exec a fresh copy of a decomposition, is refused)."""
    import torch
    root = os.path.dirname(os.path.realpath(torch.__file__))
    return [os.path.join(root, *p.split("/")) for p in ("_decomp", "_refs", "_prims", "_prims_common", "_inductor",
                                                        "nn/utils/fusion.py", "ao")]
