"""One settings object, read from the environment.

Every variable is documented in `.env.example`. A missing or malformed value raises `ConfigError`
naming the variable and what to do; secrets never appear in `repr()`, logs or error messages.

When `CATALOGUE_DATABASE_URL` or `CATALOGUE_S3_ENDPOINT` is not set, the local stack (`catalogue up`)
provides that service and records how to reach it under the state directory; `resolve_services`
reads that record.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from urllib.parse import urlsplit

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from pipeline.errors import CatalogueError

REPO_ROOT = Path(__file__).resolve().parent.parent
STACK_RECORD = "stack.json"

# Values shipped in .env.example; refused outside development so a copied example never reaches
# production.
PLACEHOLDER_SECRETS = frozenset({"change-me", "changeme", "minioadmin", "password", "secret"})

_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_ROLE_PREFIX = re.compile(r"^[a-z_][a-z0-9_]{0,40}$")
_ENVIRONMENTS = ("development", "production")


class ConfigError(CatalogueError, ValueError):
    """A setting is missing or malformed; the message names the variable and what to do."""

    def __init__(self, variable: str, problem: str, fix: str) -> None:
        self.variable = variable
        super().__init__(f"{variable}: {problem}. {fix}")


@dataclass(frozen=True)
class Settings:
    environment: str = "development"
    database_url: URL | None = None
    s3_endpoint: str | None = None
    s3_access_key: str | None = field(default=None, repr=False)
    s3_secret_key: str | None = field(default=None, repr=False)
    s3_region: str = "us-east-1"
    s3_public_endpoint: str | None = None
    s3_create_buckets: bool = True
    s3_timeout_s: float = 20.0  # connect and read, per attempt; a silent server fails in ~2x this
    bucket_images: str = "catalogue-images"
    bucket_models: str = "catalogue-models"
    state_dir: Path = Path(".catalogue")
    dataset_dir: Path = REPO_ROOT.parent / "shared" / "data" / "fashion-products"
    clothing_photos_dir: Path = REPO_ROOT.parent / "shared" / "data" / "clothing-photos"
    role_prefix: str = "catalogue"
    s3_port: int = 8333
    airflow_port: int = 8080
    airflow_database_url: URL | None = None
    airflow_url: str | None = None  # from_env: http://127.0.0.1:<airflow_port>
    airflow_username: str = "admin"
    airflow_password: str | None = field(default=None, repr=False)
    moderator: str | None = None
    taxonomy_file: Path | None = None  # None: the shipped default taxonomy
    instagram_session_file: Path | None = None
    instagram_username: str | None = None
    instagram_pauses: bool = True
    # training and promotion
    train_network: str = "mobilenet_v2_050"
    train_epochs: int = 10
    train_min_examples: int = 20  # training examples a class needs to be learnt
    train_initial_weights: Path | None = None  # a local .weights.h5/.keras file to start from
    # pretrained backbones' published weights: this folder (default: ../shared/weights, then
    # ~/.keras/models), and whether Keras may download a missing file
    weights_dir: Path | None = None
    weights_download: bool = False
    retrain_min_changed_labels: int = 200  # a labels-triggered retrain skips below this
    promotion_margin: float = 0.005  # accuracy a candidate must gain over the champion
    promotion_max_class_drop: float = 0.05  # recall a well-supported class may lose at most
    promotion_significance: float = 0.05  # ... when a paired test says the fall is not noise
    # the precision a model's answers must reach (on its validation split) to be filled in
    # without a moderator: each model learns the confidence threshold that gives it
    target_precision: float = 0.97
    # prediction: for a model trained before it had a threshold of its own
    review_below_confidence: float = 0.5  # a prediction less sure than this needs review
    review_below_margin: float = 0.1  # ... or whose top two classes are closer than this
    predict_batch_size: int = 128
    predict_workers: int = 8  # parallel fetch + decode threads
    predict_max_shards: int = 4  # mapped tasks of the predict DAG
    predict_min_shard_images: int = 2000  # fewer images to score: fewer shards

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

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        get = lambda name: (env.get(name) or "").strip() or None  # noqa: E731

        environment = get("CATALOGUE_ENV") or "development"
        if environment not in _ENVIRONMENTS:
            raise ConfigError(
                "CATALOGUE_ENV",
                f"'{environment}' is not one of {', '.join(_ENVIRONMENTS)}",
                "Set it to development (local stack) or production.",
            )

        endpoint = _s3_endpoint("CATALOGUE_S3_ENDPOINT", get("CATALOGUE_S3_ENDPOINT"))
        access_key, secret_key = get("CATALOGUE_S3_ACCESS_KEY"), get("CATALOGUE_S3_SECRET_KEY")
        if endpoint is not None:
            for name, value in (
                ("CATALOGUE_S3_ACCESS_KEY", access_key),
                ("CATALOGUE_S3_SECRET_KEY", secret_key),
            ):
                if value is None:
                    raise ConfigError(
                        name,
                        "is not set but CATALOGUE_S3_ENDPOINT is",
                        "Set the S3 key pair of that server, or unset CATALOGUE_S3_ENDPOINT "
                        "to use the local stack's S3 server.",
                    )
        settings = cls(
            environment=environment,
            database_url=_database_url("CATALOGUE_DATABASE_URL", get("CATALOGUE_DATABASE_URL")),
            s3_endpoint=endpoint,
            s3_access_key=access_key,
            s3_secret_key=secret_key,
            s3_region=get("CATALOGUE_S3_REGION") or "us-east-1",
            s3_public_endpoint=_s3_endpoint(
                "CATALOGUE_S3_PUBLIC_ENDPOINT", get("CATALOGUE_S3_PUBLIC_ENDPOINT")
            ),
            s3_create_buckets=_boolean(
                "CATALOGUE_S3_CREATE_BUCKETS", get("CATALOGUE_S3_CREATE_BUCKETS"), default=True
            ),
            s3_timeout_s=_number(
                "CATALOGUE_S3_TIMEOUT_S",
                get("CATALOGUE_S3_TIMEOUT_S"),
                default=cls.s3_timeout_s,
                kind=float,
                low=0.1,
                high=600,
            ),
            bucket_images=_bucket("CATALOGUE_S3_BUCKET_IMAGES", get("CATALOGUE_S3_BUCKET_IMAGES"))
            or "catalogue-images",
            bucket_models=_bucket("CATALOGUE_S3_BUCKET_MODELS", get("CATALOGUE_S3_BUCKET_MODELS"))
            or "catalogue-models",
            state_dir=Path(get("CATALOGUE_STATE_DIR") or ".catalogue").expanduser().resolve(),
            dataset_dir=Path(get("CATALOGUE_DATASET_DIR") or cls.dataset_dir).expanduser(),
            clothing_photos_dir=Path(
                get("CATALOGUE_CLOTHING_PHOTOS_DIR") or cls.clothing_photos_dir
            ).expanduser(),
            role_prefix=_role_prefix(get("CATALOGUE_ROLE_PREFIX")),
            s3_port=_port("CATALOGUE_S3_PORT", get("CATALOGUE_S3_PORT"), default=8333),
            airflow_port=_port(
                "CATALOGUE_AIRFLOW_PORT", get("CATALOGUE_AIRFLOW_PORT"), default=8080
            ),
            airflow_database_url=_database_url(
                "CATALOGUE_AIRFLOW_DATABASE_URL", get("CATALOGUE_AIRFLOW_DATABASE_URL")
            ),
            airflow_url=_http_url("CATALOGUE_AIRFLOW_URL", get("CATALOGUE_AIRFLOW_URL")),
            airflow_username=get("CATALOGUE_AIRFLOW_USERNAME") or "admin",
            airflow_password=get("CATALOGUE_AIRFLOW_PASSWORD"),
            moderator=get("CATALOGUE_MODERATOR"),
            taxonomy_file=Path(get("CATALOGUE_TAXONOMY_FILE")).expanduser()
            if get("CATALOGUE_TAXONOMY_FILE")
            else None,
            instagram_session_file=_session_file(get("CATALOGUE_INSTAGRAM_SESSION_FILE")),
            instagram_username=get("CATALOGUE_INSTAGRAM_USERNAME"),
            instagram_pauses=_boolean(
                "CATALOGUE_INSTAGRAM_PAUSES", get("CATALOGUE_INSTAGRAM_PAUSES"), default=True
            ),
            train_network=get("CATALOGUE_TRAIN_NETWORK") or cls.train_network,
            train_epochs=_number(
                "CATALOGUE_TRAIN_EPOCHS",
                get("CATALOGUE_TRAIN_EPOCHS"),
                default=cls.train_epochs,
                kind=int,
                low=1,
            ),
            train_initial_weights=Path(get("CATALOGUE_TRAIN_INITIAL_WEIGHTS")).expanduser()
            if get("CATALOGUE_TRAIN_INITIAL_WEIGHTS")
            else None,
            weights_dir=Path(get("CATALOGUE_WEIGHTS_DIR")).expanduser()
            if get("CATALOGUE_WEIGHTS_DIR")
            else None,
            weights_download=_boolean(
                "CATALOGUE_WEIGHTS_DOWNLOAD", get("CATALOGUE_WEIGHTS_DOWNLOAD"), default=False
            ),
            train_min_examples=_number(
                "CATALOGUE_TRAIN_MIN_EXAMPLES",
                get("CATALOGUE_TRAIN_MIN_EXAMPLES"),
                default=cls.train_min_examples,
                kind=int,
                low=1,
            ),
            retrain_min_changed_labels=_number(
                "CATALOGUE_RETRAIN_MIN_CHANGED_LABELS",
                get("CATALOGUE_RETRAIN_MIN_CHANGED_LABELS"),
                default=cls.retrain_min_changed_labels,
                kind=int,
                low=0,
            ),
            promotion_margin=_number(
                "CATALOGUE_PROMOTION_MARGIN",
                get("CATALOGUE_PROMOTION_MARGIN"),
                default=cls.promotion_margin,
                kind=float,
                low=0,
                high=1,
            ),
            promotion_max_class_drop=_number(
                "CATALOGUE_PROMOTION_MAX_CLASS_DROP",
                get("CATALOGUE_PROMOTION_MAX_CLASS_DROP"),
                default=cls.promotion_max_class_drop,
                kind=float,
                low=0,
                high=1,
            ),
            promotion_significance=_number(
                "CATALOGUE_PROMOTION_SIGNIFICANCE",
                get("CATALOGUE_PROMOTION_SIGNIFICANCE"),
                default=cls.promotion_significance,
                kind=float,
                low=0,
                high=1,
            ),
            target_precision=_number(
                "CATALOGUE_TARGET_PRECISION",
                get("CATALOGUE_TARGET_PRECISION"),
                default=cls.target_precision,
                kind=float,
                low=0.5,
                high=1,
            ),
            review_below_confidence=_number(
                "CATALOGUE_REVIEW_BELOW_CONFIDENCE",
                get("CATALOGUE_REVIEW_BELOW_CONFIDENCE"),
                default=cls.review_below_confidence,
                kind=float,
                low=0,
                high=1,
            ),
            review_below_margin=_number(
                "CATALOGUE_REVIEW_BELOW_MARGIN",
                get("CATALOGUE_REVIEW_BELOW_MARGIN"),
                default=cls.review_below_margin,
                kind=float,
                low=0,
                high=1,
            ),
            predict_batch_size=_number(
                "CATALOGUE_PREDICT_BATCH_SIZE",
                get("CATALOGUE_PREDICT_BATCH_SIZE"),
                default=cls.predict_batch_size,
                kind=int,
                low=1,
                high=4096,
            ),
            predict_workers=_number(
                "CATALOGUE_PREDICT_WORKERS",
                get("CATALOGUE_PREDICT_WORKERS"),
                default=cls.predict_workers,
                kind=int,
                low=1,
                high=256,
            ),
            predict_max_shards=_number(
                "CATALOGUE_PREDICT_MAX_SHARDS",
                get("CATALOGUE_PREDICT_MAX_SHARDS"),
                default=cls.predict_max_shards,
                kind=int,
                low=1,
                high=1024,
            ),
            predict_min_shard_images=_number(
                "CATALOGUE_PREDICT_MIN_SHARD_IMAGES",
                get("CATALOGUE_PREDICT_MIN_SHARD_IMAGES"),
                default=cls.predict_min_shard_images,
                kind=int,
                low=1,
            ),
        )
        if settings.airflow_url is None or settings.airflow_password is None:
            settings = replace(
                settings,
                airflow_url=settings.airflow_url or f"http://127.0.0.1:{settings.airflow_port}",
                airflow_password=settings.airflow_password
                or _local_airflow_password(settings.state_dir, settings.airflow_username),
            )
        if settings.instagram_session_file and not settings.instagram_username:
            raise ConfigError(
                "CATALOGUE_INSTAGRAM_USERNAME",
                "is not set but CATALOGUE_INSTAGRAM_SESSION_FILE is",
                "Set the Instagram login whose session the file holds.",
            )
        if environment == "production":
            settings._refuse_development_defaults()
        return settings

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
        return replace(self, **changes)


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """The settings with the local stack's services filled in where none is configured."""
    return Settings.from_env(environ).with_local_services()


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


