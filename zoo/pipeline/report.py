"""The pipeline report: one self-contained folder, `index.html` + `index.md` + the PNGs they show (-> docs/pipeline.md).

Sections, each present when its stage is in the config: dataset statistics (`bioscan_stream.stats` on the
release), the crop job's contact sheet, the pretraining loss curve, the retrieval tables in the paper's
layout (the evaluation's markdown), the zero-shot clustering table and its 2-D UMAP scatter, and the per-stage
throughput table from the stage records (items/s, wall time, peak memory). Images are copied beside the
pages and linked by relative name, so the folder can be moved, zipped or served as it is.
"""

from __future__ import annotations

import html
import re
from pathlib import Path
from typing import Any

from bioscan_stream.storage import join_url, open_url, read_bytes, url_exists
from zoo.pipeline.config import PipelineConfig

__all__ = ["markdown_to_html", "report_inputs", "write_report"]

_STYLE = """body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;font-size:12px;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:2px 6px;
text-align:right}td:first-child,th:first-child{text-align:left}img{max-width:100%;border:1px solid #ddd}
pre{font-size:11px;background:#f7f7f7;padding:.5em;overflow-x:auto}h2{border-bottom:1px solid #ddd}"""


def report_inputs(config: PipelineConfig, steps: list[str]) -> tuple[str, ...]:
    """What the report is made from: the records of the other steps (which hash their outputs)."""
    return tuple(join_url(config.state, f"{name}.json") for name in steps)


def _inline(text: str) -> str:
    text = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", html.escape(text))
    return re.sub(r"`(.+?)`", r"<code>\1</code>", text)


def markdown_to_html(markdown: str) -> str:
    """HTML of the evaluation reports' markdown: pipe tables, `**bold**` lines and paragraphs."""
    out: list[str] = []
    rows: list[list[str]] = []

    def flush() -> None:
        if rows:
            head, *body = rows
            out.append("<table><tr>" + "".join(f"<th>{_inline(c)}</th>" for c in head) + "</tr>")
            out.extend("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in row) + "</tr>" for row in body)
            out.append("</table>")
            rows.clear()

    for line in markdown.splitlines():
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if not all(set(c) <= set("-: ") for c in cells):
                rows.append(cells)
            continue
        flush()
        if line.strip():
            out.append(f"<p>{_inline(line)}</p>")
    flush()
    return "\n".join(out)


def _size(num_bytes: int) -> str:
    return f"{num_bytes / (1 << 30):.2f} GiB" if num_bytes >= 1 << 30 else f"{num_bytes / (1 << 20):.0f} MiB"


def throughput_markdown(records: list[dict[str, Any]]) -> str:
    """The per-stage table: items, items/s, wall seconds, peak memory of the stage's process tree."""
    lines = ["| stage | items | items/s | wall s | peak memory | Ray start s |", "|---|---|---|---|---|---|"]
    for r in records:
        rate = "-" if r["items_per_s"] is None else f"{r['items_per_s']:,.1f}"
        ray = f"{r['ray_start_seconds']:.1f}" if r["ray_start_seconds"] >= 0.05 else "-"
        lines.append(f"| {r['stage']} | {r['items']:,d} {r['unit']} | {rate} | {r['seconds']:.1f} | "
                     f"{_size(r['peak_memory_bytes'])} | {ray} |")  # fmt: skip
    total = sum(r["seconds"] + r["ray_start_seconds"] for r in records)
    note = "Peak memory: PSS sum of the pipeline process and its descendants (embedded Ray included), every 0.2 s."
    lines += ["", f"Total: {total:.1f} s of stage work (Ray start included). {note}"]
    return "\n".join(lines)


def _copy(url: str, folder: Path, name: str) -> str | None:
    """Copy a PNG into the report folder; its relative name, or None when the stage did not write it."""
    if not url_exists(url):
        return None
    (folder / name).write_bytes(read_bytes(url))
    return name


def _sections(config: PipelineConfig, folder: Path) -> list[tuple[str, str, str | None]]:
    """(title, markdown body, image name or None) per section, in report order."""
    from zoo.pipeline.stages import release_root

    sections: list[tuple[str, str, str | None]] = []
    release = release_root(config)
    if release is not None:
        from bioscan_stream.metadata import read_metadata
        from bioscan_stream.stats import STATS_COLUMNS, compute_stats, format_stats, plot_stats

        stats = compute_stats(read_metadata(release, columns=STATS_COLUMNS))
        plot_stats(stats, folder / "stats.png")
        sections.append(("Dataset statistics", "```\n" + format_stats(stats) + "\n```", "stats.png"))
    if config.crop is not None:
        sheet = _copy(join_url(config.crop.out, "contact_sheet.png"), folder, "contact_sheet.png")
        body = f"Detector `{config.crop.detector}`, preset `{config.crop.preset}`: lowest-confidence crops first."
        sections.append(("Crops (contact sheet)", body, sheet))
    if config.pretrain is not None:
        curve = _copy(join_url(config.pretrain.out, "loss_curve.png"), folder, "loss_curve.png")
        sections.append(("DNA pretraining", f"Model `{config.pretrain.model}`: MLM loss and masked accuracy.", curve))
    if config.retrieval is not None:
        text = read_bytes(join_url(config.retrieval.out, "retrieval.md")).decode()
        sections.append(
            ("Retrieval", text, _copy(join_url(config.retrieval.out, "retrieval.png"), folder, "retrieval.png"))
        )
    if config.clustering is not None:
        text = read_bytes(join_url(config.clustering.out, "clustering.md")).decode()
        umap = _copy(join_url(config.clustering.out, "clustering.png"), folder, "umap.png")
        sections.append(("Zero-shot clustering (UMAP)", text, umap))
    return sections


def _html_body(markdown: str) -> str:
    parts = re.split(r"```\n(.*?)\n```", markdown, flags=re.S)
    return "\n".join(f"<pre>{html.escape(p)}</pre>" if i % 2 else markdown_to_html(p) for i, p in enumerate(parts))


def write_report(config: PipelineConfig) -> tuple[int, str]:
    """Write `index.md`, `index.html` and the PNGs into the report folder; returns (figures, "figures")."""
    from zoo.pipeline.run import read_record
    from zoo.pipeline.stages import RunSettings, build_steps

    assert config.report is not None
    folder = Path(config.report.out)
    folder.mkdir(parents=True, exist_ok=True)
    sections = _sections(config, folder)
    names = [step.name for step in build_steps(config, RunSettings()) if step.name != "report"]
    records = [r for r in (read_record(config.state, name) for name in names) if r is not None]
    sections.append(("Throughput per stage", throughput_markdown(records), None))
    title = config.report.title
    md = [f"# {title}", ""]
    page = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
            f"<style>{_STYLE}</style></head><body><h1>{html.escape(title)}</h1>"]  # fmt: skip
    for heading, body, image in sections:
        md += [f"## {heading}", "", body, ""]
        page += [f"<h2>{html.escape(heading)}</h2>", _html_body(body)]
        if image:
            md += [f"![{heading}]({image})", ""]
            page.append(f"<p><img src='{image}' alt='{html.escape(heading)}'></p>")
    page.append("</body></html>")
    with open_url(str(folder / "index.md"), "wb") as f:
        f.write("\n".join(md).encode())
    with open_url(str(folder / "index.html"), "wb") as f:
        f.write("\n".join(page).encode())
    return sum(1 for _, _, image in sections if image), "figures"
