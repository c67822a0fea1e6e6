"""Replays: recording, the file format and its errors, the viewer's drawing and playback keys, export, training."""

from __future__ import annotations

import dataclasses
import io
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from marl import config as config_mod
from marl import replay
from marl.cli import main
from marl.envs.smac import SMACVecEnv
from marl.viewer import (
    DEFAULT_SPEED,
    MIN_LETTER_RADIUS,
    SPEEDS,
    TEAM_COLOURS,
    UNIT_RADIUS,
    Layout,
    Playback,
    Renderer,
    ViewerError,
    export,
    on_event,
)

_SCRIPT = Path(sys.executable).with_name("marl")
MARL = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "marl"]


class ScriptedLearner:
    """Attacks the lowest-numbered enemy in range (else moves east) and shares made-up edges and gates."""

    def __init__(self, with_comm: bool):
        self.with_comm = with_comm
        self.calls = 0

    def act(self, step, deterministic=False):
        """Actions [E, A] and, when with_comm, comm [E, A, A] and gates [E, A] that change every step."""
        E, A, n_actions = step.avail.shape
        attack = step.avail[:, :, 6:]
        actions = np.where(attack.any(-1), 6 + attack.argmax(-1), np.where(step.avail[:, :, 4], 4, 1))
        actions = np.where(step.alive, actions, 0)
        self.calls += 1
        if not self.with_comm:
            return actions, {}
        rng = np.random.default_rng(self.calls)
        return actions, {"comm": rng.random((E, A, A)) < 0.4, "gates": (rng.random((E, A)) < 0.5).astype(np.float32)}


@pytest.fixture(scope="module")
def recorded():
    """Two 3m replays recorded with edges and gates, and one without."""
    env = SMACVecEnv("3m", 2)
    meta = {"env": "smac", "learner": "scripted", "env_steps": 1234}
    with_comm = replay.record(env, ScriptedLearner(True), 2, seed=3, meta=meta)
    without = replay.record(env, ScriptedLearner(False), 1, seed=3, meta=meta)
    return with_comm, without[0]


def make_replay(positions, alive, teams, T: int = 3) -> replay.Replay:
    """A hand-made replay on an open 16 x 8 map: units at positions[u] moving 0.5 east per step."""
    U = len(positions)
    A = int(np.sum(np.asarray(teams) == 0))
    xy = np.asarray(positions, np.float32)
    x = np.stack([xy[:, 0] + 0.5 * t for t in range(T + 1)])
    y = np.repeat(xy[None, :, 1], T + 1, 0)
    return replay.Replay(
        meta={"env": "smac", "map": "open", "learner": "hand", "env_steps": 0, "seed": 0, "battle": 0,
              "outcome": "won", "episode_return": 1.5, "episode_length": T, "episode_limit": 60, "map_x": 16,
              "map_y": 8, "n_agents": A, "has_comm": False, "has_gates": False, "version": replay.VERSION},
        walkable=np.ones((16, 8), bool), level=np.zeros((16, 8), np.uint8), cliff=np.zeros((16, 8), bool),
        unit_type=np.array(["stalker"] * U), team=np.asarray(teams, np.int8),
        health_max=np.full(U, 80, np.float32), shield_max=np.full(U, 80, np.float32), x=x, y=y,
        health=np.full((T + 1, U), 40, np.float32), shield=np.full((T + 1, U), 20, np.float32),
        alive=np.repeat(np.asarray(alive, bool)[None], T + 1, 0), unit_target=np.full((T + 1, U), -1, np.int16),
        actions=np.ones((T, A), np.int16), target=np.full((T, A), -1, np.int16), comm=np.zeros((T, A, A), bool),
        gates=np.ones((T, A), np.float32), reward=np.zeros(T, np.float32))


