"""One settings object, read from the environment, and the stages' options built from it.

`Settings` declares each `CATALOGUE_*` variable once: its field (the variable without the prefix,
unless an alias names it), type, default and description; `.env.example` documents them. A
malformed value raises `ConfigError` naming the variable and what to write; secrets never appear
in `repr()`, logs or error messages. Values are stripped and a blank one counts as unset. No `.env`
file is read: docker compose reads it itself, a shell exports it with `set -a; . ./.env`.

When `CATALOGUE_DATABASE_URL` or `CATALOGUE_S3_ENDPOINT` is not set, the local stack (`catalogue up`)
provides that service and records how to reach it under the state directory;
`with_local_services` reads that record.

How a variable's text becomes a value (the parsers, `ConfigError`, `describe_url`) is in
`pipeline.setting_values`.

A stage's options (`SnapshotOptions`, `TrainOptions`, `GateOptions`, `PredictOptions`) declare the
fields a setting configures with `setting(name)`: their default is the setting's, written once
here, and their `from_settings` (`configured`) fills them from the settings, with one run's
choices over them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import field, fields
from pathlib import Path
from typing import Annotated, Any, TypeVar

from pydantic import AfterValidator, BeforeValidator, Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, EnvSettingsSource, SettingsConfigDict
from sqlalchemy.engine import URL, make_url

from pipeline import setting_values as values
from pipeline.setting_values import ConfigError, describe_url

REPO_ROOT = Path(__file__).resolve().parent.parent
STACK_RECORD = "stack.json"
PREFIX = "CATALOGUE_"

# Values shipped in .env.example; refused outside development so a copied example never reaches
# production.
PLACEHOLDER_SECRETS = frozenset({"change-me", "changeme", "minioadmin", "password", "secret"})


def _parsed(parse: Callable[[str, str], Any]) -> BeforeValidator:
    """A field's validator: `parse(variable, text)` reads a text from the environment; a value
    given as its own type (in code, in tests) passes as it is."""

    def validate(value: Any, info) -> Any:
        return parse(variable(info.field_name), value) if isinstance(value, str) else value

    return BeforeValidator(validate)


# -- the kinds of value; numbers are checked against their field's bounds (ge, le) -------------
Environment = Annotated[str, _parsed(values.environment)]
DatabaseUrl = Annotated[URL | None, _parsed(values.database_url)]
Endpoint = Annotated[str | None, _parsed(values.s3_endpoint)]
HttpUrl = Annotated[str | None, _parsed(values.http_url)]
RedisUrl = Annotated[str, _parsed(values.redis_url)]
Bucket = Annotated[str, _parsed(values.bucket)]
RolePrefix = Annotated[str, _parsed(values.role_prefix)]
Port = Annotated[int, _parsed(values.port)]
Flag = Annotated[bool, _parsed(values.boolean)]
Folder = Annotated[Path, _parsed(values.path)]
OptionalFile = Annotated[Path | None, _parsed(values.path)]
SessionFile = Annotated[Path | None, _parsed(values.session_file)]
Executor = Annotated[str, _parsed(values.executor)]
KerasBackend = Annotated[str, _parsed(values.keras_backend)]
StateDir = Annotated[Path, AfterValidator(lambda path: path.expanduser().resolve())]
Share = Annotated[float, Field(ge=0, le=1)]


class Settings(BaseSettings):
    """Each field is the variable CATALOGUE_<FIELD> (or its `validation_alias`)."""

    model_config = SettingsConfigDict(
        env_prefix=PREFIX,
        frozen=True,
        populate_by_name=True,
        arbitrary_types_allowed=True,  # sqlalchemy's URL
        enable_decoding=False,  # a value is one text, never JSON
        allow_inf_nan=False,
        extra="ignore",
    )

    environment: Environment = Field(
        "development", validation_alias="CATALOGUE_ENV",
        description="development, or production: no local stack, no placeholder secrets",
    )  # fmt: skip
    database_url: DatabaseUrl = Field(None, description="Postgres (unset: the local stack's)")
    s3_endpoint: Endpoint = Field(None, description="the S3 server (unset: the local stack's)")
    s3_access_key: str | None = Field(None, repr=False, description="its key id")
    s3_secret_key: str | None = Field(None, repr=False, description="its secret key")
    s3_region: str = Field("us-east-1", description="its region")
    s3_public_endpoint: Endpoint = Field(None, description="for browsers (default: the endpoint)")
    s3_create_buckets: Flag = Field(True, description="create missing buckets at start-up")
    s3_timeout_s: float = Field(20.0, ge=0.1, le=600, description="seconds per request and try")
    bucket_images: Bucket = Field(
        "catalogue-images", validation_alias="CATALOGUE_S3_BUCKET_IMAGES", description="raw images"
    )
    bucket_models: Bucket = Field(
        "catalogue-models", validation_alias="CATALOGUE_S3_BUCKET_MODELS",
        description="model artefacts and dataset manifests",
    )  # fmt: skip
    state_dir: StateDir = Field(
        Path(".catalogue"), validate_default=True, description="the local stack's data and record"
    )
    dataset_dir: Folder = Field(
        REPO_ROOT.parent / "shared" / "data" / "fashion-products",
        description="the fashion product photos (images/, styles.csv)",
    )
    clothing_photos_dir: Folder = Field(
        REPO_ROOT.parent / "shared" / "data" / "clothing-photos",
        description="the real clothing photos (images/, images.csv)",
    )
    role_prefix: RolePrefix = Field("catalogue", description="prefix of the Postgres group roles")
    s3_port: Port = Field(8333, description="the local stack's S3 port")
    airflow_port: Port = Field(8080, description="the local stack's Airflow port")
    airflow_database_url: DatabaseUrl = Field(None, description="Airflow's metadata database")
    airflow_url: HttpUrl = Field(
        default_factory=lambda data: f"http://127.0.0.1:{data['airflow_port']}",
        description="Airflow's REST API",
    )
    airflow_username: str = Field("admin", description="the REST API's user")
    airflow_password: str | None = Field(
        default_factory=lambda data: _local_airflow_password(
            data["state_dir"], data["airflow_username"]
        ),
        repr=False,
        description="its password (default: the one the local stack generated)",
    )
    # `catalogue up --executor celery`: Airflow's CeleryExecutor with a default and a `gpu` worker
    airflow_executor: Executor = Field("local", description="local (standalone) or celery")
    redis_url: RedisUrl = Field(
        "redis://127.0.0.1:6379/0",
        repr=False,
        description="the Celery broker (may hold a password)",
    )
    gpu_queue_backend: KerasBackend = Field("jax", description="KERAS_BACKEND of the `gpu` worker")
    moderator: str | None = Field(None, description="who the CLI records as the moderator")
    taxonomy_file: OptionalFile = Field(None, description="taxonomy YAML (unset: the shipped one)")
    instagram_session_file: SessionFile = Field(None, description="instaloader's session file")
    instagram_username: str | None = Field(None, description="the login of that session")
    instagram_pauses: Flag = Field(True, description="instaloader's random pause per request")
    # training and promotion
    train_network: str = Field("mobilenet_v2_050", description="the network retraining uses")
    train_epochs: int = Field(10, ge=1, description="epochs of a retraining")
    train_min_examples: int = Field(20, ge=1, description="training examples a class needs")
    train_initial_weights: OptionalFile = Field(None, description="weights training starts from")
    weights_dir: OptionalFile = Field(None, description="pretrained backbones' weights")
    weights_download: Flag = Field(False, description="Keras may download missing weights")
    retrain_min_changed_labels: int = Field(
        200, ge=0, description="a labels-triggered retrain skips below this many changed labels"
    )
    promotion_margin: Share = Field(0.005, description="accuracy a candidate must gain")
    promotion_max_class_drop: Share = Field(0.05, description="recall a class may lose at most")
    promotion_significance: Share = Field(0.05, description="... where a paired test's p is below")
    target_precision: float = Field(
        0.97, ge=0.5, le=1, description="the precision of the answers filled in without review"
    )
    # prediction: for a model trained before it had a threshold of its own
    review_below_confidence: Share = Field(0.5, description="less sure than this: needs review")
    review_below_margin: Share = Field(0.1, description="... or top two classes closer than this")
    predict_batch_size: int = Field(128, ge=1, le=4096, description="pictures per model call")
    predict_workers: int = Field(8, ge=1, le=256, description="fetch and decode threads")
    predict_max_shards: int = Field(4, ge=1, le=1024, description="mapped tasks of the predict DAG")
    predict_min_shard_images: int = Field(2000, ge=1, description="images a shard gets at least")
    predict_retry_delay_s: int = Field(60, ge=1, le=3600, description="a failed shard's retry")
    # duplicate listings: precision 0.95, recall 0.60 in bench/duplicates.py (docs/benchmarks.md)
    duplicate_max_hamming: int = Field(6, ge=0, le=64, description="hash bits copies differ in")
    duplicate_max_distance: float = Field(0.3, ge=0, le=2, description="their cosine distance")
    duplicate_close_distance: float = Field(0.1, ge=0, le=2, description="closer embeddings...")
    duplicate_close_max_hamming: int = Field(16, ge=0, le=64, description="...may differ more")
    duplicate_min_colour_overlap: Share = Field(0.9, description="colour histograms' shared mass")
    duplicate_neighbours: int = Field(1, ge=1, le=1000, description="nearest pictures compared")
    # the moderators' workbench (`catalogue web`)
    web_host: str = Field("127.0.0.1", description="the address `catalogue web` listens on")
    web_port: Port = Field(8090, description="its port")
    web_session_hours: float = Field(12, gt=0, le=720, description="a sign-in lasts this long")
    web_secure_cookies: Flag = Field(False, description="cookies only over https (behind TLS)")
    web_login_attempts: int = Field(
        5, ge=1, le=1000, description="failed sign-ins per name in 15 minutes before refusing"
    )

    # -- construction -------------------------------------------------------------------------
    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except ValidationError as exc:  # never shown: its text holds the values, secrets too
            raise _config_error(exc) from None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """The settings from `environ` (default: the process environment)."""
        return cls(_build_sources=((_Environment(cls, environ),), {}))

    @classmethod
    def settings_customise_sources(
        cls, settings_cls, init_settings, env_settings, dotenv_settings, file_secret_settings
    ):
        """Values given in code, then the environment; no `.env` or secrets files."""
        return init_settings, _Environment(settings_cls)

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        if self.s3_endpoint is not None:
            for name, value in (
                ("CATALOGUE_S3_ACCESS_KEY", self.s3_access_key),
                ("CATALOGUE_S3_SECRET_KEY", self.s3_secret_key),
            ):
                if value is None:
                    raise ConfigError(
                        name,
                        "is not set but CATALOGUE_S3_ENDPOINT is",
                        "Set the S3 key pair of that server, or unset CATALOGUE_S3_ENDPOINT "
                        "to use the local stack's S3 server.",
                    )
        if self.instagram_session_file and not self.instagram_username:
            raise ConfigError(
                "CATALOGUE_INSTAGRAM_USERNAME",
                "is not set but CATALOGUE_INSTAGRAM_SESSION_FILE is",
                "Set the Instagram login whose session the file holds.",
            )
        if self.environment == "production":
            self._refuse_development_defaults()
        return self

    def _refuse_development_defaults(self) -> None:
        if self.database_url is None:
            raise ConfigError(
                "CATALOGUE_DATABASE_URL",
                "is not set in production",
                "Point it at the production Postgres; the embedded one is for development only.",
            )
        if self.s3_endpoint is None:
            raise ConfigError(
                "CATALOGUE_S3_ENDPOINT",
                "is not set in production",
                "Point it at the production S3 server; the local one is for development only.",
            )
        for variable, secret in (
            ("CATALOGUE_S3_SECRET_KEY", self.s3_secret_key),
            ("CATALOGUE_DATABASE_URL", self.database_url.password),
            ("CATALOGUE_AIRFLOW_DATABASE_URL",
             self.airflow_database_url.password if self.airflow_database_url else None),
            ("CATALOGUE_AIRFLOW_PASSWORD", self.airflow_password),
        ):  # fmt: skip
            if is_placeholder(secret):
                raise ConfigError(
                    variable,
                    "still holds a placeholder secret from .env.example",
                    "Set the real secret.",
                )

    # -- derived ------------------------------------------------------------------------------
    @property
    def database_configured(self) -> bool:
        return self.database_url is not None

    @property
    def s3_configured(self) -> bool:
        return self.s3_endpoint is not None

    @property
    def role_names(self) -> dict[str, str]:
        """The Postgres group roles the migrations create: application, reader, moderator."""
        return {
            "app": f"{self.role_prefix}_app",
            "reader": f"{self.role_prefix}_reader",
            "moderator": f"{self.role_prefix}_moderator",
        }

    @property
    def safe_database_url(self) -> str:
        return describe_url(self.database_url) if self.database_url else "(local stack)"

    def with_local_services(self) -> Settings:
        """Fill the database URL and S3 endpoint that are not configured from the local stack.

        Raises `ConfigError` when a service is neither configured nor started by `catalogue up`.
        """
        if self.database_configured and self.s3_configured:
            return self
        record = read_stack_record(self.state_dir)
        changes: dict[str, object] = {}
        if not self.database_configured:
            url = record.get("postgres", {}).get("url")
            if not url:
                raise ConfigError(
                    "CATALOGUE_DATABASE_URL",
                    "is not set and the local stack's Postgres is not running "
                    f"(no record under {self.state_dir})",
                    "Run `catalogue up` (or `make up`), or set CATALOGUE_DATABASE_URL.",
                )
            changes["database_url"] = make_url(url)
        if not self.s3_configured:
            s3 = record.get("s3", {})
            if not s3.get("endpoint"):
                raise ConfigError(
                    "CATALOGUE_S3_ENDPOINT",
                    "is not set and the local stack's S3 server is not running "
                    f"(no record under {self.state_dir})",
                    "Run `catalogue up` (or `make up`), or set CATALOGUE_S3_ENDPOINT and its keys.",
                )
            changes.update(
                s3_endpoint=s3["endpoint"],
                s3_access_key=s3["access_key"],
                s3_secret_key=s3["secret_key"],
            )
        return self.model_copy(update=changes)


class _Environment(EnvSettingsSource):
    """The process environment, or the mapping given: upper-case names only (as on Linux, where
    `catalogue_env` is not `CATALOGUE_ENV`), values stripped, blank ones left out (unset)."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str] | None = None):
        self._environ = environ
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        environ = os.environ if self._environ is None else self._environ
        return {
            name.lower(): value.strip()
            for name, value in environ.items()
            if name.startswith(PREFIX) and name == name.upper() and value.strip()
        }


