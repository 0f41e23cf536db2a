"""Array backends: the few operations where NumPy and PyTorch differ, declared once as a Protocol.

The maths of every layer in bnlib is written once, as the formulas of its paper, on top of a
:class:`Backend`. Two operations carry all of the speed work, so that the formulas need none:

* :meth:`Backend.per_channel` runs a per-channel computation over arrays viewed as (N, C, L) (samples,
  channels, positions): partial ``sums`` over blocks of samples, merged by ``combine``; then the
  per-channel ``coefficients`` once the sums are complete, which return the statistics to keep and an
  :class:`Affine` map, out = sum_i (arrays[i] - centers[i]) * scales[i] + shift, that the backend applies
  elementwise. NumPy cuts the arrays into cache-sized blocks and runs them on a thread pool: when a slab of
  whole channels (all N samples) fits in the L2 cache, sums, coefficients and the map run on the slab while
  it is in cache, so the input is read from memory once; otherwise blocks of samples are swept twice. The
  map runs in place in the output with the per-channel vectors laid out as whole rows, so NumPy's loops
  stay long and vectorized. torch runs each step once over the whole tensor, eagerly (the map as
  ``addcmul``) or (``set_torch_route("compile")``) through ``torch.compile``, which fuses the steps.
* :meth:`Backend.channel_sum`, :meth:`Backend.channel_dot` and :meth:`Backend.channel_moments` reduce a
  block over its samples and positions, accurately and fast (NumPy: vectorized float32 sums along the
  positions or BLAS, float64 across samples, work buffers reused between blocks).

Everything else is a thin alias (dtype rules, sqrt, clip, concatenation). ``backend_for(x)`` returns the
backend for x's array library; torch is imported only when a tensor is passed.
"""
from __future__ import annotations

import os
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, NamedTuple, Protocol, Sequence, runtime_checkable

import numpy as np

__all__ = ["Backend", "Affine", "NumpyBackend", "TorchBackend", "backend_for", "set_num_threads",
           "set_torch_route", "torch_route", "add_partials"]


def _positions(shape) -> int:
    l = 1
    for s in shape[2:]:
        l *= s
    return l


def add_partials(p, q):
    """The default ``combine`` of :meth:`Backend.per_channel`: partial sums add up."""
    return tuple(a + b for a, b in zip(p, q))


class Affine(NamedTuple):
    """A per-channel affine map of the arrays: out = sum_i (arrays[i] - centers[i]) * scales[i] + shift.

    ``centers``, ``scales``: one (C, 1) column (or None: no centering; a None scale leaves the array out)
    per array; ``shift``: a (C, 1) column or None.
    """

    centers: tuple
    scales: tuple
    shift: Any = None


#: the backends evaluate (a - c) * s + t as a * s + (t - c * s), one pass instead of two, when the fold
#: costs little: in float64 always, in float32 while |c * s| <= FOLD_LIMIT, where its rounding error
#: (about |c * s| * 2**-24 <= 4e-6 in units of the output) stays below the input's own rounding (a float32
#: x at mean m and spread sigma carries m / sigma * 2**-24 after normalization); farther from zero the
#: centered form is kept (exact to a few ulps at any mean)
FOLD_LIMIT = 64.0


def _fold_numpy(affine, exact):
    shift, centers = affine.shift, []
    for c, s in zip(affine.centers, affine.scales):
        if c is not None and s is not None:
            cs = c * s
            with np.errstate(invalid="ignore"):
                if exact or np.max(np.abs(cs)) <= FOLD_LIMIT:
                    shift, c = (-cs if shift is None else shift - cs), None
        centers.append(c)
    return Affine(tuple(centers), affine.scales, shift)


