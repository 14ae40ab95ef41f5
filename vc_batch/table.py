"""Job tables: CSV (with a header row) or JSONL (one object per line).

CSV is read as RFC 4180: comma-separated unless `delimiter` says otherwise (never guessed),
fields in double quotes may hold delimiters, line breaks and doubled quotes.  A row with more
(non-blank) cells than the header, a header with no known column, or broken quoting is an error naming
the line.  A row with fewer cells leaves the missing ones blank.

Columns: see columns.COLUMNS (case-insensitive, aliases accepted) plus any extra role defined
in a --roles mapping file; a blank cell / missing key keeps the workflow's value.
"""
import csv
import json
import os
import re

from .columns import COLUMNS, IMAGE_COLUMNS, VERBATIM_COLUMNS, column_of

_SAFE = re.compile(r"[^A-Za-z0-9._-]+")
JSONL_EXTENSIONS = (".jsonl", ".ndjson", ".json")


class TableError(ValueError):
    pass


class Job:
    """One row: `values` holds the non-blank cells by canonical (or extra-role) name."""

    def __init__(self, index, name, values, line):
        self.index = index  # 1-based row number among jobs
        self.name = name
        self.values = values
        self.line = line  # "path:line", for messages

    @property
    def has_image(self):
        return bool(self.values.get("image"))

    def __repr__(self):
        return f"Job({self.name!r}, {self.values!r})"


def safe_name(name):
    name = _SAFE.sub("_", str(name).strip()).strip("._")
    return name[:120]


def _blank(v):
    return v is None or (isinstance(v, str) and v.strip() == "")


def _csv_rows(path, f, delimiter):
    """Yield (first line number, cells) per non-blank CSV record."""
    reader = csv.reader(f, delimiter=delimiter, quotechar='"', doublequote=True, strict=True)
    start = 1
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            if "field larger than field limit" in str(e):
                raise TableError(f"{path}:{start}: a cell is longer than {csv.field_size_limit()} characters. A "
                                 "prompt that long is cut to 77 tokens by the text encoder anyway: shorten it. (A "
                                 "quote without its closing quote also makes the rest of the file one cell.)") from None
            raise TableError(f"{path}:{start}: broken CSV quoting ({e}); a field that holds the delimiter, "
                             'a quote or a line break must be in double quotes, with quotes inside doubled ("")') \
                from None
        if any(c.strip() for c in cells):
            yield start, cells
        start = reader.line_num + 1


def read_rows(path, delimiter=",", extra_roles=(), warn=print):
    """Yield ("path:line", {column: value}) for each row of a CSV or JSONL table.  Keys are
    canonical column names; unknown CSV columns are dropped with one warning."""
    ext = os.path.splitext(path)[1].lower()
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            if ext in JSONL_EXTENSIONS:
                yield from _jsonl_rows(path, f, extra_roles, warn)
            else:
                yield from _csv_dict_rows(path, f, delimiter, extra_roles, warn)
    except UnicodeDecodeError as e:
        raise TableError(f"{path}: not UTF-8 text ({e}); save the table as UTF-8") from None


def _jsonl_rows(path, f, extra_roles, warn):
    unknown, n = set(), 0
    for n, line in enumerate(f, 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise TableError(f"{path}:{n}: not valid JSON: {e}") from None
        if not isinstance(obj, dict):
            raise TableError(f"{path}:{n}: each line must be a JSON object")
        row = {}
        for key, val in obj.items():
            canon = column_of(key, extra_roles)
            if canon is None:
                unknown.add(str(key))
                continue
            if canon in row:
                raise TableError(f"{path}:{n}: {key!r} and another key both set column {canon!r}")
            row[canon] = val
        if not row and obj:
            raise TableError(f"{path}:{n}: no known key in {sorted(obj)} ({_known_hint()})")
        yield f"{path}:{n}", row
    if unknown:
        warn(f"warning: ignoring unknown key(s) {', '.join(sorted(unknown))} ({_known_hint()})")


def _csv_dict_rows(path, f, delimiter, extra_roles, warn):
    rows = _csv_rows(path, f, delimiter)
    try:
        header_line, header = next(rows)
    except StopIteration:
        raise TableError(f"{path}: empty table (a header row is required)") from None
    columns, seen, unknown = [], {}, []
    for cell in header:
        canon = column_of(cell, extra_roles)
        if canon is not None and canon in seen:
            raise TableError(f"{path}:{header_line}: columns {seen[canon]!r} and {cell!r} both set {canon!r}")
        if canon is not None:
            seen[canon] = cell
        elif cell.strip():
            unknown.append(cell)
        columns.append(canon if canon is not None or cell.strip() else "")
    if not seen:
        sep = {",": "comma", ";": "semicolon", "\t": "tab"}.get(delimiter, repr(delimiter))
        raise TableError(f"{path}:{header_line}: the header {header!r} has no known column ({_known_hint()}); "
                         f"the table is read {sep}-separated: pass --delimiter if it uses another separator")
    if unknown:
        warn(f"warning: {path}:{header_line}: ignoring unknown column(s) {', '.join(unknown)} ({_known_hint()})")
    for line, cells in rows:
        extra = cells[len(columns):]
        if any(c.strip() for c in extra):  # blank trailing cells (spreadsheet exports) lose nothing
            raise TableError(f"{path}:{line}: {len(cells)} cells but the header has {len(columns)} "
                             f"(extra: {extra!r}); quote cells that contain the delimiter {delimiter!r}")
        for i, (canon, cell) in enumerate(zip(columns, cells)):
            if canon == "" and cell.strip():
                raise TableError(f"{path}:{line}: cell {i + 1} ({cell!r}) is under a header cell with no name; "
                                 "name the column or remove the cell")
        yield f"{path}:{line}", {canon: cell for canon, cell in zip(columns, cells) if canon}


def _known_hint():
    return f"known: {', '.join(COLUMNS)}; extra roles come from --roles"


def _clean(row):
    values = {}
    for canon, val in row.items():
        if _blank(val):
            continue
        if isinstance(val, str) and canon not in VERBATIM_COLUMNS:
            val = val.strip()
        values[canon] = val
    return values


def load_jobs(path, extra_roles=(), warn=print, delimiter=","):
    """Parse a job table into Jobs with unique safe names.  Image/workflow paths are made
    absolute relative to the table's folder."""
    if not isinstance(delimiter, str) or len(delimiter) != 1 or delimiter in '"\r\n':
        raise TableError(f"the delimiter must be one character other than a quote or line break, not {delimiter!r}")
    extra_roles = {r.lower() for r in extra_roles}
    base = os.path.dirname(os.path.abspath(path))
    jobs = []
    for line, row in read_rows(path, delimiter, extra_roles, warn):
        values = _clean(row)
        index = len(jobs) + 1
        for key in IMAGE_COLUMNS + ("workflow",):
            if key in values:
                p = os.path.expanduser(str(values[key]))
                values[key] = p if os.path.isabs(p) else os.path.join(base, p)
        if "name" in values:
            name = safe_name(values.pop("name"))
            if not name:
                raise TableError(f"{line}: the name cell has no usable characters")
        else:
            name = f"job_{index:05d}"
        jobs.append(Job(index, name, values, line))
    seen = {}
    for job in jobs:
        if job.name in seen:
            raise TableError(f"{job.line}: job name {job.name!r} already used at {seen[job.name]}; "
                             "names must be unique (they key the manifest and the output folders)")
        seen[job.name] = job.line
    if not jobs:
        raise TableError(f"{path}: no jobs")
    return jobs
