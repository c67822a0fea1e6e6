"""benchmarks/graph_recovery.py: the probe's table read back from a run's TensorBoard scalars."""

import importlib.util
from pathlib import Path

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
