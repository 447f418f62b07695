"""Label CSV import and export (the contract in ARCHITECTURE.md).

Header: `shortcode,position,colour,category,moderator,note`, one more column per attribute the
taxonomy adds, and on export `<attribute>_label_id` columns: the id of each label as exported, so
an import never overwrites a label somebody changed after the export (such rows are skipped and
reported). The review queue's export adds columns a moderator needs to decide (`image_url`,
`reason`, `<attribute>_suggestions`); import ignores those, and refuses any other unknown column.

Import validates every row before writing anything; each refused row is reported with its line
number and reason; the valid rows are applied in one transaction (or nothing, with `strict`).
Re-importing the same file changes nothing.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import IO

from sqlalchemy import Connection, Engine, text

from pipeline.errors import CatalogueError
from pipeline.labels.history import (
    WantedLabel,
    Who,
    WriteOutcome,
    analyse_staging,
    label_transaction,
    stage,
    start_job,
    write_staged,
)
from pipeline.labels.taxonomy import Taxonomy, UnknownValue, taxonomy_from_database

KEY_COLUMNS = ("shortcode", "position")
OPTIONAL_COLUMNS = ("moderator", "note")
REVIEW_COLUMNS = ("image_url", "reason", "account", "taken_at")
MAX_FILE_BYTES = 200 * 1024 * 1024
MAX_POSITION = 2**31 - 1  # compared as an integer (raw.images.position is a smallint)
MAX_LABEL_ID = 2**63 - 1  # catalogue.labels.id is a bigint
# A label CSV header is a few short column names; anything else (an .env file, a key, a report) is
# not one, and its first line is never echoed: it may hold a secret.
_COLUMN_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_ .-]{0,63}$")
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


class LabelFileError(CatalogueError, ValueError):
    """The file as a whole cannot be imported (encoding, header); the message says why."""


@dataclass(frozen=True)
class RefusedRow:
    line: int
    reason: str


@dataclass
class ImportReport:
    rows: int = 0
    labels_wanted: int = 0
    written: int = 0
    unchanged: int = 0
    job_id: int | None = None
    refused: list[RefusedRow] = field(default_factory=list)
    stale: list[RefusedRow] = field(default_factory=list)
    applied: bool = False


def neutralise(cell: str | None) -> str:
    """A cell a spreadsheet would run as a formula is prefixed with an apostrophe."""
    if cell and cell.startswith(_FORMULA_START):
        return "'" + cell
    return cell or ""


def _restore(cell: str) -> str:
    if len(cell) > 1 and cell[0] == "'" and cell[1:].startswith(_FORMULA_START):
        return cell[1:]
    return cell


def header_for(taxonomy: Taxonomy) -> list[str]:
    attributes = list(taxonomy.attributes)
    return [*KEY_COLUMNS, *attributes, *OPTIONAL_COLUMNS, *(f"{a}_label_id" for a in attributes)]


# -- import ---------------------------------------------------------------------------------------
@dataclass
class _Row:
    line: int
    shortcode: str
    position: int
    values: dict[str, str]  # attribute -> canonical value
    expected: dict[str, int]  # attribute -> label id as exported (0: none)
    moderator: str | None
    note: str | None


def import_labels(
    source: Path | str | IO[bytes],
    *,
    engine: Engine,
    who: Who,
    strict: bool = False,
    dry_run: bool = False,
    kind: str = "import",
) -> ImportReport:
    """Validate every row, then apply the valid ones in one transaction."""
    data = _read_bytes(source)
    name = str(source) if isinstance(source, Path | str) else "the label file"
    try:
        content = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise LabelFileError(
            f"{name} is not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start}): "
            "save it as 'CSV UTF-8' and import again"
        ) from None
    with engine.connect() as connection:
        taxonomy = taxonomy_from_database(connection)
    report = ImportReport()
    rows = _parse(content, taxonomy, report, name)
    report.rows = len(rows) + len(report.refused)

    parsed_refusals = list(report.refused)

    def apply(connection: Connection) -> WriteOutcome | None:
        report.refused = list(parsed_refusals)  # an attempt collided and runs again: from scratch
        images = _image_ids(connection, rows)
        wanted = _wanted(rows, images, report)
        report.labels_wanted = len(wanted)
        report.refused.sort(key=lambda r: r.line)
        if (strict and report.refused) or dry_run:
            stage(connection, wanted)
            analyse_staging(connection)
            changes = connection.execute(
                text(
                    "SELECT count(*) FROM wanted_labels w LEFT JOIN catalogue.latest_labels l "
                    "ON l.image_id = w.image_id AND l.attribute = w.attribute "
                    "WHERE l.value IS DISTINCT FROM w.value"
                )
            ).scalar_one()
            report.unchanged = len(wanted) - changes
            report.written = 0
            connection.rollback()
            return None
        job_id = start_job(
            connection=connection,
            kind=kind,
            who=who,
            arguments={"file": name, "rows": report.rows, "refused": len(report.refused)},
        )
        stage(connection, wanted)
        return write_staged(connection=connection, job_id=job_id)

    outcome = label_transaction(engine, apply)
    if outcome is None:
        return report
    job_id = outcome.job_id
    report.job_id, report.written, report.unchanged = job_id, outcome.written, outcome.unchanged
    report.stale = [
        RefusedRow(
            w.line or 0,
            f"skipped: its {w.attribute} label changed after the export (label "
            f"{w.expected_label_id or 'none'} is no longer the current one); export again",
        )
        for w in outcome.stale
    ]
    report.applied = True
    return report


def _read_bytes(source: Path | str | IO[bytes]) -> bytes:
    if isinstance(source, Path | str):
        path = Path(source)
        if not path.is_file():
            raise LabelFileError(f"label file {path} does not exist")
        if path.stat().st_size > MAX_FILE_BYTES:
            raise LabelFileError(
                f"label file {path} is {path.stat().st_size:,} bytes, over the "
                f"{MAX_FILE_BYTES:,}-byte limit: split it"
            )
        return path.read_bytes()
    return source.read()


def _parse(content: str, taxonomy: Taxonomy, report: ImportReport, name: str) -> list[_Row]:
    reader = csv.reader(io.StringIO(content, newline=""), strict=True)
    try:
        header = next(reader)
    except StopIteration:
        raise LabelFileError(
            f"{name} is empty: expected the header {','.join(header_for(taxonomy))}"
        ) from None
    except csv.Error as exc:
        raise LabelFileError(f"{name}: the header line is not valid CSV ({exc})") from None
    header = [h.strip().lstrip("\ufeff") for h in header]
    # an empty cell (a spreadsheet's trailing comma) is an unknown column, said below
    if not all(_COLUMN_NAME.match(h) for h in header if h):
        raise LabelFileError(
            f"{name} is not a label CSV: its first line, {_masked_excerpt(content)}, is not a "
            f"header of column names; a label CSV starts with {','.join(header_for(taxonomy))}"
        )
    attributes = list(taxonomy.attributes)
    known = set(header_for(taxonomy)) | set(REVIEW_COLUMNS)
    known |= {f"{a}_suggestions" for a in attributes}
    unknown = [h for h in header if h not in known]
    if unknown:
        raise LabelFileError(
            f"{name}: unknown column(s) {', '.join(repr(u) for u in unknown)}; the columns are "
            f"{', '.join(header_for(taxonomy))} (attributes come from the taxonomy: "
            "`catalogue taxonomy show`)"
        )
    missing = [c for c in KEY_COLUMNS if c not in header]
    if missing:
        raise LabelFileError(f"{name}: missing column(s) {', '.join(missing)}")
    if len(set(header)) != len(header):
        raise LabelFileError(f"{name}: a column appears twice in the header")
    if not any(a in header for a in attributes):
        raise LabelFileError(f"{name}: no attribute column ({', '.join(attributes)})")
    index = {column: i for i, column in enumerate(header)}

    rows: list[_Row] = []
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            report.refused.append(RefusedRow(reader.line_num, f"malformed CSV: {exc}"))
            continue
        line = reader.line_num
        if not any(c.strip() for c in cells):
            continue  # blank line
        if len(cells) != len(header):
            report.refused.append(
                RefusedRow(
                    line, f"malformed row: {len(cells)} fields, the header has {len(header)}"
                )
            )
            continue

        def cell(column: str, cells: list[str] = cells) -> str:
            return _restore(cells[index[column]].strip()) if column in index else ""

        shortcode, position = cell("shortcode"), cell("position")
        if not shortcode:
            report.refused.append(RefusedRow(line, "empty shortcode"))
            continue
        try:
            position_number = int(position)
            if not 0 <= position_number <= MAX_POSITION:
                raise ValueError
        except ValueError:
            report.refused.append(
                RefusedRow(
                    line,
                    f"position '{_short(position)}' is not a whole number from 0 to "
                    f"{MAX_POSITION} (the picture's index in its post)",
                )
            )
            continue
        values, expected, problems = {}, {}, []
        for attribute in attributes:
            raw = cell(attribute)
            if raw:
                try:
                    values[attribute] = taxonomy.attributes[attribute].canonical(raw)
                except UnknownValue as exc:
                    problems.append(f"unknown value: {exc}")
            label_id = cell(f"{attribute}_label_id")
            if f"{attribute}_label_id" in index:
                try:
                    expected[attribute] = int(label_id) if label_id else 0
                    if not 0 <= expected[attribute] <= MAX_LABEL_ID:
                        raise ValueError
                except ValueError:
                    problems.append(
                        f"{attribute}_label_id '{_short(label_id)}' is not a label id "
                        "(leave it as exported, or empty)"
                    )
        if problems:
            report.refused.append(RefusedRow(line, "; ".join(problems)))
            continue
        rows.append(
            _Row(line, shortcode, position_number, values, expected,
                 cell("moderator") or None, cell("note") or None)
        )  # fmt: skip
    return rows


def _short(cell: str, limit: int = 40) -> str:
    return cell if len(cell) <= limit else cell[:limit] + "..."


def _masked_excerpt(content: str) -> str:
    """The first line's start, enough to recognise the file, never a value: `NAME=***`."""
    first = content.lstrip("\ufeff").split("\n", 1)[0]
    key = re.match(r"[A-Za-z_][A-Za-z0-9_.-]{0,23}(?=\s*[=:])", first)
    return f"'{key.group()}=***'" if key else f"'{first[:3]}***'"


