"""The one-way data flow: a package imports only from packages upstream of it."""

import ast
from pathlib import Path

ORDER = ["geometry", "body", "render", "data", "models", "training", "matching", "evaluation", "apps", "cli"]
# matching sits beside training, not after it: it takes a model file, never the trainer.
FORBIDDEN_EXTRA = {"matching": {"training"}, "evaluation": {"training"}, "apps": {"training"}}
ROOT = Path(__file__).resolve().parents[1] / "src" / "bodycorr"


def _imports(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("bodycorr."):
            out.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("bodycorr."):
                    out.add(a.name.split(".")[1])
    return out


def test_imports_flow_one_way():
    bad = []
    for i, pkg in enumerate(ORDER):
        allowed = set(ORDER[: i + 1]) | {"common"}
        allowed -= FORBIDDEN_EXTRA.get(pkg, set())
        for f in (ROOT / pkg).rglob("*.py"):
            for dep in _imports(f) - allowed:
                if dep in ORDER:
                    bad.append(f"{f.relative_to(ROOT)} imports bodycorr.{dep}")
    assert not bad, "upstream imports only:\n" + "\n".join(bad)


def test_common_imports_nothing_else():
    for f in (ROOT / "common").rglob("*.py"):
        assert _imports(f) <= {"common"}, f
