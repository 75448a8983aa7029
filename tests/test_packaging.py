"""The project installs as a package with one set of pins, deploys as a Hugging Face Space, and documents
every environment variable it reads."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml
from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
README = (REPO / "README.md").read_text()
SOURCES = [*sorted((REPO / "rl_core").rglob("*.py")), *sorted((REPO / "ui").rglob("*.py")), REPO / "app.py",
           *sorted((REPO / "leaderboard_data").glob("*.py"))]


def requirement_lines(name: str) -> list[str]:
    return [line.strip() for line in (REPO / name).read_text().splitlines()
            if line.strip() and not line.strip().startswith("#")]


def pinned(name: str) -> dict[str, str]:
    """package -> exact version of a requirements file that pyproject.toml reads."""
    pins = {}
    for line in requirement_lines(name):
        requirement = Requirement(line)  # raises on -r lines and inline comments, which setuptools cannot read
        (spec,) = requirement.specifier
        assert spec.operator == "==", f"{name}: {line} is not an exact pin"
        pins[requirement.name.lower()] = spec.version
    return pins


def dynamic_files() -> dict[str, list[str]]:
    dynamic = PYPROJECT["tool"]["setuptools"]["dynamic"]
    files = {"dependencies": dynamic["dependencies"]["file"]}
    files.update({f"[{extra}]": spec["file"] for extra, spec in dynamic["optional-dependencies"].items()})
    return files


def test_pins_are_written_once_and_the_space_list_includes_the_app():
    seen: dict[str, str] = {}
    for files in dynamic_files().values():
        for name in files:
            for package, version in pinned(name).items():
                assert seen.setdefault(package, version) == version
    per_file = {name: set(pinned(name)) for files in dynamic_files().values() for name in files}
    names = sorted(per_file)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            assert not per_file[a] & per_file[b], f"{a} and {b} both pin {per_file[a] & per_file[b]}"
    # the Space runs `pip install -r requirements.txt`: it must get rl_core's and the app's packages
    includes = [line.split(maxsplit=1)[1] for line in requirement_lines("requirements.txt")]
    assert all(line.startswith("-r ") for line in requirement_lines("requirements.txt"))
    assert set(includes) == set(dynamic_files()["dependencies"]) | set(dynamic_files()["[app]"])
    assert {"torch", "gradio"} <= set(pinned("requirements-core.txt")) | set(pinned("requirements-app.txt"))
    assert "gradio" not in pinned("requirements-core.txt")  # the library never needs the web app's packages


def test_package_data_ships_every_official_model_card():
    patterns = PYPROJECT["tool"]["setuptools"]["package-data"]["rl_core"]
    shipped = {p for pattern in patterns for p in (REPO / "rl_core").glob(pattern)}
    cards = set((REPO / "rl_core" / "official_models").iterdir())
    assert cards and cards == shipped
    module, function = PYPROJECT["project"]["scripts"]["rl-core"].split(":")
    assert module == "rl_core.cli" and callable(getattr(__import__(module, fromlist=[function]), function))


def test_readme_front_matter_configures_the_space():
    match = re.match(r"---\n(.*?)\n---\n", README, re.S)
    assert match, "README.md must start with the Hugging Face Spaces front matter"
    config = yaml.safe_load(match.group(1))
    assert config["sdk"] == "gradio" and config["sdk_version"] == pinned("requirements-app.txt")["gradio"]
    assert (REPO / config["app_file"]).is_file() and config["app_file"] == "app.py"
    major_minor = re.match(r">=(\d+\.\d+)", PYPROJECT["project"]["requires-python"]).group(1)
    assert str(config["python_version"]) == major_minor


def test_every_environment_variable_read_is_in_the_readme_table():
    read = set()
    for path in SOURCES:
        read |= set(re.findall(r"""(?:environ\.get|getenv)\(\s*["']([A-Z0-9_]+)["']""", path.read_text()))
    assert {"RL_CORE_MODEL_CACHE_GB", "RL_CORE_LEADERBOARD_DIR", "RL_CORE_PUBLISHED_SOURCE"} <= read
    table = README.split("## Environment variables", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"`([A-Z][A-Z0-9_]+)`", table))
    assert read <= documented, f"undocumented: {sorted(read - documented)}"


def test_no_script_edits_sys_path():
    """Scripts import the installed package (or run as modules from the repository root)."""
    needle = "sys.path." + "insert"
    offenders = [str(p.relative_to(REPO)) for p in REPO.rglob("*.py")
                 if ".venv" not in p.parts and needle in p.read_text()]
    assert offenders == []


def test_every_python_file_compiles():
    """Benchmarks and scripts are not imported by the suite: a bad merge in one must still fail here."""
    tracked = [p for p in REPO.rglob("*.py") if not any(part.startswith(".") for part in p.relative_to(REPO).parts)]
    assert len(tracked) > 100
    for path in tracked:
        compile(path.read_text(encoding="utf-8"), str(path), "exec")
