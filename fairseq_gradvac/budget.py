"""The training budget of a study, chosen by convergence rather than by minutes: the number
of updates U at which the validation loss lowered by less than ``tolerance`` (1%) over the
last ``fraction`` (a fifth) of training, i.e. (L(U - fraction * U) - L(U)) / L(U - fraction * U)
< tolerance, L read off the learning curve (linear between validations). A budget in updates
is machine-independent; the smallest such U among the candidates is the budget.

    python -m fairseq_gradvac.budget RUN/train.log --every 500 --out RUN/budget.json

reads fairseq's validation lines (``valid on 'valid' subset | loss L | ... | num_updates U``)
from a train log (repeated after a resume: the last line of an update counts) or a CSV with
the columns ``update,loss``; prints whether the rule holds and the budget; exit status 0 if
it holds, 1 if not (yet).
"""
import argparse
import csv
import json
import os
import re

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


def choose_budget(curve, tolerance=0.01, fraction=0.2, every=None):
    """{"holds", "budget", "drop", "checked"}: the smallest validated update (a multiple of
    ``every``, if given) whose relative drop over the last ``fraction`` of training is below
    ``tolerance``; "checked" lists (update, drop) of every candidate looked at."""
    if not 0 < fraction < 1:
        raise ValueError(f"fraction must be in (0, 1), not {fraction}")
    if not tolerance > 0:
        raise ValueError(f"tolerance must be positive, not {tolerance}")
    checked = []
    for update, _ in curve:
        if update <= 0 or (every and update % every):
            continue
        drop = relative_drop(curve, update, fraction)
        if drop is None:
            continue
        checked.append((update, drop))
        if drop < tolerance:
            return {"holds": True, "budget": update, "drop": drop, "checked": checked}
    return {"holds": False, "budget": None, "drop": checked[-1][1] if checked else None,
            "checked": checked}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("curve", help="a fairseq train log, or a CSV with columns update,loss")
    p.add_argument("--subset", default="valid", help="the validation subset of the log [valid]")
    p.add_argument("--tolerance", type=float, default=0.01, help="largest relative drop [0.01]")
    p.add_argument("--fraction", type=float, default=0.2, help="the last part of training [0.2]")
    p.add_argument("--every", type=int, default=None,
                   help="only updates that are multiples of this are budget candidates")
    p.add_argument("--out", default=None, help="write the result as JSON")
    a = p.parse_args(argv)
    if not os.path.exists(a.curve):
        raise SystemExit(f"no such learning curve: {a.curve}")
    curve = read_curve(a.curve, a.subset)
    result = choose_budget(curve, a.tolerance, a.fraction, a.every)
    result.update(curve=curve, tolerance=a.tolerance, fraction=a.fraction, source=a.curve)
    last = f"last validation at update {curve[-1][0]} (loss {curve[-1][1]:.3f})" if curve else "no validation yet"
    if result["holds"]:
        print(f"[budget] holds at {result['budget']} updates: the validation loss lowered by "
              f"{100 * result['drop']:.2f}% over the last {a.fraction:.0%} of training "
              f"(< {100 * a.tolerance:g}%); {last}")
    else:
        drop = "" if result["drop"] is None else f" (last drop {100 * result['drop']:.2f}%)"
        print(f"[budget] does not hold yet{drop}; {last}")
    if a.out:
        with open(a.out + ".tmp", "w") as f:
            json.dump(result, f, indent=2)
        os.replace(a.out + ".tmp", a.out)
    return 0 if result["holds"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
