"""The training budget of a study, chosen by convergence rather than by minutes: the number
of updates U at which the validation loss lowered by less than ``tolerance`` (1%) over the
last ``fraction`` (a fifth) of training, i.e. (L(U - fraction * U) - L(U)) / L(U - fraction * U)
< tolerance, L read off the learning curve (linear between validations). The curve is the
mean of the given runs' curves (several seeds of the baseline), and the rule must hold at U
and at the validation before it, so that one flat point of one seed does not fix the budget.
A budget in updates is machine-independent; the smallest such U among the candidates is the
budget. With ``--cap N`` a curve that reached N updates without the rule holding gives the
budget N (``"capped": true``, with the drop still seen over its last fifth): the largest
budget the machine affords.

    python -m fairseq_gradvac.evaluation.budget RUN1/train.log RUN2/train.log --every 1000 --cap 4000 \
        --out RESULTS/budget.json --curve-out RESULTS/curve.csv

reads fairseq's validation lines (``valid on 'valid' subset | loss L | ... | num_updates U``)
from train logs (repeated after a resume: the last line of an update counts) or CSVs with
the columns ``update,loss``; prints whether the rule holds and the budget; exit status 0 if
a budget is chosen (the rule holds, or the cap is reached), 1 if not (yet).
"""
import argparse
import csv
import json
import os
import re

from ..tasks.files import atomic_write

_VALID = re.compile(r"valid on '(?P<subset>[^']+)' subset \|.*?\bloss (?P<loss>[0-9.eE+-]+) \|"
                    r".*\| num_updates (?P<update>\d+)")


def read_curve(path, subset="valid"):
    """[(update, validation loss)] in update order, from a fairseq train log or an
    ``update,loss`` CSV; an update logged twice (a run resumed before it) keeps its last loss."""
    points = {}
    with open(path, newline="") as f:
        if path.endswith(".csv"):
            reader = csv.DictReader(f)
            if not reader.fieldnames or not {"update", "loss"} <= set(reader.fieldnames):
                raise ValueError(f"{path}: a learning-curve CSV needs the columns update,loss")
            for row in reader:
                points[int(row["update"])] = float(row["loss"])
        else:
            for line in f:
                m = _VALID.search(line)
                if m and m["subset"] == subset:
                    points[int(m["update"])] = float(m["loss"])
    return sorted(points.items())


def mean_curve(curves):
    """[(update, mean loss)] over the updates every curve validated at."""
    if not curves:
        return []
    common = set.intersection(*(set(u for u, _ in c) for c in curves))
    return [(u, sum(dict(c)[u] for c in curves) / len(curves)) for u in sorted(common)]


def curve_table(path):
    """The mean curve of a ``--curve-out`` CSV as a markdown table, one column per validation."""
    with open(path, newline="") as f:
        rows = [(int(r["update"]), float(r["mean_loss"])) for r in csv.DictReader(f)]
    return "\n".join([
        "| updates | " + " | ".join(f"{u:,}" for u, _ in rows) + " |",
        "|---|" + "---:|" * len(rows),
        "| mean valid loss | " + " | ".join(f"{loss:.3f}" for _, loss in rows) + " |",
    ]) + "\n"


def loss_at(curve, update):
    """The validation loss at ``update``, linear between the two validations around it; None
    before the first validation or after the last."""
    for (u0, l0), (u1, l1) in zip(curve, curve[1:]):
        if u0 <= update <= u1:
            return l0 + (l1 - l0) * (update - u0) / (u1 - u0)
    if curve and update == curve[-1][0]:
        return curve[-1][1]
    return None


def relative_drop(curve, update, fraction=0.2):
    """(L(start) - L(update)) / L(start), start = update - fraction * update; None when the
    curve does not reach back to start."""
    start = loss_at(curve, update * (1 - fraction))
    end = loss_at(curve, update)
    if start is None or end is None:
        return None
    return (start - end) / start


