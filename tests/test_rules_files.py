"""Every rules file the repository ships (rules/dev.yaml, rules/examples/*.yaml,
and any YAML file added under rules/ later) goes through `meshwrap check`.

The list is a glob, so a new file is covered without editing this test.
Files under a `fixtures` folder are data that rules read (`file:` bodies),
not rules, and are left out.

Nothing here runs a jail or touches the network.
"""
import subprocess

import pytest
import yaml

from conftest import REPO_ROOT, _default_bin

RULES_DIR = REPO_ROOT / "rules"


def _rules_files():
    files = []
    for p in sorted(RULES_DIR.rglob("*")):
        if p.suffix not in (".yaml", ".yml") or not p.is_file():
            continue
        if "fixtures" in p.relative_to(RULES_DIR).parts:
            continue
        files.append(p.relative_to(REPO_ROOT).as_posix())
    return files


RULES_FILES = _rules_files()


def _expected_counts(rel):
    """(services, hosts) as `check` counts them, read independently from
    the YAML: one per `services:` entry, one per distinct `hosts:` name
    (names ignore case and a trailing dot)."""
    doc = yaml.safe_load((REPO_ROOT / rel).read_text()) or {}
    services = doc.get("services") or []
    hosts = doc.get("hosts") or {}
    names = {str(k).rstrip(".").lower() for k in hosts}
    return len(services), len(names)


def test_the_glob_finds_the_shipped_rules_files():
    """The parametrized check below really covers rules/dev.yaml and the
    examples (a glob that silently matched nothing would prove nothing),
    and skips the fixtures folder."""
    assert "rules/dev.yaml" in RULES_FILES
    examples = [f for f in RULES_FILES if f.startswith("rules/examples/")]
    # 19 when this was written (the 20th entry of rules/examples/ is the
    # fixtures folder); more is fine, fewer means one went missing.
    assert len(examples) >= 19, RULES_FILES
    assert all("fixtures" not in f for f in RULES_FILES)
    assert (RULES_DIR / "examples" / "fixtures").is_dir()


@pytest.mark.parametrize("rel", RULES_FILES)
def test_rules_file_passes_check(rel):
    """`meshwrap check FILE` run from the repository root exits 0 and prints
    exactly `FILE: ok (N services, M hosts)` on stderr (nothing on stdout),
    with N and M the numbers of services and hosts the YAML declares."""
    binary = _default_bin()
    res = subprocess.run([binary, "check", rel], cwd=str(REPO_ROOT), capture_output=True,
                         text=True, timeout=60)
    services, hosts = _expected_counts(rel)
    assert res.returncode == 0, f"`meshwrap check {rel}` failed:\n{res.stderr}"
    assert res.stdout == ""
    assert res.stderr == f"{rel}: ok ({services} services, {hosts} hosts)\n", res.stderr


def test_rules_files_check_from_another_directory(tmp_path):
    """The examples do not depend on the working directory: checked by
    absolute path from an unrelated folder, each file is still `ok` (their
    `file:` bodies are found relative to the rules file, not the cwd), and
    the exit code is 0."""
    binary = _default_bin()
    paths = [str(REPO_ROOT / f) for f in RULES_FILES]
    for p in paths:
        res = subprocess.run([binary, "check", p], cwd=str(tmp_path), capture_output=True,
                             text=True, timeout=60)
        assert res.returncode == 0, f"`meshwrap check {p}` from {tmp_path} failed:\n{res.stderr}"
        assert res.stderr.startswith(f"{p}: ok ("), res.stderr


def test_readme_check_of_every_file_together(meshwrap_bin):
    """README.md's `meshwrap check rules/dev.yaml rules/examples/*.yaml`
    (read from README.md, run through the shell as written) prints what
    README.md shows: the files also merge, service names being unique
    across the examples."""
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    prompt = "$ meshwrap check rules/dev.yaml rules/examples/*.yaml\n"
    start = readme.index(prompt) + len(prompt)
    expected = readme[start:readme.index("```", start)]
    res = subprocess.run(["sh", "-c", f'"$0" {prompt[len("$ meshwrap "):].strip()}', meshwrap_bin],
                         cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stderr == expected, res.stderr
