"""BIOSCAN-1M on disk: its metadata and its images, behind the project's interfaces (release -> **1M** -> shards).

Facts (the seed README ../shared/seeds/001 and the official `bioscan-dataset` package's `BIOSCAN1M` loader,
the reference reader): the metadata is `BIOSCAN_Insect_Dataset_metadata.tsv` (and a JSON-LD twin, a JSON array
of flat records) with the 28 columns of `COLUMNS_1M`; missing labels are the string `not_classified`; six
partition columns `{large,medium,small}_{diptera_family,insect_order}` hold `train / validation / test /
no_split`. Images are cut in parts of 10,000 (`chunk_number` 1..113): the extracted tree is
`bioscan1m/images/<package>/part<chunk_number>/<image_file>`; the `*_256` packages also ship as one zip and
as one HDF5 file whose group `bioscan_dataset` holds each image's raw JPEG bytes as a 1-D uint8 dataset keyed by
file name; `original_full` and `cropped` ship as 113 part zips.

`read_metadata_1m` gives an Arrow table (`METADATA_1M_SCHEMA`) with the official loader's label cleaning;
`vocabularies_1m` / `encode_labels` give its label indices. `ImageStore1M` reads image bytes from the tree, the
zips or the HDF5 file with the `ImageStore` interface (`read(processid, split)`): zips are indexed once
(`layout.ZipIndex`) and the HDF5 file is opened once per process, never per image (the 1M repository's loader
reopens it on every item).
"""

from __future__ import annotations

import os
import re
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from bioscan_stream._atomic import atomic_path
from bioscan_stream.layout import CorruptImage, MissingImage, ZipIndex, _member_key, _read_member
from bioscan_stream.metadata import _json_records, _write_delimited, _write_jsonld
from bioscan_stream.validate import MALFORMED_ROW, InvalidRecordError, Reject
from bioscan_stream.vocab import build_vocabulary

__all__ = [
    "COLUMNS_1M",
    "LABEL_COLUMNS_1M",
    "PARTITIONINGS",
    "SPLITS_1M",
    "METADATA_1M_SCHEMA",
    "ImageStore1M",
    "clean_labels",
    "find_metadata_1m",
    "is_release_1m",
    "read_metadata_1m",
    "vocabularies_1m",
    "write_metadata_1m",
]

#: The 28 columns of the TSV, in file order (the official loader's dtype table lists them so).
COLUMNS_1M: tuple[str, ...] = (
    "sampleid", "processid", "uri", "name", "phylum", "class", "order", "family", "subfamily", "tribe", "genus",
    "species", "subspecies", "nucraw", "image_file",
    "large_diptera_family", "medium_diptera_family", "small_diptera_family",
    "large_insect_order", "medium_insect_order", "small_insect_order",
    "chunk_number", "copyright_license", "copyright_holder", "copyright_institution", "copyright_contact",
    "photographer", "author",
)  # fmt: skip
#: Label columns the official loader cleans and encodes (`<col>_index` = code in the sorted categories).
LABEL_COLUMNS_1M: tuple[str, ...] = (
    "phylum",
    "class",
    "order",
    "family",
    "subfamily",
    "tribe",
    "genus",
    "species",
    "uri",
)
#: The six partitioning versions of the 1M paper (one column each) and their split values.
PARTITIONINGS: tuple[str, ...] = (
    "large_diptera_family", "medium_diptera_family", "small_diptera_family",
    "large_insect_order", "medium_insect_order", "small_insect_order",
)  # fmt: skip
SPLITS_1M: tuple[str, ...] = ("train", "validation", "test", "no_split")
NOT_CLASSIFIED = "not_classified"

METADATA_1M_TSV = "bioscan1m/BIOSCAN_Insect_Dataset_metadata.tsv"
METADATA_1M_JSONLD = "bioscan1m/BIOSCAN_Insect_Dataset_metadata.jsonld"
IMAGES_DIR_1M = "bioscan1m/images"
#: Images per part folder / zip (the last part, 113, holds 8,313).
PART_SIZE = 10_000
HDF5_GROUP = "bioscan_dataset"
#: Packages with one whole zip and one HDF5 file; the others ship as 113 part zips named after `_PART_ZIP`.
PACKAGES_256: tuple[str, ...] = ("original_256", "cropped_256")
_PART_ZIP = {
    "original_full": "bioscan_images_original_full_part{}.zip",
    "cropped": "bioscan_images_cropped_full_part{}.zip",
}
#: The official downloader stores `<package>.zip` as `BIOSCAN_1M_<package>.zip`; both names are accepted.
_DOWNLOAD_PREFIX = "BIOSCAN_1M_"
CONTAINERS: tuple[str, ...] = ("tree", "zip", "hdf5")

