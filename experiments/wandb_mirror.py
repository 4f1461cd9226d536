"""Mirror a run's records to Weights & Biases. A mirror only: the run folder is the record.

    mirror = Mirror("offline", project="digits-mlp", group="stn/seed0", job_type="stn",
                    name="stn-seed0", run_id=run_id_for("digits-mlp", "stn", 0), config=spec,
                    tags=["smoke"], dir=run_folder)
    mirror.log({"val_loss": 0.4, "lr": 0.1}, step=100)
    mirror.summary(best_val_loss=0.38)
    mirror.finish()

Modes: "off" imports nothing and does nothing; "offline" writes `dir/wandb/offline-run-*/` for a
later `wandb sync`; "online" resumes the run with the same deterministic id ("allow").

W&B must never fail or stall a run: init is bounded in time, no API key means no attempt, and
any W&B error logs one warning and turns the mirror (and every later one of that mode in this
process, so a search of 100 trials does not wait 100 times) into a no-op.
"""

from __future__ import annotations

import hashlib
import json
import logging
import netrc
import os
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

__all__ = ["MODES", "Mirror", "has_api_key", "run_id_for"]

log = logging.getLogger(__name__)

MODES = ("off", "offline", "online")
STEP = "step"  # our own x axis: W&B drops steps at or below a resumed run's last `_step`

# mode -> why it failed, for the rest of the process: later mirrors skip without waiting.
_FAILED: dict[str, str] = {}


def run_id_for(experiment: str, method: str, seed: int, trial: int | None = None) -> str:
    """A W&B run id fixed by (experiment, method, seed, trial): a rerun resumes the same run."""
    key = f"/{experiment}/{method}/seed{seed}/trial{trial}"  # ids of earlier runs stay valid
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def has_api_key() -> bool:
    """Whether wandb could find credentials without prompting: the environment, or a netrc
    entry for the server (which is where `wandb login` stores the key)."""
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    url = urlsplit(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai"))
    path = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    try:
        entries = netrc.netrc(path)
    except (OSError, netrc.NetrcParseError):
        return False
    return any(entries.authenticators(host) for host in {url.netloc, url.hostname} if host)


def _plain(config: dict[str, Any]) -> dict[str, Any]:
    """JSON types only (paths and other objects become strings), as W&B's config wants."""
    return json.loads(json.dumps(config, default=str))


def _min_is_best(key: str) -> bool:
    """Losses and perplexities, except test ones (the best test value would peek at test)."""
    return any(w in key for w in ("loss", "ppl", "perplexity")) and "test" not in key


def _drop_foreign_service() -> None:
    """Forget a W&B service another process started (its token in WANDB_SERVICE, inherited by
    a CLI run from a notebook or test process, then by its SLURM jobs): writing through it ties
    this run's records to that process's lifetime, or fails on another node. Each process then
    starts its own service."""
    token = os.environ.get("WANDB_SERVICE", "")
    parts = token.split("-", 2)  # "<format>-<pid of the process that started it>-<address>"
    if token and not (len(parts) == 3 and parts[1] == str(os.getpid())):
        del os.environ["WANDB_SERVICE"]


class Mirror:
    """One run mirrored to W&B; every method is safe to call whatever happened before."""

    def __init__(
        self,
        mode: str,
        *,
        project: str,
        group: str,
        job_type: str,
        name: str,
        run_id: str,
        config: dict[str, Any],
        tags: list[str],
        dir: str | Path,
        init_timeout: float = 30.0,
        finish_timeout: float = 60.0,
    ):
        if mode not in MODES:
            raise ValueError(f"unknown W&B mode {mode!r}; valid: {', '.join(MODES)}")
        self.mode = mode
        self.run: Any = None  # the wandb Run, or None when mirroring is off or failed
        self._defined: set[str] = set()
        if mode == "off" or mode in _FAILED:
            return
        if mode == "online" and not has_api_key():
            self._fail("no W&B API key (set WANDB_API_KEY or run `wandb login`)")
            return
        try:
            self.run = self._init(
                project=project,
                group=group,
                job_type=job_type,
                name=name,
                id=run_id,
                config=_plain(config),
                tags=list(tags),
                dir=Path(dir),
                init_timeout=init_timeout,
                finish_timeout=finish_timeout,
            )
        except Exception as e:  # CommError, timeouts, bad settings: all mean "no mirror"
            self._fail(f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")

    def _init(self, *, dir: Path, init_timeout: float, finish_timeout: float, **kw: Any) -> Any:
        import wandb  # optional at run time: only a mirror that is on imports it

        dir.mkdir(parents=True, exist_ok=True)
        _drop_foreign_service()
        settings = wandb.Settings(
            init_timeout=init_timeout,
            finish_timeout=finish_timeout if self.mode == "online" else 0.0,
            silent=True,  # many trials per process: one line each from us, not a page from W&B
            console="off",  # leave stdout alone (tqdm bars, submitit logs)
        )
        run = wandb.init(
            mode=self.mode,
            dir=str(dir),
            resume="allow",
            reinit="create_new",
            settings=settings,
            **kw,
        )
        run.define_metric(STEP)
        run.define_metric("*", step_metric=STEP)
        log.info("W&B %s run %s in %s", self.mode, run.id, dir)
        return run

    def _fail(self, why: str, broken: bool = False) -> None:
        """Turn this mode off for the process. `broken`: a started run failed, typically because
        W&B's service process died (SLURM signals every process of a job at its time limit);
        close the connection now, or W&B's exit hook prints a traceback into the job's log."""
        if broken:
            try:
                import wandb

                wandb.teardown()
            except Exception:  # noqa: BLE001 - the service is gone; nothing left to close
                pass
        if self.mode not in _FAILED:
            log.warning(
                "W&B mirror (%s) off for this process: %s; the local run record is unaffected",
                self.mode,
                why,
            )
            _FAILED[self.mode] = why
        self.run = None

    @property
    def active(self) -> bool:
        return self.run is not None

    def log(self, row: dict[str, Any], step: int) -> None:
        """Log one metrics row against our own step axis (a resumed run never drops steps)."""
        if self.run is None:
            return
        try:
            for key in row.keys() - self._defined:  # best loss in the summary, not the last
                if key != STEP and _min_is_best(key):
                    self.run.define_metric(key, step_metric=STEP, summary="min")
                self._defined.add(key)
            self.run.log({**{k: v for k, v in row.items() if v is not None}, STEP: step})
        except Exception as e:
            self._fail(f"log failed ({type(e).__name__}: {e})", broken=True)

    def summary(self, **values: Any) -> None:
        """Set summary values, e.g. best_val_loss=..., test_loss=... (None values skipped)."""
        if self.run is None:
            return
        try:
            self.run.summary.update({k: v for k, v in values.items() if v is not None})
        except Exception as e:
            self._fail(f"summary failed ({type(e).__name__}: {e})", broken=True)

    def finish(self, exit_code: int = 0) -> None:
        """Close the run (exit_code != 0 marks it failed in W&B). Safe to call twice."""
        run, self.run = self.run, None
        if run is None:
            return
        try:
            # W&B's service writes the rest of the offline file by the time this process exits
            # (its exit hook waits for the service)
            run.finish(exit_code=exit_code)
        except Exception as e:
            self._fail(f"finish failed ({type(e).__name__}: {e})", broken=True)

    def __enter__(self) -> Mirror:
        return self

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        self.finish(exit_code=1 if exc_type is not None else 0)
