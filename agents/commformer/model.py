"""CommFormer's networks: a graph-masked transformer encoder and an autoregressive action decoder.

Attention between agents follows a mask M[..., i, j] (receiver i, sender j). Scores of pairs with
M = 0 are set to -inf, and the softmax is multiplied by M, which is the path by which gradients
reach the edge logits. A learned embedding of the 0/1 edge is added to queries and keys. The encoder
gives each agent a representation and a value. The decoder picks the agents' actions one after
another: agent i sees the one-hot actions of agents before it (causal mask combined with the graph
mask) and attends to the encoder's representations through the graph mask.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class GraphAttention(nn.Module):
    """Single-head attention over agents restricted by a communication mask."""

    def __init__(self, dim: int):
        super().__init__()
        self.q, self.k, self.v = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.out = nn.Linear(dim, dim)
        self.relation = nn.Embedding(2, dim)
        self.scale = 1.0 / math.sqrt(dim)

    def forward(self, x_q: torch.Tensor, x_kv: torch.Tensor, mask: torch.Tensor,
                support: torch.Tensor | None = None) -> torch.Tensor:
        """x_q [B, N, D] attends to x_kv [B, N, D]: softmax over `support`'s edges, weights times `mask`.

        `support` is the graph; `mask` is the graph with gates applied. A closed gate zeroes the weights
        of the receiver's messages but keeps them in the softmax, so the gate still gets a gradient.
        """
        support = mask if support is None else support
        # (q_i + r_ij) . (k_j + r_ij) with r_ij the embedding of edge (i, j) being 0 or 1, expanded so
        # that no [B, N, N, D] tensor is formed: every term is a [B, N, N] product
        edge = (support.detach() > 0).float()
        r0, r1 = self.relation.weight[0], self.relation.weight[1]
        q, k = self.q(x_q), self.k(x_kv)
        q_r = (q @ r0).unsqueeze(-1) * (1 - edge) + (q @ r1).unsqueeze(-1) * edge
        k_r = (k @ r0).unsqueeze(-2) * (1 - edge) + (k @ r1).unsqueeze(-2) * edge
        r_r = (r0 @ r0) * (1 - edge) + (r1 @ r1) * edge
        scores = (q @ k.transpose(-1, -2) + q_r + k_r + r_r) * self.scale
        scores = scores.masked_fill(support.detach() <= 0, float("-inf"))
        att = torch.softmax(scores, dim=-1).nan_to_num(0.0) * mask
        return self.out(att @ self.v(x_kv))


class Block(nn.Module):
    """Masked self-attention (and optional cross-attention) with an MLP, post-norm residuals."""

    def __init__(self, dim: int, cross: bool = False):
        super().__init__()
        self.self_att = GraphAttention(dim)
        self.cross_att = GraphAttention(dim) if cross else None
        self.norms = nn.ModuleList([nn.LayerNorm(dim) for _ in range(3 if cross else 2)])
        self.mlp = nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, dim))

    def forward(self, x, mask, memory=None, cross_mask=None, support=None, cross_support=None):
        """One block over agents."""
        x = self.norms[0](x + self.self_att(x, x, mask, support))
        if self.cross_att is not None:
            x = self.norms[1](x + self.cross_att(x, memory, cross_mask, cross_support))
        return self.norms[-1](x + self.mlp(x))


class CommFormerNet(nn.Module):
    """Encoder (observations -> representations, values) and autoregressive decoder (-> action logits)."""

    def __init__(self, obs_dim: int, n_actions: int, n_agents: int, dim: int = 64, blocks: int = 1):
        super().__init__()
        self.n_agents, self.n_actions = n_agents, n_actions
        self.obs_in = nn.Sequential(nn.LayerNorm(obs_dim), nn.Linear(obs_dim, dim), nn.GELU())
        self.encoder = nn.ModuleList([Block(dim) for _ in range(blocks)])
        self.value_head = nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, 1))
        self.act_in = nn.Sequential(nn.Linear(n_actions + 1, dim), nn.GELU())  # +1: the start token
        self.decoder = nn.ModuleList([Block(dim, cross=True) for _ in range(blocks)])
        self.logits_head = nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, n_actions))
        nn.init.orthogonal_(self.logits_head[-1].weight, 0.01)
        nn.init.zeros_(self.logits_head[-1].bias)
        self.register_buffer("causal", torch.tril(torch.ones(n_agents, n_agents)))

    def encode(self, obs: torch.Tensor, mask: torch.Tensor, support: torch.Tensor | None = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """Representations [B, N, D] and values [B, N] from observations [B, N, obs_dim]."""
        x = self.obs_in(obs)
        for block in self.encoder:
            x = block(x, mask, support=support)
        return x, self.value_head(x).squeeze(-1)

    def shifted_actions(self, actions: torch.Tensor) -> torch.Tensor:
        """Decoder inputs [B, N, n_actions + 1]: agent i sees agent i-1's one-hot action (agent 0: start)."""
        B, N = actions.shape
        inp = torch.zeros(B, N, self.n_actions + 1, device=actions.device)
        inp[:, 0, -1] = 1.0
        if N > 1:
            inp[:, 1:, :-1] = nn.functional.one_hot(actions[:, :-1], self.n_actions).float()
        return inp

    def decode(self, rep: torch.Tensor, action_inputs: torch.Tensor, mask: torch.Tensor,
               support: torch.Tensor | None = None) -> torch.Tensor:
        """Action logits [B, N, n_actions] given the previous agents' actions (teacher forcing)."""
        support = mask if support is None else support
        x = self.act_in(action_inputs)
        # agent i listens to earlier agents it has an edge from, and to itself
        self_mask, self_support = mask * self.causal, support * self.causal
        for block in self.decoder:
            x = block(x, self_mask, memory=rep, cross_mask=mask, support=self_support, cross_support=support)
        return self.logits_head(x)
