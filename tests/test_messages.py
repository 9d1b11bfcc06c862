"""Messages that name the real problem (issue: "messages that mislead"): a user file that is a
directory, FIFO or device; an override that Hydra cannot read; bool labels; an experiment name
longer than MLflow keeps. Every victim is made under a temporary directory."""

from __future__ import annotations

import os

import numpy as np
import pytest

from conftest import CONF_DIR
from reprolab.config import ConfigError, load_config
from reprolab.data import DataError, build


def config_for(path):
    return load_config(["data=npz", f"data.user_file={path}", "tracking=none"], CONF_DIR).data


@pytest.mark.parametrize("kind", ["a directory", "a FIFO"])
def test_a_user_file_that_is_not_a_file_says_what_stands_there(tmp_path, kind):
    path = tmp_path / "mine.npz"
    if kind == "a directory":
        path.mkdir()
    else:
        os.mkfifo(path)
    with pytest.raises(DataError) as caught:
        build(config_for(path))
    assert f"{path} is {kind}, not a file" in str(caught.value) and "not found" not in str(caught.value)


def test_bool_labels_name_the_cast(tmp_path):
    path = tmp_path / "mine.npz"
    np.savez(path, X=np.zeros((20, 5, 1)), y=np.arange(20) % 2 == 0)
    with pytest.raises(DataError, match=r"y\.astype\(int\)"):
        build(config_for(path))


def test_an_unreadable_override_says_to_quote_it():
    with pytest.raises(ConfigError) as caught:
        load_config(["data.name=it's mine"], CONF_DIR)
    assert "must be quoted inside the override" in str(caught.value)
    assert load_config(['data.name="my data (1)"'], CONF_DIR).data.name == "my data (1)"


def test_an_experiment_name_longer_than_mlflow_keeps_is_refused_before_any_work():
    with pytest.raises(ConfigError, match=r"tracking\.experiment_name: must be at most 500 characters"):
        load_config(["tracking.experiment_name=" + "x" * 501], CONF_DIR)
