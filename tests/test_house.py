"""The house: imports point down the layers, no cycles, no hidden imports, docstrings name every setting."""

import ast
import importlib
import inspect
import pkgutil
from pathlib import Path

import numpy as np
import pytest

import otgen

ROOT = Path(otgen.__file__).parent
# DESIGN.md "Layers", bottom to top; a module may import its own layer and those below
LAYERS = [("_validation", "_base"), ("data", "tokens"), ("autoencoder",), ("latent",), ("transport", "diffusion"),
          ("singular",), ("generate",), ("metrics",), ("experiments",), ("figures",), ("cli", "__main__")]
RANK = {name: r for r, names in enumerate(LAYERS) for name in names}
# imports kept inside a function body, each for an optional dependency (module -> imported names)
OPTIONAL_IMPORTS = {}


def _modules():
    return sorted(p for p in ROOT.rglob("*.py"))


def _room(module: str):
    """'otgen.transport._newton' -> 'transport'; the package face 'otgen' -> None."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path):
    """Two lists of (imported module, line): the otgen modules the file imports, and every import
    written inside a function body. ``from a.b import c`` counts as ``a.b.c`` when that is a module."""
    out, hidden = [], []

    def visit(node, in_function):
        for child in ast.iter_child_nodes(node):
            names = []
            if isinstance(child, ast.Import):
                names = [a.name for a in child.names]
            elif isinstance(child, ast.ImportFrom):
                base = _absolute(child.module, child.level, path)
                names = [f"{base}.{a.name}" if _is_module(f"{base}.{a.name}") else base for a in child.names]
            for n in names:
                if n == "otgen" or n.startswith("otgen."):
                    out.append((n, child.lineno))
                if in_function:
                    hidden.append((n, child.lineno))
            visit(child, in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))

    visit(ast.parse(path.read_text()), False)
    return out, hidden


def _absolute(module, level: int, path: Path) -> str:
    """The absolute name of ``from <level dots><module> import ...`` written in ``path``."""
    if not level:
        return module
    package = _module_name(path).split(".")
    package = package if path.name == "__init__.py" else package[:-1]
    package = package[: len(package) - (level - 1)]
    return ".".join(package + ([module] if module else []))


def _is_module(name: str) -> bool:
    rel = Path(*name.split("."))
    return (ROOT.parent / rel).with_suffix(".py").exists() or (ROOT.parent / rel / "__init__.py").exists()


def test_imports_point_down_the_layers():
    upward = []
    for path in _modules():
        src = _module_name(path)
        if _room(src) is None:
            continue
        for target, line in _imports(path)[0]:
            room = _room(target)
            if room is None or room == _room(src):
                continue
            if RANK[room] > RANK[_room(src)]:
                upward.append(f"{path.relative_to(ROOT.parent)}:{line} imports {target} (layer {room} is above "
                              f"{_room(src)})")
    assert not upward, "imports that point up the layers:\n" + "\n".join(upward)


def test_no_import_cycle():
    graph = {}
    for path in _modules():
        src = _module_name(path)
        graph[src] = {t for t, _ in _imports(path)[0] if t != src and _is_module(t)}
    state, stack, cycles = {}, [], []

    def dfs(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                dfs(nxt)
        stack.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            dfs(node)
    # a package's __init__ re-exporting its own submodules is the package's face, not a cycle
    real = [c for c in cycles if not _only_package_face(c)]
    assert not real, "import cycles:\n" + "\n".join(" -> ".join(c) for c in real)


def _only_package_face(cycle) -> bool:
    """A cycle that only passes through a package __init__ re-exporting its own submodules."""
    packages = {m for m in cycle if (ROOT.parent / Path(*m.split(".")) / "__init__.py").exists()}
    return bool(packages) and all(any(m == p or m.startswith(p + ".") for p in packages) for m in cycle)


def test_no_import_inside_a_function_body():
    hidden = []
    for path in _modules():
        for target, line in _imports(path)[1]:
            rel = str(path.relative_to(ROOT.parent))
            if target not in OPTIONAL_IMPORTS.get(rel, ()):
                hidden.append(f"{rel}:{line} imports {target} inside a function")
    assert not hidden, "imports inside function bodies (allowed only for optional dependencies):\n" + "\n".join(hidden)


def _public_classes():
    seen = {}
    for info in pkgutil.walk_packages(otgen.__path__, "otgen."):
        if any(part.startswith("_") for part in info.name.split(".")[1:]):
            continue
        mod = importlib.import_module(info.name)
        for name in getattr(mod, "__all__", ()):
            obj = getattr(mod, name)
            if inspect.isclass(obj) and obj.__module__.startswith("otgen") and not issubclass(obj, BaseException):
                seen[f"{obj.__module__}.{obj.__qualname__}"] = obj
    return sorted(seen.items())


@pytest.mark.parametrize("name, cls", _public_classes(), ids=lambda x: x if isinstance(x, str) else "")
def test_class_docstring_names_every_constructor_parameter(name, cls):
    if cls.__init__ is object.__init__ or getattr(cls, "__dataclass_fields__", None):
        return                                    # no constructor of its own; dataclasses document their fields
    doc = cls.__doc__
    assert doc, f"{name} has no docstring (a class attribute before the docstring hides it)"
    params = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    if issubclass(cls, __import__("torch").nn.Module):
        return                                    # network modules: documented by their estimator
    missing = [p for p in params if p not in doc]
    assert not missing, f"{name}'s docstring does not name the constructor parameter(s) {missing}"


def test_private_helpers_stay_in_their_module():
    """A name starting with _ is imported by no other module (shared helpers live in _base / _validation)."""
    crossing = []
    for path in _modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("otgen"):
                crossing += [f"{path.relative_to(ROOT.parent)}:{node.lineno} imports {node.module}.{a.name}"
                             for a in node.names if a.name.startswith("_") and a.name != "__version__"]
    assert not crossing, "private helpers used outside their module:\n" + "\n".join(crossing)


def _estimators():
    from otgen.autoencoder import ImageAutoencoder, VideoAutoencoder
    from otgen.diffusion import LatentDiffusion
    from otgen.generate import DiffusionGenerator, GaussianCodeGenerator, OTGenerator
    from otgen.latent import LatentSpace
    from otgen.metrics import MNISTClassifier
    from otgen.singular import SingularSetDetector
    from otgen.transport import SemiDiscreteOT

    x28, codes, clips = np.zeros((2, 28, 28), np.float32), np.zeros((2, 4), np.float32), np.zeros((2, 16, 1, 32, 32))
    return [(SemiDiscreteOT(tol=0.05), lambda e: e.assign(codes)), (SingularSetDetector(k=4), lambda e: e.predict(codes)),
            (OTGenerator(ot=SemiDiscreteOT(tol=0.05), k=4), lambda e: e.sample(3)),
            (DiffusionGenerator(LatentDiffusion(n_steps=5)), lambda e: e.sample(3)),
            (GaussianCodeGenerator(seed=2), lambda e: e.sample(3)), (LatentDiffusion(depth=2), lambda e: e.sample(3)),
            (ImageAutoencoder(latent_dim=3), lambda e: e.encode(x28)), (VideoAutoencoder(width=32), lambda e: e.encode(clips)),
            (MNISTClassifier(epochs=2), lambda e: e.predict(x28)), (LatentSpace(standardize=False), lambda e: e.transform(codes))]


@pytest.mark.parametrize("case", range(10))
def test_every_estimator_keeps_the_contract(case, tmp_path):
    import sklearn.base

    est, use = _estimators()[case]
    name = type(est).__name__
    twin = sklearn.base.clone(est)
    assert type(twin) is type(est) and repr(twin) == repr(est) and "=" in repr(est), name   # settings survive
    params = est.get_params(deep=True)
    assert set(est.get_params(deep=False)) <= set(params)
    est.set_params(**est.get_params(deep=False))
    with pytest.raises(otgen.NotFittedError):
        use(est)
    with pytest.raises(otgen.NotFittedError):
        est.save(tmp_path / "x.pt")
    assert not (tmp_path / "x.pt").exists()
    if "verbose" in est.get_params(deep=False):
        assert type(est)().verbose is False, f"{name}: the library is quiet unless asked (verbose=False)"
