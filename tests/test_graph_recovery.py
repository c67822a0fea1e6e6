"""benchmarks/graph_recovery.py: the probe's table read back from a run's TensorBoard scalars."""

import importlib.util
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from torch.utils.tensorboard import SummaryWriter

from marl import config as config_mod

BENCH = Path(__file__).parents[1] / "benchmarks"
spec = importlib.util.spec_from_file_location("graph_recovery", BENCH / "graph_recovery.py")
graph_recovery = importlib.util.module_from_spec(spec)
spec.loader.exec_module(graph_recovery)


def _run(tmp_path, scenario="informants") -> Path:
    run_dir = tmp_path / f"{scenario}-learned-s1"
    cfg = config_mod.load("comm", scenario, "commformer", [])
    run_dir.mkdir()
    config_mod.dump(cfg, run_dir / "config.yaml")
    with SummaryWriter(str(run_dir / "tb")) as w:
        for step, ret, recall, msgs in [(100, 8.0, 0.25, 1.0), (200, 19.0, 0.75, 0.9), (300, 20.0, 1.0, 0.8)]:
            w.add_scalar("eval/episode_return", ret, step)
            w.add_scalar("graph/planted_recall", recall, step)
            w.add_scalar("graph/messages_per_agent_step", msgs, step)
    return run_dir


def test_summary_of_a_probe_run(tmp_path):
    row = graph_recovery.summarise(_run(tmp_path))
    assert row == {"steps": 300, "recall": 1.0, "return_fraction": 1.0, "graph_fraction": 1.0, "first_95": 200,
                   "messages_per_agent_step": pytest.approx(0.8)}  # TensorBoard keeps float32
    (tmp_path / "x").mkdir()
    early = graph_recovery.summarise(_run(tmp_path / "x", "intermittent"), at=250)
    # the last evaluation by step 250: recall 0.75 earns p (f + (1 - f) / m) + 1 - p of the optimum (p = 0.25, m = 4)
    assert early["steps"] == 200 and early["return_fraction"] == pytest.approx(19 / 20)
    assert early["graph_fraction"] == pytest.approx(0.25 * (0.75 + 0.25 / 4) + 0.75)
    assert early["messages_per_agent_step"] == pytest.approx(0.9)  # the last tenth: steps 180 to 200


def test_table_is_printed_for_run_directories(tmp_path, capsys):
    run_dir = _run(tmp_path)
    graph_recovery.main(["--table", str(run_dir)])
    assert "| informants-learned-s1 | 300 | 1.000 | 1.000 | 1.000 | 200 | 0.80 |" in capsys.readouterr().out


class _ScriptedGates:
    """A learner whose gates and messages are fixed per call: agent 0's gate open, agent 1's closed."""

    def __init__(self, gates: bool):
        self.gates, self.calls = gates, 0

    def act(self, step, deterministic=False):
        self.calls += 1
        E, N = step.alive.shape
        extras = {"messages": np.tile(np.arange(N, dtype=np.float32), (E, 1))}
        if self.gates:
            extras["gates"] = np.tile(np.array([1.0, 0.0, 1.0], np.float32)[:N], (E, 1))
        return np.full((E, N), deterministic, int), extras


def test_need_split_counts_open_gates_by_the_needed_flag_of_living_agents():
    # the needed flag is the observation's last column; agent 0's gate open, agent 1's closed, agent 2's open
    need = np.array([[1.0, 1.0, 0.0], [0.0, 1.0, 1.0]], np.float32)
    step = SimpleNamespace(alive=np.array([[True, True, True], [True, True, False]]),
                           obs=np.concatenate([np.zeros((2, 3, 2), np.float32), need[..., None]], -1))
    split = graph_recovery.NeedSplit(_ScriptedGates(gates=True), need=slice(2, 3))
    actions, _ = split.act(step, deterministic=True)
    assert actions.tolist() == [[1, 1, 1], [1, 1, 1]]  # the learner's actions, untouched
    # needed living agent-steps: (0,0) open, (0,1) closed, (1,1) closed; not needed: (0,2) open, (1,0) open
    rates = split.rates()
    assert rates["gate_open_rate_needed"] == pytest.approx(1 / 3) and rates["gate_open_rate_unneeded"] == 1.0
    for learner, need in ((_ScriptedGates(gates=False), slice(2, 3)), (_ScriptedGates(gates=True), None)):
        plain = graph_recovery.NeedSplit(learner, need)  # no gates, or no flag: nothing to split
        plain.act(step)
        assert plain.rates() == {"gate_open_rate_needed": None, "gate_open_rate_unneeded": None}