def _image_ids(connection, rows: list[_Row]) -> dict[tuple[str, int], int | None]:
    """(shortcode, position) -> image id; None for a known post without that position."""
    if not rows:
        return {}
    found = connection.execute(
        text(
            """
            SELECT k.shortcode, k.position, i.id AS image_id, p.id AS post_id
            FROM unnest(CAST(:shortcodes AS text[]), CAST(:positions AS integer[]))
                 AS k(shortcode, position)
            LEFT JOIN raw.posts p ON p.shortcode = k.shortcode
            LEFT JOIN raw.images i ON i.post_id = p.id AND i.position = k.position
                                   AND i.removed_at IS NULL
            """
        ),
        {"shortcodes": [r.shortcode for r in rows], "positions": [r.position for r in rows]},
    ).all()
    return {(r.shortcode, r.position): (r.image_id if r.post_id is not None else -1) for r in found}


def _wanted(rows: list[_Row], images: dict, report: ImportReport) -> list[WantedLabel]:
    by_key: dict[tuple[int, str], list[tuple[_Row, str]]] = {}
    for row in rows:
        image_id = images.get((row.shortcode, row.position))
        if image_id == -1:
            report.refused.append(
                RefusedRow(row.line, f"unknown shortcode '{row.shortcode}' (no collected post)")
            )
            continue
        if image_id is None:
            report.refused.append(
                RefusedRow(
                    row.line, f"post '{row.shortcode}' has no image at position {row.position}"
                )
            )
            continue
        for attribute, value in row.values.items():
            by_key.setdefault((image_id, attribute), []).append((row, value))

    refused_lines: set[int] = set()
    for (_, attribute), claims in by_key.items():
        if len(claims) < 2:
            continue
        first = claims[0][0]
        if len({value for _, value in claims}) == 1:
            for row, _ in claims[1:]:
                report.refused.append(
                    RefusedRow(row.line, f"duplicate row: same {attribute} as line {first.line}")
                )
                refused_lines.add(row.line)
        else:
            lines = [row.line for row, _ in claims]
            for row, value in claims:
                others = ", ".join(str(n) for n in lines if n != row.line)
                report.refused.append(
                    RefusedRow(
                        row.line,
                        f"conflicting rows: {row.shortcode}/{row.position} {attribute} "
                        f"'{value}' here, something else on line {others}; keep one",
                    )
                )
                refused_lines.add(row.line)
    wanted = []
    for (image_id, attribute), claims in by_key.items():
        row, value = claims[0]
        if row.line in refused_lines:
            continue
        wanted.append(
            WantedLabel(image_id, attribute, value, row.moderator, row.note,
                        row.expected.get(attribute), row.line)
        )  # fmt: skip
    # A row with a refused attribute is refused whole: a partly applied row surprises people.
    return [w for w in wanted if w.line not in refused_lines]


