"""The model registry: versions per attribute in `catalogue.model_versions`, artefacts in the
models bucket, and the gate a candidate passes to become champion.

A training run writes one artefact (a network with a head per attribute) registered as one version
per attribute. At most one version per attribute is champion (a unique index holds it). Promotion
is recorded with who and when; rollback gives the title back to the previous champion.
"""

from __future__ import annotations

import json
import secrets
import shutil
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import Engine, text

from pipeline.artefacts import (
    ARTEFACT,
    METADATA,
    fetch_artefact,
    load_artefact,
    predict_probabilities,
)
from pipeline.config import Settings, configured, setting
from pipeline.storage import ObjectStore
from pipeline.train.errors import RegistryError
from pipeline.train.fit import TrainedModel


@dataclass(frozen=True)
class GateOptions:
    margin: float = setting("promotion_margin")  # accuracy to gain on the classes both know
    max_class_drop: float = setting("promotion_max_class_drop")  # recall a class may lose
    min_support: int = 20  # test pictures a class needs for its recall to count
    # a class's fall holds the candidate back only when a paired test on that class's pictures
    # says it is unlikely to be chance (one-sided exact McNemar p below this)
    significance: float = setting("promotion_significance")

    @classmethod
    def from_settings(cls, settings: Settings, **choices: Any) -> GateOptions:
        """The configured promotion gate, with this run's choices (None: the setting)."""
        return configured(cls, settings, choices)


def paired_p_value(worse: int, better: int) -> float:
    """One-sided exact McNemar test on the same pictures: the chance of at least `worse`
    pictures going from right to wrong, among the `worse + better` the two models disagree on,
    if neither model were better (each such picture a fair coin)."""
    n = worse + better
    if worse == 0:
        return 1.0
    from math import comb

    tail = sum(comb(n, k) for k in range(worse, n + 1))
    return min(1.0, tail / 2**n)


@dataclass(frozen=True)
class Decision:
    version: str
    promoted: bool
    reason: str
    details: dict[str, Any]


def register(
    *, engine: Engine, store: ObjectStore, trained: TrainedModel, snapshot_id: int,
    created_by: str | None = None, params: dict[str, Any] | None = None,
) -> list[str]:  # fmt: skip
    """Upload the artefact folder and record one candidate version per attribute."""
    run = f"{datetime.now(UTC):%Y%m%dT%H%M%S}-{secrets.token_hex(3)}"
    prefix = f"models/{run}"
    for path in sorted(trained.folder.iterdir()):
        if path.is_file():
            kind = {".json": "application/json", ".md": "text/markdown", ".png": "image/png"}
            with path.open("rb") as handle:
                store.put(f"{prefix}/{path.name}", handle, length=path.stat().st_size,
                          content_type=kind.get(path.suffix, "application/octet-stream"))  # fmt: skip
    metadata = json.loads((trained.folder / METADATA).read_text())
    versions = []
    with engine.begin() as connection:
        for attribute in trained.attributes:
            number = connection.execute(
                text("SELECT count(*) + 1 FROM catalogue.model_versions WHERE attribute = :a"),
                {"a": attribute},
            ).scalar_one()
            version = f"{attribute}-{number:04d}"
            connection.execute(
                text(
                    """
                    INSERT INTO catalogue.model_versions (attribute, version, run, artefact_key,
                        architecture, snapshot_id, backend, classes, image_size, metrics, params,
                        status, created_by)
                    VALUES (:attribute, :version, :run, :key, :architecture, :snapshot,
                            :backend, CAST(:classes AS jsonb), :image_size,
                            CAST(:metrics AS jsonb), CAST(:params AS jsonb), 'candidate',
                            COALESCE(:who, session_user))
                    """
                ),
                {
                    "attribute": attribute,
                    "version": version,
                    "run": run,
                    "key": f"{prefix}/{ARTEFACT}",
                    "architecture": metadata["architecture"],
                    "snapshot": snapshot_id,
                    "backend": metadata["backend"],
                    "classes": json.dumps(trained.classes[attribute]),
                    "image_size": metadata["image_size"],
                    "metrics": json.dumps(trained.metrics[attribute]),
                    "params": json.dumps(
                        {
                            **(params or {}),
                            "epochs": metadata["epochs"],
                            "seconds": metadata["seconds"],
                            "images_per_s": metadata["images_per_s"],
                        }
                    ),
                    "who": created_by,
                },
            )
            versions.append(version)
    return versions