_INT_COLUMNS = frozenset({"chunk_number"})
#: Columns the official loader reads (its `usecols`): a file without one of them is refused; the others
#: (`name`, `subspecies`, the copyright columns) are read as missing when absent.
REQUIRED_1M: tuple[str, ...] = (
    "processid", "sampleid", "uri", *LABEL_COLUMNS_1M[:-1], "nucraw", "image_file", "chunk_number", *PARTITIONINGS,
)  # fmt: skip
#: The official loader reads with pandas, whose default NA strings become missing values.
_PANDAS_NA = ("", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN", "<NA>",
              "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null")  # fmt: skip
#: Tribe labels the official loader repairs by genus (they were only partially applied in the release).
_TRIBE_FIXES = (("Asteia", "Asteiini"), ("Nemorilla", "Winthemiini"), ("Philaenus", "Philaenini"))
_MEMBER = re.compile(r"^(?P<prefix>.*?)part(?P<part>\d+)/(?P<file>[^/]+)$")

#: Columns in file order with their types (text except `chunk_number`).
METADATA_1M_SCHEMA = pa.schema([(c, pa.int64() if c in _INT_COLUMNS else pa.string()) for c in COLUMNS_1M])


def find_metadata_1m(root: str | os.PathLike[str]) -> Path | None:
    """The 1M metadata file of a release root (TSV first, then JSON-LD), a metadata file itself, or None."""
    path = Path(root)
    if path.is_file():
        return path if path.name.startswith("BIOSCAN_Insect_Dataset_metadata") else None
    for relpath in (METADATA_1M_TSV, METADATA_1M_JSONLD):
        for candidate in (path / relpath, path / Path(relpath).name):
            if candidate.is_file():
                return candidate
    return None


def is_release_1m(root: str | os.PathLike[str]) -> bool:
    """Whether `root` holds a BIOSCAN-1M release (its metadata TSV or JSON-LD); used to auto-detect."""
    return find_metadata_1m(root) is not None


def _check_header(path: Path, header: Iterable[str], wanted: list[str]) -> None:
    missing = [c for c in wanted if c in REQUIRED_1M and c not in set(header)]
    if missing:
        raise ValueError(f"{path}: lacks column(s) {missing} that the official loader reads")


def _read_tsv(path: Path, wanted: list[str], strict: bool, rejects: list[Reject]) -> pa.Table:
    with open(path, encoding="utf-8-sig") as text:
        _check_header(path, [c.strip('"') for c in text.readline().rstrip("\r\n").split("\t")], wanted)

    def on_bad_row(row: Any) -> str:
        rejects.append(Reject(None, None, MALFORMED_ROW, f"{path}: expected {row.expected_columns} fields, "
                              f"found {row.actual_columns}: {row.text[:200]!r}"))  # fmt: skip
        return "error" if strict else "skip"

    try:
        return pacsv.read_csv(
            path,
            parse_options=pacsv.ParseOptions(delimiter="\t", invalid_row_handler=on_bad_row),
            convert_options=pacsv.ConvertOptions(
                column_types={f.name: f.type for f in METADATA_1M_SCHEMA}, include_columns=wanted,
                null_values=list(_PANDAS_NA), strings_can_be_null=True, include_missing_columns=True,
            ),
        )  # fmt: skip
    except pa.ArrowInvalid as err:
        if strict and rejects:
            raise InvalidRecordError(rejects[-1]) from err
        raise ValueError(f"{path}: {err}") from err


