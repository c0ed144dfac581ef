"""Read and write the BIOSCAN-5M metadata table exactly as released (release -> **metadata** -> shards).

Sources: the CSV, its JSON-LD twin (a JSON array of flat records with the same keys), the metadata zip
`BIOSCAN_5M_Insect_Dataset_metadata_MultiTypes.zip` (read in place, never extracted) or a release root.
Everything goes through pyarrow's streaming CSV reader with explicit column types, so the 5,150,850-row
(4 GB) table loads in bounded memory: a column projection is pushed into the parser and a split filter
is applied per batch. Types follow the release (`METADATA_SCHEMA`): text stays text (`chunk` "00" stays
"00"), empty field = null in every column, nullable integers even when written like `150502.0`.
Rows with the wrong field count become `malformed_row` rejects naming their line (strict mode raises).
"""

from __future__ import annotations

import contextlib
import csv
import functools
import io
import json
import os
import re
import warnings
import zipfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from bioscan_stream._atomic import atomic_path
from bioscan_stream.constants import (
    BBOX_COLUMNS,
    BBOX_TSV,
    COLUMNS,
    METADATA_CSV,
    METADATA_JSONLD,
    METADATA_ZIP,
    SPLITS,
)
from bioscan_stream.validate import MALFORMED_ROW, InvalidRecordError, Reject

_FLOAT_COLUMNS = frozenset({"coord-lat", "coord-lon", "area_fraction", "scale_factor"})
_INT_COLUMNS = frozenset({"image_measurement_value", "inferred_ranks", "index_bioscan_1M_insect"})

#: The 23 columns in CSV order with their types (text for everything that is not a number).
METADATA_SCHEMA = pa.schema(
    [(c, pa.float64() if c in _FLOAT_COLUMNS else pa.int64() if c in _INT_COLUMNS else pa.string()) for c in COLUMNS]
)
#: Columns of `BIOSCAN_5M_Insect_bbox.tsv`: raw detector box on the original image plus the size fields.
BBOX_SCHEMA = pa.schema(
    [
        (c, pa.string() if c == "processid" else pa.int64() if c.endswith("_original") else pa.float64())
        for c in BBOX_COLUMNS
    ]
)
#: Where `write_bbox` puts the box table (the release ships it as a separate download beside the zips).
BBOX_RELPATH = f"bioscan5m/metadata/{BBOX_TSV}"

_BATCH_ROWS = 65_536
# NOTE: pyarrow reads ahead several blocks from a path: peak arrow memory for a 4-column projection of 1M rows
# was 74 MiB with 1 MiB blocks vs 500 MiB with 16 MiB, at the same CPU time (2 cores, 2026-11-22).
_BLOCK_BYTES = 1 << 20
_JSON_CHUNK_CHARS = 1 << 20
_WS = re.compile(r"\s*")


def metadata_path(root: str | os.PathLike[str]) -> Path:
    """The official CSV path inside a release root."""
    return Path(root) / METADATA_CSV


def _resolve(path: str | os.PathLike[str]) -> tuple[str, Path]:
    """Kind (`csv`, `jsonld`, `zip`) and file of a metadata source; a folder is a release root."""
    path = Path(path)
    if path.is_dir():
        for kind, candidate in (
            ("csv", path / METADATA_CSV),
            ("jsonld", path / METADATA_JSONLD),
            ("zip", path / METADATA_ZIP),
        ):
            if candidate.is_file():
                return kind, candidate
        raise FileNotFoundError(
            f"no metadata under {path}: looked for {METADATA_CSV}, {METADATA_JSONLD}, {METADATA_ZIP}"
        )
    kinds = {".csv": "csv", ".jsonld": "jsonld", ".json": "jsonld", ".zip": "zip"}
    if path.suffix.lower() not in kinds:
        raise ValueError(f"{path}: unknown metadata format (expected .csv, .jsonld or .zip, or a release root)")
    if not path.is_file():
        raise FileNotFoundError(f"metadata file {path} does not exist")
    return kinds[path.suffix.lower()], path


