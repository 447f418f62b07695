"""The celery executor's settings: CATALOGUE_AIRFLOW_EXECUTOR, CATALOGUE_REDIS_URL and
CATALOGUE_GPU_QUEUE_BACKEND, read and refused in one line that never shows a password."""

from __future__ import annotations

import pytest

from pipeline.config import ConfigError, Settings, describe_url


def test_a_newcomer_gets_standalone_and_a_local_redis_if_they_ask_for_celery():
    settings = Settings.from_env({})
    assert settings.airflow_executor == "local"
    assert settings.redis_url == "redis://127.0.0.1:6379/0"
    assert settings.gpu_queue_backend == "jax"


@pytest.mark.parametrize(
    ("variable", "value", "said"),
    [
        pytest.param("CATALOGUE_AIRFLOW_EXECUTOR", "kubernetes", "local, celery", id="executor"),
        pytest.param("CATALOGUE_GPU_QUEUE_BACKEND", "theano", "Keras backend", id="backend"),
        pytest.param("CATALOGUE_REDIS_URL", "http://:hunter2@h:6379/0", "Redis URL", id="scheme"),
        pytest.param("CATALOGUE_REDIS_URL", "redis://:hunter2@h:port/0", "Redis URL", id="port"),
        pytest.param("CATALOGUE_REDIS_URL", "redis://:hunter2@h:6379/x", "not a number",
                     id="database"),
    ],
)  # fmt: skip
def test_a_wrong_value_names_the_variable_and_never_the_password(variable, value, said):
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({variable: value})
    assert caught.value.variable == variable
    assert said in str(caught.value) and "hunter2" not in str(caught.value)


def test_the_broker_password_stays_out_of_repr_and_messages():
    settings = Settings.from_env({"CATALOGUE_REDIS_URL": "rediss://:hunter2@redis.example:6380/2"})
    assert settings.redis_url.endswith("@redis.example:6380/2")
    assert "hunter2" not in repr(settings)
    assert describe_url(settings.redis_url) == "rediss://***@redis.example:6380/2"
    assert Settings.from_env({"CATALOGUE_AIRFLOW_EXECUTOR": "Celery"}).airflow_executor == "celery"
