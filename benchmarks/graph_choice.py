"""How much the choice of a static graph matters to a trained CommFormer policy (issue 14).

CommFormer learns one static graph per run: k = max(int(N * sparsity), 1) incoming edges per receiver. The graph
can only learn something where some graphs of that in-degree are worth more than others. This script asks that
of a trained policy directly: it plays the run's last checkpoint, unchanged, under other graphs of the same
in-degree, each on its own fresh battles, and tests whether the win rates differ by more than battle-to-battle
chance.

For each run it plays, deterministically, `--episodes` battles under:
- `own`: the graph the run trained with (its top k, its fixed random graph, or the full graph);
- `full`: every edge;
- `none`: self loops only (no messages);
- `--graphs` random graphs of the run's in-degree (each receiver's k senders drawn uniformly, from `--graph-seed`).

Every graph plays on battles of its own seed (`--seed` + its index), so under the hypothesis that the graph does
not matter the random graphs' win counts are independent binomial draws of one rate; the chi-square statistic of
homogeneity of those counts, with its p-value from a permutation test, says whether they are. The run's gates
decide as they do in `marl eval`.

With `--sampled` every graph also plays its battles with the policy's sampled actions (seeded by the battles'
seed, as `marl eval --sampled --seed` does): where the argmax's win rate swings between graphs and the sampled one
does not, the graphs differ in which of near-tied actions the argmax picks, not in what the policy can do.

    python benchmarks/graph_choice.py runs/abl/5m_vs_6m-full-s6 runs/abl/5m_vs_6m-random-s4 --graphs 24 --sampled

It writes RUN_DIR/graph_choice.json (every graph's edges, win rate and return) and prints one table per run and
a summary: the random graphs' mean, lowest and highest win rate, their spread against the binomial spread
expected from one rate, and the test's p-value.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np


def random_graphs(n: int, k: int, count: int, seed: int) -> list[np.ndarray]:
    """`count` 0/1 graphs [receiver, sender] without self loops, each receiver with k senders drawn uniformly."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        g = np.zeros((n, n), np.float32)
        for i in range(n):
            others = [j for j in range(n) if j != i]
            g[i, rng.choice(others, size=k, replace=False)] = 1.0
        out.append(g)
    return out


def chi_square(wins: np.ndarray, n: int) -> np.ndarray:
    """Pearson's chi-square of homogeneity of win counts [..., G], each out of n battles (0 where none differ)."""
    p = wins.mean(-1, keepdims=True) / n
    expected_var = n * p * (1 - p)
    dev = (wins - n * p) ** 2
    return np.where(expected_var[..., 0] > 0, (dev / np.where(expected_var > 0, expected_var, 1)).sum(-1), 0.0)


