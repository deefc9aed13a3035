#!/usr/bin/env python3
"""Independent reader for tidemark exports.

Reads the source rows of one organisation and one cursor window straight from
Postgres (psycopg), reads exported Parquet (pyarrow) or JSONL (json) files, and
checks value by value that the files hold exactly those rows. It shares no code
with the Rust side on purpose: it is the independent check.

    verify_export.py --dsn postgresql://... --schema schemas/events/v1.json \
        --org <uuid> --from 2026-11-19T10:00:00Z --to 2026-11-19T10:15:00Z \
        --format parquet|jsonl [--duckdb] FILE [FILE...]

Prints one JSON object on stdout:
    {"ok", "table", "format", "source_rows", "file_rows", "duckdb_rows",
     "files": [{"path", "rows", "key_value_metadata"}], "errors": [...]}
Every error is an object with at least "kind" and "message".
Exit status: 0 ok, 1 not ok, 2 usage / schema / connection / query error
(message on stderr, nothing on stdout).

See tests/py/README.md for the full contract.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gzip
import json
import math
import os
import re
import sys
import uuid
from decimal import Decimal

MAX_ID_LIST = 10  # missing / unexpected ids listed
MAX_MISMATCHES = 20  # value mismatches listed
MAX_BAD_VALUES = 20  # bad values (wrong shape/type in a file) listed
MAX_FOREIGN = 20  # rows of another organisation listed

UTC = dt.timezone.utc
NUMERIC_RE = re.compile(r"^numeric\((\d+),(\d+)\)$")
SIMPLE_TYPES = {
    "uuid", "text", "int2", "int4", "int8", "float8", "bool",
    "timestamptz", "date", "jsonb", "inet", "text[]",
}
TIMESTAMP_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$")
DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
INT_RANGES = {"int2": 16, "int4": 32, "int8": 64}
OP = "_op"
DELETE_LOG = "tidemark_delete_log"


class UsageError(Exception):
    """Exit 2: bad arguments, bad schema file, unreachable or failing database."""


class BadValue(Exception):
    """A file value has the wrong shape or type for its schema column."""


# ----------------------------------------------------------------------------
# Values
# ----------------------------------------------------------------------------


class Json:
    """A parsed jsonb value (floats as Decimal). Distinct from SQL NULL (None)."""

    __slots__ = ("value",)

    def __init__(self, value):
        self.value = value

    def __eq__(self, other):
        return isinstance(other, Json) and json_equal(self.value, other.value)

    __hash__ = None  # mutable contents; never used as a key

    def __repr__(self):
        return f"Json({self.value!r})"


def json_equal(a, b) -> bool:
    """Deep equality of parsed JSON: numbers by value, bool never equals a number."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, (int, float, Decimal)) and isinstance(b, (int, float, Decimal)):
        return num_equal(a, b)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(json_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(json_equal(x, y) for x, y in zip(a, b))
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, str) and isinstance(b, str):
        return a == b
    return False


def num_equal(a, b) -> bool:
    def is_nan(x):
        return (isinstance(x, float) and math.isnan(x)) or (
            isinstance(x, Decimal) and x.is_nan()
        )

    if is_nan(a) or is_nan(b):
        return is_nan(a) and is_nan(b)
    # Exact: Decimal(float) is the float's exact binary value.
    return Decimal(a) == Decimal(b)


def float_equal(a: float, b: float) -> bool:
    """Bit-for-bit float8 equality (NaN equals NaN, -0.0 differs from 0.0)."""
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return a == b and math.copysign(1.0, a) == math.copysign(1.0, b)


def values_equal(pgtype: str, src, got, fmt: str) -> bool:
    if src is None or got is None:
        if fmt == "jsonl" and pgtype == "jsonb":
            # JSONL cannot tell SQL NULL from a jsonb 'null' document.
            def is_null(v):
                return v is None or (isinstance(v, Json) and v.value is None)

            return is_null(src) and is_null(got)
        return src is None and got is None
    if pgtype == "float8":
        return isinstance(got, float) and float_equal(src, got)
    if pgtype.startswith("numeric"):
        return isinstance(got, Decimal) and num_equal(src, got)
    if pgtype == "bool":
        return isinstance(got, bool) and src == got
    if pgtype in INT_RANGES:
        return type(got) is int and src == got
    if pgtype == "jsonb":
        return src == got
    if pgtype == "timestamptz":
        return (
            isinstance(got, dt.datetime)
            and got.tzinfo is not None
            and src.astimezone(UTC) == got.astimezone(UTC)
        )
    if pgtype == "date":
        return type(got) is dt.date and src == got
    if pgtype == "text[]":
        return isinstance(got, list) and list(src) == list(got)
    return type(src) is type(got) and src == got


