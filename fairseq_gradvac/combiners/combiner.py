"""The combiner interface, its registry, and the plain sum (multilingual baseline).

A combiner turns the K per-task gradients of one step, ``grads`` of shape [K, P], into
the one gradient the optimizer applies: sum_m W[k, m] g_mk for every parameter group k.
The weights W follow from the per-group K x K Gram matrices alone, so a step has two
phases that the distributed exchange can run on different data:
1. ``weigh(gram, ...)``: the weights [num_groups, K], from the Gram matrices (all-reduced
   across workers) of the columns ``gram_columns(groups)`` (all columns but for GradNorm,
   which reads only the layer it measures); the state change (EMA targets, task weights)
   is only prepared;
2. ``commit(finite)``: the state change takes effect if the combined gradient is finite
   (an fp16 combination can overflow although every row is finite).
``combine(grads, ...)`` runs both on one worker. The state is keyed by task NAME, so a task
missing from a step keeps its state and tasks may come and go.
"""
import argparse
import logging
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch

from .groups import ParameterGroups, all_finite

logger = logging.getLogger(__name__)

_REGISTRY: Dict[str, Callable[..., "Combiner"]] = {}


def register_combiner(name: str):
    def wrap(cls):
        if name in _REGISTRY:
            raise ValueError(f"combiner {name!r} registered twice")
        _REGISTRY[name] = cls
        cls.name = name
        return cls

    return wrap


def available_combiners() -> List[str]:
    return sorted(_REGISTRY)


def gradient_methods() -> List[str]:
    """The registered methods that combine per-direction gradients (not the loss weightings)."""
    return [n for n in available_combiners() if _REGISTRY[n].needs_rows]


def combiner_class(name: str):
    """The class registered as ``name`` (``sum``, ``pcgrad``, ``gradvac``, ...)."""
    if name not in _REGISTRY:
        raise ValueError(
            f"unknown gradient combiner {name!r}; choose one of {', '.join(available_combiners())}"
        )
    return _REGISTRY[name]


def build_combiner(name: str, **kwargs) -> "Combiner":
    """Build a combiner by its registered name, with its constructor's arguments."""
    return combiner_class(name)(**kwargs)


@dataclass
class StepReport:
    """What a combiner did in one step, as device tensors (no host sync until read).

    GradVac/PCGrad: ``phi[i, j, k]``: Algorithm 1's phi, cos(g'_ik, g_jk) of the gradient
    ALREADY corrected against the tasks visited before j in this step's random order (so
    not symmetric, and not the raw cosine of Part I: analysis.similarity records that),
    NaN where the pair was not visited; ``target[i, j, k]``: the phi_hat it was compared
    with; ``corrected[i, j, k]``: whether it was corrected;
    ``finite``: False when the input held NaN/Inf and every state was left untouched;
    ``weights``: the method's weights on the per-task mean-loss gradients g_i / n_i (MGDA:
    alpha [num_groups, K] on the simplex; GradNorm: w [K], summing to K);
    ``solved`` [num_groups] (the methods that solve something: Combiner.solves): whether
    each group's answer meets the condition the method solves, checked on the answer itself
    (MGDA: Wolfe's optimality test; Nash-MTL, FairGrad: G w = w^(-1/alpha); UPGrad, DualProj:
    the update in the dual cone; CAGrad: the duality gap of its program), ``residual``
    [num_groups]: how far from it, relative (the method's page says how it is measured).
    """

    tasks: List[str]
    group_names: List[str]
    finite: Optional[torch.Tensor] = None  # (set by Combiner.weigh: the method's own check, if any, and the Gram's)
    phi: Optional[torch.Tensor] = None
    target: Optional[torch.Tensor] = None
    corrected: Optional[torch.Tensor] = None
    weights: Optional[torch.Tensor] = None
    solved: Optional[torch.Tensor] = None
    residual: Optional[torch.Tensor] = None

    @property
    def failed_solves(self) -> Optional[int]:
        """The groups whose solve failed this step (a host sync), None for a method that solves nothing."""
        return None if self.solved is None else int((~self.solved).sum())


