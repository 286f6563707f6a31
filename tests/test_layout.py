"""The shape of the code base: a file per component, small modules, one phrase table, models that never import
recipes, dependencies declared once — the promises ARCHITECTURE.md makes to a reader, checked."""

import ast
import re
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "minimal"
MODULES = sorted(PACKAGE.rglob("*.py"))
LINES = {p: len(p.read_text().splitlines()) for p in MODULES}


def relative(p: Path) -> str:
    return str(p.relative_to(ROOT))


def test_every_module_is_small_and_none_dominates():
    total = sum(LINES.values())
    too_long = {relative(p): n for p, n in LINES.items() if n > 400}
    too_big = {relative(p): round(n / total, 3) for p, n in LINES.items() if n > 0.12 * total}
    assert not too_long, f"modules over 400 lines: {too_long}"
    assert not too_big, f"modules holding more than 12 % of minimal/'s {total} lines: {too_big}"


def test_no_function_is_longer_than_80_lines():
    long = []
    for path in MODULES:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                n = node.end_lineno - node.lineno + 1
                if n > 80:
                    long.append(f"{relative(path)}:{node.lineno} {node.name} ({n} lines)")
    assert not long, long


def test_each_component_of_the_books_figure_has_its_file():
    for name in ("vit.py", "text.py", "clip.py", "input_projector.py", "llm.py", "lora.py", "output_projector.py",
                 "modality_generator.py", "mllm.py", "output_side.py"):
        assert (PACKAGE / name).is_file(), name


def _imports(path: Path) -> list[tuple[str, int, bool]]:
    """(module imported, line, whether the import sits inside a function) for every import in a file."""
    out = []
    tree = ast.parse(path.read_text())
    nested = {id(n) for f in ast.walk(tree) if isinstance(f, ast.FunctionDef | ast.AsyncFunctionDef)
              for n in ast.walk(f)}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            module = "." * node.level + (node.module or "")
            out += [(module + "." + a.name if node.level and not node.module else module, node.lineno,
                     id(node) in nested) for a in node.names]
        elif isinstance(node, ast.Import):
            out += [(a.name, node.lineno, id(node) in nested) for a in node.names]
    return out


def test_models_never_import_recipes():
    offenders = [f"{relative(p)}:{line} imports {m}" for p in MODULES if "recipes" not in p.parts
                 for m, line, _ in _imports(p) if "recipes" in m]
    assert not offenders, offenders


def test_sibling_imports_sit_at_the_top_of_modules():
    hidden = [f"{relative(p)}:{line} {m}" for p in MODULES for m, line, inside in _imports(p)
              if inside and (m.startswith(".") or m.startswith("minimal"))]
    assert not hidden, f"imports of the course's own modules inside functions: {hidden}"


def test_one_import_style_inside_the_package():
    absolute = [f"{relative(p)}:{line}" for p in MODULES for m, line, _ in _imports(p) if m.startswith("minimal")]
    assert not absolute, f"use relative imports inside minimal/: {absolute}"


@pytest.mark.parametrize("folder", ["tests", "benchmarks"])
def test_no_sys_path_tricks(folder):
    trick = "sys.path" + ".insert"   # spelled in two parts so that this file does not find itself
    hits = [relative(p) for p in (ROOT / folder).rglob("*.py") if trick in p.read_text()]
    assert not hits, f"the package is installed (pip install -e .): {hits}"


# Each world phrase is spelled in the phrase table (minimal/shapes/language.py) and nowhere else in the package.
PHRASES = ['"on the left"', '"on the right"', '"at the top"', '"at the bottom"', '"in the centre"',
           '"에 있는"', '"왼쪽"', '"빨간"', '"십자 모양"']


@pytest.mark.parametrize("literal", PHRASES)
def test_each_world_phrase_is_defined_once(literal):
    where = [relative(p) for p in MODULES if literal in p.read_text()]
    assert where == ["minimal/shapes/language.py"], f"{literal} is spelled in {where}"


def test_the_article_rule_lives_in_the_phrase_table():
    pattern = re.compile(r"""["']an ["']\s+if|in ["']aeiou["']""")
    where = [relative(p) for p in MODULES if pattern.search(p.read_text())]
    assert where == [], f"an a/an rule outside shapes.language.indefinite / fix_articles: {where}"


def _requirement_names(lines: list[str]) -> dict[str, str]:
    out = {}
    for line in lines:
        spec = line.split("#", 1)[0].strip()
        if spec:
            name = re.split(r"[<>=!~ ]", spec, maxsplit=1)[0].lower()
            out[name] = spec.replace(" ", "")
    return out


def test_runtime_dependencies_are_declared_once_and_agree():
    with open(ROOT / "pyproject.toml", "rb") as f:
        project = tomllib.load(f)["project"]
    declared = _requirement_names(project["dependencies"])
    listed = _requirement_names((ROOT / "requirements.txt").read_text().splitlines())
    assert declared, "pyproject.toml declares no runtime dependencies"
    missing = {k: v for k, v in declared.items() if listed.get(k) != v}
    assert not missing, f"pyproject dependencies missing or different in requirements.txt: {missing}"
    assert project["requires-python"] == ">=3.11"


def test_architecture_guide_names_every_module():
    guide = (ROOT / "ARCHITECTURE.md").read_text()
    unnamed = [relative(p) for p in MODULES if p.name != "__init__.py"
               and str(p.relative_to(PACKAGE)).replace("\\", "/") not in guide]
    assert not unnamed, f"ARCHITECTURE.md does not mention {unnamed}"
