"""write_release_1m: the 1M release holds the 5M world's records that carry `index_bioscan_1M_insect`."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from bioscan_stream.release1m import ImageStore1M, read_metadata_1m
from bioscan_stream.synth.images import encode_jpeg, render_packages
from bioscan_stream.synth.release import image_table, write_release
from jobs.synth_release import main


def test_same_specimens_as_the_5m_release(release_1m: tuple[Path, pa.Table], tmp_path: Path) -> None:
    root, table = release_1m
    five = write_release(tmp_path / "5m", samples=2_500, seed=0, images=False)
    in_1m = five.filter(pc.is_valid(five["index_bioscan_1M_insect"]))
    in_1m = in_1m.take(pc.sort_indices(in_1m["index_bioscan_1M_insect"]))
    assert table["processid"].to_pylist() == in_1m["processid"].to_pylist()
    assert table["nucraw"].to_pylist() == in_1m["dna_barcode"].to_pylist()
    assert table["order"].to_pylist() == in_1m["order"].to_pylist()
    assert set(pc.unique(in_1m["class"]).to_pylist()) == {"Insecta"}
    record = image_table(in_1m).slice(7, 1).to_pylist()[0]  # the 5M writer's image of the same specimen
    expected = encode_jpeg(render_packages(record, ("cropped_256",), seed=0)["cropped_256"])
    assert ImageStore1M.open(root, "cropped_256", container="zip").read(record["processid"]) == expected


def test_job_writes_a_1m_release(tmp_path: Path) -> None:
    assert main([str(tmp_path), "--samples", "600", "--bioscan1m", "--no-images", "--part-size", "20"]) == 0
    table = read_metadata_1m(tmp_path)
    assert table.num_rows > 50 and table["chunk_number"].to_pylist()[-1] == (table.num_rows - 1) // 20 + 1