def choose_budget(curve, tolerance=0.01, fraction=0.2, every=None, cap=None):
    """{"holds", "capped", "budget", "drop", "checked"}: the smallest validated update (a
    multiple of ``every``, if given) whose relative drop over the last ``fraction`` of
    training is below ``tolerance`` there and at the validation before it; "checked" lists
    (update, drop) of every candidate looked at. Without such an update, a curve that reached
    ``cap`` gives the budget ``cap`` with "capped" true and "drop" the drop at the cap."""
    if not 0 < fraction < 1:
        raise ValueError(f"fraction must be in (0, 1), not {fraction}")
    if not tolerance > 0:
        raise ValueError(f"tolerance must be positive, not {tolerance}")
    if cap is not None and every and cap % every:
        raise ValueError(f"the cap {cap} is not a multiple of the candidates' step {every}")
    checked = []
    for previous, (update, _) in zip([None] + curve[:-1], curve):
        if update <= 0 or (every and update % every) or (cap is not None and update > cap):
            continue
        drop = relative_drop(curve, update, fraction)
        if drop is None:
            continue
        checked.append((update, drop))
        before = relative_drop(curve, previous[0], fraction) if previous else None
        if drop < tolerance and before is not None and before < tolerance:
            return {"holds": True, "capped": False, "budget": update, "drop": drop, "checked": checked}
    if cap is not None and checked and checked[-1][0] == cap:
        return {"holds": False, "capped": True, "budget": cap, "drop": checked[-1][1], "checked": checked}
    return {"holds": False, "capped": False, "budget": None,
            "drop": checked[-1][1] if checked else None, "checked": checked}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("curves", nargs="+", help="fairseq train logs, or CSVs with columns update,loss")
    p.add_argument("--subset", default="valid", help="the validation subset of the log [valid]")
    p.add_argument("--tolerance", type=float, default=0.01, help="largest relative drop [0.01]")
    p.add_argument("--fraction", type=float, default=0.2, help="the last part of training [0.2]")
    p.add_argument("--every", type=int, default=None,
                   help="only updates that are multiples of this are budget candidates")
    p.add_argument("--cap", type=int, default=None,
                   help="the largest budget: taken when the curve reaches it before the rule holds")
    p.add_argument("--out", default=None, help="write the result as JSON")
    p.add_argument("--curve-out", default=None, help="write the mean curve and each run's as CSV")
    a = p.parse_args(argv)
    for path in a.curves:
        if not os.path.exists(path):
            raise SystemExit(f"no such learning curve: {path}")
    runs = [read_curve(path, a.subset) for path in a.curves]
    curve = mean_curve(runs)
    try:
        result = choose_budget(curve, a.tolerance, a.fraction, a.every, a.cap)
    except ValueError as e:
        raise SystemExit(f"[budget] {e}")
    result.update(curve=curve, tolerance=a.tolerance, fraction=a.fraction, every=a.every, cap=a.cap,
                  sources=[os.path.basename(os.path.dirname(os.path.abspath(x))) or x for x in a.curves])
    last = f"last validation at update {curve[-1][0]} (mean loss {curve[-1][1]:.3f})" if curve else "no validation yet"
    runs_text = f"the mean of {len(runs)} runs" if len(runs) > 1 else "one run"
    if result["holds"]:
        print(f"[budget] holds at {result['budget']} updates: the validation loss ({runs_text}) lowered by "
              f"{100 * result['drop']:.2f}% over the last {a.fraction:.0%} of training "
              f"(< {100 * a.tolerance:g}% here and at the validation before); {last}")
    elif result["capped"]:
        print(f"[budget] capped at {result['budget']} updates: the rule does not hold there; the validation "
              f"loss ({runs_text}) still lowered by {100 * result['drop']:.2f}% over the last "
              f"{a.fraction:.0%} of training (rule: < {100 * a.tolerance:g}%)")
    else:
        drop = "" if result["drop"] is None else f" (last drop {100 * result['drop']:.2f}%)"
        print(f"[budget] does not hold yet{drop}; {last}")
    if a.out:
        with atomic_write(a.out) as f:
            json.dump(result, f, indent=2)
    if a.curve_out:
        with atomic_write(a.curve_out, newline="") as f:
            w = csv.writer(f)
            w.writerow(["update", "mean_loss"] + [f"loss_{name}" for name in result["sources"]])
            for u, loss in curve:
                w.writerow([u, f"{loss:.6f}"] + [f"{dict(r)[u]:.6f}" for r in runs])
    return 0 if result["budget"] is not None else 1


if __name__ == "__main__":
    raise SystemExit(main())
