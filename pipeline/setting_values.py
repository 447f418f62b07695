"""How the text of a `CATALOGUE_*` variable becomes a value, or a `ConfigError` naming it.

Each parser takes the variable's name and its (stripped, non-blank) text; `pipeline.config` hangs
them on the fields of `Settings`. `describe_url` is how every message shows a URL: credentials
masked, whatever the URL's form.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlsplit

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from pipeline.errors import CatalogueError


class ConfigError(CatalogueError, ValueError):
    """A setting is missing or malformed; the message names the variable and what to do."""

    def __init__(self, variable: str, problem: str, fix: str) -> None:
        self.variable = variable
        super().__init__(f"{variable}: {problem}. {fix}")


# -- parsers: (variable, text) -> value ----------------------------------------------------------
_ENVIRONMENTS = ("development", "production")
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_ROLE_PREFIX = re.compile(r"^[a-z_][a-z0-9_]{0,40}$")
_PERCENT_ENCODE = (
    "Percent-encode special characters in the user and password: @ as %40, : as %3A, / as %2F, "
    "# as %23, ? as %3F, % as %25"
)
# libpq's parameters that hold or name a secret, which a URL may carry after its `?`
_SECRET_QUERY_KEYS = ("password", "sslpassword", "passfile", "sslkey")


def environment(name: str, text: str) -> str:
    if text not in _ENVIRONMENTS:
        raise ConfigError(
            name,
            f"'{text}' is not one of {', '.join(_ENVIRONMENTS)}",
            "Set it to development (local stack) or production.",
        )
    return text


def database_url(name: str, text: str) -> URL:
    try:
        url = make_url(text)
    except ArgumentError:
        raise ConfigError(
            name,
            f"{describe_url(text)} is not a database URL",
            f"Use the form postgresql://USER:PASSWORD@HOST:5432/DATABASE. {_PERCENT_ENCODE}",
        ) from None
    except ValueError:  # the text after the last ':' of the host part is not a number
        raise ConfigError(
            name,
            f"the port of {describe_url(text)} is not a number (or the password holds an "
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


def url_parts(name: str, value: str, *, form: str, what: str = "an http(s) URL"):
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


def s3_endpoint(name: str, text: str) -> str:
    parts = url_parts(name, text, form="http://HOST:PORT", what="an http(s) endpoint")
    if parts.path.strip("/") or parts.query:
        raise ConfigError(
            name,
            f"'{describe_url(text)}' has a path; buckets are configured separately",
            "Give only the scheme, host and port, e.g. http://127.0.0.1:8333.",
        )
    return f"{parts.scheme}://{parts.netloc}"


def http_url(name: str, text: str) -> str:
    if "://" not in text:
        raise ConfigError(
            name, f"'{describe_url('http://' + text).removeprefix('http://')}' has no http(s)://",
            "Use the form http://HOST:PORT[/PATH].",
        )  # fmt: skip
    url_parts(name, text, form="http://HOST:PORT[/PATH]")
    return text.rstrip("/")


def session_file(name: str, text: str) -> Path:
    path = Path(text).expanduser()
    if not path.is_file():
        raise ConfigError(
            name,
            f"{path} is not a file",
            "Create it with `instaloader --login USER` (it writes the session file) or unset the "
            "variable to collect anonymously.",
        )
    return path


def bucket(name: str, text: str) -> str:
    if not _BUCKET.match(text):
        raise ConfigError(
            name,
            f"'{text}' is not a valid S3 bucket name",
            "Use 3-63 lowercase letters, digits, dots and hyphens.",
        )
    return text


def role_prefix(name: str, text: str) -> str:
    if not _ROLE_PREFIX.match(text):
        raise ConfigError(
            name,
            f"'{text}' is not a plain lowercase SQL identifier",
            "Use lowercase letters, digits and underscores, starting with a letter.",
        )
    return text


def port(name: str, text: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ConfigError(name, f"'{text}' is not a TCP port", "Use a number from 1 to 65535.")
    return int(text)


def boolean(name: str, text: str) -> bool:
    lowered = text.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ConfigError(name, f"'{text}' is not a boolean", "Use true or false.")


def path(name: str, text: str) -> Path:
    return Path(text).expanduser()


_REDIS_SCHEMES = ("redis", "rediss")
_EXECUTORS = ("local", "celery")
_KERAS_BACKENDS = ("jax", "tensorflow", "torch")


def redis_url(name: str, text: str) -> str:
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:  # a port that is not a number, or an unencoded ':' in the password
        port, parts = -1, None
    if parts is None or parts.scheme not in _REDIS_SCHEMES or not parts.hostname or port == 0:
        raise ConfigError(
            name,
            f"{describe_url(text)} is not a Redis URL",
            f"Use the form redis://[:PASSWORD@]HOST:6379/DB (rediss:// for TLS). {_PERCENT_ENCODE}.",
        )
    database = parts.path.strip("/")
    if database and not database.isdigit():
        raise ConfigError(
            name, f"the database '{database}' of {describe_url(text)} is not a number",
            "Use a Redis database number, e.g. redis://127.0.0.1:6379/0.",
        )  # fmt: skip
    return text


def executor(name: str, text: str) -> str:
    if text.lower() not in _EXECUTORS:
        raise ConfigError(
            name,
            f"'{text}' is not one of {', '.join(_EXECUTORS)}",
            "Use local (Airflow standalone, the default) or celery (workers on Redis).",
        )
    return text.lower()


def keras_backend(name: str, text: str) -> str:
    if text.lower() not in _KERAS_BACKENDS:
        raise ConfigError(
            name, f"'{text}' is not a Keras backend", f"Use one of {', '.join(_KERAS_BACKENDS)}."
        )
    return text.lower()


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