def _read_jsonld(path: Path, wanted: list[str], strict: bool, rejects: list[Reject]) -> pa.Table:
    records: list[dict[str, Any]] = []
    with open(path, encoding="utf-8-sig") as text:
        for n, obj in enumerate(_json_records(text, str(path))):
            if isinstance(obj, dict):
                records.append(obj)
                continue
            reject = Reject(None, None, MALFORMED_ROW, f"{path}: record {n} is not a JSON object: {str(obj)[:200]!r}")
            if strict:
                raise InvalidRecordError(reject)
            rejects.append(reject)
    _check_header(path, records[0] if records else wanted, wanted)
    columns = {}
    for name in wanted:
        values = [r.get(name) for r in records]
        values = [None if v is None or (isinstance(v, str) and v in _PANDAS_NA) else v for v in values]
        if name in _INT_COLUMNS:
            columns[name] = pa.array([None if v is None else int(v) for v in values], pa.int64())
        else:
            columns[name] = pa.array([None if v is None else str(v) for v in values], pa.string())
    return pa.table(columns)


def clean_labels(table: pa.Table) -> pa.Table:
    """The official loader's label cleaning, by Arrow kernels (same result, row for row).

    `not_classified` -> missing in every label column; three tribes repaired by genus; a missing genus
    taken from the species' first word; a missing tribe under a known genus becomes `unassigned <subfamily>`
    (or `unassigned <family>`); then a missing subfamily under a known tribe becomes `unassigned <family>`.
    """
    col = {c: table[c] for c in LABEL_COLUMNS_1M if c in table.column_names}
    for name, values in col.items():
        col[name] = pc.if_else(pc.fill_null(pc.equal(values, NOT_CLASSIFIED), False), None, values)
    if {"genus", "species", "tribe", "subfamily", "family"} <= col.keys():
        genus, species, tribe = col["genus"], col["species"], col["tribe"]
        for name, fixed in _TRIBE_FIXES:
            tribe = pc.if_else(pc.fill_null(pc.equal(genus, name), False), fixed, tribe)
        first_word = pc.list_element(pc.split_pattern(species, " ", max_splits=1), 0)
        genus = pc.if_else(pc.and_(pc.is_null(genus), pc.is_valid(species)), first_word, genus)
        subfamily, family = col["subfamily"], col["family"]
        parent = pc.if_else(pc.is_valid(subfamily), subfamily, family)
        unassigned = pc.binary_join_element_wise("unassigned ", parent, "")
        tribe = pc.if_else(pc.and_(pc.is_null(tribe), pc.is_valid(genus)), unassigned, tribe)
        no_subfamily = pc.and_(pc.is_null(subfamily), pc.is_valid(tribe))
        subfamily = pc.if_else(no_subfamily, pc.binary_join_element_wise("unassigned ", family, ""), subfamily)
        col.update(genus=genus, tribe=tribe, subfamily=subfamily)
    for name, values in col.items():
        table = table.set_column(table.column_names.index(name), name, values)
    return table


def read_metadata_1m(
    path: str | os.PathLike[str],
    columns: Iterable[str] | None = None,
    *,
    clean: bool = True,
    strict: bool = False,
    rejects: list[Reject] | None = None,
) -> pa.Table:
    """The 1M metadata (TSV or JSON-LD, or a release root) as an Arrow table typed by `METADATA_1M_SCHEMA`.

    Args:
        path: the TSV, the JSON-LD, or a release root holding `bioscan1m/BIOSCAN_Insect_Dataset_metadata.*`.
        columns: columns to keep, in this order (default all 28); the cleaning reads the ranks it needs.
        clean: apply the official loader's label cleaning (`clean_labels`); False keeps the file's text.
        strict: raise `InvalidRecordError` on a malformed row instead of skipping it.
        rejects: receives a `malformed_row` reject per skipped row.
    """
    file = find_metadata_1m(path)
    if file is None:
        raise FileNotFoundError(
            f"no BIOSCAN-1M metadata at {path} (looked for {METADATA_1M_TSV}, {METADATA_1M_JSONLD})"
        )
    wanted = list(COLUMNS_1M if columns is None else columns)
    unknown = [c for c in wanted if c not in COLUMNS_1M]
    if unknown:
        raise ValueError(f"unknown BIOSCAN-1M column(s) {unknown}; columns are {', '.join(COLUMNS_1M)}")
    read = wanted + [c for c in LABEL_COLUMNS_1M if clean and c not in wanted]
    collected: list[Reject] = [] if rejects is None else rejects
    reader = _read_jsonld if file.suffix.lower() in (".jsonld", ".json") else _read_tsv
    table = reader(file, read, strict, collected)
    table = clean_labels(table) if clean else table
    return table.select(wanted).cast(pa.schema([METADATA_1M_SCHEMA.field(c) for c in wanted]))


