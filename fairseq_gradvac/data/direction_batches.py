"""Training minibatches split by translation direction.

fairseq's multilingual datasets collate rows of all directions into one batch and forget
which row came from which direction; the per-direction gradients need them apart. The
sampled dataset's items carry their sub-dataset index, and so their direction; fairseq's
own mixed-batch collater applied to one direction's rows gives exactly the rows, padding
side and language tokens of the stock batch, one batch per direction.
"""
from collections import OrderedDict

from fairseq.data.multilingual import sampled_multi_dataset, sampled_multi_epoch_dataset


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


# fairseq seeds each epoch's sampling with a hash of the dataset's class name
# (SampledMultiDataset._establish_virtual_datasets, SampledMultiEpochDataset._next_global_indices):
# the subclasses keep fairseq's names so every epoch samples what the stock task samples, and a
# run resumed inside epoch 2 or later (dataset built, then re-classed) continues the same order.
# Single inheritance: CPython only lets __class__ change between identical layouts.
class SampledMultiDataset(sampled_multi_dataset.SampledMultiDataset):
    collater = _collate_by_direction


class SampledMultiEpochDataset(sampled_multi_epoch_dataset.SampledMultiEpochDataset):
    collater = _collate_by_direction


_SPLIT_CLASS = {
    sampled_multi_dataset.SampledMultiDataset: SampledMultiDataset,
    sampled_multi_epoch_dataset.SampledMultiEpochDataset: SampledMultiEpochDataset,
}


def batch_by_direction(dataset):
    """Make ``dataset`` (as built by fairseq's data manager) collate one batch per direction.

    Only the collater changes; sampling, ordering and batching stay fairseq's own.
    """
    cls = _SPLIT_CLASS.get(type(dataset))
    if cls is None:
        if type(dataset) in _SPLIT_CLASS.values():
            return dataset
        raise TypeError(f"cannot split batches of a {type(dataset).__name__} by direction")
    dataset.__class__ = cls
    return dataset
