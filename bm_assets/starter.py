"""`bm-assets init`: a first dataset.yaml and tasks.yaml guessed from the user's files, so a new
dataset starts from a config that loads and says what it guessed instead of from a blank page.

DuckDB reads each file's schema, its first rows and the range of its time column; roles are
guessed from column names and types. The YAML is written as text, not dumped, so that every
section and every guess carries a comment the user can check."""

from __future__ import annotations

import datetime as dt
import json
import re
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import duckdb
from pydantic import BaseModel

from bm_assets.config import (
    CANONICAL_EVENT_COLUMNS,
    DatasetConfig,
    RepresentationConfig,
    expression_columns,
    format_of_path,
    json_keys_sql,
    json_lines_reader,
    json_rows_sql,
)
from bm_assets.core.sql import UNIX_TIME_MICROS, ident, json_array_sql, list_values_sql, literal, unix_time_sql
from bm_assets.core.tasks import EvaluationConfig, FoundationConfig

DATASET_FILE = "dataset.yaml"
TASKS_FILE = "tasks.yaml"

#: Rows read from the top of each file to guess kinds, cardinalities and the time format.
SAMPLE_ROWS = 100_000
#: Validation and test windows are at least this long (when the data allows it) ...
MIN_WINDOW_DAYS = 14
#: ... and task horizons at most this long (and never longer than a window).
MAX_HORIZON_DAYS = 14
#: A string column with more distinct values than this (in the sample) is an id or free text.
MAX_CATEGORIES = 1000
#: What may separate the categories in one cell of an attribute column, most specific first.
LIST_SEPARATORS = ("|", ";", ",")
#: strptime formats tried on a text time column that is not ISO-8601; the most rows parsed wins.
TIME_FORMATS = (
    "%Y-%m-%d %H:%M:%S",
    "%Y-%m-%d",
    "%m/%d/%Y %H:%M",
    "%d/%m/%Y %H:%M",
    "%m/%d/%Y %H:%M:%S",
    "%d/%m/%Y %H:%M:%S",
    "%m/%d/%Y",
    "%d/%m/%Y",
    "%d.%m.%Y %H:%M",
    "%d.%m.%Y",
    "%Y/%m/%d %H:%M:%S",
    "%Y/%m/%d",
    "%Y%m%d",
)
#: A numeric time column is read as Unix time (s, ms or us) where its values fall in these years.
UNIX_TIME_YEARS = (1990, 2100)

_GUESSED = "guessed from the column name"
_ID_ENDINGS = ("id", "no", "nr", "num", "number", "key", "code")
_CLIENT_WORDS = (
    "client", "customer", "cust", "user", "household", "member", "account", "visitor", "shopper", "buyer",
    "reviewer", "viewer", "listener", "subscriber", "player", "patron", "guest", "uid",
)  # fmt: skip
_ITEM_WORDS = ("item", "product", "prod", "article", "goods", "movie", "book", "track", "song", "business")
_ITEM_CODES = {"sku", "upc", "ean", "gtin", "asin", "barcode", "plu"}
_BASKET_WORDS = ("basket", "order", "invoice", "transaction", "receipt", "ticket", "cart", "session", "txn")
#: A name ending in one of these is a basket (visit) id without an id ending (user_session).
_BASKET_ENDINGS = ("session", "basket", "invoice", "receipt")
#: Event type values that mean a purchase (lower case, or a word of the value: "order_paid").
_PURCHASE_WORDS = {"purchase", "purchased", "buy", "bought", "transaction", "order", "checkout", "sale", "sold", "paid"}
_UNDONE_WORDS = {"cancel", "cancelled", "canceled", "refund", "refunded", "return", "returned", "failed", "abandoned"}
_QUANTITY_TOKENS = {"qty", "quantity", "quantities", "units", "count", "cnt", "pieces", "pcs"}
_QUANTITY_NAME = re.compile(r"(n|num|nb|number)(of)?(items|units|products|articles|pieces)")
_VALUE_TOKENS = {"value", "amount", "amt", "sales", "revenue", "total", "spend", "spent", "turnover"}
_PRICE_TOKENS = {"price", "unitprice", "prc"}
#: Amounts beside the goods (freight_value, tax_amount): never the value a client spent on items.
_SURCHARGE_TOKENS = {"freight", "shipping", "delivery", "tax", "vat", "fee", "fees", "discount", "tip", "commission"}
#: Times of later steps (shipping_limit_date, delivered_at, updated_at): the event's own time wins a tie.
_LATER_TIME_TOKENS = {
    "limit", "ship", "shipped", "shipping", "deliver", "delivered", "delivery", "estimated", "expected", "due",
    "expiry", "expires", "expiration", "updated", "modified", "approved", "carrier", "deadline", "returned",
}  # fmt: skip
_EVENT_TYPE_NAMES = {
    "event", "eventtype", "eventname", "type", "action", "actiontype", "activity", "interaction",
    "behavior", "behaviour", "behaviortype", "behaviourtype",
}  # fmt: skip
_TIME_TOKENS = {"ts", "dt"}
#: Words of a name that make a column of whole numbers a code (a category, a page, a store), not
#: a quantity: exports often number their categories (`category: 4512`, `url: 1302`).
_CODE_WORDS = {
    "category", "categories", "subcategory", "cat", "brand", "manufacturer", "maker", "vendor", "supplier",
    "seller", "merchant", "department", "dept", "division", "section", "aisle", "class", "type", "group",
    "family", "genre", "segment", "color", "colour", "url", "page", "site", "domain", "shop", "store",
    "channel", "region", "country", "state", "city", "zip", "postcode", "location", "zone", "tag", "label",
}  # fmt: skip
_YAML_PLAIN = re.compile(r"^[A-Za-z_][A-Za-z0-9_./-]*$")
_YAML_WORDS = {"true", "false", "yes", "no", "on", "off", "null", "y", "n"}
_COMMENT_COLUMN = 44
_LINE_WIDTH = 110


class StarterError(ValueError):
    """Files a starter config cannot be guessed from; the message names the file."""


@dataclass
class _Column:
    name: str
    type: str  # as DuckDB's CSV sniffer / Parquet schema types it
    distinct: int  # in the sample
    non_null: int  # in the sample
    numbers: int  # sampled values that read as a number
    minimum: float | None  # smallest of those
    whole: int  # of those, the whole numbers


@dataclass
class _File:
    path: Path
    fmt: str
    sample: str  # temp table holding the first SAMPLE_ROWS rows (CSV: as text, as ingest stages it)
    columns: dict[str, _Column]
    joined_reader: str | None = None  # lines joined to their partner file: the whole of both

    @property
    def reader(self) -> str:
        return self.joined_reader or _reader(self.path, self.fmt, text=True)


@dataclass
class _Role:
    value: str  # YAML text
    comment: str = ""
    column: str | None = None  # the source column it names (None: derived)


@dataclass
class _Source:
    name: str
    file: _File
    roles: dict[str, _Role] = field(default_factory=dict)
    context: dict[str, tuple[str, str]] = field(default_factory=dict)  # column -> (kind, comment)
    skipped: dict[str, str] = field(default_factory=dict)  # column -> why it is not mapped
    first: dt.datetime | None = None
    last: dt.datetime | None = None
    time_sql: str | None = None  # the time column as a timestamp, over the sample
    join: tuple[_File, str] | None = None  # the file whose columns each line takes, by this key


