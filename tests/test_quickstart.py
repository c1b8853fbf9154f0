"""README.md's quick start, run as README.md writes it (#34 item 1).

The commands and the output they should print are read from README.md's
"## Quick start" section at test time, never copied here: each ```sh
block is run as it stands (through `sh`, from the repository's root, so
`cargo run` builds or reuses target/release/meshwrap), and the plain block
that follows it is what it must print. The paragraph between the two says
the exit code ("… exit code, N"). Byte counts and curl's "after N ms"
vary with curl's version and the machine; everything else must match.

Network safety: rules/dev.yaml mocks api.dev.test and refuses
api.example.test; nothing leaves the jail.
"""
import re
import shutil
import subprocess

import pytest

from conftest import REPO_ROOT, jail_env

README = REPO_ROOT / "README.md"

# What cargo itself says on stderr before the program runs.
CARGO_STATUS = re.compile(
    r"^\s*(Compiling|Finished|Running|Blocking|Updating|Locking|Adding|Downloading|Downloaded|Fresh)\b")
# A row of the summary's destination table: host:port, decision, protocol,
# flows, bytes up, bytes down, errors.
TABLE_ROW = re.compile(r"^\S+:\d+ (mock|pass|refuse) \S+ \d+ \d+ \d+ \d+$")


def quickstart_examples():
    """(command, expected output, expected exit code) for each ```sh block
    of the quick start that is followed by an output block."""
    text = README.read_text(encoding="utf-8")
    start = text.index("\n## Quick start\n")
    end = text.index("\n## ", start + 1)
    section = text[start:end]
    blocks = [(m.start(), m.end(), m.group(1), m.group(2))
              for m in re.finditer(r"^[ \t]*```(\w*)\n(.*?)^[ \t]*```$", section, re.M | re.S)]
    examples = []
    for i, (_, cmd_end, lang, body) in enumerate(blocks):
        if lang != "sh" or i + 1 >= len(blocks):
            continue
        out_start, _, out_lang, out_body = blocks[i + 1]
        if out_lang != "":
            continue
        between = section[cmd_end:out_start]
        code = re.search(r"exit code, (\d+)", between)
        assert code, f"README.md's quick start does not say the exit code of `{body.strip()}`"
        examples.append((" ".join(body.split()), dedent(out_body), int(code.group(1))))
    return examples


def dedent(block):
    lines = block.splitlines()
    indent = min(len(l) - len(l.lstrip()) for l in lines if l.strip())
    return [l[indent:] for l in lines]


def normalize(line):
    """Whitespace collapsed; the varying numbers replaced by N."""
    words = line.split()
    flat = " ".join(words)
    if TABLE_ROW.match(flat):
        words[4] = words[5] = "N"  # bytes up, bytes down
        flat = " ".join(words)
    return re.sub(r"after \d+ ms", "after N ms", flat)


EXAMPLES = quickstart_examples()


def test_readme_quickstart_has_its_examples():
    """The parse found the quick start's commands: the mocked call and the
    refused one, both through `cargo run` as a newcomer types them."""
    assert len(EXAMPLES) >= 2, EXAMPLES
    assert all(c.startswith("cargo run --release -- --rules rules/dev.yaml -- ") for c, _, _ in EXAMPLES)
    assert [code for _, _, code in EXAMPLES][:2] == [0, 7], EXAMPLES


@pytest.mark.timeout(1800)  # a first `cargo run` on a fresh clone builds meshwrap
@pytest.mark.parametrize("command,expected,exit_code", EXAMPLES,
                         ids=[f"example-{i + 1}" for i in range(len(EXAMPLES))])
def test_quickstart_prints_what_readme_shows(command, expected, exit_code):
    assert shutil.which("cargo"), "cargo is not on PATH (README.md's quick start needs it)"
    res = subprocess.run(["sh", "-c", command], cwd=REPO_ROOT, env=jail_env(),
                         stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=1700)
    where = f"command: {command}\n--- stdout ---\n{res.stdout}\n--- stderr ---\n{res.stderr}"
    assert res.returncode == exit_code, where

    stderr = [l for l in res.stderr.splitlines() if not CARGO_STATUS.match(l)]
    assert any(l.startswith("meshwrap summary") for l in stderr), where
    # The program's own output (its stdout, then what it wrote on stderr),
    # then meshwrap's summary, as README.md shows them in one block.
    actual = res.stdout.splitlines() + stderr
    assert [normalize(l) for l in actual if l.strip()] == \
        [normalize(l) for l in expected if l.strip()], where
