"""Gradient Vaccine (Wang et al., ICLR 2021, Algorithm 1) and PCGrad, its target-0 case.

Everything is derived from the per-group Gram matrices G_k = [g_ik . g_jk]: the modified
gradient of task i is kept as coefficients, g'_ik = sum_m C[k, i, m] g_mk, so that
g'_ik . g_jk = (C_k G_k)[i, j] and ||g'_ik||^2 = (C_k G_k C_k^T)[i, i]. The K x P
gradients are read twice per step (Gram matrices, then the weighted sum), and the K^2
control flow runs for all groups and all tasks i at once: each row i of C only depends on
the original gradients, so the tasks i are independent and only the K-1 visits of the
other tasks j are sequential.
"""
from typing import Iterable, Optional

import torch

from .combiner import Combiner, StepReport, register_combiner
from .cosine import cosine
from .options import direction_list, finite_float

# sqrt(1 - phi_hat^2) divides the correction (line 14); a target at +-1 would need an
# infinite multiple of g_j, and rounding above 1 gives NaN. Targets are clamped to this.
MAX_TARGET = 0.999


def visit_order(seed: int, step: int, num_tasks: int, num_groups: int) -> torch.Tensor:
    """Random order of the other tasks j for each (group k, task i), drawn from (seed, step).

    Shape [num_groups, K, K-1]. Every distributed worker draws the same order (pitfall 7).
    """
    gen = torch.Generator().manual_seed((seed * 1_000_003 + step) % (2**63 - 1))
    keys = torch.rand(num_groups, num_tasks, num_tasks, generator=gen)
    keys.diagonal(dim1=1, dim2=2).fill_(2.0)  # task i itself sorts last and is dropped
    return keys.argsort(dim=-1)[..., : num_tasks - 1]


def vaccinate(
    gram: torch.Tensor,
    target: torch.Tensor,
    order: torch.Tensor,
    apply: torch.Tensor,
    beta: Optional[float],
):
    """Lines 9-18 of Algorithm 1 for all groups at once.

    gram [n, K, K] and target [n, K, K] (phi_hat[k, i, j]) in fp32; order [n, K, K-1];
    apply [K] bool (task i in the set G). beta None keeps the target fixed (fixed_obj, PCGrad).
    Returns C [n, K, K], the updated target, the similarities and the corrected flags [n, K, K].
    """
    n, k, _ = gram.shape
    tiny = torch.finfo(gram.dtype).tiny
    coef_matrix = torch.eye(k, dtype=gram.dtype, device=gram.device).repeat(n, 1, 1)  # line 9
    norm = gram.diagonal(dim1=1, dim2=2).clamp_min(0).sqrt()  # ||g_jk||, [n, K]
    target = target.to(gram.dtype, copy=True)
    similarity = torch.full_like(gram, float("nan"))
    corrected = torch.zeros_like(gram, dtype=torch.bool)
    zero = gram.new_zeros(())
    # cg[k, i, m] = g'_ik . g_mk = (C_k G_k)[i, m], kept up to date row by row (line 14 adds
    # coef * g_jk to g'_ik, so row i of C_k G_k gains coef * row j of G_k). Only [n, K, K]
    # tensors: no batch of tiny matmuls (milliseconds each in the CPU BLAS's threading) and
    # no [n, K, K, K] product (large enough to be split across threads, which stalls when
    # the machine is busy).
    cg = gram.clone()
    for s in range(k - 1):  # line 11: the s-th task j visited by each (k, i)
        j = order[:, :, s].unsqueeze(-1)  # [n, K, 1]
        dot = cg.gather(2, j).squeeze(-1)
        norm_i = (cg * coef_matrix).sum(-1).clamp_min(0).sqrt()
        norm_j = norm.gather(1, j.squeeze(-1))
        # A zero-norm gradient (a task with no tokens) has no direction: skip the pair.
        visit = apply & (norm_i > 0) & (norm_j > 0)
        phi = cosine(dot, norm_i, norm_j)  # line 12
        phi_hat = target.gather(2, j).squeeze(-1)
        t = phi_hat.clamp(-MAX_TARGET, MAX_TARGET)
        # Line 13 against the target the correction can reach: with phi_hat above
        # MAX_TARGET and phi in [MAX_TARGET, phi_hat), line 14 with the clamped target
        # would move g'_i AWAY from g_j (down to MAX_TARGET).
        fix = visit & (phi < t)  # line 13
        sin_t = (1 - t * t).sqrt()
        sin_phi = (1 - phi * phi).clamp_min(0).sqrt()
        coef = norm_i * (t * sin_phi - phi * sin_t) / (norm_j.clamp_min(tiny) * sin_t)  # line 14
        coef = torch.where(fix, coef, zero)
        coef_matrix.scatter_add_(2, j, coef.unsqueeze(-1))
        cg.add_(coef.unsqueeze(-1) * gram.gather(1, j.expand(n, k, k)))  # + coef * G_k[j, :]
        if beta is not None:  # line 16: every visit, with phi measured before the correction
            new = torch.where(visit, (1 - beta) * phi_hat + beta * phi, phi_hat)
            target.scatter_(2, j, new.unsqueeze(-1))
        similarity.scatter_(2, j, torch.where(visit, phi, zero + float("nan")).unsqueeze(-1))
        corrected.scatter_(2, j, fix.unsqueeze(-1))
    return coef_matrix, target, similarity, corrected


