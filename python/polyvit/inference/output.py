"""vit-predict's output: one row per input, written in chunks that survive a kill.

Columns: path, topk_indices, topk_labels, topk_probs (lists, best first), error ("" when the
image was classified; the lists are then empty), and with features=True a `features` vector
(the class token after the final norm). The format follows FILE's extension: .parquet
(pyarrow), .csv (lists as JSON text in their cells), .jsonl.

While a job runs, each completed chunk of rows is written to FILE.partial/NNNNNNNN.<ext> (a
temporary name, then an atomic rename), so a killed job leaves only whole chunks. When the job
ends the chunks are joined into FILE (again through an atomic rename) and the folder removed.
--resume reads the rows already in FILE and FILE.partial/ and skips as many listings of each
path; the new rows follow the old ones.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import tempfile
from collections import Counter
from typing import Any, Iterable, Iterator

from ..errors import PolyvitError

FORMATS = {".parquet": "parquet", ".csv": "csv", ".jsonl": "jsonl"}
COLUMNS = ("path", "topk_indices", "topk_labels", "topk_probs", "error")
FEATURES = "features"


class OutputError(PolyvitError, ValueError):
    """The output file cannot be written, or an earlier job's output does not fit this one."""


def output_format(path: str) -> str:
    ext = os.path.splitext(path)[1].lower()
    if ext not in FORMATS:
        raise OutputError(f"{path}: the output format follows the extension; use one of "
                          f"{', '.join(FORMATS)}")
    if ext == ".parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise OutputError("writing .parquet needs pyarrow: pip install pyarrow (or "
                              "polyvit[ray]); .csv and .jsonl need nothing") from None
    return FORMATS[ext]


def check_writable(path: str) -> None:
    """Refuse before any work: the folder must exist and take new files."""
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise OutputError(f"{path}: the folder {folder} does not exist; create it first")
    if os.path.isdir(path):
        raise OutputError(f"{path} is a folder; name a file such as {path.rstrip('/')}/predictions.parquet")
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".polyvit-write-test-"):
            pass
    except OSError as exc:
        raise OutputError(f"{path}: cannot write in {folder} ({exc.strerror or exc})") from None


def error_row(path: str, error: str) -> dict[str, Any]:
    return {"path": path, "topk_indices": [], "topk_labels": [], "topk_probs": [], "error": error}


# ---- reading rows back (resume, tests) ------------------------------------------------------------

