"""train.keep_checkpoints (a copy of each checkpoint) and train.log_episodes (RUN_DIR/episodes.csv): their
files, their defaults (off: nothing written) and the episode log across a crash and a resume."""

from __future__ import annotations

import csv

import pytest
import torch

from marl import checkpoint
from marl import config as config_mod
from marl.trainer import EPISODES, LAST, Trainer, episode_rows, episodes_header, kept_checkpoint_name, trim_episodes

FAST = ["train.envs=2", "train.rollout=8", "train.eval_interval=0", "train.torch_threads=1", "train.update_threads=1",
        "train.checkpoint_interval=2", "train.record_replays=false", "algo.ppo_epochs=1",
        "env.n_agents=3", "env.symbols=3", "env.episode_limit=5", "algo.hidden=16"]
PER_UPDATE = 2 * 8


def config(tmp_path, *more):
    return config_mod.load("comm", "informants", "mappo", [*FAST, f"train.runs_dir={tmp_path}", *more])


def rows(run_dir):
    with open(run_dir / EPISODES, newline="") as f:
        return list(csv.DictReader(f))


def test_defaults_are_off_and_write_nothing(tmp_path):
    cfg = config(tmp_path)
    assert cfg["train"]["keep_checkpoints"] is False and cfg["train"]["log_episodes"] is False
    Trainer(cfg, tmp_path / "run", show_progress=False).run(max_updates=2)
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == [LAST]
    assert not (tmp_path / "run" / EPISODES).exists()


def test_keep_checkpoints_keeps_a_copy_of_each_checkpoint(tmp_path):
    cfg = config(tmp_path, "train.keep_checkpoints=true")
    Trainer(cfg, tmp_path / "run", show_progress=False).run(max_updates=5)
    ckpts = tmp_path / "run" / "checkpoints"
    # every 2 updates, and the final save at update 5
    assert sorted(p.name for p in ckpts.iterdir()) == sorted(
        [LAST, *(kept_checkpoint_name(PER_UPDATE * u) for u in (2, 4, 5))])
    assert (ckpts / kept_checkpoint_name(PER_UPDATE * 5)).read_bytes() == (ckpts / LAST).read_bytes()
    kept = checkpoint.load(ckpts / kept_checkpoint_name(PER_UPDATE * 2))
    assert kept["counters"]["env_steps"] == 2 * PER_UPDATE and kept["counters"]["update"] == 2


def test_episode_rows_and_header_by_hand():
    eps = [{"return": 1.5, "length": 5, "won": False}, {"return": [0.25, -2.0], "length": 3, "won": True}]
    assert episode_rows(eps, 7, 112) == "7,112,1.5,5,0\n7,112,0.25,-2.0,3,1\n"
    assert episodes_header(("reward",)) == "update,env_steps,return,length,won\n"
    assert episodes_header(("win", "cost")) == "update,env_steps,return_win,return_cost,length,won\n"


def test_trim_drops_later_updates_and_a_torn_line(tmp_path):
    path = tmp_path / EPISODES
    path.write_text("update,env_steps,return,length,won\n1,16,1.0,5,0\n2,32,2.0,5,1\n3,48,3.0,5,0\n3,48,4.")
    trim_episodes(path, 2)
    assert path.read_text() == "update,env_steps,return,length,won\n1,16,1.0,5,0\n2,32,2.0,5,1\n"
    before = path.stat().st_mtime_ns
    trim_episodes(path, 2)  # nothing to drop: the file is not rewritten
    assert path.stat().st_mtime_ns == before
    trim_episodes(tmp_path / "absent.csv", 0)  # no log yet: nothing happens


@pytest.mark.parametrize("crash", [False, True])
def test_episode_log_is_every_training_episode_once_across_a_resume(tmp_path, crash):
    cfg = config(tmp_path, "train.log_episodes=true")
    straight = tmp_path / "straight"
    Trainer(cfg, straight, show_progress=False).run(max_updates=6)
    whole = rows(straight)
    assert [int(r["update"]) for r in whole] == sorted(int(r["update"]) for r in whole)
    assert all(int(r["env_steps"]) == PER_UPDATE * int(r["update"]) for r in whole)
    assert {int(r["length"]) for r in whole} == {5} and {r["won"] for r in whole} <= {"0", "1"}
    # 2 battles x 8 steps x 6 updates = 96 steps: 19 whole episodes of 5 steps (the first battles start at step 0)
    assert len(whole) == 2 * (6 * 8 // 5)

    run = tmp_path / "resumed"
    first = Trainer(cfg, run, show_progress=False)
    first.run(max_updates=2)  # its final save: the checkpoint of update 2
    if crash:  # one more update logged, then a crash before its checkpoint (interval 2: the next at update 4)
        rollout, episodes, timing = first._collect()
        first._update(rollout, episodes, timing)
        first.log_episodes(episodes)
        with open(run / EPISODES, "a") as f:
            f.write("3,48,1.")  # a torn line
    torch.manual_seed(0)  # the resume restores torch's generator from the checkpoint
    Trainer(cfg, run, resume=True, show_progress=False).run(max_updates=4)
    assert rows(run) == whole
