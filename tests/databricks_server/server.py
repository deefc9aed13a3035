"""A local stand-in for the parts of a Databricks workspace that tidemark talks to.

OURS, not Databricks': written by the tidemark project from Databricks' public API documentation
(Files API, SQL Statement Execution API, OAuth M2M); no Databricks emulator exists. SQL runs on
DuckDB 1.5.5, one database file per Unity Catalog catalog, so `catalog.schema.table` resolves.

Endpoints (HTTP/1.1, 127.0.0.1):
  POST /oidc/v1/token                 OAuth M2M: Basic id:secret, grant_type=client_credentials
  PUT|GET|HEAD|DELETE /api/2.0/fs/files/Volumes/{catalog}/{schema}/{volume}/{path}
                                      PUT ?overwrite=true|false (409 if it exists), 204 no body
  GET  /api/2.0/fs/directories/Volumes/...   {"contents": [{path, name, is_directory, ...}]}
  GET  /api/2.0/sql/warehouses/{id}   {"id", "name", "state": "RUNNING"}
  POST /api/2.0/sql/statements        warehouse_id, statement, parameters, wait_timeout 0s or
                                      5s..50s, on_wait_timeout CONTINUE|CANCEL; disposition
                                      INLINE + format JSON_ARRAY (catalog/schema/row_limit: no)
  GET  /api/2.0/sql/statements/{id}   PENDING -> RUNNING -> SUCCEEDED | FAILED | CANCELED
  POST /api/2.0/sql/statements/{id}/cancel
HTTP errors are {"error_code", "message"}: 401 UNAUTHENTICATED (no bearer token), 403
PERMISSION_DENIED (unknown or expired token), 404 RESOURCE_DOES_NOT_EXIST, 400
INVALID_PARAMETER_VALUE, 409 ALREADY_EXISTS, 429/503 TEMPORARILY_UNAVAILABLE (injected). A failed statement is HTTP 200, state FAILED, status.error
{error_code, message}, the message "[ERROR_CLASS] <DuckDB's own text>".

SQL (the subset tidemark emits, translated to DuckDB): backtick identifiers, literals with
backslash escapes, :name parameters; CREATE SCHEMA/VOLUME; CREATE TABLE ... USING DELTA
(COMMENTs dropped; STRING, TIMESTAMP -> TIMESTAMPTZ in UTC, TIMESTAMP_NTZ, ARRAY<T>); CREATE
VIEW; ALTER TABLE .. ADD COLUMNS (one column); DESCRIBE [TABLE] (col_name, data_type, comment);
MERGE INTO (DuckDB's, counted via RETURNING); SELECT; INSERT/UPDATE/DELETE/DROP. COPY INTO
t FROM '/Volumes/..' | (SELECT list FROM '/Volumes/..') FILEFORMAT = PARQUET [FILES = (..) |
PATTERN = '..'] [COPY_OPTIONS ('force' = 'true')] = INSERT .. BY NAME SELECT .. FROM
read_parquet(file) per file, in one transaction with a per-table ledger of loaded files: a file
loaded before is skipped even if it changed, as on Databricks. Result: num_affected_rows,
num_inserted_rows, num_skipped_corrupt_files.
COPY INTO t FROM 's3://bucket/prefix/..': the path must lie inside an external location given
with --external-location (else [INSUFFICIENT_PERMISSIONS], as without READ FILES); the server
reads the files from the S3 endpoint of --s3-endpoint (moto) with the storage credential of
--s3-credential KEY:SECRET (boto3; DuckDB's httpfs would be a download), into a temporary
directory, and loads them as above. The ledger keys s3:// files by URL.
NOT emulated: Delta files and time travel, mergeSchema, other file formats, EXTERNAL_LINKS,
ARROW_STREAM, result chunks (all rows come inline), grants, Unity Catalog REST, VARIANT, CREATE
CATALOG (catalogs come from --volume; `main` is reserved by DuckDB), Delta's concurrency rules
(a DuckDB write conflict is FAILED with error_code ABORTED).

Test hooks (no auth): POST /_test/fail_next {"count", "status"=503, "path_prefix"?, "method"?},
POST /_test/fail_statements {"count", "error_code", "message"}, POST /_test/statement_delay
{"seconds"}, GET /_test/stats (request counters).

Usage: server.py --data DIR [--port 0] --warehouse ID --volume CAT.SCHEMA.VOL --token PAT
  [--oauth-client ID:SECRET] [--oauth-ttl S]; prints "listening on 127.0.0.1:PORT" when ready.
"""

