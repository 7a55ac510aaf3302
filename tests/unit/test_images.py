"""The Dockerfiles cannot be built here; check what can be: the paths they copy, their extras, their users."""

from __future__ import annotations

import ast
import importlib.metadata as md
import re
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[2]
IMAGES = REPO / "images"
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
# Which extras each image installs, and the modules its processes start from.
COMPONENTS = {
    "gateway": ({"gateway"}, ["nexa_gateway.__main__", "nexa_gateway.main", "nexa.cli.main"]),
    "operator": ({"operator"}, ["nexa_operator.__main__", "nexa_operator.handlers"]),
    "engine-cpu": ({"engines"}, ["nexa_engines.worker", "nexa_engines.run_one"]),
    "engine-cuda": ({"gpu"}, ["nexa_engines.worker", "nexa_engines.run_one", "nexa_engines.serve.__main__"]),
}
FIRST_PARTY = {
    "nexa",
    "nexa_forge",
    "nexa_store",
    "nexa_gateway",
    "nexa_engines",
    "nexa_operator",
    "nexa_kernels",
}
SOURCE_ROOTS = [REPO / "sdk", REPO / "store", REPO / "api-gateway", REPO / "engines", REPO / "operator"]


def dockerfile(name: str) -> str:
    return (IMAGES / f"{name}.Dockerfile").read_text()


def instructions(text: str) -> list[tuple[str, str]]:
    joined = re.sub(r"\\\n", " ", text)
    lines = [
        line.strip() for line in joined.splitlines() if line.strip() and not line.strip().startswith("#")
    ]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "") for line in lines]


@pytest.mark.parametrize("name", sorted(COMPONENTS))
def test_every_path_copied_from_the_build_context_exists(name: str) -> None:
    copies = [args for op, args in instructions(dockerfile(name)) if op in ("COPY", "ADD")]
    assert copies
    for args in copies:
        parts = [p for p in args.split() if not p.startswith("--")]
        if "--from=" in args:
            continue
        for source in parts[:-1]:
            assert (REPO / source).exists(), f"{name}.Dockerfile copies {source}, which does not exist"


@pytest.mark.parametrize("name", sorted(COMPONENTS))
def test_multi_stage_pinned_bases_and_a_non_root_user(name: str) -> None:
    text = dockerfile(name)
    steps = instructions(text)
    args = dict(re.findall(r"^ARG (\w+)=(\S+)$", text, re.M))
    bases = [a.split()[0] for op, a in steps if op == "FROM"]
    assert len(bases) >= 2, "multi-stage: build tools stay out of the final image"
    for base in bases:
        image = re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), m.group(0)), base)
        if ":" not in image:
            continue  # a stage alias
        tag = image.rsplit(":", 1)[1]
        assert re.match(r"^\d+\.\d+(\.\d+)?", tag) and tag != "latest", f"{name}: unpinned base {image}"
    final = text[text.rindex("\nFROM ") :]
    users = re.findall(r"^USER (\S+)$", final, re.M)
    assert users and users[-1].split(":")[0] not in ("0", "root"), f"{name}: the final stage runs as root"
    assert re.match(r"^\d+$", users[-1].split(":")[0]), "a numeric uid, so runAsNonRoot can verify it"


def installed_extras(name: str) -> set[str]:
    installs = [a for op, a in instructions(dockerfile(name)) if op == "RUN" and "pip install" in a]
    extras = set()
    for line in installs:
        for group in re.findall(r'"\.\[([^\]]+)\]"', line):
            extras |= {e.strip() for e in group.split(",")}
    return extras


def closure(extras: set[str]) -> set[str]:
    """Distribution names (normalised) the package with these extras pulls in, recursively."""
    wanted: list[Requirement] = [Requirement(r) for r in PYPROJECT["project"]["dependencies"]]
    optional = PYPROJECT["project"]["optional-dependencies"]
    pending = list(extras)
    seen_extras: set[str] = set()
    while pending:
        extra = pending.pop()
        if extra in seen_extras:
            continue
        seen_extras.add(extra)
        for spec in optional[extra]:
            req = Requirement(spec)
            if req.name == PYPROJECT["project"]["name"]:
                pending.extend(req.extras)
            else:
                wanted.append(req)
    names: set[str] = set()
    while wanted:
        req = wanted.pop()
        name = _norm(req.name)
        if name in names:
            continue
        names.add(name)
        try:
            requires = md.requires(req.name) or []
        except md.PackageNotFoundError:
            continue
        for sub in requires:
            sub_req = Requirement(sub)
            environments = [{"extra": e} for e in req.extras] or [{"extra": ""}]
            if sub_req.marker is None or any(sub_req.marker.evaluate(env) for env in environments):
                wanted.append(sub_req)
    return names


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def module_file(module: str) -> Path | None:
    rel = Path(*module.split("."))
    for root in SOURCE_ROOTS:
        for candidate in (root / rel.with_suffix(".py"), root / rel / "__init__.py"):
            if candidate.is_file():
                return candidate
    return None


def third_party_imports(entry_points: list[str]) -> set[str]:
    """Top-level third-party modules imported by the modules reachable from the entry points.

    Imports inside ``try`` blocks that catch ImportError are optional and not counted.
    """
    found: set[str] = set()
    todo, done = list(entry_points), set()
    while todo:
        module = todo.pop()
        if module in done:
            continue
        done.add(module)
        path = module_file(module)
        if path is None:
            continue
        tree = ast.parse(path.read_text())
        optional = {
            id(node)
            for tr in ast.walk(tree)
            if isinstance(tr, ast.Try)
            and any("ImportError" in ast.unparse(h.type or ast.Name("x")) for h in tr.handlers)
            for stmt in tr.body
            for node in ast.walk(stmt)
        }
        for node in ast.walk(tree):
            if id(node) in optional:
                continue
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level > 0:
                package = module if path.name == "__init__.py" else module.rpartition(".")[0]
                for _ in range(node.level - 1):
                    package = package.rpartition(".")[0]
                names = [f"{package}.{node.module}" if node.module else package]
            for name in names:
                top = name.split(".")[0]
                if top in FIRST_PARTY:
                    todo.append(name)
                elif top not in sys.stdlib_module_names:
                    found.add(top)
    return found


@pytest.mark.parametrize("name", sorted(COMPONENTS))
def test_each_image_installs_its_own_extras_and_they_cover_its_imports(name: str) -> None:
    extras, entry_points = COMPONENTS[name]
    assert installed_extras(name) == extras
    available = closure(extras)
    distributions = md.packages_distributions()
    missing = {}
    for module in third_party_imports(entry_points):
        dists = {_norm(d) for d in distributions.get(module, [module])}
        if not dists & available:
            missing[module] = sorted(dists)
    assert not missing, f"{name}: imports not installed by nexa-forge[{','.join(sorted(extras))}]: {missing}"


@pytest.mark.parametrize("name", ["gateway", "operator"])
def test_no_ml_stack_in_the_gateway_or_operator_images(name: str) -> None:
    available = closure(COMPONENTS[name][0])
    assert not {"torch", "transformers", "deepspeed", "nvidia-cudnn-cu12"} & available


def test_the_cuda_image_has_torch_and_the_cpu_image_does_not() -> None:
    assert "torch" in closure(COMPONENTS["engine-cuda"][0])
    assert "torch" not in closure(COMPONENTS["engine-cpu"][0])
