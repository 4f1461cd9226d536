"""Progress of a sweep: a tqdm bar per search on a terminal, one line per finished trial otherwise.

Log files and CI output stay readable (no carriage-return bars), and a terminal user sees how
far each search is.
"""

from __future__ import annotations

import sys
from typing import IO, Any

__all__ = ["Progress"]


class Progress:
    """Counts finished items of one unit of work (a search, or the experiment's single runs)."""

    _next_position = 0  # stacked bars: each new bar takes the next terminal line

    def __init__(
        self,
        desc: str,
        total: int | None = None,
        *,
        stream: IO[str] | None = None,
        bar: bool | None = None,
    ) -> None:
        self.desc, self.total, self.count = desc, total, 0
        self.stream = stream if stream is not None else sys.stderr
        self._use_bar = self.stream.isatty() if bar is None else bar
        self._bar: Any = None  # made at the first update: no empty bars for reused work

    def update(self, message: str) -> None:
        """One item finished; `message` says which and how it went."""
        self.count += 1
        if self._use_bar and self._bar is None:
            from tqdm import tqdm

            self._bar = tqdm(
                total=self.total,
                desc=self.desc,
                file=self.stream,
                leave=True,
                position=Progress._next_position,
                dynamic_ncols=True,
            )
            Progress._next_position += 1
        if self._bar is not None:
            self._bar.update(1)
            self._bar.set_postfix_str(message, refresh=True)
            return
        of = f"/{self.total}" if self.total else ""
        print(f"[{self.desc} {self.count}{of}] {message}", file=self.stream, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
            Progress._next_position = max(0, Progress._next_position - 1)
