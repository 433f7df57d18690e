"""Users install wheels: a wheel built from the tree holds every package folder, and the
fairseq task imports from it alone (a folder without __init__.py is left out of the wheel
by find_packages, and the task then fails to import)."""
import os
import shutil
import subprocess
import sys
import zipfile

from tests.helpers import ROOT

PACKAGE = os.path.join(ROOT, "fairseq_gradvac")


def _source_packages():
    """Every folder of the package that holds Python modules, as a dotted name."""
    found = set()
    for folder, dirs, files in os.walk(PACKAGE):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        if any(f.endswith(".py") for f in files):
            found.add(os.path.relpath(folder, ROOT).replace(os.sep, "."))
    return found


def test_the_task_imports_from_a_wheel_with_the_source_tree_off_the_path(tmp_path):
    # from a copy of what the wheel is built from: a build/ folder left in the tree by an
    # earlier build would hand setuptools its stale copies of the modules
    source = tmp_path / "source"
    shutil.copytree(PACKAGE, source / "fairseq_gradvac", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(os.path.join(ROOT, "setup.py"), source)
    wheels = tmp_path / "wheels"
    # no build isolation: setuptools and wheel are there (scripts/setup.sh), and CI may be offline
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "--disable-pip-version-check", "-w", str(wheels), str(source)],
        check=True, capture_output=True, text=True, cwd=tmp_path,
    )
    (wheel,) = wheels.glob("fairseq_gradvac-*.whl")
    with zipfile.ZipFile(wheel) as z:
        z.extractall(tmp_path / "site")
        in_wheel = {os.path.dirname(n).replace("/", ".") for n in z.namelist() if n.endswith("/__init__.py")}
    assert _source_packages() <= in_wheel, f"left out of the wheel: {sorted(_source_packages() - in_wheel)}"
    site = str(tmp_path / "site")
    code = (
        "import sys, fairseq_gradvac, fairseq_gradvac.tasks.multilingual_gradvac as t, "
        "fairseq_gradvac.gradients.exchange, fairseq_gradvac.evaluation.results_table\n"
        f"assert fairseq_gradvac.__file__.startswith({site!r}), fairseq_gradvac.__file__\n"
        f"assert {ROOT!r} not in sys.path\n"
        "print(t.__name__)"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = site
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
