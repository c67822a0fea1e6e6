"""benchmarks/fidelity.py: the band and first-90% logic on synthetic curves, the table, and --table on run dirs."""

import importlib.util
from pathlib import Path

import pytest

spec = importlib.util.spec_from_file_location("fidelity", Path(__file__).parents[1] / "benchmarks" / "fidelity.py")
fid = importlib.util.module_from_spec(spec)
spec.loader.exec_module(fid)

REAL_3S5Z = [(250_000, 0.06), (500_000, 0.05), (1_000_000, 0.40), (1_500_000, 0.53), (2_000_000, 0.87),
             (3_000_000, 0.93), (5_000_000, 0.97), (10_000_000, 0.97)]


def test_real_csv_is_read_per_map_in_step_order():
    real = fid.read_real()
    assert set(real) == {"2s3z", "3m", "3s5z", "5m_vs_6m", "MMM2"}
    assert real["3s5z"] == REAL_3S5Z
    assert real["5m_vs_6m"][2] == (1_000_000, 0.30)


def test_value_at_interpolates_between_evaluations_and_refuses_outside():
    c = [(100, 0.0), (300, 1.0), (400, 0.5)]
    assert fid.value_at(c, 100) == 0.0
    assert fid.value_at(c, 200) == 0.5
    assert fid.value_at(c, 350) == 0.75
    assert fid.value_at(c, 400) == 0.5
    assert fid.value_at(c, 99) is None and fid.value_at(c, 405) is None
    assert fid.value_at(c, 404) == 0.5  # 1% past the last evaluation: it stands (a budget's end)
    assert fid.value_at([], 5) is None
    assert fid.value_at([(7, 0.3)], 7) == 0.3


def test_median_curve_uses_steps_every_seed_evaluated():
    a = [(10, 0.1), (20, 0.5), (30, 0.9)]
    b = [(10, 0.3), (20, 0.7)]
    c = [(10, 0.2), (20, 0.6), (30, 1.0)]
    assert fid.median_curve([a, b, c]) == [(10, 0.2), (20, 0.6)]
    assert fid.median_curve([a, c]) == [(10, pytest.approx(0.15)), (20, pytest.approx(0.55)), (30, 0.95)]
    assert fid.median_curve([]) == []


def test_first_reaching_ours_and_real():
    assert fid.first_reaching([(10, 0.5), (20, 0.9), (30, 1.0)]) == 20
    assert fid.first_reaching([(10, 0.5), (20, 0.89)]) is None
    # 3s5z: 0.87 at 2M, 0.93 at 3M -> crossing half way, 2.5M
    step, upper = fid.real_first_reaching(REAL_3S5Z)
    assert step == pytest.approx(2_500_000) and upper is False
    assert fid.real_first_reaching([(250_000, 1.0), (500_000, 1.0)]) == (250_000.0, True)
    assert fid.real_first_reaching([(1, 0.3), (2, 0.88)]) is None


def test_first_within_factor():
    real = (2_000_000.0, False)
    assert fid.first_within(3_000_000, real) is True
    assert fid.first_within(3_000_001, real) is False
    assert fid.first_within(1_333_334, real) is True
    assert fid.first_within(1_333_332, real) is False
    assert fid.first_within(None, real) is False
    assert fid.first_within(10, None) is None
    # an upper bound (the real game is already at 90% at its first point): only "not later than 1.5x" counts
    assert fid.first_within(1, (250_000.0, True)) is True
    assert fid.first_within(375_000, (250_000.0, True)) is True
    assert fid.first_within(375_001, (250_000.0, True)) is False


def test_compare_band_and_first_90_on_synthetic_3s5z():
    # two seeds evaluated every 500k; the median at each point is the mean of the two
    s1 = [(500_000, 0.0), (1_000_000, 0.50), (1_500_000, 0.60), (2_000_000, 0.90), (3_000_000, 1.0)]
    s2 = [(500_000, 0.2), (1_000_000, 0.70), (1_500_000, 0.80), (2_000_000, 1.00), (3_000_000, 1.0)]
    r = fid.compare([s1, s2], REAL_3S5Z)
    pts = {p["step"]: p for p in r["points"]}
    assert pts[500_000]["ours"] == pytest.approx(0.1) and pts[500_000]["real"] == 0.05
    assert pts[500_000]["in_band"] is True
    assert pts[1_000_000]["ours"] == pytest.approx(0.6) and pts[1_000_000]["in_band"] is False  # 0.20 above 0.40
    assert pts[1_500_000]["ours"] == pytest.approx(0.7) and pts[1_500_000]["in_band"] is False  # 0.17 above 0.53
    assert pts[2_000_000]["ours"] == pytest.approx(0.95) and pts[2_000_000]["in_band"] is True  # 0.08 above 0.87
    assert pts[3_000_000]["in_band"] is True
    assert r["band_met"] is False
    assert r["first_90_ours"] == 2_000_000 and r["first_90_real"] == (pytest.approx(2_500_000), False)
    assert r["first_90_within"] is True
    assert r["seeds"] == 2


