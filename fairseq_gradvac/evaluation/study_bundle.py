"""A finished study run's result bundle: everything the tables, the significance tests and
the write-up read, small enough to commit, so that the results outlive the machine (and the
checkpoints) they were made on.

    python -m fairseq_gradvac.evaluation.study_bundle RUN BUNDLE --budget 4000 --half 2000 \
        --references RESULTS/references --row gradvac_all_layer_t5 --seed 1

RUN is the run's folder of checkpoints (scripts/study_imbalance.sh keeps them outside the
work tree); BUNDLE (``RESULTS/ROW_SAMPLING_seedN``) gets, for the run and for a bilingual
run's every direction (``BUNDLE/DIRECTION/...``):

- ``bleu.json`` (the checkpoint at the budget) and ``half/bleu.json`` (at half of it):
  BLEU/chrF per direction with sacrebleu's signatures, each direction's hypotheses
  gzip-compressed beside it (``bleu.hyp/DIRECTION.txt.gz``) and its reference as a path to
  the study's one copy of the test references (``RESULTS/references``, compressed);
- ``valid.csv``: the validation-loss curve (update, loss); ``train.log``: fairseq's log
  (the corrected shares, the training time);
- ``similarity.csv`` (training-batch gradient cosines) and ``probe/similarity.csv``;
  ``loss_weights.csv`` (a loss weighting's weights per direction);
- ``run.json``: row, seed, budget, half, the exact fairseq-train command, the commit it was
  trained at, the training seconds.

The bundle is written to BUNDLE.tmp and renamed: a BUNDLE/run.json is a finished run.
"""
import argparse
import glob
import gzip
import json
import os
import shutil
import subprocess

from ..tasks.files import atomic_write
from .budget import read_curve
from .evaluate import read_lines

FILES = ("train.log", "similarity.csv", os.path.join("probe", "similarity.csv"), "loss_weights.csv")


def _write_gzip(raw, lines):
    """Deterministic gzip (no name, no time stamp): the same lines give the same bytes."""
    with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as f:
        f.write("".join(line + "\n" for line in lines).encode("utf-8"))


def _reference_copy(reference, references):
    """The study's compressed copy of a reference file (made once; an existing copy must hold
    the same lines)."""
    os.makedirs(references, exist_ok=True)
    lines = read_lines(reference)
    copy = os.path.join(references, os.path.basename(reference) + ".gz")
    if os.path.exists(copy):
        if read_lines(copy) != lines:
            raise SystemExit(f"{reference} differs from the study's copy {copy}: another test set")
    else:
        with atomic_write(copy, "wb") as raw:
            _write_gzip(raw, lines)
    return copy


def bundle_scores(scores_json, out_dir, references):
    """Copy one bleu.json into out_dir with its hypotheses compressed and its references
    pointing at the study's copies (paths relative to out_dir)."""
    with open(scores_json) as f:
        scores = json.load(f)
    here = os.path.dirname(scores_json)
    os.makedirs(os.path.join(out_dir, "bleu.hyp"), exist_ok=True)
    for d, r in scores["directions"].items():
        if r.get("hypotheses"):
            hypotheses = read_lines(os.path.join(here, r["hypotheses"]))
            if len(hypotheses) != r["sentences"]:
                raise SystemExit(f"{scores_json}: {d} has {len(hypotheses)} hypotheses for {r['sentences']} sentences")
            name = os.path.join("bleu.hyp", f"{d}.txt.gz")
            with open(os.path.join(out_dir, name), "wb") as raw:  # (out_dir: the bundle's temporary folder)
                _write_gzip(raw, hypotheses)
            r["hypotheses"] = name
        if r.get("reference"):
            r["reference"] = os.path.relpath(_reference_copy(r["reference"], references), out_dir)
    scores["checkpoint"] = os.path.basename(scores["checkpoint"])
    with open(os.path.join(out_dir, "bleu.json"), "w") as f:
        json.dump(scores, f, indent=2)


def _commit():
    proc = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                          cwd=os.path.dirname(os.path.abspath(__file__)))
    return proc.stdout.strip() if proc.returncode == 0 else None


def updates_per_second(run):
    """Updates over seconds of the invocations that printed fairseq's "done training in" (a
    killed and resumed run's first invocation timed nothing, and its updates do not count)."""
    from .results_table import timed_run

    seconds, updates = timed_run(run)
    return round(updates / seconds, 3) if seconds else None


def write_bundle(run, bundle, budget, half, references, row, seed, command=None, commit=None):
    from .results_table import training_seconds

    units = [""] if os.path.exists(os.path.join(run, "bleu.json")) else sorted(
        os.path.relpath(os.path.dirname(p), run) for p in glob.glob(os.path.join(run, "*", "bleu.json")))
    if not units:
        raise SystemExit(f"{run}: no bleu.json (the run is not scored)")
    tmp = bundle + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    for unit in units:
        src, dst = os.path.join(run, unit), os.path.join(tmp, unit)
        for at in ("", "half"):
            scores = os.path.join(src, at, "bleu.json")
            if not os.path.exists(scores):
                raise SystemExit(f"{scores} is missing: the run is not scored at {'half ' if at else ''}the budget")
            bundle_scores(scores, os.path.join(dst, at), references)
        for name in FILES:
            if os.path.exists(os.path.join(src, name)):
                os.makedirs(os.path.dirname(os.path.join(dst, name)), exist_ok=True)
                shutil.copyfile(os.path.join(src, name), os.path.join(dst, name))
        curve = read_curve(os.path.join(src, "train.log")) if os.path.exists(os.path.join(src, "train.log")) else []
        with open(os.path.join(dst, "valid.csv"), "w") as f:
            f.write("update,loss\n" + "".join(f"{u},{loss}\n" for u, loss in curve))
    seconds = training_seconds(run)
    info = {"row": row, "seed": seed, "budget": budget, "half": half, "command": command,
            "commit": commit or _commit(), "training_seconds": round(seconds, 1),
            "updates_per_second": updates_per_second(run)}
    with open(os.path.join(tmp, "run.json"), "w") as f:  # last: its presence means a whole bundle
        json.dump(info, f, indent=2)
    shutil.rmtree(bundle, ignore_errors=True)
    os.replace(tmp, bundle)
    return info


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", help="the run's folder (checkpoints, train.log, bleu.json, half/bleu.json)")
    p.add_argument("bundle", help="the bundle folder to write, RESULTS/ROW_SAMPLING_seedN")
    p.add_argument("--budget", type=int, required=True)
    p.add_argument("--half", type=int, required=True)
    p.add_argument("--references", required=True, help="the study's folder of compressed references")
    p.add_argument("--row", required=True)
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--command-file", default=None, help="the fairseq-train command, one line")
    p.add_argument("--commit", default=None, help="the commit the run was trained at [HEAD]")
    a = p.parse_args(argv)
    command = None
    if a.command_file:
        with open(a.command_file) as f:
            command = f.read().strip()
    info = write_bundle(a.run, a.bundle, a.budget, a.half, a.references, a.row, a.seed, command, a.commit)
    size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(a.bundle) for f in fs)
    print(f"[bundle] {a.bundle}: {size / 1e6:.2f} MB, {info['training_seconds']:.0f} s of training")


if __name__ == "__main__":
    main()
