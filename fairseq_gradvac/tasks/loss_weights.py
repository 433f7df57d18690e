"""The loss weightings' training step, fairseq's side (the math: combiners/loss_weighting.py).

Per micro-batch one forward and one backward, as stock fairseq: each direction's
token-summed loss L_i is multiplied by m_i (the same on every worker for the whole update)
before the backward, so no per-direction gradient is ever kept. The update's L_i and
token counts n_i are summed locally and, after the optimizer step, over workers, and move
the method's state. FAMO's losses after the step come from one more forward, without
gradients, on the update's batches.
"""
from typing import List, Optional, Tuple, Union

import torch
from fairseq import utils
from fairseq.optim.amp_optimizer import AMPOptimizer


def direction_losses(model, criterion, sample, rows: Union[int, torch.Tensor], k: int):
    """One forward of ``sample``: its token-summed loss per direction [k] (with its graph),
    its target tokens per direction [k], and the criterion's log. ``rows``: the direction of
    a one-direction batch, or each row's direction number (fairseq's mixed batch: the
    per-row losses come from the criterion's ``compute_loss(..., reduce=False)``, which
    fairseq's cross_entropy and label_smoothed_cross_entropy have)."""
    if isinstance(rows, int):
        loss, _, log = criterion(model, sample)
        where = torch.tensor([rows], device=loss.device)
        losses = torch.zeros(k, dtype=loss.dtype, device=loss.device).index_add(0, where, loss.view(1))
        ntokens = torch.zeros(k, dtype=torch.float64, device=loss.device)
        ntokens[rows] = float(log.get("ntokens", 0))
        return losses, ntokens, log
    net_output = model(**sample["net_input"])
    loss, nll_loss = criterion.compute_loss(model, net_output, sample, reduce=False)
    target = sample["target"]
    count = target.size(0)
    per_row = loss.view(count, -1).sum(1)
    losses = torch.zeros(k, dtype=per_row.dtype, device=per_row.device).index_add(0, rows, per_row)
    tokens = target.ne(criterion.padding_idx).sum(1).to(torch.float64)
    ntokens = torch.zeros(k, dtype=torch.float64, device=tokens.device).index_add(0, rows, tokens)
    # the criterion's own log (its forward(), reduce=True)
    log = {"loss": per_row.sum().data, "ntokens": sample["ntokens"], "nsentences": count,
           "sample_size": sample["ntokens"]}
    if nll_loss is not loss:
        log["nll_loss"] = nll_loss.sum().data
    if getattr(criterion, "report_accuracy", False):
        n_correct, total = criterion.compute_accuracy(model, net_output, sample)
        log["n_correct"], log["total"] = utils.item(n_correct.data), utils.item(total.data)
    return losses, ntokens, log


def check_criterion(criterion, batching: str) -> None:
    """Mixed batches need each row's loss, which direction_losses() reads off fairseq's two
    token-level criteria; another criterion (or one whose forward adds a term, e.g. an
    alignment loss) is refused."""
    from fairseq.criterions.cross_entropy import CrossEntropyCriterion
    from fairseq.criterions.label_smoothed_cross_entropy import LabelSmoothedCrossEntropyCriterion

    known = (CrossEntropyCriterion.forward, LabelSmoothedCrossEntropyCriterion.forward)
    if batching == "mixed" and type(criterion).forward not in known:
        raise ValueError(
            f"--direction-batching mixed weighs each row's loss by its direction, from the per-token "
            f"losses of cross_entropy or label_smoothed_cross_entropy; {type(criterion).__name__} computes "
            f"its loss otherwise: use --direction-batching split or single")


class WeighedUpdate:
    """One update of a loss weighting on this worker: the multipliers, the local sums of
    L_i and n_i, and (FAMO) the batches for the forward after the step."""

    def __init__(self, update_num: int, multipliers: torch.Tensor, keep_batches: bool):
        self.update_num = update_num
        self.multipliers = multipliers  # m [K] on the model's device
        k, device = multipliers.numel(), multipliers.device
        self.losses = torch.zeros(k, dtype=torch.float64, device=device)
        self.ntokens = torch.zeros(k, dtype=torch.float64, device=device)
        self.batches: Optional[List[Tuple[Union[int, torch.Tensor], dict]]] = [] if keep_batches else None

    def train(self, model, criterion, optimizer, sample, rows, ignore_grad: bool, sync: bool):
        """Forward, weigh, backward (fairseq's FairseqTask.train_step with the weights);
        ``sync``: False inside an update's micro-batch, where DDP must not all-reduce yet."""
        k = self.multipliers.numel()
        model.train()
        with torch.autograd.profiler.record_function("forward"):
            with torch.autocast("cuda", enabled=isinstance(optimizer, AMPOptimizer)):
                losses, ntokens, log = direction_losses(model, criterion, sample, rows, k)
        weighted = (losses * self.multipliers.to(losses.dtype)).sum()
        if ignore_grad:  # a dummy batch: zeros, and not the update's losses
            weighted = weighted * 0
        else:
            self.losses += losses.detach().double()
            self.ntokens += ntokens
            if self.batches is not None:
                self.batches.append((rows, sample))
        with torch.autograd.profiler.record_function("backward"):
            no_sync = model.no_sync() if not sync and hasattr(model, "no_sync") else None
            if no_sync is None:
                optimizer.backward(weighted)
            else:
                with no_sync:
                    optimizer.backward(weighted)
        return losses.detach(), ntokens, log

    def losses_after_step(self, model, criterion, amp: bool) -> Tuple[torch.Tensor, torch.Tensor]:
        """The update's batches once more after the optimizer step, without gradients: their
        token-summed losses and tokens per direction [K] (the model stays in training mode,
        as in FAMO's code)."""
        k = self.multipliers.numel()
        losses = torch.zeros(k, dtype=torch.float64, device=self.multipliers.device)
        ntokens = torch.zeros_like(losses)
        with torch.no_grad(), torch.autocast("cuda", enabled=amp):
            for rows, sample in self.batches or []:
                l, n, _ = direction_losses(model, criterion, sample, rows, k)
                losses += l.double()
                ntokens += n
        return losses, ntokens