def to_jsonable(v):
    """For the report only."""
    if v is None or isinstance(v, (bool, int, str)):
        return v
    if isinstance(v, float):
        return repr(v) if (math.isnan(v) or math.isinf(v)) else v
    if isinstance(v, Decimal):
        return str(v)
    if isinstance(v, dt.datetime):
        if v.tzinfo is not None:
            v = v.astimezone(UTC)
            return v.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        return v.isoformat()
    if isinstance(v, dt.date):
        return v.isoformat()
    if isinstance(v, Json):
        return {"json": json_text(v.value)}
    if isinstance(v, dict):
        return {str(k): to_jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [to_jsonable(x) for x in v]
    if isinstance(v, (bytes, bytearray, memoryview)):
        return {"hex": bytes(v).hex()}
    if isinstance(v, uuid.UUID):
        return str(v)
    return repr(v)


def json_text(v) -> str:
    """Compact JSON text of a parsed value, Decimals written as plain numbers."""
    if isinstance(v, Decimal):
        return str(v) if v.is_finite() else json.dumps(str(v))
    if isinstance(v, float):
        return repr(v) if math.isfinite(v) else json.dumps(repr(v))
    if isinstance(v, dict):
        return "{" + ",".join(json.dumps(k, ensure_ascii=False) + ":" + json_text(x)
                              for k, x in v.items()) + "}"
    if isinstance(v, list):
        return "[" + ",".join(json_text(x) for x in v) + "]"
    return json.dumps(v, ensure_ascii=False)


def show(v) -> str:
    """A value as it appears in messages (jsonb as its JSON text, e.g. jsonb {"a":1.5})."""
    if isinstance(v, Json):
        return "jsonb " + json_text(v.value)
    return json.dumps(to_jsonable(v), ensure_ascii=False)


def key_display(key):
    return to_jsonable(key[0]) if len(key) == 1 else to_jsonable(list(key))


# ----------------------------------------------------------------------------
# Schema
# ----------------------------------------------------------------------------


class Schema:
    def __init__(self, path: str, current: bool = False):
        try:
            with open(path, encoding="utf-8") as f:
                doc = json.load(f)
        except (OSError, ValueError) as e:
            raise UsageError(f"cannot read schema {path}: {e}") from e
        try:
            self.table = doc["table"]
            self.version = doc.get("version")
            self.primary_key = list(doc["primary_key"])
            self.cursor = list(doc["cursor"])
            self.org_column = doc["organization_column"]
            self.columns = [(c["name"], c["type"], bool(c.get("nullable", True)))
                            for c in doc["columns"]]
            # Derived columns: SQL over the source table's columns, cast to the column type.
            self.expressions = {c["name"]: c["expression"] for c in doc["columns"]
                                if c.get("expression") is not None}
        except (KeyError, TypeError) as e:
            raise UsageError(f"schema {path} lacks a required field: {e}") from e
        if not isinstance(self.table, str) or not self.table:
            raise UsageError(f"schema {path}: 'table' must be a non-empty string")
        self.types = {}
        for name, typ, _ in self.columns:
            if name in self.types:
                raise UsageError(f"schema {path}: column {name!r} listed twice")
            if typ not in SIMPLE_TYPES and not NUMERIC_RE.match(typ):
                raise UsageError(f"schema {path}: column {name!r} has unknown type {typ!r}")
            self.types[name] = typ
        self.names = [c[0] for c in self.columns]
        for col in self.primary_key + self.cursor[:1] + [self.org_column]:
            if col not in self.types:
                raise UsageError(f"schema {path}: column {col!r} is not among 'columns'")
        if not self.primary_key or not self.cursor:
            raise UsageError(f"schema {path}: 'primary_key' and 'cursor' must be non-empty")
        if self.types[self.cursor[0]] != "timestamptz":
            raise UsageError(f"schema {path}: cursor column {self.cursor[0]!r} must be timestamptz")
        if OP in self.types:
            raise UsageError(f"schema {path}: column {OP!r} is reserved for the change envelope")
        self.current = current
        if current:
            # An analyst table read back: the current rows, published columns only.
            return
        # Every export ends with the envelope column _op (U = current version, D = deleted at
        # updated_at), which is not in the schema file. A file row is keyed by id and _op: a
        # delete and a re-insert of one id in one window are two rows.
        self.columns.append((OP, "text", False))
        self.types[OP] = "text"
        self.names.append(OP)
        self.primary_key = self.primary_key + [OP]


def numeric_ps(pgtype: str):
    m = NUMERIC_RE.match(pgtype)
    return (int(m.group(1)), int(m.group(2))) if m else None


# ----------------------------------------------------------------------------
# Source rows (Postgres)
# ----------------------------------------------------------------------------


def load_source(args, schema: Schema, org_value: str):
    try:
        import psycopg
        from psycopg import sql
        from psycopg.adapt import Loader
        from psycopg.types.string import TextLoader
    except ImportError as e:
        raise UsageError(f"psycopg is not installed ({e}); run scripts/setup") from e

    class JsonbLoader(Loader):
        def load(self, data):
            if isinstance(data, memoryview):
                data = bytes(data)
            return Json(json.loads(data, parse_float=Decimal))

    try:
        conn = psycopg.connect(args.dsn, autocommit=True, connect_timeout=10)
    except psycopg.Error as e:
        raise UsageError(f"cannot connect to Postgres: {e}") from e
    try:
        # inet: exactly inet_out's text ("10.0.0.1", "10.0.0.0/8", "2001:db8::1").
        conn.adapters.register_loader("inet", TextLoader)
        conn.adapters.register_loader("cidr", TextLoader)
        conn.adapters.register_loader("jsonb", JsonbLoader)
        conn.adapters.register_loader("json", JsonbLoader)
        conn.execute("SET TimeZone = 'UTC'")
        table_ident = sql.Identifier(*schema.table.split("."))
        def item(name, op):
            if name == OP:
                return sql.SQL("{}::text AS {}").format(sql.Literal(op), sql.Identifier(OP))
            expr = schema.expressions.get(name)
            if expr is None:
                return sql.Identifier(name)
            # The published expression, evaluated by Postgres itself ('%' escaped for the
            # placeholder syntax); the schema types are valid Postgres type names.
            return sql.SQL("({})::{} AS {}").format(
                sql.SQL(expr.replace("%", "%%")), sql.SQL(schema.types[name]), sql.Identifier(name))

        query = sql.SQL(
            "SELECT {cols} FROM {table} WHERE {org} = %s AND {cur} >= %s AND {cur} < %s"
        ).format(
            cols=sql.SQL(", ").join(item(n, "U") for n in schema.names),
            table=table_ident,
            org=sql.Identifier(schema.org_column),
            cur=sql.Identifier(schema.cursor[0]),
        )
        with conn.cursor() as cur:
            cur.execute(query, (org_value, args.from_ts, args.to_ts))
            rows = cur.fetchall()
            # Deletes logged by delete capture in the window: the deleted row's last values,
            # with the cursor column set to the time of the delete.
            cur.execute("SELECT to_regclass(%s) IS NOT NULL", (DELETE_LOG,))
            if cur.fetchone()[0] and not schema.current:
                deletes = sql.SQL(
                    "SELECT {cols} FROM (SELECT r.* FROM {log} l CROSS JOIN LATERAL "
                    "jsonb_populate_record(NULL::{table}, l.old_row || jsonb_build_object({cur_name}, l.deleted_at)) r "
                    "WHERE l.table_name = %s AND l.organization_id = %s AND l.deleted_at >= %s AND l.deleted_at < %s) AS {table}"
                ).format(
                    cols=sql.SQL(", ").join(item(n, "D") for n in schema.names),
                    table=table_ident,
                    log=sql.Identifier(DELETE_LOG),
                    cur_name=sql.Literal(schema.cursor[0]),
                )
                cur.execute(deletes, (schema.table.split(".")[-1], org_value, args.from_ts, args.to_ts))
                rows += cur.fetchall()
    except psycopg.Error as e:
        raise UsageError(f"source query failed: {e}") from e
    except (ValueError, OverflowError) as e:  # e.g. 'infinity' timestamps, bad JSON
        raise UsageError(f"cannot load a source value: {e}") from e
    finally:
        conn.close()

    out = []
    for row in rows:
        rec = {}
        for name, value in zip(schema.names, row):
            rec[name] = normalize_source(schema.types[name], value)
        out.append(rec)
    return out


def normalize_source(pgtype: str, v):
    if v is None:
        return None
    if pgtype == "uuid":
        return str(v)  # uuid.UUID -> lowercase canonical
    if pgtype == "timestamptz":
        return v.astimezone(UTC)
    if pgtype == "text[]":
        return list(v)
    if pgtype == "float8":
        return float(v)
    return v


# ----------------------------------------------------------------------------
# File rows
# ----------------------------------------------------------------------------


def check_int(pgtype, v):
    if type(v) is not int:
        raise BadValue(f"expected an integer, got {type(v).__name__}")
    bits = INT_RANGES[pgtype]
    if not -(1 << (bits - 1)) <= v < (1 << (bits - 1)):
        raise BadValue(f"integer {v} out of range for {pgtype}")
    return v


def check_uuid(v):
    if not UUID_RE.match(v):
        raise BadValue(f"uuid {v!r} is not in canonical lowercase 8-4-4-4-12 form")
    return v


def normalize_parquet(pgtype: str, v):
    """v comes from pyarrow's to_pylist() on a column whose type was checked."""
    if v is None:
        return None
    if pgtype == "uuid" and isinstance(v, str):
        return check_uuid(v)
    if pgtype in ("uuid", "text", "inet"):
        if not isinstance(v, str):
            raise BadValue(f"expected a string, got {type(v).__name__}")
        return v
    if pgtype in INT_RANGES:
        return check_int(pgtype, v)
    if pgtype == "float8":
        if not isinstance(v, float):
            raise BadValue(f"expected a float, got {type(v).__name__}")
        return v
    if pgtype == "bool":
        if not isinstance(v, bool):
            raise BadValue(f"expected a bool, got {type(v).__name__}")
        return v
    if pgtype.startswith("numeric"):
        if not isinstance(v, Decimal):
            raise BadValue(f"expected a decimal, got {type(v).__name__}")
        return v
    if pgtype == "timestamptz":
        if not isinstance(v, dt.datetime) or v.tzinfo is None:
            raise BadValue(f"expected an aware datetime, got {v!r}")
        return v.astimezone(UTC)
    if pgtype == "date":
        if type(v) is not dt.date:
            raise BadValue(f"expected a date, got {type(v).__name__}")
        return v
    if pgtype == "jsonb":
        if not isinstance(v, str):
            raise BadValue(f"expected JSON text in a string column, got {type(v).__name__}")
        try:
            return Json(json.loads(v, parse_float=Decimal))
        except ValueError as e:
            raise BadValue(f"invalid JSON text: {e}") from e
    if pgtype == "text[]":
        if not isinstance(v, list) or not all(x is None or isinstance(x, str) for x in v):
            raise BadValue(f"expected a list of strings, got {v!r}")
        return list(v)
    raise BadValue(f"unhandled type {pgtype}")


def normalize_jsonl(pgtype: str, v):
    """v comes from json.loads(line, parse_float=Decimal)."""
    if v is None:
        return None
    if pgtype == "uuid" and isinstance(v, str):
        return check_uuid(v)
    if pgtype in ("uuid", "text", "inet"):
        if not isinstance(v, str):
            raise BadValue(f"expected a JSON string, got {json_kind(v)}")
        return v
    if pgtype in INT_RANGES:
        if type(v) is not int:
            raise BadValue(f"expected a JSON integer, got {json_kind(v)}")
        return check_int(pgtype, v)
    if pgtype == "float8":
        # Numbers only (the text is parsed to the nearest double, as any reader would);
        # NaN / Infinity tokens are accepted for non-finite values.
        if isinstance(v, bool) or not isinstance(v, (int, float, Decimal)):
            raise BadValue(f"expected a JSON number, got {json_kind(v)}")
        if isinstance(v, int) and abs(v) > 2**53:
            raise BadValue(f"integer {v} is not exactly representable as float8")
        return float(v)
    if pgtype == "bool":
        if not isinstance(v, bool):
            raise BadValue(f"expected a JSON boolean, got {json_kind(v)}")
        return v
    if pgtype.startswith("numeric"):
        _, scale = numeric_ps(pgtype)
        if not isinstance(v, str):
            raise BadValue(f"expected numeric as a JSON string with {scale} fractional digits, got {json_kind(v)}")
        if v != "NaN":
            frac = rf"\.\d{{{scale}}}" if scale > 0 else ""
            if not re.fullmatch(rf"-?(0|[1-9]\d*){frac}", v):
                example = "12" + ("." + "3" * scale if scale else "")
                raise BadValue(f"numeric string {v!r} is not a plain decimal with exactly "
                               f"{scale} fractional digits (like {example!r})")
        return Decimal(v)
    if pgtype == "timestamptz":
        if not isinstance(v, str) or not TIMESTAMP_RE.match(v):
            raise BadValue(f"timestamptz must be a string like 2026-11-19T10:00:00.123456Z "
                           f"(UTC, 6 fractional digits, Z), got {v!r}")
        try:
            return dt.datetime.strptime(v, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
        except ValueError as e:
            raise BadValue(f"invalid timestamp {v!r}: {e}") from e
    if pgtype == "date":
        if not isinstance(v, str) or not DATE_RE.match(v):
            raise BadValue(f"date must be a string like 2026-11-19, got {v!r}")
        try:
            return dt.date.fromisoformat(v)
        except ValueError as e:
            raise BadValue(f"invalid date {v!r}: {e}") from e
    if pgtype == "jsonb":
        return Json(v)
    if pgtype == "text[]":
        if not isinstance(v, list) or not all(x is None or isinstance(x, str) for x in v):
            raise BadValue(f"expected a JSON array of strings, got {v!r}")
        return v
    raise BadValue(f"unhandled type {pgtype}")


def json_kind(v):
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, (int, float, Decimal)):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "array"
    if isinstance(v, dict):
        return "object"
    return type(v).__name__


def expected_arrow_type(pgtype: str, pa):
    """A predicate on the arrow type and a description of what is expected."""
    strings = (pa.types.is_string, pa.types.is_large_string,
               getattr(pa.types, "is_string_view", lambda t: False))

    def is_str(t):
        return any(f(t) for f in strings)

    if pgtype in ("uuid", "text", "inet", "jsonb"):
        return is_str, "string"
    if pgtype == "int2":
        return pa.types.is_int16, "int16"
    if pgtype == "int4":
        return pa.types.is_int32, "int32"
    if pgtype == "int8":
        return pa.types.is_int64, "int64"
    if pgtype == "float8":
        return pa.types.is_float64, "double"
    if pgtype == "bool":
        return pa.types.is_boolean, "bool"
    if pgtype == "date":
        return pa.types.is_date32, "date32[day]"
    if pgtype == "timestamptz":
        return (lambda t: pa.types.is_timestamp(t) and t.unit == "us"
                and t.tz in ("UTC", "+00:00")), "timestamp[us, tz=UTC]"
    if pgtype == "text[]":
        return (lambda t: (pa.types.is_list(t) or pa.types.is_large_list(t))
                and is_str(t.value_type)), "list<string>"
    ps = numeric_ps(pgtype)
    if ps:
        p, s = ps
        return (lambda t: pa.types.is_decimal128(t) and t.precision == p
                and t.scale == s), f"decimal128({p}, {s})"
    raise AssertionError(pgtype)


class Report:
    def __init__(self):
        self.errors = []
        self.bad_values = 0

    def error(self, kind, message, **fields):
        self.errors.append({"kind": kind, "message": message, **fields})

    def bad_value(self, path, where, column, value, problem, key=None):
        self.bad_values += 1
        if self.bad_values <= MAX_BAD_VALUES:
            fields = {"path": path, "column": column, "value": to_jsonable(value)}
            fields.update(where)
            if key is not None:
                fields["id"] = key_display(key)
            self.error("bad_value", f"{path} {fmt_where(where)} column {column}: {problem}", **fields)


def fmt_where(where):
    return ", ".join(f"{k} {v}" for k, v in where.items())


def read_parquet_file(path, schema: Schema, report: Report):
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
        kv = pf.metadata.metadata or {}
        table = pf.read()
    except Exception as e:  # corrupt / not parquet
        report.error("read_error", f"{path}: cannot read as Parquet: {e}", path=path)
        return None, {}
    meta = {}
    for k, v in kv.items():
        k = k.decode("utf-8", "replace")
        if k == "ARROW:schema":  # arrow's own serialized schema blob, not ours
            continue
        meta[k] = v.decode("utf-8", "replace")

    names = table.schema.names
    if names != schema.names:
        report.error("schema_mismatch",
                     f"{path}: parquet columns {names} differ from the schema's {schema.names} "
                     f"(names and order must be equal)",
                     path=path, got=names, expected=schema.names)
    usable = []
    for name in schema.names:
        if name not in names:
            continue
        arrow_type = table.schema.field(name).type
        ok, want = expected_arrow_type(schema.types[name], pa)
        if not ok(arrow_type):
            report.error("schema_mismatch",
                         f"{path}: column {name} has parquet/arrow type {arrow_type}, "
                         f"expected {want} for {schema.types[name]}",
                         path=path, column=name, got=str(arrow_type), expected=want)
        usable.append(name)

    columns = {}
    for name in usable:
        try:
            columns[name] = table.column(name).to_pylist()
        except Exception as e:
            report.error("read_error", f"{path}: cannot convert column {name}: {e}",
                         path=path, column=name)
    rows = []
    for i in range(table.num_rows):
        rec, bad = {}, {}
        for name in schema.names:
            if name not in columns:
                bad[name] = True
                continue
            raw = columns[name][i]
            try:
                rec[name] = normalize_parquet(schema.types[name], raw)
            except BadValue as e:
                bad[name] = (raw, str(e))
        rows.append((i, rec, bad))
    return rows, meta


def open_text(path):
    if path.endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8", newline="")
    return open(path, encoding="utf-8", newline="")


def reject_duplicate_keys(pairs):
    out = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"duplicate key {k!r}")
        out[k] = v
    return out