import argparse
import base64
import fnmatch
import json
import os
import re
import secrets
import tempfile
import threading
import time
import urllib.parse
import uuid
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import duckdb

ARGS = None
DB = None
LOCK = threading.Lock()
STATE = {"fail_next": [], "fail_statements": [], "delay": 0.0, "stats": {}}
TOKENS = {}  # OAuth access token -> expiry (epoch seconds)
STATEMENTS = {}


class ApiError(Exception):
    def __init__(self, status, code, message):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class SqlError(Exception):
    def __init__(self, cls, message, code="BAD_REQUEST"):
        super().__init__(message)
        self.cls, self.message, self.code = cls, message, code


# ----------------------------------------------------------------------------- catalogs and volumes
def attach(catalog):
    """A Unity Catalog catalog is an attached DuckDB file holding its schemas and its COPY ledger."""
    if not re.fullmatch(r"[\w-]+", catalog):
        raise SqlError("INVALID_IDENTIFIER", f"catalog name {catalog!r} is not supported here")
    with LOCK:
        if catalog not in {r[0] for r in DB.execute("SELECT database_name FROM duckdb_databases()").fetchall()}:
            DB.execute(f"ATTACH '{os.path.join(ARGS.data, catalog + '.duckdb')}' AS \"{catalog}\"")
            DB.execute(f'CREATE TABLE IF NOT EXISTS "{catalog}".main.copy_into_ledger '
                       "(table_name VARCHAR, file_path VARCHAR, rows BIGINT, loaded_at TIMESTAMPTZ)")


def volume_dir(*names):
    return os.path.join(ARGS.data, "volumes", *names)


def create_volume(catalog, schema, volume, if_not_exists):
    q = "SELECT count(*) FROM duckdb_schemas() WHERE database_name = ? AND schema_name = ?"
    if not DB.cursor().execute(q, [catalog, schema]).fetchone()[0]:
        raise SqlError("SCHEMA_NOT_FOUND", f"The schema `{catalog}`.`{schema}` cannot be found.")
    d = volume_dir(catalog, schema, volume)
    if os.path.isdir(d) and not if_not_exists:
        raise SqlError("VOLUME_ALREADY_EXISTS", f"Volume `{catalog}`.`{schema}`.`{volume}` already exists.")
    os.makedirs(d, exist_ok=True)


def local_path(volume_path):
    """/Volumes/c/s/v/rest -> (local file path, volume root); RESOURCE_DOES_NOT_EXIST if no volume."""
    parts = volume_path.split("/")
    if len(parts) < 5 or parts[0] != "" or parts[1] != "Volumes" or ".." in parts:
        raise ApiError(400, "INVALID_PARAMETER_VALUE", f"Invalid path: {volume_path}")
    root = volume_dir(*parts[2:5])
    if not os.path.isdir(root):
        raise ApiError(404, "RESOURCE_DOES_NOT_EXIST", f"Volume '{'.'.join(parts[2:5])}' does not exist.")
    return os.path.join(root, *[p for p in parts[5:] if p]), root


# ----------------------------------------------------------------------------- SQL translation
TOKEN = re.compile(r"'(?:\\.|[^'\\])*'|\"(?:\\.|[^\"\\])*\"|`(?:``|[^`])*`|--[^\n]*|/\*.*?\*/|[^'\"`/-]+|.", re.S)
ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "0": "\0"}


def tokens(sql):
    """Splits Databricks SQL into ("code"|"str"|"ident", text) tokens; drops comments."""
    out = []
    for m in TOKEN.finditer(sql):
        t = m[0]
        if t[0] in "'\"" and len(t) > 1 and t[-1] == t[0]:
            item = ("str", re.sub(r"\\(.)", lambda e: ESCAPES.get(e[1], e[1]), t[1:-1]))
        elif t[0] == "`" and len(t) > 1 and t[-1] == "`":
            item = ("ident", t[1:-1].replace("``", "`"))
        elif t.startswith("--") or (t.startswith("/*") and len(t) > 1):
            continue
        elif t[0] in "'\"`":
            raise SqlError("PARSE_SYNTAX_ERROR", "unterminated quoted literal or identifier")
        elif out and out[-1][0] == "code":
            out[-1] = ("code", out[-1][1] + t)
            continue
        else:
            item = ("code", t)
        out.append(item)
    return out