@dataclass
class _Table:
    """An attribute table to write: from its own file, or from an event source's lines."""

    name: str
    columns: dict[str, tuple[str, str]]  # column -> (kind, comment)
    skipped: dict[str, str] = field(default_factory=dict)
    file: _File | None = None
    key: _Role | None = None
    multi_valued: bool = False
    from_events: str | None = None
    list_separator: str | None = None  # where a column is a list of categories in one cell


def write_starter(
    events: list[str], clients: str | None, items: str | None, out_dir: Path, name: str | None = None
) -> tuple[Path, Path]:
    """Inspect the files and write `dataset.yaml` and `tasks.yaml` into out_dir (overwriting
    them); returns their paths. Raises StarterError when a file cannot be read or has no
    usable client id or time column."""
    if not events:
        raise StarterError("name at least one events file")
    out_dir = Path(out_dir).resolve()
    con = duckdb.connect()
    try:
        given, unreadable = [], []
        for i, path in enumerate(events):
            if len(events) > 1 and (Path(path).is_dir() or not _known_ending(path)):
                # one of a folder's files that holds no table (a README, a script, a sub-folder)
                unreadable.append(f"{Path(path).name}: a folder or no data file ending (.csv, .jsonl, .parquet, ...)")
                continue
            try:
                given.append(_inspect(con, path, f"events_{i}"))
            except StarterError as exc:
                if len(events) == 1:
                    raise
                unreadable.append(str(exc))  # one of a folder's files (a README, an array dump)
        client_files = [_inspect(con, clients, "clients")] if clients else []
        item_files = [_inspect(con, items, "items")] if items else []
        files, joined, tables, left_out = _sort_files(con, given)
        if not files:
            raise StarterError(f"no readable events file among {events}: {'; '.join(unreadable)}")
        client_files += [f for f, role in tables if role == "client_id"]
        item_files += [f for f, role in tables if role == "item_id"]
        keys = {role: fs[0] for role, fs in (("client_id", client_files), ("item_id", item_files)) if fs}
        inputs = [
            _joined(con, f, *joined[id(f)], f"events_{i}_joined") if id(f) in joined else f for i, f in enumerate(files)
        ]
        names = _unique_names([_identifier(f.path.stem) for f in inputs])
        sources = [_guess_source(con, n, f, keys) for n, f in zip(names, inputs, strict=True)]
        for f, src in zip(files, sources, strict=True):
            src.join = joined.get(id(f))
        baskets = _basket_rule(con, sources)
        purchase = _purchase_type(con, sources)
        taken = set(names)
        attribute_tables: dict[str, list[_Table]] = {}
        for role, role_files in (("client_id", client_files), ("item_id", item_files)):
            found = attribute_tables[role] = []
            for f in role_files:
                found.append(_attribute_table(con, f, sources, role, taken))
                taken.add(found[-1].name)
                key = found[-1].key
                if key is not None and any(f is t for t, _ in tables):  # given among the events: say why
                    why = "a client id and no time column" if role == "client_id" else "one row per item id"
                    key.comment += f"; given with the events, read as a table: {why}"
            if not found:
                found += _attributes_from_events(con, sources, role, taken)
                taken |= {t.name for t in found}
        client_tables, item_tables = attribute_tables["client_id"], attribute_tables["item_id"]
    finally:
        con.close()
    _drop_collisions(sources, client_tables + item_tables)
    first = min(s.first for s in sources if s.first is not None)
    last = max(s.last for s in sources if s.last is not None)
    dataset_name = name or _identifier(out_dir.name)
    out_dir.mkdir(parents=True, exist_ok=True)
    dataset_path, tasks_path = out_dir / DATASET_FILE, out_dir / TASKS_FILE
    split = _Split.of(first.date(), last.date())
    dataset_path.write_text(
        _dataset_yaml(dataset_name, sources, client_tables, item_tables, split, out_dir, baskets, left_out, unreadable),
        encoding="utf-8",
    )
    tasks_path.write_text(_tasks_yaml(dataset_name, sources, item_tables, split, purchase), encoding="utf-8")
    return dataset_path, tasks_path


# --- reading the files --------------------------------------------------------------------------


def _known_ending(path: str) -> bool:
    try:
        format_of_path(path)
        return True
    except ValueError:
        return False


def _format_of(path: Path) -> str:
    """The format the config infers from the file's ending; CSV for an ending it does not know
    (the YAML then says `format: csv`)."""
    try:
        return format_of_path(str(path))
    except ValueError:
        return "csv"


def _reader(path: Path, fmt: str, text: bool) -> str:
    """A DuckDB table function over the file. text=True reads CSV as text, as ingest stages it;
    text=False lets the sniffer type the columns (what the user sees, what expressions see)."""
    if fmt == "parquet":
        return f"read_parquet({literal(str(path))})"
    if fmt == "json":  # every value text, as ingest stages it (text or not)
        lines = json_lines_reader(str(path))
        keys = [k[0] for k in duckdb.execute(json_keys_sql(lines, SAMPLE_ROWS)).fetchall()]
        if not keys:
            raise duckdb.InvalidInputException("no JSON object on its first lines (JSON lines: one object per line)")
        return f"({json_rows_sql(keys, lines)})"
    opts = "all_varchar=true" if text else "sample_size=20480"
    return f"read_csv({literal(str(path))}, header=true, ignore_errors=true, {opts})"


def _inspect(con: duckdb.DuckDBPyConnection, given: str, table: str) -> _File:
    """Schema, first rows (into a temp table) and per-column counts of one file or glob."""
    path = Path(given).resolve()
    if not any(ch in given for ch in "*?[") and not path.exists():
        raise StarterError(f"file {path} does not exist")
    fmt = _format_of(path)
    try:
        types = {r[0]: r[1] for r in con.execute(f"DESCRIBE SELECT * FROM {_reader(path, fmt, False)}").fetchall()}
        con.execute(f"CREATE TEMP TABLE {table} AS SELECT * FROM {_reader(path, fmt, True)} LIMIT {SAMPLE_ROWS}")
        return _File(path, fmt, table, _column_stats(con, table, types))
    except duckdb.Error as exc:
        raise StarterError(f"cannot read {path} as {fmt}: {str(exc).splitlines()[0]}") from None


def _column_stats(con: duckdb.DuckDBPyConnection, table: str, types: dict[str, str]) -> dict[str, _Column]:
    stats = []
    for c in types:
        number = f"TRY_CAST(CAST({ident(c)} AS VARCHAR) AS DOUBLE)"
        stats += [f"count(DISTINCT {ident(c)})", f"count({ident(c)})", f"count({number})", f"min({number})"]
        stats.append(f"count({number}) FILTER (WHERE {number} = trunc({number}))")
    counts = con.execute(f"SELECT {', '.join(stats)} FROM {table}").fetchone()
    assert counts is not None
    return {c: _Column(c, ty, *counts[5 * i : 5 * i + 5]) for i, (c, ty) in enumerate(types.items())}


