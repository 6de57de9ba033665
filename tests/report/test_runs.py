"""Loading run directories: discovery, resumed runs, failures kept as problems, varying hyperparameters."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from research_optim.report.analysis import final_loss_table
from research_optim.report.runs import find_runs, load_run, load_runs


def write_run(
    directory: Path,
    optimizer: str = "adamw",
    lr: float = 1e-3,
    seed: int = 0,
    metrics: list[dict] | None = None,
    status: str | None = "completed",
    error: str | None = None,
    extra_config: str = "",
) -> Path:
    """Write a run directory the way the training loop does; ``status=None`` leaves summary.json out."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.yaml").write_text(
        f"seed: {seed}\n"
        f"optimizer:\n  name: {optimizer}\n  _target_: torch.optim.AdamW\n  _partial_: true\n"
        f"  lr: {lr}\n  betas: [0.9, 0.999]\n  weight_decay: 0.0\n"
        "model:\n  name: mlp\ndata:\n  name: digits\n"
        f"run:\n  id: {optimizer}-{seed}-{lr}\n  sweep: lr_sweep\n"
        "train:\n  steps: 30\n" + extra_config
    )
    if metrics is not None:
        (directory / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in metrics))
    if status is not None:
        (directory / "summary.json").write_text(json.dumps({"status": status, "error": error, "final": {}}))
    return directory


def point(step: int, loss: float, split: str = "train", **extra) -> dict:
    return dict(step=step, split=split, examples=8 * step, train_time=0.1 * step, eval_time=0.0, loss=loss, **extra)


@pytest.fixture
def source(tmp_path: Path) -> Path:
    root = tmp_path / "multirun"
    curve = [point(0, 2.0), point(10, 1.0), point(10, 1.5, split="val", accuracy=0.5)]
    ok = write_run(root / "0", lr=1e-3, seed=0, metrics=curve)
    (ok / ".hydra").mkdir()
    (ok / ".hydra" / "config.yaml").write_text("seed: 0\n")  # Hydra's copy: not a run
    (ok / "checkpoints").mkdir()
    write_run(root / "1", lr=1e-2, seed=0, metrics=[point(0, 2.0), point(10, 0.5)])
    write_run(root / "2", lr=1e-2, seed=1, metrics=[point(0, 2.0)], status="failed", error="RuntimeError: OOM")
    # Resumed: logged up to step 30, restarted from the step-10 checkpoint, logged 20, 30 and 40 again.
    resumed = [point(0, 2.0), point(10, 1.0), point(20, 0.9), point(30, 0.8),
               point(20, 0.7), point(30, 0.6), point(40, 0.5)]  # fmt: skip
    write_run(root / "deep" / "nested" / "3", lr=1e-3, seed=1, metrics=resumed)
    write_run(root / "4", lr=1e-3, seed=2, metrics=[point(0, 2.0)], status=None)  # killed: no summary
    write_run(root / "5", lr=1e-3, seed=3, metrics=None, status=None)  # never started
    write_run(root / "6", lr=1e-3, seed=4, metrics=[], status="completed")  # completed, empty metrics
    (root / "7").mkdir()
    (root / "7" / "config.yaml").write_text("seed: [unclosed\n")  # corrupt
    write_run(root / "8", optimizer="lion", lr=1e-4, seed=0, metrics=[point(0, 3.0)], status="diverged",
              error="loss is nan")  # fmt: skip
    return root


def test_find_runs_at_any_depth_skipping_hidden_and_nested(source):
    found = [str(p.relative_to(source)) for p in find_runs(source)]
    assert found == ["0", "1", "2", "4", "5", "6", "7", "8", "deep/nested/3"]
    assert find_runs(source / "0") == [source / "0"]  # a run directory is its own source


def test_load_run_reads_labels_and_metrics(source):
    run = load_run(source / "0")
    assert (run.optimizer, run.task, run.seed, run.status, run.error) == ("adamw", "mlp/digits", 0, "completed", None)
    assert (run.run_id, run.sweep) == ("adamw-0-0.001", "lr_sweep")
    assert run.hparams == {"lr": 1e-3, "betas": [0.9, 0.999], "weight_decay": 0.0}
    assert run.curve("loss", "train").to_dict() == {0: 2.0, 10: 1.0}
    assert run.curve("accuracy", "val").to_dict() == {10: 0.5}
    assert run.curve("loss", "train", x="train_time").index.tolist() == [0.0, 1.0]


