"""A helper of the pre-training tests (tests/test_pretraining*.py): the settings of a short run of the tiny model
on the prepared test shards. The corpus and its shards are fixtures in conftest.py."""

from __future__ import annotations

from bertforge.pretraining.config import TrainingConfig


def _config(data_dir, output_dir, **overrides):
    settings = dict(data_dir=str(data_dir), output_dir=str(output_dir), model_size="tiny", max_steps=8, batch_size=8,
                    learning_rate=1e-3, warmup_steps=2, checkpoint_every=4, log_every=2, seed=3, progress=False)
    settings.update(overrides)
    return TrainingConfig(**settings)
