"""Advice for a human: code in a submission that looks like tampering with grading.

A flag never changes a score: scores come from the trusted grader, and the sandbox makes tampering
useless. Flags point an instructor at submissions worth reading (and a certificate waits until a person
has resolved them). They must not fire on honest code: assigning ``self.x`` or ``ctx.saved = ...`` is
ordinary; patching an imported module is not.
"""
from __future__ import annotations

import ast
import re

# Modules and names whose use in a solution cell has no place in an honest answer to this course.
MODULE_REASONS = {
    "ctypes": "uses ctypes", "gc": "inspects the garbage collector", "inspect": "inspects the interpreter",
    "subprocess": "starts processes", "signal": "handles signals", "socket": "opens sockets",
    "importlib": "imports by name at run time", "builtins": "touches builtins", "pickle": "unpickles data",
    "marshal": "loads marshalled code", "base64": "decodes encoded text", "codecs": "decodes encoded text",
    "zlib": "decompresses data", "sqlite3": "opens databases", "shutil": "copies or deletes files",
    "pty": "starts processes", "multiprocessing": "starts processes", "threading": "starts threads",
    "autograder": "refers to the autograder", "nbgrader": "refers to nbgrader", "bnlib": "imports bnlib",
}
NAME_REASONS = {
    "exec": "executes code built at run time", "eval": "evaluates code built at run time",
    "compile": "compiles code at run time", "__import__": "imports by name at run time",
    "globals": "rewrites the global namespace", "setattr": "sets attributes by name",
    "__builtins__": "touches builtins", "get_ipython": "reconfigures IPython",
    "breakpoint": "calls the debugger",
}
SYS_ATTRS = {
    "modules": "touches sys.modules", "meta_path": "installs an import hook", "path_hooks": "installs an import hook",
    "displayhook": "changes how results are displayed", "excepthook": "changes error handling",
    "settrace": "traces execution", "setprofile": "traces execution", "_getframe": "walks the call stack",
    "setrecursionlimit": "changes the recursion limit", "addaudithook": "installs an audit hook",
    "stdout": "replaces sys.stdout", "stderr": "replaces sys.stderr",
}
ATTR_REASONS = {
    "_exit": "kills the kernel (os._exit)", "kill": "sends signals", "killpg": "sends signals",
    "f_back": "walks the call stack", "f_locals": "reads other frames", "f_globals": "reads other frames",
    "tb_frame": "walks the call stack", "gi_frame": "walks the call stack",
    "input_transformers_post": "rewrites cells before they run", "input_transformers_cleanup": "rewrites cells",
    "ast_transformers": "rewrites cells before they run", "ast_node_interactivity": "changes which results show",
    "display_formatter": "changes how results are displayed", "events": "registers IPython callbacks",
    "fork": "starts processes", "system": "runs shell commands", "popen": "runs shell commands",
    "chmod": "changes file permissions", "rmtree": "deletes files", "unlink": "deletes files",
    "__subclasses__": "walks the class hierarchy", "__globals__": "reads a function's globals",
    "__closure__": "reads a function's closure", "__code__": "rewrites or reads code objects",
}
ATTR_REASONS.update({
    "home": "looks for home folders", "expanduser": "looks for home folders", "getpwuid": "looks for home folders",
    "getsitepackages": "looks for site-packages", "getusersitepackages": "looks for site-packages",
    "gettempdir": "looks for the temporary folder", "posix_fallocate": "reserves disk space",
    "ftruncate": "reserves disk space", "listxattr": "reads file attributes",
})
# Words in string constants that name the grader's, the course's or the machine's files.
STRING_REASONS = {
    ".ipython": "IPython's configuration", ".jupyter": "Jupyter's configuration", "nbgrader_config": "nbgrader's configuration",
    "JUPYTER_": "Jupyter's configuration", "sitecustomize": "site-packages", ".pth": "site-packages",
    "site-packages": "site-packages", "gradebook": "the gradebook", "solutions": "the course's solutions",
    "submitted": "other submissions", "autograded": "other submissions", "result.json": "grading results",
    "/proc": "other processes", ".cache": "cached files", "bncourse": "the grader",
}
OWN = {"self", "ctx", "cls"}   # attributes of one's own objects are ordinary
MAGIC = re.compile(r"^\s*(%%?|!)(\w*)", re.M)


def _imported_modules(tree) -> dict[str, str]:
    """Names bound to imported modules (``import numpy as np`` -> {'np': 'numpy'})."""
    names = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                names[(a.asname or a.name).split(".")[0]] = a.name
        elif isinstance(node, ast.ImportFrom) and node.module:
            for a in node.names:
                names[a.asname or a.name] = f"{node.module}.{a.name}"
    return names


def review_source(source: str) -> list[str]:
    """Reasons to look at one cell's code (empty for ordinary code)."""
    reasons = set()
    for m in MAGIC.finditer(source):
        kind = m.group(1)
        reasons.add("runs shell commands" if kind == "!" else f"uses the IPython magic {kind}{m.group(2)}")
    code = MAGIC.sub(lambda m: "#" + m.group(0), source)
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return sorted(reasons)
    modules = _imported_modules(tree)
    for full in modules.values():
        root = full.split(".")[0]
        if root in MODULE_REASONS:
            reasons.add(MODULE_REASONS[root])
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and node.id in NAME_REASONS:
            reasons.add(NAME_REASONS[node.id])
        elif isinstance(node, ast.Attribute):
            base = node.value
            own = isinstance(base, ast.Name) and base.id in OWN
            if node.attr in ATTR_REASONS and not own:
                reasons.add(ATTR_REASONS[node.attr])
            if node.attr in SYS_ATTRS and isinstance(base, ast.Name) and modules.get(base.id) == "sys":
                reasons.add(SYS_ATTRS[node.attr])
            if isinstance(node.ctx, ast.Store) and isinstance(base, ast.Name) and base.id in modules:
                reasons.add(f"assigns {base.id}.{node.attr} (patches the module {modules[base.id]})")
            if isinstance(node.ctx, (ast.Store, ast.Del)) and isinstance(base, ast.Attribute) \
                    and isinstance(base.value, ast.Name) and base.value.id in modules:
                reasons.add(f"assigns {base.value.id}.{base.attr}.{node.attr} (patches a module)")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            for word, what in STRING_REASONS.items():
                if word in node.value:
                    reasons.add(f"mentions {word!r} ({what})")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "open":
            if node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str) \
                    and node.args[0].value.startswith(("/", "..", "~")):
                reasons.add("opens files outside the notebook's folder")
    return sorted(reasons)


def review(nb) -> list[str]:
    """Reasons to flag a submission for a human: code in its cells that tampers with grading.

    Only cells a learner writes are read (test cells and locked cells are replaced by the instructor's).
    """
    reasons = set()
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        meta = cell.metadata.get("nbgrader", {})
        if (meta.get("grade") or meta.get("locked")) and not meta.get("solution"):
            continue
        reasons.update(review_source(cell.source))
    return sorted(reasons)