# ------------------------------------------------------------------------------------ recording and the format
def test_round_trip_keeps_every_array_and_metadata_value(recorded, tmp_path):
    for rep in (*recorded[0], recorded[1]):
        path = replay.save(rep, tmp_path / replay.file_name(rep))
        back = replay.load(path)
        assert back.meta == rep.meta
        for name in replay.ARRAY_FIELDS:
            mine, theirs = getattr(rep, name), getattr(back, name)
            assert theirs.dtype == np.asarray(mine).dtype and np.array_equal(theirs, mine), name


def test_recording_holds_the_battle_and_the_learners_extras(recorded):
    (first, second), plain = recorded
    for rep, battle in ((first, 0), (second, 1)):
        T, A = rep.n_steps, rep.n_agents
        assert rep.meta["map"] == "3m" and rep.meta["battle"] == battle and rep.meta["seed"] == 3
        assert (rep.meta["learner"], rep.meta["env_steps"], rep.meta["episode_length"]) == ("scripted", 1234, T)
        assert rep.x.shape == (T + 1, 6) and rep.actions.shape == (T, 3) and rep.comm.shape == (T, 3, 3)
        assert rep.meta["has_comm"] and rep.meta["has_gates"]
        assert set(np.unique(rep.gates)) <= {0.0, 1.0}
        assert np.isclose(rep.reward.sum(), rep.meta["episode_return"], atol=1e-4)
        # SMAC's attack actions 6 + j aim at enemy j, which is unit A + j; every other action aims at none
        attack = rep.actions >= 6
        assert np.array_equal(rep.target[attack], A + rep.actions[attack] - 6)
        assert (rep.target[~attack] == -1).all()
        # the last frame is the battle as it ended, before the environment reset it
        if rep.meta["outcome"] == "won":
            assert not rep.alive[-1, A:].any()
        elif rep.meta["outcome"] == "lost":
            assert not rep.alive[-1, :A].any()
        assert rep.alive[0].all() and np.array_equal(rep.team, [0, 0, 0, 1, 1, 1])
    assert not plain.meta["has_comm"] and not plain.meta["has_gates"]
    assert not plain.comm.any() and (plain.gates == 1).all()


def test_heal_actions_aim_at_allies_and_attacks_at_enemies():
    env = SMACVecEnv("MMM", 1)
    medivac = int(np.flatnonzero(env.frame_info()["unit_type"] == "medivac")[0])
    A = env.spec.n_agents
    actions = np.ones((1, A), np.int64)
    actions[0, 0], actions[0, medivac] = 6 + 2, 6 + 4
    targets = env.action_targets(actions)
    assert targets[0, 0] == A + 2 and targets[0, medivac] == 4
    assert (np.delete(targets[0], [0, medivac]) == -1).all()


@pytest.mark.parametrize("map_name, steps", [("3m", 90), ("protoss_5_vs_5", 260)])
def test_keeping_final_frames_steps_exactly_like_auto_reset(map_name, steps):
    def play(keep: bool):
        env = SMACVecEnv(map_name, 3)
        env.keep_final_frames = keep
        step, learner, seen = env.reset(seed=11), ScriptedLearner(False), []
        for _ in range(steps):
            step = env.step(learner.act(step)[0])
            seen.append((step, env.frames()))
        return seen

    plain, kept = play(False), play(True)
    assert any(s.done.any() for s, _ in plain)
    for (a, frames_a), (b, frames_b) in zip(plain, kept):
        for name in ("obs", "state", "avail", "reward", "done", "alive", "t", "won", "episode_return"):
            assert np.array_equal(getattr(a, name), getattr(b, name)), name
        # after an ended battle the plain env shows the new episode, the kept frames the old one's end
        for e in np.flatnonzero(b.done & ~b.truncated):
            assert frames_a["alive"][e].all()
            n = a.alive.shape[1]
            assert not (frames_b["alive"][e, :n].any() and frames_b["alive"][e, n:].any())


# ------------------------------------------------------------------------------------ errors
def _write_meta(tmp_path: Path, rep: replay.Replay, **changes) -> Path:
    """A copy of rep saved with its metadata changed (as a newer or foreign writer would)."""
    path = tmp_path / "changed.npz"
    meta = {"format": replay.FORMAT, **rep.meta, **changes}
    np.savez_compressed(path, meta=np.array(json.dumps(meta)), **rep.arrays())
    return path


