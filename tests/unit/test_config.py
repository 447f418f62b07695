from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from pipeline.config import ConfigError, Settings, load_settings, variable

PROD_DB = "postgresql://u:a-real-password@h/db"
S3 = {
    "CATALOGUE_S3_ENDPOINT": "http://127.0.0.1:8333",
    "CATALOGUE_S3_ACCESS_KEY": "key",
    "CATALOGUE_S3_SECRET_KEY": "s3-secret-value",
}


def test_defaults_use_the_local_stack(tmp_path):
    settings = Settings.from_env({"CATALOGUE_STATE_DIR": str(tmp_path)})
    assert settings.database_url is None and settings.s3_endpoint is None
    assert settings.bucket_images == "catalogue-images"
    assert settings.role_names == {
        "app": "catalogue_app",
        "reader": "catalogue_reader",
        "moderator": "catalogue_moderator",
    }


def test_database_url_is_normalised_to_psycopg2():
    settings = Settings.from_env({"CATALOGUE_DATABASE_URL": "postgres://u:pw@db:5432/cat", **S3})
    assert settings.database_url.drivername == "postgresql+psycopg2"
    assert settings.database_url.database == "cat"


@pytest.mark.parametrize(
    ("env", "variable", "words"),
    [
        pytest.param(
            {"CATALOGUE_DATABASE_URL": "not a url"},
            "CATALOGUE_DATABASE_URL",
            "not a database URL",
            id="db-url-garbage",
        ),
        pytest.param(
            {"CATALOGUE_DATABASE_URL": "mysql://u@h/db"},
            "CATALOGUE_DATABASE_URL",
            "only PostgreSQL",
            id="db-url-mysql",
        ),
        pytest.param(
            {"CATALOGUE_DATABASE_URL": "postgresql://u@h:5432"},
            "CATALOGUE_DATABASE_URL",
            "names no database",
            id="db-url-no-database",
        ),
        pytest.param(
            {"CATALOGUE_S3_ENDPOINT": "ftp://x"},
            "CATALOGUE_S3_ENDPOINT",
            "not an http(s) endpoint",
            id="s3-scheme",
        ),
        pytest.param(
            {"CATALOGUE_S3_ENDPOINT": "http://h:99999"},
            "CATALOGUE_S3_ENDPOINT",
            "not an http(s) endpoint",
            id="s3-port",
        ),
        pytest.param(
            {**S3, "CATALOGUE_S3_ENDPOINT": "http://h:9000/bucket"},
            "CATALOGUE_S3_ENDPOINT",
            "has a path",
            id="s3-path",
        ),
        pytest.param(
            {"CATALOGUE_S3_ENDPOINT": "http://h:9000"},
            "CATALOGUE_S3_ACCESS_KEY",
            "is not set",
            id="s3-missing-key",
        ),
        pytest.param(
            {"CATALOGUE_S3_BUCKET_IMAGES": "Bad_Bucket"},
            "CATALOGUE_S3_BUCKET_IMAGES",
            "not a valid S3 bucket name",
            id="bucket",
        ),
        pytest.param(
            {"CATALOGUE_AIRFLOW_PORT": "eighty"},
            "CATALOGUE_AIRFLOW_PORT",
            "not a TCP port",
            id="port",
        ),
        pytest.param(
            {"CATALOGUE_S3_CREATE_BUCKETS": "maybe"},
            "CATALOGUE_S3_CREATE_BUCKETS",
            "not a boolean",
            id="boolean",
        ),
        pytest.param(
            {"CATALOGUE_ROLE_PREFIX": "Robert'); DROP"},
            "CATALOGUE_ROLE_PREFIX",
            "identifier",
            id="role-prefix-injection",
        ),
        pytest.param({"CATALOGUE_ENV": "staging"}, "CATALOGUE_ENV", "not one of", id="env"),
        pytest.param(
            {"CATALOGUE_AIRFLOW_URL": "127.0.0.1:8080"},
            "CATALOGUE_AIRFLOW_URL",
            "has no http(s)://",
            id="airflow-url-scheme",
        ),
        pytest.param(
            {"CATALOGUE_INSTAGRAM_SESSION_FILE": "/no/such/session"},
            "CATALOGUE_INSTAGRAM_SESSION_FILE",
            "is not a file",
            id="session-file",
        ),
    ],
)
def test_malformed_settings_name_the_variable(env, variable, words):
    with pytest.raises(ConfigError) as caught:
        Settings.from_env(env)
    assert caught.value.variable == variable
    assert str(caught.value).startswith(variable)
    assert words in str(caught.value)


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        pytest.param("CATALOGUE_TRAIN_EPOCHS", "0",
                     "'0' is not a whole number from 1. Use a whole number from 1.", id="low"),
        pytest.param("CATALOGUE_TRAIN_EPOCHS", "ten",
                     "'ten' is not a whole number from 1. Use a whole number from 1.", id="word"),
        pytest.param("CATALOGUE_TRAIN_EPOCHS", "2.5",
                     "'2.5' is not a whole number from 1. Use a whole number from 1.",
                     id="fraction"),
        pytest.param("CATALOGUE_PREDICT_BATCH_SIZE", "5000",
                     "'5000' is not a whole number from 1 to 4096. Use a whole number from 1 to "
                     "4096.", id="high"),
        pytest.param("CATALOGUE_PROMOTION_MARGIN", "1.5",
                     "'1.5' is not a number from 0 to 1. Use a number from 0 to 1.", id="share"),
        pytest.param("CATALOGUE_TARGET_PRECISION", "0.4",
                     "'0.4' is not a number from 0.5 to 1. Use a number from 0.5 to 1.",
                     id="precision"),
        pytest.param("CATALOGUE_S3_TIMEOUT_S", "nan",
                     "'nan' is not a number from 0.1 to 600. Use a number from 0.1 to 600.",
                     id="not-a-number"),
        pytest.param("CATALOGUE_RETRAIN_MIN_CHANGED_LABELS", "-1",
                     "'-1' is not a whole number from 0. Use a whole number from 0.",
                     id="negative"),
        pytest.param("CATALOGUE_S3_PORT", "0",
                     "'0' is not a TCP port. Use a number from 1 to 65535.", id="port-zero"),
        pytest.param("CATALOGUE_WEIGHTS_DOWNLOAD", "sometimes",
                     "'sometimes' is not a boolean. Use true or false.", id="boolean"),
    ],
)  # fmt: skip
def test_a_bad_value_is_one_line_saying_what_to_write(variable, value, message):
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({variable: value})
    assert str(caught.value) == f"{variable}: {message}"
    assert caught.value.variable == variable