def vocabularies_1m(table: pa.Table) -> dict[str, list[str]]:
    """Sorted categories of every label column over the whole table: the official `<col>_index` codes."""
    return {c: build_vocabulary(table[c]) for c in LABEL_COLUMNS_1M if c in table.column_names}


def _conformed(table: pa.Table) -> pa.Table:
    """All 28 columns in order; missing labels written back as `not_classified`, as the release writes them."""
    arrays = []
    for field in METADATA_1M_SCHEMA:
        column = table[field.name] if field.name in table.column_names else pa.nulls(table.num_rows, field.type)
        if field.name in LABEL_COLUMNS_1M or field.name == "subspecies":
            column = pc.fill_null(column.cast(pa.string()), NOT_CLASSIFIED)
        arrays.append(column.cast(field.type))
    return pa.table(arrays, schema=METADATA_1M_SCHEMA)


def write_metadata_1m(table: pa.Table, root: str | os.PathLike[str]) -> Path:
    """Write the TSV and its JSON-LD twin at the official paths under `root`, atomically; returns the TSV path."""
    root = Path(root)
    conformed = _conformed(table)
    with atomic_path(root / METADATA_1M_TSV) as tmp, open(tmp, "wb") as out:
        _write_delimited([conformed], out, delimiter="\t")
    with atomic_path(root / METADATA_1M_JSONLD) as tmp, open(tmp, "wb") as out:
        _write_jsonld([conformed], out)
    return root / METADATA_1M_TSV


def zip_names_1m(package: str) -> tuple[str, ...]:
    """Official zip file names of a 1M image package (one zip, or the 113 parts)."""
    if package in PACKAGES_256:
        return (f"{package}.zip",)
    if package not in _PART_ZIP:
        raise ValueError(f"unknown BIOSCAN-1M package {package!r}; expected one of {(*PACKAGES_256, *_PART_ZIP)}")
    return tuple(_PART_ZIP[package].format(k) for k in range(1, 114))


def hdf5_name_1m(package: str) -> str:
    """The HDF5 file name of a `*_256` package."""
    if package not in PACKAGES_256:
        raise ValueError(f"package {package!r} has no HDF5 file (only {', '.join(PACKAGES_256)})")
    return f"{package}.hdf5"


def _find_files(root: Path, names: Iterable[str]) -> list[Path]:
    """Files of these names (or the official downloader's `BIOSCAN_1M_` names) in `root/bioscan1m` or `root`."""
    found = []
    for name in names:
        for folder in (root / "bioscan1m", root):
            hit = next((folder / n for n in (name, _DOWNLOAD_PREFIX + name) if (folder / n).is_file()), None)
            if hit is not None:
                found.append(hit)
                break
    return found


def _zip_prefixes(zips: Iterable[Path]) -> tuple[str, ...]:
    """Folder prefixes before `part<N>/<file>` of the zips' members (e.g. `bioscan/images/cropped_256/`)."""
    prefixes: set[str] = set()
    for path in zips:
        with zipfile.ZipFile(path) as archive:
            for name in archive.namelist():
                match = _MEMBER.match(name)
                if match:
                    prefixes.add(match["prefix"])
                    break
    return tuple(sorted(prefixes))


class _Locations:
    """processid -> (chunk_number, image_file), as flat arrays sorted by a 64-bit processid hash (picklable)."""

    def __init__(self, records: pa.Table) -> None:
        pids = records["processid"].to_pylist()
        keys = np.fromiter((_member_key(p or "") for p in pids), dtype=np.uint64, count=len(pids))
        order = np.argsort(keys, kind="stable")
        self.keys = keys[order]
        self.chunk = np.asarray(pc.fill_null(records["chunk_number"], -1).to_numpy(), dtype=np.int64)[order]
        self.file = records["image_file"].combine_chunks().take(pa.array(order))

    def find(self, processid: str) -> tuple[int, str] | None:
        key = np.uint64(_member_key(processid))
        row = int(np.searchsorted(self.keys, key))
        if row >= len(self.keys) or self.keys[row] != key:
            return None
        name = self.file[row].as_py()
        return None if name is None else (int(self.chunk[row]), str(name))


