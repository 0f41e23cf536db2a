"""Learner objects that live in the sandboxed kernel, as the checks see them.

A :class:`Remote` stands for a name in the notebook's namespace (``batchnorm_forward``) or a handle the
kernel returned earlier (a cache). Calling it sends the arguments (arrays, numbers, handles) to the kernel
agent, which calls the learner's object there; what comes back is decoded strictly
(:func:`kernel_agent.protocol.decode`): fresh arrays, numbers, tuples, handles. Array arguments are updated
with their values after the call, so a check sees in-place updates exactly as it would in-process.
"""
from __future__ import annotations

import numpy as np

from ..checks.learner import KernelGone, LearnerError, Proxy
from ..kernel_agent import protocol
from .kernel import RemoteKernel


class Remote(Proxy):
    """A learner's object in the kernel: ``target`` is the agent's address of it."""

    def __init__(self, kernel: RemoteKernel, target: dict, name: str):
        self.kernel, self.target, self.__name__ = kernel, target, name

    def __repr__(self):
        return f"<learner's {self.__name__}>"

    def _send(self, req: dict):
        resp = self.kernel.request(req)
        if "error" in resp:
            err = resp["error"] if type(resp["error"]) is dict else {}
            raise LearnerError(str(err.get("type", "Error"))[:200], str(err.get("message", ""))[:2000],
                               str(err.get("where") or "")[:500],
                               err.get("stage") if type(err.get("stage")) is str else None)
        return resp

    def call(self, *args, **kwargs):
        resp = self._send({"op": "call", "target": self.target, "args": protocol.encode(list(args))["v"],
                           "kwargs": protocol.encode(dict(kwargs))["v"]})
        result = protocol.decode(resp.get("result"))
        after = protocol.decode(resp.get("args"))
        after_kw = protocol.decode(resp.get("kwargs"))
        if type(after) is list:
            for orig, new in zip(args, after):
                _write_back(orig, new)
        if type(after_kw) is dict:
            for k, new in after_kw.items():
                _write_back(kwargs.get(k), new)
        return result

    def describe(self) -> dict:
        info = self._send({"op": "describe", "target": self.target}).get("result")
        return info if type(info) is dict else {"kind": "value"}

    def attr(self, name: str) -> "Remote":
        return Remote(self.kernel, {"attr": [self.target, name]}, f"{self.__name__}.{name}")

    def procedure(self, proc, objects, kwargs):
        module = proc.__module__.rpartition(".procedures.")[2]
        resp = self._send({"op": "proc", "name": f"{module}.{proc.__name__}",
                           "objects": [o.target for o in objects], "kwargs": protocol.encode(dict(kwargs))["v"]})
        return protocol.decode(resp.get("result"))

    @staticmethod
    def handle(ref: protocol.Ref, kernel: RemoteKernel) -> "Remote":
        return Remote(kernel, {"ref": ref.id}, ref.cls.rpartition(".")[2])


def _write_back(orig, new) -> None:
    if type(orig) is np.ndarray and type(new) is np.ndarray and new.shape == orig.shape and orig.flags.writeable:
        np.copyto(orig, new, casting="unsafe")


def release(kernel: RemoteKernel) -> None:
    """Forget the kernel's handles (between test cells)."""
    try:
        kernel.request({"op": "release"})
    except (KernelGone, TimeoutError, LearnerError, protocol.ProtocolError):
        pass
