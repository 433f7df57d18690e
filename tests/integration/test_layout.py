"""The package's rooms follow the training step: no module imports one from a room above it,
and the bottom rooms need no fairseq. The rooms' order is written here, once."""
import ast
import os

import pytest

from tests.helpers import ROOT

PACKAGE = os.path.join(ROOT, "fairseq_gradvac")
# bottom to top: the algorithms, the per-direction gradients and their exchange, the batches,
# the fairseq task, evaluation and the study, Part I's offline analysis
ROOMS = ["combiners", "gradients", "data", "tasks", "evaluation", "analysis"]
PURE = {"combiners", "gradients"}  # pure PyTorch: no fairseq import, not even inside a function


def _modules():
    for folder, _, files in os.walk(PACKAGE):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                yield os.path.relpath(path, PACKAGE), path


def _imports(rel, path):
    """(line, absolute module name) of every import in the file, inside functions too."""
    package = ["fairseq_gradvac"] + os.path.dirname(rel).split(os.sep) if os.path.dirname(rel) else ["fairseq_gradvac"]
    for node in ast.walk(ast.parse(open(path).read(), path)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            if node.module is None:  # from . import x: the names are modules
                for alias in node.names:
                    yield node.lineno, f"{module}.{alias.name}"
            else:
                yield node.lineno, module


def _room(module):
    parts = module.split(".")
    return parts[1] if parts[0] == "fairseq_gradvac" and len(parts) > 1 and parts[1] in ROOMS else None


def test_every_module_is_in_a_room_and_the_root_holds_only_the_entry_points():
    for rel, _ in _modules():
        top = rel.split(os.sep)[0]
        assert top in ROOMS or rel in ("__init__.py", "__main__.py"), f"{rel} is in no room"
    assert set(os.listdir(PACKAGE)) - {"__pycache__"} == set(ROOMS) | {"__init__.py", "__main__.py"}


def test_no_import_runs_back_up():
    wrong = []
    for rel, path in _modules():
        mine = rel.split(os.sep)[0]
        if mine not in ROOMS:
            continue
        for line, module in _imports(rel, path):
            theirs = _room(module)
            if module == "fairseq_gradvac" or (theirs is not None and ROOMS.index(theirs) > ROOMS.index(mine)):
                wrong.append(f"{rel}:{line} ({mine}) imports {module}")
            if mine in PURE and module.split(".")[0] in ("fairseq", "fairseq_cli"):
                wrong.append(f"{rel}:{line} ({mine}, pure PyTorch) imports {module}")
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("source,module", [
    ("from ..tasks import checkpoints", "fairseq_gradvac.tasks"),
    ("from .similarity import COLUMNS", "fairseq_gradvac.gradients.similarity"),
    ("import fairseq_gradvac.analysis.figures", "fairseq_gradvac.analysis.figures"),
])
def test_relative_imports_resolve_to_their_room(tmp_path, source, module):
    """The check itself: a relative import of gradients/ resolves against gradients/."""
    path = tmp_path / "m.py"
    path.write_text(source + "\n")
    assert [m for _, m in _imports(os.path.join("gradients", "m.py"), str(path))] == [module]


def test_only_fairseq_changes_assigns_to_fairseq():
    """fairseq's modules and the model's methods are replaced in tasks/fairseq_changes.py
    only (the dataset's class in data/direction_batches.py, the function it calls)."""
    allowed = {"__class__": {os.path.join("data", "direction_batches.py")}}
    found = []
    for rel, path in _modules():
        tree = ast.parse(open(path).read(), path)
        from_fairseq = {(a.asname or a.name).split(".")[0] for node in ast.walk(tree)
                        if isinstance(node, (ast.Import, ast.ImportFrom))
                        and ((node.module or "") if isinstance(node, ast.ImportFrom) else node.names[0].name)
                        .split(".")[0] in ("fairseq", "fairseq_cli") for a in node.names}
        for node in ast.walk(tree):
            targets = node.targets if isinstance(node, ast.Assign) else \
                [node.target] if isinstance(node, (ast.AugAssign, ast.AnnAssign)) else []
            for t in targets:
                if not isinstance(t, ast.Attribute):
                    continue
                on_fairseq = isinstance(t.value, ast.Name) and t.value.id in from_fairseq
                if (on_fairseq or t.attr in ("all_reduce_grads", "__class__")) \
                        and rel != os.path.join("tasks", "fairseq_changes.py") and rel not in allowed.get(t.attr, ()):
                    found.append(f"{rel}:{node.lineno} assigns {ast.unparse(t)}")
    assert not found, "\n".join(found)


def test_the_listed_changes_are_in_place_after_import():
    from fairseq import checkpoint_utils
    from fairseq.distributed import utils as distributed_utils

    import fairseq_gradvac  # noqa: F401
    from fairseq_gradvac.tasks import checkpoints

    assert checkpoint_utils.load_checkpoint_to_cpu.wrapped_by_gradvac
    assert distributed_utils.broadcast_object.wrapped_by_gradvac
    assert checkpoint_utils.PathManager is checkpoints.RenamingPathManager
