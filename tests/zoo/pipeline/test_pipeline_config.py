"""The pipeline config (zoo/pipeline/config.py): the demo config loads; bad configs are one line naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from jobs.pipeline import DEFAULT_CONFIG
from jobs.pipeline import main as pipeline_main
from zoo.pipeline import ConfigError, load_config
from zoo.pipeline.config import STAGE_ORDER

MINIMAL = """
[pipeline]
state = "{state}"

[embed.kmer]
shards = "shards/cropped_256"
out = "stores/kmer"
model = "kmer_freq_k5"
"""


def test_the_demo_config_names_every_stage() -> None:
    config = load_config(DEFAULT_CONFIG)
    for stage in STAGE_ORDER:
        assert getattr(config, stage), stage
    assert set(config.embed) == {"image", "dna", "kmer"}
    assert config.crop is not None and config.crop.detector == "classical"
    assert config.embed["dna"].pretrained.startswith(config.pretrain.out if config.pretrain else "?")


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ("[fly]\nout = 'x'\n", "unknown stage [fly]"),
        ("[report]\ntitle = 'no out'\n", "[report] is missing key 'out'"),
        ("[synth]\nout = 'r'\nsamples = 'many'\n", "[synth] key 'samples' must be an integer, got string 'many'"),
        ("[synth]\nout = 'r'\nsamples = true\n", "[synth] key 'samples' must be an integer, got boolean True"),
        ("[synth]\nout = 'r'\nsamples = 5\nsample = 5\n", "[synth] has unknown key 'sample'"),
        ("[clustering]\nstores = 'kmer'\nout = 'e'\n", "[clustering] key 'stores' must be an array"),
        ("[clustering]\nstores = ['kmer', 3]\nout = 'e'\n", "[clustering] key 'stores[1]' must be a string"),
        ("[clustering]\nstores = ['image']\nout = 'e'\n", "[clustering] key 'stores' names no [embed.image] stage"),
        ("[index.dna]\nstore = 'dna'\nout = 'i'\n", "[index.dna] key 'store' names no [embed.dna] stage"),
        ("[retrieval]\nstores = ['kmer']\npairs = ['kmer']\nout = 'e'\n", "[retrieval] key 'pairs' entry 'kmer'"),
        ("[pretrain]\nshards = 's'\nout = 's3://b/run'\n", "[pretrain] key 'out' must be a local path"),
        ("[pretrain]\nshards = 's'\nout = 'r'\nlr_per_64 = '1e-3'\n", "[pretrain] key 'lr_per_64' must be a number"),
        ("[shards]\nrelease = 'r'\nout = 's'\nsplits = ['trian']\n", "[shards] key 'splits' has unknown split 'trian'"),
    ],
)
def test_bad_configs_are_one_line_naming_the_key(tmp_path: Path, edit: str, message: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(MINIMAL.format(state=tmp_path / "state") + edit)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    text = str(caught.value)
    assert message in text and "\n" not in text and str(path) in text


def test_missing_file_and_bad_toml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "absent.toml")
    (tmp_path / "broken.toml").write_text("[pipeline\nstate = 1\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(tmp_path / "broken.toml")
    (tmp_path / "nostate.toml").write_text("[report]\nout = 'r'\n")
    with pytest.raises(ConfigError, match=r"missing table \[pipeline\]"):
        load_config(tmp_path / "nostate.toml")


def test_the_command_prints_one_line_and_no_traceback(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(MINIMAL.format(state=tmp_path / "state") + "[embed.kmer2]\nshards = 's'\nout = 'o'\n")
    assert pipeline_main([str(path)]) == 2
    err = capsys.readouterr().err
    assert err.strip().count("\n") == 0 and "[embed.kmer2] is missing key 'model'" in err and "Traceback" not in err
    # a stage name the config does not have
    path.write_text(MINIMAL.format(state=tmp_path / "state"))
    assert pipeline_main([str(path), "--stages", "crop"]) == 2
    err = capsys.readouterr().err
    assert "unknown stage 'crop'; this config has: embed.kmer" in err and err.strip().count("\n") == 0


def test_a_missing_input_names_the_stage_that_writes_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "ok.toml"
    path.write_text(MINIMAL.format(state=tmp_path / "state").replace('"shards/', f'"{tmp_path}/shards/'))
    assert pipeline_main([str(path)]) == 2
    err = capsys.readouterr().err
    assert "stage embed.kmer: input" in err and "cropped_256/index.json is missing" in err