def test_band_edge_is_inclusive_and_short_runs_have_no_value():
    real = [(1_000_000, 0.30), (2_000_000, 0.62), (3_000_000, 0.73)]
    ours = [(1_000_000, 0.45), (2_000_000, 0.47)]  # exactly 0.15 off at both; never evaluated at 3M
    r = fid.compare([ours], real)
    pts = {p["step"]: p for p in r["points"]}
    assert pts[1_000_000]["in_band"] is True and pts[2_000_000]["in_band"] is True
    assert pts[3_000_000]["ours"] is None and pts[3_000_000]["in_band"] is None
    assert pts[500_000]["real"] is None  # before the real curve's first point
    assert r["band_met"] is False  # 3M not reached: the target is not met
    assert r["first_90_real"] is None and r["first_90_within"] is None


def test_table_text():
    s = [(500_000, 0.0), (1_000_000, 0.40), (1_500_000, 0.53), (2_000_000, 0.95), (3_000_000, 0.93)]
    text = fid.table({"3s5z": fid.compare([s], REAL_3S5Z)})
    lines = text.splitlines()
    assert lines[0] == "| map | seeds | 0.5M | 1M | 1.5M | 2M | 3M | first 90%, ours | real | within 1.5x |"
    assert lines[2] == ("| 3s5z | 1 | 0.00 / 0.05 in | 0.40 / 0.40 in | 0.53 / 0.53 in | 0.95 / 0.87 in | "
                        "0.93 / 0.93 in | 2.00M | 2.50M | yes |")


def test_table_mode_reads_run_directories(tmp_path, capsys):
    from torch.utils.tensorboard import SummaryWriter

    for seed, vals in ((1, (0.2, 0.5, 1.0)), (2, (0.4, 0.7, 1.0))):
        run = tmp_path / f"3m-s{seed}"
        w = SummaryWriter(str(run / "tb"))
        for step, v in zip((250_000, 500_000, 1_000_000), vals):
            w.add_scalar("eval/win_rate", v, step)
        w.close()
    fid.main(["--table", str(tmp_path / "3m-s1"), str(tmp_path / "3m-s2"), "--plots", str(tmp_path / "figs")])
    out = capsys.readouterr().out
    assert "| 3m | 2 | 0.60 / 1.00 out | 1.00 / 1.00 in | - / 1.00 | - / 1.00 | - / 1.00 | 1.00M | <= 0.25M | no |" \
        in out
    assert (tmp_path / "figs" / "fidelity_3m.png").stat().st_size > 0


def test_errors_are_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        fid.main(["--table", str(tmp_path)])
    assert e.value.code == 2
    assert capsys.readouterr().err == f"marl: error: {tmp_path} is not a run directory (no tb/ folder of " \
                                      "TensorBoard events)\n"
    (tmp_path / "fid" / "default" / "3m-s1").mkdir(parents=True)
    with pytest.raises(SystemExit):
        fid.main(["--maps", "3m", "--runs-dir", str(tmp_path / "fid")])
    assert capsys.readouterr().err == (f"marl: error: {tmp_path / 'fid' / 'default' / '3m-s1'} exists; pass "
                                       "--resume to skip it when finished or continue it\n")


def test_mmm2_takes_the_authors_actor_gain_and_the_other_maps_the_default():
    """MMM2's script alone passes --gain 1 (the actor head's init gain); the overrides load as a MAPPO config."""
    from marl import config as config_mod

    mmm2 = fid.overrides_for("MMM2", 3_000_000, 1, Path("runs"), 10)
    assert mmm2[-4:] == ["algo.ppo_epochs=5", "algo.clip=0.2", "algo.minibatches=2", "algo.actor_gain=1.0"]
    assert config_mod.load("smac", "MMM2", "mappo", mmm2)["algo"]["actor_gain"] == 1.0
    for name in ("3m", "2s3z", "3s5z", "5m_vs_6m"):
        overrides = fid.overrides_for(name, 3_000_000, 1, Path("runs"), 10)
        assert not any(o.startswith("algo.actor_gain") for o in overrides)
        assert config_mod.load("smac", name, "mappo", overrides)["algo"]["actor_gain"] == 0.01