def _sort_files(
    con: duckdb.DuckDBPyConnection, given: list[_File]
) -> tuple[list[_File], dict[int, tuple[_File, str]], list[tuple[_File, str]], list[_File]]:
    """Sort the files given as events (`--events data/*`): (the event sources, id(lines) ->
    (their orders file, key) for order lines without a client id, the attribute tables as
    (file, role), the files left out). Among several files, one with a client id and no time
    column is a client table (a customer file; several rows per client make it multi-valued,
    like the campaigns each client received); an orders file joined to lines is no source of
    its own; a file without a client id and without orders to join is the item table when it
    has one row per item id, else left out. Should nothing be left to read as events, every
    file is read as one, so their errors say what is missing."""
    several = len(given) > 1
    client_tables = [f for f in given if several and _has_client(f) and not _has_time(con, f)]
    rest = [f for f in given if all(f is not t for t in client_tables)]
    partners = {id(f): _join_partner(con, f, rest) for f in rest if not _has_client(f)}
    joined = {k: p for k, p in partners.items() if p is not None}
    alone = [f for f in rest if id(f) in partners and partners[id(f)] is None]
    item_tables = [f for f in alone if several and _unique_id(f, "item_id")]
    left_out = [f for f in alone if several and all(f is not t for t in item_tables)]
    dropped = {id(f) for f in item_tables + left_out} | {id(orders) for orders, _ in joined.values()}
    files = [f for f in rest if id(f) not in dropped]
    if not files:
        return given, {}, [], []
    tables = [(f, "client_id") for f in client_tables] + [(f, "item_id") for f in item_tables]
    return files, joined, tables, left_out


def _unique_id(f: _File, role: str) -> bool:
    return any(role in _id_roles(c) and 0 < col.distinct == col.non_null for c, col in f.columns.items())


def _has_time(con: duckdb.DuckDBPyConnection, f: _File) -> bool:
    """A column named or typed like a time of which most sampled values parse."""
    candidates = [c for c, col in f.columns.items() if _time_hint(c) or _is_temporal(col)]
    return any(_parse_rate(con, f, c)[0] >= 0.5 for c in candidates)


def _has_client(f: _File) -> bool:
    return any("client_id" in _id_roles(c) for c in f.columns)


def _join_partner(con: duckdb.DuckDBPyConnection, lines: _File, files: list[_File]) -> tuple[_File, str] | None:
    """For lines without a client id (order lines), the other file that has one and one row per
    value of an id column the lines share (the orders, by order_id), with that column; most of
    the lines' sampled keys must be found there."""
    for other in files:
        if other is lines or not _has_client(other):
            continue
        for c in lines.columns:
            col = other.columns.get(c)
            if col is None or not (_id_like(c) or "basket_id" in _id_roles(c)) or col.distinct < col.non_null:
                continue
            (found,) = con.execute(
                f"SELECT avg(CASE WHEN h.k IS NULL THEN 0 ELSE 1 END) FROM {lines.sample} l "
                f"LEFT JOIN (SELECT DISTINCT CAST({ident(c)} AS VARCHAR) AS k FROM {other.sample}) h "
                f"ON CAST(l.{ident(c)} AS VARCHAR) = h.k WHERE l.{ident(c)} IS NOT NULL"
            ).fetchone() or (0.0,)
            if found is not None and found >= 0.5:
                return other, c
    return None


def _joined(con: duckdb.DuckDBPyConnection, lines: _File, other: _File, key: str, table: str) -> _File:
    """The lines' sample with the partner's other columns: what the roles are guessed from."""
    extra = [c for c in other.columns if c not in lines.columns]
    picked = "".join(f", h.{ident(c)}" for c in extra)
    con.execute(
        f"CREATE TEMP TABLE {table} AS SELECT l.*{picked} FROM {lines.sample} l LEFT JOIN {other.sample} h "
        f"ON CAST(l.{ident(key)} AS VARCHAR) = CAST(h.{ident(key)} AS VARCHAR) ORDER BY l.rowid"
    )
    types = {**{c: col.type for c, col in lines.columns.items()}, **{c: other.columns[c].type for c in extra}}
    whole = (
        f"(SELECT l.*{picked} FROM {lines.reader} l LEFT JOIN {other.reader} h "
        f"ON CAST(l.{ident(key)} AS VARCHAR) = CAST(h.{ident(key)} AS VARCHAR))"
    )
    return _File(lines.path, lines.fmt, table, _column_stats(con, table, types), joined_reader=whole)


# --- guessing roles from names ------------------------------------------------------------------