def read_jsonl_file(path, schema: Schema, report: Report):
    try:
        with open_text(path) as f:
            text = f.read()
    except (OSError, UnicodeDecodeError, EOFError) as e:
        report.error("read_error", f"{path}: cannot read as UTF-8 text: {e}", path=path)
        return None, {}
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # final newline
    elif lines:
        report.error("format_error", f"{path}: last line is not terminated by a newline",
                     path=path, line=len(lines))
    expected = set(schema.names)
    rows = []
    for lineno, line in enumerate(lines, 1):
        if line.endswith("\r"):
            report.error("format_error", f"{path} line {lineno}: CRLF line ending", path=path, line=lineno)
            line = line[:-1]
        if not line.strip():
            report.error("format_error", f"{path} line {lineno}: blank line", path=path, line=lineno)
            continue
        try:
            obj = json.loads(line, parse_float=Decimal, object_pairs_hook=reject_duplicate_keys)
        except ValueError as e:
            report.error("format_error", f"{path} line {lineno}: invalid JSON: {e}",
                         path=path, line=lineno)
            continue
        if not isinstance(obj, dict):
            report.error("format_error", f"{path} line {lineno}: not a JSON object",
                         path=path, line=lineno)
            continue
        keys = set(obj)
        if keys != expected:
            missing = [n for n in schema.names if n not in keys]
            extra = sorted(keys - expected)
            report.error("schema_mismatch",
                         f"{path} line {lineno}: keys differ from the schema's columns"
                         + (f"; missing {missing}" if missing else "")
                         + (f"; unexpected {extra}" if extra else ""),
                         path=path, line=lineno, missing=missing, unexpected=extra)
        rec, bad = {}, {}
        for name in schema.names:
            if name not in obj:
                bad[name] = True
                continue
            try:
                rec[name] = normalize_jsonl(schema.types[name], obj[name])
            except BadValue as e:
                bad[name] = (obj[name], str(e))
        rows.append((lineno, rec, bad))
    return rows, {}


