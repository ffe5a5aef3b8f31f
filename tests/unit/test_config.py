"""BitConfig reads and writes transformers' config.json, keeping what it does not know."""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path

import pytest

from bitedge import BitConfig


def test_defaults_equal_transformers() -> None:
    import transformers

    theirs = json.loads(transformers.BitConfig().to_json_string())  # as config.json holds them
    ours = json.loads(BitConfig().to_json_string())
    for key in [f.name for f in fields(BitConfig)]:
        if key in theirs:
            assert ours[key] == theirs[key], key
    assert ours["stage_names"] == theirs["stage_names"]
    assert BitConfig().num_labels == 2


def test_transformers_config_round_trip(tmp_path: Path) -> None:
    import transformers

    theirs = transformers.BitConfig(
        depths=[1, 1], hidden_sizes=[32, 64], num_labels=3, out_features=["stage2"], global_padding="same"
    )
    theirs.save_pretrained(tmp_path)
    ours = BitConfig.from_pretrained(tmp_path)
    assert ours.global_padding == "SAME" and ours.num_labels == 3 and ours.out_indices == [2]
    assert ours.labels == ["LABEL_0", "LABEL_1", "LABEL_2"]
    ours.save_pretrained(tmp_path / "again")
    again = transformers.BitConfig.from_pretrained(tmp_path / "again")
    assert again.to_dict()["depths"] == [1, 1] and again.id2label == theirs.id2label


def test_unknown_keys_are_kept(tmp_path: Path) -> None:
    data = BitConfig().to_dict() | {"my_team_note": {"owner": "vision"}, "torch_dtype": "float32"}
    (tmp_path / "config.json").write_text(json.dumps(data))
    config = BitConfig.from_pretrained(tmp_path)
    assert config.extra["my_team_note"] == {"owner": "vision"}
    assert json.loads(config.to_json_string())["my_team_note"] == {"owner": "vision"}


def test_labels_from_id2label() -> None:
    config = BitConfig(id2label={"0": "cat", "1": "dog"})
    assert config.num_labels == 2 and config.labels == ["cat", "dog"] and config.label2id == {"cat": 0, "dog": 1}
    with pytest.raises(ValueError, match="no gaps"):
        BitConfig(id2label={"0": "cat", "2": "dog"})


def test_out_indices_give_out_features() -> None:
    assert BitConfig(out_indices=[0, -1]).out_features == ["stem", "stage4"]