def describe_url(url: URL | str) -> str:
    """A URL fit for messages and logs, built from its parsed parts: credentials are masked.

    A password holding an unencoded `@` parses with the rest of the password in the host
    (`user:pa@ss@host`: password `pa`, host `ss@host`): whatever comes before the host's last `@`
    is credentials too, and is dropped. A text that does not parse keeps only its scheme and host.
    """
    if isinstance(url, URL):
        host = (url.host or "").rpartition("@")[2] or None
        query = {k: "***" if k.lower() in _SECRET_QUERY_KEYS else v for k, v in url.query.items()}
        return url.set(host=host, query=query).render_as_string(hide_password=True)
    scheme, sep, rest = url.partition("://")
    if not sep:
        return "(not a URL)"
    authority, slash, path = rest.partition("/")
    if "@" in rest:  # the last @ ends the credentials, wherever a / or # in them cut the URL
        authority, slash, path = rest.rpartition("@")[2].partition("/")
        authority = "***@" + authority
    host, colon, port = authority.rpartition(":")
    if colon and not port.isdigit() and "]" not in port:
        # `user:password/db` (the host forgotten) reads as a host and a port that is no number
        authority = f"{host}:***"
    path, question, query = path.partition("?")
    if question:
        query = "&".join(
            f"{k}=***" if k.lower() in _SECRET_QUERY_KEYS else f"{k}{eq}{v}"
            for k, eq, v in (pair.partition("=") for pair in query.split("&"))
        )
    return f"{scheme}://{authority}{slash}{path}{question}{query}"