def test_values_are_stripped_and_blank_ones_are_unset():
    settings = Settings.from_env(
        {"CATALOGUE_TRAIN_EPOCHS": " 3 ", "CATALOGUE_ENV": "  ", "CATALOGUE_MODERATOR": ""}
    )
    assert settings.train_epochs == 3
    assert settings.environment == "development" and settings.moderator is None


def test_only_upper_case_variables_count():
    assert Settings.from_env({"catalogue_train_epochs": "3"}).train_epochs == 10


def test_airflow_defaults_follow_the_port_and_the_local_stack(tmp_path):
    (tmp_path / "airflow").mkdir()
    (tmp_path / "airflow" / "passwords.json").write_text(json.dumps({"admin": "generated-1"}))
    settings = Settings.from_env(
        {"CATALOGUE_STATE_DIR": str(tmp_path), "CATALOGUE_AIRFLOW_PORT": "9090"}
    )
    assert settings.airflow_url == "http://127.0.0.1:9090"
    assert settings.airflow_password == "generated-1"
    assert "generated-1" not in repr(settings)


def test_settings_built_in_code_are_checked_the_same_way():
    with pytest.raises(ConfigError) as caught:
        Settings(train_epochs="0", airflow_password="pw")
    assert caught.value.variable == "CATALOGUE_TRAIN_EPOCHS"
    with pytest.raises(ConfigError) as caught:
        Settings(s3_endpoint="http://h:1", airflow_password="pw")
    assert caught.value.variable == "CATALOGUE_S3_ACCESS_KEY"


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        pytest.param({**S3}, "CATALOGUE_DATABASE_URL", id="no-database"),
        pytest.param(
            {"CATALOGUE_DATABASE_URL": "postgresql://u:pw@h/db"},
            "CATALOGUE_S3_ENDPOINT",
            id="no-s3",
        ),
        pytest.param(
            {
                **S3,
                "CATALOGUE_S3_SECRET_KEY": "change-me",
                "CATALOGUE_DATABASE_URL": "postgresql://u:pw@h/db",
            },
            "CATALOGUE_S3_SECRET_KEY",
            id="placeholder-s3-secret",
        ),
        pytest.param(
            {**S3, "CATALOGUE_DATABASE_URL": "postgresql://u:change-me@h/db"},
            "CATALOGUE_DATABASE_URL",
            id="placeholder-db-password",
        ),
        pytest.param(
            {**S3, "CATALOGUE_DATABASE_URL": "postgresql://u:CHANGE-ME@h/db"},
            "CATALOGUE_DATABASE_URL",
            id="placeholder-db-password-upper-case",
        ),
        pytest.param(
            {**S3, "CATALOGUE_S3_SECRET_KEY": "Change-Me", "CATALOGUE_DATABASE_URL": PROD_DB},
            "CATALOGUE_S3_SECRET_KEY",
            id="placeholder-s3-secret-mixed-case",
        ),
        pytest.param(
            {**S3, "CATALOGUE_AIRFLOW_PASSWORD": "change-me", "CATALOGUE_DATABASE_URL": PROD_DB},
            "CATALOGUE_AIRFLOW_PASSWORD",
            id="placeholder-airflow-password",
        ),
        pytest.param(
            {**S3, "CATALOGUE_AIRFLOW_PASSWORD": "Change-Me", "CATALOGUE_DATABASE_URL": PROD_DB},
            "CATALOGUE_AIRFLOW_PASSWORD",
            id="placeholder-airflow-password-mixed-case",
        ),
        pytest.param(
            {
                **S3,
                "CATALOGUE_DATABASE_URL": PROD_DB,
                "CATALOGUE_AIRFLOW_DATABASE_URL": "postgresql://airflow:ChangeMe@h/airflow",
            },
            "CATALOGUE_AIRFLOW_DATABASE_URL",
            id="placeholder-airflow-database-password",
        ),
    ],
)
def test_production_refuses_development_defaults(env, variable):
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"CATALOGUE_ENV": "production", **env})
    assert caught.value.variable == variable


