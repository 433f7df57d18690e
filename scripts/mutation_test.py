"""Mutation testing of the engine (fairseq_gradvac/combiners/): does the test suite notice
when the code is changed a little? (docs/testing.md)

Each mutant changes one operator or constant of one file: + - * / ** swapped, a comparison
flipped or made strict/loose, and/or swapped, a `not` or unary minus dropped, an integer
n -> n + 1, a float x -> 2x (0.0 -> 1.0), True <-> False, and the tensor method pairs
amin/amax, argmin/argmax, min/max, minimum/maximum, any/all, clamp_min/clamp_max
swapped. Docstrings and strings are left alone. The mutant runs the engine's tests
(pytest -x, the test file of the mutated module first) in a forked child of a process that
has already imported torch, so that a mutant costs its tests only; a mutant no test kills
is listed with its line.

    python scripts/mutation_test.py                      # every file of combiners/
    python scripts/mutation_test.py --files gradnorm.py --out survivors.txt
"""
import argparse
import ast
import copy
import os
import shutil
import signal
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENGINE = os.path.join("fairseq_gradvac", "combiners")
TESTS = ["tests/unit/combiners/test_baselines.py", "tests/unit/combiners/test_gradvac.py", "tests/unit/combiners/test_groups.py"]
FIRST_TEST = {"gradvac.py": "tests/unit/combiners/test_gradvac.py", "groups.py": "tests/unit/combiners/test_groups.py"}

BINARY = {ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Div, ast.Div: ast.Mult, ast.Pow: ast.Mult,
          ast.FloorDiv: ast.Div, ast.Mod: ast.FloorDiv, ast.BitAnd: ast.BitOr, ast.BitOr: ast.BitAnd}
COMPARE = {ast.Lt: [ast.LtE, ast.Gt], ast.LtE: [ast.Lt, ast.GtE], ast.Gt: [ast.GtE, ast.Lt],
           ast.GtE: [ast.Gt, ast.LtE], ast.Eq: [ast.NotEq], ast.NotEq: [ast.Eq],
           ast.Is: [ast.IsNot], ast.IsNot: [ast.Is], ast.In: [ast.NotIn], ast.NotIn: [ast.In]}
METHODS = [("amin", "amax"), ("argmin", "argmax"), ("min", "max"), ("minimum", "maximum"),
           ("any", "all"), ("clamp_min", "clamp_max")]
SWAP = {a: b for pair in METHODS for a, b in (pair, pair[::-1])}


def _docstrings(tree):
    """ids of the string constants that are docstrings or other bare string statements."""
    return {id(node.value) for node in ast.walk(tree)
            if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)}


def _variants(node, skip):
    """(description, mutate(node) -> None) for each mutation of ``node``."""
    out = []
    if isinstance(node, (ast.BinOp, ast.AugAssign)) and type(node.op) in BINARY:
        new = BINARY[type(node.op)]
        out.append((f"{type(node.op).__name__} -> {new.__name__}", lambda n, new=new: setattr(n, "op", new())))
    elif isinstance(node, ast.Compare):
        for i, op in enumerate(node.ops):
            for new in COMPARE.get(type(op), []):
                def mutate(n, i=i, new=new):
                    n.ops[i] = new()
                out.append((f"{type(op).__name__} -> {new.__name__}", mutate))
    elif isinstance(node, ast.BoolOp):
        new = ast.Or if isinstance(node.op, ast.And) else ast.And
        out.append((f"{type(node.op).__name__} -> {new.__name__}", lambda n, new=new: setattr(n, "op", new())))
    elif isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.Not, ast.USub)):
        out.append((f"drop {type(node.op).__name__}", "unwrap"))
    elif isinstance(node, ast.Constant) and id(node) not in skip:
        v = node.value
        if isinstance(v, bool):
            out.append((f"{v} -> {not v}", lambda n: setattr(n, "value", not n.value)))
        elif isinstance(v, int):
            out.append((f"{v} -> {v + 1}", lambda n: setattr(n, "value", n.value + 1)))
        elif isinstance(v, float):
            new = 1.0 if v == 0 else 2 * v
            out.append((f"{v} -> {new}", lambda n, new=new: setattr(n, "value", new)))
    elif isinstance(node, ast.Attribute) and node.attr in SWAP:
        new = SWAP[node.attr]
        out.append((f".{node.attr} -> .{new}", lambda n, new=new: setattr(n, "attr", new)))
    return out