@register_combiner("gradvac")
class GradVac(Combiner):
    """GradVac with EMA targets per (task i, task j, group), or a fixed target (fixed_obj).

    ``apply_to``: the task names GradVac modifies (the set G; None = all); the others
    keep their gradient but still serve as g_j. ``beta``: EMA decay (paper: 1e-2).
    """

    state_per_group = True

    def __init__(
        self,
        beta: float = 1e-2,
        fixed_target: Optional[float] = None,
        apply_to: Optional[Iterable[str]] = None,
        seed: int = 1,
    ):
        super().__init__()
        if not 0 < beta <= 1:
            raise ValueError(f"GradVac's beta must be in (0, 1], got {beta}")
        if fixed_target is not None and not -1 < fixed_target < 1:
            raise ValueError(f"a fixed GradVac target must lie in (-1, 1), got {fixed_target}")
        self.beta = beta
        self.fixed_target = fixed_target
        self.apply_to = None if apply_to is None else sorted(set(apply_to))
        self.seed = seed
        self.phi_hat: Optional[torch.Tensor] = None  # [N, N, num_groups], rows = task_names
        self._pending = None  # (rows, new targets) of the last weigh(), until commit()

    @classmethod
    def add_args(cls, parser):
        # fmt: off
        parser.add_argument("--gradvac-beta", type=finite_float, default=1e-2,
                            help="EMA decay of GradVac's similarity targets (paper: 1e-2)")
        parser.add_argument("--gradvac-fixed-target", type=finite_float, default=None,
                            help="use this fixed similarity target instead of the EMA (fixed_obj)")
        cls._add_directions(parser)
        # fmt: on

    @staticmethod
    def _add_directions(parser):
        parser.add_argument("--gradvac-directions", type=direction_list, default=None, metavar="PAIRS",
                            help="comma-separated directions GradVac/PCGrad modify (default: all), "
                                 "e.g. the low-resource ones: en-hi,hi-en")

    @classmethod
    def from_args(cls, args, directions):
        return cls(beta=args.gradvac_beta, fixed_target=args.gradvac_fixed_target,
                   apply_to=cls._chosen(args, directions), seed=args.seed)

    @staticmethod
    def _chosen(args, directions):
        chosen = args.gradvac_directions
        unknown = sorted(set(chosen or ()) - set(directions))
        if unknown:
            raise ValueError(
                f"--gradvac-directions names {', '.join(unknown)}, which are not training "
                f"directions ({', '.join(directions)})"
            )
        return chosen

    def _prepare_state(self, groups, device):
        n_tasks, n_groups = len(self.task_names), len(groups)
        if self.phi_hat is None:
            self.phi_hat = torch.zeros(0, 0, n_groups)
        old = self.phi_hat
        if old.shape[0] < n_tasks or old.device != device:  # new task names: phi_hat^(0) = 0
            self.phi_hat = torch.zeros(n_tasks, n_tasks, n_groups, device=device)
            self.phi_hat[: old.shape[0], : old.shape[0]] = old.to(device)

    def _weigh(self, gram, tasks, groups, step, losses, ntokens):
        k, device = len(tasks), gram.device
        rows = self._rows(tasks)
        self._prepare_state(groups, device)
        idx = torch.tensor(rows, device=device)
        if self.fixed_target is None:
            target = self.phi_hat[idx[:, None], idx[None, :]].permute(2, 0, 1).to(gram.dtype)
        else:
            target = torch.full_like(gram, self.fixed_target)
        apply = torch.tensor(
            [self.apply_to is None or t in self.apply_to for t in tasks], device=device
        )
        order = visit_order(self.seed, step, k, len(groups)).to(device, non_blocking=True)
        beta = None if self.fixed_target is not None else self.beta
        coef, new_target, similarity, corrected = vaccinate(gram, target, order, apply, beta)
        # The EMA moves in commit(), once the combined gradient is known to be finite.
        self._pending = (idx, new_target) if beta is not None else None
        self.last_report = StepReport(
            tasks,
            groups.names,
            phi=similarity.permute(1, 2, 0),
            target=target.permute(1, 2, 0),
            corrected=corrected.permute(1, 2, 0),
        )
        # Line 19: sum_i g'_ik = sum_m (sum_i C[k, i, m]) g_mk
        return coef.sum(1)

    def _commit(self, finite):
        if self._pending is None:
            return
        idx, new_target = self._pending
        self._pending = None
        # A non-finite step (input or combination) leaves the EMA untouched (pitfall 6).
        old = self.phi_hat[idx[:, None], idx[None, :]]
        new = new_target.permute(1, 2, 0).to(self.phi_hat.dtype)
        self.phi_hat[idx[:, None], idx[None, :]] = torch.where(finite, new, old)

    def state_dict(self) -> dict:
        state = super().state_dict()
        state.update(
            beta=self.beta,
            fixed_target=self.fixed_target,
            phi_hat=None if self.phi_hat is None else self.phi_hat.detach().cpu().clone(),
        )
        return state

    def _check_state(self, state: dict) -> None:
        super()._check_state(state)
        phi_hat = state["phi_hat"]
        if phi_hat is not None:
            n_tasks, n_groups = len(state["task_names"]), len(state["group_names"] or [])
            if (
                phi_hat.dim() != 3
                or phi_hat.shape[0] != phi_hat.shape[1]
                or phi_hat.shape[0] > n_tasks
                or phi_hat.shape[2] != n_groups
            ):
                raise ValueError(
                    f"inconsistent {self.name} state: phi_hat of shape {tuple(phi_hat.shape)} "
                    f"for {n_tasks} tasks and {n_groups} groups"
                )

    def _load(self, state: dict) -> None:
        self.phi_hat = None if state["phi_hat"] is None else state["phi_hat"].clone()


@register_combiner("pcgrad")
class PCGrad(GradVac):
    """PCGrad (Yu et al. 2020): GradVac with the target fixed at 0, at any granularity."""

    def __init__(self, apply_to: Optional[Iterable[str]] = None, seed: int = 1):
        super().__init__(fixed_target=0.0, apply_to=apply_to, seed=seed)

    @classmethod
    def add_args(cls, parser):
        cls._add_directions(parser)

    @classmethod
    def from_args(cls, args, directions):
        return cls(apply_to=cls._chosen(args, directions), seed=args.seed)