def register_folder(
    *, engine: Engine, store: ObjectStore, folder: Path, created_by: str | None = None
) -> list[str]:
    """Register an artefact folder trained elsewhere (`catalogue train --from-export`)."""
    metadata_path = folder / METADATA
    if not metadata_path.exists() or not (folder / ARTEFACT).exists():
        raise RegistryError(f"{folder} holds no trained model ({ARTEFACT} and {METADATA})")
    metadata = json.loads(metadata_path.read_text())
    with engine.connect() as connection:
        snapshot_id = connection.execute(
            text("SELECT id FROM catalogue.dataset_snapshots WHERE checksum = :c"),
            {"c": metadata["snapshot"]},
        ).scalar()
    if snapshot_id is None:
        raise RegistryError(
            f"the model in {folder} was trained on snapshot {metadata['snapshot'][:12]}, which "
            "this database does not hold: register it where the export was made"
        )
    trained = TrainedModel(
        folder=folder, attributes=metadata["attributes"], classes=metadata["classes"],
        metrics=metadata["metrics"], backend=metadata["backend"], seconds=metadata["seconds"],
        images_per_s=metadata["images_per_s"],
    )  # fmt: skip
    return register(engine=engine, store=store, trained=trained, snapshot_id=snapshot_id,
                    created_by=created_by, params={"trained_from": "export"})  # fmt: skip


def version_row(engine: Engine, version: str):
    with engine.connect() as connection:
        row = connection.execute(
            text("SELECT * FROM catalogue.model_versions WHERE version = :v"), {"v": version}
        ).first()
    if row is None:
        raise RegistryError(f"no model version '{version}' (see `catalogue models list`)")
    return row


def champion(engine: Engine, attribute: str):
    with engine.connect() as connection:
        return connection.execute(
            text(
                "SELECT * FROM catalogue.model_versions "
                "WHERE attribute = :a AND status = 'champion'"
            ),
            {"a": attribute},
        ).first()


def promote_if_better(
    *, engine: Engine, store: ObjectStore, version: str, cache_dir: Path, picture_cache,
    options: GateOptions = GateOptions(), decided_by: str | None = None,
) -> Decision:  # fmt: skip
    """Promote `version` when it beats the champion on its own snapshot's test split."""
    from pipeline.train.inputs import decode_all
    from pipeline.train.snapshot import load_snapshot

    candidate = version_row(engine, version)
    if candidate.status != "candidate":
        raise RegistryError(f"{version} is {candidate.status}, not a candidate")
    current = champion(engine, candidate.attribute)
    if current is None:
        details = {"champion": None}
        decision = Decision(version, True, "first model of this attribute", details)
    else:
        snapshot = load_snapshot(engine=engine, store=store, snapshot_id=candidate.snapshot_id)
        attribute = candidate.attribute
        test = [i for i in snapshot.items("test") if attribute in i["labels"]]
        truth = [i["labels"][attribute] for i in test]
        results = {}
        for row in (candidate, current):
            folder = fetch_artefact(store, row.artefact_key, cache_dir / row.run)
            model, metadata = load_artefact(folder)
            size = tuple(metadata["image_size"])
            decoded = decode_all(test, cache=picture_cache, image_size=size)
            pictures = np.stack([decoded[i["key"]] for i in test])
            probabilities = predict_probabilities(model, pictures, metadata["attributes"])
            results[row.version] = (probabilities[attribute], metadata["classes"][attribute])
        decision = gate_verdict(
            version, truth, candidate=results[candidate.version],
            champion=(current.version, *results[current.version]), options=options,
        )  # fmt: skip
    with engine.begin() as connection:
        if decision.promoted:
            _make_champion(connection, candidate, decided_by, decision.reason)
        connection.execute(
            text(
                "UPDATE catalogue.model_versions SET status_reason = :reason, "
                "gate = CAST(:gate AS jsonb) WHERE id = :id"
            ),
            {"reason": decision.reason, "gate": json.dumps(decision.details), "id": candidate.id},
        )
    return decision


