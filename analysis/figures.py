"""Figures (seaborn on matplotlib), each saved as PNG and PDF.

- `schedules`: hyperparameters over training, one panel per hyperparameter, a line per seed
  (colour = method, or the initial value on a sequential palette for ptb-schedule-init); a
  PBT search's line is the schedule its selected trial's lineage followed (`load.schedule_rows`);
- `best_so_far`: best validation loss so far against compute (wall-clock and epochs), mean and
  range over seeds, one line per method, on a log axis zoomed on where the methods end;
- `final_hparams`: the final hyperparameters each method found, one panel per hyperparameter.
A hyperparameter searched on a log scale (weight decay) gets a log axis: the run store records
the search space (`log_hparams`). Missing data is drawn as a note inside the axes ("no data:
...") instead of failing. The same runs give the same files, byte for byte (`save`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display on clusters or CI
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib import ticker  # noqa: E402

from .tables import _order  # noqa: E402

__all__ = ["best_so_far", "final_hparams", "log_hparams", "method_palette", "save", "schedules"]

# no dates or versions in the files: the same runs give the same bytes
_METADATA = {".png": {"Software": None}, ".pdf": {"CreationDate": None, "Producer": None}}
JITTER_SEED = 0  # the strip plots' horizontal jitter


def save(fig: plt.Figure, out: Path, name: str) -> list[Path]:
    """`out/name.png` and `out/name.pdf`, reproducible byte for byte; closes the figure."""
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{name}.png", out / f"{name}.pdf"]
    for p in paths:
        fig.savefig(p, dpi=150, bbox_inches="tight", metadata=_METADATA[p.suffix])
    plt.close(fig)
    return paths


def log_hparams(space: Mapping[str, Mapping]) -> set[str]:
    """The hyperparameters searched on a log scale, as the run store recorded the space."""
    return {name for name, p in space.items() if p.get("log")}


def method_palette(
    methods: Iterable[str],
    paper: dict | None = None,
    inits: Mapping[str, Mapping[str, float]] | None = None,
) -> dict[str, tuple]:
    """One colour per method, the same in every figure, in the tables' order. Methods that
    differ only in their initial values (`inits`, e.g. stn-init05..stn-init90) get a
    sequential palette from the lowest to the highest initial value."""
    order = _order(methods, paper)
    start = {m: tuple(v.values()) for m, v in (inits or {}).items() if m in order and v}
    if start and len(start) == len(order):
        ranked = sorted(order, key=start.get)
        return dict(zip(ranked, sns.color_palette("viridis", len(ranked))))
    colours = sns.color_palette("tab10" if len(order) <= 10 else "husl", len(order))
    return dict(zip(order, colours))


def _hue(seen: set[str], palette: Mapping[str, tuple] | None) -> tuple[list[str], dict]:
    """The methods seen in the palette's order (others after, in the tables' order) and their
    colours: the palette's, or `method_palette`'s when it lacks one of them."""
    order = [m for m in palette or () if m in seen] + _order(seen - set(palette or ()))
    if not (palette and set(order) <= set(palette)):
        palette = method_palette(order)
    return order, {m: palette[m] for m in order}


def _grid(n: int, width: float = 3.6, height: float = 2.8):
    cols = min(n, 3) or 1
    rows = max(1, math.ceil(n / cols))
    if n == 1:  # one hyperparameter (Table 1's setting): one panel, wide enough to read
        width, height = 6.5, 3.6
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, list(axes.flat)


def _empty(ax, what: str) -> None:
    ax.text(0.5, 0.5, f"no data: {what}", ha="center", va="center", transform=ax.transAxes,
            color="0.4", wrap=True)  # fmt: skip


def _missing_note(fig, expected: Iterable[str], present: Iterable[str]) -> None:
    """Name the expected methods the figure has nothing of, so a gap is not read as a result."""
    missing = _order(set(expected) - set(present))
    if missing:
        fig.text(0.5, 0.0, "no data: " + ", ".join(missing), ha="center", va="top",
                 fontsize=9, color="0.35")  # fmt: skip


def _y_axis(ax, name: str, log: set[str]) -> None:
    """A log axis for log-scaled hyperparameters; else small values in scientific notation."""
    if name in log:
        ax.set_yscale("log")
    else:
        ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 4), useOffset=False)


def _legend_right(fig, ax, title: str) -> None:
    """The first panel's legend moved to the right of the figure (it covers no data there)."""
    leg = ax.get_legend()
    if leg is None:
        return
    handles, labels = leg.legend_handles, [t.get_text() for t in leg.get_texts()]
    leg.remove()
    fig.legend(handles, labels, title=title, loc="center left", bbox_to_anchor=(1.0, 0.5),
               frameon=False)  # fmt: skip


