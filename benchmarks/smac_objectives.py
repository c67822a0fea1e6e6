"""Do SMAC's two objectives, combat and safety (env.objectives, docs/smac_rules.md section 17), conflict on a map?

Plays scripted team policies on the embedded simulator and prints each one's mean episode returns per
objective. Where one policy has the higher combat return and another the higher safety return, the two
objectives conflict on that map under these policies; where one policy is best on both, they do not.

    python benchmarks/smac_objectives.py 3m 2s3z 3s5z --episodes 64
"""

from __future__ import annotations

import argparse

import numpy as np

from marl.envs.smac import SMACVecEnv
from marl.envs.smac.layout import ACT_EAST, ACT_NO_OP, ACT_STOP, ACT_WEST, N_NO_ATTACK_ACTIONS


def focus(step, rng):
    """Every agent attacks (or heals) the lowest-numbered target it can; otherwise it stops (and is engaged)."""
    attack = step.avail[..., N_NO_ATTACK_ACTIONS:]
    first = np.argmax(attack, -1) + N_NO_ATTACK_ACTIONS
    return np.where(attack.any(-1), first, np.where(step.avail[..., ACT_STOP], ACT_STOP, ACT_NO_OP))


def walker(direction: int):
    """A policy: every agent walks one way while it can, else stops (the enemies attack-move after it)."""
    def walk(step, rng):
        return np.where(step.avail[..., direction], direction,
                        np.where(step.avail[..., ACT_STOP], ACT_STOP, ACT_NO_OP))
    return walk


def random(step, rng):
    """Uniform over the available actions."""
    u = rng.random(step.avail.shape) * step.avail
    return np.argmax(u, -1)


POLICIES = {"focus": focus, "west": walker(ACT_WEST), "east": walker(ACT_EAST), "random": random}


def measure(map_name: str, policy, episodes: int, seed: int = 0) -> tuple[np.ndarray, float]:
    """Mean [combat, safety] episode return and the win rate of a policy over `episodes` episodes."""
    env = SMACVecEnv(map_name, 16, objectives=["combat", "safety"])
    rng = np.random.default_rng(seed)
    step, returns, wins = env.reset(seed=seed), [], 0
    while len(returns) < episodes:
        step = env.step(policy(step, rng).astype(np.int64))
        for e in np.flatnonzero(step.done):
            returns.append(step.episode_return[e].astype(float))
            wins += bool(step.won[e])
    return np.mean(returns[:episodes], 0), wins / len(returns)


def main() -> None:
    """Print a table: map, policy, mean combat, mean safety, win rate."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("maps", nargs="+")
    parser.add_argument("--episodes", type=int, default=64)
    args = parser.parse_args()
    print(f"{'map':<12} {'policy':<8} {'combat':>8} {'safety':>8} {'win rate':>9}")
    for m in args.maps:
        for name, policy in POLICIES.items():
            mean, win = measure(m, policy, args.episodes)
            print(f"{m:<12} {name:<8} {mean[0]:8.2f} {mean[1]:8.2f} {win:9.0%}")


if __name__ == "__main__":
    main()