# ----------------------------------------------------------------------------
# DuckDB cross-check
# ----------------------------------------------------------------------------


def duckdb_check(paths, fmt, schema: Schema, file_keys, file_rows, report: Report):
    try:
        import duckdb
    except ImportError as e:
        report.error("duckdb_error", f"duckdb is not installed: {e}")
        return None
    lit = "[" + ", ".join("'" + p.replace("'", "''") + "'" for p in paths) + "]"
    if fmt == "parquet":
        src = f"read_parquet({lit})"
    else:
        # All columns read as JSON so DuckDB's type guessing cannot get in the way.
        cols = "{" + ", ".join(
            "'" + n.replace("'", "''") + "': 'JSON'" for n in schema.names) + "}"
        src = f"read_json({lit}, format='newline_delimited', columns={cols})"
    quoted = ['"' + c.replace('"', '""') + '"' for c in schema.primary_key]
    if fmt == "parquet":
        sel = ", ".join(f"CAST({q} AS VARCHAR)" for q in quoted)
    else:
        # JSON values: ->> '$' unwraps strings to their text, numbers to theirs.
        sel = ", ".join(f"({q} ->> '$')" for q in quoted)
    try:
        con = duckdb.connect(config={"autoinstall_known_extensions": False})
        try:
            got = con.execute(f"SELECT {sel} FROM {src}").fetchall()
        finally:
            con.close()
    except Exception as e:
        report.error("duckdb_error", f"DuckDB could not read the files: {e}")
        return None
    duck_keys = sorted(tuple(r) for r in got)
    ours = sorted(tuple(key_to_text(x) for x in k) for k in file_keys)
    if len(got) != file_rows:
        report.error("duckdb_mismatch",
                     f"DuckDB read {len(got)} rows, the Python reader {file_rows}",
                     duckdb_rows=len(got), python_rows=file_rows)
    elif len(file_keys) == file_rows and duck_keys != ours:
        only_duck = sorted(set(duck_keys) - set(ours))[:MAX_ID_LIST]
        only_ours = sorted(set(ours) - set(duck_keys))[:MAX_ID_LIST]
        report.error("duckdb_mismatch", "DuckDB and the Python reader disagree on the ids read",
                     only_duckdb=[list(k) for k in only_duck],
                     only_python=[list(k) for k in only_ours])
    return len(got)