def _compact(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def _tokens(name: str) -> set[str]:
    """Words of a name: split at non-alphanumerics and camel case (CustomerID -> customer, id)."""
    return {t.lower() for t in re.findall(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|\d+", name)}


def _id_hint(name: str, words: tuple[str, ...]) -> bool:
    """The name is one of the words, or contains one and ends like an id (CustomerID, InvoiceNo)."""
    c = _compact(name)
    return c in words or (any(w in c for w in words) and c.endswith(_ID_ENDINGS))


def _id_roles(name: str) -> list[str]:
    roles = []
    if _id_hint(name, _CLIENT_WORDS):
        roles.append("client_id")
    if _id_hint(name, _ITEM_WORDS) or "stockcode" in _compact(name) or _tokens(name) & _ITEM_CODES:
        roles.append("item_id")
    if _id_hint(name, _BASKET_WORDS) or (_compact(name).endswith(_BASKET_ENDINGS) and not roles):
        roles.append("basket_id")
    return roles


def _time_hint(name: str) -> bool:
    return "date" in _compact(name) or "time" in _compact(name) or bool(_tokens(name) & _TIME_TOKENS)


def _id_like(name: str) -> bool:
    return _compact(name).endswith(_ID_ENDINGS)


def _is_numeric(col: _Column) -> bool:
    """Numbers in (nearly) every sampled row: a stray bad value in a CSV column does not make
    it text (ingest quarantines that row)."""
    return col.non_null > 0 and col.type.upper() != "BOOLEAN" and col.numbers >= 0.95 * col.non_null


def _is_code(col: _Column) -> bool:
    """Whole numbers under a name that says code (category, brand, url, store): a category
    numbered by the export, whose arithmetic means nothing."""
    words = _tokens(col.name) | {_compact(col.name)}
    return _is_numeric(col) and col.whole >= col.numbers and bool(words & _CODE_WORDS)


def _is_temporal(col: _Column) -> bool:
    return col.type.upper().startswith(("DATE", "TIMESTAMP", "TIME"))


def _guess_source(con: duckdb.DuckDBPyConnection, name: str, f: _File, keys: dict[str, _File] | None = None) -> _Source:
    """Roles, context columns and time range of one event file. `keys`: the client and item
    attribute files given; an id the names do not reveal (recipe_id) is the event column named
    like such a file's key."""
    src = _Source(name, f)
    times: list[str] = []
    price: str | None = None
    for c, col in f.columns.items():
        id_roles = _id_roles(c)
        tokens, compact = _tokens(c), _compact(c)
        if len(id_roles) > 1:
            src.skipped[c] = f"the name hints at several roles: {', '.join(id_roles)}"
        elif id_roles:
            _assign(src, id_roles[0], c)
        elif _time_hint(c) or _is_temporal(col):
            times.append(c)
        elif not _is_numeric(col) or _id_like(c) or _is_code(col):
            # an id or code is never an amount, whatever its words (sales_channel_id, product_count_code)
            if compact in _EVENT_TYPE_NAMES and (not _is_numeric(col) or _is_code(col)):
                _assign(src, "event_type", c)
        elif tokens & _QUANTITY_TOKENS or _QUANTITY_NAME.fullmatch(compact):
            _assign(src, "quantity", c)
        elif tokens & _VALUE_TOKENS and not tokens & _SURCHARGE_TOKENS:
            _assign(src, "value", c)
        elif (tokens | {compact}) & _PRICE_TOKENS and price is None:
            price = c
    for role, table in (keys or {}).items():
        if role not in src.roles:
            _key_from_table(src, role, table)
    _check_basket(con, src)
    if "client_id" not in src.roles:
        hint = (
            "; if the file has no header line, write dataset.yaml by hand with csv: {header: false, columns: [...]}"
            if f.fmt == "csv"
            else ""
        )
        raise StarterError(f"{f.path}: no column looks like a client id (columns: {list(f.columns)}){hint}")
    _guess_timestamp(con, src, times)
    _note_one_visit_clients(con, src)
    _note_negatives(src)
    quantity = src.roles.get("quantity")
    if "value" not in src.roles and price is not None and quantity is not None and quantity.column is not None:
        expr = f"{_sql_name(quantity.column)} * {_sql_name(price)}"
        src.roles["value"] = _Role(
            _flow({"expr": expr}), f"guessed: no value column, so {quantity.column} times {price}"
        )
    elif "value" not in src.roles and price is not None and quantity is None:
        # a line per unit sold (an article bought): its price is what the client spent on it
        src.roles["value"] = _Role(_s(price), f"guessed: no value or quantity column, so one unit at {price}", price)
    mapped = {r.column for r in src.roles.values()}
    for c, col in f.columns.items():
        if c in mapped or c in src.skipped:
            continue
        kind, note = _column_kind(col, attributes=False)
        if kind is None:
            src.skipped[c] = note
        elif c in CANONICAL_EVENT_COLUMNS:
            src.skipped[c] = "reuses a canonical event column name; map it with an expr under another name"
        else:
            src.context[c] = (kind, note)
    return src


def _key_from_table(src: _Source, role: str, table: _File) -> None:
    """Map `role` to the event column named like the table's key (its column named like the
    role, else its first column), where that event column has no role yet."""
    hinted = [c for c in table.columns if role in _id_roles(c)]
    key = hinted[0] if hinted else next(iter(table.columns))
    mapped = {r.column for r in src.roles.values()}
    match = [c for c in src.file.columns if c.lower() == key.lower() and c not in mapped]
    if match:
        src.roles[role] = _Role(_s(match[0]), f"guessed: the key of {table.path.name} has this name", match[0])
        src.skipped.pop(match[0], None)


def _note_one_visit_clients(con: duckdb.DuckDBPyConnection, src: _Source) -> None:
    """Say so where nearly every sampled client has events at one time only: the id may name an
    order, not a person (an order table's customer_id), and every task would then be empty."""
    client = src.roles["client_id"]
    if client.column is None or src.time_sql is None:
        return
    clients, single = con.execute(
        f"""SELECT count(*), count(*) FILTER (WHERE n = 1) FROM (
            SELECT count(DISTINCT {src.time_sql}) AS n FROM {src.file.sample}
            WHERE {ident(client.column)} IS NOT NULL GROUP BY {ident(client.column)})"""
    ).fetchone() or (0, 0)
    if clients >= 100 and single >= 0.99 * clients:
        client.comment += (
            f"; {single / clients:.0%} of the sampled clients have events at one time only: if this id names an "
            "order, not a person, map (or join) the person's id"
        )


def _check_basket(con: duckdb.DuckDBPyConnection, src: _Source) -> None:
    """Drop a basket guess whose values are shared by several clients in the sample (a session
    number counted per client, a store id): a basket belongs to one client."""
    basket, client = src.roles.get("basket_id"), src.roles.get("client_id")
    if basket is None or basket.column is None or client is None or client.column is None:
        return
    b, c = ident(basket.column), ident(client.column)
    row = con.execute(
        f"""SELECT count(*), count(*) FILTER (WHERE n > 1) FROM (
                SELECT count(DISTINCT {c}) AS n FROM {src.file.sample}
                WHERE {b} IS NOT NULL AND {c} IS NOT NULL GROUP BY {b})"""
    ).fetchone()
    assert row is not None
    baskets, shared = int(row[0]), int(row[1])
    if baskets and shared > 0.05 * baskets:
        del src.roles["basket_id"]
        src.skipped[basket.column] = (
            f"{shared / baskets:.0%} of its values have several clients in the sample: not a basket"
        )


def _purchase_type(con: duckdb.DuckDBPyConnection, sources: list[_Source]) -> str | None:
    """The event type that means a purchase, where the events have several types (views,
    carts, purchases): the first sampled value (or source name) with a purchase word."""
    types: list[str] = []
    for src in sources:
        role = src.roles.get("event_type")
        if role is None:
            types.append(src.name)
        elif role.column is not None:
            rows = con.execute(
                f"SELECT DISTINCT CAST({ident(role.column)} AS VARCHAR) AS t FROM {src.file.sample} "
                f"WHERE {ident(role.column)} IS NOT NULL ORDER BY t LIMIT {MAX_CATEGORIES}"
            ).fetchall()
            types += [str(r[0]) for r in rows]
        else:
            return None  # a derived type: its values are not known here
    if len(set(types)) < 2:
        return None
    words = [(t, _tokens(t) | {t.lower()}) for t in types]
    return next((t for t, w in words if w & _PURCHASE_WORDS and not w & _UNDONE_WORDS), None)


def _note_negatives(src: _Source) -> None:
    """Ingest quarantines negative quantities and values (returns, cancellations): say so where
    the sample has some."""
    for role in ("quantity", "value"):
        ref = src.roles.get(role)
        col = src.file.columns.get(ref.column) if ref is not None and ref.column is not None else None
        if ref is not None and col is not None and col.minimum is not None and col.minimum < 0:
            ref.comment += f'; negative in the sample: quarantined, unless {{expr: "abs({_sql_name(col.name)})"}}'


def _assign(src: _Source, role: str, column: str) -> None:
    if role in src.roles:
        src.skipped[column] = f"also looks like {role}"
    else:
        src.roles[role] = _Role(_s(column), _GUESSED, column)


def _sql_name(column: str) -> str:
    """A column as written in an expression: bare when it parses as itself, else quoted."""
    try:
        bare = re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", column) and expression_columns(column, "expr") == [column]
    except ValueError:
        bare = False
    return column if bare else ident(column)


def _column_kind(col: _Column, attributes: bool) -> tuple[str | None, str]:
    """(kind, comment) of an unmapped column, or (None, why it is left out). In an attribute
    table (`attributes`: one row per key) a value shared by two keys on average is a category
    however many there are (a fine product type); a value about as rare as the keys is a name
    or free text (`text`). On event lines many-valued strings are left out."""
    if col.non_null == 0:
        return None, "empty in the sample"
    if col.distinct <= 1:
        return None, "one value in the sample"
    if _is_temporal(col):
        return None, "another date/time column"
    if _is_numeric(col) and not _id_like(col.name) and not _is_code(col):
        return "numeric", ""
    # an id or code column that repeats (a brand or manufacturer id, a numbered category or page)
    # is a category however many values it has
    many_ok = attributes or _id_like(col.name) or _is_code(col)
    if (col.distinct <= MAX_CATEGORIES or many_ok) and 2 * col.distinct <= col.non_null:
        return "categorical", f"{col.distinct:,} values in the sample"
    if attributes:
        return "text", f"{col.distinct:,} distinct values in the sample"
    return None, f"{col.distinct:,} distinct values in the sample: an id or free text"


def _list_layout(con: duckdb.DuckDBPyConnection, f: _File, col: _Column, taken: str | None) -> tuple[str, str] | None:
    """(separator, how the cells read) where an attribute column holds several categories per
    cell, else None. Its values must repeat, five cells each on average, as categories do (a
    list of sentences, names or URLs is text). Arrays (a Parquet array, JSON arrays in nine of
    ten cells) need nothing more. Text needs a separator held by a quarter of the cells (names,
    addresses and sentences split at commas give values about as rare as the cells), and a
    comma must not split numbers ("12,99")."""
    text = f"CAST({ident(col.name)} AS VARCHAR)"
    native = col.type.endswith("]")
    (arrays,) = con.execute(
        f"SELECT avg(CAST({json_array_sql(text)} AS INTEGER)) FROM {f.sample} WHERE {ident(col.name)} IS NOT NULL"
    ).fetchone() or (None,)
    is_array = native or (arrays or 0) >= 0.9
    for sep in [taken or "|"] if is_array else [taken] if taken else LIST_SEPARATORS:
        share, parts, distinct, numbers = con.execute(
            f"""WITH cells AS (SELECT {text} AS cell, {list_values_sql(col.name, sep, native)} AS vs
                FROM {f.sample} WHERE {ident(col.name)} IS NOT NULL),
            parts AS (SELECT unnest(vs) AS p FROM cells)
            SELECT (SELECT avg(CAST(contains(cell, {literal(sep)}) AS INTEGER)) FROM cells), count(*),
                   count(DISTINCT p), count(TRY_CAST(p AS DOUBLE)) FROM parts"""
        ).fetchone() or (None, 0, 0, 0)
        if not parts or parts < 5 * distinct:
            continue
        if is_array:
            return sep, f"arrays of {distinct:,} categories in the sample; each is a graph node"
        if (share or 0) >= 0.25 and not (sep == "," and 2 * numbers >= parts):
            return sep, f"several categories per cell, split at {sep!r}; each is a graph node"
    return None


def _guess_timestamp(con: duckdb.DuckDBPyConnection, src: _Source, candidates: list[str]) -> None:
    """Pick the time column (and strptime format or Unix-time unit) parsing the most sample rows,
    on ties one not named like a later step (shipping, delivery, update), then the first; read
    its range. Other candidates that parse are left out, the rest are
    plain columns."""
    f = src.file
    parsing = [(c, *_parse_rate(con, f, c)) for c in candidates]
    parsing = [p for p in parsing if p[1] > 0]
    if not parsing:
        raise StarterError(
            f"{f.path}: no date/time column found: none of {candidates or list(f.columns)} parses as a "
            f"timestamp, an ISO date, one of the formats {list(TIME_FORMATS)} or a Unix time in "
            f"{'/'.join(UNIX_TIME_MICROS)} between {UNIX_TIME_YEARS[0]} and {UNIX_TIME_YEARS[1]}"
        )
    column, rate, parse = max(parsing, key=lambda p: (p[1], not _tokens(p[0]) & _LATER_TIME_TOKENS))
    for c, _, _ in parsing:
        if c != column:
            src.skipped[c] = "another date/time column"
    spec: dict[str, str] = {"column": column} | {k: v for k, v in parse._asdict().items() if v}
    if parse.unit:
        how = f"{rate:.0%} of the sample read as Unix {parse.unit}"
    else:
        how = f"the format parses {rate:.0%} of the sample" if parse.format else f"{rate:.0%} of the sample parse"
    src.roles["timestamp"] = _Role(_flow(spec), f"{_GUESSED}; {how}", column)
    parsed = src.time_sql = _parsed(column, parse)
    src.first, src.last = con.execute(f"SELECT min({parsed}), max({parsed}) FROM {f.reader}").fetchone() or (None, None)


def _basket_rule(con: duckdb.DuckDBPyConnection, sources: list[_Source]) -> tuple[str, ...]:
    """The `baskets` rule for the events without a basket id, then comment lines saying why.
    `timestamp` groups lines written at one time (a receipt); where most sampled events share
    no time with another event of their client (a click log), it would make each event its own
    basket, so `day` groups them into visits instead."""
    rule_rows = shared = 0
    for src in sources:
        client, basket = src.roles["client_id"].column, src.roles.get("basket_id")
        if client is None or src.time_sql is None or (basket is not None and basket.column is None):
            continue  # derived ids: not evaluated on the sample
        no_basket = f"NULLIF(TRIM(CAST({ident(basket.column)} AS VARCHAR)), '') IS NULL" if basket else "TRUE"
        row = con.execute(
            f"""SELECT count(*), coalesce(sum(n) FILTER (WHERE n > 1), 0) FROM (
                    SELECT count(*) AS n FROM {src.file.sample}
                    WHERE {no_basket} AND {ident(client)} IS NOT NULL AND {src.time_sql} IS NOT NULL
                    GROUP BY {ident(client)}, {src.time_sql})"""
        ).fetchone()
        assert row is not None
        rule_rows, shared = rule_rows + int(row[0]), shared + int(row[1])
    if rule_rows == 0 or shared * 2 >= rule_rows:
        return ("timestamp",)
    return (
        "day",
        f"day: {shared / rule_rows:.0%} of the sampled events without a basket id share their time with another",
        "event of their client, so `timestamp` would make each event its own basket.",
    )


class _TimeParse(NamedTuple):
    """How a time column is read: a strptime format, a Unix-time unit, or neither (native/ISO)."""

    format: str | None = None
    unit: str | None = None


def _parsed(column: str, parse: _TimeParse) -> str:
    """The column as a timestamp, as ingest parses it (via its text)."""
    text = f"CAST({ident(column)} AS VARCHAR)"
    if parse.unit:
        return unix_time_sql(f"TRY_CAST({text} AS DOUBLE)", parse.unit)
    return f"try_strptime({text}, {literal(parse.format)})" if parse.format else f"TRY_CAST({text} AS TIMESTAMP)"


def _reads_as(column: str, parse: _TimeParse) -> str:
    """True where a sampled value reads as a time under `parse`. A Unix time must fall within
    UNIX_TIME_YEARS in that unit: any number is some Unix time, but ids, counts and amounts
    rarely land there (and the units' ranges do not overlap, so one unit fits)."""
    if not parse.unit:
        return f"{_parsed(column, parse)} IS NOT NULL"
    lo, hi = (
        (dt.datetime(y, 1, 1, tzinfo=dt.UTC).timestamp() * 1e6 / UNIX_TIME_MICROS[parse.unit]) for y in UNIX_TIME_YEARS
    )
    return f"TRY_CAST(CAST({ident(column)} AS VARCHAR) AS DOUBLE) BETWEEN {lo:.0f} AND {hi:.0f}"


def _parse_rate(con: duckdb.DuckDBPyConnection, f: _File, column: str) -> tuple[float, _TimeParse]:
    """Share of the sample's non-null values that parse, with the rule that parses most
    (native or ISO-8601 preferred on ties, then the formats, then Unix time)."""
    n = f.columns[column].non_null
    if n == 0:
        return 0.0, _TimeParse()
    rules = [_TimeParse(), *(_TimeParse(format=x) for x in TIME_FORMATS)]
    rules += [_TimeParse(unit=u) for u in UNIX_TIME_MICROS]
    counts = con.execute(
        "SELECT " + ", ".join(f"count(*) FILTER (WHERE {_reads_as(column, r)})" for r in rules) + f" FROM {f.sample}"
    ).fetchone()
    assert counts is not None
    i = max(range(len(rules)), key=lambda j: (counts[j], -j))
    return counts[i] / n, rules[i]


# --- attribute tables ---------------------------------------------------------------------------


def _attributes_from_events(
    con: duckdb.DuckDBPyConnection, sources: list[_Source], role: str, taken: set[str]
) -> list[_Table]:
    """Categorical event columns holding one value per client (a country on every invoice
    line) or per item (a brand on every product line) become client or item attributes,
    read from the first source that has them."""
    noun = role.removesuffix("_id")
    for src in sources:
        key = src.roles.get(role)
        if key is None or key.column is None:
            continue
        per_key = {
            c: (kind, f"one value per {noun} in the sample")
            for c, (kind, _) in src.context.items()
            if kind == "categorical" and _one_per_key(con, src.file, key.column, c)
        }
        if per_key:
            for c in per_key:
                del src.context[c]
            name = _unique_names([f"{noun}_attributes"], taken)[0]
            return [_Table(name, per_key, from_events=src.name)]
    return []


def _one_per_key(con: duckdb.DuckDBPyConnection, f: _File, key: str, column: str) -> bool:
    """Nearly every client (item) with several lines has one value of the column, and there
    are clearly fewer values than clients (items): else it is an id."""
    single, multi_line_keys, keys = con.execute(
        f"""SELECT count(*) FILTER (WHERE n = 1 AND m >= 2), count(*) FILTER (WHERE m >= 2), count(*) FROM (
            SELECT count(DISTINCT {ident(column)}) AS n, count({ident(column)}) AS m FROM {f.sample}
            WHERE {ident(key)} IS NOT NULL GROUP BY {ident(key)})"""
    ).fetchone() or (0, 0, 0)
    return multi_line_keys > 0 and single >= 0.95 * multi_line_keys and 2 * f.columns[column].distinct <= keys


def _attribute_table(
    con: duckdb.DuckDBPyConnection, f: _File, sources: list[_Source], role: str, taken: set[str]
) -> _Table:
    """A client/item table from its own file: the key matches the events' id column by name,
    else it is the first id-like column; every other column gets a kind."""
    event_cols = {(s.roles[role].column or "").lower() for s in sources if role in s.roles}
    same = [c for c in f.columns if c.lower() in event_cols]
    hinted = [c for c in f.columns if role in _id_roles(c)]
    if same:
        key_col, why = same[0], f"guessed: the events' {role} column has this name"
    elif hinted:
        key_col, why = hinted[0], _GUESSED
    else:
        key_col, why = next(iter(f.columns)), "guessed: the first column; check it"
    key = _Role(_s(key_col), why, key_col)
    (multi,) = con.execute(
        f"SELECT count({ident(key_col)}) > count(DISTINCT {ident(key_col)}) FROM {f.sample}"
    ).fetchone() or (False,)
    table = _Table(_unique_names([_identifier(f.path.stem)], taken)[0], {}, file=f, key=key, multi_valued=multi)
    for c, col in f.columns.items():
        if c == key_col:
            continue
        kind, note = _column_kind(col, attributes=True)
        layout = None
        if kind in ("categorical", "text") and not multi and not _is_numeric(col):
            layout = _list_layout(con, f, col, table.list_separator)
        if layout is not None:
            (table.list_separator, note), kind = layout, "list"
        if kind is None:
            table.skipped[c] = note
        elif c in CANONICAL_EVENT_COLUMNS:
            table.skipped[c] = "reuses a canonical event column name"
        else:
            table.columns[c] = (kind, note)
    return table


def _drop_collisions(sources: list[_Source], tables: list[_Table]) -> None:
    """Attribute names must be unique and differ from context columns: an attribute table
    wins over a context column of the same name, the first table over a later one."""
    seen: dict[str, str] = {}
    for t in tables:
        for c in list(t.columns):
            out = f"{t.name}_{c}" if t.multi_valued else c
            if out in seen:
                t.skipped[c] = f"also an attribute of {seen[out]}"
                del t.columns[c]
            else:
                seen[out] = t.name
    for src in sources:
        for c in [c for c in src.context if c in seen]:
            del src.context[c]
            src.skipped[c] = f"an attribute of {seen[c]}"


# --- dates --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Split:
    data_start: dt.date
    data_end: dt.date
    training_cutoff: dt.date
    test_start: dt.date
    horizon_days: int

    @classmethod
    def of(cls, first: dt.date, last: dt.date) -> _Split:
        """Validation and test windows of ~15% of the range each, at least MIN_WINDOW_DAYS when
        the data is long enough to keep as much for training; horizons fit inside a window."""
        days = (last - first).days + 1
        if days < 3:
            raise StarterError(f"the events span {days} day(s), {first} to {last}; a temporal split needs 3")
        window = max(MIN_WINDOW_DAYS, round(0.15 * days)) if days >= 3 * MIN_WINDOW_DAYS else days // 3
        test_start = last + dt.timedelta(days=1 - window)
        return cls(first, last, test_start - dt.timedelta(days=window), test_start, min(MAX_HORIZON_DAYS, window))

    @property
    def test_end(self) -> dt.date:
        return self.data_end + dt.timedelta(days=1)

    @property
    def warmup_days(self) -> int:
        """The default warm-up, shortened so that training split dates fit before the cutoff."""
        train_days = (self.training_cutoff - self.data_start).days
        return min(EvaluationConfig().warmup_days, max(0, (train_days - self.horizon_days) // 2))


# --- YAML text ----------------------------------------------------------------------------------


def _s(text: str) -> str:
    """A YAML string: plain when it reads back as the same string, else double-quoted (JSON
    escapes are valid YAML), so column names with spaces or odd characters survive as-is."""
    return text if _YAML_PLAIN.match(text) and text.lower() not in _YAML_WORDS else json.dumps(text, ensure_ascii=False)


def _yaml(value: object) -> str:
    """A flow-style YAML value."""
    if isinstance(value, BaseModel):
        return _yaml(value.model_dump(exclude_none=True))
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        text = repr(value)
        mantissa, _, exponent = text.partition("e")
        return f"{mantissa}.0e{exponent}" if exponent and "." not in mantissa else text  # YAML 1.1 wants the dot
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return _s(value)
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_yaml(v) for v in value) + "]"
    if isinstance(value, dict):
        return _flow(value)
    if value is None:
        return "null"
    raise TypeError(f"no YAML rendering for {type(value).__name__}")


def _flow(mapping: dict) -> str:
    return "{" + ", ".join(f"{_s(k)}: {_yaml(v)}" for k, v in mapping.items()) + "}"


def _line(indent: int, key: str, value: str | None = None, comment: str = "") -> str:
    """`key: value  # comment` with comments aligned; a comment too long to trail the line
    goes above it instead."""
    text = " " * indent + (f"{key}:" if value is None else f"{key}: {value}")
    if not comment:
        return text
    trailing = f"{text.ljust(_COMMENT_COLUMN - 2)}  # {comment}"
    if len(trailing) <= _LINE_WIDTH:
        return trailing
    return "\n".join([*_comment(indent, *textwrap.wrap(comment, _LINE_WIDTH - indent - 2)), text])


def _comment(indent: int, *lines: str) -> list[str]:
    return [" " * indent + f"# {line}" if line else " " * indent + "#" for line in lines]


def _yaml_path(path: Path, out_dir: Path) -> str:
    """Relative to the config's folder when the file is inside it (the folder can move)."""
    return _s(_relative(path, out_dir))


def _relative(path: Path, out_dir: Path) -> str:
    return path.relative_to(out_dir).as_posix() if path.is_relative_to(out_dir) else str(path)


def _format_line(path: Path) -> list[str]:
    """`format:` where the file's ending does not say it."""
    try:
        format_of_path(str(path))
        return []
    except ValueError:
        return [_line(4, "format", _format_of(path))]


def _dataset_yaml(
    name: str,
    sources: list[_Source],
    clients: list[_Table],
    items: list[_Table],
    split: _Split,
    out_dir: Path,
    baskets: tuple[str, ...] = ("timestamp",),
    left_out: list[_File] | None = None,
    unreadable: list[str] | None = None,
) -> str:
    files = ", ".join(s.file.path.name for s in sources)
    lines = [
        *_comment(
            0,
            f"Dataset config written by `bm-assets init` from {files}.",
            "Every role is a guess from column names and the first rows of the data: check the lines marked",
            "'guessed', then run `bm-assets validate`. Every key is described in docs/configuration.md.",
            *(
                f"Left out: {f.path.name} (no client id, no file of orders to take one from, not keyed by an item id)"
                for f in left_out or []
            ),
            *(f"Left out: {why}" for why in unreadable or []),
        ),
        _line(0, "name", _s(name)),
        "",
        *_comment(0, "The event range: first and last day (inclusive) of the data's time column."),
        _line(0, "data_start", _yaml(split.data_start)),
        _line(0, "data_end", _yaml(split.data_end)),
        "",
        *_comment(
            0,
            "Temporal protocol: train on events before training_cutoff, select models on",
            "[training_cutoff, test_start), report on [test_start, test_end) (test_end exclusive).",
        ),
        _line(0, "temporal"),
        _line(2, "training_cutoff", _yaml(split.training_cutoff)),
        _line(2, "test_start", _yaml(split.test_start)),
        _line(2, "test_end", _yaml(split.test_end)),
        "",
        *_comment(0, "Events without a basket_id are grouped into baskets (visits) by: timestamp | day."),
        *_comment(0, *baskets[1:]),
        _line(0, "baskets", baskets[0]),
        "",
        *_comment(
            0,
            "Event sources, one file (or glob) each. A role names a column, or derives it with",
            "{expr: SQL over one row's columns}; unmapped columns are listed under each source.",
        ),
        _line(0, "events"),
    ]
    for src in sources:
        lines += _source_lines(src, out_dir)
    lines += ["", *_tables_lines("clients", clients, out_dir), "", *_tables_lines("items", items, out_dir)]
    if items:
        lines += [
            "",
            *_comment(0, "Share of event item ids that must be in the items tables."),
            _line(0, "catalog_coverage_min", _yaml(DatasetConfig.model_fields["catalog_coverage_min"].default)),
        ]
    rep = RepresentationConfig()
    lines += [
        "",
        *_comment(
            0,
            "Behavioral representations (graph, Cleora embeddings, EMDE sketches, profiles). Left out,",
            "graph and sketch columns come from the data and the rest takes these defaults; uncomment to change.",
            "representation:",
            *(f"  {k}: {_yaml(getattr(rep, k))}" for k in RepresentationConfig.model_fields),
        ),
    ]
    return "\n".join(lines) + "\n"


def _source_lines(src: _Source, out_dir: Path) -> list[str]:
    event_type = "" if "event_type" in src.roles else "also the event_type of its events"
    lines = [
        _line(2, "- name", _s(src.name), event_type),
        _line(4, "path", _yaml_path(src.file.path, out_dir)),
        *_format_line(src.file.path),
    ]
    if src.join is not None:
        other, key = src.join
        spec = {
            "path": _relative(other.path, out_dir),
            "key": key,
            **({"format": other.fmt} if _format_line(other.path) else {}),
        }
        why = f"guessed: the lines have no client id; {other.path.name} has one row per {key}"
        lines += [_line(4, "join", None, why), " " * 6 + "- " + _flow(spec)]
    order = ("client_id", "item_id", "timestamp", "event_type", "quantity", "value", "basket_id")
    lines += [_line(4, role, src.roles[role].value, src.roles[role].comment) for role in order if role in src.roles]
    missing = [r for r in order if r not in src.roles]
    if missing:
        lines += _comment(4, f"not guessed: {', '.join(missing)} (no column looks like one; map it if there is)")
    if src.context:
        lines.append(_line(4, "context", None, "extra event columns kept as they are: name -> kind"))
        lines += [_line(6, _s(c), kind, note) for c, (kind, note) in src.context.items()]
    lines += _comment(4, *(f"not mapped: {c} ({why})" for c, why in src.skipped.items()))
    return lines


def _tables_lines(role: str, tables: list[_Table], out_dir: Path) -> list[str]:
    what = "Client attributes, one row per client" if role == "clients" else "Item attributes (the catalogue)"
    if not tables:
        return _comment(
            0,
            f"{what}: none. Add a table with `{role}: [{{name, path, key, columns}}]`",
            f"(from a file: `bm-assets init --{role} FILE`).",
        )
    lines = [*_comment(0, f"{what}, keyed by the {role[:-1]} id; columns: name -> kind."), _line(0, role)]
    for t in tables:
        lines.append(_line(2, "- name", _s(t.name)))
        if t.file is not None and t.key is not None:
            lines += [_line(4, "path", _yaml_path(t.file.path, out_dir)), *_format_line(t.file.path)]
            lines.append(_line(4, "key", t.key.value, t.key.comment))
            if t.multi_valued:
                lines.append(_line(4, "multi_valued", "true", "several rows per key: aggregated to one"))
            if t.list_separator not in (None, "|"):
                lines.append(_line(4, "list_separator", _s(t.list_separator), "splits the cells of the list columns"))
        else:
            lines += [
                _line(4, "from_events", _s(t.from_events or ""), f"taken from the event lines: no {role} file given"),
                _line(4, "pick", "most_frequent", "the value a key gets: most_frequent | first | last"),
            ]
        lines.append(_line(4, "columns"))
        lines += [_line(6, _s(c), kind, note) for c, (kind, note) in t.columns.items()]
        lines += _comment(4, *(f"not mapped: {c} ({why})" for c, why in t.skipped.items()))
    return lines


#: Comments for the foundation/evaluation keys whose field has no description.
_NOTES = {
    "hidden": "width of the hidden layers",
    "layers": "number of hidden layers",
    "lr": "learning rate",
    "batch_size": "clients per step",
    "max_epochs": "upper bound on training epochs",
    "patience": "epochs without improvement before stopping early",
    "eligible": "clients with an event in [T - active_days, T) are used",
    "holdout_fraction": "share of clients never trained on (a hash of the id)",
    "feature_windows_days": "windows of the GBDT aggregates",
    "label_fractions": "labelled fractions of the learning curves",
    "task_max_epochs": "upper bound on a task network's epochs",
    "task_patience": "epochs without improvement before a task network stops",
    "seed": "random seed",
}


def _settings_lines(model: type[BaseModel], overrides: dict[str, tuple[object, str]]) -> list[str]:
    """Every field of a settings model with its default (or override) and a comment."""
    lines = []
    for key, info in model.model_fields.items():
        if key in overrides:
            value, note = overrides[key]
        else:
            value = info.get_default(call_default_factory=True)
            note = info.description or _NOTES.get(key, "")
        lines.append(_line(2, key, _yaml(value), note))
    return lines


def _tasks_yaml(
    name: str, sources: list[_Source], items: list[_Table], split: _Split, purchase: str | None = None
) -> str:
    h = split.horizon_days
    item_attrs = [
        c for t in items if not t.multi_valued for c, (kind, _) in t.columns.items() if kind in ("categorical", "list")
    ]
    warmup_note = EvaluationConfig.model_fields["warmup_days"].description or ""
    if split.warmup_days < EvaluationConfig().warmup_days:
        warmup_note += " (shortened to fit the training window)"
    lines = [
        *_comment(
            0,
            f"Prediction tasks for {name}, written by `bm-assets init`: the standard tasks this data",
            "supports, scored at split dates T on each client's events in [T, T + horizon_days).",
            "Targets are SQL (DuckDB) over events_denormalized; see docs/tasks.md and docs/configuration.md.",
        ),
        "",
        *_comment(0, "The self-supervised foundation model: profile at T -> sketch of the events that follow."),
        _line(0, "foundation"),
        *_settings_lines(FoundationConfig, {"horizon_days": (h, "predict the events in [T, T + horizon_days)")}),
        "",
        *_comment(0, "The temporal protocol's knobs; its dates are in dataset.yaml (temporal)."),
        _line(0, "evaluation"),
        *_settings_lines(EvaluationConfig, {"warmup_days": (split.warmup_days, warmup_note)}),
        "",
        *_comment(0, "Prediction tasks: a task is YAML only (type, horizon, target SQL, eligible clients)."),
        _line(0, "tasks"),
    ]
    for note, task in _standard_tasks(sources, item_attrs, h, purchase):
        lines += ["", *_comment(2, note), _line(2, "- name", _yaml(task.pop("name")))]
        lines += [_line(4, k, _yaml(v)) for k, v in task.items()]
    return "\n".join(lines) + "\n"


def _standard_tasks(
    sources: list[_Source], item_attrs: list[str], h: int, purchase: str | None = None
) -> list[tuple[str, dict]]:
    """(comment, task) of the standard tasks the mapped roles support. Where the events have
    several types and one is a purchase, every task is about buying: a viewed item's price is
    no spend, a client who still browses but stopped buying is a lost customer, and a
    propensity to buy is what a brand or category campaign targets."""
    where = {"where": f"event_type = {literal(purchase)}"} if purchase else {}
    of = f" {purchase!r}" if purchase else ""

    def task(name: str, kind: str, description: str, target: dict, eligible: dict | None = None) -> dict:
        return {
            "name": name,
            "description": description,
            "type": kind,
            "horizon_days": h,
            "target": target,
            "eligible": eligible or {"active_days": 60},
        }

    if purchase:
        churn = (
            f"binary: a client who bought in the last 60 days ({of.strip()} events) buys nothing in the next {h} days",
            task(
                "churn",
                "binary",
                f"A client who bought in the last 60 days has no{of} event in the next {h} days.",
                {"value": "count(*) = 0", **where, "default": 1},
                {"active_days": 60, **where},
            ),
        )
    else:
        churn = (
            f"binary: an active client (an event in the last 30 days) has no event in the next {h} days",
            task(
                "churn",
                "binary",
                f"An active client has no event in the next {h} days.",
                {"value": "count(*) = 0", "default": 1},
                {"active_days": 30},
            ),
        )
    tasks = [churn]
    if any("value" in s.roles for s in sources):
        tasks.append(
            (
                f"regression: the client's total value{' of' + of + ' events' if of else ''} in the next {h} days",
                task(
                    "spend",
                    "regression",
                    f"Total value of the client's{of} events in the next {h} days.",
                    {"value": "coalesce(sum(value), 0)", **where, "default": 0},
                ),
            )
        )
    if any("item_id" in s.roles for s in sources):
        tasks.append(
            (
                f"recommendation: the items of the client's{of} events in the next {h} days",
                task(
                    "next_purchases",
                    "recommendation",
                    f"The items of the client's{of} events in the next {h} days.",
                    {"column": "item_id", **where},
                ),
            )
        )
    if item_attrs:
        col = item_attrs[0]
        tasks.append(
            (
                f"multilabel: which of the 10 most frequent {col} values the client's{of} events"
                f" of the next {h} days have",
                task(
                    _identifier(f"{col}_propensity"),
                    "multilabel",
                    f"Has {'a' + of if of else 'an'} event with each of the 10 most frequent {col} values"
                    f" in the next {h} days.",
                    {"column": col, "top_n": 10, **where},
                ),
            )
        )
    return tasks


# --- names --------------------------------------------------------------------------------------


def _identifier(text: str) -> str:
    """A SQL identifier from a file or folder name (source and table names must be one)."""
    name = re.sub(r"[^0-9a-zA-Z]+", "_", text).strip("_").lower() or "events"
    return f"t_{name}" if name[0].isdigit() else name


def _unique_names(names: list[str], taken: set[str] | None = None) -> list[str]:
    """The names, with _2, _3 ... appended where one is taken or repeated."""
    used = set(taken or ())
    out = []
    for n in names:
        candidate, i = n, 1
        while candidate in used:
            i += 1
            candidate = f"{n}_{i}"
        used.add(candidate)
        out.append(candidate)
    return out
