"""What each latent mode of an MRA run wins on a scenario: every agent held to mode k, for k = 1..K.

    python benchmarks/mra_modes.py RUN_DIR --scenario 10m [--episodes 32]

Prints the game's prior over the modes (what `marl eval` draws from) and, per mode, the deterministic win rate
and mean return with every agent's mode set to it (the prior's logits for the game set to +-50, the network as
trained). It tells whether a zero-shot failure is the network's or the prior's choice of mode, which
`marl adapt` can change.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from marl import config as config_mod
from marl.adapt import AdaptError, prior_learner, probabilities
from marl.trainer import evaluate


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("run_dir", type=Path)
    p.add_argument("--scenario", required=True)
    p.add_argument("--episodes", type=int, default=32)
    p.add_argument("--seed", type=int, default=1_000_003, help="seed of the evaluation battles")
    args = p.parse_args()
    torch.set_num_threads(1)
    config = config_mod.load_file(args.run_dir / "config.yaml")
    try:
        _, _, env, learner = prior_learner(args.run_dir, config, args.scenario, min(args.episodes, 32))
    except AdaptError as err:
        p.error(str(err))
    game = learner.game_of(env.spec)
    prior = np.asarray(learner.game_prior_logits(game), np.float32)
    print(f"{args.run_dir.name} on {args.scenario}: prior {probabilities(prior)}")
    for k in range(len(prior)):
        held = np.full_like(prior, -50.0)
        held[k] = 50.0
        learner.set_game_prior_logits(game, held)
        learner.reseed_latents(1)
        res = evaluate(env, learner, args.episodes, seed=args.seed)
        print(f"mode {k + 1}: win rate {res['win_rate']:.1%}, mean return {res['episode_return']:.2f}", flush=True)
    env.close()


if __name__ == "__main__":
    main()
