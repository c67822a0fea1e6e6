"""MRA's relational encoder, dense and masked (the learner's) against torch-geometric's TransformerConv, same batch.

The batch is what one PPO epoch of MRA feeds the encoder on a marine map: every agent of a rollout
(E x T x A observations) as a set of entity tokens (own, allies, enemies), some absent (dead or unseen),
already embedded to width d. The dense encoder is the learner's `Block`: multi-head self-attention over
the padded tokens with a mask from the absent rows. The graph version builds, from the same mask, one
complete graph per agent over its present tokens (self loops included) and runs `TransformerConv` with
the same heads and width, then a feed-forward layer of the same size. Each is timed forward and backward
on one thread; the graph version both with and without building its edge index (the engine pads, so
the learner would have to build it every minibatch).

    pip install torch-geometric==2.8.*   # only for this benchmark; not a dependency of marl
    python benchmarks/mra_encoder.py --maps 3m 8m 27m_vs_30m --samples 3200
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from torch import nn

from marl.agents.mra.learner import Block

SIZES = {"3m": (3, 3), "8m": (8, 8), "12m": (12, 12), "27m_vs_30m": (27, 30)}  # agents, enemies


def batch(agents: int, enemies: int, samples: int, d: int, absent: float, seed: int = 0):
    """Tokens [B, N, d] of B = samples x agents agents (own first) and their presence bool[B, N]."""
    g = torch.Generator().manual_seed(seed)
    B, N = samples * agents, agents + enemies
    x = torch.randn(B, N, d, generator=g)
    present = torch.rand(B, N, generator=g) >= absent
    present[:, 0] = True  # the agent's own token
    return x, present


def edges_of(present: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The complete graph over each agent's present tokens, self loops included: node index [n] and edges [2, m]."""
    B, N = present.shape
    node = present.reshape(-1).nonzero().squeeze(1)  # flat (agent, token) ids of the present nodes
    new_id = torch.full((B * N,), -1, dtype=torch.long)
    new_id[node] = torch.arange(len(node))
    pair = present[:, :, None] & present[:, None, :]  # [B, N, N]: both ends present
    b, i, j = pair.nonzero(as_tuple=True)
    return node, torch.stack([new_id[b * N + j], new_id[b * N + i]])  # source j -> target i


class GraphBlock(nn.Module):
    """The dense Block's shape with TransformerConv in place of the masked attention."""

    def __init__(self, d: int, heads: int):
        super().__init__()
        from torch_geometric.nn import TransformerConv

        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.conv = TransformerConv(d, d // heads, heads=heads, root_weight=False)
        self.out = nn.Linear(d, d)
        self.ff = nn.Sequential(nn.Linear(d, d), nn.ReLU(), nn.Linear(d, d))

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        """x [n, d] of the present nodes, edges [2, m]."""
        x = x + self.out(self.conv(self.ln1(x), edge_index))
        return x + self.ff(self.ln2(x))


def seconds(fn, repeats: int) -> float:
    """Median CPU seconds of fn() (forward and backward) over `repeats` calls after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        t = time.process_time()
        fn()
        times.append(time.process_time() - t)
    return sorted(times)[len(times) // 2]


def compare(map_name: str, samples: int, d: int, heads: int, absent: float, repeats: int) -> dict:
    """Dense and graph encoders on the same batch: CPU seconds forward + backward, and their largest difference."""
    agents, enemies = SIZES[map_name]
    x, present = batch(agents, enemies, samples, d, absent)
    dense = Block(d, heads)
    graph = GraphBlock(d, heads)
    node, edges = edges_of(present)
    flat = x.reshape(-1, d)

    def run_dense():
        dense(x.requires_grad_(True), present).sum().backward()

    def run_graph():
        graph(flat[node].detach().requires_grad_(True), edges).sum().backward()

    def run_graph_built():
        n, e = edges_of(present)
        graph(flat[n].detach().requires_grad_(True), e).sum().backward()

    # the same function: copy the dense block's weights into the graph block and compare the present tokens
    with torch.no_grad():
        graph.ln1.load_state_dict(dense.ln1.state_dict())
        graph.ln2.load_state_dict(dense.ln2.state_dict())
        q, k, v = dense.qkv.weight.chunk(3)
        qb, kb, vb = dense.qkv.bias.chunk(3)
        for lin, w, b in ((graph.conv.lin_query, q, qb), (graph.conv.lin_key, k, kb), (graph.conv.lin_value, v, vb)):
            lin.weight.copy_(w)
            lin.bias.copy_(b)
        graph.out.load_state_dict(dense.out.state_dict())
        graph.ff.load_state_dict(dense.ff.state_dict())
        diff = (dense(x, present).reshape(-1, d)[node] - graph(flat[node], edges)).abs().max().item()
    torch.set_num_threads(1)
    out = {"map": map_name, "agents_in_batch": agents * samples, "tokens": agents + enemies, "d": d, "heads": heads,
           "absent": absent, "max_abs_difference": diff,
           "dense_s": seconds(run_dense, repeats), "graph_s": seconds(run_graph, repeats),
           "graph_with_edges_s": seconds(run_graph_built, repeats)}
    out["graph_over_dense"] = out["graph_s"] / out["dense_s"]
    return out


def main(argv=None) -> None:
    """Print one JSON line per map and a markdown table."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--maps", nargs="+", default=["3m", "8m", "27m_vs_30m"], choices=sorted(SIZES))
    p.add_argument("--samples", type=int, default=3200, help="battle-steps in the batch (MRA's 8 envs x 400 steps)")
    p.add_argument("--d", type=int, default=64)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--absent", type=float, default=0.25, help="fraction of tokens absent (dead or unseen)")
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args(argv)
    torch.manual_seed(0)
    rows = [compare(m, args.samples, args.d, args.heads, args.absent, args.repeats) for m in args.maps]
    for r in rows:
        print(json.dumps(r), flush=True)
    print("\n| map | agents in batch | tokens | dense (CPU s) | TransformerConv | + building edges | graph / dense |"
          " max difference |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['map']} | {r['agents_in_batch']:,} | {r['tokens']} | {r['dense_s']:.3f} | {r['graph_s']:.3f} | "
              f"{r['graph_with_edges_s']:.3f} | {r['graph_over_dense']:.1f}x | {r['max_abs_difference']:.1e} |")


if __name__ == "__main__":
    main()