def _init_hue(data: pd.DataFrame, name: str, inits: Mapping[str, Mapping[str, float]]):
    """For runs started from different initial values: a label per method ("0.05") and a
    sequential palette from the lowest to the highest initial value."""
    start = {m: float(v[name]) for m, v in inits.items() if name in v}
    ordered = sorted(start, key=start.get)
    labels = {m: f"{start[m]:g}" for m in ordered}
    colours = sns.color_palette("viridis", len(ordered))
    palette = {labels[m]: c for m, c in zip(ordered, colours)}
    return data["method"].map(labels), [labels[m] for m in ordered], palette, start


def _training_values(data: pd.DataFrame) -> pd.DataFrame:
    """A run whose training rows log the values each step used (a noisy, periodic or replayed
    schedule) evaluates at its base values: its schedule is its training rows alone."""
    if "kind" not in data or not (data["kind"] == "train").any():
        return data
    varied = data.loc[data["kind"] == "train", ["method", "seed"]].drop_duplicates()
    keys = pd.MultiIndex.from_frame(data[["method", "seed"]])
    drop = keys.isin(pd.MultiIndex.from_frame(varied)) & (data["kind"] == "eval").to_numpy()
    return data[~drop]


def schedules(metrics: pd.DataFrame, hp_names: list[str], title: str, *,
              log: Iterable[str] = (), inits: Mapping[str, Mapping[str, float]] | None = None,
              palette: Mapping[str, tuple] | None = None):  # fmt: skip
    """Hyperparameter trajectories; `metrics` holds rows with columns "hparams.<name>".

    inits: method -> initial values (the experiment's `stn_inits`): runs are coloured by their
    initial value of each panel's hyperparameter, which is also marked at x = 0."""
    fig, axes = _grid(max(len(hp_names), 1))
    cols = [f"hparams.{n}" for n in hp_names]
    x = "epoch" if "epoch" in metrics else "step"
    log, legend_title, legend_ax = set(log), "method", None
    for i, (ax, name) in enumerate(zip(axes, hp_names or ["hyperparameters"])):
        col = cols[i] if cols else "-"
        data = metrics[metrics[col].notna()].copy() if col in metrics else metrics.iloc[0:0]
        data = _training_values(data)
        if data.empty:
            _empty(ax, name)
        else:
            data[col] = pd.to_numeric(data[col], errors="coerce")
            if inits and any(name in v for v in inits.values()):
                data["initial value"], order, pal, start = _init_hue(data, name, inits)
                legend_title, h = f"initial {name}", "initial value"
                ax.scatter([0] * len(start), [start[m] for m in start], marker="o",
                           c=[pal[f"{v:g}"] for v in start.values()], s=18, zorder=3)  # fmt: skip
            else:
                order, pal, h = *_hue(set(data["method"]), palette), "method"
            # in row order (sort=False): a PBT lineage jumps at one epoch, its two points kept
            # in order, so its steps are drawn as steps
            sns.lineplot(data=data, x=x, y=col, hue=h, hue_order=order, palette=pal,
                         units="seed", estimator=None, ax=ax, lw=1.0, sort=False,
                         legend=legend_ax is None)  # fmt: skip
            legend_ax = legend_ax or ax  # one legend: the first panel with data
            _y_axis(ax, name, log)
        ax.set(title=name, xlabel=x, ylabel=name + (" (log scale)" if name in log else ""))
    if legend_ax is not None:
        _legend_right(fig, legend_ax, legend_title)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def _curves(runs: pd.DataFrame, x: str) -> pd.DataFrame:
    """Per (method, seed) of a search: best validation loss so far against cumulative compute
    `x` ("spent_s" or "spent_epochs": what each trial trained itself, so a trial continuing
    another's checkpoint adds only its own share). Trials are taken in id order (the order the
    searcher proposed them)."""
    out = []
    for (method, seed), g in runs.sort_values("trial").groupby(["method", "seed"], sort=False):
        loss = g["val_loss"].where(g["status"] == "ok")
        best = loss.fillna(np.inf).cummin().replace(np.inf, np.nan)
        cost = g[x].fillna(0).cumsum()
        out.append(pd.DataFrame({"method": method, "seed": seed, "x": cost.values,
                                 "best val loss": best.values}))  # fmt: skip
    return pd.concat(out, ignore_index=True) if out else pd.DataFrame()


