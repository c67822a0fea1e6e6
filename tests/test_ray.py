"""Rollouts on Ray workers: the same run as in-process chunks, exact resume, dead and hung workers, two nodes, errors.

One local Ray for the module (address="local", stopped through Ray's API at the end); the two-node test
starts its own head and second node with `ray start --block` in process groups of their own and kills
exactly those groups. `ray stop` is never run: it would stop every Ray on the machine.
"""

from __future__ import annotations

import builtins
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest
import torch

ray = pytest.importorskip("ray")  # CI installs the extra (.ci/run); never skipped there

from conftest import assert_same  # noqa: E402

from marl import checkpoint  # noqa: E402
from marl import config as config_mod  # noqa: E402
from marl.cli import main  # noqa: E402
from marl.collectors import CollectorError, WorkersFailed, join_rollouts, join_steps, shard_bounds  # noqa: E402
from marl.ray_collector import connect, import_ray  # noqa: E402
from marl.rollout import collect  # noqa: E402
from marl.spec import Rollout  # noqa: E402
from marl.trainer import LAST, Trainer, build  # noqa: E402

ONE_THREAD = ["train.torch_threads=1", "train.update_threads=1"]


def small(tmp_path, *extra: str) -> list[str]:
    """Overrides of a comm run whose updates take a few milliseconds."""
    return ["train.envs=4", "train.rollout=5", "env.n_agents=3", "algo.ppo_epochs=1", "train.eval_interval=0",
            "train.record_replays=false", "train.checkpoint_interval=0", "train.log_interval=1",
            f"train.runs_dir={tmp_path}", "train.steps=100000", "train.ray_worker_cpus=0.5",
            "train.ray_worker_timeout=60", *ONE_THREAD, *extra]


def comm_config(tmp_path, *extra: str, algo: str = "mappo") -> dict:
    """A small comm run's config."""
    return config_mod.load("comm", "informants", algo, small(tmp_path, *extra))


