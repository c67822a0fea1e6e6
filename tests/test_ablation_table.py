"""benchmarks/ablation.py: runs of one variant with different seeds are averaged per variant."""

import importlib.util
from pathlib import Path

import pytest

spec = importlib.util.spec_from_file_location("ablation", Path(__file__).parents[1] / "benchmarks" / "ablation.py")
ablation = importlib.util.module_from_spec(spec)
spec.loader.exec_module(ablation)


def _row(name, final, last3, ret, msgs, best=None):
    return {"variant": name, "final_win_rate": final, "mean_last_3": last3, "best_win_rate": best,
            "return_last_3": ret, "messages_per_agent_step": msgs}


def test_seeds_of_a_variant_are_averaged_with_their_range():
    rows = [_row("5m_vs_6m-learned-s1", 0.4, 0.2, 11.0, 1.6, 0.5), _row("5m_vs_6m-random-s1", 0.0, 0.0, 8.0, 1.8),
            _row("5m_vs_6m-learned-s2", 0.1, 0.05, 10.0, 1.7, 0.2), _row("5m_vs_6m-learned-s13", 0.1, 0.05, 12.0, 1.8)]
    learned, random = ablation.by_variant(rows)
    assert learned["variant"] == "5m_vs_6m-learned" and learned["seeds"] == 3
    assert learned["final_win_rate"] == pytest.approx((0.2, 0.1, 0.4))
    assert learned["return_last_3"] == pytest.approx((11.0, 10.0, 12.0))
    assert learned["best_win_rate"] == pytest.approx((0.35, 0.2, 0.5))  # runs without a value are left out
    assert random["seeds"] == 1 and random["messages_per_agent_step"] == pytest.approx((1.8, 1.8, 1.8))
    assert random["best_win_rate"] is None


def test_a_table_of_several_seeds_prints_the_per_variant_means(tmp_path, monkeypatch, capsys):
    rows = {"m-learned-s1": _row("", 0.5, 0.25, 11.0, 1.5, 0.5), "m-learned-s2": _row("", 0.0, 0.0, 9.0, 1.7, 0.1)}
    monkeypatch.setattr(ablation, "summarise", lambda run_dir, at=None: {
        "steps": 960_000, "first_90": None, **{k: v for k, v in rows[Path(run_dir).name].items() if k != "variant"}})
    ablation.main(["--table", str(tmp_path / "m-learned-s1"), str(tmp_path / "m-learned-s2")])
    out = capsys.readouterr().out
    assert ("| m-learned | 2 | 25% (0%-50%) | 12% (0%-25%) | 30% (10%-50%) | 10.00 (9.00-11.00) | 1.60 (1.50-1.70) |"
            in out)
