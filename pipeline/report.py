"""What the catalogue holds, for people: `catalogue report` and the end of the demo.

Counts (accounts, posts, pictures, the labelled share), where each shown value comes from
(moderator, model, none yet), the pictures that need review, the champions with the test metrics
the model registry holds for them, the pictures predict could not score; beside each champion, the
seed baselines as the training benchmark measured them (`bench/results/training.json`, where the
repository is at hand). `held_out_accuracy` measures the predictions against true labels kept
aside (the demo keeps part of the data set's labels away from the moderators, as if nobody had
labelled those pictures yet).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, text

from pipeline.config import REPO_ROOT
from pipeline.similar import EMBEDDING_ATTRIBUTE

# The seed studies' compact CNN, trained by bench/training.py with the product's code on the same
# snapshots as the catalogue's networks; its entries in the benchmark's results are the baselines.
TRAINING_RESULTS = REPO_ROOT / "bench" / "results" / "training.json"
SEED_NETWORK = "compact_80x60"


@dataclass(frozen=True)
class SeedBaseline:
    """The seed network's test accuracy on one protocol of the training benchmark."""

    attribute: str
    level: str  # the taxonomy level its classes are at
    classes: int
    accuracy: float
    study: float | None = None  # what the seed study itself reported on the protocol


def seed_baselines(results: Path = TRAINING_RESULTS) -> dict[str, list[SeedBaseline]]:
    """attribute -> the seed network's results in the training benchmark's file, fewest classes
    first; none where the file is not at hand (an installation without the repository)."""
    found: dict[str, list[SeedBaseline]] = {}
    try:
        for entry in json.loads(results.read_text(encoding="utf-8"))["entries"].values():
            if entry.get("network") == SEED_NETWORK and entry.get("accuracy") is not None:
                found.setdefault(entry["attribute"], []).append(
                    SeedBaseline(
                        attribute=entry["attribute"],
                        level=entry["level"],
                        classes=entry["classes"],
                        accuracy=entry["accuracy"],
                        study=entry.get("seed_result"),
                    )
                )
    except (OSError, ValueError, LookupError, TypeError, AttributeError):
        return {}  # no results file at hand, or not one the training benchmark wrote
    return {attribute: sorted(found[attribute], key=lambda b: b.classes) for attribute in found}


@dataclass
class CatalogueReport:
    accounts: int
    posts: int
    images: int
    labelled: int  # pictures with at least one current moderator label
    products: int
    needs_review: int
    sources: dict[str, dict[str, int]]  # attribute -> {moderator, model, none} -> pictures
    champions: list[dict[str, Any]] = field(default_factory=list)
    unscorable: dict[str, int] = field(default_factory=dict)
    seed_baselines: dict[str, list[SeedBaseline]] = field(default_factory=dict)
    # the similar-items search: the embedding version, the live pictures it embedded, and the
    # duplicate groups with the listings and accounts they hold
    similar: dict[str, Any] = field(default_factory=dict)

    @property
    def labelled_share(self) -> float:
        return self.labelled / self.images if self.images else 0.0


