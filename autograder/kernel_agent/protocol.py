"""Plain data across the sandbox boundary: the one typed record both sides exchange.

A value is encoded as JSON. Scalars (None, bool, int, float, str) are themselves; containers and arrays
are objects tagged with ``"$"``:

* ``{"$": "tuple" | "list", "v": [...]}``, ``{"$": "dict", "v": [[key, value], ...]}`` (string keys);
* ``{"$": "nd", "cls": ..., "dtype": ..., "shape": [...], "b64": ...}``: a NumPy array (C order);
* ``{"$": "np", "cls": ..., "dtype": ..., "b64": ...}``: a NumPy scalar;
* ``{"$": "tensor", "cls": ..., "dtype": ..., "shape": [...], "b64": ..., "channels_last": bool}``: a torch
  tensor's values (bfloat16 travels as its 16-bit pattern);
* ``{"$": "ref", "id": n, "cls": ...}``: anything else. The object stays where it was made (in the kernel);
  the other side holds a handle it can pass back, never the object.

``cls`` is the exact type's qualified name, so the grader can insist on the exact type it expects (an
``ndarray`` subclass or an object with ``__array__`` is not an array). :func:`decode` on the grader's side
enforces limits (size, depth, node count, dtypes, shapes) before building anything, and builds fresh,
owned, writeable arrays: no object with behaviour ever crosses.
"""
from __future__ import annotations

import base64
import json
import math
import sys
from dataclasses import dataclass

import numpy as np

MIME = "application/vnd.bncourse.result+json"

MAX_TEXT = 64 << 20          # bytes of JSON in one message
MAX_ARRAY_BYTES = 32 << 20   # bytes of one array
MAX_NODES = 200_000
MAX_DEPTH = 32
MAX_STR = 1 << 20

# dtypes allowed across the boundary (NumPy names); bfloat16 only for tensors
NP_DTYPES = {"bool", "int8", "int16", "int32", "int64", "uint8", "float16", "float32", "float64"}
TORCH_DTYPES = {"torch.bool", "torch.int8", "torch.int16", "torch.int32", "torch.int64", "torch.uint8",
                "torch.float16", "torch.bfloat16", "torch.float32", "torch.float64"}


class ProtocolError(ValueError):
    """A message that is not plain data within the limits."""


class Ref:
    """A handle to an object that stays on the other side (e.g. a learner's cache in the kernel).

    In-process (:func:`roundtrip`) the handle also holds the object, so passing it back gives the object.
    """

    __slots__ = ("id", "cls", "obj")

    def __init__(self, id: int, cls: str, obj=None):
        self.id, self.cls, self.obj = id, cls, obj

    def __repr__(self):
        return f"<{self.cls} in the learner's kernel>"


@dataclass(frozen=True)
class Foreign:
    """Data that arrived with a type other than the plain one (e.g. an ndarray subclass): kept as the
    type's name so that checks can say what was returned, never as the object."""

    cls: str

    def __repr__(self):
        return f"<{self.cls}>"


def type_name(obj) -> str:
    t = type(obj)
    return f"{t.__module__}.{t.__qualname__}"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


# ----------------------------------------------------------------------------- encode (either side)
def encode(obj, store=None, _depth: int = 0):
    """A JSON-able node for ``obj``. ``store(obj) -> int`` keeps an object that is not plain data and
    returns its handle id (the kernel's object table); without ``store`` such objects are an error."""
    if _depth > MAX_DEPTH:
        raise ProtocolError("value nested too deeply")
    if obj is None or type(obj) in (bool, int, str):
        return obj
    if type(obj) is float:
        return obj
    if isinstance(obj, Ref):
        return {"$": "ref", "id": obj.id, "cls": obj.cls}
    if type(obj) in (tuple, list):
        return {"$": type(obj).__name__, "v": [encode(v, store, _depth + 1) for v in obj]}
    if type(obj) is dict and all(type(k) is str for k in obj):
        return {"$": "dict", "v": [[k, encode(v, store, _depth + 1)] for k, v in obj.items()]}
    if isinstance(obj, np.ndarray) and obj.dtype.name in NP_DTYPES:
        arr = np.ascontiguousarray(obj)
        return {"$": "nd", "cls": type_name(obj), "dtype": arr.dtype.name, "shape": list(arr.shape),
                "b64": _b64(arr.tobytes())}
    if isinstance(obj, np.generic) and obj.dtype.name in NP_DTYPES:
        return {"$": "np", "cls": type_name(obj), "dtype": obj.dtype.name, "b64": _b64(obj.tobytes())}
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(obj, torch.Tensor) and str(obj.dtype) in TORCH_DTYPES \
            and obj.device.type in ("cpu", "cuda") and obj.layout == torch.strided:
        t = obj.detach()
        cl = t.dim() == 4 and not t.is_contiguous() and t.is_contiguous(memory_format=torch.channels_last)
        t = t.cpu().contiguous()
        if t.dtype == torch.bfloat16:
            t = t.view(torch.int16)
        return {"$": "tensor", "cls": type_name(obj), "dtype": str(obj.dtype), "shape": list(obj.shape),
                "b64": _b64(t.numpy().tobytes()), "channels_last": bool(cl)}
    if store is None:
        raise ProtocolError(f"cannot send a {type_name(obj)}")
    return {"$": "ref", "id": store(obj), "cls": type_name(obj)}


def dumps(obj, store=None) -> str:
    return json.dumps(encode(obj, store), separators=(",", ":"))


