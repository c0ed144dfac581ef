"""bioscan_stream: the data layer of bioscan-stream (release -> shards -> stream). No model code lives here."""

from __future__ import annotations

__version__ = "0.1.0"