def key_to_text(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


# ----------------------------------------------------------------------------
# Main
# ----------------------------------------------------------------------------


def parse_ts(s, flag):
    try:
        t = dt.datetime.fromisoformat(s)
    except ValueError as e:
        raise UsageError(f"{flag}: not an RFC 3339 timestamp: {s!r}") from e
    if t.tzinfo is None:
        raise UsageError(f"{flag}: timestamp needs a UTC offset or Z: {s!r}")
    return t.astimezone(UTC)


def org_value_for(pgtype, org):
    if pgtype == "uuid":
        try:
            return str(uuid.UUID(org))
        except ValueError as e:
            raise UsageError(f"--org: not a uuid: {org!r}") from e
    if pgtype in INT_RANGES:
        try:
            return int(org)
        except ValueError as e:
            raise UsageError(f"--org: not an integer: {org!r}") from e
    return org


def run(argv):
    ap = argparse.ArgumentParser(
        description="Check that exported Parquet/JSONL files equal the source rows.")
    ap.add_argument("--dsn", required=True, help="libpq connection string / URL")
    ap.add_argument("--schema", required=True, help="published schema JSON (schemas/<t>/vN.json)")
    ap.add_argument("--org", required=True, help="organization id the export is for")
    ap.add_argument("--from", dest="from_ts", required=True, help="window start, inclusive (RFC 3339)")
    ap.add_argument("--to", dest="to_ts", required=True, help="window end, exclusive (RFC 3339)")
    ap.add_argument("--format", required=True, choices=["parquet", "jsonl"])
    ap.add_argument("--current", action="store_true",
                    help="the files hold current rows only (an analyst table read back): "
                         "no _op column, no deletes")
    ap.add_argument("--duckdb", action="store_true",
                    help="also read the files with DuckDB and compare row count and ids")
    ap.add_argument("files", nargs="+", metavar="FILE")
    args = ap.parse_args(argv)  # exits 2 on usage errors

    schema = Schema(args.schema, current=args.current)
    args.from_ts = parse_ts(args.from_ts, "--from")
    args.to_ts = parse_ts(args.to_ts, "--to")
    org = org_value_for(schema.types[schema.org_column], args.org)
    for p in args.files:
        if not os.path.isfile(p):
            raise UsageError(f"no such file: {p}")

    report = Report()
    source = load_source(args, schema, str(org))

    # Source index.
    pk = schema.primary_key
    src_by_key = {}
    for rec in source:
        key = tuple(rec[c] for c in pk)
        if key in src_by_key:
            report.error("source_duplicate_id",
                         f"source has id {key_display(key)} twice (is the primary key right?)",
                         id=key_display(key))
        src_by_key[key] = rec

    # File rows.
    files_out = []
    seen = {}  # key -> (path, where)
    file_keys = []  # every readable key, duplicates included (for the DuckDB check)
    mismatches = 0
    foreign = 0
    file_rows = 0
    reader = read_parquet_file if args.format == "parquet" else read_jsonl_file
    org_type = schema.types[schema.org_column]
    want_org = normalize_source(org_type, org)
    for path in args.files:
        rows, meta = reader(path, schema, report)
        files_out.append({"path": path, "rows": len(rows) if rows is not None else 0,
                          "key_value_metadata": meta})
        if rows is None:
            continue
        file_rows += len(rows)
        pos_name = "row" if args.format == "parquet" else "line"
        for pos, rec, bad in rows:
            where = {pos_name: pos}
            if any(c in bad for c in pk):
                for c in pk:
                    if isinstance(bad.get(c), tuple):
                        report.bad_value(path, where, c, bad[c][0], bad[c][1])
                if not any(isinstance(bad.get(c), tuple) for c in pk):
                    report.error("bad_value", f"{path} {fmt_where(where)}: primary key column missing",
                                 path=path, **where)
                continue
            key = tuple(rec[c] for c in pk)
            file_keys.append(key)
            kd = key_display(key)
            for name, b in bad.items():
                if isinstance(b, tuple) and name not in pk:
                    report.bad_value(path, where, name, b[0], b[1], key=key)
            if key in seen:
                first_path, first_where = seen[key]
                report.error("duplicate_id",
                             f"id {kd} appears twice: {first_path} ({fmt_where(first_where)}) "
                             f"and {path} ({fmt_where(where)})",
                             id=kd, files=[first_path, path],
                             first={"path": first_path, **first_where},
                             second={"path": path, **where})
                continue
            seen[key] = (path, where)
            if schema.org_column in rec and rec[schema.org_column] != want_org:
                foreign += 1
                if foreign <= MAX_FOREIGN:
                    report.error("foreign_row",
                                 f"{path} {fmt_where(where)}: id {kd} has {schema.org_column} "
                                 f"{to_jsonable(rec[schema.org_column])}, expected {to_jsonable(want_org)}",
                                 id=kd, path=path, got=to_jsonable(rec[schema.org_column]),
                                 expected=to_jsonable(want_org), **where)
            src = src_by_key.get(key)
            if src is None:
                continue  # reported below as unexpected
            for name in schema.names:
                if name in bad:
                    continue  # already reported as bad_value / schema_mismatch
                if not values_equal(schema.types[name], src[name], rec[name], args.format):
                    mismatches += 1
                    if mismatches <= MAX_MISMATCHES:
                        report.error("value_mismatch",
                                     f"id {kd} column {name}: source {show(src[name])} "
                                     f"!= file {show(rec[name])} ({path} {fmt_where(where)})",
                                     id=kd, column=name, source=to_jsonable(src[name]),
                                     file=to_jsonable(rec[name]), path=path, **where)
    if mismatches > MAX_MISMATCHES:
        report.error("value_mismatch_truncated",
                     f"{mismatches} value mismatches in all; first {MAX_MISMATCHES} listed",
                     count=mismatches)
    if foreign > MAX_FOREIGN:
        report.error("foreign_row_truncated",
                     f"{foreign} rows of another organization in all; first {MAX_FOREIGN} listed",
                     count=foreign)
    if report.bad_values > MAX_BAD_VALUES:
        report.error("bad_value_truncated",
                     f"{report.bad_values} bad values in all; first {MAX_BAD_VALUES} listed",
                     count=report.bad_values)

    def sort_key(k):
        return tuple(key_to_text(x) for x in k)

    missing = sorted((k for k in src_by_key if k not in seen), key=sort_key)
    unexpected = sorted((k for k in seen if k not in src_by_key), key=sort_key)
    if missing:
        ids = [key_display(k) for k in missing[:MAX_ID_LIST]]
        report.error("missing_ids",
                     f"{len(missing)} source row(s) missing from the files, e.g. {show(ids)}",
                     count=len(missing), ids=ids)
    if unexpected:
        ids = [key_display(k) for k in unexpected[:MAX_ID_LIST]]
        report.error("unexpected_ids",
                     f"{len(unexpected)} file row(s) not among the source rows, e.g. {show(ids)}",
                     count=len(unexpected), ids=ids)

    duck_rows = None
    if args.duckdb:
        duck_rows = duckdb_check(args.files, args.format, schema, file_keys, file_rows, report)

    return {
        "ok": not report.errors,
        "table": schema.table,
        "format": args.format,
        "source_rows": len(source),
        "file_rows": file_rows,
        "duckdb_rows": duck_rows,
        "files": files_out,
        "errors": report.errors,
    }


def main(argv=None):
    try:
        result = run(sys.argv[1:] if argv is None else argv)
    except UsageError as e:
        print(f"verify_export.py: error: {e}", file=sys.stderr)
        return 2
    json.dump(result, sys.stdout, indent=2, ensure_ascii=False, allow_nan=False)
    sys.stdout.write("\n")
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    # Leave without running interpreter teardown: pyarrow's C++ thread pools can abort the
    # process at exit ("terminate called without an active exception") after the work is
    # done and printed, which would turn a correct read into a failed one.
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code or 0)
