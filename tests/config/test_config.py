"""Composition of conf/ and the schema's refusals."""

from __future__ import annotations

import pytest

from conftest import CONF_DIR, PRESETS
from reprolab.cli import main
from reprolab.config import ConfigError, compose_raw, load_config, to_dict, validate


def test_every_preset_composes_with_its_intended_differences():
    config = load_config([], CONF_DIR)
    assert list(config.experiments) == list(PRESETS)
    baseline, fixed = config.experiments["baseline"], config.experiments["regularized"]
    assert (baseline.model.cell, baseline.model.num_layers, baseline.model.dropout) == ("rnn", 2, 0.0)
    assert baseline.train.lr == 0.01 and not baseline.train.early_stopping.enabled
    assert (fixed.model.hidden_size, fixed.model.dropout, fixed.model.output_dropout) == (32, 0.3, 0.3)
    assert fixed.train.lr == 0.001 and fixed.train.early_stopping.enabled
    assert config.experiments["lstm"].model.cell == "lstm"
    assert config.experiments["gru"].model.cell == "gru"
    # The cell presets are the fix with another cell, nothing else.
    for name in ("lstm", "gru"):
        assert config.experiments[name].train == fixed.train


@pytest.mark.parametrize("data", ["synthetic", "synthetic_small", "npz"])
def test_to_dict_is_omegaconfs_plain_container(data):
    """Run keys and logged params are made of to_dict: it must give what OmegaConf gives."""
    from omegaconf import OmegaConf

    overrides = [f"data={data}"] + (["data.user_file=mine.npz"] if data == "npz" else [])
    config = load_config(overrides, CONF_DIR)
    typed = [config, config.data, *(config.run_config(preset, 7) for preset in PRESETS)]
    for value in typed:
        expected = OmegaConf.to_container(OmegaConf.structured(value), resolve=True, enum_to_str=True)
        assert to_dict(value) == expected
        assert repr(to_dict(value)) == repr(expected)  # the same types too (1 is not 1.0 in a YAML file)


def test_overrides_reach_the_selected_preset():
    config = load_config(["experiment=baseline", "seed=3", "experiments.baseline.train.lr=0.005"], CONF_DIR)
    run = config.run_config()
    assert (run.preset, run.seed, run.train.lr) == ("baseline", 3, 0.005)


@pytest.mark.parametrize(
    "override, key",
    [
        ("experiments.regularized.model.dropout=1.0", "experiments.regularized.model.dropout"),
        ("experiments.regularized.model.dropout=-0.1", "experiments.regularized.model.dropout"),
        ("experiments.lstm.model.output_dropout=1.5", "experiments.lstm.model.output_dropout"),
        ("experiments.baseline.train.lr=0", "experiments.baseline.train.lr"),
        ("experiments.baseline.train.lr=-0.01", "experiments.baseline.train.lr"),
        ("experiments.gru.model.hidden_size=0", "experiments.gru.model.hidden_size"),
        ("experiments.gru.model.cell=transformer", "experiments.gru.model.cell"),
        ("experiments.baseline.train.lr=fast", "experiments.baseline.train.lr"),
        ("experiments.baseline.model.hidden_size=1.5", "experiments.baseline.model.hidden_size"),
        ("experiments.regularized.model.hiden_size=8", "experiments.regularized.model.hiden_size"),
        ("+experiments.regularized.model.extra=1", "experiments.regularized.model.extra"),
        (
            "experiments.regularized.train.early_stopping.monitor=val_f1",
            "experiments.regularized.train.early_stopping.monitor",
        ),
        ("seed=abc", "seed"),
        ("experiment=transformer", "experiment"),
        ("data=nonexistent", "config"),
        ("data.generator.label_noise=0.7", "data.generator.label_noise"),
        ("data.generator.margin=10", "data.generator.margin"),
    ],
)
def test_bad_values_are_rejected_naming_the_key(override, key):
    with pytest.raises(ConfigError) as caught:
        load_config([override], CONF_DIR)
    message = str(caught.value)
    assert message.startswith(f"{key}:"), message
    assert "\n" not in message


def test_validate_rejects_unknown_top_level_key():
    raw = compose_raw([], CONF_DIR)
    raw["learning_rate"] = 0.1
    with pytest.raises(ConfigError, match=r"^learning_rate:"):
        validate(raw)


def test_missing_conf_dir_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match=r"no config\.yaml"):
        load_config([], tmp_path)


def test_cli_bad_input_exits_2_with_one_line(capsys):
    code = main(["--config-dir", str(CONF_DIR), "train", "experiments.regularized.model.dropout=2"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and "experiments.regularized.model.dropout" in err


def test_committed_params_yaml_is_the_composition_of_conf():
    """params.yaml is generated: it must be exactly what `reprolab compose` / `dvc exp run` write."""
    from omegaconf import OmegaConf

    from conftest import REPO_ROOT

    assert (REPO_ROOT / "params.yaml").read_text() == OmegaConf.to_yaml(compose_raw([], CONF_DIR))
