from pathlib import Path

import pytest
from pydantic import ValidationError

from ml.config.run import PRESET_DIR, RunConfig, apply_overrides, load_config, parse_override
from ml.config.training import SMALL_NETS


@pytest.mark.parametrize("preset", sorted(p.stem for p in PRESET_DIR.glob("*.yaml")))
def test_every_preset_loads(preset):
    cfg = load_config(preset)
    assert cfg.preset == preset
    assert isinstance(cfg, RunConfig)


def test_overrides_are_typed_and_nested():
    cfg = load_config("demo", ["train.epochs=2", "gate.min.accuracy=0.95", "data.root=/tmp/x", "train.amp=false"])
    assert cfg.train.epochs == 2
    assert cfg.gate.min == {"accuracy": 0.95, "macro_f1": 0.9}
    assert cfg.data.root == Path("/tmp/x")
    assert cfg.train.amp is False


def test_unknown_key_fails_with_pydantic_message():
    with pytest.raises(ValidationError, match="epochz"):
        load_config("demo", ["train.epochz=2"])


def test_an_unknown_model_fails_at_load_naming_real_close_names():
    with pytest.raises(ValidationError, match=r"unknown model 'resnet18x'.*close names: \['resnet18', ") as err:
        load_config("demo", ["model.name=resnet18x"])
    assert "model.name" in str(err.value)
    with pytest.raises(ValidationError, match=r"close names: \['vf_cnn_small', "):
        load_config("demo", ["model.name=vf_cnn_smal"])
    assert load_config("demo", ["model.name=resnet20_cifar"]).model.name == "resnet20_cifar"
    assert load_config("demo", ["model.name=resnet18.a1_in1k"]).model.name == "resnet18.a1_in1k"  # a pretrained tag


def test_the_small_nets_config_knows_are_the_ones_training_registers():
    import timm

    import ml.training.models  # noqa: F401  (registers ml.training.small_nets)

    assert sorted(timm.list_models(module="small_nets")) == sorted(SMALL_NETS)


def test_bad_value_fails():
    with pytest.raises(ValidationError, match="epochs"):
        load_config("demo", ["train.epochs=-1"])
    with pytest.raises(ValidationError, match="scheduler"):
        load_config("demo", ["train.scheduler=linear"])


def test_gate_rule_on_unknown_metric_fails():
    with pytest.raises(ValidationError, match="unknown metric"):
        load_config("demo", ["gate.min.acuracy=0.9"])


def test_bad_store_uri_and_unknown_preset():
    with pytest.raises(ValidationError, match="file:// or s3://"):
        load_config("demo", ["storage.uri=ftp://x"])
    with pytest.raises(FileNotFoundError, match="known presets"):
        load_config("no-such-preset")


def test_override_syntax():
    assert parse_override("a.b=[1, 2]") == ("a.b", [1, 2])
    with pytest.raises(ValueError, match="key.path=value"):
        parse_override("novalue")
    with pytest.raises(ValueError, match="is a value"):
        apply_overrides({"train": 3}, {"train.epochs": 1})


def test_monitor_and_champion_metric_follow_the_task_unless_set():
    segment = RunConfig(model={"task": "segment"})
    assert (segment.train.monitor, segment.gate.champion.metric) == ("f1", "f1")
    assert (RunConfig().train.monitor, RunConfig().gate.champion.metric) == ("macro_f1", "macro_f1")
    chosen = RunConfig(model={"task": "segment"}, train={"monitor": "iou"}, gate={"champion": {"tolerance": 0.1}})
    assert (chosen.train.monitor, chosen.gate.champion.metric) == ("iou", "f1")
    saved = RunConfig.model_validate_json(segment.model_dump_json())  # a version's config.json
    assert (saved.train.monitor, saved.gate.champion.metric) == ("f1", "f1")
    with pytest.raises(ValidationError, match="train.monitor: \\['macro_f1'\\] not produced for model.task=segment"):
        RunConfig(model={"task": "segment"}, train={"monitor": "macro_f1"})


def test_a_data_root_of_ones_own_is_real_data(tmp_path):
    from ml.data.errors import DatasetError
    from ml.data.prepare import load_frame

    assert load_config("demo").data.synthetic is not None  # the preset's own root: generated on first use
    own = load_config("demo", {"data.root": str(tmp_path / "typo")})
    assert own.data.synthetic is None
    with pytest.raises(DatasetError, match="typo"):  # a mistyped path fails; no shapes are generated there
        load_frame(own.data)
    assert not (tmp_path / "typo").exists()
    asked = load_config("demo", {"data.root": str(tmp_path / "gen"), "data.synthetic.per_class": 5})
    assert asked.data.synthetic.per_class == 5