def variable(name: str) -> str:
    """The environment variable of the setting `name`."""
    alias = Settings.model_fields[name].validation_alias
    return alias if isinstance(alias, str) else PREFIX + name.upper()


def _config_error(exc: ValidationError) -> ConfigError:
    """The first problem as one line naming the variable; the value only where it is a number."""
    error = exc.errors()[0]
    cause = (error.get("ctx") or {}).get("error")
    if isinstance(cause, ConfigError):
        return cause
    where = str(error["loc"][0]) if error["loc"] else ""
    name = {variable(n): n for n in Settings.model_fields}.get(where, where)
    known = Settings.model_fields.get(name)
    if known is not None and known.annotation in (int, float):
        low = next((m.ge for m in known.metadata if hasattr(m, "ge")), None)
        high = next((m.le for m in known.metadata if hasattr(m, "le")), None)
        what = f"{'whole ' if known.annotation is int else ''}number"
        what += f" from {low}" if low is not None else ""
        what += f" to {high}" if high is not None else ""
        return ConfigError(variable(name), f"'{error['input']}' is not a {what}", f"Use a {what}.")
    shown = variable(name) if known is not None else where or "settings"
    return ConfigError(shown, f"is not valid ({error['msg']})", "See .env.example.")


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """The settings with the local stack's services filled in where none is configured."""
    return Settings.from_env(environ).with_local_services()


