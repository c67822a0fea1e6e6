"""CommFormer's networks: a graph-masked transformer encoder and an autoregressive action decoder.

Attention between agents follows a mask M[..., i, j] (receiver i, sender j). Scores of pairs with
M = 0 are set to -inf, and the softmax is multiplied by M, which is the path by which gradients
reach the edge logits. A closed gate then gives the weight of the receiver's cut messages to what
it still hears (its self loop), so a deaf agent is exactly the agent alone. A learned embedding of
the edge is added to queries and keys (pairs without an edge are masked, so they need none). The
encoder gives each agent a representation and a value. The decoder picks the agents' actions one
after another: agent i's representation attends to the one-hot actions of the earlier agents it
has an edge from (strictly causal mask times the graph mask), plus a start token, so a closed gate
also cuts the actions of the others out of agent i's decision. Acting decodes together the agents
that hear no undecided agent (see the learner).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class GraphAttention(nn.Module):
    """Single-head attention over agents restricted by a communication mask."""

    def __init__(self, dim: int, floor: float = 0.0):
        super().__init__()
        self.floor = float(floor)  # share of each row's weight spread evenly over its edges (0: the softmax alone)
        self.q, self.k, self.v = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.out = nn.Linear(dim, dim)
        # the embedding r of the relation "j is heard by i": scores are (q_i + r) . (k_j + r). Pairs without an
        # edge are masked out of the softmax, so an embedding of "no edge" would never be used and there is
        # none; adding r to both biases gives these scores with no [B, N, N] relation terms
        self.relation = nn.Embedding(1, dim)
        self.scale = 1.0 / math.sqrt(dim)
        self.register_load_state_dict_pre_hook(self._from_two_relations)

    @staticmethod
    def _from_two_relations(module, state, prefix, *args):
        # checkpoints written before 2026-11-22 hold the embeddings of "no edge" and "edge"; row 1 is the edge's
        old = state.get(prefix + "relation.weight")
        if old is not None and old.shape[0] == 2:
            state[prefix + "relation.weight"] = old[1:]

    @property
    def edge(self) -> torch.Tensor:
        """The edge embedding r [D]."""
        return self.relation.weight[0]

    def keys_values(self, x_kv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys (with the edge embedding) and values of the senders' inputs x_kv [..., M, D]."""
        return F.linear(x_kv, self.k.weight, self.k.bias + self.edge), self.v(x_kv)

    def softmax_weights(self, x_q: torch.Tensor, k: torch.Tensor, support: torch.Tensor,
                        kv_index: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The attention softmax over `support`'s edges [B, Nq, M] (before any mask or gate), and the gather
        index of a table's rows (None without kv_index)."""
        q = F.linear(x_q, self.q.weight, self.q.bias + self.edge)
        qk = q @ k.transpose(-1, -2)
        index = None
        if kv_index is not None:
            # every row of the table is scored once ([B, Nq, R]), then each sender's row is picked
            index = kv_index.unsqueeze(-2).expand(*q.shape[:-1], kv_index.shape[-1])
            qk = qk.gather(-1, index)
        scores = (qk * self.scale).masked_fill(support.detach() <= 0, float("-inf"))
        att = torch.softmax(scores, dim=-1).nan_to_num(0.0)
        if self.floor > 0:
            # a floor under every edge's weight: a receiver whose softmax collapsed onto its own observation
            # still hears its senders a little, so its row of the graph keeps a gradient
            edges = (support.detach() > 0).to(att.dtype)
            even = edges / edges.sum(-1, keepdim=True).clamp(min=1.0)
            att = (1 - self.floor) * att + self.floor * even
        return att, index

    def forward(self, x_q: torch.Tensor, kv: tuple[torch.Tensor, torch.Tensor], mask: torch.Tensor,
                support: torch.Tensor | None = None, kv_index: torch.Tensor | None = None) -> torch.Tensor:
        """x_q [B, N, D] attends to the senders' keys_values `kv` [B, M, D]: softmax over `support`'s edges,
        weights times `mask`.

        `support` is the graph; `mask` is the graph with gates applied. A closed gate zeroes the weights
        of the receiver's messages and gives their weight to what the receiver still hears, so a closed
        row is exactly the receiver alone; the gate keeps a gradient through both factors.
        With `kv_index` [B, M], `kv` holds the keys and values of a table [R, D] of the few distinct
        senders (the decoder's action tokens): sender m is row kv_index[b, m], and no [B, M, D] copy is made.
        """
        support = mask if support is None else support
        k, v = kv
        att, index = self.softmax_weights(x_q, k, support, kv_index)
        if mask is support:
            att = att * support
        else:
            # gates: a closed gate leaves the receiver its self loop (or the decoder's start token) at the
            # weight its whole row had, so its representation keeps its scale; while every gate is open
            # the factor is 1 in value and in gradient, so the edge logits learn as without gates
            kept, gated = att * support, att * mask
            att = gated * (kept.sum(-1, keepdim=True) / gated.sum(-1, keepdim=True).clamp(min=1e-12))
        if kv_index is not None:
            # att @ v[kv_index] is att summed per table row, times the table's values
            att = torch.zeros(*att.shape[:-1], v.shape[0], dtype=att.dtype, device=att.device
                              ).scatter_add(-1, index, att)
        return self.out(att @ v)


class EncoderBlock(nn.Module):
    """Graph-masked self-attention over agents and an MLP, post-norm residuals."""

    def __init__(self, dim: int, floor: float = 0.0):
        super().__init__()
        self.att = GraphAttention(dim, floor)
        self.norms = nn.ModuleList([nn.LayerNorm(dim), nn.LayerNorm(dim)])
        self.mlp = nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, dim))

    def forward(self, x, mask, support=None):
        """One block over agents."""
        x = self.norms[0](x + self.att(x, self.att.keys_values(x), mask, support))
        return self.norms[1](x + self.mlp(x))