def homogeneity(wins: list[int], n: int, permutations: int = 20000, seed: int = 0) -> tuple[float, float]:
    """The chi-square statistic of "every graph's win count comes from one rate", and its permutation p-value.

    The battles' outcomes are pooled and dealt again to the graphs, n each, `permutations` times; the p-value is
    the share of deals whose statistic reaches the observed one. With win rates near 0 most graphs expect one or
    two wins, where the chi-square distribution's own p-value is not to be trusted; the permutation test is exact.
    """
    w = np.asarray(wins)
    observed = float(chi_square(w.astype(float), n))
    pooled = np.zeros(len(w) * n, np.int8)
    pooled[: int(w.sum())] = 1
    rng = np.random.default_rng(seed)
    hits = 0
    for _ in range(permutations // 1000):
        dealt = rng.permuted(np.broadcast_to(pooled, (1000, pooled.size)), axis=1)
        stats = chi_square(dealt.reshape(1000, len(w), n).sum(-1).astype(float), n)
        hits += int((stats >= observed - 1e-9).sum())
    return observed, (hits + 1) / (permutations // 1000 * 1000 + 1)


class Player:
    """A run's last checkpoint, played deterministically under any graph of its size (`marl eval`'s code)."""

    def __init__(self, run_dir: Path, episodes: int):
        from marl.cli import load_for_eval

        self.episodes = episodes
        _, data, self.env, self.learner, _ = load_for_eval(run_dir, episodes)
        self.env_steps = data["counters"]["env_steps"]
        self.graph = getattr(self.learner, "graph", None)
        if self.graph is None:
            self.env.close()
            raise SystemExit(f"{run_dir}: not a CommFormer run (its learner has no communication graph)")
        if self.graph.mode == "learned" and self.learner.updates < self.learner.cfg["warmup"]:
            self.env.close()  # it acts under the raw logits as a soft mask, which no graph here reproduces
            raise SystemExit(f"{run_dir}: its last checkpoint is in the graph's warm-up ({self.learner.updates} of "
                             f"{self.learner.cfg['warmup']} updates); train past it first")
        n = self.graph.n
        self.own = self.graph.deterministic().detach().cpu().numpy() * (1 - np.eye(n, dtype=np.float32))

    def play(self, name: str, edges: np.ndarray, seed: int, deterministic: bool = True) -> dict:
        """One graph's evaluation ([receiver, sender] 0/1 edges, self loops added) on the battles of `seed`: the
        policy's most likely actions, or with `deterministic` False its sampled ones."""
        import torch

        from marl.cli import seed_acting
        from marl.trainer import evaluate

        self.graph.mode = "random"  # deterministic() returns random_mask plus the self loops
        self.graph.random_mask = torch.as_tensor(edges, dtype=torch.float32, device=self.graph.random_mask.device)
        self.learner._acting_key = None  # the acting graph is cached by the logits' version, which did not move
        if not deterministic:
            seed_acting(self.learner, self.env.n_envs, seed)  # as `marl eval --sampled --seed SEED`
        res = evaluate(self.env, self.learner, self.episodes, seed=seed, deterministic=deterministic)
        print(f"  {name:>10}: win {res['win_rate']:6.1%}  return {res['episode_return']:6.2f}", flush=True)
        return {"graph": name, "edges": edges.astype(int).tolist(), "seed": seed,
                "wins": int(round(res["win_rate"] * self.episodes)), "win_rate": res["win_rate"],
                "episode_return": res["episode_return"], "messages_per_agent_step": res.get("messages_per_agent_step")}

    def close(self) -> None:
        self.env.close()


def summary(rows: list[dict], episodes: int) -> dict:
    """The random graphs against one binomial rate: mean, range, spread, expected spread, chi-square p."""
    rand = [r for r in rows if r["graph"].startswith("r") and "-" not in r["graph"]]
    rates = np.array([r["win_rate"] for r in rand])
    p = float(rates.mean())
    stat, pval = homogeneity([r["wins"] for r in rand], episodes)
    return {"graphs": len(rand), "mean": p, "low": float(rates.min()), "high": float(rates.max()),
            "sd": float(rates.std(ddof=1)), "binomial_sd": math.sqrt(p * (1 - p) / episodes),
            "chi2": stat, "p_value": pval,
            "return_mean": float(np.mean([r["episode_return"] for r in rand])),
            "return_low": float(min(r["episode_return"] for r in rand)),
            "return_high": float(max(r["episode_return"] for r in rand))}


def play_every_graph(player: Player, graphs: dict[str, np.ndarray | None], seed: int, deterministic: bool
                     ) -> list[dict]:
    """Each graph's row in order, the i-th on the battles of seed + i (None: the run's own graph)."""
    return [player.play(name, player.own if g is None else g, seed + i, deterministic)
            for i, (name, g) in enumerate(graphs.items())]


def _cell(r: dict) -> str:
    return f"{r['win_rate']:.1%} ({r['episode_return']:.2f})"


def _graphs_line(rows: list[dict], s: dict) -> str:
    """Own, full and no messages, then the random graphs' summary `s`, of one way of playing."""
    own, full, none = rows[:3]
    return (f"own {_cell(own)}, full {_cell(full)}, none {_cell(none)}; {s['graphs']} random graphs {s['mean']:.1%} "
            f"({s['low']:.1%}-{s['high']:.1%}), spread {s['sd']:.3f} against {s['binomial_sd']:.3f} from one rate, "
            f"permutation p = {s['p_value']:.2g}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", type=Path, help="CommFormer run directories (their last checkpoint plays)")
    ap.add_argument("--graphs", type=int, default=24, help="random graphs of the run's in-degree (default 24)")
    ap.add_argument("--episodes", type=int, default=128, help="battles per graph (default 128)")
    ap.add_argument("--seed", type=int, default=20261203, help="battles' seed of the first graph; +1 per graph")
    ap.add_argument("--graph-seed", type=int, default=0, help="seed of the random graphs (the same for every run)")
    ap.add_argument("--sampled", action="store_true",
                    help="every graph also plays its battles with the policy's sampled actions")
    args = ap.parse_args(argv)
    if args.graphs < 2 or args.episodes < 1:
        ap.error(f"--graphs must be at least 2 and --episodes at least 1, got {args.graphs} and {args.episodes}")
    for run in args.runs:
        if not (run / "config.yaml").is_file():
            ap.error(f"{run} is not a run directory (no config.yaml there)")
    for run in args.runs:
        from marl import config as config_mod
        from marl.agents.commformer.graph import k_of

        cfg = config_mod.load_file(run / "config.yaml")
        algo = cfg["algo"]
        if cfg["run"]["algo"] != "commformer":
            ap.error(f"{run} trained {cfg['run']['algo']}, not commformer")
        from marl.trainer import build_env

        n = build_env(cfg, n_envs=1).spec.n_agents
        k = min(k_of(n, algo["sparsity"]), n - 1)
        graphs: dict[str, np.ndarray | None] = {"own": None, "full": 1 - np.eye(n, dtype=np.float32),
                                                "none": np.zeros((n, n), np.float32)}
        for i, g in enumerate(random_graphs(n, k, args.graphs, args.graph_seed)):
            graphs[f"r{i:02d}"] = g
        print(f"{run}: {n} agents, k = {k}, {len(graphs)} graphs x {args.episodes} battles", flush=True)
        player = Player(run, args.episodes)
        try:
            rows = play_every_graph(player, graphs, args.seed, deterministic=True)
            # the best random graph is the best of many draws: it and the run's own graph play again, on fresh
            # battles shared by both, so that the comparison carries no selection bias
            best = max((r for r in rows if r["graph"].startswith("r") and "-" not in r["graph"]),
                       key=lambda r: (r["win_rate"], r["episode_return"]))
            again = args.seed + 100000
            rows.append(player.play("own-again", player.own, again))
            rows.append(player.play(f"{best['graph']}-again", np.array(best["edges"], np.float32), again))
            # the run's own graph with the policy's sampled actions, as it played in training
            rows.append(player.play("own-sampled", player.own, again, deterministic=False))
            sampled_rows = play_every_graph(player, graphs, args.seed, deterministic=False) if args.sampled else []
        finally:
            player.close()
        s = summary(rows, args.episodes)
        s["best"] = best["graph"]
        out = {"k": k, "episodes": args.episodes, "summary": s, "rows": rows, "env_steps": player.env_steps}
        if sampled_rows:
            out["sampled_summary"], out["sampled_rows"] = summary(sampled_rows, args.episodes), sampled_rows
        (run / "graph_choice.json").write_text(json.dumps(out, indent=1))
        own_again, best_again, sampled = rows[-3:]
        print(f"{run.name}: {_graphs_line(rows, s)}; on fresh battles own {_cell(own_again)}, best {s['best']} "
              f"{_cell(best_again)}, own sampled {_cell(sampled)}", flush=True)
        if sampled_rows:
            print(f"{run.name}, sampled actions: {_graphs_line(sampled_rows, out['sampled_summary'])}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
