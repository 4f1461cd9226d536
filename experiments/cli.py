"""`python -m experiments list | show | run | status | download` (the contract of DESIGN.md).

A user mistake (unknown experiment, method or --set key, a value of the wrong type or not
finite, an empty seed list, a negative budget, an unknown launcher, a setting in the wrong
section, a missing or malformed data file, a runs folder that cannot be written, a search that
another process drives) prints one line `error: ...` and exits with code 2 before anything is
written. An error of the machine (a full disk) is one line too, with code 1.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

__all__ = ["main"]

_OUR_PACKAGES = ("stn", "baselines", "experiments", "slurm", "analysis")


class UsageError(Exception):
    """A command-line mistake (argparse's, reported in one line)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def _csv(kind: str, cast: type) -> Any:
    def parse(text: str) -> tuple:
        items = [x.strip() for x in text.split(",") if x.strip()]
        if not items:
            raise argparse.ArgumentTypeError(f"the {kind} list is empty")
        try:
            return tuple(cast(x) for x in items)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{kind}s must be comma-separated {cast.__name__}s, got {text!r}"
            ) from None

    return parse


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m experiments", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    sub.add_parser("list", help="the experiments and what each reproduces")

    def spec_args(q: argparse.ArgumentParser) -> None:
        q.add_argument("name", help="an experiment (see `list`)")
        q.add_argument(
            "--set",
            dest="overrides",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="override a field, e.g. task.epochs=3",
        )
        q.add_argument("--smoke", action="store_true", help="the few-second smoke variant")

    spec_args(sub.add_parser("show", help="print the resolved spec as JSON"))
    run = sub.add_parser("run", help="run (or resume) an experiment's methods and seeds")
    spec_args(run)
    run.add_argument("--methods", type=_csv("method", str), help="e.g. stn,random")
    run.add_argument("--seeds", type=_csv("seed", int), help="e.g. 0,1,2")
    run.add_argument("--launcher", help="debug | local | slurm (default: the spec's, local)")
    run.add_argument("--runs-dir", default="runs", type=Path)
    run.add_argument("--wandb", help="off | offline | online (default off; offline on slurm)")
    st = sub.add_parser("status", help="progress of an experiment's runs")
    st.add_argument("name")
    st.add_argument("--runs-dir", default="runs", type=Path)
    dl = sub.add_parser("download", help="fetch and check a dataset")
    dl.add_argument("dataset", help="cifar10 | ptb")
    dl.add_argument("--data-dir", required=True, type=Path)
    return p


def _cmd_list(args: argparse.Namespace) -> None:
    from .registry import EXPERIMENTS

    width = max(len(n) for n in EXPERIMENTS)
    for name, exp in EXPERIMENTS.items():
        print(f"{name:<{width}}  {exp.reproduces}  [{', '.join(exp.methods)}]")


def _cmd_show(args: argparse.Namespace) -> None:
    from .registry import get
    from .runner import resolve
    from .spec import to_dict

    exp = resolve(get(args.name), smoke=args.smoke, overrides=args.overrides)
    print(json.dumps(to_dict(exp), indent=2))


def _cmd_run(args: argparse.Namespace) -> None:
    from .registry import get
    from .runner import run_experiment, wandb_offline_dirs

    results = run_experiment(
        get(args.name),
        args.methods,
        args.seeds,
        args.runs_dir,
        launcher=args.launcher,
        wandb=args.wandb,
        smoke=args.smoke,
        overrides=args.overrides,
    )
    print(_results_table(results))
    offline = wandb_offline_dirs(args.runs_dir, args.name)
    if offline and args.wandb in (None, "offline"):
        where = args.runs_dir / args.name
        print(
            f"{len(offline)} W&B runs were logged offline; upload them with:\n"
            f"  wandb sync $(find {where} -type d -name 'offline-run-*')"
        )


def _results_table(results: dict[tuple[str, int], dict[str, Any]]) -> str:
    """One line per (method, seed): status, losses and, for a failure or divergence, why."""
    lines = [f"{'method':<22} {'seed':>4}  {'status':<9} {'val_loss':>10} {'test_loss':>10}"]
    from .store import verdict

    for (method, seed), outcome in results.items():
        rec = verdict(outcome)  # a search: its selected trial
        cells = [_num(rec.get(k)) for k in ("val_loss", "test_loss")]
        why = rec["reason"] if rec.get("status") != "ok" else None
        line = f"{method:<22} {seed:>4}  {rec.get('status', '?'):<9} {cells[0]} {cells[1]}"
        lines.append(line + (f"  {why}" if why else ""))
    return "\n".join(lines)


def _num(x: Any) -> str:
    number = isinstance(x, (int, float)) and not isinstance(x, bool)
    return f"{x:>10.4f}" if number else f"{'-':>10}"


def _cmd_status(args: argparse.Namespace) -> None:
    from .registry import get
    from .status import format_status, status

    get(args.name)
    print(format_status(status(args.runs_dir, args.name)))


def _cmd_download(args: argparse.Namespace) -> None:
    from .data.download import download

    print(download(args.dataset, args.data_dir))


def _user_error(e: BaseException) -> bool:
    """Errors our packages raise for user mistakes: ValueError subclasses defined here."""
    return isinstance(e, ValueError) and type(e).__module__.split(".")[0] in _OUR_PACKAGES


def main(argv: Sequence[str] | None = None) -> int:
    commands = {
        "list": _cmd_list,
        "show": _cmd_show,
        "run": _cmd_run,
        "status": _cmd_status,
        "download": _cmd_download,
    }
    try:
        args = _parser().parse_args(argv)
        commands[args.command](args)
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    except OSError as e:  # the machine's, not the code's: a full disk, a folder gone
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
        return 1
    except Exception as e:
        if not _user_error(e):
            raise
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    return 0
