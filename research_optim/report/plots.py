"""Matplotlib figures of the report, returned as PNG bytes (small: the HTML inlines them)."""

from __future__ import annotations

import io
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")  # headless: reports are built on login nodes and in CI
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

DPI = 72
AXIS_LABELS = {"step": "step", "train_time": "train wall-clock (s)", "examples": "examples seen",
               "forwards": "forward passes"}


def to_png(fig: plt.Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def band_panels(panels: Sequence[tuple[str, str, pd.DataFrame]], title: str, log_y: bool = True) -> bytes:
    """One panel per (y label, x axis, mean_band frame of one task): a mean line and min–max band per optimizer.

    The y axis is logarithmic when ``log_y`` and every value of the panel is positive.
    """
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 3.6), squeeze=False)
    for ax, (ylabel, x, frame) in zip(axes[0], panels):
        for name, curve in frame.groupby("optimizer", sort=True):
            line, = ax.plot(curve["x"], curve["mean"], label=f"{name} (n={int(curve['n'].iloc[0])})", lw=1.4)
            ax.fill_between(curve["x"], curve["min"], curve["max"], color=line.get_color(), alpha=0.2, lw=0)
        ax.set_xlabel(AXIS_LABELS.get(x, x))
        ax.set_ylabel(ylabel)
        if log_y and (frame["min"] > 0).all():
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=7, loc="upper right")
    fig.suptitle(title, fontsize=10)
    return to_png(fig)


def profiles(profile: pd.DataFrame, scores: pd.Series, title: str, axis: str) -> bytes:
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for name in profile.columns:
        ax.step(profile.index, profile[name], where="post", label=f"{name} ({scores[name]:.3f})", lw=1.4)
    ax.set_xlabel(f"τ ({AXIS_LABELS.get(axis, axis)} to target / the best method's)")
    ax.set_ylabel("fraction of tasks")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, title="integrated score", title_fontsize=7)
    ax.set_title(title, fontsize=10)
    return to_png(fig)


def sensitivity(frame: pd.DataFrame, param: str, title: str, ylabel: str) -> bytes:
    """Final value against ``param`` (log x), one line per optimizer, ± std over seeds."""
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for name, rows in frame.groupby("optimizer", sort=True):
        rows = rows.sort_values(param)
        ax.errorbar(rows[param], rows["mean"], yerr=rows["std"].fillna(0), label=name, marker="o", ms=3,
                    capsize=2, lw=1.2)
    ax.set_xscale("log")
    if (frame["mean"] > 0).all():
        ax.set_yscale("log")
    ax.set_xlabel(param)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title(title, fontsize=10)
    return to_png(fig)


def heatmap(grid: pd.DataFrame, title: str, label: str, higher_is_better: bool = False) -> bytes:
    """A rows × columns grid of final values (``label``), annotated; the best cell framed."""
    values = grid.to_numpy(dtype=float)
    fig, ax = plt.subplots(figsize=(1.2 + 1.1 * grid.shape[1], 1.0 + 0.5 * grid.shape[0]))
    shown = np.log10(values) if np.nanmin(values) > 0 else values
    image = ax.imshow(shown, cmap="viridis" if higher_is_better else "viridis_r", aspect="auto")
    ax.set_xticks(range(grid.shape[1]), [str(c) for c in grid.columns], rotation=30, ha="right", fontsize=8)
    ax.set_yticks(range(grid.shape[0]), [str(i) for i in grid.index], fontsize=8)
    ax.set_xlabel(str(grid.columns.name))
    ax.set_ylabel(str(grid.index.name))
    for (i, j), value in np.ndenumerate(values):
        ax.text(j, i, f"{value:.3g}", ha="center", va="center", fontsize=7, color="w")
    if np.isfinite(values).any():
        best = np.nanargmax(values) if higher_is_better else np.nanargmin(values)
        i, j = np.unravel_index(best, values.shape)
        ax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, ec="red", lw=2))
    fig.colorbar(image, ax=ax, label=f"log10 {label}" if shown is not values else label)
    ax.set_title(title, fontsize=10)
    return to_png(fig)


def bars(frame: pd.DataFrame, title: str, label: str, higher_is_better: bool = False) -> bytes:
    """Horizontal bars of the mean final value ± std per configuration (``frame``: index label, mean, std)."""
    frame = frame.sort_values("mean", ascending=not higher_is_better)
    fig, ax = plt.subplots(figsize=(6.0, 0.8 + 0.28 * len(frame)))
    ax.barh(range(len(frame)), frame["mean"], xerr=frame["std"].fillna(0), color="tab:blue", alpha=0.7)
    ax.set_yticks(range(len(frame)), [str(i) for i in frame.index], fontsize=7)
    ax.invert_yaxis()
    if (frame["mean"] > 0).all():
        ax.set_xscale("log")
    ax.set_xlabel(f"{label} (mean ± std over seeds)")
    ax.grid(alpha=0.3, axis="x")
    ax.set_title(title, fontsize=10)
    return to_png(fig)
