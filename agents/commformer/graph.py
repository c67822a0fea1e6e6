"""The communication graph of CommFormer: learned sparse edges and per-step temporal gates.

`edge_logits[i, j]` scores the edge from sender j to receiver i. Each receiver keeps its top k
incoming edges, k = max(int(N * sparsity), 1), plus its self loop. In training the top k is taken
from a Gumbel-softmax sample with a straight-through estimator, so the forward pass sees a hard k-hot
mask while gradients reach the logits through the soft probabilities. In rollouts, evaluation and
bootstrapping the top k of the logits themselves is used (deterministic).

A gate g_i in {0, 1}, computed from agent i's own observation each step, decides whether i listens at
all: a closed gate cuts i's incoming edges except the self loop. Gates are sampled (Bernoulli) while
acting and trained through a straight-through estimator; evaluation opens a gate when p > 0.5.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def k_of(n_agents: int, sparsity: float) -> int:
    """Incoming edges kept per agent (besides the self loop)."""
    return max(int(n_agents * sparsity), 1)


def decayed_coef(start: float, until: float, fraction: float) -> float:
    """A coefficient falling linearly from start (fraction 0) to 0 at fraction `until`, then 0."""
    if start == 0 or until <= 0 or fraction >= until:
        return 0.0
    return start * (1.0 - max(fraction, 0.0) / until)


def annealed_tau(start: float, end: float, fraction: float) -> float:
    """The Gumbel temperature at a fraction of the budget: geometric from start (0) to end (1), then end."""
    if start == end:
        return start
    f = min(max(fraction, 0.0), 1.0)
    return math.exp(math.log(start) + (math.log(end) - math.log(start)) * f)


class CommGraph(nn.Module):
    """Edge logits with hard top-k masks: learned (Gumbel top-k), full, or a fixed random graph."""

    def __init__(self, n_agents: int, sparsity: float, mode: str = "learned", self_loops: bool = True,
                 seed: int = 0):
        super().__init__()
        if mode not in ("learned", "full", "random"):
            raise ValueError(f"graph mode must be learned, full or random, got {mode!r}")
        self.n, self.mode, self.self_loops = n_agents, mode, self_loops
        self.k = min(k_of(n_agents, sparsity), max(n_agents - 1, 1))
        self.edge_logits = nn.Parameter(torch.ones(n_agents, n_agents))
        eye = torch.eye(n_agents, dtype=torch.bool)
        self.register_buffer("eye", eye)
        g = torch.Generator().manual_seed(seed)
        noise = torch.rand(n_agents, n_agents, generator=g).masked_fill(eye, -1.0)
        fixed = torch.zeros(n_agents, n_agents)
        fixed.scatter_(1, noise.topk(self.k, dim=1).indices, 1.0)
        self.register_buffer("random_mask", fixed)
        self.frozen = False

    def _with_self(self, mask: torch.Tensor) -> torch.Tensor:
        if not self.self_loops:
            return mask
        return mask + self.eye * (1 - mask.detach())

    def probs(self) -> torch.Tensor:
        """Row-wise softmax of the edge logits over senders other than the receiver itself."""
        return torch.softmax(self.edge_logits.masked_fill(self.eye, float("-inf")), dim=1)

    def row_entropy(self) -> torch.Tensor:
        """The mean over receivers of the entropy of probs()' row (senders other than itself), with its gradient."""
        off = ~self.eye
        logp = torch.log_softmax(self.edge_logits[off].view(self.n, self.n - 1), dim=1)
        return -(logp.exp() * logp).sum(1).mean()

    def deterministic(self) -> torch.Tensor:
        """The k-hot top-k of the logits per receiver, plus self loops (no gradient)."""
        if self.mode == "full":
            return torch.ones(self.n, self.n, device=self.edge_logits.device)
        if self.mode == "random":
            return self._with_self(self.random_mask)
        with torch.no_grad():
            scores = self.edge_logits.masked_fill(self.eye, float("-inf"))
            mask = torch.zeros_like(scores).scatter_(1, scores.topk(self.k, dim=1).indices, 1.0)
        return self._with_self(mask)

    def sample(self, generator: torch.Generator | None = None, tau: float = 1.0, batch: int | None = None
               ) -> torch.Tensor:
        """A training mask: Gumbel-softmax per row, hard top-k forward, soft probabilities backward.

        One noise draw for the whole batch ([N, N], the authors' way) or, given `batch`, one per sample
        ([batch, N, N]), so that one step averages the gradient over many graphs rather than one.
        """
        if self.mode != "learned" or self.frozen:
            return self.deterministic()
        logits = self.edge_logits.masked_fill(self.eye, float("-inf"))
        shape = logits.shape if batch is None else (batch, *logits.shape)
        u = torch.rand(shape, generator=generator, device=logits.device).clamp(1e-10, 1 - 1e-10)
        soft = torch.softmax((logits - torch.log(-torch.log(u))) / tau, dim=-1)
        hard = torch.zeros_like(soft).scatter_(-1, soft.topk(self.k, dim=-1).indices, 1.0)
        return self._with_self(hard - soft.detach() + soft)

    def margins(self) -> torch.Tensor | None:
        """Per receiver, the k-th largest logit minus the (k+1)-th, self excluded [N]; None when all N-1 are kept."""
        if self.k >= self.n - 1:
            return None
        with torch.no_grad():
            top = self.edge_logits.masked_fill(self.eye, float("-inf")).topk(self.k + 1, dim=1).values
        return top[:, self.k - 1] - top[:, self.k]

    def soft(self) -> torch.Tensor:
        """Warm-up mask: the raw logits themselves (everyone hears everyone, weighted)."""
        if self.mode != "learned":
            return self.deterministic()
        return self.edge_logits


class Gates(nn.Module):
    """Per-agent listening gates from each agent's own observation."""

    def __init__(self, obs_dim: int, hidden: int = 32, init_open: float = 2.0):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(obs_dim, hidden), nn.ReLU(), nn.Linear(hidden, 1))
        nn.init.zeros_(self.net[2].weight)
        nn.init.constant_(self.net[2].bias, init_open)  # start listening (p = 0.88); the cost teaches when not to

    def prob(self, obs: torch.Tensor) -> torch.Tensor:
        """P(gate open) [..., N] from observations [..., N, obs_dim]."""
        return torch.sigmoid(self.net(obs).squeeze(-1))

    @staticmethod
    def straight_through(decision: torch.Tensor, prob: torch.Tensor) -> torch.Tensor:
        """The 0/1 decision forward, the probability's gradient backward."""
        return decision + prob - prob.detach()


def apply_gates(mask: torch.Tensor, gates: torch.Tensor) -> torch.Tensor:
    """Per-step masks [..., N, N]: receiver i's incoming edges times g_i, self loops kept."""
    n = mask.shape[-1]
    eye = torch.eye(n, device=mask.device)
    g = gates.unsqueeze(-1)  # [..., N, 1]: row i scaled by g_i
    return mask * (g + (1 - g) * eye)
