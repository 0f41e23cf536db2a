"""The plain-data protocol between the grading kernel and the grader: what crosses, what is refused."""
import json

import numpy as np
import pytest
import torch

from autograder.kernel_agent import protocol


def cross(value, store=None):
    """What the grader receives for ``value`` sent from the kernel."""
    return protocol.loads(json.dumps(protocol.encode(value, store)))


def test_arrays_numbers_and_containers_cross_as_fresh_plain_values():
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    got = cross((a, [1, 2.5, None, True, "s"], {"k": np.float64(3.0)}))
    assert type(got) is tuple and type(got[0]) is np.ndarray and got[0].dtype == np.float32
    assert np.array_equal(got[0], a) and got[0] is not a and got[0].flags.writeable
    assert got[1] == [1, 2.5, None, True, "s"] and type(got[2]["k"]) is np.float64


def test_tensors_keep_dtype_values_and_memory_format():
    x = torch.randn(2, 3, 4, 5, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
    got = cross(x)
    assert type(got) is torch.Tensor and got.dtype == torch.float64 and torch.equal(got, x)
    assert got.is_contiguous(memory_format=torch.channels_last)
    b = torch.randn(7).bfloat16()
    assert torch.equal(cross(b), b)
    p = torch.nn.Parameter(torch.ones(3))
    assert type(cross(p)) is torch.Tensor and not cross(p).requires_grad


class Sneaky(np.ndarray):
    """An array subclass: on the grader's side it must not become an array."""


class ReadsTheAnswer:
    def __array__(self, *a, **k):  # would walk the grader's stack if it ever ran there
        raise AssertionError("learner code ran on the grader's side")


def test_objects_with_behaviour_never_cross():
    held = []

    def store(obj):
        held.append(obj)
        return len(held)
    sneaky = np.zeros(3).view(Sneaky)
    got = cross((sneaky, ReadsTheAnswer(), lambda: 1), store)
    assert isinstance(got[0], protocol.Foreign) and got[0].cls.endswith("Sneaky")
    assert isinstance(got[1], protocol.Ref) and got[1].cls.endswith("ReadsTheAnswer")
    assert isinstance(got[2], protocol.Ref)
    with pytest.raises(protocol.ProtocolError):
        protocol.encode(ReadsTheAnswer())          # without an object table there is no handle


@pytest.mark.parametrize("node, why", [
    ({"$": "nd", "cls": "numpy.ndarray", "dtype": "object", "shape": [1], "b64": "AA=="}, "dtype"),
    ({"$": "nd", "cls": "numpy.ndarray", "dtype": "float64", "shape": [2], "b64": "AAAAAAAAAAA="}, "shape"),
    ({"$": "nd", "cls": "numpy.ndarray", "dtype": "float64", "shape": [-1], "b64": ""}, "shape"),
    ({"$": "nd", "cls": "numpy.ndarray", "dtype": "float64", "shape": [1 << 30], "b64": ""}, "too large"),
    ({"$": "pickle", "v": "..."}, "kind"),
    ({"$": "dict", "v": [[1, 2]]}, "dict"),
    ({"$": "ref", "id": "x", "cls": "a"}, "handle"),
])
def test_malformed_or_oversized_messages_are_refused(node, why):
    with pytest.raises(protocol.ProtocolError):
        protocol.decode(node)


def test_depth_and_size_limits():
    deep = None
    for _ in range(protocol.MAX_DEPTH + 5):
        deep = {"$": "list", "v": [deep]}
    with pytest.raises(protocol.ProtocolError):
        protocol.decode(deep)
    with pytest.raises(protocol.ProtocolError):
        protocol.loads("[" * 10 + "]" * 10 + " " * (protocol.MAX_TEXT + 1))


def test_roundtrip_keeps_local_objects_as_handles():
    cache = object()
    out, ref = protocol.roundtrip((np.ones(2), cache))
    assert isinstance(ref, protocol.Ref) and ref.obj is cache