@runtime_checkable
class Backend(Protocol):
    """What bnlib's maths needs from an array library.

    Arrays passed to :meth:`per_channel` are (N, C, L) views; per-channel vectors are (C, 1) columns, so
    that ``x - mean`` broadcasts over samples and positions in both libraries.
    """

    name: str
    array_type_name: str

    def is_array(self, a) -> bool: ...
    def is_float(self, a) -> bool: ...
    def compute_dtype(self, a): ...       # dtype the elementwise arithmetic runs in (float32 or float64)
    def acc_dtype(self, a): ...           # dtype of per-channel statistics and parameter gradients' sums
    def astype(self, a, dtype): ...
    def sqrt(self, a): ...
    def clip(self, a, low, high): ...
    def concat(self, arrays, axis: int = 0): ...
    def zeros(self, shape, dtype, like): ...
    def copy(self, a): ...                # a new array with a's values (and torch memory format)
    def all_finite(self, a) -> bool: ...
    def finite_or(self, a, b): ...       # a where a is finite, else b (elementwise)
    def same_place(self, a, b) -> bool: ...
    def place(self, a) -> str: ...
    def computing(self): ...              # the context bnlib's maths runs in (see the implementations)
    def channels_view(self, x, channels_last=None): ...  # (N, C, *spatial) -> (samples, C, positions), see torch's
    def from_channels(self, a3, shape, channels_last=False): ...  # channels_view's inverse, to x's shape
    def ncl_view(self, x): ...                   # (N, C, *spatial) -> (N, C, L), always
    def channels_last(self, x) -> bool: ...      # a torch channels_last(_3d) tensor (never for NumPy)
    def sum(self, a, axes, dtype=None): ...

    def channel_sum(self, a):
        """Per channel c of an (N, C, L) block: the sum over n and l, as a (C, 1) column in the
        accumulation dtype."""

    def channel_dot(self, a, b, center=None):
        """Per channel: sum over n and l of a * (b - center), center a (C, 1) column or None."""

    def channel_moments(self, a):
        """Per channel of a block: (count, mean, M2), M2 the centred sum of squares, by the corrected
        two-pass algorithm (Chan, Golub & LeVeque 1983, Eq. 1.7): mean0 = sum(a) / n, d = a - mean0,
        mean = mean0 + sum(d) / n, M2 = sum(d^2) - sum(d)^2 / n; exact even when mean0 is rounded, and
        +-Inf (not NaN) for a channel holding +-Inf, as torch."""

    def per_channel(self, arrays: Sequence[Any], params: Sequence[Any], coefficients: Callable, *,
                    sums: Callable | None = None, combine: Callable = add_partials, out_dtype=None):
        """Run a per-channel computation; return ``(out, stats)``.

        ``sums(*blocks, *params)`` returns partial per-channel results over a block of samples (all
        positions); ``combine(p, q)`` merges two partials. ``coefficients(totals, *params)`` turns the
        complete sums (None without ``sums``) into ``(stats, affine)``: a tuple of per-channel (C, 1)
        vectors to return, and the :class:`Affine` map that gives the output (None: no output), stored
        with ``out_dtype`` (default: the first array's). ``sums`` and the map work in the compute dtype
        (blocks, params and the map's vectors are cast to it); ``coefficients`` gets the params as given
        and works in full precision. ``params`` are (C, 1) vectors or None, sliced with the blocks.
        """

    def run(self, fn, *args):
        """fn(self, *args), possibly compiled (torch's "compile" route)."""


# ----------------------------------------------------------------------------------------- NumPy
_THREADS = os.cpu_count() or 1
_POOL: ThreadPoolExecutor | None = None


def set_num_threads(n: int) -> None:
    """Threads used by the NumPy backend (default: the number of CPUs). NumPy's ufuncs release the GIL,
    so blocks run in parallel."""
    global _THREADS, _POOL
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"the number of threads must be an int >= 1, got {n!r}")
    if n != _THREADS and _POOL is not None:
        _POOL.shutdown(wait=True)
        _POOL = None
    _THREADS = n


def _pool() -> ThreadPoolExecutor:
    global _POOL
    if _POOL is None:
        _POOL = ThreadPoolExecutor(max_workers=_THREADS, thread_name_prefix="bnlib")
    return _POOL


def _quiet(fn):
    def run(item):
        with np.errstate(all="ignore"):      # errstate is per thread: set it in the pool's threads too
            return fn(item)
    return run


def _pmap(fn, items):
    items = list(items)
    if len(items) == 1 or _THREADS == 1:
        return [fn(i) for i in items]
    return list(_pool().map(_quiet(fn), items))