def gate_verdict(
    version: str, truth: list[str], *, candidate: tuple, champion: tuple, options: GateOptions,
) -> Decision:  # fmt: skip
    """Does the candidate beat the champion on the same test pictures?

    `candidate` is (probabilities, classes), `champion` is (version, probabilities, classes).
    Compared on the classes both know: the candidate must gain `margin` accuracy, and no class
    with `min_support` test pictures may lose more than `max_class_drop` recall where a paired
    test on that class's pictures says the fall is unlikely to be noise (p below
    `significance`). The overall comparison carries its paired test's p-values both ways.
    """
    champion_version, champion_p, champion_classes = champion
    candidate_p, candidate_classes = candidate
    known = set(candidate_classes) & set(champion_classes)
    compared = [i for i, label in enumerate(truth) if label in known]
    labels = np.array([truth[i] for i in compared], dtype=object)
    ours = _right(candidate_p[compared], candidate_classes, labels)
    theirs = _right(champion_p[compared], champion_classes, labels)
    accuracy = (float(ours.mean()), float(theirs.mean())) if compared else (0.0, 0.0)
    drops, noise = {}, {}
    for name in sorted(known):
        rows = labels == name
        support = int(rows.sum())
        if support < options.min_support:
            continue
        before, after = float(theirs[rows].mean()), float(ours[rows].mean())
        if before - after <= options.max_class_drop:
            continue
        p_value = paired_p_value(
            int((theirs & ~ours)[rows].sum()), int((ours & ~theirs)[rows].sum())
        )
        fall = {"champion": round(before, 4), "candidate": round(after, 4), "support": support,
                "p_value": round(p_value, 4)}  # fmt: skip
        (drops if p_value < options.significance else noise)[name] = fall
    gain = accuracy[0] - accuracy[1]
    worse, better = int((theirs & ~ours).sum()), int((ours & ~theirs).sum())
    details = {
        "champion": champion_version,
        "test_images": len(truth),
        "images_compared": len(compared),
        "classes_compared": len(known),
        "accuracy": {version: round(accuracy[0], 4), champion_version: round(accuracy[1], 4)},
        "gain": round(gain, 4),
        # the pictures the two disagree on, and the paired test's chance of such a split
        "paired": {
            "candidate_right_only": better,
            "champion_right_only": worse,
            "p_better": round(paired_p_value(better, worse), 4),
            "p_worse": round(paired_p_value(worse, better), 4),
        },
        "class_drops": drops,
        "class_drops_within_noise": noise,
        "options": options.__dict__,
    }
    if drops:
        worst = max(drops, key=lambda n: drops[n]["champion"] - drops[n]["candidate"])
        reason = (
            f"class '{worst}' recall fell from {drops[worst]['champion']:.3f} to "
            f"{drops[worst]['candidate']:.3f} on {drops[worst]['support']} pictures (more than "
            f"{options.max_class_drop}; paired test p={drops[worst]['p_value']:.3f})"
        )
        return Decision(version, False, reason, details)
    tested = f"paired test p={details['paired']['p_better']:.3f}"
    if gain < options.margin:
        reason = (
            f"accuracy {accuracy[0]:.4f} vs champion {champion_version} {accuracy[1]:.4f}: gain "
            f"{gain:+.4f} below the margin {options.margin} ({tested})"
        )
        return Decision(version, False, reason, details)
    reason = (
        f"accuracy {accuracy[0]:.4f} beats {champion_version} {accuracy[1]:.4f} by {gain:+.4f} "
        f"on {len(compared)} test pictures ({tested})"
    )
    if noise:
        reason += "; " + ", ".join(
            f"'{n}' {f['champion']:.2f}->{f['candidate']:.2f} on {f['support']} within noise "
            f"(p={f['p_value']:.2f})"
            for n, f in noise.items()
        )
    return Decision(version, True, reason, details)