class DecoderBlock(nn.Module):
    """Each agent's representation queries the action tokens it may hear; residual on the representation.

    As in MAT's decoder the query (and the residual) is the agent's own encoder representation, so an
    agent's own observation reaches its action head undiluted by the messages it mixes in.
    """

    def __init__(self, dim: int):
        super().__init__()
        self.att = GraphAttention(dim)
        self.norms = nn.ModuleList([nn.LayerNorm(dim), nn.LayerNorm(dim)])
        self.mlp = nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, dim))

    def forward(self, x, kv, token_index, mask, support):
        """x [B, Nq, D] attends to the tokens kv[token_index] [B, 1 + N, D] via mask/support [B, Nq, 1 + N]."""
        x = self.norms[0](x + self.att(x, kv, mask, support, kv_index=token_index))
        return self.norms[1](x + self.mlp(x))


class CommFormerNet(nn.Module):
    """Encoder (observations -> representations, values) and autoregressive decoder (-> action logits)."""

    def __init__(self, obs_dim: int, n_actions: int, n_agents: int, dim: int = 64, blocks: int = 1,
                 listen_floor: float = 0.0):
        super().__init__()
        self.n_agents, self.n_actions = n_agents, n_actions
        self.obs_in = nn.Sequential(nn.LayerNorm(obs_dim), nn.Linear(obs_dim, dim), nn.GELU())
        self.encoder = nn.ModuleList([EncoderBlock(dim, listen_floor) for _ in range(blocks)])
        self.value_head = nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, 1))
        self.act_in = nn.Sequential(nn.Linear(n_actions, dim), nn.GELU())
        self.start = nn.Parameter(torch.zeros(dim))  # the token every agent hears: "no earlier action"
        self.decoder = nn.ModuleList([DecoderBlock(dim) for _ in range(blocks)])
        self.logits_head = nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, n_actions))
        nn.init.orthogonal_(self.logits_head[-1].weight, 0.01)
        nn.init.zeros_(self.logits_head[-1].bias)
        # receiver i may hear the actions of agents j < i only (strictly earlier in the decoding order)
        self.register_buffer("one_hots", torch.eye(n_actions), persistent=False)
        self.register_buffer("earlier", torch.tril(torch.ones(n_agents, n_agents), diagonal=-1))

    def normalized_obs(self, obs: torch.Tensor) -> torch.Tensor:
        """The observations' layer norm without its learned scale and shift: constant while weights change."""
        return F.layer_norm(obs, obs.shape[-1:], eps=self.obs_in[0].eps)

    def embed_obs(self, normalized: torch.Tensor) -> torch.Tensor:
        """obs_in (LayerNorm, Linear, GELU) of observations given normalized_obs of them.

        The norm's scale and shift are folded into the linear map (W (x * g + s) + b = (W g) x + (W s + b)),
        so the PPO epochs of an update, which see the same observations, normalise them only once and
        take no gradient through the norm itself.
        """
        norm, linear, act = self.obs_in
        weight = linear.weight * norm.weight
        bias = torch.addmv(linear.bias, linear.weight, norm.bias)
        return act(F.linear(normalized, weight, bias))

    def encode(self, obs: torch.Tensor, mask: torch.Tensor, support: torch.Tensor | None = None,
               normalized: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Representations [B, N, D] and values [B, N] from observations [B, N, obs_dim] (or, when given,
        their normalized_obs)."""
        x = self.embed_obs(self.normalized_obs(obs) if normalized is None else normalized)
        for block in self.encoder:
            x = block(x, mask, support)
        return x, self.value_head(x).squeeze(-1)

    @torch.no_grad()
    def listening(self, obs: torch.Tensor, support: torch.Tensor) -> torch.Tensor:
        """Per receiver, the first encoder block's attention weight on its senders (1 minus the self loop's),
        averaged over observations [B, N, obs_dim] under the graph `support` [N, N] (with self loops): [N].

        A receiver near 0 has let its own observation take the whole softmax; it ignores any sender, right or
        wrong, and its row of the graph gets (almost) no gradient."""
        x = self.embed_obs(self.normalized_obs(obs))
        att = self.encoder[0].att
        k, _ = att.keys_values(x)
        weights, _ = att.softmax_weights(x, k, support.expand(x.shape[0], *support.shape))
        eye = torch.eye(self.n_agents, device=weights.device)
        return (weights * (1 - eye)).sum(-1).mean(0)

    @staticmethod
    def token_index(actions: torch.Tensor) -> torch.Tensor:
        """Decoder tokens [B, 1 + N] of actions [B, N]: 0 is the start token, 1 + a the action a."""
        return torch.cat([torch.zeros_like(actions[:, :1]), actions + 1], 1)

    def decoder_inputs(self, mask: torch.Tensor, support: torch.Tensor | None, batch: int
                       ) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], torch.Tensor, torch.Tensor]:
        """What decoding needs besides the actions: each block's keys and values of the token table [1 + A, D],
        and the masks [B, N, 1 + N].

        Every agent hears the start token; agent i hears agent j's action when j < i and the edge (i, j)
        is on at this step. The table depends on the weights only, so it is projected once per decode,
        not once per decoding level.
        """
        support = mask if support is None else support
        N = self.n_agents
        # a one-hot action input makes the action embeddings a table of 1 + A rows
        table = torch.cat([self.start.unsqueeze(0), self.act_in(self.one_hots)], 0)
        kvs = [block.att.keys_values(table) for block in self.decoder]
        start = torch.ones(batch, N, 1, device=table.device)
        dec_support = torch.cat([start, support.expand(batch, N, N) * self.earlier], -1)
        dec_mask = dec_support if mask is support else torch.cat([start, mask.expand(batch, N, N) * self.earlier], -1)
        return kvs, dec_mask, dec_support

    def decode_rows(self, rep: torch.Tensor, token_index: torch.Tensor, inputs: tuple,
                    rows: slice | torch.Tensor = slice(None)) -> torch.Tensor:
        """Action logits [B, len(rows), n_actions] of the agents in `rows`, a slice or an index (see decode)."""
        kvs, dec_mask, dec_support = inputs
        x = rep[:, rows]
        for block, kv in zip(self.decoder, kvs):
            x = block(x, kv, token_index, dec_mask[:, rows], dec_support[:, rows])
        return self.logits_head(x)

    def decode(self, rep: torch.Tensor, actions: torch.Tensor, mask: torch.Tensor,
               support: torch.Tensor | None = None, agent: int | None = None) -> torch.Tensor:
        """Action logits [B, N, n_actions] (or [B, 1, n_actions] of one `agent`) given actions [B, N].

        Agent i hears the one-hot action of an earlier agent j < i when it has the edge (i, j) at this
        step, so with teacher forcing one pass scores all agents, and the actions of agents i and later
        (and of senders i does not hear) cannot change agent i's logits.
        """
        rows = slice(None) if agent is None else slice(agent, agent + 1)
        inputs = self.decoder_inputs(mask, support, actions.shape[0])
        return self.decode_rows(rep, self.token_index(actions), inputs, rows)
