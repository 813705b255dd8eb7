"""The package's layers point one way: no module imports a module of a layer above its own, and
no modules import each other in a circle (inside a layer either)."""

import ast
import os

from conftest import ROOT

PACKAGE = os.path.join(ROOT, "recbole_cllm4rec")
# bottom to top; a module may import its own layer and those below (README, "Package layout")
LAYERS = [
    {"batching", "coldstart", "distributed", "evaluator", "logs", "properties", "validation"},
    {"llm"},
    {"data"},
    {"model"},
    {"checkpoint", "trainer"},
    {"compat", "registry", "quick_start", "__init__"},
]


def layer_of(module):
    """Layer index of ``recbole_cllm4rec.<part>...`` (its first part names it)."""
    part = module.split(".")[1] if "." in module else "__init__"
    found = [i for i, names in enumerate(LAYERS) if part in names]
    assert found, f"recbole_cllm4rec.{part} has no layer in tests/test_layers.py: add it to LAYERS"
    return found[0]


def internal_imports(path):
    """Modules of this package that ``path`` imports, at the top or inside a function."""
    tree = ast.parse(open(path, encoding="utf-8").read())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            # ``from recbole_cllm4rec import compat`` imports the module recbole_cllm4rec.compat
            names = [
                f"{node.module}.{a.name}" if node.module == "recbole_cllm4rec" else node.module for a in node.names
            ]
        else:
            continue
        yield from (n for n in names if n.startswith("recbole_cllm4rec"))


def test_no_module_imports_a_higher_layer():
    upward = []
    for folder, _, files in os.walk(PACKAGE):
        for name in files:
            if not name.endswith(".py"):
                continue
            path = os.path.join(folder, name)
            module = "recbole_cllm4rec." + os.path.relpath(path, PACKAGE)[:-3].replace(os.sep, ".")
            for target in internal_imports(path):
                if layer_of(target) > layer_of(module):
                    upward.append(f"{module} -> {target}")
    assert not upward, "imports pointing up a layer:\n" + "\n".join(upward)


def module_name(path):
    return "recbole_cllm4rec." + os.path.relpath(path, PACKAGE)[:-3].replace(os.sep, ".").removesuffix(".__init__")


def test_no_import_cycle():
    graph = {}
    for folder, _, files in os.walk(PACKAGE):
        for name in (f for f in files if f.endswith(".py")):
            path = os.path.join(folder, name)
            graph[module_name(path)] = set(internal_imports(path))
    known = set(graph)
    # ``from recbole_cllm4rec.model.cllm4rec import X`` names a module; a name inside one maps to it
    graph = {m: {t if t in known else t.rsplit(".", 1)[0] for t in targets} - {m} for m, targets in graph.items()}
    cycles, state = [], {}

    def visit(module, path):
        state[module] = "open"
        for target in sorted(graph.get(module, ())):
            if state.get(target) == "open":
                cycles.append(" -> ".join(path[path.index(target) :] + [target]))
            elif target not in state:
                visit(target, path + [target])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not cycles, "modules importing each other in a circle:\n" + "\n".join(cycles)
