"""Probe checkpoints: per-direction gradients on a fixed probe set, without updating the
model, written as the rows of ``similarity.csv`` (the same rows as training's
``--similarity-interval``). Over a series of checkpoints this is the evolution of the
gradient geometry across training; on a multi-way probe set (the same sentences in every
language, e.g. the LibreOffice corpus's held-out rows) only the language varies, as in
Part I of the paper.

    python -m fairseq_gradvac.analysis.probe RUN/checkpoint_*_*.pt --split valid --out RUN/probe

Each direction's gradient is the sum over the whole split of fairseq's training loss (the
checkpoint's criterion; dropout off unless --dropout), accumulated into its row of the
engine's [K, P] buffer exactly as a training update with --update-freq accumulates. The
``update`` column is the checkpoint's number of updates: the in-training record of update
U + 1 measured the same parameters (on its own batch).
"""
import argparse
import logging
import os
import re
import sys

import torch

from ..combiners import GRANULARITIES, ParameterGroups, build_combiner
from ..tasks.csv_log import CsvLog
from ..gradients.similarity import COLUMNS, SimilarityGroups

logger = logging.getLogger("fairseq_gradvac.analysis.probe")


def _num_updates(path, state):
    history = state.get("optimizer_history") or [{}]
    n = history[-1].get("num_updates")
    if n is None:
        raise SystemExit(f"{path}: no num_updates in its optimizer history (not a fairseq-train checkpoint?)")
    return int(n)


def _checkpoint_order(path):
    """checkpoint_E_U.pt / checkpoint_last.pt: order by the update in the name, if any."""
    m = re.search(r"_(\d+)\.pt$", os.path.basename(path))
    return (int(m.group(1)) if m else float("inf"), path)


def load(path, device, dropout=0.0, data=None, directions=None):
    """(model, criterion, task, its number of updates) of checkpoint ``path``, to take
    gradients with: training's forward with ``dropout``, on ``data`` and ``directions`` if
    given (else the checkpoint's)."""
    from fairseq import checkpoint_utils  # (wrapped by the package's import: see tasks/fairseq_changes.py)

    state = checkpoint_utils.load_checkpoint_to_cpu(path)
    overrides = {"dropout": dropout, "attention_dropout": dropout, "activation_dropout": dropout}
    if data:
        overrides["data"] = data
    if directions:
        overrides["lang_pairs"] = ",".join(directions)
    models, cfg, task = checkpoint_utils.load_model_ensemble_and_task(
        [path], arg_overrides=overrides, state=state
    )
    model = models[0].to(device)
    model.train()  # training's forward (dropout as overridden)
    criterion = task.build_criterion(cfg.criterion if cfg.criterion is not None else cfg.model)
    return model, criterion.to(device), task, _num_updates(path, state)


def probe(path, data, split, directions, granularity, max_tokens, max_sentences, dropout, device):
    """The SimilarityRecord of checkpoint ``path`` on ``split``."""
    from fairseq.data import data_utils

    from ..data.direction_batches import direction_of
    from ..gradients.direction_gradients import DirectionGradients

    model, criterion, task, updates = load(path, device, dropout, data, directions)
    directions = directions or list(task.training_directions)
    groups = ParameterGroups.from_named_parameters(model.named_parameters(), "whole_model")
    grads = DirectionGradients(groups, directions, similarity=SimilarityGroups(groups, granularity))
    # Each direction's data set of the split as fairseq builds it (language tokens
    # included), unsampled: every sentence once.
    datasets, _ = task.data_manager.load_split_datasets(split, task.training, epoch=1)
    model.zero_grad(set_to_none=True)
    for key, dataset in datasets:
        direction = direction_of(key)
        if direction not in directions:
            continue
        # The first max_sentences rows (of a multi-way set: the same sentences in every
        # direction), in length-bucketed batches.
        indices = dataset.ordered_indices()
        if max_sentences:
            indices = indices[indices < max_sentences]
        indices, _ = dataset.filter_indices_by_size(indices, model.max_positions())
        for batch in data_utils.batch_by_size(indices, dataset.num_tokens, max_tokens=max_tokens):
            sample = dataset.collater([dataset[i] for i in batch])
            grads.select(direction)
            loss, _, log = criterion(model, _to(sample, device))
            loss.backward()
            grads.record(direction, log["loss"], log["ntokens"])
    missing = [d for d in directions if d not in grads.present_directions()]
    if missing:
        raise SystemExit(f"{path}: the {split} split has no data for {', '.join(missing)}")
    grads.combine(build_combiner("sum"), updates - 1, record=True)
    return grads.last_record


def _to(sample, device):
    from fairseq import utils

    return utils.move_to_cuda(sample) if device.type == "cuda" else sample


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoints", nargs="+", help="fairseq-train checkpoints of one run (any order)")
    ap.add_argument("--out", required=True, help="directory for similarity.csv (one update per checkpoint; rows of other updates already there are kept, of the same updates replaced)")
    ap.add_argument("--split", default="valid", help="the probe set: a split of the binarized data [valid]")
    ap.add_argument("--data", default=None, help="binarized data directory (default: the checkpoint's)")
    ap.add_argument("--directions", default=None,
                    help="comma-separated directions to probe (default: the model's training directions)")
    ap.add_argument("--granularity", default="all_layer", choices=GRANULARITIES,
                    help="recorded groups, plus model, encoder_layers, decoder_layers [all_layer]")
    ap.add_argument("--max-tokens", type=int, default=4000)
    ap.add_argument("--max-sentences", type=int, default=0,
                    help="probe the first N rows of each direction's split (0: all)")
    ap.add_argument("--dropout", type=float, default=0.0, help="dropout while probing [0: deterministic]")
    ap.add_argument("--cpu", action="store_true", help="stay on the CPU even with a GPU")
    args = ap.parse_args(argv)
    logging.basicConfig(format="%(asctime)s | %(levelname)s | %(name)s | %(message)s", level=logging.INFO)
    device = torch.device("cuda" if torch.cuda.is_available() and not args.cpu else "cpu")
    directions = [d.strip() for d in args.directions.split(",") if d.strip()] if args.directions else None
    os.makedirs(args.out, exist_ok=True)
    log = CsvLog(os.path.join(args.out, "similarity.csv"), COLUMNS)
    records = []
    for path in sorted(args.checkpoints, key=_checkpoint_order):
        record = probe(path, args.data, args.split, directions, args.granularity,
                       args.max_tokens, args.max_sentences, args.dropout, device)
        mean, conflicts = record.summary()
        logger.info(f"{path}: update {record.update}, {len(record.directions)} directions, "
                    f"mean cosine {mean:.3f}, conflicts {conflicts:.3f}")
        records.append(record)
    records.sort(key=lambda r: r.update)
    if len({r.update for r in records}) != len(records):
        raise SystemExit("two checkpoints have the same number of updates (checkpoint_last.pt "
                         "and its twin?): probe each update once")
    rows = {record.update: record.rows() for record in records}
    log.replace(rows)
    print(f"wrote {sum(map(len, rows.values()))} rows of {len(records)} checkpoint(s) to "
          f"{log.path} (rows of other updates kept)")


if __name__ == "__main__":
    sys.exit(main())