@contextlib.contextmanager
def _open_source(path: str | os.PathLike[str]) -> Iterator[tuple[str, str, IO[bytes], str | None]]:
    """(format, name for messages, binary stream, native file path or None for a zip member).

    Zip members are streamed, never extracted. A plain file's path is also given so that pyarrow can
    read it with its own I/O (a Python file object goes through the GIL: ~3x slower here).
    """
    kind, file = _resolve(path)
    if kind != "zip":
        with open(file, "rb") as stream:
            yield kind, str(file), stream, str(file)
        return
    with zipfile.ZipFile(file) as archive:
        names = archive.namelist()
        for fmt, relpath in (("csv", METADATA_CSV), ("jsonld", METADATA_JSONLD)):
            member = next((n for n in names if n == relpath or n.endswith("/" + Path(relpath).name)), None)
            if member is not None:
                with archive.open(member) as stream:
                    yield fmt, f"{file}:{member}", stream, None
                return
    raise FileNotFoundError(f"{file}: holds neither {METADATA_CSV} nor {METADATA_JSONLD}")


def _check_request(columns: Iterable[str] | None, splits: Iterable[str] | None) -> tuple[list[str], set[str] | None]:
    wanted = list(COLUMNS if columns is None else columns)
    unknown = [c for c in wanted if c not in COLUMNS]
    if unknown:
        raise ValueError(f"unknown metadata column(s) {unknown}; columns are {', '.join(COLUMNS)}")
    split_set = None if splits is None else set(splits)
    if split_set is not None and not split_set <= set(SPLITS):
        raise ValueError(f"unknown split(s) {sorted(split_set - set(SPLITS))}; splits are {', '.join(SPLITS)}")
    return wanted, split_set


def _exact_int64(
    values: pa.Array | pa.ChunkedArray, column: str, where: str, *, first_row: int = 0, table: pa.Table | None = None
) -> pa.Array | pa.ChunkedArray:
    """Cast float64 to int64, refusing any value with a fractional part (`150502.0` -> 150502).

    The error names the data row (counted from `first_row`) and its processid when `table` has one.
    """
    fractional = pc.fill_null(pc.not_equal(values, pc.floor(values)), False)
    if pc.any(fractional).as_py():
        row = pc.index(fractional, True).as_py()
        pid = f" (processid {table['processid'][row].as_py()!r})" if table and "processid" in table.column_names else ""
        value = values[row].as_py()
        raise ValueError(
            f"{where}: data row {first_row + row}{pid}: column {column!r} value {value!r} is not an integer"
        )
    return values.cast(pa.int64())


def _finish(table: pa.Table, wanted: list[str], splits: set[str] | None, where: str, first_row: int) -> pa.Table:
    """Exact integer casts, split filter and the requested column order, for one parsed block."""
    for name in _INT_COLUMNS.intersection(table.column_names):
        column = _exact_int64(table[name], name, where, first_row=first_row, table=table)
        table = table.set_column(table.column_names.index(name), name, column)
    if splits is not None:
        table = table.filter(pc.is_in(table["split"], value_set=pa.array(sorted(splits), pa.string())))
    return table.select(wanted)


def _malformed_reject(row: Any, *, strict: bool, where: str, line_offset: int, rejects: list[Reject]) -> str:
    """pyarrow `invalid_row_handler`: a wrong-field-count row becomes a reject and is skipped.

    In strict mode the reject is still recorded and the row is refused ("error"): pyarrow swallows
    exceptions raised in the handler, so `_iter_csv` turns the resulting ArrowInvalid into
    `InvalidRecordError`. The split is guessed as the field that is a partition name (fields shift).
    """
    fields = next(csv.reader([row.text]), [])
    processid = fields[0] or None if fields else None
    split = next((f for f in fields if f in SPLITS), None)
    line = row.number + line_offset if row.number is not None else None
    detail = f"{where}: line {line}: expected {row.expected_columns} fields, found {row.actual_columns}: "
    rejects.append(Reject(processid, split, MALFORMED_ROW, detail + repr(row.text[:200])))
    return "error" if strict else "skip"