# libpq's parameters that hold or name a secret, which a URL may carry after its `?`
_SECRET_QUERY_KEYS = ("password", "sslpassword", "passfile", "sslkey")


# -- parsers ----------------------------------------------------------------------------------
_PERCENT_ENCODE = (
    "Percent-encode special characters in the user and password: @ as %40, : as %3A, / as %2F, "
    "# as %23, ? as %3F, % as %25"
)


def _database_url(name: str, value: str | None) -> URL | None:
    if value is None:
        return None
    try:
        url = make_url(value)
    except ArgumentError:
        raise ConfigError(
            name,
            f"{describe_url(value)} is not a database URL",
            f"Use the form postgresql://USER:PASSWORD@HOST:5432/DATABASE. {_PERCENT_ENCODE}",
        ) from None
    except ValueError:  # the text after the last ':' of the host part is not a number
        raise ConfigError(
            name,
            f"the port of {describe_url(value)} is not a number (or the password holds an "
            "unencoded '@' or ':')",
            f"{_PERCENT_ENCODE}.",
        ) from None
    port = url.port
    if "@" in (url.host or ""):
        raise ConfigError(
            name,
            f"the user or password of {describe_url(url)} holds an unencoded '@'",
            f"{_PERCENT_ENCODE}.",
        )
    if port is not None and not 0 < port < 65536:
        raise ConfigError(
            name,
            f"port {port} of {describe_url(url)} is not a TCP port",
            "Use a number from 1 to 65535.",
        )
    if url.get_backend_name() not in ("postgresql", "postgres"):
        raise ConfigError(
            name,
            f"names the '{url.get_backend_name()}' backend; only PostgreSQL is supported",
            "Use the form postgresql://USER:PASSWORD@HOST:5432/DATABASE.",
        )
    if not url.database:
        raise ConfigError(
            name,
            "names no database",
            "Add the database name: postgresql://USER@HOST:5432/DATABASE.",
        )
    return url.set(drivername="postgresql+psycopg2")