def test_eval_gates_plays_the_last_checkpoint(tmp_path, capsys):
    from marl.trainer import Trainer

    cfg = config_mod.load("comm", "intermittent", "commformer",
                          ["train.envs=4", "train.rollout=20", "train.steps=80", "train.eval_interval=0",
                           "train.torch_threads=1", "train.update_threads=1", "algo.sparsity=0.125",
                           "algo.gates=false", "algo.warmup=0"])
    run_dir = tmp_path / "intermittent-learned-s1"
    Trainer(cfg, run_dir, show_progress=False).run()
    row = graph_recovery.eval_gates(run_dir)  # 32 episodes, as the table plays them: the same numbers
    # no gates and past the soft warm-up: every agent hears its k = 1 top sender at every step; no training open rate
    assert row["steps"] == 80 and row["eval_gate_open_rate"] is None and row["train_gate_open_rate"] is None
    assert row["eval_messages_per_agent_step"] == 1.0 and 0.0 <= row["return_fraction"] <= 1.0
    graph_recovery.main(["--eval-gates", str(run_dir)])
    assert row["eval_gate_open_rate_needed"] is None and row["eval_gate_open_rate_unneeded"] is None
    out = capsys.readouterr().out
    assert f"| intermittent-learned-s1 | 80 | {row['return_fraction']:.3f} | - | - | - | - | 1.00 |" in out


def test_graph_gradients_terms_add_up_to_the_graph_steps_gradient():
    """benchmarks/graph_gradients.py: policy, entropy and critic terms sum to a graph epoch's whole gradient."""
    import torch

    from marl.agents.commformer import CommFormer
    from marl.envs.smac import SMACVecEnv
    from marl.rollout import collect

    spec_g = importlib.util.spec_from_file_location("graph_gradients", BENCH / "graph_gradients.py")
    graph_gradients = importlib.util.module_from_spec(spec_g)
    spec_g.loader.exec_module(graph_gradients)
    cfg = config_mod.load("smac", "3m", "commformer", ["algo.warmup=0", "algo.gates=false",
                                                        "algo.graph_noise=sample"])["algo"]
    env = SMACVecEnv("3m", 2)
    learner = CommFormer(env.spec, cfg, seed=0)
    rollout, _, _ = collect(env, learner, env.reset(seed=0), 8)
    twin = CommFormer(env.spec, cfg, seed=0)  # targets move the value norm's statistics: the same state, once each
    twin.load_state_dict(learner.state_dict())
    learner.generator.manual_seed(11)
    terms = graph_gradients.term_gradients(learner, rollout, samples=1)
    assert set(terms) == {"policy", "entropy", "value"}
    twin.generator.manual_seed(11)  # the same Gumbel sample
    batch, data = twin._targets(rollout), twin._batch_tensors(rollout)
    base = twin._training_graph(True, False, data.alive.shape[0])
    loss, _ = twin._loss(data, batch, slice(None), base, graph_epoch=True)
    (whole,) = torch.autograd.grad(loss, [twin.graph.edge_logits])
    assert torch.allclose(sum(terms.values()), whole, rtol=1e-4, atol=1e-9)
    assert all(bool(t.abs().sum() > 0) for t in terms.values())
