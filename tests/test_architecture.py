"""The rules between the wings (docs/architecture.md), checked on the source tree itself.

- only mvp/app imports gradio;
- mvp/model, mvp/safety, mvp/assessment, mvp/counsel and mvp/store never import train/ or mvp.app;
- mvp/model knows nothing of the store, safety, assessment, the app or train/;
- only mvp/store issues SQL;
- every module opens with a docstring and stays small;
- README.md and docs/ name only repository paths that exist.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
CODE = sorted(p for top in ("mvp", "train") for p in (REPO / top).rglob("*.py"))
MAX_MODULE_LINES = 420
CORE_WINGS = ("mvp/model", "mvp/safety", "mvp/assessment", "mvp/counsel", "mvp/store")


def _rel(path: Path) -> str:
    return path.relative_to(REPO).as_posix()


def _imports(path: Path) -> set[str]:
    """Every module name imported anywhere in the file (also inside functions: lazy imports count)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _offenders(wings: tuple[str, ...], forbidden: tuple[str, ...]) -> list[str]:
    bad = []
    for path in CODE:
        if not _rel(path).startswith(wings):
            continue
        for name in _imports(path):
            if any(name == f or name.startswith(f + ".") for f in forbidden):
                bad.append(f"{_rel(path)} imports {name}")
    return bad


def test_the_tree_is_where_the_rules_expect_it():
    for wing in CORE_WINGS + ("mvp/app", "train"):
        assert (REPO / wing / "__init__.py").is_file(), wing
    assert len(CODE) > 40


def test_only_the_app_imports_gradio():
    outside = tuple(w for w in ("mvp/model", "mvp/safety", "mvp/assessment", "mvp/counsel", "mvp/store", "train"))
    assert _offenders(outside, ("gradio", "gradio_client")) == []
    assert not [n for n in _imports(REPO / "mvp" / "paths.py") if n.startswith("gradio")]


def test_core_wings_never_import_train_or_the_app():
    assert _offenders(CORE_WINGS, ("train", "mvp.app")) == []


def test_the_model_wing_knows_nothing_of_store_safety_assessment_app_or_train():
    assert _offenders(("mvp/model",), ("mvp.store", "mvp.safety", "mvp.assessment", "mvp.app", "train",
                                       "mvp.counsel")) == []


SQL = re.compile(r"""["'](\s*)(SELECT\s+\S|INSERT\s+INTO|UPDATE\s+\w+\s+SET|DELETE\s+FROM|CREATE\s+TABLE|PRAGMA\s+\w)""",
                 )


def test_only_the_store_issues_sql():
    bad = []
    for path in CODE:
        rel = _rel(path)
        if rel.startswith("mvp/store/"):
            continue
        text = path.read_text(encoding="utf-8")
        bad += [f"{rel}: {m.group(0)}" for m in SQL.finditer(text)]
        if re.search(r"^\s*import sqlite3|^\s*import sqlite_utils|^\s*from sqlite_utils", text, re.M):
            bad.append(f"{rel}: imports sqlite")
    assert bad == []


def test_the_sql_detector_is_not_blind():
    assert SQL.search('"SELECT id FROM messages"') and SQL.search("'INSERT INTO flags'")
    assert not SQL.search('"select a reply"')  # words, not statements


@pytest.mark.parametrize("path", CODE, ids=_rel)
def test_every_module_has_a_docstring_and_stays_small(path):
    text = path.read_text(encoding="utf-8")
    if path.name == "__main__.py" or text.strip() == "":
        return
    assert ast.get_docstring(ast.parse(text)), f"{_rel(path)} opens without a docstring"
    assert len(text.splitlines()) <= MAX_MODULE_LINES, f"{_rel(path)} has {len(text.splitlines())} lines"


def _doc_files() -> list[Path]:
    return [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


# Repository paths as docs write them: `mvp/app/ui.py`, config/stages.yaml, train/configs/demo.yaml ...
PATH_RE = re.compile(r"(?<![\w./-])((?:mvp|train|tests|bench|config|data|docs)/[\w./-]*[\w/])")
# Generated at run time or by a build, never committed: a mention of them is not a dangling path.
GENERATED = ("models/", "runs/", "exports/", "bench/results/", "test-artifacts/")


def test_docs_name_only_paths_that_exist():
    missing = []
    for doc in _doc_files():
        for match in PATH_RE.finditer(doc.read_text(encoding="utf-8")):
            name = match.group(1).rstrip(".")
            if name.startswith(GENERATED) or any(ch in name for ch in "*{}<>") or re.search(r"/[A-Z]+(\.\w+)?$", name):
                continue  # generated files, globs, placeholders such as train/NAME.py
            if not (REPO / name).exists():
                missing.append(f"{doc.name}: {name}")
    assert missing == []


def test_module_paths_in_docs_resolve():
    """`python -m mvp.x.y` and `from mvp.x import y` in the docs name modules that exist."""
    missing = []
    for doc in _doc_files():
        text = doc.read_text(encoding="utf-8")
        for match in re.finditer(r"python -m ((?:mvp|train|bench)(?:\.\w+)*)(\.?[<{A-Z]?)", text):
            parts = match.group(1).split(".")
            if match.group(2) or parts[-1].isupper():
                continue  # a placeholder: python -m train.STAGE, python -m train.<stage>
            base = REPO.joinpath(*parts)
            if not (base.with_suffix(".py").is_file() or (base / "__main__.py").is_file()):
                missing.append(f"{doc.name}: python -m {match.group(1)}")
    assert missing == []
