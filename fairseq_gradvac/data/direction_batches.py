"""Training minibatches by translation direction (``--direction-batching``).

fairseq's multilingual datasets collate rows of all directions into one batch and forget
which row came from which direction; the per-direction gradients need them apart. The
sampled dataset's items carry their sub-dataset index, and so their direction; fairseq's
own mixed-batch collater applied to one direction's rows gives exactly the rows, padding
side and language tokens of the stock batch, one batch per direction.

- ``split``: fairseq's mixed minibatches, each collated into one batch per direction it
  holds (K forward/backward passes on 1/K of the batch each).
- ``single``: every minibatch holds one direction only: fairseq's own ``batch_by_size``
  (--max-tokens, --batch-size, --required-batch-size-multiple, length order) within each
  direction's temperature-sampled indices; fairseq's epoch iterator then shuffles the
  batches and deals them to workers as always. Every pass is a full-size batch, and an
  update's directions are those its --update-freq x N batches drew (Algorithm 1, line 6).
- ``mixed`` (the loss-weighting methods): fairseq's own mixed minibatches, unchanged, with
  each row's direction number in ``batch["direction"]`` (the rows' order is the collater's,
  which sorts by length: the direction travels in the row's id through it).
"""
from collections import OrderedDict

import numpy as np
import torch
from fairseq.data import FairseqDataset
from fairseq.data.multilingual import sampled_multi_dataset, sampled_multi_epoch_dataset

DIRECTION_BATCHING = ("split", "single", "mixed")


def direction_of(key) -> str:
    """'main:en-fr' (the data manager's dataset key) -> 'en-fr'."""
    return str(key).split(":", 1)[-1]


def _collate_by_direction(self, samples, **extra_args):
    """OrderedDict direction -> that direction's batch, in sub-dataset order.

    One direction can have several sub-datasets (``--extra-data`` of a direction that is
    also in ``--lang-pairs``: keys main:en-fr and mined:en-fr): their rows go into one
    batch, collated as the stock batch collates them (one shared collater, or each
    sub-dataset's own and then concatenated, as fairseq decides).
    """
    if len(samples) == 0:
        return None
    rows = OrderedDict((direction_of(key), []) for key in self.keys)
    for ds_idx, sample in samples:
        rows[direction_of(self.keys[ds_idx])].append((ds_idx, sample))
    return OrderedDict(
        (direction, sampled_multi_dataset.SampledMultiDataset.collater(self, batch, **extra_args))
        for direction, batch in rows.items()
        if batch
    )


def _collate_labelled(self, samples, **extra_args):
    """fairseq's mixed batch, plus ``direction``: each row's direction number (as in
    direction_numbers). The ids of the rows carry their sub-dataset through the collater
    (id * D + sub-dataset, D sub-datasets) and are given back."""
    if len(samples) == 0:
        return None
    d = len(self.datasets)
    tagged = [(ds_idx, dict(sample, id=sample["id"] * d + ds_idx)) for ds_idx, sample in samples]
    batch = sampled_multi_dataset.SampledMultiDataset.collater(self, tagged, **extra_args)
    if batch is None or "id" not in batch:
        return batch
    ids = batch["id"]
    batch["id"] = torch.div(ids, d, rounding_mode="floor")
    batch["direction"] = torch.as_tensor(_sub_dataset_direction(self))[ids % d]
    return batch


def _collate(self, samples, **extra_args):
    if self.direction_batching == "mixed":
        return _collate_labelled(self, samples, **extra_args)
    return _collate_by_direction(self, samples, **extra_args)


def directions(dataset):
    """The dataset's directions, in order of first appearance among its sub-datasets."""
    return list(dict.fromkeys(direction_of(k) for k in dataset.keys))


def _sub_dataset_direction(dataset) -> np.ndarray:
    """The direction number of each sub-dataset."""
    names = directions(dataset)
    return np.array([names.index(direction_of(k)) for k in dataset.keys], dtype=np.int64)


def direction_numbers(dataset, indices) -> np.ndarray:
    """The direction of each of ``dataset``'s (epoch) ``indices``, as its number in the
    dataset's directions (its keys' directions, in order of first appearance)."""
    indices = np.asarray(indices, dtype=np.int64)
    if isinstance(dataset, sampled_multi_epoch_dataset.SampledMultiEpochDataset):
        indices = dataset._random_global_indices[dataset._current_epoch_start_index + indices]
    sub_dataset = np.searchsorted(dataset.cumulated_sizes, indices, side="right")  # bisect_right
    return _sub_dataset_direction(dataset)[sub_dataset]


def _batch_by_size(self, indices, max_tokens=None, max_sentences=None, required_batch_size_multiple=1):
    """fairseq's batches (split, mixed), or fairseq's batching within each direction (single)."""
    def stock(*args):  # (neither sampled dataset overrides FairseqDataset's)
        return FairseqDataset.batch_by_size(self, *args)

    if self.direction_batching != "single":
        return stock(indices, max_tokens, max_sentences, required_batch_size_multiple)
    indices = np.asarray(indices, dtype=np.int64)
    numbers = direction_numbers(self, indices)
    batches = []
    for number in np.unique(numbers):  # in length order within the direction, as fairseq sorted
        mine = indices[numbers == number]
        own = stock(mine, max_tokens, max_sentences, required_batch_size_multiple)
        # fairseq drops a last batch that is not a multiple of --required-batch-size-multiple
        # (up to multiple - 1 of the longest sentences, once per epoch); once per direction
        # that would cost every direction its longest sentences, a small one most: kept
        kept = sum(len(b) for b in own)
        batches += own + ([mine[kept:]] if kept < len(mine) else [])
    return batches


# fairseq seeds each epoch's sampling with a hash of the dataset's class name
# (SampledMultiDataset._establish_virtual_datasets, SampledMultiEpochDataset._next_global_indices):
# the subclasses keep fairseq's names so every epoch samples what the stock task samples, and a
# run resumed inside epoch 2 or later (dataset built, then re-classed) continues the same order.
# Single inheritance: CPython only lets __class__ change between identical layouts.
class SampledMultiDataset(sampled_multi_dataset.SampledMultiDataset):
    collater = _collate
    batch_by_size = _batch_by_size
    direction_batching = "split"


class SampledMultiEpochDataset(sampled_multi_epoch_dataset.SampledMultiEpochDataset):
    collater = _collate
    batch_by_size = _batch_by_size
    direction_batching = "split"


_SPLIT_CLASS = {
    sampled_multi_dataset.SampledMultiDataset: SampledMultiDataset,
    sampled_multi_epoch_dataset.SampledMultiEpochDataset: SampledMultiEpochDataset,
}


def batch_by_direction(dataset, mode="split"):
    """Make ``dataset`` (as built by fairseq's data manager) collate one batch per direction,
    and with ``mode`` single also batch one direction at a time; with mixed, label the rows
    of fairseq's own batches by direction.

    Sampling and ordering stay fairseq's own, and so does batching within a direction.
    """
    if mode not in DIRECTION_BATCHING:
        raise ValueError(f"unknown direction batching {mode!r}; choose one of {', '.join(DIRECTION_BATCHING)}")
    cls = _SPLIT_CLASS.get(type(dataset))
    if cls is None and type(dataset) not in _SPLIT_CLASS.values():
        raise TypeError(f"cannot split batches of a {type(dataset).__name__} by direction")
    if cls is not None:
        dataset.__class__ = cls
    dataset.direction_batching = mode
    return dataset
