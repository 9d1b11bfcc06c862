"""Stage `prepare`: build the dataset (generated, or from a file under data/raw/), check it
against the pinned digest, and write it with a summary of its sizes, classes and Bayes limit."""

from __future__ import annotations

import json
from pathlib import Path

from reprolab import data as datasets
from reprolab import entrypoint
from reprolab.config import ConfigError, DataSource, load_params
from reprolab.files import Outputs
from reprolab.stages import DATA_SUMMARY, PARAMS_FILE, RAW_DIR


def main() -> int:
    config = load_params(PARAMS_FILE)
    if config.data.source is DataSource.npz:
        # dvc.yaml lists data/raw/ as this stage's dependency: a file elsewhere could change
        # without `dvc status` seeing it.
        user_file = Path(str(config.data.user_file)).resolve()
        if not user_file.is_relative_to(RAW_DIR.resolve()):
            raise ConfigError(
                f"data.user_file: {config.data.user_file} is outside {RAW_DIR}/, which is what DVC "
                f"watches for the pipeline; move it there and `dvc add` it (docs/your-data.md)"
            )
    with Outputs() as outputs:
        dataset = datasets.prepare(config.data, outputs=outputs)
        outputs.json(DATA_SUMMARY, dataset.summary())
    print(json.dumps(dataset.summary(), indent=2))
    entrypoint.warn(dataset.warnings)
    return 0


if __name__ == "__main__":
    entrypoint.run(main)