def _right(probabilities: np.ndarray, classes: list[str], labels: np.ndarray) -> np.ndarray:
    """Whether each answer (the most probable class) is the true label."""
    if not len(labels):
        return np.zeros(0, dtype=bool)
    answers = np.asarray(classes, dtype=object)[probabilities.argmax(axis=1)]
    return answers == labels


def _make_champion(connection, row, who: str | None, reason: str) -> None:
    connection.execute(
        text(
            "UPDATE catalogue.model_versions SET status = 'retired', "
            "status_reason = 'replaced by ' || :version, retired_at = now() "
            "WHERE attribute = :a AND status = 'champion'"
        ),
        {"a": row.attribute, "version": row.version},
    )
    connection.execute(
        text(
            "UPDATE catalogue.model_versions SET status = 'champion', promoted_at = now(), "
            "promoted_by = COALESCE(:who, session_user), status_reason = :reason, "
            "retired_at = NULL WHERE id = :id"
        ),
        {"id": row.id, "who": who, "reason": reason},
    )
    # what this version scored before (a rollback) is shown again at once, without rescoring
    connection.execute(
        text("SELECT catalogue.adopt_champion_predictions(:a)"), {"a": row.attribute}
    )


def promote(*, engine: Engine, version: str, who: str | None = None) -> None:
    """Make `version` champion by hand (recorded as such), whatever the gate said."""
    row = version_row(engine, version)
    if row.status == "champion":
        raise RegistryError(f"{version} is already the {row.attribute} champion")
    with engine.begin() as connection:
        _make_champion(connection, row, who, "promoted by hand")


def rollback(*, engine: Engine, attribute: str, who: str | None = None) -> tuple[str, str]:
    """Retire the champion and give the title back to the one before it."""
    with engine.begin() as connection:
        rows = connection.execute(
            text(
                "SELECT * FROM catalogue.model_versions WHERE attribute = :a "
                "AND promoted_at IS NOT NULL AND (status = 'champion' OR "
                "status_reason IS NULL OR status_reason NOT LIKE 'rolled back%') "
                "ORDER BY promoted_at DESC, id DESC"
            ),
            {"a": attribute},
        ).all()
        if not rows or rows[0].status != "champion":
            raise RegistryError(f"no {attribute} champion to roll back")
        if len(rows) < 2:
            raise RegistryError(
                f"no earlier {attribute} champion to roll back to from {rows[0].version} "
                "(versions that were rolled back do not count)"
            )
        current, previous = rows[0], rows[1]
        connection.execute(
            text(
                "UPDATE catalogue.model_versions SET status = 'retired', retired_at = now(), "
                "status_reason = 'rolled back by ' || COALESCE(:who, session_user) "
                "WHERE id = :id"
            ),
            {"id": current.id, "who": who},
        )
        _make_champion(connection, previous, who, f"rollback from {current.version}")
    return current.version, previous.version


def list_versions(*, engine: Engine, attribute: str | None = None) -> list[Any]:
    with engine.connect() as connection:
        return connection.execute(
            text(
                """
                SELECT v.version, v.attribute, v.status, v.architecture, v.backend,
                       v.metrics->>'accuracy' AS accuracy, v.metrics->>'macro_f1' AS macro_f1,
                       v.snapshot_id, v.created_at, v.promoted_at, v.promoted_by, v.status_reason
                FROM catalogue.model_versions v
                WHERE CAST(:a AS text) IS NULL OR v.attribute = :a
                ORDER BY v.attribute, v.id
                """
            ),
            {"a": attribute},
        ).all()


def scratch_folder() -> Path:
    return Path(tempfile.mkdtemp(prefix="catalogue-train-"))


def remove_folder(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)
