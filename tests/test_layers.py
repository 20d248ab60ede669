"""The package's layering, read from the source with ast: no import cycle, no import against the
layer order of DESIGN.md ("The layers"), no library module importing a command module.

Every import counts, wherever it is written: at the top, inside a function (a lazy import hides
a cycle, it does not remove it), under `if TYPE_CHECKING:`, or as importlib.import_module("...").
A module the table below does not place fails the test: a new file must say where it belongs.
"""

import ast
import os

import pytest

import tinyroots

PACKAGE = "tinyroots"
ROOT = os.path.dirname(tinyroots.__file__)

# The layers, each with the layers it may import directly (what those import it may import
# too). Read top to bottom it is DESIGN.md's picture: nothing below model knows the model, the
# file formats (safetensors, tokenizer) know no model, the checkpoint layer is where files meet
# the model, and the training loop, fine-tuning, inspection and serving sit above it.
LAYERS = {
    "ref": [],                       # the NumPy reference of every kernel
    "random": [],
    "fileio": [],                    # atomic writes, one JSON reader
    "hub": [],                       # the local Hugging Face cache
    "metrics": [],                   # accuracy, F1, BLEU, perplexity
    "config": ["fileio"],            # dataclass -> command line / config file
    "kernels": ["ref"],              # dispatch: _C or ref
    "tensor": ["kernels"],
    "ops": ["tensor", "random"],
    "nn": ["ops"],
    "model": ["nn"],
    "optim": ["ops"],
    "safetensors": ["fileio"],       # a file format: knows no model
    "tokenizer": ["fileio", "hub"],  # BPE and its file formats: knows no model
    "data": ["tokenizer", "config"],
    "checkpoint": ["model", "safetensors", "tokenizer", "hub"],
    "training": ["checkpoint", "optim", "config", "data"],
    "distributed": ["training"],
    "finetune": ["training", "distributed", "metrics"],
    "inspect": ["checkpoint", "metrics", "config"],
    "serve": ["checkpoint", "finetune"],
    PACKAGE: ["finetune", "inspect", "serve"],   # tinyroots/__init__.py: the public API
}

# Command modules: `python -m tinyroots.X`. They may import any library module; nothing
# imports them (a command's module is not a library, DESIGN.md).
COMMANDS = {"train", "generate", "chat", "info", "tune", "evaluate", "finetune.__main__",
            "data.__main__", "inspect.__main__", "serve.__main__"}

# Known edges against the rules, each with the reason it is still there. Empty is the goal.
ALLOWED = {}


# ---------------------------------------------------------------------------------------------
# reading the imports


def find_modules(root, package):
    """{dotted module name: path} for every .py file under root; compiled extensions (a .pyx
    or a built .so, and _C) are the set of their names, leaves that import nothing."""
    modules, extensions = {}, set()
    for folder, _, files in os.walk(root):
        rel = os.path.relpath(folder, root)
        prefix = package if rel == "." else package + "." + rel.replace(os.sep, ".")
        for f in files:
            stem = f.split(".")[0]
            if f.endswith(".py"):
                name = prefix if stem == "__init__" else prefix + "." + stem
                modules[name] = os.path.join(folder, f)
            elif f.endswith((".pyx", ".so", ".pyd")):
                extensions.add(prefix + "." + stem)
    return modules, extensions | {package + "._C"}


def _imported_names(tree):
    """(level, module, [names]) for every import in the tree, at any depth."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield 0, alias.name, []
        elif isinstance(node, ast.ImportFrom):
            yield node.level, node.module or "", [a.name for a in node.names]
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(
                node.func, "id", None)) in ("import_module", "__import__") and node.args \
                and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
            yield 0, node.args[0].value, []


def import_graph(root=ROOT, package=PACKAGE):
    """{module: set of the package's modules it imports}."""
    modules, extensions = find_modules(root, package)
    graph = {}
    for name, path in modules.items():
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read(), path)
        is_package = os.path.basename(path) == "__init__.py"
        here = name if is_package else name.rpartition(".")[0]
        targets = set()
        for level, module, names in _imported_names(tree):
            if level:
                base = here.split(".")[:len(here.split(".")) - (level - 1)]
                module = ".".join(base + ([module] if module else []))
            if module.split(".")[0] != package:
                continue
            # `from . import ops` imports the module tinyroots.ops, not just the package
            candidates = [f"{module}.{n}" for n in names] or [module]
            for c in candidates:
                if c in extensions or (c not in modules and module in extensions):
                    continue
                while c not in modules and "." in c:
                    c = c.rpartition(".")[0]
                if c in modules and c != name:
                    targets.add(c)
        graph[name] = targets
    return graph


