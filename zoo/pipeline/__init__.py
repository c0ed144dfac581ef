"""The whole flow in one command: synth -> shards -> crop -> DNA pretraining -> embed -> index -> evaluation -> report.

    config = load_config("zoo/pipeline_configs/demo.toml")
    records = run_pipeline(config, RunSettings())      # skips the stages whose outputs are complete

Each stage calls the library function behind its `bioscan-stream` job; see docs/pipeline.md.
"""

from __future__ import annotations

from zoo.pipeline.config import ConfigError as ConfigError
from zoo.pipeline.config import PipelineConfig as PipelineConfig
from zoo.pipeline.config import load_config as load_config
from zoo.pipeline.run import PipelineError as PipelineError
from zoo.pipeline.run import run_pipeline as run_pipeline
from zoo.pipeline.stages import RunSettings as RunSettings

__all__ = ["ConfigError", "PipelineConfig", "PipelineError", "RunSettings", "load_config", "run_pipeline"]