CODE_RULES = [
    (r"\bUSING\s+DELTA\b", ""),
    (r"\bTIMESTAMP\b", "TIMESTAMPTZ"),
    (r"\bTIMESTAMP_NTZ\b", "TIMESTAMP"),
    (r"\bSTRING\b", "VARCHAR"),
    (r"\bARRAY\s*<\s*([A-Za-z_]+(?:\(\d+(?:,\s*\d+)?\))?)\s*>", r"\1[]"),
    (r"\bcurrent_timestamp\s*\(\s*\)", "current_timestamp"),
    (r"(?<![:\w]):([A-Za-z_]\w*)", r"$\1"),
]


def translate(sql):
    toks = tokens(sql)
    out = []
    for n, (kind, text) in enumerate(toks):
        if kind == "code":
            nxt = toks[n + 1][0] if n + 1 < len(toks) else None
            if nxt == "str" and re.search(r"\bCOMMENT\s*$", text, re.I):
                text = re.sub(r"\bCOMMENT\s*$", "", text, flags=re.I)
                toks[n + 1] = ("drop", "")
            for pat, rep in CODE_RULES:
                text = re.sub(pat, rep, text, flags=re.I)
            out.append(text)
        elif kind == "str":
            out.append("'" + text.replace("'", "''") + "'")
        elif kind == "ident":
            out.append('"' + text.replace('"', '""') + '"')
    return "".join(out).strip().rstrip(";").strip()


def unquote(lit):
    return lit[1:-1].replace("''", "'")


LIT = r"'(?:[^']|'')*'"
COPY = re.compile(r"^COPY\s+INTO\s+(?P<target>.+?)\s+FROM\s+(?P<src>\(.*\)|" + LIT + r")\s+FILEFORMAT\s*=\s*"
                  r"(?P<fmt>\w+)(?P<rest>.*)$", re.I | re.S)
COPY_SELECT = re.compile(r"^\(\s*SELECT\s+(?P<list>.*?)\s+FROM\s+(?P<path>" + LIT + r")\s*\)$", re.I | re.S)


def copy_into(cur, sql):
    m = COPY.match(sql)
    if not m:
        raise SqlError("PARSE_SYNTAX_ERROR", "COPY INTO form not supported by this server")
    target, src, rest = m["target"], m["src"], m["rest"]
    if m["fmt"].upper() != "PARQUET":
        raise SqlError("UNSUPPORTED_FEATURE", f"FILEFORMAT = {m['fmt']} is not emulated (PARQUET only)")
    select_list = "*"
    if src.startswith("("):
        sm = COPY_SELECT.match(src)
        if not sm:
            raise SqlError("PARSE_SYNTAX_ERROR", "COPY INTO (SELECT ... FROM '<path>') expected")
        select_list, src = sm["list"], sm["path"]
    directory = unquote(src)
    files_m = re.search(r"\bFILES\s*=\s*\(([^)]*)\)", rest, re.I)
    pattern_m = re.search(r"\bPATTERN\s*=\s*(" + LIT + ")", rest, re.I)
    opts_m = re.search(r"\bCOPY_OPTIONS\s*\(([^)]*)\)", rest, re.I)
    opts = dict((unquote(k).lower(), unquote(v).lower()) for k, v in
                re.findall(r"(" + LIT + r")\s*=\s*(" + LIT + ")", opts_m[1] if opts_m else ""))
    if directory.startswith("s3://"):
        with tempfile.TemporaryDirectory(prefix="dbx-external-") as tmp:
            names = fetch_external(directory, [unquote(x) for x in re.findall(LIT, files_m[1])] if files_m else None,
                                   unquote(pattern_m[1]) if pattern_m else None, tmp)
            return load_files(cur, target, select_list, directory, names, tmp, opts)
    try:
        root_local, _ = local_path(directory.rstrip("/"))
    except ApiError as e:
        raise SqlError("UC_VOLUME_NOT_FOUND" if e.status == 404 else "INVALID_PARAMETER_VALUE", e.message)
    if files_m:
        names = [unquote(x) for x in re.findall(LIT, files_m[1])]
        for name in names:
            if not os.path.isfile(os.path.join(root_local, name)):
                raise SqlError("PATH_NOT_FOUND", f"Path does not exist: {directory.rstrip('/')}/{name}")
    else:
        names = []
        for base, _, fs in os.walk(root_local):
            names += [os.path.relpath(os.path.join(base, f), root_local) for f in fs]
        if pattern_m:
            names = [n for n in names if fnmatch.fnmatch(n, unquote(pattern_m[1]))]
    return load_files(cur, target, select_list, directory, names, root_local, opts)


