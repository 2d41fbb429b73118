"""Readers of the official annotation lists (CelebA, CUB, MAFL ...): an image name a line, or
``name`` + numbers per line with optional header lines. A truncated or malformed file fails
with its path and line number, never silently. Re-exported by ``datasets.realformat``."""
from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from segbench.benchmark.errors import UserError

FAST_PARSE_ROWS = 20_000  # list files at least this long are tokenised by pandas


class DataFormatError(UserError):
    """A dataset file is present but unusable (truncated list, malformed line, corrupt image)."""


def inside_path(relpath: str, where: str) -> str:
    """``relpath`` when it names a place inside the dataset folder: not empty, not absolute (``/x``,
    ``~/x``) and without a ``..`` part (``/`` or ``\\`` separated); else a DataFormatError naming
    ``where`` (the list file and its row), so a list cannot make a loader read outside the data root."""
    text = str(relpath).strip()
    if not text or text.startswith(("/", "\\", "~")) or ".." in text.replace("\\", "/").split("/"):
        raise DataFormatError(f"{where}: path {text!r} is not inside the dataset folder (absolute and '..' "
                              "paths are refused)")
    return text


def check_inside(names: Sequence[str], where: str) -> None:
    """``inside_path`` for every name of a list file ``where`` (one cheap pass for 200k names)."""
    for line, name in enumerate(names, 1):
        if not name or ".." in name or name[0] in "/\\~":
            inside_path(name, f"{where} (entry {line})")


@dataclass
class Manifest:
    """Rows of a CSV manifest (``read_manifest``): ``rows`` as dicts, ``lines`` their line numbers."""

    path: Path
    rows: list[dict[str, str]]
    lines: list[int]

    def __len__(self) -> int:
        return len(self.rows)

    def where(self, index: int) -> str:
        return f"{self.path}:{self.lines[index]}"


def read_manifest(path: Path, columns: Sequence[str], numbers: Sequence[str] = (),
                  paths: Sequence[str] = ()) -> Manifest:
    """A CSV file with a header line naming at least ``columns``. Every row must have every
    column (a truncated last row fails), ``numbers`` must be finite numbers and ``paths`` relative
    paths inside the dataset folder (``inside_path``); the first bad row fails naming the file, its
    line and the column."""
    import csv

    path = Path(path)
    try:
        with open(path, newline="") as fh:
            reader = csv.DictReader(fh)
            header = reader.fieldnames or []
            missing = [c for c in columns if c not in header]
            if missing:
                raise DataFormatError(f"{path}: no column {', '.join(missing)} in its header "
                                      f"({', '.join(header) or 'empty file'}); expected {', '.join(columns)}")
            rows, lines = [], []
            for row in reader:
                where = f"{path}:{reader.line_num}"
                if None in row or any(row.get(c) is None for c in header):
                    got = len([v for v in row.values() if v is not None]) + len(row.get(None) or [])
                    raise DataFormatError(f"{where}: expected {len(header)} fields, got {got} (truncated or "
                                          "malformed row)")
                for c in numbers:
                    text = row[c].strip()
                    try:
                        value = float(text)
                    except ValueError:
                        value = float("nan")
                    if not np.isfinite(value):
                        raise DataFormatError(f"{where}: column {c} is {text!r}, not a finite number")
                for c in paths:
                    row[c] = inside_path(row[c], f"{where} (column {c})")
                rows.append(row)
                lines.append(reader.line_num)
    except (UnicodeDecodeError, csv.Error) as exc:
        raise DataFormatError(f"{path}: not a readable CSV file ({exc})") from None
    return Manifest(path, rows, lines)


