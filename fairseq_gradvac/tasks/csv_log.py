"""Append-only CSV logs keyed by update number that stay consistent across a kill and resume.

Rows are flushed as soon as an update's rows are complete, so a killed run loses nothing
it wrote. A resumed run restarts from its last checkpoint, before some updates that may
already be in the file: opening the log for a run at update U drops every row of a later
update (and a line cut short by the kill), so each update appears exactly once. An update
written again (fairseq repeats an update whose fp16 gradients overflowed) replaces its
earlier rows.
"""
import csv
import io
import math
import os
from typing import Dict, Iterable, List, Optional, Sequence

from .files import atomic_write


def _format(value) -> str:
    if isinstance(value, float):  # 8 significant digits: fp32's precision, and NaN as empty
        return "" if math.isnan(value) else f"{value:.8g}"
    return str(value)


class CsvLog:
    def __init__(self, path: str, columns: Sequence[str]):
        if columns[0] != "update":
            raise ValueError("the first column of an update log is 'update'")
        self.path = path
        self.columns = list(columns)
        self._file = None
        self._last: Optional[int] = None

    def open(self, after_update: int) -> None:
        """Start a run that has done ``after_update`` updates: rows of later updates
        (written before a kill, after the checkpoint the run resumed from) go. Nothing is
        touched until the first write."""
        self.close()
        self._last = after_update

    def write(self, update: int, rows: Iterable[Sequence]) -> None:
        """All rows of one update, each starting with ``update``."""
        if self._last is None:
            raise RuntimeError("CsvLog.open() first")
        if self._file is None or update <= self._last:  # first write, or an update written again
            self.close()
            self._start(min(self._last, update - 1))
        self._write(rows)
        self._last = update

    def replace(self, rows_by_update: Dict[int, List[Sequence]]) -> None:
        """Put these updates' rows in the file, in update order, in place of any rows it
        has of the same updates (a probe of more checkpoints adds to the earlier ones)."""
        self.close()
        self._keep(lambda update: update not in rows_by_update)
        with open(self.path, newline="") if os.path.exists(self.path) else io.StringIO() as f:
            kept = f.read().splitlines()[1:]
        lines = [(int(line.split(",", 1)[0]), line) for line in kept]
        lines += [(u, ",".join(_format(v) for v in row)) for u, rows in rows_by_update.items() for row in rows]
        lines.sort(key=lambda x: x[0])
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        with atomic_write(self.path, newline="") as f:
            f.write("".join(line + "\n" for line in [",".join(self.columns)] + [l for _, l in lines]))

    def _start(self, after_update: int) -> None:
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        self._keep(lambda update: update <= after_update)
        self._file = open(self.path, "a", newline="")
        if self._file.tell() == 0:
            self._write([self.columns])

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def _write(self, rows) -> None:
        self._file.write("".join(",".join(_format(v) for v in row) + "\n" for row in rows))
        self._file.flush()

    def _keep(self, wanted) -> None:
        """Rewrite the file with the complete rows whose update is ``wanted`` (atomically:
        a kill during the rewrite leaves the old file)."""
        if not os.path.exists(self.path):
            return
        with open(self.path, newline="") as f:
            text = f.read()
        lines = text.split("\n")
        complete = lines[:-1]  # the last piece is "" or a line cut short by a kill
        if not complete:
            os.remove(self.path)
            return
        header = next(csv.reader([complete[0]]))
        if header != self.columns:
            raise ValueError(
                f"{self.path} has the columns {header}, expected {self.columns}: a file of "
                "another kind or version; move it away"
            )
        kept = [complete[0]] + [
            line for line in complete[1:] if len(line.split(",")) == len(self.columns)
            and wanted(int(line.split(",", 1)[0]))
        ]
        if len(kept) == len(complete) and text.endswith("\n"):
            return
        with atomic_write(self.path, newline="") as f:
            f.write("".join(line + "\n" for line in kept))