def _url_parts(name: str, value: str, *, form: str, what: str = "an http(s) URL"):
    """`value` split, or ConfigError naming `name`: never credentials in a URL, a numeric port."""
    shown = describe_url(value if "://" in value else f"http://{value}")
    try:
        parts = urlsplit(value if "://" in value else f"http://{value}")
        port = parts.port
    except ValueError:  # a port that is not a number, a broken [IPv6] host
        raise ConfigError(name, f"{shown} is not {what}", f"Use the form {form}.") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(name, f"{shown} is not {what}", f"Use the form {form}.")
    if "@" in parts.netloc:
        keys = {
            "CATALOGUE_AIRFLOW_URL": "CATALOGUE_AIRFLOW_USERNAME and CATALOGUE_AIRFLOW_PASSWORD"
        }.get(name, "CATALOGUE_S3_ACCESS_KEY and CATALOGUE_S3_SECRET_KEY")
        raise ConfigError(
            name, f"{shown} holds credentials", f"Remove them from the URL and set {keys}."
        )
    if port == 0:
        raise ConfigError(name, f"{shown} has port 0", "Use a port from 1 to 65535.")
    return parts


def _s3_endpoint(name: str, value: str | None) -> str | None:
    if value is None:
        return None
    parts = _url_parts(name, value, form="http://HOST:PORT", what="an http(s) endpoint")
    if parts.path.strip("/") or parts.query:
        raise ConfigError(
            name,
            f"'{describe_url(value)}' has a path; buckets are configured separately",
            "Give only the scheme, host and port, e.g. http://127.0.0.1:8333.",
        )
    return f"{parts.scheme}://{parts.netloc}"