class Combiner:
    """Base class: validates input and keeps the task-name -> state-row mapping."""

    name = "base"
    # True: the method combines per-direction gradients (rows); False: it weighs each
    # token's loss before the one backward of a micro-batch (loss_weighting.py)
    needs_rows = True
    needs_gram = True  # False: weigh() ignores the Gram matrices (may be given None)
    # True: the method weighs the per-task mean losses (per token), and scales the update
    # for fairseq's division by the batch's tokens (not its sentences: --sentence-avg)
    mean_losses = False
    # True: the state has a part per parameter group (GradVac's targets, Nash-MTL's alpha):
    # it is bound to the groups of its first step, saved with their names and sizes, and
    # refused for other groups (another granularity or model)
    state_per_group = False
    # True: weigh() solves a problem per group and reports each solve (StepReport.solved);
    # ``fallback`` says what a group gets when its solve fails
    solves = False
    fallback = ""

    @classmethod
    def add_args(cls, parser: argparse.ArgumentParser) -> None:
        """This method's command-line options (fairseq's style); none by default."""

    @classmethod
    def wrapped(cls, args: argparse.Namespace) -> List[str]:
        """The other methods this one runs inside it (their options apply too); none by default."""
        return []

    @classmethod
    def from_args(cls, args: argparse.Namespace, directions: List[str]) -> "Combiner":
        """The combiner for a run with these options and training directions."""
        return cls()

    def check_groups(self, groups: ParameterGroups) -> None:
        """Refuse, at start-up, a model this combiner cannot work on (nothing by default)."""

    def __init__(self):
        self.task_names: List[str] = []
        self.last_report: Optional[StepReport] = None
        self.gram_finite: Optional[torch.Tensor] = None  # this step's, during _weigh
        self.group_names: Optional[List[str]] = None  # the groups the state is for (state_per_group)
        self.group_sizes: Optional[List[int]] = None
        self._sample_size: Optional[torch.Tensor] = None
        self.failed_solves = 0  # groups whose solve failed, over the combiner's life
        self.solve_error = ""  # what the last solver that raised said

    def combine(
        self,
        grads: torch.Tensor,
        tasks: Sequence[str],
        groups: ParameterGroups,
        step: int,
        losses: Optional[torch.Tensor] = None,
        ntokens: Optional[torch.Tensor] = None,
        out: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """Return the combined gradient, shape [P], dtype of ``grads``; written into ``out``
        when given (a vector kept from update to update: a fresh one costs a first touch of
        its pages, most of a plain sum's time)."""
        self._check(grads, tasks, groups)
        gram = None
        if self.needs_gram:
            start, stop = self.gram_columns(groups)
            gram = groups.gram(grads[:, start:stop], start=start)
        weights = self.weigh(gram, tasks, groups, step, losses=losses, ntokens=ntokens)
        out = groups.weighted_sum(grads, weights, out=out)
        self.commit(self.update_finite(gram, weights, groups, out))
        return out

    def update_finite(self, gram: Optional[torch.Tensor], weights: torch.Tensor, groups: ParameterGroups,
                      update: torch.Tensor) -> torch.Tensor:
        """Whether ``update`` = sum_m W[k, m] g_mk is finite, read from the Gram matrices
        where they prove it: if they are finite and cover every column, each entry of group
        k is at most sum_m |W[k, m]| ||g_mk|| = sum_m |W[k, m]| sqrt(G_k[m, m]) in magnitude
        (|a . b| <= ||a|| ||b|| per column, and the largest entry of g_mk is at most its
        norm); under half the dtype's largest value, rounding (K products and sums) cannot
        overflow either. Otherwise (an fp16 update near its range, a NaN, a method that
        reads only some columns) one pass over the update decides. The Gram matrices are
        those weigh() was given (before its non-finite rule)."""
        if gram is not None and self.gram_columns(groups) == (0, groups.numel) and update.dtype.is_floating_point:
            norms = gram.diagonal(dim1=1, dim2=2).double().clamp_min(0).sqrt()  # ||g_mk||, [groups, K]
            bound = (weights.double().abs() * norms).sum(1).max()  # NaN weights: not proved
            if bool(self.gram_finite & (bound <= torch.finfo(update.dtype).max / 2)):  # one host sync
                return torch.ones((), dtype=torch.bool, device=update.device)
        return all_finite(update)

    def gram_columns(self, groups: ParameterGroups) -> Tuple[int, int]:
        """The column range [start, stop) of the flat layout whose per-group Gram matrices
        weigh() reads (the parts of the groups inside it; zero for the others)."""
        return 0, groups.numel

    def weigh(
        self,
        gram: Optional[torch.Tensor],
        tasks: Sequence[str],
        groups: ParameterGroups,
        step: int,
        losses: Optional[torch.Tensor] = None,
        ntokens: Optional[torch.Tensor] = None,
        sample_size: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """Weights W [num_groups, K] of this step from the Gram matrices [num_groups, K, K].

        ``losses``: each task's loss per token in this step (GradNorm's L_i); ``ntokens``:
        each task's token count n_i in this step (MGDA and GradNorm work on the per-task
        mean losses; None: equal counts); ``sample_size``: what fairseq will divide the
        update by (None: the sum of ``ntokens``; it differs at an epoch's end, when a
        worker's last micro-batch is a dummy). Non-finite Gram matrices give the plain sum
        (W = 1), so that the NaN/Inf reaches the trainer, and no state change. The state
        change waits for commit().
        """
        tasks = list(tasks)
        if not tasks or len(set(tasks)) != len(tasks):
            raise ValueError(f"task names must be unique and at least one, got {tasks}")
        if gram is not None and gram.shape != (len(groups), len(tasks), len(tasks)):
            raise ValueError(
                f"expected Gram matrices of shape [{len(groups)}, {len(tasks)}, {len(tasks)}], "
                f"got {tuple(gram.shape)}"
            )
        if ntokens is not None and tuple(ntokens.shape) != (len(tasks),):
            raise ValueError(
                f"expected one token count per task, shape [{len(tasks)}], got {tuple(ntokens.shape)}"
            )
        self._sample_size = sample_size
        if self.state_per_group:
            self._bind_groups(groups)
        # The rule for a non-finite Gram, written once for every method: the method sees
        # zeros (no NaN in its arithmetic or solver; ``self.gram_finite`` tells a method
        # that would rather not run), and the step is the plain sum (W = 1), so that the
        # NaN/Inf reaches the trainer, which skips the batch; commit() then keeps the state.
        finite = torch.isfinite(gram).all() if gram is not None else None
        self.gram_finite = finite
        if finite is not None:
            gram = torch.where(finite, gram, torch.zeros_like(gram))
        weights = self._weigh(gram, tasks, groups, int(step), losses, ntokens)
        report = self.last_report
        self._note_solves(report, step)
        if finite is not None:
            weights = torch.where(finite, weights, torch.ones_like(weights))
        if report.finite is None:
            report.finite = finite if finite is not None else torch.ones((), dtype=torch.bool, device=weights.device)
        elif finite is not None:
            report.finite = report.finite & finite
        return weights

    def _note_solves(self, report: StepReport, step) -> None:
        """Count failed solves; the first one is a warning, later ones only counted (the
        task's log line and solves.csv carry the count of every update)."""
        failed = report.failed_solves
        if not failed:
            return
        if not self.failed_solves:
            worst = float(report.residual.max()) if report.residual is not None else float("nan")
            logger.warning(
                f"{self.name}: the solve of {failed} of {len(report.solved)} parameter groups "
                f"failed at update {step + 1} (largest residual {worst:.3g}"
                f"{'; ' + self.solve_error if self.solve_error else ''}); {self.fallback}. "
                "Further failures are counted (solve_fails in the log, solves.csv), not warned"
            )
        self.failed_solves += failed

    def commit(self, finite: torch.Tensor) -> None:
        """Apply the state change of the last weigh() if the combined gradient is finite."""
        report = self.last_report
        report.finite = report.finite & finite
        self._commit(report.finite)

    def _weigh(self, gram, tasks, groups, step, losses, ntokens) -> torch.Tensor:
        raise NotImplementedError

    def _divisor(self, n: torch.Tensor) -> torch.Tensor:
        """fairseq's divisor of this update, as the trainer applies it: the sample size, or
        1 when it is 0 (``numer / (sample_size or 1.0)``); the token count N = sum n_i when
        weigh() was not told it."""
        if self._sample_size is None:
            return n.sum()
        size = self._sample_size.to(n.device, n.dtype)
        return torch.where(size > 0, size, torch.ones_like(size))

    def _commit(self, finite: torch.Tensor) -> None:
        """Stateless combiners have nothing to apply."""

    @staticmethod
    def _check(grads, tasks, groups):
        """The shapes; weigh() checks the task names (none, or one twice)."""
        if grads.dim() != 2 or grads.shape[0] != len(tasks):
            raise ValueError(
                f"expected gradients of shape [K={len(tasks)}, P], got {tuple(grads.shape)}"
            )
        if grads.shape[1] != groups.numel:
            raise ValueError(
                f"gradients have {grads.shape[1]} entries but the parameter groups cover {groups.numel}"
            )

    def _bind_groups(self, groups: ParameterGroups) -> None:
        if self.group_names is not None and (
            self.group_names != list(groups.names) or self.group_sizes not in (None, list(groups.sizes))
        ):
            raise ValueError(
                f"{self.name} state was built for other parameter groups "
                f"({len(self.group_names)} groups, not {len(groups)}): a checkpoint from "
                "another granularity or model?"
            )
        self.group_names, self.group_sizes = list(groups.names), list(groups.sizes)

    def _rows(self, tasks: Sequence[str]) -> List[int]:
        """State rows of ``tasks``, registering names never seen before."""
        for t in tasks:
            if t not in self.task_names:
                self.task_names.append(t)
        return [self.task_names.index(t) for t in tasks]

    def state_dict(self) -> dict:
        state = {"combiner": self.name, "task_names": list(self.task_names)}
        if self.state_per_group:
            state.update(group_names=self.group_names, group_sizes=self.group_sizes)
        return state

    def _check_state(self, state: dict) -> None:
        """Refuse a state from another combiner, or one that maps two state rows to one
        task name (the rows are looked up by name: the second would never be used)."""
        if state.get("combiner") != self.name:
            raise ValueError(
                f"state was saved by combiner {state.get('combiner')!r}, not {self.name!r}"
            )
        names = list(state["task_names"])
        duplicates = sorted({t for t in names if names.count(t) > 1})
        if duplicates:
            raise ValueError(
                f"inconsistent {self.name} state: duplicate task names {duplicates} in {names}"
            )
        group_names, group_sizes = state.get("group_names"), state.get("group_sizes")
        if self.state_per_group and self.group_names is not None and (
            group_names is None  # saved before its first step, into a combiner already running
            or list(group_names) != self.group_names
            or (group_sizes is not None and list(group_sizes) != self.group_sizes)
        ):
            raise ValueError(
                f"{self.name} state was saved for other parameter groups "
                f"({len(group_names or [])} groups, not {len(self.group_names)}): a checkpoint "
                "from another granularity or model?"
            )

    def load_state_dict(self, state: dict) -> None:
        """Validate everything, then change anything: a failed load leaves the combiner as it was."""
        self._check_state(state)
        self._load(state)
        self.task_names = list(state["task_names"])
        if self.state_per_group:
            names, sizes = state.get("group_names"), state.get("group_sizes")
            self.group_names = None if names is None else list(names)
            self.group_sizes = None if sizes is None else list(sizes)

    def _load(self, state: dict) -> None:
        """A method's own part of the state, after _check_state (nothing by default)."""


def token_counts(ntokens: Optional[torch.Tensor], num_tasks: int, like: torch.Tensor) -> torch.Tensor:
    """The token counts n_i [K] in ``like``'s dtype and device, for the methods defined on
    per-task mean losses: row g_i is the gradient of a token-summed loss, g_i / n_i that
    of the mean. None (counts unknown) means equal counts: the rows are used as they are.
    A task without tokens has a zero row; its count is taken as 1 so that it stays zero."""
    if ntokens is None:
        return torch.ones(num_tasks, dtype=like.dtype, device=like.device)
    n = ntokens.detach().to(like.device, like.dtype)
    return torch.where(n > 0, n, torch.ones_like(n))