def catalogue_report(
    *, engine: Engine, training_results: Path = TRAINING_RESULTS
) -> CatalogueReport:
    with engine.connect() as connection:
        counts = connection.execute(
            text(
                """
                SELECT (SELECT count(*) FROM raw.accounts) AS accounts,
                       (SELECT count(*) FROM raw.posts WHERE unavailable_since IS NULL) AS posts,
                       (SELECT count(*) FROM raw.live_images) AS images,
                       (SELECT count(DISTINCT image_id) FROM catalogue.current_labels) AS labelled,
                       (SELECT count(*) FROM marketplace.products) AS products,
                       (SELECT count(*) FROM marketplace.products WHERE needs_review)
                           AS needs_review
                """
            )
        ).one()
        sources: dict[str, dict[str, int]] = {}
        for attribute in ("colour", "category"):
            rows = connection.execute(
                text(
                    f"SELECT COALESCE({attribute}_source, 'none') AS source, count(*) "
                    f"FROM marketplace.products GROUP BY 1"
                )
            ).all()
            sources[attribute] = {"moderator": 0, "model": 0, "none": 0} | dict(rows)
        champions = connection.execute(
            text(
                "SELECT version, attribute, architecture, backend, snapshot_id, metrics, "
                "promoted_at FROM catalogue.model_versions WHERE status = 'champion' "
                "ORDER BY attribute"
            )
        ).all()
        unscorable = dict(
            connection.execute(
                text("SELECT kind, count(*) FROM catalogue.unscorable_images GROUP BY kind")
            ).all()
        )
        similar = connection.execute(
            text(
                """
                SELECT v.version,
                       (SELECT count(*) FROM catalogue.image_embeddings e
                        JOIN raw.live_images i ON i.id = e.image_id
                        WHERE e.model_version_id = v.id) AS embedded,
                       (SELECT count(*) FROM marketplace.duplicate_listings) AS groups,
                       (SELECT COALESCE(sum(listings), 0) FROM marketplace.duplicate_listings)
                           AS listings,
                       (SELECT count(DISTINCT account) FROM marketplace.products
                        WHERE duplicate_group IS NOT NULL) AS accounts
                FROM catalogue.model_versions v
                WHERE v.status = 'champion' AND v.attribute = :attribute
                """
            ),
            {"attribute": EMBEDDING_ATTRIBUTE},
        ).one_or_none()
    return CatalogueReport(
        accounts=counts.accounts, posts=counts.posts, images=counts.images,
        labelled=counts.labelled, products=counts.products, needs_review=counts.needs_review,
        sources=sources,
        champions=[
            {"version": c.version, "attribute": c.attribute, "architecture": c.architecture,
             "backend": c.backend, "snapshot_id": c.snapshot_id, **_metrics(c.metrics)}
            for c in champions
        ],
        unscorable=unscorable,
        seed_baselines=seed_baselines(training_results),
        similar=dict(similar._mapping) if similar else {},
    )  # fmt: skip


def _metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    keys = ("accuracy", "macro_f1", "top2_accuracy", "majority_accuracy", "random_accuracy",
            "test_images")  # fmt: skip
    found = {k: metrics.get(k) for k in keys}
    found["classes"] = len(metrics.get("classes") or [])
    found["automation"] = metrics.get("automation")
    return found


def report_lines(report: CatalogueReport) -> list[str]:
    lines = [
        f"catalogue: {report.accounts:,} accounts, {report.posts:,} posts, {report.images:,} "
        f"pictures; {report.labelled:,} labelled by moderators ({report.labelled_share:.0%})",
        f"marketplace.products: {report.products:,} rows; {report.needs_review:,} need review "
        "(`catalogue review`)",
    ]
    for attribute, sources in report.sources.items():
        lines.append(
            f"  {attribute:<9} from moderators {sources['moderator']:,}, from the model "
            f"{sources['model']:,}, none yet {sources['none']:,}"
        )
    if not report.champions:
        lines.append("no champion models yet: `catalogue train`")
    for c in report.champions:
        if c["accuracy"] is None:
            lines.append(f"champion {c['version']} ({c['architecture']}): no test metrics")
            continue
        lines.append(
            f"champion {c['version']} ({c['architecture']}, {c['backend']}, snapshot "
            f"{c['snapshot_id']}): test accuracy {c['accuracy']:.3f}, macro-F1 "
            f"{c['macro_f1']:.3f}, top-2 {c['top2_accuracy']:.3f} on {c['test_images']} test "
            f"pictures, {c['classes']} classes (majority class {c['majority_accuracy']:.3f}, "
            f"random {c['random_accuracy']:.3f})"
        )
        automation = c.get("automation")
        if automation and automation["threshold"] is None:
            lines.append(
                f"    automation: none; every answer is reviewed (no confidence reached precision "
                f"{automation['target_precision']:.2f} on its validation pictures)"
            )
        elif automation:
            precision = automation["precision"]
            lines.append(
                f"    automation: confidence >= {automation['threshold']:.3f} is filled in "
                f"without review: coverage {automation['coverage']:.3f} of its test pictures at "
                + (f"precision {precision:.3f}" if precision is not None else "no precision yet")
                + f" (target {automation['target_precision']:.2f})"
            )
        if baselines := report.seed_baselines.get(c["attribute"]):
            lines.append(
                "    next to the seed compact CNN in the training benchmark (the shared product "
                "photos): "
                + ", ".join(
                    f"{b.accuracy:.3f} on {b.classes} {b.level}-level classes"
                    + (f" ({b.study:.3f} in its study)" if b.study is not None else "")
                    for b in baselines
                )
            )
    if report.champions and not report.seed_baselines:
        lines.append(
            "no seed baseline to compare with: bench/results/training.json (written by "
            "bench/training.py) is not in this installation or has no compact_80x60 entries"
        )
    if similar := report.similar:
        lines.append(
            f"similar items: {similar['embedded']:,} of {report.images:,} pictures embedded by "
            f"{similar['version']} (`catalogue similar`); {similar['groups']:,} duplicate groups "
            f"hold {similar['listings']:,} listings from {similar['accounts']:,} accounts "
            "(`catalogue duplicates`)"
        )
    if report.unscorable:
        lines.append(
            "pictures predict could not score: "
            + ", ".join(f"{n} {kind}" for kind, n in sorted(report.unscorable.items()))
            + " (catalogue.unscorable_images)"
        )
    return lines


