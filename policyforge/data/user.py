"""User data: a JSONL, JSON (an array of objects), Parquet or CSV file with a prompt column and any extra columns.

The prompt is text, or a conversation (a list of {"role", "content"} messages) that
data/chat.py renders with the model's chat template once the model's tokenizer is known.

Every row is checked when the file is loaded, so a missing column or a malformed
line fails before any model is loaded, with the file and row named.
"""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

from policyforge.data.chat import check_conversation, is_conversation
from policyforge.hub import dataset_hint
from policyforge.data.tasks import DataError, Example  # DataError is defined beside Example; imported from here too


def _read_json_array(path: Path, text: str) -> list[dict]:
    try:
        rows = json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(f"{path}, line {e.lineno}: not valid JSON ({e.msg} at column {e.colno})") from e
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise DataError(f"{path}, row {i}: expected a JSON object, got {type(row).__name__}")
    return rows


def _read_rows(path: Path) -> tuple[list[dict], list[str]]:
    """The file's rows and where each is ("x.jsonl, line 7"; "x.json, row 3" counting from 0 for an array
    or Parquet table); a DataError naming the file when it cannot be read as its suffix says."""
    try:
        return _parse_rows(path)
    except UnicodeDecodeError:
        raise not_utf8(path, str(path)) from None
    except OSError as e:  # a directory, no permission, ...
        raise DataError(f"{path}: cannot be read ({e.strerror or e})") from None
    except Exception as e:  # pyarrow's errors for a file that is not Parquet
        if type(e).__module__.startswith("pyarrow"):
            raise DataError(f"{path}: not a readable Parquet file ({e})") from None
        raise


def _parse_rows(path: Path) -> tuple[list[dict], list[str]]:
    if path.suffix == ".parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError as e:
            raise DataError(f"{path}: reading Parquet needs pyarrow (pip install 'policyforge[parquet]')") from e
        rows = pq.read_table(path).to_pylist()
        return rows, [f"{path}, row {i}" for i in range(len(rows))]
    if path.suffix == ".csv":
        return _read_csv(path)
    if path.suffix == ".json":
        text = path.read_text(encoding="utf-8")
        if text.lstrip().startswith("["):  # a JSON array of rows; anything else is read as JSON Lines
            rows = _read_json_array(path, text)
            return rows, [f"{path}, row {i}" for i in range(len(rows))]
    rows, places = [], []
    for n, row in json_objects(path, str(path)):
        rows.append(row)
        places.append(f"{path}, line {n}")  # blank lines are skipped: the line number, not the row's
    return rows, places


