"""Copy a store file's embedding column from disk straight into the caller's array: one copy, like `np.load`.

pyarrow decodes a column into buffers of its own, and the reader then copies those into the result: two
copies of every vector (0.55-0.65x `np.load`'s GB/s on the page cache here). The store writes the embedding
column as REQUIRED, PLAIN, uncompressed fixed-size binary without dictionary (`store.write_store_file`), so
each data page holds the vectors' bytes as they are. This module walks a column chunk's page headers (Thrift
compact protocol: only the fields that locate the data are read, the rest is skipped) and reads each page's
data into the destination rows. Anything else (a compressed or nullable column, a dictionary page, a v2 page)
raises `NotPlain`, and the caller falls back to pyarrow.
"""

from __future__ import annotations

import io

import numpy as np
import pyarrow.parquet as pq

__all__ = ["NotPlain", "read_plain_column"]

_DATA_PAGE, _PLAIN = 0, 0
#: Compact-protocol type ids (Thrift `TCompactProtocol`).
_TRUE, _FALSE, _BYTE, _I16, _I32, _I64, _DOUBLE, _BINARY, _LIST, _SET, _MAP, _STRUCT = range(1, 13)


class NotPlain(ValueError):
    """The column chunk is not a run of plain, uncompressed, level-free data pages."""


class _Compact:
    """Just enough of Thrift's compact protocol to read a Parquet `PageHeader`."""

    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def byte(self) -> int:
        value = self.data[self.pos]
        self.pos += 1
        return value

    def varint(self) -> int:
        shift = result = 0
        while True:
            byte = self.byte()
            result |= (byte & 0x7F) << shift
            if byte < 0x80:
                return result
            shift += 7

    def zigzag(self) -> int:
        value = self.varint()
        return (value >> 1) ^ -(value & 1)

    def fields(self) -> dict[int, object]:
        """A struct's i32 fields by id (nested structs as dicts); every other value is skipped."""
        found: dict[int, object] = {}
        field = 0
        while (header := self.byte()) != 0:
            kind, delta = header & 0x0F, header >> 4
            field = field + delta if delta else self.zigzag()
            if kind == _STRUCT:
                found[field] = self.fields()
            elif kind in (_I16, _I32):
                found[field] = self.zigzag()
            else:
                self.skip(kind)
        return found

    def skip(self, kind: int) -> None:
        if kind in (_TRUE, _FALSE):
            return
        if kind == _BYTE:
            self.pos += 1
        elif kind in (_I16, _I32, _I64):
            self.varint()
        elif kind == _DOUBLE:
            self.pos += 8
        elif kind == _BINARY:
            self.pos += self.varint()
        elif kind in (_LIST, _SET):
            header = self.byte()
            size = header >> 4 if header >> 4 != 15 else self.varint()
            for _ in range(size):
                self.skip(header & 0x0F)
        elif kind == _MAP:
            size = self.varint()
            if size:
                types = self.byte()
                for _ in range(size):
                    self.skip(types >> 4)
                    self.skip(types & 0x0F)
        elif kind == _STRUCT:
            self.fields()
        else:
            raise NotPlain(f"unknown Thrift compact type {kind}")


#: Longest page header read ahead: a v1 data page header without statistics is ~20 bytes.
_HEADER_PEEK = 256


def read_plain_column(file: io.BufferedIOBase, metadata: pq.FileMetaData, column: str, out: np.ndarray) -> None:
    """Read every row of fixed-size-binary `column` into the rows of C-contiguous `out` (bytes per row = `out`'s
    row size)."""
    if not out.flags.c_contiguous:
        raise ValueError("read_plain_column writes into a C-contiguous array")
    index = metadata.schema.names.index(column)
    width = out[0].nbytes if len(out) else 0
    rows = out.reshape(len(out), -1).view(np.uint8).data.cast("B")
    written = 0
    for group in range(metadata.num_row_groups):
        chunk = metadata.row_group(group).column(index)
        if chunk.compression != "UNCOMPRESSED" or chunk.has_dictionary_page:
            raise NotPlain(f"{column}: compression {chunk.compression}, dictionary {chunk.has_dictionary_page}")
        position, end = chunk.data_page_offset, chunk.data_page_offset + chunk.total_compressed_size
        while position < end:
            file.seek(position)
            header = _Compact(file.read(_HEADER_PEEK))
            try:
                page = header.fields()
            except IndexError as error:  # a header longer than the peek (statistics): not one of ours
                raise NotPlain(f"{column}: page header at {position} longer than {_HEADER_PEEK} bytes") from error
            data = page.get(5)
            if page.get(1) != _DATA_PAGE or not isinstance(data, dict) or data.get(2) != _PLAIN:
                raise NotPlain(f"{column}: page type {page.get(1)}, not a plain v1 data page")
            size = int(page[3])  # type: ignore[call-overload]
            if size != int(data[1]) * width or written + size > len(rows):
                raise NotPlain(f"{column}: a page of {size} bytes for {data[1]} values: levels or another width")
            file.seek(position + header.pos)
            if file.readinto(rows[written : written + size]) != size:
                raise NotPlain(f"{column}: file ends inside a page")
            written += size
            position += header.pos + size
    if written != len(rows):
        raise NotPlain(f"{column}: {written // max(width, 1)} rows in the pages, {len(out)} expected")