def fetch_external(url, files, pattern, tmp):
    """Downloads the files of an s3:// COPY source into tmp with the storage credential; returns
    their names relative to url."""
    import boto3
    import botocore.exceptions

    base = url.rstrip("/")
    if not any(base == loc or base.startswith(loc + "/") for loc in ARGS.external_location):
        raise SqlError("INSUFFICIENT_PERMISSIONS",
                       f"User does not have READ FILES on any external location covering '{base}'.")
    bucket, _, prefix = base[len("s3://"):].partition("/")
    key, _, secret = (ARGS.s3_credential or ":").partition(":")
    s3 = boto3.client("s3", endpoint_url=ARGS.s3_endpoint, aws_access_key_id=key, aws_secret_access_key=secret,
                      region_name="us-east-1")
    root = prefix + "/" if prefix else ""
    try:
        if files is None:
            names = []
            for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=root):
                names += [o["Key"][len(root):] for o in page.get("Contents", [])]
            if pattern:
                names = [n for n in names if fnmatch.fnmatch(n, pattern)]
        else:
            names = files
        for name in names:
            local = os.path.join(tmp, name)
            os.makedirs(os.path.dirname(local), exist_ok=True)
            try:
                s3.download_file(bucket, root + name, local)
            except botocore.exceptions.ClientError as e:
                if e.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                    raise SqlError("PATH_NOT_FOUND", f"Path does not exist: {base}/{name}")
                raise
    except botocore.exceptions.ClientError as e:
        raise SqlError("CLOUD_FILE_SOURCE_FILE_NOT_FOUND" if "NoSuchBucket" in str(e) else "IO_ERROR",
                       f"reading {base}: {e}")
    return names


def load_files(cur, target, select_list, directory, names, root_local, opts):
    """Loads each not yet loaded file (relative to root_local) into target in one transaction."""
    catalog = target.split(".")[0].strip('"')
    ledger = f'"{catalog}".main.copy_into_ledger'
    key = target.replace('"', "").lower()
    inserted = 0
    cur.execute("BEGIN")
    try:
        for name in sorted(names):
            path = directory.rstrip("/") + "/" + name
            seen = cur.execute(f"SELECT count(*) FROM {ledger} WHERE table_name = ? AND file_path = ?",
                               [key, path]).fetchone()[0]
            if seen and opts.get("force") != "true":
                continue
            local = os.path.join(root_local, name).replace("'", "''")
            n = cur.execute(f"INSERT INTO {target} BY NAME SELECT {select_list} FROM read_parquet('{local}')"
                            ).fetchone()[0]
            cur.execute(f"INSERT INTO {ledger} VALUES (?, ?, ?, now())", [key, path, n])
            inserted += n
        cur.execute("COMMIT")
    except BaseException:
        cur.execute("ROLLBACK")
        raise
    cols = ["num_affected_rows", "num_inserted_rows", "num_skipped_corrupt_files"]
    return cols, ["BIGINT"] * 3, [[str(inserted), str(inserted), "0"]]


READS = ("SELECT", "WITH", "VALUES", "DESCRIBE", "SHOW", "FROM")
FORMATS = {"TIMESTAMP WITH TIME ZONE": "strftime(timezone('UTC', {q}), '%Y-%m-%dT%H:%M:%S.%fZ')",
           "TIMESTAMP": "strftime({q}, '%Y-%m-%dT%H:%M:%S.%f')"}  # JSON_ARRAY text of a value


