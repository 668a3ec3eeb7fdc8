"""The import graph of minidp/: no circle, no function-level import that dodges one, and light modules stay light.

Run: pytest -q tests/test_imports.py
"""

import ast
import functools
import json
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "minidp"


def module_name(path):
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def minidp_imports(node, package):
    """The minidp modules an import statement names (`from minidp import a, b`, `from minidp.a import x`, and
    package-relative forms), resolved to module names that exist."""
    names = []
    if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("minidp"):
        for alias in node.names:
            full = f"{node.module}.{alias.name}"
            names.append(full if (PACKAGE.parent / (full.replace(".", "/") + ".py")).exists()
                         or (PACKAGE.parent / full.replace(".", "/")).is_dir() else node.module)
    elif isinstance(node, ast.Import):
        names += [a.name for a in node.names if a.name.startswith("minidp")]
    return names


@functools.cache
def graph():
    """{module: (top-level minidp imports, function-level minidp imports)} over every module of the package."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text())
        top = [m for node in tree.body for m in minidp_imports(node, module_name(path))]
        inner = [m for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
                 for sub in ast.walk(node) for m in minidp_imports(sub, module_name(path))]
        out[module_name(path)] = (top, inner)
    return out


def test_the_import_graph_of_minidp_has_no_circle():
    edges = {m: [d for d in top if d != m and d != "minidp"] for m, (top, _) in graph().items()}
    # a package's own __init__ importing its submodules is not a circle: the submodules never import it back
    state = {}

    def visit(m, path):
        state[m] = "open"
        for d in edges.get(m, []):
            if state.get(d) == "open":
                raise AssertionError(f"import circle: {' -> '.join(path + [m, d])}")
            if d not in state:
                visit(d, path + [m])
        state[m] = "done"

    for m in edges:
        if m not in state:
            visit(m, [])
    assert len(edges) > 25  # the walk saw the package


def test_no_function_level_import_of_minidp():
    assert {m: inner for m, (_, inner) in graph().items() if inner} == {}


def test_the_bottom_module_imports_nothing_of_minidp():
    assert graph()["minidp.errors"] == ([], [])


IMPORTS = ["minidp.ct_estimation", "minidp.recipe", "train, sample, fit_scaling"]

# One fresh interpreter, started in the repository root (so the scripts import too), imports torch (which each of
# IMPORTS imports anyway: it loads nothing of minidp, matplotlib or FSDP) and then forks once per entry of IMPORTS,
# so each import starts from the same clean state without paying torch's ~2 s start-up again.
LOADED = """
import json, os, sys, torch
result = {}
for modules in json.loads(sys.argv[1]):
    read, write = os.pipe()
    if os.fork() == 0:
        os.close(read)
        for name in modules.split(","):
            __import__(name.strip())
        os.write(write, json.dumps(sorted(sys.modules)).encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        result[modules] = json.loads(pipe.read())
    assert os.wait()[1] == 0, modules
print(json.dumps(result))
"""


@functools.cache
def loaded():
    proc = subprocess.run([sys.executable, "-c", LOADED, json.dumps(IMPORTS)], capture_output=True, text=True,
                          cwd=PACKAGE.parent)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


def loaded_by(modules, prefix="minidp"):
    """The modules under `prefix` that importing `modules` (an entry of IMPORTS) loads in a fresh interpreter."""
    return {m for m in loaded()[modules] if m.startswith(prefix)}


def test_ct_estimation_loads_no_model_or_data_module_and_recipe_no_renderer():
    heavy = {"minidp.dit", "minidp.moe", "minidp.upcycle", "minidp.tasks", "minidp.world", "minidp.render",
             "minidp.data", "minidp.vae", "minidp.readers", "minidp.checkpoint"}
    assert not loaded_by("minidp.ct_estimation") & heavy
    assert not loaded_by("minidp.recipe") & {"minidp.world", "minidp.render", "minidp.data", "minidp.readers"}


def test_the_scripts_start_without_matplotlib_or_fsdp():
    # each costs ~1 s of the start-up of every train.py / sample.py process (the suite starts about a hundred):
    # viz imports pyplot on the first figure, parallel imports FSDP in shard() and the full-state helpers
    assert not loaded_by("train, sample, fit_scaling", prefix="matplotlib")
    assert not loaded_by("train, sample, fit_scaling", prefix="torch.distributed.fsdp")
