"""pyproject.toml bounds every dependency, and constraints.txt pins versions it allows."""
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
REQUIREMENTS = [
    Requirement(line)
    for line in PROJECT["dependencies"] + [line for extra in PROJECT["optional-dependencies"].values() for line in extra]
]
UPPER = {"<", "<=", "==", "===", "~="}
LOWER = {">", ">=", "==", "===", "~="}

# Versions with published advisories, which the floors must keep out.
VULNERABLE = [
    ("django", "5.2.7"),  # CVE-2025-64459, SQL injection through _connector
    ("django", "5.2.8"),  # CVE-2025-13372, SQL injection in FilteredRelation aliases on PostgreSQL
    ("djangorestframework", "3.15.1"),  # CVE-2024-21520, XSS in the browsable API
    ("cryptography", "42.0.3"),  # CVE-2024-26130, NULL dereference in PKCS#12
    ("gunicorn", "22.0.0"),  # CVE-2024-6827, request smuggling
    ("pillow", "11.2.1"),  # CVE-2025-48379, heap overflow writing DDS images
]


def constraints() -> dict[str, str]:
    lines = (ROOT / "constraints.txt").read_text().splitlines()
    pins = [line.split("==") for line in lines if line and not line.startswith("#")]
    assert all(len(pin) == 2 for pin in pins), "constraints.txt holds only name==version lines"
    return {canonicalize_name(name): version for name, version in pins}


@pytest.mark.parametrize("requirement", REQUIREMENTS, ids=str)
def test_every_dependency_has_a_floor_and_a_ceiling(requirement):
    operators = {spec.operator for spec in requirement.specifier}
    assert operators & UPPER, f"{requirement} has no upper bound"
    assert operators & LOWER, f"{requirement} has no lower bound"


@pytest.mark.parametrize("name, version", VULNERABLE)
def test_floors_keep_out_vulnerable_versions(name, version):
    (requirement,) = [r for r in REQUIREMENTS if canonicalize_name(r.name) == name]
    assert not requirement.specifier.contains(version)


def test_constraints_pin_every_dependency_within_its_bounds():
    pins = constraints()
    for requirement in REQUIREMENTS:
        name = canonicalize_name(requirement.name)
        assert name in pins, f"constraints.txt does not pin {name}"
        assert requirement.specifier.contains(pins[name]), f"{name}=={pins[name]} is outside {requirement}"
    assert "linebot-llm" not in pins


def test_make_installs_the_pinned_versions():
    makefile = (ROOT / "Makefile").read_text()
    assert "pip install --quiet -c constraints.txt -e '.[test]'" in makefile
    assert "$(STAMP): pyproject.toml constraints.txt" in makefile