def execute(cur, raw_sql, params):
    """Runs one Databricks SQL statement; returns (column names, DuckDB types, rows as strings)."""
    sql = translate(raw_sql)
    first = (re.findall(r"^\w+", sql) or [""])[0].upper()
    if first == "COPY":
        return copy_into(cur, sql)
    m = re.match(r'^CREATE\s+VOLUME\s+(IF\s+NOT\s+EXISTS\s+)?"?([\w-]+)"?\."?([\w-]+)"?\."?([\w-]+)"?$', sql, re.I)
    if m:
        create_volume(m[2], m[3], m[4], bool(m[1]))
        return [], [], []
    m = re.match(r"^DESCRIBE\s+(?:TABLE\s+)?(.+)$", sql, re.I | re.S)
    if m:  # Databricks' shape: col_name, data_type, comment
        rows = cur.execute(f"DESCRIBE {m[1]}").fetchall()
        return ["col_name", "data_type", "comment"], ["VARCHAR"] * 3, [[r[0], str(r[1]).lower(), None] for r in rows]
    m = re.match(r"^(ALTER\s+TABLE\s+\S+)\s+ADD\s+COLUMNS\s*\((.*)\)$", sql, re.I | re.S)
    if m:  # one column per statement, as tidemark sends them
        if re.search(r",(?![^()]*\))", m[2]):
            raise SqlError("UNSUPPORTED_FEATURE", "this server takes one column per ADD COLUMNS")
        sql = f"{m[1]} ADD COLUMN {m[2]}"
    if first in READS:
        rel = cur.sql(sql, params=params or None)
        fmt = [FORMATS.get(str(t), "to_json({q})::VARCHAR" if str(t)[-1] == "]" or str(t)[:3] in ("STR", "MAP")
                           else "CAST({q} AS VARCHAR)").format(q='"' + c.replace('"', '""') + '"')
               for c, t in zip(rel.columns, rel.types)]
        rows = rel.query("q", f"SELECT {', '.join(fmt) or '1'} FROM q").fetchall()
        return rel.columns, [str(t) for t in rel.types], [list(r) for r in rows]
    if first == "MERGE":
        if not re.search(r"\bRETURNING\b", sql, re.I):
            sql += " RETURNING merge_action"
        actions = [r[0] for r in cur.execute(sql, params or None).fetchall()]
        n = {a: actions.count(a) for a in ("UPDATE", "DELETE", "INSERT")}
        cols = ["num_affected_rows", "num_updated_rows", "num_deleted_rows", "num_inserted_rows"]
        return cols, ["BIGINT"] * 4, [[str(len(actions)), str(n["UPDATE"]), str(n["DELETE"]), str(n["INSERT"])]]
    res = cur.execute(sql, params or None)
    if first not in ("INSERT", "UPDATE", "DELETE"):
        return [], [], []
    cols = ["num_affected_rows", "num_inserted_rows"][: 2 if first == "INSERT" else 1]
    return cols, ["BIGINT"] * len(cols), [[str(res.fetchone()[0])] * len(cols)]


ERROR_CLASSES = [  # (DuckDB exception, message pattern, Databricks-like error class)
    ("CatalogException", r"Schema with name", "SCHEMA_NOT_FOUND"),
    ("CatalogException", r"Table with name|does not exist", "TABLE_OR_VIEW_NOT_FOUND"),
    ("CatalogException", r"already exists", "TABLE_OR_VIEW_ALREADY_EXISTS"),
    ("ConversionException", r"", "CAST_INVALID_INPUT"), ("BinderException", r"", "UNRESOLVED_COLUMN"),
    ("ParserException", r"", "PARSE_SYNTAX_ERROR"), ("InvalidInputException", r"", "INVALID_PARAMETER_VALUE"),
    ("ConstraintException", r"NOT NULL", "DELTA_NOT_NULL_CONSTRAINT_VIOLATED"),
    ("ConstraintException", r"", "DELTA_VIOLATE_CONSTRAINT_WITH_VALUES")]


def sql_error(e):
    if isinstance(e, SqlError):
        return e.code, f"[{e.cls}] {e.message}"
    name = type(e).__name__
    if name == "TransactionException":
        return "ABORTED", f"[DELTA_CONCURRENT_APPEND] {e}"
    if name == "InterruptException":
        return "CANCELLED", "[OPERATION_CANCELED] statement canceled"
    for exc, pat, cls in ERROR_CLASSES:
        if name == exc and re.search(pat, str(e)):
            return "BAD_REQUEST", f"[{cls}] {e}"
    return "BAD_REQUEST", f"[{name.upper()}] {e}"


# ----------------------------------------------------------------------------- statements
def type_info(t):
    m = re.match(r"DECIMAL\((\d+),(\d+)\)", t)
    if m:
        return "DECIMAL", f"DECIMAL({m[1]},{m[2]})", {"type_precision": int(m[1]), "type_scale": int(m[2])}
    if t.endswith("[]"):
        return "ARRAY", f"ARRAY<{type_info(t[:-2])[1]}>", {}
    names = {"VARCHAR": "STRING", "BIGINT": "LONG BIGINT", "INTEGER": "INT", "SMALLINT": "SHORT SMALLINT",
             "TINYINT": "BYTE TINYINT", "DOUBLE": "DOUBLE", "FLOAT": "FLOAT", "BOOLEAN": "BOOLEAN", "DATE": "DATE",
             "TIMESTAMP WITH TIME ZONE": "TIMESTAMP", "TIMESTAMP": "TIMESTAMP_NTZ"}
    name, *text = names.get(t, "STRING").split()
    return name, (text or [name])[0], {}