@pytest.fixture(scope="module")
def cluster():
    """One local Ray for the module; RayCollector uses it as it is and never shuts it down."""
    ray.init(address="local", include_dashboard=False, num_cpus=4, object_store_memory=80 * 2**20,
             log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tiny networks run fastest on one thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def recorded(trainer: Trainer) -> list:
    """Wrap the trainer's update so that every rollout it learns from is kept."""
    kept, update = [], trainer._update

    def keep(rollout, episodes, timing):
        kept.append(rollout)
        return update(rollout, episodes, timing)

    trainer._update = keep
    return kept


# ------------------------------------------------------------------------------------------- joining (no Ray)
def _part(whole: Rollout, offset: int, size: int) -> Rollout:
    """Battles offset .. offset + size - 1 of a rollout, as a shard of them would have collected it."""
    cut, sel = slice(offset, offset + size), (whole.final_e >= offset) & (whole.final_e < offset + size)
    return Rollout(**{f: getattr(whole, f)[:, cut] for f in ("obs", "state", "avail", "alive", "actions", "reward",
                                                                "done", "truncated")},
                   extras={k: v[:, cut] for k, v in whole.extras.items()},
                   **{f: getattr(whole, f)[cut] for f in ("next_obs", "next_state", "next_avail", "next_alive")},
                   final_t=whole.final_t[sel], final_e=whole.final_e[sel] - offset, final_obs=whole.final_obs[sel],
                   final_state=whole.final_state[sel])


def test_shards_join_to_the_whole_rollout_in_shard_order(tmp_path):
    """Shards' rollouts joined = the rollout of all battles (every field and extra; final_e shifted back), with the
    cut episodes in shard order; Steps join along the battles, a None field stays None."""
    env, learner = build(comm_config(tmp_path, "env.episode_limit=3"))
    whole, _, _ = collect(env, learner, env.reset(seed=1), 7)
    bounds = shard_bounds(4, 3)
    assert bounds == [(0, 2), (2, 1), (3, 1)] and shard_bounds(10, 4) == [(0, 3), (3, 3), (6, 2), (8, 2)]
    joined = join_rollouts([_part(whole, o, n) for o, n in bounds], [o for o, _ in bounds])
    order = np.argsort(np.searchsorted([o for o, _ in bounds], whole.final_e, side="right"), kind="stable")
    assert whole.final_e.size > 4 and not np.array_equal(order, np.arange(order.size))  # the order does change
    for f in fields(Rollout):
        want = getattr(whole, f.name)
        if f.name.startswith("final_"):
            want = want[order]
        assert_same(getattr(joined, f.name), want, f.name)
    a, b = env.reset(seed=3), env.reset(seed=4)
    both = join_steps([a, b])
    assert np.array_equal(both.obs, np.concatenate([a.obs, b.obs])) and both.scenario is None and both.n_envs == 8


# ------------------------------------------------------------------------------------------- ActingState (no Ray)
SHARDED = {  # a small run of each learner whose acting state a shard's copy is made from
    "mappo": lambda tmp: comm_config(tmp, "train.act_chunks=2"),
    "mappo_recurrent": lambda tmp: comm_config(tmp, "train.act_chunks=2", "algo.recurrent=true"),
    "commformer": lambda tmp: comm_config(tmp, "train.act_chunks=2", "algo.warmup=0", "algo.graph_estimator=score",
                                          algo="commformer"),
    "stepmix": lambda tmp: comm_config(tmp, "train.act_chunks=2", "algo.baseline=test_stepmix_deep:last_symbol",
                                       "algo.vb_episodes=4", "algo.vb_envs=2", "algo.bound_epochs=1",
                                       "algo.calibration_episodes=2", "env.episode_limit=4", algo="stepmix"),
    "cmorl": lambda tmp: config_mod.load("smac", "3m", "cmorl", [
        *[o for o in small(tmp, "train.act_chunks=2", "train.envs=6", "algo.eval_every=0") if not o.startswith(
            ("env.", "train.envs=4"))]]),
    "mra": lambda tmp: config_mod.load("smac", "3m,5m", "mra", [
        *[o for o in small(tmp, "train.act_chunks=2") if not o.startswith("env.")]]),
}


@pytest.mark.parametrize("algo", list(SHARDED))
def test_a_copy_loaded_with_a_shards_acting_state_acts_as_the_shard_does(tmp_path, algo):
    """acting_state() holds all that acting reads: a fresh learner given it (and the shard's place) acts the same,
    draw for draw; C-MORL's copy sees its battles' global policy slices."""
    from marl.agents.cmorl.learner import slices
    from marl.registry import make_learner

    cfg = SHARDED[algo](tmp_path)
    tr = Trainer(cfg, tmp_path / algo, show_progress=False)
    tr.run(max_updates=1)
    shard = tr.collector.shards[1]
    fresh = make_learner(cfg["run"]["algo"], shard.spec, cfg["algo"], seed=99, device="cpu")
    fresh.set_shard(shard.offset, shard.total, 12345)
    fresh.load_acting_state(shard.learner.acting_state())
    for _ in range(3):
        a, extras_a = shard.learner.act(shard.step)
        b, extras_b = fresh.act(shard.step)
        assert_same(a, b, "actions")
        assert_same(extras_a, extras_b, "extras")
        shard.step = shard.env.step(a)
    if algo == "cmorl":
        P = fresh.n_policies
        assert P > 1 and np.array_equal(fresh._owners(3), slices(6, P)[3:]) and shard.offset == 3
    tr.close()


def test_mras_latent_histogram_shows_the_z_its_shards_hold(tmp_path):
    """With copies acting on shards the driver holds no training z; its histogram shows the shards' z, in battle
    order, as the rollout's last step recorded them."""
    cfg = SHARDED["mra"](tmp_path)
    tr = Trainer(cfg, tmp_path / "mra", show_progress=False)
    tr.run(max_updates=1)
    held = np.concatenate([s.learner.held_latents(deterministic=False) for s in tr.collector.shards])
    assert tr.learner.held_latents(deterministic=False).size == 0 and held.shape == (4, 5)
    assert np.array_equal(tr.learner.diagnostics()["histograms"]["mra/latent_z"], held.reshape(-1))
    tr.close()


# ------------------------------------------------------------------------------------------- the same run
def test_two_ray_workers_are_bit_identical_to_two_in_process_chunks_and_resume_exactly(tmp_path, cluster):
    """In-process 2 chunks, 2 updates == Ray 2 workers, 2 updates == another Ray run resumed after update 1."""
    chunks = Trainer(comm_config(tmp_path, "train.act_chunks=2"), tmp_path / "chunks", show_progress=False)
    chunk_rollouts = recorded(chunks)
    chunks.run(max_updates=2)

    whole = Trainer(comm_config(tmp_path), tmp_path / "whole", show_progress=False)  # today's streams: not split
    whole_rollouts = recorded(whole)
    whole.run(max_updates=1)
    assert not np.array_equal(whole_rollouts[0].actions, chunk_rollouts[0].actions)

    on_ray = Trainer(comm_config(tmp_path, "train.ray_workers=2", "train.checkpoint_interval=1"), tmp_path / "ray",
                     show_progress=False)
    ray_rollouts = recorded(on_ray)
    on_ray.run(max_updates=1)  # checkpoints/last.pt: each worker's generators and battles after update 1
    shutil.copytree(tmp_path / "ray", tmp_path / "split")
    on_ray.run(max_updates=1)
    assert set(on_ray.collector.nodes) == {ray.util.get_node_ip_address()}
    on_ray.close()
    assert_same(ray_rollouts, chunk_rollouts, "rollouts")
    assert_same(on_ray.learner.state_dict(), chunks.learner.state_dict(), "learner")

    saved = checkpoint.load(tmp_path / "split" / "checkpoints" / LAST)["collector"]
    assert [s["offset"] for s in saved["shards"]] == [0, 2] and saved["shards"][1]["env"] is not None
    resumed = Trainer(config_mod.load_file(tmp_path / "split" / "config.yaml"), tmp_path / "split", resume=True,
                      show_progress=False)
    resumed_rollouts = recorded(resumed)
    resumed.run(max_updates=1)
    resumed.close()
    assert_same(resumed_rollouts, ray_rollouts[1:], "resumed rollouts")
    assert_same(resumed.learner.state_dict(), on_ray.learner.state_dict(), "resumed learner")


# ------------------------------------------------------------------------------------------- faults
def test_dead_and_hung_workers_are_replaced_counted_and_too_many_stop_the_run(tmp_path, cluster):
    """os._exit mid-rollout: replaced, the update goes on, the loss counted; a hang: caught by the timeout;
    past train.ray_max_failures: a checkpoint and a one-line error naming the node."""
    # 12 s: a healthy 5-step collect must never look hung, even on a loaded 2-core machine (4 s did, once)
    cfg = comm_config(tmp_path, "train.ray_workers=2", "train.ray_worker_timeout=12", "train.ray_max_failures=2",
                      "train.ray_start_timeout=120")
    tr = Trainer(cfg, tmp_path / "faults", show_progress=False)
    try:
        tr.run(max_updates=1)  # every battle now 5 steps into its episode (episodes last 20)
        assert tr.collector.losses == {"episodes": 0, "steps": 0, "replaced": 0}
        dead_pid = tr.collector.pids[1]
        ray.get(tr.collector.shards[1].inject_fault.remote("exit", 3))
        kept = recorded(tr)
        tr.run(max_updates=1)
        assert tr.update_index == 2 and kept[0].obs.shape[:2] == (5, 4)
        assert tr.collector.losses == {"episodes": 2, "steps": 10, "replaced": 1}  # shard 1: 2 battles, 5 steps each
        assert tr.collector.incarnations == [0, 1] and tr.collector.pids[1] != dead_pid
        assert np.array_equal(tr.step.t, [10, 10, 5, 5])  # the new worker's battles started afresh on a new stream
        ray.get(tr.collector.shards[0].inject_fault.remote("hang", 2))
        start = time.perf_counter()
        tr.run(max_updates=1)
        assert 12 <= time.perf_counter() - start < 120 and tr.update_index == 3  # waited the timeout, then went on
        assert tr.collector.losses == {"episodes": 4, "steps": 30, "replaced": 2}  # shard 0 was 10 steps in
        assert tr.collector.incarnations == [1, 1]
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        ray.get(tr.collector.shards[1].inject_fault.remote("exit", 1))
        with pytest.raises(WorkersFailed, match=rf"^Ray worker 1 \(battles 2\.\.3\) on node "
                           rf"{re.escape(tr.collector.nodes[1])} died; 3 worker failures in this run exceed "
                           rf"train\.ray_max_failures 2; checkpoint saved at .*last\.pt; continue with: marl train "
                           rf"--resume .*faults$"):
            tr.run(max_updates=1)
        assert checkpoint.load(tmp_path / "faults" / "checkpoints" / LAST)["counters"]["update"] == 3
        files = sorted((tmp_path / "faults" / "tb").glob("events*"))  # one per run() call

        def logged(tag):  # by env step (files of one second sort by name in any order); the last run() logged none
            accs = [EventAccumulator(str(f)).Reload() for f in files]
            return [v for _, v in sorted((e.step, e.value) for a in accs if tag in a.Tags()["scalars"]
                                         for e in a.Scalars(tag))]

        assert logged("train/ray_replaced_workers") == [0, 1, 2]
        assert logged("train/ray_lost_steps") == [0, 10, 30]
        assert logged("train/ray_lost_episodes") == [0, 2, 4]
    finally:
        tr.close()


# ------------------------------------------------------------------------------------------- errors
def test_one_line_errors_for_missing_ray_silent_address_and_too_few_cpus(tmp_path, cluster, capsys, monkeypatch):
    """Each names what was wrong and what to do."""
    deadline = time.time() + 30  # the CPUs of workers killed by earlier tests come back as Ray notices
    while ray.available_resources().get("CPU", 0.0) < 4 and time.time() < deadline:
        time.sleep(0.1)
    free = ray.available_resources().get("CPU", 0.0)
    assert free == 4
    assert main(["train", "comm", "informants", "--algo", "mappo", "--ray-workers", "3",
                 *small(tmp_path, "train.ray_worker_cpus=2")]) == 2
    err = capsys.readouterr().err
    assert err == (f"marl: error: 3 Ray workers need 6 CPUs (train.ray_worker_cpus 2 each) but the cluster has "
                   f"{free:g} free; use at most {int(free // 2)} workers, a smaller train.ray_worker_cpus, or more "
                   f"machines\n")
    assert not any(tmp_path.iterdir())  # no run directory left behind

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    with pytest.raises(CollectorError, match=rf"^no Ray cluster answers at 127\.0\.0\.1:{port} within 0\.5 s "
                       rf"\(train\.ray_connect_timeout\); start one with `ray start --head --port {port}` on that "
                       rf"machine, or train without --address for a local Ray$"):
        connect(f"127.0.0.1:{port}", object_store=0, timeout=0.5)
    monkeypatch.undo()

    real_import = builtins.__import__

    def no_ray(name, *args, **kwargs):
        if name == "ray":
            raise ImportError("No module named 'ray'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    with pytest.raises(CollectorError, match=r'^train\.ray_workers needs Ray, which is not installed; install the '
                       r'extra: pip install -e "\.\[ray\]" \(ray==2\.60\.0\)$'):
        import_ray()


# ------------------------------------------------------------------------------------------- two nodes
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _group(pgid: int, wait: float = 10.0) -> list[int]:
    """Live processes (not zombies) of a process group, once it empties or `wait` seconds pass (Ray's daemons and
    workers stay in the group `ray start` was given)."""
    deadline = time.time() + wait
    while True:
        out = []
        for d in os.listdir("/proc"):
            try:
                if d.isdigit() and os.getpgid(int(d)) == pgid and \
                        Path(f"/proc/{d}/stat").read_text().rpartition(")")[2].split()[0] != "Z":
                    out.append(int(d))
            except OSError:
                pass
        if not out or time.time() > deadline:
            return out
        time.sleep(0.2)


def _start(args: list[str], env: dict, log: Path) -> subprocess.Popen:
    proc = subprocess.Popen(["ray", "start", "--block", "--disable-usage-stats", *args], env=env,
                            start_new_session=True, stdout=log.open("w"), stderr=subprocess.STDOUT)
    deadline = time.time() + 40
    while "Ray runtime started" not in log.read_text():
        assert proc.poll() is None and time.time() < deadline, log.read_text()[-2000:]
        time.sleep(0.2)
    return proc


def _kill(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def test_two_nodes_train_with_address_and_survive_losing_one(tmp_path):
    """A head and a node on 127.0.0.2: workers on both; the node is killed mid-run; the run completes on the head;
    everything started is gone afterwards."""
    port = _free_port()
    # the cluster requires a token; the driver is given the token but not RAY_AUTH_MODE, which marl sets
    token = secrets.token_hex(32)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env["RAY_AUTH_TOKEN"] = token
    started: list[subprocess.Popen] = []
    try:
        head = _start(["--head", "--port", str(port), "--num-cpus", "2", "--include-dashboard", "false"],
                      {**env, "RAY_AUTH_MODE": "token"}, tmp_path / "head.log")
        started.append(head)
        node = _start([f"--address=127.0.0.1:{port}", "--num-cpus", "1", "--node-ip-address", "127.0.0.2"],
                      {**env, "RAY_AUTH_MODE": "token"}, tmp_path / "node.log")
        started.append(node)
        cmd = [sys.executable, "-m", "marl", "train", "comm", "informants", "--algo", "mappo", "--ray-workers", "2",
               "--address", f"127.0.0.1:{port}", *small(tmp_path / "runs", "train.ray_worker_cpus=1",
                                                          "train.ray_worker_timeout=10", "train.steps=800")]
        driver = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                  start_new_session=True)
        started.append(driver)
        placed = ""
        for line in driver.stderr:
            placed += line
            if line.startswith("ray: 2 workers"):
                break
        nodes = set(re.findall(r"on (\S+) \(pid", placed.splitlines()[-1]))
        assert len(nodes) == 2 and "127.0.0.2" in nodes, placed[-3000:]
        assert len(_group(node.pid, wait=0)) >= 2  # its raylet and the worker on it
        _kill(node)  # the second machine goes away mid-run, with its worker
        assert _group(node.pid) == []
        out, rest = driver.communicate(timeout=45)
        assert driver.returncode == 0, rest[-3000:]
        lost = re.search(r"shard (\d) on 127\.0\.0\.2", placed).group(1)
        assert re.search(rf"ray: worker {lost} on 127\.0\.0\.2 (died|did not answer within train\.ray_worker_timeout); "
                         r"replaced \(incarnation 1\), its shard collected again", rest), rest[-3000:]
        run_dir = Path(re.search(r"run directory: (\S+)", out).group(1))
        data = checkpoint.load(run_dir / "checkpoints" / LAST)
        assert data["counters"]["env_steps"] == 800 and data["collector"]["losses"]["replaced"] == 1
    finally:
        for proc in reversed(started):
            _kill(proc)
    for proc in started:
        assert _group(proc.pid) == [], f"processes of {proc.args[:4]} left running"
