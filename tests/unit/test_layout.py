"""The layout tells the story: required folders, stages that never import Airflow."""

from __future__ import annotations

import ast
import re
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    "path",
    ["dags", "pipeline", "migrations", "docker-compose.yml", "pyproject.toml", "tests", "infra"],
)
def test_required_top_level_exists(path):
    assert (REPO / path).exists()


def test_pipeline_never_imports_airflow():
    offenders = []
    for source in (REPO / "pipeline").rglob("*.py"):
        for node in ast.walk(ast.parse(source.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [f"{source}: {n}" for n in names if n.split(".")[0] == "airflow"]
    assert offenders == []


def test_dag_files_import_nothing_heavy_at_module_level():
    heavy = {"tensorflow", "keras", "instaloader", "pandas", "pipeline"}
    for source in (REPO / "dags").glob("*.py"):
        tree = ast.parse(source.read_text())
        for node in tree.body:  # module level only; tasks import inside their functions
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            else:
                continue
            assert not {n.split(".")[0] for n in names} & heavy, f"{source}: {names}"


def _requirement_name(requirement: str) -> str:
    return re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def test_every_dependency_is_locked_in_constraints():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    requirements = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        requirements += extra
    locked = {
        line.split("==")[0].lower().replace("_", "-")
        for line in (REPO / "constraints.txt").read_text().splitlines()
        if "==" in line
    }
    missing = sorted({_requirement_name(r) for r in requirements} - locked)
    assert missing == []


@pytest.mark.parametrize(
    "name",
    [
        "apache-airflow",
        "instaloader",
        "sqlalchemy",
        "psycopg2-binary",
        "tensorflow",
        "pillow",
        "pandas",
        "minio",
        "alembic",
    ],
)
def test_required_packages_are_dependencies(name):
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert name in {_requirement_name(r) for r in project["dependencies"]}


def test_locked_versions_satisfy_the_declared_ranges():
    from packaging.requirements import Requirement

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    requirements = [Requirement(r) for r in project["dependencies"]]
    for extra in project["optional-dependencies"].values():
        requirements += [Requirement(r) for r in extra]
    locked = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        if "==" in line:
            name, version = line.split("==")
            locked[name.lower().replace("_", "-")] = version.strip()
    outside = [
        f"{r.name} {locked[r.name.lower()]} not in {r.specifier}"
        for r in requirements
        if not r.specifier.contains(locked[r.name.lower()], prereleases=True)
    ]
    assert outside == []


def test_every_error_a_user_can_meet_derives_from_catalogue_error():
    """One base, so the command line reports every one of them in one line and a caller can
    catch them all; interruptions (Ctrl-C) and private control flow (`_Name`) are not errors."""
    import importlib

    from pipeline.errors import CatalogueError

    offenders = []
    for source in [*(REPO / "pipeline").rglob("*.py"), *(REPO / "infra").rglob("*.py")]:
        module = ".".join(source.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")
        for node in ast.parse(source.read_text()).body:
            if not isinstance(node, ast.ClassDef) or node.name.startswith("_") or not node.bases:
                continue
            bases = {ast.unparse(base).rsplit(".", 1)[-1] for base in node.bases}
            if not any(
                re.search(r"(Error|Exception|Interrupt\w*|Refused|Busy)$", b) for b in bases
            ):
                continue
            found = getattr(importlib.import_module(module), node.name)
            if not issubclass(found, (CatalogueError, KeyboardInterrupt)):
                offenders.append(f"{module}.{node.name}")
    assert offenders == []


def _string_constants(source: Path) -> list[str]:
    return [
        node.value
        for node in ast.walk(ast.parse(source.read_text()))
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
    ]


def test_only_the_accounts_module_writes_accounts():
    """One owner for `raw.accounts` writes: the operator's commands, collection and archive
    import all register and update accounts through `pipeline/accounts.py`."""
    write = re.compile(r"\b(INSERT\s+INTO|UPDATE|DELETE\s+FROM)\s+raw\.accounts\b", re.IGNORECASE)
    writers = sorted(
        str(source.relative_to(REPO))
        for source in (REPO / "pipeline").rglob("*.py")
        if any(write.search(constant) for constant in _string_constants(source))
    )
    assert writers == ["pipeline/accounts.py"]


def test_accounts_module_imports_nothing_from_collect():
    """Collection uses accounts, never the other way round: no import cycle."""
    tree = ast.parse((REPO / "pipeline" / "accounts.py").read_text())
    imported = [
        name
        for node in ast.walk(tree)
        for name in (
            [alias.name for alias in node.names]
            if isinstance(node, ast.Import)
            else [node.module or ""]
            if isinstance(node, ast.ImportFrom)
            else []
        )
    ]
    assert [name for name in imported if name.startswith("pipeline.collect")] == []


SQL = re.compile(
    r"\b(SELECT\b.*\bFROM|INSERT\s+INTO|UPDATE\s+[\w.]+\s+SET|DELETE\s+FROM|TRUNCATE)\b", re.S
)
SQL_CALLS = {"text", "select", "insert", "update", "delete", "execute"}


def _sql_in(source: Path) -> list[str]:
    """Statements in string constants, and SQLAlchemy's statement builders called or imported."""
    found = []
    for node in ast.walk(ast.parse(source.read_text())):
        if (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and SQL.search(node.value)
        ):
            found.append(f"{node.lineno}: {node.value.strip()[:40]}")
        elif isinstance(node, ast.Call) and ast.unparse(node.func).split(".")[-1] in SQL_CALLS:
            found.append(f"{node.lineno}: {ast.unparse(node.func)}(...)")
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("sqlalchemy"):
            found += [f"{node.lineno}: imports {a.name}" for a in node.names if a.name in SQL_CALLS]
    return found


def test_the_command_line_holds_no_sql():
    """The CLI parses arguments and prints outcomes; the SQL lives in the stage it belongs to."""
    offenders = [
        f"{source.relative_to(REPO)}:{where}"
        for source in (REPO / "pipeline" / "cli").rglob("*.py")
        for where in _sql_in(source)
    ]
    assert offenders == []


MAX_LINES = 600


def test_no_module_is_over_600_lines():
    """A module a reader can hold in mind; past that, it is two modules."""
    over = sorted(
        f"{source.relative_to(REPO)}: {lines}"
        for source in (REPO / "pipeline").rglob("*.py")
        if (lines := len(source.read_text().splitlines())) > MAX_LINES
    )
    assert over == []


def _imported_modules(source: Path) -> list[tuple[int, str]]:
    """Every module a file imports, at any depth (inside functions too), relative ones resolved;
    `from a import b` counts as importing `a` and `a.b`."""
    package = source.relative_to(REPO).parent.parts
    found = []
    for node in ast.walk(ast.parse(source.read_text())):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else ()
            module = ".".join([*base, *([node.module] if node.module else [])])
            found += [(node.lineno, module)]
            found += [(node.lineno, f"{module}.{alias.name}") for alias in node.names]
    return found


def test_prediction_imports_nothing_from_training():
    """Scoring loads its models through `pipeline.artefacts`: a predict shard never drags in
    training's input pipeline, and training can change without breaking prediction."""
    sources = [
        *(REPO / "pipeline" / "predict").rglob("*.py"),
        REPO / "dags" / "predict_catalogue.py",
    ]
    offenders = [
        f"{source.relative_to(REPO)}:{line}: {name}"
        for source in sources
        for line, name in _imported_modules(source)
        if name == "pipeline.train" or name.startswith("pipeline.train.")
    ]
    assert offenders == [], "import what scoring needs from pipeline.artefacts or pipeline.layers"