def run_statement(st, body):
    if st["cancel"].wait(STATE["delay"]):
        return
    cur = DB.cursor()
    with LOCK:
        if st["status"]["state"] == "CANCELED":
            return
        st["status"]["state"], st["cursor"] = "RUNNING", cur
        injected = STATE["fail_statements"].pop(0) if STATE["fail_statements"] else None
    try:
        cur.execute("SET TimeZone = 'UTC'")
        if injected:
            raise SqlError(injected.get("class", "INJECTED"), injected.get("message", "injected failure"),
                           injected.get("error_code", "TEMPORARILY_UNAVAILABLE"))
        params = {p["name"]: p.get("value") for p in body.get("parameters") or []}
        cols, types, rows = execute(cur, body["statement"], params)
        columns = [dict(name=c, position=i, type_name=info[0], type_text=info[1], **info[2])
                   for i, (c, info) in enumerate(zip(cols, map(type_info, types)))]
        chunk = {"chunk_index": 0, "row_offset": 0, "row_count": len(rows)}
        result = dict(chunk, data_array=rows) if rows else dict(chunk)
        manifest = {"format": "JSON_ARRAY", "schema": {"column_count": len(columns), "columns": columns},
                    "total_chunk_count": 1, "chunks": [chunk], "total_row_count": len(rows), "truncated": False}
        with LOCK:
            if st["status"]["state"] != "CANCELED":
                st.update(manifest=manifest, result=result, status={"state": "SUCCEEDED"})
    except Exception as e:  # noqa: BLE001 - every failure becomes a FAILED statement
        code, message = sql_error(e)
        with LOCK:
            if st["status"]["state"] != "CANCELED":
                st["status"] = {"state": "FAILED", "error": {"error_code": code, "message": message}}
    finally:
        st["done"].set()
        cur.close()


def public(st):
    return {k: st[k] for k in ("statement_id", "status", "manifest", "result") if k in st}


def cancel(st):
    with LOCK:
        if st["status"]["state"] in ("PENDING", "RUNNING"):
            st["status"] = {"state": "CANCELED"}
            st["cancel"].set()
            if st.get("cursor") is not None:
                st["cursor"].interrupt()


def submit(body):
    if not isinstance(body.get("statement"), str) or not body.get("warehouse_id"):
        raise ApiError(400, "INVALID_PARAMETER_VALUE", "statement and warehouse_id are required")
    if body["warehouse_id"] not in ARGS.warehouse:
        raise ApiError(404, "RESOURCE_DOES_NOT_EXIST", f"Warehouse {body['warehouse_id']} does not exist.")
    if body.get("disposition", "INLINE") != "INLINE" or body.get("format", "JSON_ARRAY") != "JSON_ARRAY":
        raise ApiError(400, "INVALID_PARAMETER_VALUE", "this server emulates disposition=INLINE, format=JSON_ARRAY")
    on_timeout = body.get("on_wait_timeout", "CONTINUE")
    if on_timeout not in ("CONTINUE", "CANCEL"):
        raise ApiError(400, "INVALID_PARAMETER_VALUE", f"on_wait_timeout: {on_timeout}")
    m = re.fullmatch(r"(\d+)s", body.get("wait_timeout") or "10s")
    if not m or not (int(m[1]) == 0 or 5 <= int(m[1]) <= 50):
        raise ApiError(400, "INVALID_PARAMETER_VALUE", f"wait_timeout must be 0s or 5s to 50s: {body['wait_timeout']}")
    wait = int(m[1])
    sid = str(uuid.uuid4())
    st = {"statement_id": sid, "status": {"state": "PENDING"}, "done": threading.Event(),
          "cancel": threading.Event()}
    with LOCK:
        STATEMENTS[sid] = st
    threading.Thread(target=run_statement, args=(st, body), daemon=True).start()
    if wait and not st["done"].wait(wait) and on_timeout == "CANCEL":
        cancel(st)
    return public(st)