@dataclass
class HeldOutAccuracy:
    attribute: str
    pictures: int = 0  # held-out pictures with a model value and a true value in the taxonomy
    correct: int = 0
    known: int = 0  # ... whose true class the model learnt
    correct_known: int = 0

    @property
    def accuracy(self) -> float:
        return self.correct / self.pictures if self.pictures else 0.0

    @property
    def accuracy_on_known(self) -> float:
        return self.correct_known / self.known if self.known else 0.0


def held_out_accuracy(*, engine: Engine, labels_csv: Path) -> list[HeldOutAccuracy]:
    """The shown model values of the pictures in `labels_csv` (a label CSV nobody imported)
    against its values, each taken to the model's training level."""
    from pipeline.labels.taxonomy import UnknownValue, taxonomy_from_database

    with labels_csv.open(newline="", encoding="utf-8") as handle:
        truth = list(csv.DictReader(handle))
    with engine.connect() as connection:
        taxonomy = taxonomy_from_database(connection)
        shown = {
            (r.shortcode, r.position): r
            for r in connection.execute(
                text(
                    "SELECT shortcode, position, colour, colour_source, category, "
                    "category_source FROM marketplace.products"
                )
            )
        }
        learnt = {
            attribute: set(classes)
            for attribute, classes in connection.execute(
                text(
                    "SELECT attribute, classes FROM catalogue.model_versions "
                    "WHERE status = 'champion'"
                )
            )
        }
    results = []
    for attribute in ("colour", "category"):
        result = HeldOutAccuracy(attribute)
        spec = taxonomy.attribute(attribute)
        for row in truth:
            product = shown.get((row["shortcode"], int(row["position"])))
            if not row.get(attribute) or product is None:
                continue
            if getattr(product, f"{attribute}_source") != "model":
                continue
            try:
                expected = spec.training_class(spec.canonical(row[attribute]))
            except UnknownValue:
                continue
            hit = getattr(product, attribute) == expected
            result.pictures += 1
            result.correct += hit
            if expected in learnt.get(attribute, ()):
                result.known += 1
                result.correct_known += hit
        results.append(result)
    return results


def statement_rows(*, engine: Engine, statement: str) -> Iterator[Sequence[Any]]:
    """One SQL statement an analyst wrote (`catalogue sql`): its column names, then each row as
    it comes; nothing for a statement that returns no rows. Nothing is committed."""
    with engine.connect() as connection:
        result = connection.execute(text(statement))
        if result.returns_rows:
            yield list(result.keys())
            yield from result