def test_production_accepts_real_secrets():
    settings = Settings.from_env(
        {"CATALOGUE_ENV": "production", **S3, "CATALOGUE_DATABASE_URL": PROD_DB,
         "CATALOGUE_AIRFLOW_PASSWORD": "a-real-one"}
    )  # fmt: skip
    assert settings.environment == "production"


@pytest.mark.parametrize(
    ("url", "secret"),
    [
        pytest.param("postgresql://cat:sec@ret-part@h:5432/db", "ret-part", id="at-in-password"),
        pytest.param("postgresql://cat:p@ss:wo@rd@h:5432/db", "wo@rd", id="two-at-signs"),
        pytest.param("postgresql://cat:pw-1234@h:abc/db", "pw-1234", id="port-not-a-number"),
        pytest.param("postgresql://cat:pw-1234@h:99999/db", "pw-1234", id="port-out-of-range"),
    ],
)
def test_a_database_url_that_does_not_parse_as_meant_never_shows_its_password(url, secret):
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"CATALOGUE_DATABASE_URL": url, **S3})
    assert caught.value.variable == "CATALOGUE_DATABASE_URL"
    assert secret not in str(caught.value)
    assert "Percent-encode" in str(caught.value) or "TCP port" in str(caught.value)


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        pytest.param("CATALOGUE_S3_ENDPOINT", "http://key:pw-1234@h:8333", id="s3-credentials"),
        pytest.param("CATALOGUE_S3_PUBLIC_ENDPOINT", "https://k:pw-1234@s3.example.com",
                     id="public-credentials"),
        pytest.param("CATALOGUE_AIRFLOW_URL", "http://admin:pw-1234@h:8080", id="airflow-login"),
    ],
)  # fmt: skip
def test_credentials_in_an_endpoint_are_refused_unshown(variable, value):
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({**S3, variable: value})
    assert caught.value.variable == variable and "credentials" in str(caught.value)
    assert "pw-1234" not in str(caught.value)