# ---------------------------------------------------------------------------------------------
# the checks


def find_cycle(graph):
    """One import cycle as [a, b, ..., a], or None. Iterative DFS (no recursion limit)."""
    state = {}                       # 1: on the current path, 2: done
    for start in sorted(graph):
        if state.get(start):
            continue
        path, stack = [start], [iter(sorted(graph[start]))]
        state[start] = 1
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            elif not state.get(nxt):
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(sorted(graph.get(nxt, ()))))
    return None


def layer_of(module, package=PACKAGE):
    """'tinyroots.tokenizer.bpe' -> 'tokenizer'; a command module -> 'command'."""
    if module == package:
        return package
    rel = module[len(package) + 1:]
    if rel in COMMANDS:
        return "command"
    return rel.split(".")[0]


def allowed_layers(layer):
    """The layers `layer` may import: itself and everything below it, transitively."""
    seen, todo = {layer}, list(LAYERS.get(layer, ()))
    while todo:
        below = todo.pop()
        if below not in seen:
            seen.add(below)
            todo += LAYERS.get(below, ())
    return seen


def layer_violations(graph, package=PACKAGE):
    """['a imports b: why'] for every import against the layer table."""
    problems = []
    for module, targets in sorted(graph.items()):
        layer = layer_of(module, package)
        for target in sorted(targets):
            if (module, target) in ALLOWED:
                continue
            target_layer = layer_of(target, package)
            if target_layer == "command":
                problems.append(f"{module} imports {target}: a command module")
            elif layer != "command" and target_layer not in allowed_layers(layer):
                problems.append(f"{module} imports {target}: layer '{layer}' may use only "
                                f"{', '.join(sorted(allowed_layers(layer) - {layer}))}")
    return problems


# ---------------------------------------------------------------------------------------------
# the tests


@pytest.fixture(scope="module")
def graph():
    return import_graph()


def test_every_module_has_a_layer(graph):
    unplaced = sorted(m for m in graph if layer_of(m) not in LAYERS and layer_of(m) != "command")
    assert not unplaced, (f"modules in no layer: {unplaced}; add them to LAYERS (or COMMANDS) "
                          "in tests/test_layers.py")
    missing = sorted(c for c in COMMANDS if f"{PACKAGE}.{c}" not in graph)
    assert not missing, f"COMMANDS names modules that do not exist: {missing}"


def test_no_import_cycle(graph):
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_imports_follow_the_layers(graph):
    problems = layer_violations(graph)
    assert not problems, "\n".join(problems)


def test_the_known_exceptions_still_exist(graph):
    stale = [edge for edge in ALLOWED if edge[1] not in graph.get(edge[0], ())]
    assert not stale, f"ALLOWED lists edges that are gone, remove them: {stale}"


def test_the_checks_catch_what_they_should(tmp_path):
    """The checker on a made-up package: a lazy import cycle, a model importing the checkpoint
    layer, a library importing a command, and importlib strings are all found."""
    pkg = tmp_path / PACKAGE
    (pkg / "sub").mkdir(parents=True)
    files = {
        "__init__.py": "",
        "model.py": "def f():\n    from .checkpoint import load\n",     # lazy, against layers
        "checkpoint.py": "from . import model\nfrom .tokenizer import x\n",
        "tokenizer.py": "import importlib\nimportlib.import_module('tinyroots.train')\n",
        "train.py": "from .sub import helper\n",
        "sub/__init__.py": "",
        "sub/helper.py": "from ..tokenizer import x\nfrom .. import _C\n",
    }
    for rel, text in files.items():
        (pkg / rel).write_text(text)
    g = import_graph(str(pkg), PACKAGE)
    assert g[f"{PACKAGE}.model"] == {f"{PACKAGE}.checkpoint"}
    assert g[f"{PACKAGE}.sub.helper"] == {f"{PACKAGE}.tokenizer"}     # _C is a leaf
    assert find_cycle(g) == [f"{PACKAGE}.checkpoint", f"{PACKAGE}.model",
                             f"{PACKAGE}.checkpoint"]
    problems = "\n".join(layer_violations(g))
    assert f"{PACKAGE}.model imports {PACKAGE}.checkpoint: layer 'model'" in problems
    assert f"{PACKAGE}.tokenizer imports {PACKAGE}.train: a command module" in problems
    assert find_cycle({"a": {"b"}, "b": set()}) is None