def _http_url(name: str, value: str | None) -> str | None:
    if value is None:
        return None
    if "://" not in value:
        raise ConfigError(
            name, f"'{describe_url('http://' + value).removeprefix('http://')}' has no http(s)://",
            "Use the form http://HOST:PORT[/PATH].",
        )  # fmt: skip
    _url_parts(name, value, form="http://HOST:PORT[/PATH]")
    return value.rstrip("/")


def _local_airflow_password(state_dir: Path, username: str) -> str | None:
    """The admin password the local stack generated for its Airflow, when it has one."""
    try:
        passwords = json.loads((state_dir / "airflow" / "passwords.json").read_text())
    except (OSError, ValueError):
        return None
    password = passwords.get(username) if isinstance(passwords, dict) else None
    return password if isinstance(password, str) else None


def _session_file(value: str | None) -> Path | None:
    if value is None:
        return None
    path = Path(value).expanduser()
    if not path.is_file():
        raise ConfigError(
            "CATALOGUE_INSTAGRAM_SESSION_FILE",
            f"{path} is not a file",
            "Create it with `instaloader --login USER` (it writes the session file) or unset the "
            "variable to collect anonymously.",
        )
    return path


def _bucket(name: str, value: str | None) -> str | None:
    if value is not None and not _BUCKET.match(value):
        raise ConfigError(
            name,
            f"'{value}' is not a valid S3 bucket name",
            "Use 3-63 lowercase letters, digits, dots and hyphens.",
        )
    return value


def _role_prefix(value: str | None) -> str:
    if value is None:
        return "catalogue"
    if not _ROLE_PREFIX.match(value):
        raise ConfigError(
            "CATALOGUE_ROLE_PREFIX",
            f"'{value}' is not a plain lowercase SQL identifier",
            "Use lowercase letters, digits and underscores, starting with a letter.",
        )
    return value


def _port(name: str, value: str | None, *, default: int) -> int:
    if value is None:
        return default
    if not value.isdigit() or not 0 < int(value) < 65536:
        raise ConfigError(name, f"'{value}' is not a TCP port", "Use a number from 1 to 65535.")
    return int(value)


def _number(name: str, value: str | None, *, default, kind, low=None, high=None):
    if value is None:
        return default
    try:
        number = kind(value)
    except ValueError:
        number = None
    if number is None or (low is not None and number < low) or (high is not None and number > high):
        bounds = f" from {low}" if low is not None else ""
        bounds += f" to {high}" if high is not None else ""
        raise ConfigError(
            name, f"'{value}' is not a {'whole ' if kind is int else ''}number{bounds}",
            f"Use a {'whole ' if kind is int else ''}number{bounds}.",
        )  # fmt: skip
    return number


def _boolean(name: str, value: str | None, *, default: bool) -> bool:
    if value is None:
        return default
    lowered = value.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ConfigError(name, f"'{value}' is not a boolean", "Use true or false.")
