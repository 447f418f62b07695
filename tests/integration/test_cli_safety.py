"""What reaches a user's terminal is safe and says one thing: no secrets, no control characters,
no tracebacks for values out of range, no silent waits; and what the user names is what is done.

Every test runs the real `catalogue` command against the session's Postgres and S3 server.
"""

from __future__ import annotations

import socket
import subprocess
import threading
from collections.abc import Iterator

import pytest
from sqlalchemy import text

from tests.catalogue_rows import add_posts, reset_catalogue
from tests.cli import catalogue

UNSAFE = ("\x1b", "\x07", "\x9b", "\u202e", "\x00")


def _one_line(result: subprocess.CompletedProcess, *words: str) -> str:
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def shop(migrated):
    reset_catalogue(migrated)
    return add_posts(migrated, {"shop_a": 3}, prefix="A")


# -- secrets ---------------------------------------------------------------------------------------
def test_a_password_with_an_unescaped_at_sign_is_never_printed(services, migrated):
    raw = f"postgresql://cat:sec@ret-part-9@127.0.0.1:{_free_port()}/catalogue"
    result = catalogue(services.env(CATALOGUE_DATABASE_URL=raw), "check")
    _one_line(result, "CATALOGUE_DATABASE_URL", "Percent-encode", "%40")
    assert "ret-part-9" not in result.stderr + result.stdout
    assert result.returncode == 2


def test_an_env_file_given_as_labels_is_refused_without_echoing_it(services, shop, tmp_path):
    env_file = tmp_path / ".env"
    env_file.write_text(
        "CATALOGUE_DATABASE_URL=postgresql://cat:hunter2-secret@db:5432/cat\n"
        "CATALOGUE_S3_SECRET_KEY=another-secret\n"
    )
    result = catalogue(services.env(), "labels", "import", str(env_file))
    line = _one_line(result, "not a label CSV", "shortcode,position")
    assert "hunter2" not in result.stderr + result.stdout
    assert "another-secret" not in result.stderr + result.stdout
    assert len(line) < 400


def test_a_csv_header_with_an_unknown_column_names_it(services, shop, tmp_path):
    path = tmp_path / "labels.csv"
    path.write_text("shortcode,position,colour,size\nA0x00000,0,Red,M\n")
    _one_line(catalogue(services.env(), "labels", "import", str(path)), "unknown column", "'size'")


# -- the terminal ----------------------------------------------------------------------------------
def test_control_characters_from_a_csv_are_escaped_in_the_report(services, shop, tmp_path):
    path = tmp_path / "labels.csv"
    path.write_text(
        "shortcode,position,colour\n"
        "A0x00000,0,Red\n"
        "\x1b]52;c;ZXZpbA==\x07evil,0,Red\n"
        "\u202egnp.exe,0,Red\n"
        "A0x00001,0,\x1b[2J\x9bBlue\n",
        encoding="utf-8",
    )
    result = catalogue(services.env(), "labels", "import", str(path))
    assert result.returncode == 0, result.stderr
    for character in UNSAFE:
        assert character not in result.stdout + result.stderr
    assert "\\x1b]52;c;ZXZpbA==\\x07evil" in result.stdout
    assert "\\u202egnp.exe" in result.stdout


def test_control_characters_in_an_error_line_are_escaped(services, migrated, tmp_path):
    result = catalogue(services.env(), "accounts", "disable", "\x1b[2J\x1b]0;owned\x07shop")
    line = _one_line(result, "not an Instagram username")
    for character in UNSAFE:
        assert character not in line
    assert "\\x1b[2J" in line
    missing = catalogue(services.env(), "labels", "import", str(tmp_path / "a\u202ecsv.txt"))
    assert "\u202e" not in _one_line(missing, "does not exist")


def test_an_archive_folder_name_is_escaped_in_the_import_summary(services, migrated, tmp_path):
    folder = tmp_path / "archive" / "shop\x1b[2J\u202eevil"
    folder.mkdir(parents=True)
    (folder / "2024-01-01_00-00-00_UTC.jpg").write_bytes(b"not a picture")
    result = catalogue(services.env(), "import-archive", str(tmp_path / "archive"))
    for character in UNSAFE:
        assert character not in result.stdout + result.stderr
    assert "shop\\x1b[2J\\u202eevil" in result.stdout + result.stderr


# -- values out of range, malformed settings -------------------------------------------------------
def test_a_position_of_eleven_digits_is_a_refused_row(services, shop, tmp_path):
    path = tmp_path / "labels.csv"
    path.write_text(
        "shortcode,position,colour,category_label_id\n"
        "A0x00000,99999999999,Red,\n"
        "A0x00001,0,Red,99999999999999999999999\n"
        "A0x00002,0,Red,\n"
    )
    result = catalogue(services.env(), "labels", "import", str(path))
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert "line 2: position '99999999999' is not" in result.stdout
    assert "line 3: " in result.stdout and "is not a label id" in result.stdout
    assert "1 changed" in result.stdout


