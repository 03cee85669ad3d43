"""The repository's layout rules, checked on every run (issue 11).

* No private imports across packages: ``benchmarks/``, ``models/`` and ``notebooks/`` use
  ``mtbkd_jax``'s public modules only (no module or name starting with ``_``). The package's
  own test-suite is white-box by design (it reaches every ``raise``, the epoch-order scheme and
  the device placement) and is the one exception.
* ``infer/`` does not import the canonical model (``mtbkd_jax.model``) and its modules import
  one another without a cycle.
* In ``src/``: no file over 400 lines and no function over 80 lines of code (its docstring
  not counted).
"""

import ast
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "mtbkd_jax"


def _sources() -> dict[str, str]:
    """Python source of benchmarks/, models/ and the notebooks' code cells, by file."""
    out = {}
    for folder in ("benchmarks", "models"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            out[str(path.relative_to(ROOT))] = path.read_text()
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        cells = json.loads(path.read_text())["cells"]
        code = [
            "".join(c["source"]) for c in cells if c["cell_type"] == "code"
        ]  # magics are not Python: drop lines that start with % or !
        text = "\n".join(
            line for cell in code for line in cell.splitlines() if not line.startswith(("%", "!"))
        )
        out[str(path.relative_to(ROOT))] = text
    return out


def private_imports(source: str) -> list[str]:
    """``mtbkd_jax`` imports of a private module or name in ``source``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] == "mtbkd_jax" and any(p.startswith("_") for p in parts[1:]):
                found.append(name)
    return found


def test_the_checker_finds_a_private_import():
    assert private_imports("from mtbkd_jax.infer._orders import EpochOrders") == [
        "mtbkd_jax.infer._orders",
        "mtbkd_jax.infer._orders.EpochOrders",
    ]
    assert private_imports("import mtbkd_jax._paths as p") == ["mtbkd_jax._paths"]
    assert private_imports("from mtbkd_jax.infer import run_sgmcmc, gradient_estimator") == []


def test_no_private_imports_outside_the_package():
    sources = _sources()
    assert any(name.startswith("benchmarks/") for name in sources)
    assert any(name.endswith(".ipynb") for name in sources)
    offenders = {name: private_imports(text) for name, text in sources.items()}
    assert not {k: v for k, v in offenders.items() if v}


def test_infer_does_not_import_the_model_and_has_no_import_cycle():
    graph = {}
    for path in (SRC / "infer").glob("*.py"):
        name = "mtbkd_jax.infer" if path.stem == "__init__" else f"mtbkd_jax.infer.{path.stem}"
        deps = set()
        for node in ast.parse(path.read_text()).body:  # module level (not TYPE_CHECKING)
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("mtbkd_jax"):
                deps.add(node.module)
        assert "mtbkd_jax.model" not in deps, name
        graph[name] = deps
    inner = {k: {d for d in v if d in graph and d != "mtbkd_jax.infer"} for k, v in graph.items()}
    state: dict[str, int] = {}  # 1 on the path, 2 done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for dep in inner.get(node, ()):
            assert state.get(dep) != 1, "import cycle: " + " -> ".join([*path, dep])
            if dep not in state:
                visit(dep, [*path, dep])
        state[node] = 2

    for node in inner:
        if node not in state:
            visit(node, [node])


def _code_lines(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    body = node.body
    first = body[0]
    is_docstring = isinstance(first, ast.Expr) and isinstance(
        getattr(first, "value", None), ast.Constant
    )
    start = first.end_lineno + 1 if is_docstring and len(body) > 1 else first.lineno
    return node.end_lineno - start + 1


def test_source_files_and_functions_stay_small():
    too_long_files, too_long_functions = [], []
    for path in SRC.rglob("*.py"):
        text = path.read_text()
        if len(text.splitlines()) > 400:
            too_long_files.append(str(path.relative_to(ROOT)))
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and _code_lines(node) > 80:
                too_long_functions.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}")
    assert not too_long_files
    assert not too_long_functions