def read_rows(path: str, columns: tuple[str, ...] | None = None) -> Iterator[dict[str, Any]]:
    """The rows of one output file (any format), in file order."""
    fmt = output_format(path)
    if fmt == "parquet":
        import pyarrow.parquet as pq

        f = pq.ParquetFile(path)
        for batch in f.iter_batches(columns=list(columns) if columns else None):
            yield from batch.to_pylist()
    elif fmt == "jsonl":
        with open(path, encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    yield json.loads(line)
    else:
        with open(path, newline="", encoding="utf-8") as f:
            for row in csv.DictReader(f):
                yield {k: (json.loads(v) if k.startswith("topk_") or k == FEATURES else v)
                       for k, v in row.items()}


def done_counts(path: str) -> Counter:
    """How many rows each input path already has in FILE and FILE.partial/ (for --resume)."""
    counts: Counter = Counter()
    for part in existing_parts(path):
        try:
            for row in read_rows(part, columns=("path",)):
                counts[row["path"]] += 1
        except (OSError, ValueError, KeyError) as exc:
            raise OutputError(f"{part}: cannot read the rows of the earlier job ({exc}); move it "
                              "away or start over with --overwrite") from None
    return counts


def existing_parts(path: str) -> list[str]:
    """FILE (when present) then the chunks of FILE.partial/ in order."""
    parts = [path] if os.path.isfile(path) else []
    folder = partial_dir(path)
    if os.path.isdir(folder):
        ext = os.path.splitext(path)[1].lower()
        parts += [os.path.join(folder, n) for n in sorted(os.listdir(folder))
                  if n.endswith(ext) and not n.startswith(".")]
    return parts


def partial_dir(path: str) -> str:
    return path + ".partial"


# ---- writing --------------------------------------------------------------------------------------

class RowWriter:
    """Collects rows and writes every `chunk_rows` of them as one atomic chunk; close() joins the
    chunks into the output file. Use as a context manager: leaving it by an exception keeps the
    chunks written so far (for --resume) and joins nothing."""

    def __init__(self, path: str, features: bool = False, resume: bool = False,
                 overwrite: bool = False, chunk_rows: int = 256) -> None:
        self.path = path
        self.format = output_format(path)
        self.features = features
        self.chunk_rows = max(1, int(chunk_rows))
        self.rows_written = 0
        self._pending: list[dict[str, Any]] = []
        check_writable(path)
        self.folder = partial_dir(path)
        leftovers = existing_parts(path)
        if leftovers and not resume:
            if not overwrite:
                what = "an interrupted job's chunks" if os.path.isdir(self.folder) else "a file"
                raise OutputError(f"{path}: {what} already there; pass --resume to add to it, or "
                                  "--overwrite to replace it")
            if os.path.isdir(self.folder):
                shutil.rmtree(self.folder)
            leftovers = []
        self._replace_final = overwrite and not resume and os.path.isfile(path)
        self._next = len([p for p in leftovers if p != path])

    def write(self, rows: Iterable[dict[str, Any]]) -> None:
        for row in rows:
            self._pending.append(row)
            if len(self._pending) >= self.chunk_rows:
                self.flush()

    def flush(self) -> None:
        if not self._pending:
            return
        os.makedirs(self.folder, exist_ok=True)
        name = os.path.join(self.folder, f"{self._next:08d}{os.path.splitext(self.path)[1].lower()}")
        write_file(name, self._pending, self.format, self.features)
        self._next += 1
        self.rows_written += len(self._pending)
        self._pending = []

    def close(self) -> None:
        """Write what is pending, join FILE (if resumed) and every chunk into FILE, atomically."""
        self.flush()
        parts = existing_parts(self.path)
        if self._replace_final:
            parts = [p for p in parts if p != self.path]
        os.makedirs(self.folder, exist_ok=True)
        tmp = os.path.join(self.folder, ".joined" + os.path.splitext(self.path)[1].lower())
        join_files(parts, tmp, self.format, self.features)
        os.replace(tmp, self.path)
        shutil.rmtree(self.folder)

    def __enter__(self) -> "RowWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.flush()  # whole rows computed before the failure are kept for --resume
            if os.path.isdir(self.folder) and not os.listdir(self.folder):
                os.rmdir(self.folder)  # nothing was written: leave no trace


def _columns(features: bool) -> tuple[str, ...]:
    return COLUMNS + ((FEATURES,) if features else ())


def write_file(path: str, rows: list[dict[str, Any]], fmt: str, features: bool) -> None:
    """Rows to one file through a temporary name and an atomic rename."""
    tmp = os.path.join(os.path.dirname(path), "." + os.path.basename(path) + ".tmp")
    if fmt == "parquet":
        import pyarrow.parquet as pq

        pq.write_table(arrow_table(rows, features), tmp)
    else:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            _write_text(f, rows, fmt, features, header=True)
            f.flush()
            os.fsync(f.fileno())
    os.replace(tmp, path)


def _write_text(f, rows: Iterable[dict[str, Any]], fmt: str, features: bool, header: bool) -> None:
    cols = _columns(features)
    if fmt == "jsonl":
        for row in rows:
            f.write(json.dumps({c: row.get(c) for c in cols}, ensure_ascii=False) + "\n")
        return
    w = csv.writer(f)
    if header:
        w.writerow(cols)
    for row in rows:
        w.writerow([row[c] if c in ("path", "error") else json.dumps(row.get(c))
                    for c in cols])


def arrow_schema(features: bool):
    import pyarrow as pa

    fields = [("path", pa.string()), ("topk_indices", pa.list_(pa.int64())),
              ("topk_labels", pa.list_(pa.string())), ("topk_probs", pa.list_(pa.float64())),
              ("error", pa.string())]
    if features:
        fields.append((FEATURES, pa.list_(pa.float32())))
    return pa.schema(fields)


def arrow_table(rows: list[dict[str, Any]], features: bool):
    import pyarrow as pa

    schema = arrow_schema(features)
    return pa.Table.from_pylist([{c: r.get(c) for c in schema.names} for r in rows], schema=schema)


def join_files(parts: list[str], out: str, fmt: str, features: bool) -> None:
    """Concatenate output files of one format into `out`, streaming (never all rows at once)."""
    if fmt == "parquet":
        import pyarrow.parquet as pq

        schema = arrow_schema(features)
        with pq.ParquetWriter(out, schema) as w:
            for part in parts:
                table = pq.read_table(part)
                if table.schema.names != schema.names:
                    raise OutputError(f"{part}: its columns {table.schema.names} differ from this "
                                      f"job's {schema.names} (was --features given to both?)")
                w.write_table(table.cast(schema))
        return
    with open(out, "w", newline="", encoding="utf-8") as f:
        if fmt == "csv":
            csv.writer(f).writerow(_columns(features))
        for part in parts:
            with open(part, newline="", encoding="utf-8") as src:
                if fmt == "csv":
                    head = next(csv.reader([src.readline()]), None)
                    if head is not None and tuple(head) != _columns(features):
                        raise OutputError(f"{part}: its columns {head} differ from this job's "
                                          f"{list(_columns(features))} (was --features given to both?)")
                shutil.copyfileobj(src, f)
        f.flush()
        os.fsync(f.fileno())
