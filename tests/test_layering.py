"""Imports flow one way (docs/ARCHITECTURE.md): probes and geo are leaves, the planner is
pure, backends know nothing of probes, and nothing but the CLI layer imports the runtime."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROJECT = ("edge", "probes", "dns_backends", "geo")

# module prefix -> project prefixes it may import (besides itself). Most specific wins.
ALLOWED: dict[str, tuple[str, ...]] = {
    "probes": ("probes",),
    "geo": ("geo",),
    "edge.plan": (),
    "edge.plancodec": ("edge.plan",),
    # replace a file whole: a leaf any writer of files may use (geo stays a leaf of its own)
    "edge.atomicfile": (),
    "edge.config": ("edge.config", "probes.spec", "probes.measurement", "geo"),
    "edge.health": ("edge.health", "edge.config.schema", "probes.measurement", "probes.bus",
                    "probes.cadence"),
    "edge.steering": ("edge.steering", "edge.health.state", "edge.health.machine", "edge.plan",
                      "edge.config", "geo", "probes.measurement", "edge.atomicfile",
                      "edge.plancodec"),
    "dns_backends": ("dns_backends", "edge.plan", "edge.config.schema", "geo",
                     "edge.atomicfile"),
    # BGP speakers: render the plan's announcements; they share the backend result types.
    "edge.anycast": ("edge.anycast", "edge.plan", "edge.config.schema", "dns_backends.base",
                     "edge.atomicfile"),
}
# Only these may import the composition root and the CLI.
COMPOSERS = ("edge.cli", "edge.commands", "edge.lab", "edge.__main__", "edge.runtime")


def _modules() -> dict[str, Path]:
    out = {}
    for pkg in PROJECT:
        for path in (ROOT / pkg).rglob("*.py"):
            rel = path.relative_to(ROOT).with_suffix("")
            parts = list(rel.parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
    return [(ln, m) for ln, m in found if m.split(".")[0] in PROJECT]


def _under(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def _rule(module: str) -> tuple[str, ...] | None:
    best = None
    for prefix in ALLOWED:
        if _under(module, prefix) and (best is None or len(prefix) > len(best)):
            best = prefix
    return ALLOWED[best] if best is not None else None


def test_imports_flow_one_way() -> None:
    violations = []
    for module, path in sorted(_modules().items()):
        allowed = _rule(module)
        for line, target in _imports(path):
            where = f"{path.relative_to(ROOT)}:{line}: {module} imports {target}"
            if (_under(target, "edge.runtime") or _under(target, "edge.cli")) and not any(
                    _under(module, c) for c in COMPOSERS):
                violations.append(where + " (only the CLI layer may)")
            elif allowed is not None and not any(_under(target, a) for a in allowed):
                violations.append(where)
    assert not violations, "layering violations:\n" + "\n".join(violations)


def test_the_checker_sees_imports() -> None:
    # Guards against a checker that silently finds nothing.
    mods = _modules()
    assert "edge.runtime" in mods and "probes.agent" in mods
    assert any(t.startswith("edge.steering.") for _, t in _imports(mods["edge.runtime"]))