class ImageStore1M:
    """Image bytes of one 1M package from the tree, the zips and/or the HDF5 file of a release root.

    `container="auto"` tries the tree, then the zips, then the HDF5 file; a named container reads only it.
    Picklable for Ray tasks: zip descriptors and the HDF5 handle are opened lazily, once per process.
    """

    def __init__(
        self, root: Path, package: str, tree: Path | None, zips: tuple[Path, ...], hdf5: Path | None, records: pa.Table
    ) -> None:
        self.root, self.package, self.tree, self.zips, self.hdf5 = root, package, tree, zips, hdf5
        self.index = ZipIndex.build(zips)
        self.prefixes = _zip_prefixes(zips)
        self.locations = _Locations(records)
        self._fds: list[int] | None = None
        self._h5: Any = None
        self._h5_pid: int | None = None

    @classmethod
    def open(
        cls, root: str | os.PathLike[str], package: str, *, records: pa.Table | None = None, container: str = "auto"
    ) -> ImageStore1M:
        """Find the package under `root`; `records` (processid, chunk_number, image_file) default to the metadata.

        Raises:
            FileNotFoundError: the requested container (or, for "auto", any container) is absent.
        """
        if container not in ("auto", *CONTAINERS):
            raise ValueError(f"container must be 'auto' or one of {CONTAINERS}, not {container!r}")
        root = Path(root)
        tree_dir = root / IMAGES_DIR_1M / package
        tree = tree_dir if container in ("auto", "tree") and tree_dir.is_dir() else None
        zips = tuple(_find_files(root, zip_names_1m(package))) if container in ("auto", "zip") else ()
        hdf5_found = _find_files(root, [hdf5_name_1m(package)]) if package in PACKAGES_256 else []
        hdf5 = hdf5_found[0] if hdf5_found and container in ("auto", "hdf5") else None
        if tree is None and not zips and hdf5 is None:
            raise FileNotFoundError(
                f"no BIOSCAN-1M images of package {package!r} ({container}) under {root}: looked for {tree_dir}, "
                f"{zip_names_1m(package)[0]}" + (f", {hdf5_name_1m(package)}" if package in PACKAGES_256 else "")
            )
        if records is None:
            records = read_metadata_1m(root, ["processid", "chunk_number", "image_file"], clean=False)
        return cls(root, package, tree, zips, hdf5, records.select(["processid", "chunk_number", "image_file"]))

    def read(self, processid: str, split: str = "") -> bytes:
        """The image bytes of a record, exactly as stored (`split` is the `ImageStore` signature; unused)."""
        location = self.locations.find(processid)
        if location is None:
            raise MissingImage(processid, split, self.package, ["the metadata has no image_file for it"])
        return self.read_file(*location, processid=processid, split=split)

    def read_file(self, chunk: int, image_file: str, *, processid: str = "", split: str = "") -> bytes:
        """The bytes of `part<chunk>/<image_file>` from the first container that holds it."""
        relpath, looked = f"part{chunk}/{image_file}", []
        if "/" in image_file or "\\" in image_file or image_file in ("", ".", ".."):
            raise MissingImage(processid, split, self.package, [f"image_file {image_file!r} is not a safe file name"])
        if self.tree is not None:
            try:
                with open(os.path.join(self.tree, relpath), "rb", buffering=0) as src:
                    return src.readall()
            except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
                looked.append(str(self.tree / relpath))
        for prefix in self.prefixes:
            row = self.index.find(prefix + relpath)
            if row is not None:
                if self._fds is None:
                    self._fds = [os.open(p, os.O_RDONLY) for p in self.zips]
                part = int(self.index.part[row])
                return _read_member(self._fds[part], row, self.index, prefix + relpath, str(self.zips[part]))
        if self.zips:
            looked.append(f"{len(self.zips)} zip(s) {self._zip_hint(chunk)}:{relpath}")
        if self.hdf5 is not None:
            return self._read_hdf5(image_file, processid, split, looked)
        raise MissingImage(processid, split, self.package, looked or [f"no container holds {relpath}"])

    def _zip_hint(self, chunk: int) -> str:
        if self.package in PACKAGES_256:
            return self.zips[0].name
        name = _PART_ZIP[self.package].format(chunk)
        return name if any(p.name.endswith(name) for p in self.zips) else f"(part file {name} is absent)"

    def _group(self) -> Any:
        """The HDF5 group, opened once per process (a forked child reopens: HDF5 handles do not survive fork)."""
        if self._h5 is None or self._h5_pid != os.getpid():
            import h5py

            handle = h5py.File(self.hdf5, "r")
            self._h5, self._h5_pid = handle[HDF5_GROUP] if HDF5_GROUP in handle else handle, os.getpid()
        return self._h5

    def _read_hdf5(self, image_file: str, processid: str, split: str, looked: list[str]) -> bytes:
        """One lookup and one read; the checks run on the numpy result (each h5py call costs ~100 us here)."""
        where = f"{self.hdf5}:{HDF5_GROUP}/{image_file}"
        try:
            entry = self._group()[image_file]
        except KeyError:
            raise MissingImage(processid, split, self.package, [*looked, where]) from None
        try:
            data = entry[()]
        except (OSError, TypeError, ValueError, KeyError) as err:
            raise CorruptImage(f"{where}: unreadable HDF5 entry: {err}") from err
        if not isinstance(data, np.ndarray) or data.ndim != 1 or data.dtype != np.uint8:
            shape, dtype = getattr(data, "shape", None), getattr(data, "dtype", type(data).__name__)
            raise CorruptImage(f"{where}: holds {dtype} of shape {shape}, not 1-D uint8 JPEG bytes")
        return data.tobytes()

    def close(self) -> None:
        """Close the zip files and the HDF5 file (they reopen on the next read)."""
        for fd in self._fds or []:
            os.close(fd)
        if self._h5 is not None and self._h5_pid == os.getpid():
            self._h5.file.close()
        self._fds, self._h5, self._h5_pid = None, None, None

    def __enter__(self) -> ImageStore1M:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_fds": None, "_h5": None, "_h5_pid": None}

    def __repr__(self) -> str:
        return (
            f"ImageStore1M(root={str(self.root)!r}, package={self.package!r}, tree={self.tree is not None}, "
            f"zips={len(self.zips)}, hdf5={self.hdf5 is not None})"
        )