def test_resumed_run_keeps_the_last_line_per_step(source):
    run = load_run(source / "deep" / "nested" / "3")
    assert run.curve("loss").to_dict() == {0: 2.0, 10: 1.0, 20: 0.7, 30: 0.6, 40: 0.5}
    assert run.metrics["step"].tolist() == [0, 10, 20, 30, 40]


def test_load_runs_keeps_every_unusable_run_as_a_problem(source):
    loaded = load_runs(source, progress=False)
    assert sorted(r.path.name for r in loaded.runs) == ["0", "1", "3"]
    problems = {p.path.name: (p.status, p.error) for p in loaded.problems}
    assert set(problems) == {"2", "4", "5", "6", "7", "8"}
    assert problems["2"] == ("failed", "RuntimeError: OOM")
    assert problems["4"][0] == "unfinished"
    assert problems["5"][0] == "missing"
    assert problems["6"][0] == "no_metrics"
    assert problems["7"][0] == "unreadable" and "config.yaml" in problems["7"][1]
    assert problems["8"] == ("diverged", "loss is nan")
    assert len(loaded.problems_table()) == 6
    assert len(loaded) == 3 and [r.path.name for r in loaded] == [r.path.name for r in loaded.runs]


def test_load_runs_finds_the_varying_hyperparameters(source):
    loaded = load_runs(source, progress=False)
    by_name = {r.path.name: r for r in loaded.runs}
    # lr differs between the adamw runs; betas and weight_decay do not.
    assert by_name["0"].varying == {"lr": 1e-3}
    assert by_name["1"].varying == {"lr": 1e-2}
    assert by_name["1"].label == "adamw lr=0.01"
    table = final_loss_table(loaded)
    # lr=0.001: seeds 0 and 1 end at 1.0 and 0.5 (the resumed run's last line) -> 0.75; lr=0.01: 0.5.
    assert table.loc["mlp/digits", "adamw lr=0.001"] == pytest.approx(0.75)
    assert table.loc["mlp/digits", "adamw lr=0.01"] == pytest.approx(0.5)


def test_task_from_config_and_partial_last_line(tmp_path):
    run_dir = write_run(tmp_path / "r", metrics=[point(0, 2.0), point(10, 1.0)], extra_config="task: glue/mnli\n")
    with (run_dir / "metrics.jsonl").open("a") as f:
        f.write('{"step": 20, "split": "tr')  # the process died mid-write
    run = load_run(run_dir)
    assert run.task == "glue/mnli"
    assert run.curve().to_dict() == {0: 2.0, 10: 1.0}


def test_corrupt_line_in_the_middle_is_an_error(tmp_path):
    run_dir = write_run(tmp_path / "r", metrics=[point(0, 2.0)])
    (run_dir / "metrics.jsonl").write_text('{"step": 0, "split": "train", "loss": 1.0}\nnot json\n{"step": 1}\n')
    with pytest.raises(ValueError, match="metrics.jsonl:2"):
        load_run(run_dir)


def test_load_runs_shows_a_progress_bar_for_many_runs(tmp_path, capsys):
    for i in range(21):
        write_run(tmp_path / str(i), seed=i, metrics=[point(0, 1.0)])
    loaded = load_runs(tmp_path, progress=True)
    assert len(loaded) == 21
    assert "loading runs" in capsys.readouterr().err


def test_settings_are_the_config_without_identity_seed_and_logging_keys(tmp_path):
    extra = "  log_every: 10\n  eval_every: 15\n  progress: false\ncluster:\n  launcher: local\nlogger:\n  project: p\n"
    run = load_run(write_run(tmp_path / "r", metrics=[point(0, 2.0)], extra_config=extra))
    assert run.settings == {"optimizer.name": "adamw", "optimizer._target_": "torch.optim.AdamW",
                            "optimizer._partial_": True, "optimizer.lr": 1e-3, "optimizer.betas": [0.9, 0.999],
                            "optimizer.weight_decay": 0.0, "model.name": "mlp", "data.name": "digits",
                            "train.steps": 30}
    assert run.environment == {} and run.optimum is None