def json_objects(path: Path, label: str):
    """(line number, object) for each non-blank line of the JSON Lines file `path`; DataError naming `label` and
    the line when one is not a JSON object or not UTF-8."""
    try:
        with path.open(encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    raise DataError(f"{label}, line {n}: not valid JSON ({e.msg} at column {e.colno})") from e
                if not isinstance(row, dict):
                    raise DataError(f"{label}, line {n}: expected a JSON object, got {type(row).__name__}")
                yield n, row
    except UnicodeDecodeError:
        raise not_utf8(path, label) from None


def not_utf8(path: Path, label: str) -> DataError:
    """The DataError for a file that is not UTF-8, naming the line and column of its first bad byte (the decoder's
    own position counts from the start of the chunk it was reading, not of the file)."""
    raw = path.read_bytes()
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line, line_start = raw.count(b"\n", 0, e.start) + 1, raw.rfind(b"\n", 0, e.start) + 1
        return DataError(f"{label}, line {line}: not UTF-8 text (byte 0x{raw[e.start]:02x} at column "
                         f"{e.start - line_start + 1}: {e.reason}); save the file as UTF-8")
    return DataError(f"{label}: not UTF-8 text; save the file as UTF-8")


def _read_csv(path: Path) -> tuple[list[dict], list[str]]:
    """A CSV file with a header row: every value is text, as the file holds it (a reward converts what it needs).
    A row's place is its first line (a quoted value may span several; blank lines are skipped)."""
    rows, places = [], []
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames:
            return [], []
        for row in reader:
            # line_num is the row's last line; its quoted values' own line breaks lead back to the first
            start = reader.line_num - sum(v.count("\n") for v in row.values() if isinstance(v, str))
            if None in row or None in row.values():  # csv files the surplus under None, a shortfall as None
                raise DataError(f"{path}, line {start}: {'more' if None in row else 'fewer'} fields than the "
                                f"header's {len(reader.fieldnames)} ({', '.join(reader.fieldnames)})")
            rows.append(dict(row))
            places.append(f"{path}, line {start}")
    return rows, places


RESERVED = {"prompt": "the prompt the model was given", "completion": "the model's completion"}


def load_rows(path: str, prompt_column: str = "prompt", solution_column: str | None = None) -> list[Example]:
    """Read `path` into Examples; every column but the prompt (the solution too) goes to `Example.extra`."""
    p = Path(path)
    if not p.exists():
        raise DataError(f"dataset {path!r} does not exist{dataset_hint(path)}")
    if p.suffix not in {".jsonl", ".json", ".parquet", ".csv"}:
        raise DataError(f"dataset {path!r}: expected a .jsonl, .json (an array of objects), .parquet or .csv file")
    rows, places = _read_rows(p)
    if not rows:
        raise DataError(f"dataset {path!r} has no rows")
    out, columns = [], set(rows[0])
    for i, (row, place) in enumerate(zip(rows, places)):
        for col in filter(None, (prompt_column, solution_column)):
            if col not in row:
                raise DataError(
                    f"dataset {place}: missing column {col!r} (columns: {', '.join(sorted(row))}); "
                    f"set data.prompt_column / data.solution_column"
                )
            if col == prompt_column and is_conversation(row[col]):  # rendered later with the chat template
                check_conversation(row[col], place, col)
            elif not isinstance(row[col], str):  # prompts and solutions are text for the tokenizer
                raise DataError(f"dataset {place}: column {col!r} must be "
                                + ("a string or a list of chat messages" if col == prompt_column else "a string")
                                + f", got {type(row[col]).__name__}")
            elif col == prompt_column and not row[col].strip():  # a lost field, not a task: sampled from nothing
                raise DataError(f"dataset {place}: the prompt (column {col!r}) is empty; give every row its prompt, "
                                "or leave the row out")
        # the solution column stays among the reward's keyword arguments: rewards compare against it
        extra = {k: v for k, v in row.items() if k != prompt_column}
        clash = sorted(set(RESERVED) & set(extra))
        if clash:  # reward(prompt, completion, **extra) would get the argument twice
            raise DataError(f"dataset {path!r}: column {clash[0]!r} has the name of the reward function's own "
                            f"argument ({RESERVED[clash[0]]}), and every other column is passed to it by name: "
                            f"rename the column (for example to 'solution')")
        # the reward gets every column by name and is tried on the first row at start-up: a column that later
        # rows lack would fail at their step, after training time was spent
        if set(row) != columns:
            lacks, adds = sorted(columns - set(row)), sorted(set(row) - columns)
            raise DataError(f"dataset {place}: its columns differ from the first row's "
                            f"({'missing ' + ', '.join(map(repr, lacks)) if lacks else ''}"
                            f"{'; ' if lacks and adds else ''}{'extra ' + ', '.join(map(repr, adds)) if adds else ''}): "
                            "every row must have the same columns")
        sol = row[solution_column] if solution_column else None
        out.append(Example(row[prompt_column], sol, extra, i, place))
    return out


def hold_out(rows: list[Example], eval_size: int) -> tuple[list[Example], list[Example]]:
    """(held-out rows, training rows) of one file: the first rows are held out and never trained on.

    At most half the rows are held out (rounded down), so a small file, such as the README's
    8-row example with the default eval_size of 200, still trains on at least half its rows
    instead of failing; a file of one row is all training and has no held-out rows.
    """
    n = min(max(eval_size, 0), len(rows) // 2)
    return rows[:n], rows[n:]


class RowStream:
    """Rows in a fresh seeded order each epoch; position `i` is the i-th row served."""

    def __init__(self, rows: list[Example], seed: int = 0):
        self.rows, self.seed = rows, seed
        self._epoch, self._order = -1, []

    def train_example(self, i: int) -> Example:
        epoch, k = divmod(i, len(self.rows))
        if epoch != self._epoch:  # the order depends only on (seed, epoch): resume-safe
            self._order = list(range(len(self.rows)))
            random.Random(f"{self.seed}-{epoch}").shuffle(self._order)
            self._epoch = epoch
        return self.rows[self._order[k]]