def _on_common_grid(data: pd.DataFrame) -> pd.DataFrame:
    """Per method, every seed's step curve on the union of its seeds' observation points, so
    that seeds average into a band and every real observation keeps its marker."""
    rows = []
    for method, g in data.groupby("method"):
        grid = np.unique(g["x"].values)
        for seed, s in g.groupby("seed"):
            s = s.sort_values("x")
            idx = np.searchsorted(s["x"].values, grid, side="right") - 1
            vals = np.where(idx >= 0, s["best val loss"].values[np.clip(idx, 0, None)], np.nan)
            rows.append(pd.DataFrame({"method": method, "seed": seed, "x": grid,
                                      "best val loss": vals}))  # fmt: skip
    return pd.concat(rows, ignore_index=True)


def _step_band(ax, g: pd.DataFrame, label: str, colour) -> np.ndarray:
    """Mean over seeds as a step line with a marker per observation, from where every seed has
    one (before, a mean of some seeds would jump as the others arrive); the range over seeds
    (lowest to highest: never below zero) as a faint band that follows the steps, and as a bar
    at the last point. Returns the mean curve."""
    wide = g.pivot_table(index="x", columns="seed", values="best val loss", dropna=False)
    full = wide.dropna()
    wide = full if len(full) else wide  # a seed with no finished run: the others' mean
    xs = wide.index.to_numpy(dtype=float)
    mean = wide.mean(axis=1).to_numpy()
    ax.step(xs, mean, where="post", color=colour, lw=1.5, marker="o", ms=3.5, label=label)
    if wide.shape[1] > 1:
        low, high = wide.min(axis=1).to_numpy(), wide.max(axis=1).to_numpy()
        ax.fill_between(xs, low, high, step="post", color=colour, alpha=0.1, lw=0)
        err = [[mean[-1] - low[-1]], [high[-1] - mean[-1]]]
        ax.errorbar(xs[-1], mean[-1], yerr=err, color=colour, capsize=3, lw=1)
    return mean


def _zoom(ax, finals: list[float], lows: list[float]) -> None:
    """A log loss axis from just under the lowest value to a margin above the highest final
    value of any method: where the methods end, and differ, fills the panel (early trials of a
    search, far above, leave it at the top)."""
    values = [v for v in finals + lows if np.isfinite(v) and v > 0]
    if not values:
        return
    ax.set_yscale("log")
    low, high = min(values), max(v for v in finals if np.isfinite(v) and v > 0)
    ax.set_ylim(low / 1.15, high * 2.0)
    plain = ticker.FuncFormatter(lambda v, _: f"{v:g}")  # 0.2, not 2 x 10^-1
    ax.yaxis.set_major_formatter(plain)
    ax.yaxis.set_minor_formatter(plain)