class NumpyBackend:
    name = "numpy"
    array_type_name = "numpy.ndarray"
    #: elements of a block: 2**20 float32 values (4 MiB). Each block costs ~25 NumPy calls of fixed
    #: overhead (holding the GIL), so blocks are large: on this project's 2-core Xeon, 512 KiB blocks that
    #: stay in L2 were 1.3-2x slower end to end on planes up to 28x28 than 4 MiB blocks served from L3
    BLOCK = 1 << 20
    #: a slab of whole channels must have contiguous runs of at least this many bytes per sample
    RUN = 256
    #: samples per block when blocks are cut along the samples
    ROWS = 1 << 14

    def __init__(self):
        self._local = threading.local()

    def run(self, fn, *args):
        """fn(self, *args): the NumPy backend has one route."""
        return fn(self, *args)

    # -- the two ops that carry the speed work
    def plan(self, n: int, c: int, l: int, itemsize: int):
        """("slabs", [channel slices]) when whole channels fit a block, else ("rows", [sample slices])."""
        per_channel = n * l
        min_ch = max(1, -(-self.RUN // (l * itemsize)))
        if min_ch <= c and per_channel * min_ch <= self.BLOCK:
            width = max(min_ch, self.BLOCK // per_channel)
            width = min(width, max(min_ch, -(-c // (2 * _THREADS))))   # enough slabs for the threads
            return "slabs", [slice(i, min(i + width, c)) for i in range(0, c, width)]
        # float32 sums run along the block's samples: at most ROWS of them keeps them accurate
        step = max(1, min(self.ROWS, self.BLOCK // max(1, c * l)))
        return "rows", [slice(i, min(i + step, n)) for i in range(0, n, step)]

    def _scratch(self, shape, dtype, k=0):
        """A per-thread work buffer of ``shape`` (reused between blocks: no allocation per block)."""
        bufs = getattr(self._local, "bufs", None)
        if bufs is None:
            bufs = self._local.bufs = {}
        size = int(np.prod(shape))
        buf = bufs.get((k, np.dtype(dtype)))
        if buf is None or buf.size < size:
            buf = bufs[(k, np.dtype(dtype))] = np.empty(max(size, 1), dtype)
        return buf[:size].reshape(shape)

    @staticmethod
    def _vec(v, l, cdt):
        """A (c, 1) column for the elementwise loops over an (n, c, l) block (or (n, c) when l == 1):
        with several channels and short rows it is laid out as whole (c, l) rows (materialized), so the
        loops run over long contiguous rows instead of one scalar per row."""
        v = v.astype(cdt, copy=False)
        if l == 1:
            return v.reshape(-1)
        if v.shape[0] == 1 or l >= 2048:
            return v
        return np.ascontiguousarray(np.broadcast_to(v, (v.shape[0], l)))

    def _apply(self, blocks, affine, out, cdt):
        """out[...] = sum_i (blocks[i] - centers[i]) * scales[i] + shift, in place, no temporaries."""
        l = blocks[0].shape[2]
        if l == 1:                       # (n, c) rows: per-channel vectors broadcast along each row
            blocks, dest = [b[:, :, 0] for b in blocks], out[:, :, 0]
            prep = lambda v: v.astype(cdt, copy=False).reshape(-1)   # noqa: E731
        else:
            dest = out
            prep = lambda v: self._vec(v, l, cdt)                   # noqa: E731
        acc = dest if out.dtype == cdt else self._scratch(dest.shape, cdt, 1)   # float16 out: compute in float32
        affine = _fold_numpy(affine, cdt == np.float64)
        first = True
        for b, center, scale in zip(blocks, affine.centers, affine.scales):
            if scale is None:
                continue
            target = acc if first else self._scratch(acc.shape, cdt, 2)
            if center is not None:
                np.subtract(b, prep(center), out=target)
                np.multiply(target, prep(scale), out=target)
            else:
                np.multiply(b, prep(scale), out=target)
            if not first:
                np.add(acc, target, out=acc)
            first = False
        if affine.shift is not None:
            np.add(acc, prep(affine.shift), out=acc)
        if acc is not dest:
            dest[...] = acc

    def per_channel(self, arrays, params, coefficients, *, sums=None, combine=add_partials, out_dtype=None):
        n, c, l = arrays[0].shape
        cdt = self.compute_dtype(arrays[0])
        kind, parts = self.plan(n, c, l, np.dtype(cdt).itemsize)
        out = np.empty((n, c, l), dtype=out_dtype or arrays[0].dtype)

        def blocks(index):
            return [a[index].astype(cdt, copy=False) for a in arrays]

        def cast(vectors):
            return [None if v is None else v.astype(cdt, copy=False) for v in vectors]

        made = []
        if kind == "slabs":
            def work(sl):
                bl = blocks((slice(None), sl))
                ps = [None if p is None else p[sl] for p in params]
                stats, affine = coefficients(sums(*bl, *cast(ps)) if sums is not None else None, *ps)
                if affine is not None:
                    self._apply(bl, affine, out[:, sl], cdt)
                    made.append(True)
                return stats
            pieces = _pmap(work, parts)
            stats = tuple(None if pieces[0][i] is None else np.concatenate([p[i] for p in pieces])
                          for i in range(len(pieces[0])))
            return (out if made else None), stats
        totals = None
        if sums is not None:
            low_params = cast(params)
            partials = _pmap(lambda rows: sums(*blocks(rows), *low_params), parts)
            totals = partials[0]
            for p in partials[1:]:
                totals = combine(totals, p)
        stats, affine = coefficients(totals, *params)
        if affine is None:
            return None, tuple(stats)
        _pmap(lambda rows: self._apply(blocks(rows), affine, out[rows], cdt), parts)
        return out, tuple(stats)

    @staticmethod
    def channel_sum(a):
        acc = np.float64
        if a.dtype == np.float32:
            if a.shape[2] == 1:    # (N, C): a BLAS matrix-vector product, ~20x faster than adding rows
                s = np.ones(a.shape[0], np.float32) @ a[:, :, 0]
            else:                  # vectorized float32 sums along the contiguous positions, then float64
                s = np.einsum("ncl->nc", a).sum(axis=0, dtype=acc)
        else:
            s = a.sum(axis=(0, 2), dtype=acc)
        return np.asarray(s, dtype=acc).reshape(-1, 1)

    def _centered(self, a, center, k):
        """a - center in a per-thread work buffer (k tells buffers apart)."""
        d = self._scratch(a.shape, a.dtype, k)
        l = a.shape[2]
        if l == 1:
            np.subtract(a[:, :, 0], self._vec(center, 1, a.dtype), out=d[:, :, 0])
        else:
            np.subtract(a, self._vec(center, l, a.dtype), out=d)
        return d

    def _dot(self, a, b):
        """Per channel sum of a * b (two blocks) without a temporary."""
        if a.dtype == np.float32 and a.shape[2] > 1:
            return np.einsum("ncl,ncl->nc", a, b).sum(axis=0, dtype=np.float64).reshape(-1, 1)
        if a.dtype == np.float32:             # (N, C): the product, then BLAS (as channel_sum)
            t = self._scratch(a.shape, a.dtype, 4)
            return self.channel_sum(np.multiply(a, b, out=t))
        return np.einsum("ncl,ncl->c", a, b, dtype=np.float64).reshape(-1, 1)

    def channel_dot(self, a, b, center=None):
        return self._dot(a, b if center is None else self._centered(b, center, 3))

    def channel_moments(self, a):
        n = a.shape[0] * a.shape[2]
        mean0 = self.channel_sum(a) / n
        d = self._centered(a, mean0, 3)
        s1, s2 = self.channel_sum(d), self._dot(d, d)
        return n, self.finite_or(mean0 + s1 / n, mean0), s2 - s1 * s1 / n

    # -- aliases
    @staticmethod
    def is_array(a) -> bool:
        return isinstance(a, np.ndarray)

    @staticmethod
    def is_float(a) -> bool:
        return a.dtype.type in (np.float16, np.float32, np.float64)

    @staticmethod
    def compute_dtype(a):
        # float16 has too little range and precision for the normalization itself
        return np.float64 if a.dtype == np.float64 else np.float32

    @staticmethod
    def acc_dtype(a):
        # statistics accumulate in float64: NumPy's reductions across rows add one row at a time
        return np.float64

    @staticmethod
    def astype(a, dtype):
        return a.astype(dtype, copy=False)

    @staticmethod
    def sqrt(a):
        return np.sqrt(a)

    @staticmethod
    def clip(a, low, high):
        return np.clip(a, low, high)

    @staticmethod
    def concat(arrays, axis=0):
        return np.concatenate(arrays, axis=axis)

    @staticmethod
    def zeros(shape, dtype, like):
        return np.zeros(shape, dtype=dtype)

    @staticmethod
    def copy(a):
        return a.copy()

    @staticmethod
    def all_finite(a) -> bool:
        return bool(np.all(np.isfinite(a)))

    @staticmethod
    def finite_or(a, b):
        return np.where(np.isfinite(a), a, b)

    @staticmethod
    def same_place(a, b) -> bool:
        return True

    @staticmethod
    def place(a) -> str:
        return "cpu"

    @staticmethod
    def computing():
        # NaN and Inf are checked explicitly (or propagated on purpose): no RuntimeWarnings on stderr
        return np.errstate(all="ignore")

    @staticmethod
    def ncl_view(x):
        return np.ascontiguousarray(x).reshape(x.shape[0], x.shape[1], _positions(x.shape))

    def channels_view(self, x, channels_last=None):
        return self.ncl_view(x)

    @staticmethod
    def from_channels(a3, shape, channels_last=False):
        return a3.reshape(shape)

    @staticmethod
    def channels_last(x) -> bool:
        return False

    @staticmethod
    def sum(a, axes, dtype=None):
        return a.sum(axis=axes, dtype=dtype, keepdims=True)


# ----------------------------------------------------------------------------------------- torch
_ROUTE = os.environ.get("BNLIB_TORCH_ROUTE", "eager")


def set_torch_route(route: str) -> None:
    """How the torch backend runs first-order passes: ``"eager"`` (default: one torch op per step of the
    formula) or ``"compile"`` (the same formula through ``torch.compile``, fused into a few loops; the
    first call for a new shape compiles for seconds). Double backward always runs eagerly. The
    environment variable ``BNLIB_TORCH_ROUTE`` sets the default."""
    global _ROUTE
    if route not in ("eager", "compile"):
        raise ValueError(f"route must be 'eager' or 'compile', got {route!r}")
    _ROUTE = route


def torch_route() -> str:
    """The torch backend's current route (see :func:`set_torch_route`)."""
    return _ROUTE


class TorchBackend:
    name = "torch"
    array_type_name = "torch.Tensor"

    def __init__(self):
        import torch
        self.torch = torch
        self._compiled = {}

    def run(self, fn, *args):
        """fn(self, *args), through torch.compile when that route is chosen and no graph is recorded
        (double backward needs the eager ops)."""
        torch = self.torch
        if _ROUTE == "compile" and not torch.is_grad_enabled() and not torch.compiler.is_compiling():
            compiled = self._compiled.get(fn)
            if compiled is None:
                compiled = self._compiled[fn] = torch.compile(fn, dynamic=None)
            if compiled is not False:
                try:
                    # every BN shape and layout of a network is its own graph until the sizes go dynamic
                    with torch._dynamo.config.patch(recompile_limit=64):
                        return compiled(self, *args)
                except Exception as e:     # no C++ compiler, an unsupported device...: the eager formula
                    import warnings
                    warnings.warn(f"bnlib: torch.compile failed for {fn.__name__} ({type(e).__name__}: {e}); "
                                  "using the eager route for it", RuntimeWarning, stacklevel=2)
                    self._compiled[fn] = False
        return fn(self, *args)

    # -- the two ops: one block, torch's own kernels are parallel already
    def per_channel(self, arrays, params, coefficients, *, sums=None, combine=add_partials, out_dtype=None):
        cdt = self.compute_dtype(arrays[0])
        blocks = [a.to(cdt) for a in arrays]
        low_params = [None if p is None else p.to(cdt) for p in params]
        stats, affine = coefficients(sums(*blocks, *low_params) if sums is not None else None, *params)
        if affine is None:
            return None, tuple(stats)
        low = lambda v: None if v is None else v.to(cdt)   # noqa: E731
        affine = self._fold(affine, cdt, arrays[0])
        out = low(affine.shift)
        for b, center, scale in zip(blocks, affine.centers, affine.scales):
            if scale is None:
                continue
            term = b if center is None else b - low(center)
            out = term * low(scale) if out is None else self.torch.addcmul(out, term, low(scale))
        return out.to(out_dtype or arrays[0].dtype), tuple(stats)

    def _fold(self, affine, cdt, like):
        """Centers folded into the shift (see FOLD_LIMIT) where that can be decided without a device
        sync or a graph: in float64 always; in float32 on the CPU, eagerly, after checking |c * s|."""
        torch = self.torch
        exact = cdt == torch.float64
        if not exact and (like.device.type != "cpu" or torch.is_grad_enabled() or torch.compiler.is_compiling()):
            return affine
        shift, centers = affine.shift, []
        for c, s in zip(affine.centers, affine.scales):
            if c is not None and s is not None:
                cs = c.double() * s.double()
                if exact or bool(cs.abs().max() <= FOLD_LIMIT):
                    shift, c = (-cs if shift is None else shift.double() - cs), None
            centers.append(c)
        return Affine(tuple(centers), affine.scales, shift)

    def channel_sum(self, a):
        return a.sum(dim=(0, 2), dtype=self.acc_dtype(a)).unsqueeze(1)

    def channel_dot(self, a, b, center=None):
        return self.channel_sum(a * (b if center is None else b - center.to(b.dtype)))

    def channel_moments(self, a):
        n = a.shape[0] * a.shape[2]
        mean0 = self.channel_sum(a) / n
        d = a - mean0.to(a.dtype)
        # (torch.linalg.vector_norm would save the d * d temporary, but over these dims it is off by 1e-5)
        s1, s2 = self.channel_sum(d), self.channel_sum(d * d)
        return n, self.finite_or(mean0 + s1 / n, mean0), s2 - s1 * s1 / n

    # -- aliases
    def is_array(self, a) -> bool:
        return isinstance(a, self.torch.Tensor)

    def is_float(self, a) -> bool:
        t = self.torch
        return a.dtype in (t.float16, t.bfloat16, t.float32, t.float64)

    def compute_dtype(self, a):
        return self.torch.float64 if a.dtype == self.torch.float64 else self.torch.float32

    def acc_dtype(self, a):
        # torch's float32 reductions are cascade-summed (CPU) or tree-shaped (CUDA): accurate enough;
        # float64 accumulation is ~25x slower on the CPU and slow on most GPUs
        return self.torch.float64 if a.dtype == self.torch.float64 else self.torch.float32

    def astype(self, a, dtype):
        return a.to(dtype)

    def sqrt(self, a):
        return self.torch.sqrt(a)

    def clip(self, a, low, high):
        return self.torch.clamp(a, low, high)

    def concat(self, arrays, axis=0):
        return self.torch.cat(list(arrays), dim=axis)

    def zeros(self, shape, dtype, like):
        return self.torch.zeros(shape, dtype=dtype, device=like.device)

    def copy(self, a):
        return a.clone()

    def all_finite(self, a) -> bool:
        return bool(self.torch.isfinite(a).all())

    def finite_or(self, a, b):
        return self.torch.where(self.torch.isfinite(a), a, b)

    def same_place(self, a, b) -> bool:
        return a.device == b.device

    def place(self, a) -> str:
        return str(a.device)

    def computing(self):
        # bnlib computes gradients by hand: record no autograd graph
        return self.torch.no_grad()

    def ncl_view(self, x):
        # a view for contiguous and channels_last tensors alike, so the layout is kept
        if x.ndim == 2:
            return x.unsqueeze(2)
        try:
            return x.view(x.shape[0], x.shape[1], _positions(x.shape))
        except RuntimeError:          # a layout that no view can flatten: copy
            return x.reshape(x.shape[0], x.shape[1], _positions(x.shape))

    def channels_view(self, x, channels_last=None):
        """(N, C, L) for contiguous x; for channels_last(_3d) x (or ``channels_last=True``, to view dy as x
        was) the (N * L, C, 1) view of its (N, *spatial, C) memory: every position is a sample of its
        channel and per-channel sums run down contiguous columns (measured on par with the strided
        (N, C, L) view in both routes on this project's CPU; it keeps channels_last a plain layout)."""
        if self.channels_last(x) if channels_last is None else channels_last:
            return x.movedim(1, -1).reshape(-1, x.shape[1], 1)
        return self.ncl_view(x)

    def from_channels(self, a3, shape, channels_last=False):
        if not channels_last:
            return a3.reshape(shape)
        return a3.view((shape[0],) + tuple(shape[2:]) + (shape[1],)).movedim(-1, 1)   # channels_last again

    def channels_last(self, x) -> bool:
        t = self.torch
        if x.ndim == 4:
            return not x.is_contiguous() and x.is_contiguous(memory_format=t.channels_last)
        if x.ndim == 5:
            return not x.is_contiguous() and x.is_contiguous(memory_format=t.channels_last_3d)
        return False

    def sum(self, a, axes, dtype=None):
        return a.sum(dim=axes, dtype=dtype, keepdim=True)


NUMPY = NumpyBackend()
_TORCH: TorchBackend | None = None


def backend_for(x) -> Backend:
    """The backend for x's array library; TypeError for anything else."""
    if isinstance(x, np.ndarray):
        return NUMPY
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(x, torch.Tensor):
        global _TORCH
        if _TORCH is None:
            _TORCH = TorchBackend()
        return _TORCH
    raise TypeError(f"x must be a numpy.ndarray or a torch.Tensor, got {type(x).__module__}.{type(x).__name__}")