#: One letter per split value in a shard group's name (`SPLITS_1M` order).
_GROUP_LETTERS = dict(zip(SPLITS_1M, "tven", strict=True))
SPLIT_ALIASES_1M = {"val": "validation"}


def group_name(values: Iterable[str]) -> str:
    """Shard-group name of a record from its six partition values, e.g. `p-tttnnn` (t/v/e/n: train, validation,
    test, no_split, in `PARTITIONINGS` order): every record is in exactly one group, so a partitioning's split is
    a set of whole groups and nothing is stored twice."""
    return "p-" + "".join(_GROUP_LETTERS[v] for v in values)


def partition_groups(table: pa.Table) -> tuple[pa.Array, dict[str, dict[str, list[str]]]]:
    """Each record's shard group (null where a partition value is not one of `SPLITS_1M`), and per partitioning
    and split the sorted groups that hold its records: `{partitioning: {split: [group, ...]}}`."""
    rows = zip(*(table[name].to_pylist() for name in PARTITIONINGS), strict=True)
    groups = [group_name(values) if all(v in _GROUP_LETTERS for v in values) else None for values in rows]
    present = sorted({g for g in groups if g is not None})
    letters = {letter: split for split, letter in _GROUP_LETTERS.items()}
    selection: dict[str, dict[str, list[str]]] = {name: {split: [] for split in SPLITS_1M} for name in PARTITIONINGS}
    for group in present:
        for k, name in enumerate(PARTITIONINGS):
            selection[name][letters[group[2 + k]]].append(group)
    return pa.array(groups, pa.string()), selection


def bad_partition_detail(table: pa.Table, row: int) -> str:
    """Why a record has no shard group: its first partition value that is not one of `SPLITS_1M`."""
    for name in PARTITIONINGS:
        value = table[name][row].as_py()
        if value not in _GROUP_LETTERS:
            return f"row {row}: {name} value {value!r} is not one of {', '.join(SPLITS_1M)}"
    return f"row {row}: partition values are valid"
