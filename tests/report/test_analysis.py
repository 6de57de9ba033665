"""Analysis functions on hand-made numbers whose answers are worked out by hand (and on the SaLSA paper table)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

from research_optim.report.analysis import (
    average_rank,
    comparison,
    final_loss_table,
    integrated_profile_score,
    log_average,
    mean_band,
    performance_profiles,
    run_final,
    sensitivity,
    speedup_per_seed,
    speedup_vs_baseline,
    steps_to_target,
    time_to_target_table,
    x_to_target,
)
from research_optim.report.runs import Run
from tests.report.runs_in_memory import make_run

SALSA_TABLE = Path(__file__).parent / "data" / "salsa_paper_table.csv"


# ------------------------------------------------------------------------------------------ the SaLSA table
@pytest.fixture
def salsa_table() -> pd.DataFrame:
    return pd.read_csv(SALSA_TABLE, comment="#", index_col="task")


def test_salsa_table_log_average_matches_the_printed_row(salsa_table):
    printed = {"adam": 0.0355, "sgd": 0.0930, "adam_sls": 0.0315, "sgd_sls": 0.134, "adam_salsa": 0.0148,
               "sgd_salsa": 0.0477}  # fmt: skip
    result = log_average(salsa_table)
    assert list(result.index) == list(printed)
    for column, value in printed.items():
        # Independent check: the 8th root of the product of the 8 per-task numbers.
        by_hand = math.prod(salsa_table[column]) ** (1 / 8)
        assert result[column] == pytest.approx(by_hand, rel=1e-12)
        # Within one unit of the last printed digit: adam (0.035599) and sgd (0.093063) are printed truncated
        # (0.0355, 0.0930) rather than rounded; the other four round exactly to the printed value.
        unit = 10.0 ** (math.floor(math.log10(value)) - 2)
        assert abs(result[column] - value) < unit, column
    for column in ["adam_sls", "sgd_sls", "adam_salsa", "sgd_salsa"]:
        assert float(f"{result[column]:.3g}") == printed[column]


def test_salsa_table_average_rank_is_what_its_numbers_give(salsa_table):
    # Rank by hand: 1 + (number strictly better) + 0.5 × (number tied), lower loss is better.
    by_hand = {column: 0.0 for column in salsa_table.columns}
    for _, row in salsa_table.iterrows():
        for column in salsa_table.columns:
            better = sum(row[other] < row[column] for other in salsa_table.columns)
            tied = sum(row[other] == row[column] for other in salsa_table.columns if other != column)
            by_hand[column] += (1 + better + 0.5 * tied) / len(salsa_table)
    # The paper prints 2.75 / 4.625 / 3.125 / 5.5 / 1.25 / 3.75. Its own per-task numbers give three different
    # columns: sgd 4.875 (printed 4.625, +0.25), sgd_sls 5.375 (printed 5.5, -0.125), sgd_salsa 3.625
    # (printed 3.75, -0.125); adam, adam_sls and adam_salsa agree.
    expected = {"adam": 2.75, "sgd": 4.875, "adam_sls": 3.125, "sgd_sls": 5.375, "adam_salsa": 1.25,
                "sgd_salsa": 3.625}  # fmt: skip
    assert by_hand == pytest.approx(expected, abs=1e-12)
    result = average_rank(salsa_table)
    assert result.to_dict() == pytest.approx(expected, abs=1e-12)


# ----------------------------------------------------------------------------------- log average and ranks
def test_log_average_is_the_geometric_mean_per_column():
    table = pd.DataFrame({"a": [1.0, 100.0], "b": [2.0, 8.0], "c": [0.1, 0.001]}, index=["t1", "t2"])
    assert log_average(table).to_dict() == pytest.approx({"a": 10.0, "b": 4.0, "c": 0.01}, rel=1e-12)


def test_log_average_missing_task_gives_nan_and_nonpositive_raises():
    table = pd.DataFrame({"a": [1.0, np.nan], "b": [4.0, 9.0]})
    result = log_average(table)
    assert math.isnan(result["a"]) and result["b"] == pytest.approx(6.0)
    with pytest.raises(ValueError, match="'a'"):
        log_average(pd.DataFrame({"a": [0.0, 1.0], "b": [1.0, 1.0]}))


def test_average_rank_ties_share_the_average_rank():
    table = pd.DataFrame({"a": [1.0, 3.0], "b": [1.0, 2.0], "c": [2.0, 1.0]}, index=["t1", "t2"])
    # t1: a and b tie for ranks 1-2 -> 1.5 each, c -> 3; t2: c 1, b 2, a 3.
    assert average_rank(table).to_dict() == pytest.approx({"a": 2.25, "b": 1.75, "c": 2.0})
    # Higher is better (accuracy): t1: c 1, a and b 2.5; t2: a 1, b 2, c 3.
    assert average_rank(table, lower_is_better=False).to_dict() == pytest.approx({"a": 1.75, "b": 2.25, "c": 2.0})


def test_average_rank_counts_a_missing_result_as_worst():
    table = pd.DataFrame({"a": [1.0, np.nan], "b": [2.0, 5.0], "c": [3.0, 4.0]})
    # Row 2: c 1, b 2, a (missing) 3.
    assert average_rank(table).to_dict() == pytest.approx({"a": 2.0, "b": 2.0, "c": 2.0})


# ----------------------------------------------------------------------------------------- final loss table
def test_final_loss_table_means_over_seeds_of_the_last_values():
    runs = [
        make_run("adamw", 0, [0, 10, 20], [3.0, 2.0, 1.0]),
        make_run("adamw", 1, [0, 10, 20], [3.0, 2.0, 3.0]),
        make_run("sgd", 0, [0, 10, 20], [3.0, 2.5, 2.0]),
        make_run("sgd", 0, [0, 10], [5.0, 4.0], task="vit/cifar10"),
    ]
    table = final_loss_table(runs)
    assert table.loc["mlp/digits", "adamw"] == pytest.approx(2.0)  # (1 + 3) / 2
    assert table.loc["mlp/digits", "sgd"] == pytest.approx(2.0)
    assert table.loc["vit/cifar10", "sgd"] == pytest.approx(4.0)
    assert math.isnan(table.loc["vit/cifar10", "adamw"])
    # last_k=2: adamw seeds (2+1)/2=1.5 and (2+3)/2=2.5 -> 2.0; sgd (2.5+2)/2 = 2.25.
    table2 = final_loss_table(runs, last_k=2)
    assert table2.loc["mlp/digits", "adamw"] == pytest.approx(2.0)
    assert table2.loc["mlp/digits", "sgd"] == pytest.approx(2.25)
    counts = final_loss_table(runs, agg="count")
    assert counts.loc["mlp/digits", "adamw"] == 2


def test_final_loss_table_keeps_swept_hyperparameters_apart():
    runs = [
        make_run("adamw", 0, [0, 10], [2.0, 1.0], hparams={"lr": 0.1}, varying={"lr": 0.1}),
        make_run("adamw", 0, [0, 10], [2.0, 1.5], hparams={"lr": 0.01}, varying={"lr": 0.01}),
    ]
    table = final_loss_table(runs)
    assert table.loc["mlp/digits", "adamw lr=0.1"] == 1.0
    assert table.loc["mlp/digits", "adamw lr=0.01"] == 1.5


# ---------------------------------------------------------------------------------------- time to target
def test_steps_to_target_first_logged_point_at_or_below():
    curve = pd.Series([5.0, 3.0, 1.0, 2.0], index=[0, 10, 20, 30])
    assert steps_to_target(curve, 2.0) == 20
    assert steps_to_target(curve, 3.0) == 10  # reaching exactly the target counts
    assert math.isnan(steps_to_target(curve, 0.5))
    accuracy = pd.Series([0.1, 0.5, 0.9], index=[0, 10, 20])
    assert steps_to_target(accuracy, 0.5, lower_is_better=False) == 10


def _speedup_runs() -> list[Run]:
    """Baseline seed s ends at T_s = 1 + 0.1 s (first reached at step 100, 1 s per step).

    "fast" reaches T_s at step 50 / 40 / 25 for seeds 0 / 1 / 2 at 1.5 s per step; before that its loss is
    T_s + 0.15, which is below another seed's target — so a wrong pairing would give another answer.
    "never" stays at T_s + 0.5.
    """
    base_steps = list(range(0, 101, 10))
    method_steps = list(range(0, 101, 5))
    runs = []
    for seed, reach in zip([0, 1, 2], [50, 40, 25]):
        target = 1.0 + 0.1 * seed
        runs.append(make_run("adamw", seed, base_steps, [target + (100 - s) / 100 for s in base_steps]))
        losses = [target + 0.15 if s < reach else (target if s == reach else target - 0.5) for s in method_steps]
        runs.append(make_run("fast", seed, method_steps, losses, times=[1.5 * s for s in method_steps]))
        runs.append(make_run("never", seed, method_steps, [target + 0.5] * len(method_steps)))
    return runs


def test_speedup_with_three_paired_seeds():
    table = speedup_vs_baseline(_speedup_runs(), baseline="adamw")
    steps = table.loc[("mlp/digits", "fast", "step")]
    # Per seed 100/50, 100/40, 100/25 = 2, 2.5, 4.
    assert steps["mean"] == pytest.approx(8.5 / 3)
    mean = 8.5 / 3
    assert steps["std"] == pytest.approx(math.sqrt(((2 - mean) ** 2 + (2.5 - mean) ** 2 + (4 - mean) ** 2) / 2))
    assert (steps["min"], steps["max"], steps["n"], steps["n_reached"]) == (2.0, 4.0, 3, 3)
    assert bool(steps["paired"])
    time = table.loc[("mlp/digits", "fast", "train_time")]
    # 100 s / (1.5 × 50, 1.5 × 40, 1.5 × 25) = 4/3, 5/3, 8/3.
    assert time["mean"] == pytest.approx((4 / 3 + 5 / 3 + 8 / 3) / 3)
    assert (time["min"], time["max"]) == pytest.approx((4 / 3, 8 / 3))
    assert ("mlp/digits", "adamw", "step") not in table.index


def test_speedup_of_a_method_that_never_reaches_the_target_is_zero():
    table = speedup_vs_baseline(_speedup_runs(), baseline="adamw")
    never = table.loc[("mlp/digits", "never", "step")]
    assert (never["mean"], never["max"], never["n"], never["n_reached"]) == (0.0, 0.0, 3, 0)
    per_seed = speedup_per_seed(_speedup_runs(), baseline="adamw", axes=("step",))
    assert per_seed[per_seed.optimizer == "never"]["method_x"].isna().all()


def test_speedup_without_shared_seeds_compares_every_pair():
    runs = [
        make_run("adamw", 0, [0, 10, 20], [3.0, 2.0, 1.0]),
        make_run("adamw", 1, [0, 10, 20], [3.0, 2.0, 2.0]),  # reaches its final 2.0 already at step 10
        make_run("fast", 7, [0, 5, 10], [3.0, 1.0, 0.5]),
    ]
    per_seed = speedup_per_seed(runs, baseline="adamw", axes=("step",))
    assert not per_seed["paired"].any()
    # vs seed 0: target 1.0, baseline 20, fast 5 -> 4; vs seed 1: target 2.0, baseline 10, fast 5 -> 2.
    assert sorted(per_seed["speedup"]) == [2.0, 4.0]


# ------------------------------------------------------------------------------------- performance profiles
@pytest.fixture
def two_task_times() -> pd.DataFrame:
    # Ratios to the best: task A 1, 2, never; task B 3, 1, 2.
    return pd.DataFrame({"m1": [10.0, 45.0], "m2": [20.0, 15.0], "m3": [np.nan, 30.0]}, index=["A", "B"])


def test_performance_profile_on_two_tasks_three_methods(two_task_times):
    taus = [1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0]
    profiles = performance_profiles(two_task_times, taus=taus)
    assert profiles["m1"].tolist() == [0.5, 0.5, 0.5, 0.5, 1.0, 1.0, 1.0]
    assert profiles["m2"].tolist() == [0.5, 0.5, 1.0, 1.0, 1.0, 1.0, 1.0]
    assert profiles["m3"].tolist() == [0.0, 0.0, 0.5, 0.5, 0.5, 0.5, 0.5]  # never solves A
    # Areas over [1, 4] / 3: m1 0.5·2 + 1·1 = 2; m2 0.5·1 + 1·2 = 2.5; m3 0.5·2 = 1.
    scores = integrated_profile_score(profiles, tau_max=4)
    assert scores.to_dict() == pytest.approx({"m1": 2 / 3, "m2": 2.5 / 3, "m3": 1 / 3})
    default_scores = integrated_profile_score(performance_profiles(two_task_times))
    assert default_scores.to_dict() == pytest.approx(scores.to_dict(), abs=0.011)


def test_profile_score_is_one_for_the_best_everywhere_and_zero_for_never():
    times = pd.DataFrame({"best": [1.0, 2.0], "never": [np.inf, np.nan]})
    scores = integrated_profile_score(performance_profiles(times))
    assert scores["best"] == pytest.approx(1.0)
    assert scores["never"] == 0.0
    with pytest.raises(ValueError, match="tau grid"):
        integrated_profile_score(performance_profiles(times, taus=[1.0, 2.0]), tau_max=4)


def test_time_to_target_table_median_with_failures_as_infinite():
    runs = [
        make_run("a", 0, [0, 10, 20], [3.0, 1.0, 0.5]),
        make_run("a", 1, [0, 10, 20], [3.0, 2.0, 1.0]),
        make_run("a", 2, [0, 10, 20], [3.0, 2.0, 2.0]),  # never reaches 1.0
    ]
    table = time_to_target_table(runs, {"mlp/digits": 1.0}, split="train", x="step")
    assert table.loc["mlp/digits", "a"] == 20.0  # median of 10, 20, inf


# ----------------------------------------------------------------------------------- curves and sensitivity
def test_mean_band_on_steps_and_on_interpolated_train_time():
    runs = [
        make_run("adamw", 0, [0, 10, 20], [4.0, 2.0, 1.0], times=[0.0, 1.0, 2.0]),
        make_run("adamw", 1, [0, 10, 20], [2.0, 2.0, 3.0], times=[0.0, 2.0, 4.0]),
    ]
    band = mean_band(runs, "loss", x="step")
    assert band["x"].tolist() == [0, 10, 20]
    assert band["mean"].tolist() == [3.0, 2.0, 2.0]
    assert band["std"].tolist() == pytest.approx([math.sqrt(2), 0.0, math.sqrt(2)])
    assert band["min"].tolist() == [2.0, 2.0, 1.0] and band["max"].tolist() == [4.0, 2.0, 3.0]
    # On train_time the common range is [0, 2]; seed 1 interpolated at t=1 is 2.0 and at t=2 is 2.0.
    timed = mean_band(runs, "loss", x="train_time", n_points=3)
    assert timed["x"].tolist() == [0.0, 1.0, 2.0]
    assert timed["mean"].tolist() == pytest.approx([3.0, 2.0, 1.5])
    assert set(timed["n"]) == {2}


def test_sensitivity_mean_and_std_over_seeds_per_value():
    runs = []
    for lr, finals in [(0.1, [1.0, 3.0]), (0.01, [0.5, 0.5])]:
        for seed, final in enumerate(finals):
            runs.append(make_run("adamw", seed, [0, 10], [5.0, final], hparams={"lr": lr}, varying={"lr": lr}))
    table = sensitivity(runs, param="lr")
    assert table["lr"].tolist() == [0.01, 0.1]
    assert table["optimizer"].unique().tolist() == ["adamw"]  # the swept lr is not part of the label
    assert table["mean"].tolist() == [0.5, 2.0]
    assert table["std"].tolist() == pytest.approx([0.0, math.sqrt(2)])
    assert table["n"].tolist() == [2, 2]
    with pytest.raises(ValueError, match="momentum"):
        sensitivity(runs, param="momentum")


# ------------------------------------------------------------------------------ smoothing and final values
def test_training_values_are_smoothed_and_evaluations_are_not():
    run = make_run("adamw", 0, [10, 20, 30, 40], [4.0, 1.0, 3.0, 2.0], val={"step": [20, 40], "loss": [5.0, 6.0]})
    assert run_final(run, last_k=2) == 2.5  # (3 + 2) / 2
    assert run_final(run, split="val", last_k=2) == 6.0  # an evaluation is used as logged
    # The smoothed curve (trailing mean of 2: 4, 2.5, 2, 2.5) first reaches 2.2 at step 30, not at the dip at 20.
    assert x_to_target(run, 2.2, "loss", "train", "step", last_k=2) == 30
    assert x_to_target(run, 2.2, "loss", "train", "step", last_k=1) == 20
    # A smoothed curve reaches its own final value (computed bit for bit the same way).
    noisy = make_run("adamw", 0, list(range(1, 40)), [1 / (1 + 0.1 * s) + 0.01 * (s % 3) for s in range(1, 40)])
    assert x_to_target(noisy, run_final(noisy, last_k=5), "loss", "train", "step", last_k=5) <= 39


def test_excess_loss_is_loss_minus_the_logged_optimum():
    optimum = 2.3125
    val = {"step": [20, 40], "loss": [3.0, 2.5], "gap_to_optimum": [3.0 - optimum, 2.5 - optimum]}
    run = make_run("adamw", 0, [10, 20, 30, 40], [4.0, 3.5, 3.0, 2.75], task="lm", val=val)
    assert run.optimum == optimum
    assert run.curve("excess_loss").to_dict() == {10: 4.0 - optimum, 20: 3.5 - optimum, 30: 3.0 - optimum,
                                                  40: 2.75 - optimum}
    assert final_loss_table([run], metric="excess_loss").loc["lm", "adamw"] == 2.75 - optimum
    assert final_loss_table([run], split="val", metric="excess_loss").loc["lm", "adamw"] == 2.5 - optimum
    plain = make_run("adamw", 0, [10], [1.0])
    assert plain.optimum is None and plain.curve("excess_loss").empty


def test_forward_passes_accumulate_the_line_search_trials():
    # Windows of 10 steps: 3 forwards per step, then 1.5; evaluations at the window ends read the same axis.
    run = make_run("salsa", 0, [10, 20], [2.0, 1.0], columns={"opt/forwards_per_step": [3.0, 1.5]},
                   val={"step": [20], "loss": [1.2]})
    assert run.curve("loss", x="forwards").to_dict() == {30.0: 2.0, 45.0: 1.0}
    assert run.curve("loss", "val", x="forwards").to_dict() == {45.0: 1.2}
    assert make_run("adamw", 0, [10, 20], [2.0, 1.0]).curve(x="forwards").index.tolist() == [10.0, 20.0]
    # A line search that logged only the last step's forwards has no forward-pass axis.
    assert make_run("sls", 0, [10], [1.0], columns={"opt/forwards": [4.0]}).curve(x="forwards").empty


# ------------------------------------------------------------------------------ comparison with intervals
def test_comparison_intervals_and_verdicts_by_hand():
    runs = _speedup_runs()
    table = comparison(runs, "adamw", axes=("step",)).set_index(["optimizer", "quantity"])
    # final: fast ends 0.5 below each baseline seed's target -> differences -0.5, -0.5, -0.5: a point interval.
    final = table.loc[("fast", "final")]
    assert (final["estimate"], final["low"], final["high"], final["n"]) == pytest.approx((-0.5, -0.5, -0.5, 3))
    assert final["verdict"] == "better"
    # step: per-seed speedups 2, 2.5, 4 -> the geometric mean and the t interval of the mean log speedup.
    logs = np.log([2.0, 2.5, 4.0])
    half = scipy_stats.t.ppf(0.975, 2) * logs.std(ddof=1) / math.sqrt(3)
    step = table.loc[("fast", "step")]
    assert step["estimate"] == pytest.approx(math.exp(logs.mean()))
    assert (step["low"], step["high"]) == pytest.approx((math.exp(logs.mean() - half), math.exp(logs.mean() + half)))
    assert step["low"] > 1 and step["verdict"] == "better"  # exp(0.95 - 0.87): faster at 95%
    # never: ends 0.5 above -> worse; never reaches the target -> no speedup interval, reached 0/3.
    assert table.loc[("never", "final"), "verdict"] == "worse"
    never = table.loc[("never", "step")]
    assert math.isnan(never["estimate"]) and never["verdict"] == "–" and (never["reached"], never["n"]) == (0, 3)


def test_comparison_needs_shared_seeds():
    runs = [make_run("adamw", 0, [10, 20], [2.0, 1.0]), make_run("lion", 1, [10, 20], [2.0, 0.5])]
    row = comparison(runs, "adamw").iloc[0]
    assert row["n"] == 0 and row["verdict"] == "–"