# ----------------------------------------------------------------------------- HTTP
class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # quiet
        return

    def reply(self, status, body=None, headers=None, raw=None):
        data = raw if raw is not None else (b"" if body is None else json.dumps(body).encode())
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        if body is not None:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def read_body(self):
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def json_body(self):
        try:
            return json.loads(self.read_body() or b"{}")
        except ValueError:
            raise ApiError(400, "MALFORMED_REQUEST", "request body must be valid JSON")

    def auth(self):
        """Raises 401 without a bearer token, 403 for an unknown or expired one."""
        header = self.headers.get("Authorization", "")
        if not header.startswith("Bearer "):
            raise ApiError(401, "UNAUTHENTICATED", "Credential was not sent or was of an unsupported type.")
        token = header[len("Bearer "):]
        if token in ARGS.token:
            return
        with LOCK:
            expiry = TOKENS.get(token)
        if expiry is None or expiry < time.time():
            raise ApiError(403, "PERMISSION_DENIED", "Invalid access token." if expiry is None
                           else "Access token expired.")

    def handle_any(self):
        url = urllib.parse.urlsplit(self.path)
        path, query = urllib.parse.unquote(url.path), urllib.parse.parse_qs(url.query)
        route = re.sub(r"/[0-9a-f-]{36}", "/{id}", path) if "/sql/" in path else path.split("/Volumes")[0]
        with LOCK:  # counters for /_test/stats, by method and route
            STATE["stats"][f"{self.command} {route}"] = STATE["stats"].get(f"{self.command} {route}", 0) + 1
        try:
            if path.startswith("/_test/"):
                return self.test_hook(path)
            with LOCK:
                fault = next((f for f in STATE["fail_next"] if path.startswith(f.get("path_prefix", "/"))
                              and f.get("method", self.command) == self.command), None)
                if fault:
                    fault["count"] -= 1
                    if fault["count"] <= 0:
                        STATE["fail_next"].remove(fault)
            if fault:
                raise ApiError(fault.get("status", 503), "TEMPORARILY_UNAVAILABLE",
                               "The service is temporarily unavailable (injected by the test).")
            if path == "/oidc/v1/token" and self.command == "POST":
                return self.token()
            self.auth()
            if path.startswith("/api/2.0/fs/files/"):
                return self.files(path[len("/api/2.0/fs/files"):], query)
            if path.startswith("/api/2.0/fs/directories/") and self.command == "GET":
                return self.directory(path[len("/api/2.0/fs/directories"):].rstrip("/"))
            m = re.fullmatch(r"/api/2\.0/sql/warehouses/([^/]+)", path)
            if m and self.command == "GET":
                if m[1] not in ARGS.warehouse:
                    raise ApiError(404, "RESOURCE_DOES_NOT_EXIST", f"Warehouse {m[1]} does not exist.")
                return self.reply(200, {"id": m[1], "name": m[1], "state": "RUNNING", "warehouse_type": "PRO"})
            if path == "/api/2.0/sql/statements" and self.command == "POST":
                return self.reply(200, submit(self.json_body()))
            m = re.fullmatch(r"/api/2\.0/sql/statements/([^/]+)(/cancel)?", path)
            if m:
                with LOCK:
                    st = STATEMENTS.get(m[1])
                if st is None:
                    raise ApiError(404, "RESOURCE_DOES_NOT_EXIST", f"Statement {m[1]} not found.")
                if m[2] == "/cancel" and self.command == "POST":
                    cancel(st)
                    return self.reply(200, {})
                if self.command == "GET" and not m[2]:
                    return self.reply(200, public(st))
            raise ApiError(404, "ENDPOINT_NOT_FOUND", f"No API found for '{self.command} {path}'")
        except ApiError as e:
            self.close_connection = True  # the request body may be unread
            headers = {"Retry-After": "0"} if e.status in (429, 503) else None
            self.reply(e.status, {"error_code": e.code, "message": e.message}, headers)

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = handle_any

    def token(self):
        form = urllib.parse.parse_qs(self.read_body().decode())
        basic = self.headers.get("Authorization", "")
        try:
            cid, secret = base64.b64decode(basic.removeprefix("Basic ")).decode().split(":", 1)
        except ValueError:
            cid, secret = form.get("client_id", [""])[0], form.get("client_secret", [""])[0]
        if not ARGS.oauth_client or f"{cid}:{secret}" not in ARGS.oauth_client:
            return self.reply(401, {"error": "invalid_client", "error_description": "Client authentication failed"})
        if form.get("grant_type") != ["client_credentials"]:
            return self.reply(400, {"error": "unsupported_grant_type", "error_description": "grant_type"})
        token = "eyJ" + secrets.token_urlsafe(24)
        with LOCK:
            TOKENS[token] = time.time() + ARGS.oauth_ttl
            STATE["stats"]["oauth tokens issued"] = STATE["stats"].get("oauth tokens issued", 0) + 1
        self.reply(200, {"access_token": token, "token_type": "Bearer", "expires_in": ARGS.oauth_ttl,
                         "scope": " ".join(form.get("scope", ["all-apis"]))})

    def files(self, vpath, query):
        local, _ = local_path(vpath)
        if self.command == "PUT":
            overwrite = query.get("overwrite", ["true"])[0].lower() == "true"
            if os.path.isdir(local):
                raise ApiError(409, "ALREADY_EXISTS", f"A directory exists at {vpath}.")
            if os.path.exists(local) and not overwrite:
                raise ApiError(409, "ALREADY_EXISTS", f"The file being created already exists: {vpath}.")
            os.makedirs(os.path.dirname(local), exist_ok=True)
            tmp, left = f"{local}.upload-{uuid.uuid4().hex}", int(self.headers.get("Content-Length") or 0)
            with open(tmp, "wb") as f:  # streamed to disk, renamed into place when complete
                while left > 0 and (chunk := self.rfile.read(min(left, 1 << 20))):
                    f.write(chunk)
                    left -= len(chunk)
            if left:
                os.remove(tmp)
                raise ApiError(400, "INVALID_PARAMETER_VALUE", "the request body ended early")
            os.replace(tmp, local)
            return self.reply(204)
        if not os.path.isfile(local):
            raise ApiError(404, "NOT_FOUND", f"The file being accessed is not found: {vpath}.")
        if self.command == "DELETE":
            os.remove(local)
            return self.reply(204)
        headers = {"Content-Type": "application/octet-stream",
                   "Last-Modified": formatdate(os.path.getmtime(local), usegmt=True)}
        with open(local, "rb") as f:  # HEAD: same headers, no body (see reply)
            self.reply(200, None, headers, raw=f.read())

    def directory(self, vpath):
        local, _ = local_path(vpath)
        if not os.path.isdir(local):
            raise ApiError(404, "NOT_FOUND", f"The directory being accessed is not found: {vpath}.")
        contents = [{"path": f"{vpath}/{e.name}", "name": e.name, "is_directory": e.is_dir()} | (
            {} if e.is_dir() else {"file_size": e.stat().st_size, "last_modified": int(e.stat().st_mtime * 1000)})
            for e in sorted(os.scandir(local), key=lambda e: e.name) if ".upload-" not in e.name]
        self.reply(200, {"contents": contents} if contents else {})

    def test_hook(self, path):
        if path == "/_test/stats":
            with LOCK:
                return self.reply(200, dict(STATE["stats"]))
        body = self.json_body()
        with LOCK:
            if path == "/_test/fail_next":
                STATE["fail_next"].append(body)
            elif path == "/_test/fail_statements":
                STATE["fail_statements"] += [body] * int(body.get("count", 1))
            elif path == "/_test/statement_delay":
                STATE["delay"] = float(body.get("seconds", 0))
            else:
                raise ApiError(404, "ENDPOINT_NOT_FOUND", path)
        self.reply(200, {})