def _csv_reader(source: IO[bytes] | str, header: list[str], include: list[str], handler: Any) -> Any:
    """Streaming pyarrow reader over the data rows (a path source still starts at the header)."""
    types = {c: pa.float64() if c in _INT_COLUMNS else METADATA_SCHEMA.field(c).type for c in COLUMNS}
    return pacsv.open_csv(
        source,
        # use_threads=False: the only mode in which pyarrow reports line numbers of malformed rows; threads
        # gained nothing on 2 cores (0.42 s vs 0.53 s for 300k rows, best of 3, 2026-11-22)
        read_options=pacsv.ReadOptions(
            column_names=header, use_threads=False, block_size=_BLOCK_BYTES, skip_rows=int(isinstance(source, str))
        ),
        # quoted newlines are legal CSV (our writer emits them); no CPU cost measured single-threaded
        parse_options=pacsv.ParseOptions(newlines_in_values=True, invalid_row_handler=handler),
        convert_options=pacsv.ConvertOptions(
            column_types=types, include_columns=include, null_values=[""], strings_can_be_null=True
        ),
    )


def _iter_csv(
    stream: IO[bytes],
    native: str | None,
    where: str,
    wanted: list[str],
    splits: set[str] | None,
    strict: bool,
    rejects: list[Reject],
) -> Iterator[pa.Table]:
    include = wanted + (["split"] if splits is not None and "split" not in wanted else [])
    header = next(csv.reader([stream.readline().decode("utf-8-sig")]), [])
    missing = [c for c in COLUMNS if c not in header]
    if missing:
        raise ValueError(f"{where}: header lacks column(s) {missing}; found {header}")
    # pyarrow numbers physical lines of what it reads: a path includes the header, our stream is past it
    offset = 0 if native else 1
    handler = functools.partial(_malformed_reject, strict=strict, where=where, line_offset=offset, rejects=rejects)
    seen = len(rejects)
    try:
        first_row = 0
        for batch in _csv_reader(native or stream, header, include, handler):
            yield _finish(pa.Table.from_batches([batch]), wanted, splits, where, first_row)
            first_row += batch.num_rows
    except pa.ArrowInvalid as err:  # conversion errors name the CSV row; add the file
        if strict and len(rejects) > seen:
            raise InvalidRecordError(rejects.pop()) from err
        raise ValueError(f"{where}: {err}") from err


def _json_records(text: IO[str], where: str) -> Iterator[Any]:
    """Elements of a JSON array, decoded incrementally so a 5 GB file never sits in memory."""
    decoder, buf, pos, eof, state, n = json.JSONDecoder(), "", 0, False, "start", 0
    while True:
        pos = _WS.match(buf, pos).end()  # type: ignore[union-attr]
        if pos == len(buf) and not eof:
            chunk = text.read(_JSON_CHUNK_CHARS)
            buf, pos, eof = buf[pos:] + chunk, 0, not chunk
            continue
        ch = buf[pos : pos + 1]
        if state == "start" and ch != "[":
            raise ValueError(f"{where}: JSON-LD metadata must be a JSON array of records")
        if state == "start" or (state == "sep" and ch == ","):
            pos, state = pos + 1, "first" if state == "start" else "item"
            continue
        if ch == "]" and state in ("first", "sep"):
            return
        if state == "sep" or ch == "":
            raise ValueError(f"{where}: expected ',' or ']' after record {n}, found {buf[pos : pos + 20]!r}")
        try:
            obj, end = decoder.raw_decode(buf, pos)
        except json.JSONDecodeError as err:
            if eof:
                raise ValueError(f"{where}: record {n}: {err}") from err
            chunk = text.read(_JSON_CHUNK_CHARS)  # the record straddles the buffer end: read more
            buf, pos, eof = buf[pos:] + chunk, 0, not chunk
            continue
        yield obj
        pos, state, n = end, "sep", n + 1


def _json_column(name: str, values: list[Any], where: str) -> pa.Array:
    """One column of JSON values with the release's types; "" is missing, as in the CSV."""
    values = [None if v is None or v == "" else v for v in values]
    if name not in _FLOAT_COLUMNS and name not in _INT_COLUMNS:
        return pa.array([v if v is None or isinstance(v, str) else str(v) for v in values], pa.string())
    try:
        floats = pa.array([None if v is None else float(v) for v in values], pa.float64())
    except (TypeError, ValueError) as err:
        raise ValueError(f"{where}: column {name!r}: {err}") from err
    return _exact_int64(floats, name, where) if name in _INT_COLUMNS else floats