@pytest.fixture
def bad_files(recorded, tmp_path):
    """name -> (path, exact error message) for a missing, corrupt, truncated and wrong-version replay."""
    good = replay.save(recorded[1], tmp_path / "good.npz")
    data = good.read_bytes()
    corrupt = tmp_path / "corrupt.npz"
    corrupt.write_bytes(b"this is not a replay\n" * 20)
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(data[: len(data) // 2])
    newer = _write_meta(tmp_path, recorded[1], version=2)
    missing = tmp_path / "nowhere.npz"
    return {
        "missing": (missing, f"no replay file at {missing}"),
        "corrupt": (corrupt, f"{corrupt} is not a readable marl replay (corrupt or truncated file)"),
        "truncated": (truncated, f"{truncated} is not a readable marl replay (corrupt or truncated file)"),
        "version": (newer, f"{newer} is replay version 2; this marl reads version 1"),
    }


@pytest.mark.parametrize("kind", ["missing", "corrupt", "truncated", "version"])
def test_bad_files_give_one_exact_line(bad_files, kind):
    path, message = bad_files[kind]
    with pytest.raises(replay.ReplayError) as err:
        replay.load(path)
    assert str(err.value) == message


@pytest.mark.parametrize("kind", ["missing", "corrupt", "truncated", "version"])
def test_marl_replay_reports_bad_files_on_one_line_with_status_2(bad_files, kind):
    path, message = bad_files[kind]
    proc = subprocess.run([*MARL, "replay", str(path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    assert proc.stderr.splitlines() == [f"marl: error: {message}"]


def test_damaged_and_foreign_archives_are_named(recorded, tmp_path):
    foreign = tmp_path / "foreign.npz"
    np.savez(foreign, x=np.zeros(3))
    with pytest.raises(replay.ReplayError, match=r"^\S+foreign.npz is not a marl replay \(no marl-replay metadata\)$"):
        replay.load(foreign)
    rep = dataclasses.replace(recorded[1], gates=recorded[1].gates[:-1])
    path = replay.save(rep, tmp_path / "short.npz")
    with pytest.raises(replay.ReplayError) as err:
        replay.load(path)
    T, A = recorded[1].n_steps, recorded[1].n_agents
    assert str(err.value) == f"{path} is a damaged marl replay (gates has shape ({T - 1}, {A}), expected ({T}, {A}))"


def test_save_is_atomic_and_leaves_no_temporary_files(recorded, tmp_path):
    path = replay.save(recorded[1], tmp_path / "a" / "r.npz")
    assert sorted(p.name for p in path.parent.iterdir()) == ["r.npz"]
    with zipfile.ZipFile(io.BytesIO(path.read_bytes())) as z:
        assert "meta.npy" in z.namelist()


# ------------------------------------------------------------------------------------ drawing
@pytest.mark.parametrize("size", [(320, 200), (1000, 300), (500, 900)])
def test_render_puts_team_colours_at_the_units(size):
    import pygame

    teams = [0, 0, 1, 1, 1]
    rep = make_replay([(2, 2), (4, 6), (11, 2), (13, 5), (8, 4)], [True, True, True, True, False], teams)
    renderer, surface = Renderer(rep), pygame.Surface(size)
    for frame in range(rep.n_steps + 1):
        renderer.draw(surface, frame)
        lay = renderer.layout(size)
        px, py = lay.unit_pixels(rep, frame)
        radius = max(int(round(UNIT_RADIUS * lay.scale)), 3)
        # a large circle carries the type letter at its centre: look below it
        below_letter = int(0.75 * radius) if radius >= MIN_LETTER_RADIUS else 0
        for u, team in enumerate(teams):
            colour = tuple(surface.get_at((int(px[u]), int(py[u]) + below_letter)))[:3]
            if rep.alive[frame, u]:
                assert colour == TEAM_COLOURS[team], (u, frame)
            else:
                assert colour not in TEAM_COLOURS
        # letterboxed: the map keeps its 16 x 8 cell aspect and sits inside the window, between the bars
        assert lay.map_w / lay.map_h == pytest.approx(16 / 8)
        assert 0 <= lay.left and lay.left + lay.map_w <= size[0] and lay.bar <= lay.top
        assert lay.top + lay.map_h <= size[1] - lay.bar


def test_layout_maps_corners_of_the_view_to_corners_of_the_map_area():
    rep = make_replay([(2, 2), (12, 6)], [True, True], [0, 1])
    lay = Layout(rep, 800, 600)
    x0, x1, y0, y1 = lay.view
    assert (x0, x1, y0, y1) == (0, 16, 0, 8)
    assert lay.to_screen(x0, y1) == (pytest.approx(lay.left), pytest.approx(lay.top))
    assert lay.to_screen(x1, y0) == (pytest.approx(lay.left + lay.map_w), pytest.approx(lay.top + lay.map_h))


# ------------------------------------------------------------------------------------ playback keys
def test_space_pauses_and_plays_and_time_advances_only_when_playing():
    pb = Playback(10)
    assert (pb.frame, pb.paused, pb.speed) == (0, False, DEFAULT_SPEED)
    pb.tick(0.5)
    assert pb.frame == 4
    pb.press("space")
    assert pb.paused
    pb.tick(5.0)
    assert pb.frame == 4
    pb.press("space")
    pb.tick(1 / DEFAULT_SPEED)
    assert (pb.frame, pb.paused) == (5, False)
    pb.tick(10.0)
    assert (pb.frame, pb.paused) == (9, True)  # playback stops on the final frame
    pb.press("space")
    assert (pb.frame, pb.paused) == (0, False)  # and play from there starts over


def test_arrows_step_single_frames_within_bounds_and_pause():
    pb = Playback(3)
    pb.press("left")
    assert (pb.frame, pb.paused) == (0, True)
    for expected in (1, 2, 2):
        pb.press("right")
        assert pb.frame == expected
    pb.press("left")
    assert pb.frame == 1 and pb.paused


def test_speed_keys_walk_the_speed_list_and_stop_at_its_ends():
    pb = Playback(5)
    for _ in range(len(SPEEDS) + 2):
        pb.press("up")
    assert pb.speed == SPEEDS[-1]
    for _ in range(len(SPEEDS) + 2):
        pb.press("down")
    assert pb.speed == SPEEDS[0]
    pb.press("up")
    assert pb.speed == SPEEDS[1]


def test_home_end_restart_and_quit():
    pb = Playback(20, frame=7)
    pb.press("end")
    assert (pb.frame, pb.paused) == (19, True)
    pb.press("home")
    assert (pb.frame, pb.paused) == (0, True)
    pb.frame = 12
    pb.press("r")
    assert (pb.frame, pb.paused) == (0, False)
    assert not pb.quit
    pb.press("q")
    assert pb.quit
    esc = Playback(2)
    esc.press("escape")
    assert esc.quit


def test_pygame_key_events_drive_the_playback():
    import pygame

    pb = Playback(10)
    for key in (pygame.K_SPACE, pygame.K_RIGHT, pygame.K_RIGHT, pygame.K_UP, pygame.K_END, pygame.K_LEFT):
        on_event(pb, pygame.event.Event(pygame.KEYDOWN, key=key, mod=0))
    assert (pb.frame, pb.paused, pb.speed) == (8, True, SPEEDS[SPEEDS.index(DEFAULT_SPEED) + 1])
    on_event(pb, pygame.event.Event(pygame.QUIT))
    assert pb.quit


# ------------------------------------------------------------------------------------ export and the CLI
def test_export_png_gif_and_folder(tmp_path):
    from PIL import Image

    rep = make_replay([(2, 2), (12, 6)], [True, True], [0, 1])
    (png,) = export(rep, tmp_path / "one.png", step=2, size=(320, 200))
    with Image.open(png) as img:
        assert img.size == (320, 200)
    (gif,) = export(rep, tmp_path / "all.gif", size=(320, 200))
    with Image.open(gif) as img:
        assert img.n_frames == rep.n_steps + 1
    frames = export(rep, str(tmp_path / "frames") + "/", size=(160, 100))
    assert [p.name for p in frames] == [f"frame_{k:04d}.png" for k in range(rep.n_steps + 1)]
    with pytest.raises(ViewerError, match=r"^--step 9 is outside this replay's steps 0\.\.3$"):
        export(rep, tmp_path / "x.png", step=9)
    with pytest.raises(ViewerError, match=r"give a \.gif or \.png file, or a folder ending in /$"):
        export(rep, tmp_path / "x.jpg")


@pytest.mark.parametrize("name, learner", [("3s5z_mappo_win.npz", "mappo"), ("3s5z_commformer_win.npz", "commformer")])
def test_marl_replay_exports_the_shipped_samples(tmp_path, capsys, name, learner):
    sample = Path(__file__).resolve().parents[1] / "replays" / name
    rep = replay.load(sample)
    assert rep.meta["map"] == "3s5z" and rep.meta["outcome"] == "won" and sample.stat().st_size < 1_000_000
    assert rep.meta["learner"] == learner
    out = tmp_path / "frame.png"
    assert main(["replay", str(sample), "--export", str(out), "--step", "5"]) == 0
    assert capsys.readouterr().out.strip() == str(out) and out.stat().st_size > 0


# ------------------------------------------------------------------------------------ training and eval
def _tiny_config(tmp_path: Path, **train) -> dict:
    overrides = {"train.envs": 2, "train.rollout": 16, "train.steps": 32, "train.eval_interval": 1,
                 "train.eval_episodes": 2, "algo.ppo_epochs": 1, "train.runs_dir": str(tmp_path)}
    overrides.update({f"train.{k}": v for k, v in train.items()})
    return config_mod.load("smac", "3m", "mappo", overrides)


def test_training_writes_a_replay_at_each_evaluation(tmp_path, capsys):
    from marl.trainer import Trainer

    trainer = Trainer(_tiny_config(tmp_path), tmp_path / "run", show_progress=False)
    trainer.run()
    (path,) = sorted((tmp_path / "run" / "replays").iterdir())
    rep = replay.load(path)
    assert (rep.meta["map"], rep.meta["learner"], rep.meta["env_steps"]) == ("3m", "mappo", 32)
    assert path.name == replay.file_name(rep)
    assert f"replay: {path} (watch it: marl replay {path})" in capsys.readouterr().err

    assert main(["eval", str(tmp_path / "run"), "--episodes", "2", "--record", "2", "--out",
                 str(tmp_path / "rec")]) == 0
    printed = capsys.readouterr().out.strip().splitlines()[1:]
    assert [Path(p).parent for p in printed] == [tmp_path / "rec"] * 2
    assert [replay.load(p).meta["battle"] for p in printed] == [0, 1]


def test_training_records_nothing_when_switched_off(tmp_path):
    from marl.trainer import Trainer

    Trainer(_tiny_config(tmp_path, record_replays=False), tmp_path / "run", show_progress=False).run()
    assert not (tmp_path / "run" / "replays").exists()


def test_old_run_configs_get_the_replay_key(tmp_path):
    config = config_mod.load("smac", "3m", "mappo")
    del config["train"]["record_replays"]
    config_mod.dump(config, tmp_path / "config.yaml")
    assert config_mod.load_file(tmp_path / "config.yaml")["train"]["record_replays"] is True


def test_no_window_without_a_display_is_a_one_line_error(capsys):
    sample = Path(__file__).resolve().parents[1] / "replays" / "3s5z_mappo_win.npz"
    assert main(["replay", str(sample)]) == 2  # the tests run on SDL's dummy driver, which shows nothing
    err = capsys.readouterr().err
    assert err == ("marl: error: cannot open a window (SDL video driver 'dummy' shows nothing); export instead: "
                   "marl replay FILE --export out.gif\n")