@pytest.mark.parametrize(
    ("variable", "value", "secret"),
    [
        pytest.param(
            "CATALOGUE_DATABASE_URL", "postgresql://cat:pw-1234@127.0.0.1:abc/cat", "pw-1234",
            id="database-port-not-a-number",
        ),
        pytest.param(
            "CATALOGUE_DATABASE_URL", "postgresql://cat:pw-1234@127.0.0.1:99999/cat", "pw-1234",
            id="database-port-out-of-range",
        ),
        pytest.param(
            "CATALOGUE_S3_ENDPOINT", "http://key:s3-secret-77@127.0.0.1:8333", "s3-secret-77",
            id="endpoint-with-credentials",
        ),
        pytest.param(
            "CATALOGUE_S3_ENDPOINT", "http://[::1", None, id="endpoint-broken-ipv6",
        ),
        pytest.param(
            "CATALOGUE_AIRFLOW_URL", "http://admin:af-secret-5@127.0.0.1:8080", "af-secret-5",
            id="airflow-url-with-credentials",
        ),
        pytest.param("CATALOGUE_AIRFLOW_URL", "http://127.0.0.1:port", None, id="airflow-port"),
    ],
)  # fmt: skip
def test_a_malformed_setting_is_one_line(services, migrated, variable, value, secret):
    result = catalogue(services.env(**{variable: value}), "check")
    line = _one_line(result, variable)
    assert result.returncode == 2
    if secret:
        assert secret not in result.stderr + result.stdout, line


# -- accounts, purge, dry run ----------------------------------------------------------------------
@pytest.mark.parametrize(
    "link",
    [
        pytest.param("https://www.instagram.com/p/CxYz123abc/", id="post"),
        pytest.param("https://www.instagram.com/reel/CxYz123abc/?igsh=x", id="reel"),
        pytest.param("instagram.com/tv/CxYz123abc", id="tv"),
    ],
)
def test_a_post_link_is_not_registered_as_an_account(services, migrated, link):
    reset_catalogue(migrated)
    _one_line(catalogue(services.env(), "accounts", "add", link), "profile")
    with migrated.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM raw.accounts")).scalar_one() == 0


def test_a_story_link_registers_the_account_it_belongs_to(services, migrated):
    reset_catalogue(migrated)
    link = "https://www.instagram.com/stories/shop.name/3312345678901234567/"
    result = catalogue(services.env(), "accounts", "add", link)
    assert result.returncode == 0, result.stderr
    assert "shop.name: added" in result.stdout
    with migrated.connect() as connection:
        names = connection.execute(text("SELECT username FROM raw.accounts")).scalars().all()
    assert names == ["shop.name"]


def test_a_post_with_path_characters_in_its_shortcode_is_purged_by_it(services, migrated):
    reset_catalogue(migrated)
    posts = add_posts(migrated, {"odd_shop": 2}, prefix="../x/")
    with migrated.begin() as connection:  # objects are stored by content, whatever the shortcode
        connection.execute(text("UPDATE raw.images SET object_key = 'images/00/00/' || sha256"))
    target = posts.accounts["odd_shop"][0]
    result = catalogue(services.env(), "purge", target, "--reason", "test")
    assert result.returncode == 0, result.stderr
    assert f"purged post {target}: 1 posts" in result.stdout
    with migrated.connect() as connection:
        left = connection.execute(text("SELECT shortcode FROM raw.posts")).scalars().all()
    assert left == [posts.accounts["odd_shop"][1]]


def test_a_dry_run_import_counts_what_would_change(services, shop, tmp_path):
    path = tmp_path / "labels.csv"
    path.write_text("shortcode,position,colour\nA0x00000,0,Red\nA0x00001,0,Blue\n")
    dry = catalogue(services.env(), "labels", "import", str(path), "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "2 would change" in dry.stdout and "nothing written" in dry.stdout
    applied = catalogue(services.env(), "labels", "import", str(path))
    assert "2 changed" in applied.stdout
    again = catalogue(services.env(), "labels", "import", str(path), "--dry-run")
    assert "0 would change, 2 unchanged" in again.stdout


# -- a frozen S3 server ----------------------------------------------------------------------------
@pytest.fixture
def frozen_s3() -> Iterator[str]:
    """An S3 endpoint that accepts connections and never answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except TimeoutError:
                continue
            except OSError:
                return

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    stop.set()
    thread.join()
    for connection in held:
        connection.close()
    server.close()


def test_a_frozen_s3_server_ends_in_one_line(services, migrated, frozen_s3):
    env = services.env(CATALOGUE_S3_ENDPOINT=frozen_s3, CATALOGUE_S3_TIMEOUT_S="1")
    result = catalogue(env, "check", timeout=90)
    _one_line(result, "did not answer", frozen_s3, "CATALOGUE_S3_TIMEOUT_S")