def _iter_jsonld(
    stream: IO[bytes],
    native: str | None,
    where: str,
    wanted: list[str],
    splits: set[str] | None,
    strict: bool,
    rejects: list[Reject],
) -> Iterator[pa.Table]:
    records: list[dict[str, Any]] = []
    text = io.TextIOWrapper(stream, encoding="utf-8-sig")

    def table() -> pa.Table:
        return pa.table({c: _json_column(c, [r.get(c) for r in records], where) for c in wanted})

    for n, obj in enumerate(_json_records(text, where)):
        if not isinstance(obj, dict):
            reject = Reject(None, None, MALFORMED_ROW, f"{where}: record {n} is not a JSON object: {str(obj)[:200]!r}")
            if strict:
                raise InvalidRecordError(reject)
            rejects.append(reject)
        elif splits is None or obj.get("split") in splits:
            records.append(obj)
        if len(records) == _BATCH_ROWS:
            yield table()
            records = []
    if records:
        yield table()


def _rebatch(tables: Iterable[pa.Table], batch_rows: int) -> Iterator[pa.RecordBatch]:
    """Contiguous batches of exactly `batch_rows` rows (the last one shorter) from small parsed blocks."""
    pending: list[pa.Table] = []
    rows = 0
    for table in tables:
        pending.append(table)
        rows += table.num_rows
        while rows >= batch_rows:
            merged = pa.concat_tables(pending).combine_chunks()
            yield from merged.slice(0, batch_rows).to_batches()
            pending, rows = [merged.slice(batch_rows)], rows - batch_rows
    if rows:
        yield from pa.concat_tables(pending).combine_chunks().to_batches()


def iter_metadata(
    path: str | os.PathLike[str],
    *,
    columns: Iterable[str] | None = None,
    splits: Iterable[str] | None = None,
    batch_rows: int = _BATCH_ROWS,
    strict: bool = False,
    rejects: list[Reject] | None = None,
) -> Iterator[pa.RecordBatch]:
    """Stream the metadata as record batches of `batch_rows` rows (memory stays bounded).

    Args:
        path: the CSV, the JSON-LD, the metadata zip, or a release root.
        columns: columns to read, in the order wanted (default: all 23 in CSV order).
        splits: keep only rows of these partitions (applied per batch, before anything is kept).
        batch_rows: rows per batch (all batches but the last are this long).
        strict: raise `InvalidRecordError` on the first malformed row instead of skipping it.
        rejects: list that receives a `malformed_row` reject per skipped row; when None, skipped rows
            are announced with a warning (nothing disappears silently).
    """
    wanted, split_set = _check_request(columns, splits)
    collected: list[Reject] = [] if rejects is None else rejects
    before = len(collected)
    with _open_source(path) as (fmt, where, stream, native):
        reader = _iter_csv if fmt == "csv" else _iter_jsonld
        yield from _rebatch(reader(stream, native, where, wanted, split_set, strict, collected), batch_rows)
    if rejects is None and len(collected) > before:
        warnings.warn(
            f"skipped {len(collected) - before} malformed row(s); first: {collected[before].detail}", stacklevel=2
        )


def read_metadata(
    path: str | os.PathLike[str],
    columns: Iterable[str] | None = None,
    splits: Iterable[str] | None = None,
    *,
    strict: bool = False,
    rejects: list[Reject] | None = None,
) -> pa.Table:
    """The metadata table (see `iter_metadata` for the arguments), typed as `METADATA_SCHEMA`."""
    wanted, _ = _check_request(columns, splits)
    schema = pa.schema([METADATA_SCHEMA.field(c) for c in wanted])
    batches = iter_metadata(path, columns=wanted, splits=splits, strict=strict, rejects=rejects)
    return pa.Table.from_batches(list(batches), schema=schema)