def main():
    global ARGS, DB
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", required=True)
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--warehouse", action="append", default=[])
    p.add_argument("--volume", action="append", default=[], help="CATALOG.SCHEMA.VOLUME to create")
    p.add_argument("--token", action="append", default=[])
    p.add_argument("--oauth-client", action="append", default=[], help="CLIENT_ID:SECRET")
    p.add_argument("--oauth-ttl", type=int, default=3600)
    p.add_argument("--external-location", action="append", default=[],
                   help="s3://bucket/prefix of a Unity Catalog external location the warehouse may read")
    p.add_argument("--s3-endpoint", help="S3 endpoint of the external locations (moto)")
    p.add_argument("--s3-credential", help="KEY:SECRET of the external locations' storage credential")
    ARGS = p.parse_args()
    ARGS.external_location = [loc.rstrip("/") for loc in ARGS.external_location]
    os.makedirs(ARGS.data, exist_ok=True)
    DB = duckdb.connect(":memory:", config={"autoinstall_known_extensions": False})
    for spec in ARGS.volume:
        c, s, v = spec.split(".")
        attach(c)
        DB.execute(f'CREATE SCHEMA IF NOT EXISTS "{c}"."{s}"')
        create_volume(c, s, v, True)
    server = ThreadingHTTPServer(("127.0.0.1", ARGS.port), Handler)
    server.daemon_threads = True
    print(f"listening on 127.0.0.1:{server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
