"""Figures (seaborn on matplotlib), each saved as PNG and PDF.

- `schedules`: hyperparameters over training, one panel per hyperparameter, a line per seed
  (colour = method or initial value);
- `best_so_far`: best validation loss so far against compute (wall-clock and epochs), mean and
  band over seeds, one line per method;
- `final_hparams`: the final hyperparameters each method found, one panel per hyperparameter.
Missing data is drawn as a note inside the axes instead of failing.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display on clusters or CI
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from .tables import _order  # noqa: E402

__all__ = ["best_so_far", "final_hparams", "schedules", "save"]


def save(fig: plt.Figure, out: Path, name: str) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{name}.png", out / f"{name}.pdf"]
    for p in paths:
        fig.savefig(p, dpi=150, bbox_inches="tight")
    plt.close(fig)
    return paths


def _grid(n: int, width: float = 3.6, height: float = 2.8):
    cols = min(n, 4) or 1
    rows = max(1, math.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, list(axes.flat)


def _empty(ax, what: str) -> None:
    ax.text(0.5, 0.5, f"no data: {what}", ha="center", va="center", transform=ax.transAxes,
            color="0.4")


def schedules(metrics: pd.DataFrame, hp_names: list[str], title: str, hue: str = "method"):
    """Hyperparameter trajectories; `metrics` holds rows with columns "hparams.<name>"."""
    fig, axes = _grid(max(len(hp_names), 1))
    cols = [f"hparams.{n}" for n in hp_names]
    have = metrics.dropna(subset=[c for c in cols if c in metrics], how="all") if len(
        metrics) else metrics
    x = "epoch" if "epoch" in have else "step"
    for ax, name, col in zip(axes, hp_names or ["hyperparameters"], cols or ["-"]):
        data = have[have[col].notna()] if col in have else have.iloc[0:0]
        if data.empty:
            _empty(ax, name)
        else:
            sns.lineplot(data=data, x=x, y=col, hue=hue, units="seed", estimator=None, ax=ax,
                         lw=1.0, hue_order=_order(set(data[hue])), legend=ax is axes[0])
        ax.set(title=name, xlabel=x, ylabel="value")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def _curves(runs: pd.DataFrame, x: str) -> pd.DataFrame:
    """Per (method, seed): best validation loss so far against cumulative compute `x`.

    Trials of a search are taken in id order (the order the searcher proposed them); the
    compute of a search is the sum over its trials. A single run contributes its end point."""
    out = []
    for (method, seed), g in runs.sort_values("trial", na_position="first").groupby(
            ["method", "seed"], sort=False):
        loss = g["val_loss"].where(g["status"] == "ok")
        best = loss.fillna(np.inf).cummin().replace(np.inf, np.nan)
        cost = g[x].fillna(0).cumsum()
        out.append(pd.DataFrame({"method": method, "seed": seed, x: cost.values,
                                 "best val loss": best.values}))
    return pd.concat(out, ignore_index=True) if out else pd.DataFrame()


def best_so_far(runs: pd.DataFrame, metrics: pd.DataFrame, title: str):
    """Best validation loss vs wall-clock seconds and vs epochs, mean and band over seeds.

    Single runs (STN) contribute their evaluation curve from metrics.jsonl when it has
    "val_loss" rows with "wall_s"/"epoch"; searches contribute one point per trial."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    single = runs[runs["trial"].isna()]
    for ax, x, mx in [(axes[0], "wall_s", "wall_s"), (axes[1], "epochs", "epoch")]:
        parts = [_curves(runs[runs["trial"].notna()], x)]
        if len(metrics) and {"val_loss", mx} <= set(metrics):
            ev = metrics[metrics["trial"].isna() & metrics["val_loss"].notna()]
            ev = ev[ev["method"].isin(single["method"])]
            for (method, seed), g in ev.groupby(["method", "seed"]):
                parts.append(pd.DataFrame({"method": method, "seed": seed, x: g[mx].values,
                                           "best val loss": g["val_loss"].cummin().values}))
        data = pd.concat([p for p in parts if len(p)], ignore_index=True) if any(
            len(p) for p in parts) else pd.DataFrame()
        if data.empty:
            _empty(ax, "finished runs")
        else:
            # per method, the union of its seeds' observation points, so seeds average into a
            # band and every real observation keeps its marker
            rows = []
            for method, g in data.groupby("method"):
                grid = np.unique(g[x].values)
                for seed, s in g.groupby("seed"):
                    s = s.sort_values(x)
                    idx = np.searchsorted(s[x].values, grid, side="right") - 1
                    vals = np.where(idx >= 0, s["best val loss"].values[np.clip(idx, 0, None)],
                                    np.nan)
                    rows.append(pd.DataFrame({"method": method, "seed": seed, x: grid,
                                              "best val loss": vals}))
            grid_data = pd.concat(rows, ignore_index=True)
            sns.lineplot(data=grid_data, x=x, y="best val loss", hue="method",
                         hue_order=_order(set(grid_data["method"])), errorbar="sd", ax=ax,
                         marker="o", markersize=4, drawstyle="steps-post")
        ax.set(xlabel="compute: seconds (a search: summed over its trials)" if x == "wall_s"
               else "compute: epochs (a search: summed over its trials)",
               ylabel="best validation loss so far")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def final_hparams(finals: pd.DataFrame, title: str):
    """The hyperparameters each method ended with, one point per seed."""
    cols = sorted(c for c in finals.columns if c.startswith("hp."))
    fig, axes = _grid(max(len(cols), 1), width=3.2, height=2.6)
    for ax, col in zip(axes, cols or ["-"]):
        data = finals[finals[col].notna()] if col in finals else finals.iloc[0:0]
        if data.empty:
            _empty(ax, col)
        else:
            sns.stripplot(data=data, x="method", y=col, order=_order(set(data["method"])),
                          ax=ax, size=5)
            ax.tick_params(axis="x", rotation=45)
        ax.set(title=col[3:] if col != "-" else "hyperparameters", xlabel="method",
               ylabel="value")
    fig.suptitle(title)
    fig.tight_layout()
    return fig