def _conform(table: pa.Table, schema: pa.Schema, what: str, *, first_row: int = 0) -> pa.Table:
    """`table` with exactly `schema`'s columns in order: missing -> null, "" -> null, exact casts.

    `first_row` is the table's first row in a larger one, for error messages about a slice.
    """
    extra = [c for c in table.column_names if c not in schema.names]
    if extra:
        raise ValueError(f"{what}: unexpected column(s) {extra}; allowed: {', '.join(schema.names)}")
    arrays = []
    for field in schema:
        if field.name not in table.column_names:
            arrays.append(pa.nulls(table.num_rows, field.type))
            continue
        column = table[field.name]
        if pa.types.is_string(field.type):
            column = column.cast(pa.string())
            empty = pc.equal(column, "")
            if pc.any(empty).as_py():  # copy the column only when it holds "" (missing, as in the release)
                column = pc.if_else(empty, pa.scalar(None, pa.string()), column)
        elif pa.types.is_integer(field.type) and pa.types.is_floating(column.type):
            column = _exact_int64(column, field.name, what, first_row=first_row, table=table)
        arrays.append(column.cast(field.type))
    return pa.table(arrays, schema=schema)


def _conformed_slices(table: pa.Table, schema: pa.Schema, what: str) -> Iterator[pa.Table]:
    """`_conform` slice by slice (at least one slice, so an empty table is still checked): bounded memory."""
    for start in range(0, max(table.num_rows, 1), _BATCH_ROWS):
        yield _conform(table.slice(start, _BATCH_ROWS), schema, what, first_row=start)


def _replace_rows(text: pa.Array, mask: pa.Array, values: pa.Array, fmt: Any) -> pa.Array:
    """`text` with the rows under `mask` replaced by `fmt(value)` (the rare rows Arrow cannot format)."""
    mask = pc.fill_null(mask, False)
    if not pc.any(mask).as_py():
        return text
    odd = values.filter(mask).to_pylist()
    return pc.replace_with_mask(text, mask, pa.array([fmt(v) for v in odd], pa.string()))


def _float_text(values: pa.Array, *, json_style: bool) -> pa.Array:
    """float64 as Python writes it (`repr`; in JSON also NaN/Infinity), vectorised; null stays null.

    Arrow's shortest round-trip digits equal `repr`'s; only the notation differs: Arrow drops `.0` from
    integral values and switches between positional and exponent form at other magnitudes than Python
    (1e-4, 1e16). Values in [1e-4, 1e10) and 0 are fixed up in Arrow; the few others go through Python.
    """
    text = pc.cast(values, pa.string())
    magnitude = pc.abs(values)
    plain = pc.and_(
        pc.is_finite(values),
        pc.or_(pc.equal(values, 0.0), pc.and_(pc.greater_equal(magnitude, 1e-4), pc.less(magnitude, 1e10))),
    )
    integral = pc.fill_null(pc.and_(plain, pc.equal(values, pc.floor(values))), False)
    text = pc.if_else(integral, pc.binary_join_element_wise(text, ".0", ""), text)
    return _replace_rows(text, pc.invert(plain), values, json.dumps if json_style else repr)


def _may_hold(values: pa.Array, chars: bytes, *, control: bool = False) -> bool:
    """Whether any string may hold one of `chars` (or, with `control`, a byte below 0x20), from the data buffer
    without a copy: chars below the smallest byte cannot occur, so barcodes (letters and `-`) cost one numpy
    `min`; lets clean columns skip the regex."""
    data = np.frombuffer(_text_bytes(values), dtype=np.uint8)
    if not len(data):
        return False
    low = int(data.min())
    return (control and low < 0x20) or any(bool((data == c).any()) for c in chars if c >= low)


def _csv_text(values: pa.Array, delimiter: str) -> pa.Array:
    """Strings quoted like `csv.writer` (QUOTE_MINIMAL, lineterminator "\\n"): only with the delimiter, `"`
    or a newline inside (a bare carriage return is not quoted), quotes doubled."""
    if not _may_hold(values, f'{delimiter}"\n'.encode()):
        return values
    needs = pc.fill_null(pc.match_substring_regex(values, f'[{delimiter}"\\n]'), False)  # "," or tab
    quoted = pc.binary_join_element_wise('"', pc.replace_substring(values, '"', '""'), '"', "")
    return pc.if_else(needs, quoted, values)


