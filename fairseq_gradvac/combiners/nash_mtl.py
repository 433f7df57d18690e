"""Nash-MTL (Navon et al., ICML 2022), with TorchJD's solver checked and the state in the checkpoint."""
import math

import torch

from . import alpha_fair
from .combiner import register_combiner
from .gramian import SOLVER_ERRORS, GramianWeighting, gram_factor, torchjd_weighting
from .options import positive_int


# The trace of the Gramian TorchJD's solver is given (see NashMTL).
SOLVER_SCALE = 1000.0


@register_combiner("nash_mtl")
class NashMTL(GramianWeighting):
    """Nash-MTL: the Nash bargaining solution, weights alpha > 0 with G alpha = 1 / alpha
    (each task's share of the update inversely proportional to its weight), found by a
    sequence of convex programs (cvxpy/ECOS) warm-started at the previous step's alpha.

    That alpha is the state: per task name and group (a task absent from a step keeps
    its own), saved in the checkpoint, changed only by a finite update. TorchJD's solver
    object is kept per number of tasks and only ever sees the Gramian (its Jacobian
    argument is a K x K factor with the same Gramian) and the alpha it starts from, so a
    resumed run solves the same programs. Its norm clipping (max_norm) is off: the adapter
    scales the update, and fairseq's --clip-norm clips it.

    Every solve is checked against G alpha = 1 / alpha (alpha_fair.residual). TorchJD's
    programs see the Gramian scaled to trace SOLVER_SCALE and start from the trace-1 alpha,
    sqrt(SOLVER_SCALE) times above their solution's scale: on the trace-1 Gramian, started
    at its solution's scale, their first linearized program is often unbounded and the loop
    returns its start (benchmarks/nash_solver.py). Where they still miss, an exact damped
    Newton solve of the same condition (alpha_fair.solve) takes over; where that fails too
    (no solution: a nonnegative combination of the gradients that is zero, such as two
    opposite gradients), the group keeps the alpha it started from, counted and logged
    (Combiner.solves). A direction whose gradient is exactly zero gives the group a zero
    update (GramianWeighting.shrinks_to_zero), without a solve.
    """

    state_per_group = True
    shrinks_to_zero = True
    solves = True
    tolerance = alpha_fair.TOLERANCE
    fallback = "those groups keep the weights of their last solve (1 at the start), and so does the state"

    def __init__(self, update_every: int = 1, iterations: int = 20):
        super().__init__()
        for option, value in (("--nash-mtl-update-every", update_every), ("--nash-mtl-iterations", iterations)):
            if not (isinstance(value, int) and value >= 1):
                raise ValueError(f"{option}: nash_mtl needs an integer >= 1, got {value}")
        self.update_every = update_every
        self.iterations = iterations
        self._solvers = {}
        self._solver(2)  # a missing solver fails at start-up, with the extra's name
        self.alpha = torch.ones(0, 0, dtype=torch.float64, device="cpu")  # [task_names, groups], on the host with the solver
        self.updates = 0  # finite updates so far (re-solve every update_every of them)
        self._pending = None  # (rows, their alpha after this step) until commit()

    @classmethod
    def add_args(cls, parser):
        # fmt: off
        parser.add_argument("--nash-mtl-update-every", type=positive_int, default=1, metavar="N",
                            help="Nash-MTL solves for new weights every N updates (paper: 1)")
        parser.add_argument("--nash-mtl-iterations", type=positive_int, default=20, metavar="N",
                            help="convex programs per solve (paper: 20)")
        # fmt: on

    @classmethod
    def from_args(cls, args, directions):
        return cls(update_every=args.nash_mtl_update_every, iterations=args.nash_mtl_iterations)

    def _solver(self, num_tasks: int):
        """TorchJD's solver for ``num_tasks`` tasks (the weighting inside its NashMTL
        aggregator: TorchJD has no public Nash-MTL Weighting), one per number of tasks."""
        if num_tasks not in self._solvers:
            self._solvers[num_tasks] = torchjd_weighting(
                self.name, "NashMTL", n_tasks=num_tasks, max_norm=0.0,
                update_weights_every=1, optim_niter=self.iterations,
            ).weighting
        return self._solvers[num_tasks]

    def prepare(self, rows, num_groups):
        old = self.alpha  # (its groups are the combiner's: Combiner.weigh checks them)
        self.alpha = torch.ones(len(self.task_names), num_groups, dtype=torch.float64, device="cpu")
        if old.numel():
            self.alpha[: old.shape[0]] = old  # new task names start at alpha = 1, as TorchJD's
        self._pending = (rows, self.alpha[rows].clone())

    def group_weights(self, gram, group, rows):
        alpha = self.alpha[rows, group]
        if self.updates % self.update_every:
            return alpha.clone()
        new = self.torchjd_solve(gram, alpha)
        if not alpha_fair.residual(gram, new) <= self.tolerance:
            new = alpha_fair.solve(gram, start=alpha)
        if alpha_fair.residual(gram, new) <= self.tolerance:
            self._pending[1][:, group] = new
        return new

    def torchjd_solve(self, gram, alpha):
        """TorchJD's answer for the trace-1 Gramian ``gram`` from ``alpha`` (NaN where its
        solver raised: the exact solve answers then). Its Gramian is SOLVER_SCALE times
        ``gram``, whose solution is the trace-1 one over sqrt(SOLVER_SCALE); it starts from
        ``alpha`` itself, sqrt(SOLVER_SCALE) times above (fresh solves reaching the condition,
        K = 5 / 8: 29-30 / 30 so, 18 / 23 of 30 started at alpha / sqrt(SOLVER_SCALE))."""
        solver = self._solver(len(alpha))
        solver.prvs_alpha = alpha.numpy().copy()
        solver.step = min(solver.step, 1)  # 0 builds the program (first call), then reuse it
        try:
            return solver(gram_factor(gram * SOLVER_SCALE)).double() * SOLVER_SCALE ** 0.5
        except SOLVER_ERRORS as e:
            self.solve_error = f"TorchJD: {type(e).__name__}: {e}"
            return torch.full_like(alpha, math.nan)

    def fallback_weights(self, gram, group, rows):
        return self.alpha[rows, group].clone()

    def residual(self, gram, w):
        if self.updates % self.update_every:
            return 0.0  # the last solve's weights, reused: nothing solved at this update
        return alpha_fair.residual(gram, w)

    def _commit(self, finite):
        pending, self._pending = self._pending, None
        if pending is not None and bool(finite):  # (None: a non-finite Gram, nothing solved)
            rows, new = pending
            self.alpha[rows] = new
            self.updates += 1

    def state_dict(self):
        state = super().state_dict()
        state.update(alpha=self.alpha.clone(), updates=self.updates)
        return state

    def _check_state(self, state):
        super()._check_state(state)
        alpha, groups = state["alpha"], state.get("group_names")
        if alpha.dim() != 2 or alpha.shape[0] != len(state["task_names"]) or (
            groups is not None and alpha.shape[1] not in (0, len(groups))
        ):
            raise ValueError(
                f"inconsistent nash_mtl state: alpha of shape {tuple(alpha.shape)} for "
                f"{len(state['task_names'])} task names and {len(groups or [])} groups"
            )

    def _load(self, state):
        self.alpha = state["alpha"].double().clone()
        self.updates = int(state["updates"])
