"""The same seed plays the same battles as the recorded reference (tests/data/smac_reference.json).

Each case plays a few hundred steps of seeded random play (half the agents lean on their attack actions, so
that units die and battles end and restart) and hashes every step's arrays; the digests were recorded from
the simulator before its kernels were split by phase, so any change to what a battle does shows up here.
Regenerate them (`python tests/test_smac_reference.py --write`) only for a change meant to alter battles.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from marl.envs.smac import SMACVecEnv

REFERENCE = Path(__file__).parent / "data" / "smac_reference.json"
HASHED = ("obs", "state", "avail", "reward", "done", "truncated", "won", "alive", "episode_return",
          "episode_length", "final_obs", "final_state")
# every observation and state feature on: pathing grid, terrain height, last actions, timesteps
ALL_FEATURES = dict(obs_last_action=True, obs_pathing_grid=True, obs_terrain_height=True, obs_timestep_number=True,
                    state_timestep_number=True)
CASES = [
    dict(map="3m", n_envs=2, steps=300, seed=1, options={}),
    dict(map="3s5z", n_envs=2, steps=300, seed=2, options={}),
    dict(map="MMM2", n_envs=2, steps=200, seed=3, options={}),  # medivacs heal; MMM's only-medivacs-left rule
    dict(map="2c_vs_64zg", n_envs=1, steps=200, seed=4, options=ALL_FEATURES),  # cliffs and ramps, colossus beams
    dict(map="2s_vs_1sc", n_envs=2, steps=200, seed=5, options={}),  # a static spine crawler on high ground
    # the same crawler without its decay off creep: the battles recorded before the decay was modelled
    dict(map="2s_vs_1sc", n_envs=2, steps=200, seed=5, options={"off_creep_decay": False}),
    dict(map="bane_vs_bane", n_envs=1, steps=150, seed=6, options={"reward_only_positive": False}),
    dict(map="2m_vs_1z", n_envs=2, steps=200, seed=7, options={"obs_instead_of_state": True}),
    dict(map="terran_10_vs_11", n_envs=2, steps=300, seed=8, options={}),  # SMACv2: drawn teams, medivacs
    dict(map="protoss_5_vs_5", n_envs=2, steps=300, seed=9, options=ALL_FEATURES),
    dict(map="zerg_5_vs_5", n_envs=2, steps=200, seed=10, options={"use_unit_ranges": False, "reward_sparse": True}),
]


def battle_digest(map: str, n_envs: int, steps: int, seed: int, options: dict) -> str:  # noqa: A002
    """sha256 of every Step array of `steps` seeded random steps (after the reset's) of E battles of a map."""
    env = SMACVecEnv(map, n_envs, **options)
    rng = np.random.default_rng(seed)
    h = hashlib.sha256()
    step = env.reset(seed=seed)
    for k in ("obs", "state", "avail"):
        h.update(np.ascontiguousarray(getattr(step, k)).tobytes())
    for _ in range(steps):
        score = rng.random(step.avail.shape)
        keen = rng.random(step.avail.shape[:-1]) < 0.5
        score[..., 6:] += keen[..., None]
        score[~step.avail] = -1.0
        step = env.step(score.argmax(-1).astype(np.int64))
        for k in HASHED:
            h.update(np.ascontiguousarray(getattr(step, k)).tobytes())
    env.close()
    return h.hexdigest()


def _case_id(case: dict) -> str:
    options = ",".join(f"{k}={v}" for k, v in sorted(case["options"].items()))
    return f"{case['map']}-E{case['n_envs']}" + (f"-{options}" if options else "")


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_same_seed_plays_the_recorded_battles(case):
    recorded = {_case_id(c): c for c in json.loads(REFERENCE.read_text())["cases"]}
    ref = recorded[_case_id(case)]
    assert {k: ref[k] for k in case} == case  # the recorded case is the one played here
    assert battle_digest(**case) == ref["sha256"]


def test_the_digest_sees_a_changed_battle():
    base = dict(map="3m", n_envs=1, steps=30, seed=1, options={})
    assert battle_digest(**base) == battle_digest(**base)
    assert battle_digest(**base) != battle_digest(**{**base, "seed": 2})
    assert battle_digest(**base) != battle_digest(**{**base, "options": {"reward_death_value": 11}})


if __name__ == "__main__" and sys.argv[1:] == ["--write"]:
    cases = [{**c, "sha256": battle_digest(**c)} for c in CASES]
    REFERENCE.parent.mkdir(exist_ok=True)
    REFERENCE.write_text(json.dumps({"about": __doc__.splitlines()[0], "cases": cases}, indent=1) + "\n")
    print(f"wrote {len(cases)} digests to {REFERENCE}")