def _json_text(values: pa.Array, prefix: str, suffix: str) -> pa.Array:
    """Strings as `json.dumps(..., ensure_ascii=False)` writes them, between `prefix` and `suffix` (one join);
    the rare ones that need escapes go through Python."""
    text = pc.binary_join_element_wise(prefix + '"', values, '"' + suffix, "")
    if not _may_hold(values, b'"\\', control=True):
        return text
    escape = pc.match_substring_regex(values, r'["\\\x00-\x1f]')
    return _replace_rows(text, escape, values, lambda v: prefix + json.dumps(v, ensure_ascii=False) + suffix)


def _field_text(column: pa.Array, *, csv_delimiter: str | None, prefix: str = "", suffix: str = "") -> pa.Array:
    """One column as text: CSV fields (`csv_delimiter` given; null = empty) or JSON values (null = `null`), each
    between `prefix` and `suffix` (a JSON key, the line end), added in the same pass where possible."""
    null = prefix + ("" if csv_delimiter is not None else "null") + suffix
    if pa.types.is_floating(column.type):
        text = _float_text(column, json_style=csv_delimiter is None)
    elif pa.types.is_integer(column.type):
        text = pc.cast(column, pa.string())
    elif csv_delimiter is not None:
        text = _csv_text(column, csv_delimiter)
    else:
        return pc.fill_null(_json_text(column, prefix, suffix), null)  # quotes and wrapping in one join
    if prefix or suffix:
        text = pc.binary_join_element_wise(prefix, text, suffix, "")
    return pc.fill_null(text, null)


def _text_bytes(lines: pa.Array) -> memoryview:
    """The concatenated UTF-8 bytes of a string array's values (no copy; what null slots span, if anything)."""
    _, offset_buffer, data = lines.buffers()
    if offset_buffer is None or data is None:
        return memoryview(b"")
    offsets = np.frombuffer(offset_buffer, dtype=np.int32)
    return memoryview(data)[offsets[lines.offset] : offsets[lines.offset + len(lines)]]


def _write_delimited(tables: Iterable[pa.Table], out: IO[bytes], *, delimiter: str) -> None:
    """Write like the release (pandas `to_csv` style): quote only when needed, floats as `repr`, null = empty.

    Byte for byte what `csv.writer(out, delimiter=..., lineterminator="\\n")` writes for the Python values,
    but each batch is formatted by Arrow compute kernels (one Python call per column, not per field).
    """
    header_written = False
    for table in tables:
        if not header_written:
            names = _csv_text(pa.array(table.column_names, pa.string()), delimiter)
            out.write((delimiter.join(names.to_pylist()) + "\n").encode("utf-8"))
            header_written = True
        if table.num_rows == 0:
            continue
        last = table.num_columns - 1
        fields = [
            _field_text(column.combine_chunks(), csv_delimiter=delimiter, suffix="\n" if i == last else "")
            for i, column in enumerate(table.columns)
        ]
        out.write(_text_bytes(pc.binary_join_element_wise(*fields, delimiter)))


def json_objects(table: pa.Table, *, compact: bool = False, nan_as_null: bool = False) -> pa.Array:
    """One JSON object per row, keys in column order, null for missing, built by Arrow compute kernels.

    Byte for byte `json.dumps(record, ensure_ascii=False)` of the row's Python values (with `compact`,
    `separators=(",", ":")`; with `nan_as_null`, NaN and infinities become null: strict JSON). Why kernels:
    one Python call per column instead of one encoder call per record (~9 us each for the 23 fields).
    """
    if table.num_columns == 0:
        return pa.array(["{}"] * table.num_rows, pa.string())
    item_sep, key_sep = (",", ":") if compact else (", ", ": ")
    last = table.num_columns - 1
    fields = []
    for i, (name, chunks) in enumerate(zip(table.column_names, table.columns, strict=True)):
        column = chunks.combine_chunks()
        if pa.types.is_null(column.type):
            column = column.cast(pa.string())
        elif nan_as_null and pa.types.is_floating(column.type):
            column = pc.if_else(pc.is_finite(column), column, pa.scalar(None, column.type))
        key = ("{" if i == 0 else "") + json.dumps(name, ensure_ascii=False) + key_sep
        fields.append(_field_text(column, csv_delimiter=None, prefix=key, suffix="}" if i == last else ""))
    return pc.binary_join_element_wise(*fields, item_sep)


