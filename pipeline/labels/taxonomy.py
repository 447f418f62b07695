"""The taxonomy: attributes, their values and groupings, and the spellings that mean each value.

Colours and categories are data, not code: a YAML file (the shipped `default_taxonomy.yaml`, or
the operator's own via CATALOGUE_TAXONOMY_FILE) is validated here and synced into the `catalogue`
tables, where labels, training and prediction read it. A sync never deletes a value: one missing
from the new file is retired (its labels stay; new labels cannot use it).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, text

from pipeline.errors import CatalogueError

DEFAULT_TAXONOMY = Path(__file__).with_name("default_taxonomy.yaml")
_ATTRIBUTE_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
# CSV columns that are not attributes
RESERVED = {"shortcode", "position", "moderator", "note", "label_ids"}


class TaxonomyError(CatalogueError, ValueError):
    """The taxonomy file is not usable; the message names the file and the entry."""


class UnknownValue(CatalogueError, ValueError):
    """A value (or spelling) that no attribute value or alias matches."""


def value_key(value: str) -> str:
    """What spellings are compared on: case, spaces, hyphens and punctuation ignored."""
    return re.sub(r"[^0-9a-z]+", "", value.casefold())


@dataclass(frozen=True)
class Value:
    name: str
    path: tuple[str, ...]  # from the outermost group down to the value itself

    @property
    def depth(self) -> int:
        return len(self.path)


@dataclass
class Attribute:
    name: str
    levels: tuple[str, ...]
    train_at: str
    values: dict[str, Value] = field(default_factory=dict)  # by value name
    aliases: dict[str, str] = field(default_factory=dict)  # alias -> value name

    def canonical(self, spelling: str) -> str:
        """The value a spelling means (exact name, alias, or either ignoring case and marks)."""
        if spelling in self.values:
            return spelling
        found = self.keys.get(value_key(spelling))
        if found is None:
            raise UnknownValue(
                f"'{spelling}' is not a {self.name} of the taxonomy and no alias maps it"
            )
        return found

    def training_class(self, value: str) -> str:
        """The class a label trains as at `train_at`: its ancestor at that level, or itself when
        the value sits above the level (a label `Topwear` trains as `Topwear`)."""
        depth = self.levels.index(self.train_at) + 1
        path = self.values[value].path
        return path[depth - 1] if len(path) >= depth else value

    def training_classes(self) -> list[str]:
        return sorted({self.training_class(v) for v in self.values})

    @cached_property
    def keys(self) -> dict[str, str]:
        """Every spelling key (values and aliases) and the value it means."""
        keys = {value_key(alias): target for alias, target in self.aliases.items()}
        keys.update({value_key(name): name for name in self.values})
        return keys


@dataclass
class Taxonomy:
    name: str
    attributes: dict[str, Attribute]
    document: dict[str, Any]
    source: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(json.dumps(self.document, sort_keys=True).encode()).hexdigest()

    def attribute(self, name: str) -> Attribute:
        try:
            return self.attributes[name]
        except KeyError:
            raise UnknownValue(
                f"'{name}' is not an attribute of the taxonomy "
                f"(attributes: {', '.join(self.attributes)})"
            ) from None


def load_taxonomy(path: Path | str | None = None) -> Taxonomy:
    """Read and validate a taxonomy file (default: the shipped one)."""
    import yaml

    path = Path(path) if path else DEFAULT_TAXONOMY
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TaxonomyError(
            f"taxonomy file {path} does not exist: set CATALOGUE_TAXONOMY_FILE to your file, "
            "or unset it for the shipped default"
        ) from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise TaxonomyError(f"taxonomy file {path} is not valid YAML: {exc}") from None
    return parse_taxonomy(document, source=str(path))


def parse_taxonomy(document: Any, *, source: str = "<taxonomy>") -> Taxonomy:
    def fail(message: str) -> TaxonomyError:
        return TaxonomyError(f"taxonomy {source}: {message}")

    if not isinstance(document, dict) or not isinstance(document.get("attributes"), list):
        raise fail("expected a mapping with `name` and a list `attributes`")
    attributes: dict[str, Attribute] = {}
    for entry in document["attributes"]:
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise fail(f"every attribute needs a `name`: {entry!r}")
        name = entry["name"]
        if not _ATTRIBUTE_NAME.match(name) or name in RESERVED:
            raise fail(
                f"attribute name '{name}' must be lower-case letters, digits and _ and not one "
                f"of {', '.join(sorted(RESERVED))}"
            )
        if name in attributes:
            raise fail(f"attribute '{name}' is defined twice")
        levels = entry.get("levels") or [name]
        if not isinstance(levels, list) or not all(isinstance(x, str) for x in levels):
            raise fail(f"{name}: `levels` must be a list of names")
        train_at = entry.get("train_at", levels[-1])
        if train_at not in levels:
            raise fail(f"{name}: train_at '{train_at}' is not one of its levels {levels}")
        attribute = Attribute(name, tuple(levels), train_at)
        keys: dict[str, str] = {}
        for value in _walk(entry.get("values"), (), len(levels), name, fail):
            clash = keys.setdefault(value_key(value.name), value.name)
            if clash != value.name or value.name in attribute.values:
                raise fail(f"{name}: value '{value.name}' is defined twice (as '{clash}')")
            attribute.values[value.name] = value
        if not attribute.values:
            raise fail(f"{name}: no values")
        for alias, target in (entry.get("aliases") or {}).items():
            alias, target = str(alias), str(target)
            if target not in attribute.values:
                raise fail(f"{name}: alias '{alias}' maps to '{target}', which is not a value")
            existing = keys.setdefault(value_key(alias), target)
            if existing != target:
                raise fail(f"{name}: alias '{alias}' would also mean '{existing}'")
            attribute.aliases[alias] = target
        attributes[name] = attribute
    if not attributes:
        raise fail("no attributes")
    return Taxonomy(str(document.get("name") or "unnamed"), attributes, document, source)


def _walk(
    node: Any, path: tuple[str, ...], max_depth: int, attribute: str, fail
) -> Iterator[Value]:
    if node is None:
        return
    if len(path) >= max_depth:
        raise fail(f"{attribute}: '{' > '.join(path)}' is deeper than its levels allow")
    if isinstance(node, list):
        children = {item: None for item in node}
    elif isinstance(node, dict):
        children = node
    else:
        raise fail(
            f"{attribute}: values under '{' > '.join(path) or 'top'}' must be a list or a mapping"
        )
    for raw_name, child in children.items():
        if not isinstance(raw_name, str | int | float) or not str(raw_name).strip():
            raise fail(f"{attribute}: a value under '{' > '.join(path) or 'top'}' has no name")
        name = str(raw_name).strip()
        yield Value(name, (*path, name))
        yield from _walk(child, (*path, name), max_depth, attribute, fail)


# -- the database side ----------------------------------------------------------------------------
@dataclass(frozen=True)
class SyncOutcome:
    version_id: int
    created: bool
    values_added: int
    values_retired: int


def sync_taxonomy(*, connection: Connection, taxonomy: Taxonomy) -> SyncOutcome:
    """Make the `catalogue` taxonomy tables say what `taxonomy` says (idempotent)."""
    row = connection.execute(
        text(
            """
            WITH inserted AS (
                INSERT INTO catalogue.taxonomy_versions (checksum, name, document)
                VALUES (:checksum, :name, CAST(:document AS jsonb))
                ON CONFLICT (checksum) DO NOTHING RETURNING id
            )
            SELECT id, true AS created FROM inserted
            UNION ALL
            SELECT id, false FROM catalogue.taxonomy_versions WHERE checksum = :checksum
            LIMIT 1
            """
        ),
        {
            "checksum": taxonomy.checksum,
            "name": taxonomy.name,
            "document": json.dumps(taxonomy.document),
        },
    ).one()
    version_id = row.id
    connection.execute(
        text("UPDATE catalogue.attributes SET active = false WHERE NOT (name = ANY(:names))"),
        {"names": list(taxonomy.attributes)},
    )
    added = retired = 0
    for position, attribute in enumerate(taxonomy.attributes.values()):
        connection.execute(
            text(
                """
                INSERT INTO catalogue.attributes (name, levels, train_at, position, active,
                                                  taxonomy_version_id)
                VALUES (:name, :levels, :train_at, :position, true, :version)
                ON CONFLICT (name) DO UPDATE SET levels = EXCLUDED.levels,
                    train_at = EXCLUDED.train_at, position = EXCLUDED.position, active = true,
                    taxonomy_version_id = EXCLUDED.taxonomy_version_id
                """
            ),
            {
                "name": attribute.name,
                "levels": list(attribute.levels),
                "train_at": attribute.train_at,
                "position": position,
                "version": version_id,
            },
        )
        values = list(attribute.values.values())
        added += (
            connection.execute(
                text(
                    """
                INSERT INTO catalogue.attribute_values (attribute, value, path, parent, depth,
                                                        taxonomy_version_id)
                SELECT :attribute, v.value, v.path, v.path[cardinality(v.path) - 1],
                       cardinality(v.path), :version
                FROM jsonb_to_recordset(CAST(:values AS jsonb)) AS v(value text, path text[])
                ON CONFLICT (attribute, value) DO UPDATE SET path = EXCLUDED.path,
                    parent = EXCLUDED.parent, depth = EXCLUDED.depth, retired_at = NULL,
                    taxonomy_version_id = EXCLUDED.taxonomy_version_id
                WHERE catalogue.attribute_values.path IS DISTINCT FROM EXCLUDED.path
                   OR catalogue.attribute_values.retired_at IS NOT NULL
                RETURNING (xmax = 0) AS inserted
                """
                ),
                {
                    "attribute": attribute.name,
                    "version": version_id,
                    "values": json.dumps([{"value": v.name, "path": list(v.path)} for v in values]),
                },
            )
            .scalars()
            .all()
            .count(True)
        )
        retired += connection.execute(
            text(
                "UPDATE catalogue.attribute_values SET retired_at = now() "
                "WHERE attribute = :attribute AND retired_at IS NULL "
                "AND NOT (value = ANY(:values))"
            ),
            {"attribute": attribute.name, "values": [v.name for v in values]},
        ).rowcount
        connection.execute(
            text("DELETE FROM catalogue.value_aliases WHERE attribute = :attribute"),
            {"attribute": attribute.name},
        )
        keys = {value_key(alias): target for alias, target in attribute.aliases.items()}
        if keys:
            connection.execute(
                text(
                    "INSERT INTO catalogue.value_aliases (attribute, alias_key, value) "
                    "SELECT :attribute, k, v FROM unnest(CAST(:keys AS text[]), "
                    "CAST(:targets AS text[])) AS t(k, v)"
                ),
                {"attribute": attribute.name, "keys": list(keys), "targets": list(keys.values())},
            )
    return SyncOutcome(version_id, row.created, added, retired)


def taxonomy_from_database(connection: Connection) -> Taxonomy:
    """The taxonomy the database holds now (the last synced file's document)."""
    document = connection.execute(
        text(
            "SELECT v.document FROM catalogue.taxonomy_versions v "
            "JOIN catalogue.attributes a ON a.taxonomy_version_id = v.id "
            "ORDER BY v.id DESC LIMIT 1"
        )
    ).scalar()
    if document is None:
        raise TaxonomyError(
            "the database holds no taxonomy: run `catalogue db upgrade` (it syncs the default) "
            "or `catalogue taxonomy sync FILE`"
        )
    return parse_taxonomy(document, source="database")