def mutants(source):
    """Every (line, description, mutated source) of ``source``."""
    tree = ast.parse(source)
    skip = _docstrings(tree)
    sites = [(node, d, m) for node in ast.walk(tree) for d, m in _variants(node, skip)]
    for index, (node, description, _) in enumerate(sites):
        mutated = copy.deepcopy(tree)  # the same walk order: the same site index
        skip_m = _docstrings(mutated)
        target = [(n, m) for n in ast.walk(mutated) for _, m in _variants(n, skip_m)][index]
        n, mutate = target
        statement = _statement(mutated, n)
        if mutate == "unwrap":
            _replace(mutated, n, n.operand)
        else:
            mutate(n)
        shown = ast.unparse(statement).split("\n")[0][:110]
        yield node.lineno, f"{description}: {shown}", ast.unparse(mutated)


def _statement(tree, node):
    """The innermost statement that contains ``node``."""
    best = None
    for stmt in ast.walk(tree):
        if isinstance(stmt, ast.stmt) and any(n is node for n in ast.walk(stmt)):
            if best is None or any(n is stmt for n in ast.walk(best)):
                best = stmt
    return best


def _replace(tree, old, new):
    for parent in ast.walk(tree):
        for field, value in ast.iter_fields(parent):
            if value is old:
                setattr(parent, field, new)
                return
            if isinstance(value, list) and any(v is old for v in value):
                value[[i for i, v in enumerate(value) if v is old][0]] = new
                return
    raise AssertionError("node not found")


def run_tests(workdir, tests, timeout):
    """Run pytest in a forked child; returns 'killed', 'survived' or 'timeout'."""
    pid = os.fork()
    if pid == 0:
        os.chdir(workdir)
        sys.path.insert(0, workdir)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        import pytest

        code = pytest.main(["-x", "-q", "-p", "no:cacheprovider", *tests])
        os._exit(int(code))
    start = time.monotonic()
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return "survived" if os.waitstatus_to_exitcode(status) == 0 else "killed"
        if time.monotonic() - start > timeout:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return "timeout"
        time.sleep(0.05)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", nargs="*", help="files of combiners/ (default: all)")
    parser.add_argument("--out", help="write the surviving mutants here")
    parser.add_argument("--timeout", type=float, default=60, help="seconds per mutant")
    args = parser.parse_args(argv)
    sys.dont_write_bytecode = True  # a mutant written in the same second must not reuse a .pyc
    import torch  # noqa: F401  (imported once, before forking)

    try:
        import fairseq  # noqa: F401  (fairseq_gradvac/__init__ imports it)
    except ImportError:
        pass
    workdir = tempfile.mkdtemp(prefix="mutation-")
    for folder in ("fairseq_gradvac", "tests", "benchmarks"):
        shutil.copytree(os.path.join(ROOT, folder), os.path.join(workdir, folder),
                        ignore=shutil.ignore_patterns("__pycache__"))
    files = args.files or sorted(f for f in os.listdir(os.path.join(ROOT, ENGINE)) if f.endswith(".py"))
    survivors, counts = [], {"killed": 0, "survived": 0, "timeout": 0}
    try:
        for name in files:
            path = os.path.join(workdir, ENGINE, name)
            original = open(path).read()
            tests = sorted(TESTS, key=lambda t: t != FIRST_TEST.get(name, TESTS[0]))
            with open(path, "w") as f:  # the unparsed original must pass
                f.write(ast.unparse(ast.parse(original)))
            if run_tests(workdir, tests, args.timeout * 3) != "survived":
                raise SystemExit(f"the tests fail on {name} unmutated: fix them first")
            for line, description, source in mutants(original):
                with open(path, "w") as f:
                    f.write(source)
                result = run_tests(workdir, tests, args.timeout)
                counts[result] += 1
                print(f"{name}:{line}: {description}: {result}", flush=True)
                if result == "survived":
                    survivors.append(f"{name}:{line}: {description}")
            with open(path, "w") as f:
                f.write(original)
    finally:
        shutil.rmtree(workdir)
    print(f"{counts['killed']} killed, {counts['timeout']} timed out, {counts['survived']} survived")
    if args.out:
        with open(args.out, "w") as f:
            f.write("\n".join(survivors) + "\n")


if __name__ == "__main__":
    main()
