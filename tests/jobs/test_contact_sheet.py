"""`bioscan-stream contact-sheet`: smoke tests with and without the real fixture photos."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from jobs import contact_sheet


def test_synthetic_only_when_no_real_photos(tmp_path: Path) -> None:
    out = tmp_path / "sheet.png"
    assert contact_sheet.main([str(out), "--samples", "3", "--real", str(tmp_path / "absent"), "--columns", "3"]) == 0
    sheet = Image.open(out)
    assert sheet.format == "PNG"
    assert sheet.size == (3 * 256, 192 + 18)  # one row of three labelled tiles


def test_real_photos_are_added_beside_the_synthetic_ones(tmp_path: Path, shared_fixtures: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    for path in sorted((shared_fixtures / "real_images").glob("*.jpg"))[:2]:
        (real / path.name).write_bytes(path.read_bytes())
    out = tmp_path / "sheet.png"
    assert contact_sheet.main([str(out), "--samples", "2", "--real", str(real), "--columns", "2"]) == 0
    sheet = Image.open(out).convert("RGB")
    assert sheet.size == (2 * 256, 2 * (192 + 18))  # a synthetic row and a real row
    assert out.stat().st_size < 1_500_000


def test_rejects_zero_samples(tmp_path: Path) -> None:
    assert contact_sheet.main([str(tmp_path / "x.png"), "--samples", "0"]) == 2
