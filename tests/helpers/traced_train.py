"""fairseq-train with a trace of what each worker put into the per-direction rows: one JSON
line per (rank, update): the directions its real batches held, whether it ran a dummy
batch, and a digest of its combiner state after the update. Tests use it to show that a case (a direction on one rank only, a dummy batch) did
happen in the run they check. Usage: GRADVAC_TRACE=FILE python traced_train.py ARGS..."""
import hashlib
import json
import os
import sys

import torch
from fairseq_cli.train import cli_main  # first, as fairseq-train: it sets up logging

from fairseq_gradvac.gradients import direction_gradients

TRACE = os.environ["GRADVAC_TRACE"]
_original_record = direction_gradients.DirectionGradients.record
_original_combine = direction_gradients.DirectionGradients.combine
_original_select = direction_gradients.DirectionGradients.select


def _select(self, direction):
    self.__dict__.setdefault("_trace_selected", set()).add(direction)
    return _original_select(self, direction)


def _record(self, direction, loss, ntokens):
    self.__dict__.setdefault("_trace_recorded", set()).add(direction)
    return _original_record(self, direction, loss, ntokens)


def _combine(self, combiner, step, **kwargs):
    recorded = sorted(self.__dict__.pop("_trace_recorded", set()))
    selected = sorted(self.__dict__.pop("_trace_selected", set()))
    rank = self.exchange.rank
    combined = _original_combine(self, combiner, step, **kwargs)
    digest = hashlib.sha1()
    for value in combiner.state_dict().values():
        digest.update(value.numpy().tobytes() if isinstance(value, torch.Tensor) else repr(value).encode())
    with open(f"{TRACE}.{rank}", "a") as f:
        f.write(json.dumps({"rank": rank, "update": step, "directions": recorded,
                            "dummy": bool(selected) and not recorded, "state": digest.hexdigest()}) + "\n")
    return combined


direction_gradients.DirectionGradients.select = _select
direction_gradients.DirectionGradients.record = _record
direction_gradients.DirectionGradients.combine = _combine

if __name__ == "__main__":
    torch.set_num_threads(1)
    sys.argv = ["fairseq-train", *sys.argv[1:]]
    cli_main()