# -- export ---------------------------------------------------------------------------------------
# the current labels (catalogue.current_labels' columns) of the pictures of account :account
ACCOUNT_LABELS = """(
    SELECT l.* FROM raw.post_images i
    CROSS JOIN catalogue.attributes at
    CROSS JOIN LATERAL (
        SELECT lb.id AS label_id, lb.image_id, lb.attribute, lb.value, lb.source, lb.moderator,
               lb.created_by, lb.note, lb.job_id, lb.created_at
        FROM catalogue.labels lb
        WHERE lb.image_id = i.id AND lb.attribute = at.name
        ORDER BY lb.id DESC LIMIT 1
    ) AS l
    WHERE i.account = :account AND l.value IS NOT NULL
) AS account_labels"""


def export_labels(
    out: IO[str],
    *,
    engine: Engine,
    account: str | None = None,
    attribute: str | None = None,
    value: str | None = None,
    since: date | None = None,
    until: date | None = None,
) -> int:
    """Write current labels, one row per image, optionally filtered; returns the rows written."""
    with engine.connect() as connection:
        taxonomy = taxonomy_from_database(connection)
        attributes = list(taxonomy.attributes)
        if value is not None:
            if attribute is None:
                raise LabelFileError("--value needs --attribute (which attribute has the value)")
            value = taxonomy.attribute(attribute).canonical(value)
        elif attribute is not None:
            taxonomy.attribute(attribute)
        # one account's labels are looked up picture by picture (its time stays that of the
        # account's size); the whole catalogue's are read from the view at once
        current = "catalogue.current_labels" if account is None else ACCOUNT_LABELS
        rows = connection.execute(
            text(
                f"""
                WITH labelled AS MATERIALIZED (SELECT * FROM {current}), chosen AS (
                    SELECT DISTINCT l.image_id FROM labelled l
                    JOIN raw.post_images i ON i.id = l.image_id
                    WHERE (CAST(:account AS text) IS NULL OR i.account = :account)
                      AND (CAST(:attribute AS text) IS NULL OR l.attribute = :attribute)
                      AND (CAST(:value AS text) IS NULL OR l.value = :value)
                      AND (CAST(:since AS date) IS NULL OR l.created_at >= :since)
                      AND (CAST(:until AS date) IS NULL OR l.created_at < CAST(:until AS date) + 1)
                )
                SELECT i.shortcode, i.position,
                       jsonb_object_agg(l.attribute, jsonb_build_array(l.value, l.label_id))
                           AS labels,
                       (array_agg(l.moderator ORDER BY l.label_id DESC))[1] AS moderator,
                       (array_agg(l.note ORDER BY l.label_id DESC))[1] AS note
                FROM chosen c
                JOIN raw.post_images i ON i.id = c.image_id
                JOIN labelled l ON l.image_id = c.image_id
                GROUP BY i.shortcode, i.position
                ORDER BY i.shortcode, i.position
                """
            ),
            {"account": account, "attribute": attribute, "value": value, "since": since,
             "until": until},
        )  # fmt: skip
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(header_for(taxonomy))
        count = 0
        for row in rows:
            labels = row.labels
            writer.writerow(
                [
                    neutralise(row.shortcode),
                    row.position,
                    *(neutralise(labels.get(a, [None])[0]) for a in attributes),
                    neutralise(row.moderator),
                    neutralise(row.note),
                    *(labels.get(a, [None, ""])[1] or "" for a in attributes),
                ]
            )
            count += 1
    return count


def format_report(report: ImportReport, *, limit: int = 50) -> Iterable[str]:
    if report.applied:
        outcome = (
            f"applied: {report.written} changed, {report.unchanged} unchanged, "
            f"{len(report.stale)} skipped as changed since export"
        )
    else:  # a dry run, or --strict with a refused row: the valid labels were compared, not written
        outcome = (
            f"nothing written: {report.labels_wanted - report.unchanged} would change, "
            f"{report.unchanged} unchanged"
        )
    yield (
        f"{report.rows} rows: {len(report.refused)} refused, {report.labels_wanted} labels valid; "
        + outcome
        + (f" (job {report.job_id})" if report.job_id else "")
    )
    for row in [*report.refused, *report.stale][:limit]:
        yield f"  line {row.line}: {row.reason}"
    hidden = len(report.refused) + len(report.stale) - limit
    if hidden > 0:
        yield f"  ... and {hidden} more"
