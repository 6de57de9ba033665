"""Completed runs built in memory, for tests of the analysis, method and statistics code."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from research_optim.report.runs import Run


def make_run(
    optimizer: str,
    seed: int,
    steps: list[int],
    losses: list[float],
    task: str = "mlp/digits",
    times: list[float] | None = None,
    split: str = "train",
    hparams: dict | None = None,
    varying: dict | None = None,
    columns: dict[str, list] | None = None,
    val: dict[str, list] | None = None,
    config: dict | None = None,
    environment: dict | None = None,
) -> Run:
    """A completed run with one logged curve on ``split`` (train_time = step unless given).

    ``columns`` adds logged columns to those rows; ``val`` adds validation rows ({"step": [...], "loss": [...], ...});
    ``config`` adds top-level config keys next to ``seed`` and ``optimizer`` (= name + ``hparams``).
    """
    rows = pd.DataFrame(dict(step=steps, split=split, loss=losses,
                             train_time=times if times is not None else [float(s) for s in steps], **(columns or {})))
    if val is not None:
        rows = pd.concat([rows, pd.DataFrame({"split": "val", **val})], ignore_index=True)
    return Run(
        path=Path(f"/runs/{task}/{optimizer}/{seed}/{sorted((hparams or {}).items())}"),
        config={"seed": seed, "optimizer": {"name": optimizer, **(hparams or {})}, **(config or {})},
        metrics=rows.sort_values(["split", "step"], kind="stable").reset_index(drop=True),
        status="completed",
        error=None,
        summary={"status": "completed", "environment": environment or {}},
        optimizer=optimizer,
        task=task,
        seed=seed,
        run_id=None,
        sweep=None,
        group=None,
        hparams=dict(hparams or {}),
        varying=dict(varying or {}),
    )