def best_so_far(
    runs: pd.DataFrame,
    metrics: pd.DataFrame,
    title: str,
    *,
    expected: Iterable[str] = (),
    palette: Mapping[str, tuple] | None = None,
):
    """Best validation loss vs wall-clock seconds and vs epochs, mean and range over seeds
    (at a point before some seed's first observation, the mean of the seeds observed so far).

    Single runs (STN, variants) contribute their evaluation curve from the metrics rows with
    "val_loss" and "wall_s"/"epoch"; searches contribute one point per trial."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    single, present = runs[runs["trial"].isna()], set()
    for ax, x, mx in [(axes[0], "spent_s", "wall_s"), (axes[1], "spent_epochs", "epoch")]:
        parts = [_curves(runs[runs["trial"].notna()], x)]
        if len(metrics) and {"val_loss", mx} <= set(metrics):
            ev = metrics[metrics["trial"].isna() & metrics["val_loss"].notna()]
            ev = ev[ev["method"].isin(single["method"])]
            for (method, seed), g in ev.groupby(["method", "seed"]):
                best = g["val_loss"].cummin().values
                parts.append(pd.DataFrame({"method": method, "seed": seed, "x": g[mx].values,
                                           "best val loss": best}))  # fmt: skip
        parts = [p for p in parts if len(p)]
        data = pd.concat(parts, ignore_index=True).dropna(subset=["best val loss"]) if parts \
            else pd.DataFrame()  # fmt: skip
        if data.empty:
            _empty(ax, "no finished runs")
        else:
            grid = _on_common_grid(data)
            order, colours = _hue(set(grid["method"]), palette)
            finals, lows = [], []
            for method in order:
                g = grid[grid["method"] == method]
                finals.append(float(_step_band(ax, g, method, colours[method])[-1]))
                lows.append(float(g["best val loss"].min()))
            _zoom(ax, finals, lows)
            present |= set(order)
        unit = "seconds" if x == "spent_s" else "epochs"
        summed = " (a search: summed over its trials)" if runs["trial"].notna().any() else ""
        against = "against wall-clock time" if unit == "seconds" else "against epochs"
        ax.set(xlabel=f"compute: {unit}{summed}", ylabel="best validation loss so far (log)",
               title=against)  # fmt: skip
    if present:
        axes[0].legend(title="method")
        _legend_right(fig, axes[0], "method (band: range over seeds)")
    fig.suptitle(title)
    fig.tight_layout()
    _missing_note(fig, expected, present)
    return fig


def _strip(ax, data: pd.DataFrame, col: str, order: list[str], palette: Mapping[str, tuple]):
    """One point per seed at its method's tick, jittered sideways by a seeded generator."""
    rng = np.random.default_rng(JITTER_SEED)
    for i, method in enumerate(order):
        y = data.loc[data["method"] == method, col].to_numpy(dtype=float)
        ax.scatter(i + rng.uniform(-0.15, 0.15, len(y)), y, s=25, color=palette[method], zorder=3)
    ax.set_xlim(-0.5, len(order) - 0.5)


def final_hparams(
    finals: pd.DataFrame,
    title: str,
    *,
    log: Iterable[str] = (),
    expected: Iterable[str] = (),
    palette: Mapping[str, tuple] | None = None,
):
    """The hyperparameters each method ended with (a search: its selected trial), one point per
    seed, one panel per hyperparameter."""
    cols = sorted(c for c in finals.columns if c.startswith("hparams."))
    finals = finals[finals["status"] == "ok"] if len(finals) else finals
    log = set(log)
    fig, axes = _grid(max(len(cols), 1), width=3.4, height=3.0)
    for ax, col in zip(axes, cols or ["-"]):
        name = col[len("hparams.") :] if col != "-" else "hyperparameters"
        data = finals[finals[col].notna()] if col in finals else finals.iloc[0:0]
        if data.empty:
            _empty(ax, name)
        else:
            order, pal = _hue(set(data["method"]), palette)
            _strip(ax, data, col, order, pal)
            # anchored at their tick, so that long names don't overlap
            ax.set_xticks(range(len(order)), order, rotation=45, ha="right", rotation_mode="anchor")
            _y_axis(ax, name, log)
        ax.set(title=name, xlabel="method", ylabel=name + (" (log scale)" if name in log else ""))
    fig.suptitle(title)
    fig.tight_layout()
    _missing_note(fig, expected, set(finals["method"]) if len(finals) else ())
    return fig