def _is_number(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


def read_name_list(path: Path) -> list[str]:
    """First token of every non-empty line (MAFL lists: one image name a line, last newline
    optional). A leading line holding only a row count is checked against the rows found."""
    names = [line.strip() for line in Path(path).read_text().splitlines() if line.strip()]
    if any(len(name.split()) > 1 for name in names):  # extra columns: keep the first
        names = [name.split()[0] for name in names]
    declared = None
    if names and names[0].isdigit():
        declared = int(names[0])
        names = names[1:]
    if declared is not None and declared != len(names):
        raise DataFormatError(f"{path} declares {declared} names but has {len(names)} (truncated?)")
    check_inside(names, str(path))  # image names are joined under an image folder
    return names


@dataclass
class Table:
    """Rows ``name v1 .. vn`` of an annotation list, in file order."""

    path: Path
    names: list[str]
    values: np.ndarray  # float64 [N, ncols]
    _index: dict[str, int] | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.names)

    def index(self) -> dict[str, int]:
        if self._index is None:
            self._index = {name: i for i, name in enumerate(self.names)}
        return self._index

    def rows(self, names: Sequence[str]) -> np.ndarray:
        """Values for ``names`` in that order; a name without a row fails naming it."""
        index = self.index()
        missing = [n for n in names if n not in index]
        if missing:
            raise DataFormatError(f"{self.path} has no row for {missing[0]} ({len(missing)} of {len(names)} "
                                  f"requested images missing; truncated or wrong file?)")
        return self.values[[index[n] for n in names]]


def read_table(path: Path, ncols: int) -> Table:
    """Parse ``name`` + ``ncols`` numbers per line (whitespace separated).

    Tolerated before the rows (CelebA's two header lines): a line holding only the row count
    (then checked against the rows found) and a column-name line (a non-data line whose first
    token has no "." — data rows start with a file name). Anything else that is not a data row
    fails with the path and line number.
    """
    path = Path(path)
    lines = path.read_text().splitlines()
    numbered = [i for i, line in enumerate(lines) if line.strip()]
    start, declared = 0, None
    for _ in range(2):  # at most a count line and a column-name line
        if start >= len(numbered):
            break
        tokens = lines[numbered[start]].split()
        if declared is None and start == 0 and len(tokens) == 1 and tokens[0].isdigit():
            declared, start = int(tokens[0]), start + 1
        elif not _is_data_row(tokens, ncols) and "." not in tokens[0]:
            start += 1
        else:
            break
    rows = numbered[start:]
    parsed = _parse_rows_fast(lines, rows, ncols) if len(rows) >= FAST_PARSE_ROWS else None
    names, values = parsed if parsed is not None else _parse_rows_strict(path, lines, rows, ncols)
    if declared is not None and declared != len(rows):
        raise DataFormatError(f"{path} declares {declared} rows but has {len(rows)} (truncated?)")
    check_inside(names, str(path))  # row names may be joined under an image folder
    return Table(path, names, values)


def _parse_rows_strict(path: Path, lines: list[str], rows: list[int], ncols: int) -> tuple[list[str], np.ndarray]:
    """Line by line; the first bad line fails with its number."""
    names, values = [], []
    for lineno in rows:
        tokens = lines[lineno].split()
        if len(tokens) != ncols + 1:
            raise DataFormatError(f"{path}:{lineno + 1}: expected a name and {ncols} numbers, got "
                                  f"{len(tokens)} fields (truncated or wrong file?)")
        if not all(_is_number(t) for t in tokens[1:]):
            raise DataFormatError(f"{path}:{lineno + 1}: non-numeric value in {lines[lineno].strip()[:60]!r}")
        names.append(tokens[0])
        values.append([float(t) for t in tokens[1:]])
    return names, np.array(values, np.float64).reshape(len(rows), ncols)


def _parse_rows_fast(lines: list[str], rows: list[int], ncols: int) -> tuple[list[str], np.ndarray] | None:
    """pandas' C tokenizer (~5x faster on CelebA's 202,599-row lists); None on any anomaly, so
    that the strict parser finds and names the bad line."""
    import pandas as pd  # imported here: only long lists need it

    try:
        frame = pd.read_csv(io.StringIO("\n".join(lines[i] for i in rows)), sep=r"\s+", header=None,
                            dtype={0: str}, engine="c")
    except (ValueError, pd.errors.ParserError):
        return None
    if frame.shape != (len(rows), ncols + 1):
        return None
    values = frame.iloc[:, 1:]
    if not all(pd.api.types.is_numeric_dtype(t) for t in values.dtypes) or values.isna().to_numpy().any():
        return None
    return frame[0].astype(str).tolist(), values.to_numpy(np.float64)


def _is_data_row(tokens: list[str], ncols: int) -> bool:
    return len(tokens) == ncols + 1 and all(_is_number(t) for t in tokens[1:])