def test_describe_url_masks_credentials_however_the_url_parses():
    from sqlalchemy.engine import make_url

    from pipeline.config import describe_url

    assert (
        describe_url(make_url("postgresql://cat:sec@ret@h:5/db")) == "postgresql://cat:***@h:5/db"
    )
    assert describe_url("postgresql://cat:p/ss@h:5/db") == "postgresql://***@h:5/db"
    assert describe_url("http://k:s#e@c@h:1/x") == "http://***@h:1/x"
    assert describe_url("http://h:1/x") == "http://h:1/x"


def test_secrets_never_show_in_repr_or_description():
    settings = Settings.from_env(
        {"CATALOGUE_DATABASE_URL": "postgresql://u:db-password-1@h/db", **S3}
    )
    shown = repr(settings) + settings.safe_database_url
    assert "db-password-1" not in shown
    assert "s3-secret-value" not in shown


def test_unconfigured_services_without_a_running_stack_say_what_to_do(tmp_path):
    with pytest.raises(ConfigError) as caught:
        load_settings({"CATALOGUE_STATE_DIR": str(tmp_path), **S3})
    assert caught.value.variable == "CATALOGUE_DATABASE_URL"
    assert "catalogue up" in str(caught.value)


def test_the_local_stack_record_fills_unconfigured_services(tmp_path):
    (tmp_path / "stack.json").write_text(
        json.dumps(
            {
                "postgres": {
                    "managed": True,
                    "url": "postgresql+psycopg2://postgres@/catalogue?host=/tmp/pg",
                },
                "s3": {
                    "managed": True,
                    "endpoint": "http://127.0.0.1:8333",
                    "access_key": "k",
                    "secret_key": "s",
                },
            }
        )
    )
    settings = load_settings({"CATALOGUE_STATE_DIR": str(tmp_path)})
    assert settings.database_url.database == "catalogue"
    assert settings.s3_endpoint == "http://127.0.0.1:8333"
    assert settings.s3_secret_key == "s"


def test_a_corrupt_stack_record_is_reported(tmp_path):
    (tmp_path / "stack.json").write_text("{not json")
    with pytest.raises(ConfigError) as caught:
        load_settings({"CATALOGUE_STATE_DIR": str(tmp_path)})
    assert "catalogue down" in str(caught.value)


def _env_example() -> dict[str, str]:
    """Every CATALOGUE_ variable .env.example shows: its value, or None where commented out."""
    text = (Path(__file__).resolve().parents[2] / ".env.example").read_text()
    return {
        name: None if commented else value
        for commented, name, value in re.findall(
            r"^(#?)\s*(CATALOGUE_[A-Z0-9_]+)=(.*)$", text, re.M
        )
    }


def test_env_example_documents_every_setting_and_nothing_else():
    read = {variable(name) for name in Settings.model_fields}
    compose_only = {"CATALOGUE_DB_PASSWORD"}  # docker compose builds the database URL from it
    assert read - set(_env_example()) == set()
    assert set(_env_example()) - read == compose_only


def test_env_example_values_are_the_defaults():
    defaults = Settings.from_env({})
    shown = {name: value for name, value in _env_example().items() if value is not None}
    for name, value in shown.items():
        if name == "CATALOGUE_DB_PASSWORD":
            continue
        field = next(f for f in Settings.model_fields if variable(f) == name)
        assert getattr(Settings.from_env({name: value}), field) == getattr(defaults, field), name


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("postgresql://admin:hunter2-secret/db", id="host-forgotten"),
        pytest.param("postgresql://u@h:5432/db?password=hunter2-secret", id="password-in-query"),
        pytest.param("postgresql://u@h:5432/db?sslmode=require&sslpassword=hunter2-secret",
                     id="sslpassword-in-query"),
    ],
)  # fmt: skip
def test_a_password_where_no_password_belongs_is_never_shown(value):
    from sqlalchemy.engine import make_url

    from pipeline.config import describe_url

    try:
        Settings.from_env({**S3, "CATALOGUE_DATABASE_URL": value})
        shown = describe_url(make_url(value))
    except ConfigError as exc:
        shown = str(exc)
    assert "hunter2" not in shown and "hunter2" not in describe_url(value)