# -- the stages' options ----------------------------------------------------------------------
Options = TypeVar("Options")
_SETTING = "setting"  # a dataclass field's metadata key: the setting it comes from


def setting(name: str) -> Any:
    """A field of a stage's options dataclass that the setting `name` configures: its default is
    the setting's, and `configured` fills it from the settings."""
    return field(default=Settings.model_fields[name].default, metadata={_SETTING: name})


def configured_by(options: type) -> dict[str, str]:
    """The fields of an options dataclass that settings configure: field -> setting."""
    return {f.name: f.metadata[_SETTING] for f in fields(options) if _SETTING in f.metadata}


def configured(options: type[Options], settings: Settings, choices: Mapping[str, Any]) -> Options:
    """`options` with its `setting()` fields from `settings` and this run's choices over them
    (a choice of None keeps the configured value)."""
    values = {name: getattr(settings, of) for name, of in configured_by(options).items()}
    return options(**values | {k: v for k, v in choices.items() if v is not None})


# -- helpers ----------------------------------------------------------------------------------
def read_stack_record(state_dir: Path) -> dict:
    path = state_dir / STACK_RECORD
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ConfigError(
            "CATALOGUE_STATE_DIR",
            f"the local stack record {path} is unreadable ({exc.msg})",
            "Run `catalogue down` and `catalogue up` again to rewrite it.",
        ) from exc


def is_placeholder(secret: str | None) -> bool:
    """True for a secret copied from .env.example (`change-me`, `Change-Me`, `CHANGEME`...)."""
    return secret is not None and secret.strip().lower() in PLACEHOLDER_SECRETS


def _local_airflow_password(state_dir: Path, username: str) -> str | None:
    """The admin password the local stack generated for its Airflow, when it has one."""
    try:
        passwords = json.loads((state_dir / "airflow" / "passwords.json").read_text())
    except (OSError, ValueError):
        return None
    password = passwords.get(username) if isinstance(passwords, dict) else None
    return password if isinstance(password, str) else None