# ----------------------------------------------------------------------------- decode (strict)
class _Budget:
    def __init__(self):
        self.nodes = 0

    def tick(self):
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise ProtocolError("too many values in one message")


def _shape(node) -> tuple[int, ...]:
    shape = node.get("shape")
    if type(shape) is not list or len(shape) > 8 or not all(type(s) is int and 0 <= s < 2 ** 31 for s in shape):
        raise ProtocolError("bad shape")
    return tuple(shape)


def _bytes(node, expected: int) -> bytes:
    b64 = node.get("b64")
    if type(b64) is not str or len(b64) > (MAX_ARRAY_BYTES * 4) // 3 + 8:
        raise ProtocolError("array too large")
    data = base64.b64decode(b64.encode("ascii"), validate=True)
    if len(data) != expected:
        raise ProtocolError("array data does not match its shape")
    return data


def _array(node) -> np.ndarray:
    dtype = node.get("dtype")
    if dtype not in NP_DTYPES:
        raise ProtocolError(f"dtype {dtype!r} not allowed")
    shape = _shape(node)
    dt = np.dtype(dtype)
    n = math.prod(shape)
    if n * dt.itemsize > MAX_ARRAY_BYTES:
        raise ProtocolError("array too large")
    return np.frombuffer(_bytes(node, n * dt.itemsize), dtype=dt).reshape(shape).copy()


def _tensor(node):
    import torch
    dtype = node.get("dtype")
    if dtype not in TORCH_DTYPES:
        raise ProtocolError(f"dtype {dtype!r} not allowed")
    shape = _shape(node)
    tdt = getattr(torch, dtype.split(".")[1])
    wire = torch.int16 if tdt == torch.bfloat16 else tdt
    npdt = torch.empty(0, dtype=wire).numpy().dtype
    n = math.prod(shape)
    if n * npdt.itemsize > MAX_ARRAY_BYTES:
        raise ProtocolError("tensor too large")
    arr = np.frombuffer(_bytes(node, n * npdt.itemsize), dtype=npdt).reshape(shape).copy()
    t = torch.from_numpy(arr)
    if tdt == torch.bfloat16:
        t = t.view(torch.bfloat16)
    if node.get("channels_last") is True and t.dim() == 4:
        t = t.contiguous(memory_format=torch.channels_last)
    return t


PLAIN_CLASSES = {"numpy.ndarray", "torch.Tensor", "torch.nn.parameter.Parameter"}


def decode(node, resolve=None, _budget: _Budget | None = None, _depth: int = 0):
    """The value a node describes, built fresh. ``resolve(id, cls)`` turns a handle into an object (the
    kernel's side); without it handles become :class:`Ref`. Raises :class:`ProtocolError`."""
    budget = _budget or _Budget()
    budget.tick()
    if _depth > MAX_DEPTH:
        raise ProtocolError("value nested too deeply")
    if node is None or type(node) in (bool, int, float):
        return node
    if type(node) is str:
        if len(node) > MAX_STR:
            raise ProtocolError("string too long")
        return node
    if type(node) is not dict or type(node.get("$")) is not str:
        raise ProtocolError("not a value")
    kind, cls = node["$"], node.get("cls")
    if kind in ("tuple", "list"):
        items = node.get("v")
        if type(items) is not list:
            raise ProtocolError("bad container")
        out = [decode(v, resolve, budget, _depth + 1) for v in items]
        return tuple(out) if kind == "tuple" else out
    if kind == "dict":
        items = node.get("v")
        if type(items) is not list or not all(type(p) is list and len(p) == 2 and type(p[0]) is str for p in items):
            raise ProtocolError("bad dict")
        return {k: decode(v, resolve, budget, _depth + 1) for k, v in items}
    if kind == "ref":
        if type(node.get("id")) is not int or type(cls) is not str or len(cls) > 300:
            raise ProtocolError("bad handle")
        return resolve(node["id"], cls) if resolve else Ref(node["id"], cls)
    if type(cls) is not str or len(cls) > 300:
        raise ProtocolError("missing type")
    if kind == "nd":
        arr = _array(node)
        return arr if cls in PLAIN_CLASSES else Foreign(cls)
    if kind == "np":
        dtype = node.get("dtype")
        if dtype not in NP_DTYPES:
            raise ProtocolError(f"dtype {dtype!r} not allowed")
        dt = np.dtype(dtype)
        value = np.frombuffer(_bytes(node, dt.itemsize), dtype=dt)[0]
        return value if cls.startswith("numpy.") else Foreign(cls)
    if kind == "tensor":
        t = _tensor(node)
        return t if cls in PLAIN_CLASSES else Foreign(cls)
    raise ProtocolError(f"unknown kind {kind!r}")


def loads(text: str, resolve=None):
    """Decode a JSON message, refusing oversized or malformed ones."""
    if type(text) is not str or len(text) > MAX_TEXT:
        raise ProtocolError("message too large")
    try:
        node = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise ProtocolError(f"not JSON: {exc}") from None
    return decode(node, resolve)


def roundtrip(obj):
    """``obj`` as the grader would receive it from the kernel: arrays copied, anything that is not plain
    data replaced by a :class:`Ref` that holds the object itself (used when checks run in-process)."""
    held: dict[int, object] = {}

    def store(o):
        held[id(o)] = o
        return id(o)
    return decode(encode(obj, store), resolve=lambda i, cls: Ref(i, cls, held[i]))
