"""Which terms of CommFormer's graph step move its edge logits, and whether they favour the deployed top k.

Loads a run's last checkpoint, plays `--rollouts` fresh rollouts of the run's size under the deployed graph (as
training does), and on each takes the gradient of a graph epoch's terms on the edge logits: the policy term
(clipped or not as the run's `graph_objective` says), the policy-entropy term and the critic's term, each averaged
over `--samples` Gumbel graph samples. It prints, per rollout and term, the mean |gradient| over the edges and the
descent direction (minus the gradient) averaged over the deployed edges and over the others: a term whose descent
raises the deployed edges and lowers the others keeps the top k where it is.

    python benchmarks/graph_gradients.py runs/abl_5m_glr0.01/5m_vs_6m-learned-s3 --rollouts 2 --samples 4

The run's budget fraction is read from its checkpoint (the freeze, the temperature and the gates follow it). With
`graph_entropy_coef` > 0 a fourth row gives the edge logits' entropy bonus; "value" is shown even for a run with
`graph_value_loss: false`, whose graph steps leave it out. Runs with `graph_estimator: score` are refused (their
graph steps learn by the rollout's own graphs, a term this script does not take apart).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from marl import checkpoint
from marl import config as config_mod
from marl.rollout import collect
from marl.trainer import LAST, build


def term_gradients(learner, rollout, samples: int) -> dict[str, torch.Tensor]:
    """The graph epoch's policy, entropy and value terms' gradients on the edge logits (and the edge-entropy bonus's,
    when it is on), averaged over samples."""
    cfg = learner.cfg
    batch, data = learner._targets(rollout), learner._batch_tensors(rollout)
    logits = learner.graph.edge_logits
    out = {name: torch.zeros_like(logits) for name in ("policy", "entropy", "value", "graph entropy")}
    for _ in range(samples):
        base = learner._training_graph(True, False, data.alive.shape[0])
        _, metrics = learner._loss(data, batch, slice(None), base, graph_epoch=True)
        terms = {"policy": metrics["policy_loss"], "entropy": -cfg["entropy_coef"] * metrics["entropy"],
                 "value": cfg["value_coef"] * metrics["value_loss"]}
        if learner.graph_entropy_coef() > 0:
            terms["graph entropy"] = -learner.graph_entropy_coef() * learner.graph.row_entropy()
        for name, term in terms.items():
            (grad,) = torch.autograd.grad(term, [logits], retain_graph=True)
            out[name] += grad / samples
    return {name: grad for name, grad in out.items() if name != "graph entropy" or learner.graph_entropy_coef() > 0}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_dir")
    p.add_argument("--rollouts", type=int, default=2, help="fresh rollouts, each from its own reset seed")
    p.add_argument("--samples", type=int, default=4, help="Gumbel graph samples per rollout")
    args = p.parse_args()
    run = Path(args.run_dir)
    config = config_mod.load_file(run / "config.yaml")
    env, learner = build(config)
    state = checkpoint.load(run / "checkpoints" / LAST)["learner"]
    checkpoint.restore(learner, state, run)
    if learner.cfg.get("graph_estimator", "straight_through") == "score":
        raise SystemExit(f"{run}: graph_estimator is score; this script takes apart straight-through graph steps")
    if learner.graph.mode != "learned" or learner.graph.frozen:
        raise SystemExit(f"{run}: the graph is {'frozen' if learner.graph.frozen else learner.graph.mode}; "
                         "only a learned graph that still trains has graph steps")
    n = learner.graph.n
    off = ~torch.eye(n, dtype=torch.bool)
    deployed = (learner.graph.deterministic().detach() > 0) & off
    print(f"{run} (budget fraction {learner.budget_fraction:.3f}; {int(deployed.sum())} deployed edges of "
          f"{int(off.sum())})")
    print("| rollout | term | mean abs gradient | descent on deployed edges | descent on the others |")
    print("| --- | --- | --- | --- | --- |")
    for r in range(args.rollouts):
        rollout, _, _ = collect(env, learner, env.reset(seed=1000 + r), config["train"]["rollout"])
        for name, grad in term_gradients(learner, rollout, args.samples).items():
            descent, others = -grad, off & ~deployed
            rest = f"{descent[others].mean():+.2e}" if others.any() else "- (every edge is kept)"
            print(f"| {r} | {name} | {grad[off].abs().mean():.2e} | {descent[deployed].mean():+.2e} | {rest} |")


if __name__ == "__main__":
    main()