def _write_jsonld(tables: Iterable[pa.Table], out: IO[bytes]) -> None:
    """A JSON array of flat records, one per line, null for missing: what `json.dumps(record,
    ensure_ascii=False)` per record writes, built per batch by Arrow compute kernels."""
    out.write(b"[")
    first = True
    for table in tables:
        if table.num_rows == 0:
            continue
        data = _text_bytes(pc.binary_join_element_wise(",\n", json_objects(table), ""))  # ",\n" before a record
        out.write(data[1:] if first else data)  # the first record follows "[\n", not ",\n"
        first = False
    out.write(b"\n]\n")


def _write_csv(tables: Iterable[pa.Table], path: str | os.PathLike[str]) -> Path:
    """Atomically write conformed tables (slices of one table) as a release-style CSV."""
    with atomic_path(path) as tmp, open(tmp, "wb") as out:
        _write_delimited(tables, out, delimiter=",")
    return Path(path)


def write_metadata(table: pa.Table, root: str | os.PathLike[str], *, archive: bool = False) -> Path:
    """Write the CSV and its JSON-LD twin at the official paths under `root`, atomically.

    Columns come out in the official order (missing ones as empty fields); extra columns are an error.
    With `archive=True` also writes `BIOSCAN_5M_Insect_Dataset_metadata_MultiTypes.zip` holding both,
    as the release ships them. Returns the CSV path.
    """
    root = Path(root)
    _write_csv(_conformed_slices(table, METADATA_SCHEMA, "write_metadata"), root / METADATA_CSV)
    with atomic_path(root / METADATA_JSONLD) as tmp, open(tmp, "wb") as out:
        _write_jsonld(_conformed_slices(table, METADATA_SCHEMA, "write_metadata"), out)
    if archive:
        # compresslevel 1: zipping 100k rows took ~2.4 CPU-s vs ~18 at the default level 6 (2026-11-22)
        with (
            atomic_path(root / METADATA_ZIP) as tmp,
            zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf,
        ):
            for relpath in (METADATA_CSV, METADATA_JSONLD):
                zf.write(root / relpath, relpath)
    return root / METADATA_CSV


def write_metadata_csv(table: pa.Table, path: str | os.PathLike[str]) -> Path:
    """Write one metadata CSV (the 23 columns, release style) at any `path`, atomically; returns the path.

    For tools that rewrite a single table, e.g. `bioscan-stream partition IN.csv OUT.csv`.
    """
    return _write_csv(_conformed_slices(table, METADATA_SCHEMA, "write_metadata_csv"), path)


def read_bbox(path: str | os.PathLike[str]) -> pa.Table:
    """The bounding-box table (`BBOX_SCHEMA`) from the TSV or a release root.

    In a root, looks at `bioscan5m/metadata/` (where `write_bbox` puts it) then at the root itself
    (where the separately downloaded file lands).
    """
    path = Path(path)
    if path.is_dir():
        found = [p for p in (path / BBOX_RELPATH, path / BBOX_TSV) if p.is_file()]
        if not found:
            raise FileNotFoundError(f"no {BBOX_TSV} under {path} (looked in {BBOX_RELPATH} and the root)")
        path = found[0]
    try:
        table = pacsv.read_csv(
            path,
            parse_options=pacsv.ParseOptions(delimiter="\t"),
            convert_options=pacsv.ConvertOptions(
                column_types={f.name: pa.float64() if f.type == pa.int64() else f.type for f in BBOX_SCHEMA},
                include_columns=list(BBOX_COLUMNS),
                null_values=[""],
                strings_can_be_null=True,
            ),
        )
    except pa.ArrowInvalid as err:
        raise ValueError(f"{path}: {err}") from err
    return _conform(table, BBOX_SCHEMA, str(path))


def write_bbox(table: pa.Table, root: str | os.PathLike[str]) -> Path:
    """Write the bounding-box TSV (columns `BBOX_COLUMNS`) under `root`, atomically; returns its path."""
    target = Path(root) / BBOX_RELPATH
    with atomic_path(target) as tmp, open(tmp, "wb") as out:
        _write_delimited(_conformed_slices(table, BBOX_SCHEMA, "write_bbox"), out, delimiter="\t")
    return target
