"""Each stage's options take their configured fields' defaults from `Settings`, written once."""

from __future__ import annotations

import pytest

from pipeline.config import Settings, configured_by
from pipeline.predict.batch import PredictOptions
from pipeline.train.fit import TrainOptions
from pipeline.train.registry import GateOptions
from pipeline.train.snapshot import SnapshotOptions

# options field -> the setting that configures it
CONFIGURED = {
    SnapshotOptions: {"min_examples": "train_min_examples"},
    TrainOptions: {
        "architecture": "train_network",
        "epochs": "train_epochs",
        "initial_weights": "train_initial_weights",
        "weights_dir": "weights_dir",
        "weights_download": "weights_download",
        "target_precision": "target_precision",
    },
    GateOptions: {
        "margin": "promotion_margin",
        "max_class_drop": "promotion_max_class_drop",
        "significance": "promotion_significance",
    },
    PredictOptions: {
        "batch_size": "predict_batch_size",
        "workers": "predict_workers",
        "review_below_confidence": "review_below_confidence",
        "review_below_margin": "review_below_margin",
    },
}
PAIRS = [
    pytest.param(options, field, name, id=f"{options.__name__}.{field}")
    for options, fields in CONFIGURED.items()
    for field, name in fields.items()
]


@pytest.mark.parametrize(("options", "field", "name"), PAIRS)
def test_an_options_default_is_its_settings_default(options, field, name):
    assert getattr(options(), field) == Settings.model_fields[name].default


@pytest.mark.parametrize("options", list(CONFIGURED), ids=lambda o: o.__name__)
def test_from_settings_fills_exactly_the_configured_fields(options):
    assert configured_by(options) == CONFIGURED[options]
    assert options.from_settings(Settings.from_env({})) == options()


def test_configured_values_reach_the_options_and_a_run_choice_wins():
    settings = Settings.from_env(
        {
            "CATALOGUE_TRAIN_NETWORK": "catalogue_net",
            "CATALOGUE_TRAIN_EPOCHS": "3",
            "CATALOGUE_TRAIN_MIN_EXAMPLES": "5",
            "CATALOGUE_PROMOTION_MARGIN": "0.02",
            "CATALOGUE_PREDICT_WORKERS": "2",
        }
    )
    trained = TrainOptions.from_settings(settings, epochs=None, batch_size=16)
    assert (trained.architecture, trained.epochs, trained.batch_size) == ("catalogue_net", 3, 16)
    assert TrainOptions.from_settings(settings, architecture="compact_80x60").architecture == (
        "compact_80x60"
    )
    assert SnapshotOptions.from_settings(settings, attributes=("colour",)).min_examples == 5
    assert GateOptions.from_settings(settings).margin == 0.02
    assert PredictOptions.from_settings(settings, shard=1, shards=2).workers == 2


def test_settings_read_the_process_environment(monkeypatch):
    monkeypatch.setenv("CATALOGUE_TRAIN_EPOCHS", " 4 ")
    assert Settings.from_env().train_epochs == 4
    assert Settings(airflow_password="pw").train_epochs == 4
    assert Settings(train_epochs=6, airflow_password="pw").train_epochs == 6


def test_defaults_written_outside_settings_agree():
    from pipeline.storage import TIMEOUT_S

    assert Settings.model_fields["s3_timeout_s"].default == TIMEOUT_S
    pytest.importorskip("keras")
    from pipeline.train.models import DEFAULT_ARCHITECTURE

    assert Settings.model_fields["train_network"].default == DEFAULT_ARCHITECTURE
