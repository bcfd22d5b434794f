"""The README and docs/ are the operator's manual: they must match the code they describe, and every link and every
heading a comment cites must lead somewhere."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import click
import pytest

from streams.app import input_topics
from streams.cli import COMMANDS, main
from streams.outputs.metrics import BatchSizes, ConsumerLag, exposition
from streams.outputs.snapshots import SnapshotPacing
from streams.processor import Processor
from streams.settings import LeadGrades, ScoreWeights, Settings
from streams.testing import raw

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
DOCS = ROOT / "docs"
# Every page of the manual: the links in these must resolve, and every docs/ page must be reachable from the README.
PAGES = sorted([ROOT / "README.md", ROOT / "CONTRIBUTING.md", ROOT / "CHANGELOG.md", *DOCS.glob("*.md"),
                *(ROOT / "deploy").glob("*.md")])
# Where code, configuration and schemas may cite a page and its heading (`docs/semantics.md "Caps"`).
SOURCES = sorted(p for pattern in ("streams/**/*.py", "tests/**/*.py", "grafana/*.py", "schemas/*.json", "deploy/**/*")
                 for p in ROOT.glob(pattern) if p.is_file() and p.suffix not in (".png", ".pyc"))
SOURCES += [ROOT / "Makefile", ROOT / "pyproject.toml", *PAGES]


def _prose(text: str) -> str:
    """The text outside fenced code blocks."""
    return re.sub(r"^```.*?^```", "", text, flags=re.DOTALL | re.MULTILINE)


def _headings(path: Path) -> list[str]:
    return [m.group(1).strip() for m in re.finditer(r"^#{1,6} (.+)$", _prose(path.read_text()), re.MULTILINE)]


def _anchor(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation but hyphens and underscores dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")


def _section(text: str, heading: str) -> str:
    """The body of one heading, up to the next heading of any level."""
    m = re.search(rf"^#+ {re.escape(heading)}\n(.*?)(?=^#|\Z)", _prose(text), re.DOTALL | re.MULTILINE)
    assert m, f"no heading {heading!r}"
    return m.group(1)


PROGRAMS = ("make", "livepulse", "pytest")  # the commands these pages promise that this repository provides


def _commands(text: str) -> list[list[str]]:
    """The make, livepulse and pytest commands of a page's sh blocks, as words (up to a `&`, `|` or `;`)."""
    commands = []
    for block in re.findall(r"^```sh\n(.*?)^```", text, re.DOTALL | re.MULTILINE):
        for line in block.replace("\\\n", " ").splitlines():
            if not line.split() or Path(line.split()[0]).name not in PROGRAMS:
                continue
            words = []
            for word in shlex.split(line, comments=True):
                if word in ("&", "&&", "|", ";"):
                    break
                if not re.fullmatch(r"[A-Z_]+=\S*", word):  # VAR=value: make's variables
                    words.append(word)
            commands.append(words)
    return commands


def test_readme_starts_with_the_two_commands_and_ci_runs_the_test_one():
    first_block = re.search(r"```sh\n(.*?)```", README, re.DOTALL).group(1)
    commands = [line.split("#")[0].strip() for line in first_block.strip().splitlines()]
    assert commands == ["make demo", "make test"]
    assert re.search(r"^make test$", (ROOT / ".ci/run").read_text(), re.MULTILINE)


def test_the_readme_stays_an_introduction():
    assert len(README.splitlines()) <= 250


def _settings_table(text: str) -> dict[str, str]:
    return dict(re.findall(r"^\| `(LIVEPULSE_[A-Z_]+)` \| ([^|]+?) \|", text, re.MULTILINE))


def _defaults() -> dict[str, object]:
    """LIVEPULSE_* name -> default of every setting (the score weights and grades flattened as their variables)."""
    out: dict[str, object] = {}
    for name, field in Settings.model_fields.items():
        default = field.default_factory() if field.default_factory else field.default
        if isinstance(default, (ScoreWeights, LeadGrades)):
            prefix = "SCORE" if isinstance(default, ScoreWeights) else "GRADE"
            out.update({f"LIVEPULSE_{prefix}_{k.upper()}": v for k, v in default.model_dump().items()})
        else:
            out[f"LIVEPULSE_{name.upper()}"] = default
    return out


def _same_default(cell: str, default: object) -> bool:
    value = cell.strip("`")
    if default is None or (hasattr(default, "get_secret_value") and not default.get_secret_value()):
        return value in ("–", "unset", "empty")
    if isinstance(default, bool):
        return value == str(default).lower()
    if isinstance(default, (int, float)):
        return float(value.replace(",", "")) == float(default)
    return value == str(default)


NOT_SETTINGS = {"LIVEPULSE_ENV_FILE"}  # read before the settings: which file holds them (streams/settings.py)


def test_every_setting_is_documented_with_its_default():
    """The worker's settings in docs/configuration.md, the gateway's in docs/gateway.md; nowhere an unknown one."""
    defaults = _defaults()
    tables = {"docs/configuration.md": _settings_table((DOCS / "configuration.md").read_text()),
              "docs/gateway.md": _settings_table((DOCS / "gateway.md").read_text())}
    for page, table in tables.items():
        gateway = page == "docs/gateway.md"
        expected = {n for n in defaults if n.startswith("LIVEPULSE_GATEWAY_") == gateway}
        assert set(table) == expected, f"{page}: missing {expected - set(table)}, unknown {set(table) - expected}"
        wrong = {n: (cell, defaults[n]) for n, cell in table.items() if not _same_default(cell, defaults[n])}
        assert not wrong, f"{page}: documented defaults differ from streams/settings.py: {wrong}"
    for page in PAGES:
        named = set(re.findall(r"`(LIVEPULSE_[A-Z_]+)`", page.read_text())) - NOT_SETTINGS
        assert named <= set(defaults), f"{page.relative_to(ROOT)} names unknown settings: {named - set(defaults)}"


def test_every_exported_metric_is_documented():
    t0 = 1_767_000_000_000
    records = [raw("livepulse.events", {"event_id": "e", "type": "started", "ts": t0}, offset=0)]
    records += [raw("livepulse.interactions", {"id": f"i{n}", "event_id": "e", "attendee_id": f"a{n % 3}",
                                               "type": t, "ts": t0 + n * 1000}, offset=n)
                for n, t in enumerate(["registration", "join", "chat", "leave", "join", "heartbeat"])]
    proc = Processor(Settings(), partitions=1)
    proc.process(records, t0 / 1000)
    proc.tick(t0 / 1000, snapshots=True)
    sizes, lag = BatchSizes(), ConsumerLag(input_topics(Settings()))  # what streams/app.py adds to the collector
    sizes.observe(len(records))
    pacing = SnapshotPacing(Settings().snapshot_interval_s, Settings().snapshot_max_share)
    names = set(re.findall(r"^# TYPE (\S+) ", exposition(proc, sizes, lag, pacing).decode(), re.MULTILINE))
    assert {"livepulse_attendees_current", "livepulse_batch_records", "livepulse_consumer_lag_records",
            "livepulse_snapshot_round_seconds"} <= names
    rows = re.findall(r"^\| (`livepulse_.*?) \|", (DOCS / "metrics.md").read_text(), re.MULTILINE)
    documented = {n.removesuffix("_total") for row in rows for n in re.findall(r"`(livepulse_[a-z_]+)", row)}
    missing = sorted(n for n in names if n.removesuffix("_total") not in documented)
    assert not missing, f"metrics missing from docs/metrics.md: {missing}"


def test_every_topic_is_in_the_readme_table():
    s = Settings()
    topics = {getattr(s, n) for n in Settings.model_fields if n.startswith("topic_")}
    rows = set(re.findall(r"^\| `([^`]+)` \|", _section(README, "Topics"), re.MULTILINE))
    assert rows == topics | {"<app_id>-state-changelog"}


def test_every_dead_letter_reason_is_in_the_readme():
    schema = json.loads((ROOT / "schemas" / "dead_letter.json").read_text())
    codes = set(schema["properties"]["reason"]["enum"])
    used = {c for p in (ROOT / "streams").rglob("*.py") for c in re.findall(r'Rejection\("([a-z0-9_]+)"', p.read_text())}
    assert used and used <= codes, f"reasons used but not in schemas/dead_letter.json: {used - codes}"
    documented = set(re.findall(r"`([a-z0-9_]+)`", _section(README, "Dead-letter reason codes")))
    assert codes <= documented, f"reason codes missing from README: {codes - documented}"


def _make_targets() -> set[str]:
    return set(re.findall(r"^([\w-]+):", (ROOT / "Makefile").read_text(), re.MULTILINE))


@pytest.mark.parametrize("page", [p for p in PAGES if _commands(p.read_text())], ids=lambda p: str(p.relative_to(ROOT)))
def test_every_command_a_page_promises_exists(page):
    """`make X` is a Makefile target, `livepulse SUB --opt ...` parses as that command, a pytest path exists."""
    for words in _commands(page.read_text()):
        line = " ".join(words)
        program = Path(words[0]).name
        if program == "make":
            assert set(words[1:]) <= _make_targets(), f"{page.name}: {line!r}: no such make target"
        elif program == "livepulse":
            assert words[1] in COMMANDS, f"{page.name}: {line!r}: no such command"
            command = main.get_command(click.Context(main), words[1])
            try:
                command.make_context(words[1], words[2:])
            except click.exceptions.Exit:  # --help
                pass
            except click.BadParameter as exc:  # an input file the page's previous command writes
                assert "does not exist" in str(exc), f"{page.name}: {line!r}: {exc}"
            except click.UsageError as exc:
                pytest.fail(f"{page.name}: {line!r}: {exc}")
        else:
            paths = [w.split("::")[0] for w in words[1:] if w.startswith("tests")]
            assert all((ROOT / p).exists() for p in paths), f"{page.name}: {line!r}: no such test path"


def test_the_readme_promises_commands():
    assert len(_commands(README)) >= 8


def test_links_lead_to_existing_files_and_headings():
    broken = []
    for page in PAGES:
        for target in re.findall(r"\]\(([^)\s]+)\)", _prose(page.read_text())):
            if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
                continue
            path, _, anchor = target.partition("#")
            dest = (page.parent / path).resolve() if path else page
            if not dest.exists():
                broken.append(f"{page.relative_to(ROOT)}: {target} (no such file)")
            elif anchor and anchor not in {_anchor(h) for h in _headings(dest)}:
                broken.append(f"{page.relative_to(ROOT)}: {target} (no such heading)")
    assert not broken, broken


def test_every_docs_page_is_linked_from_the_readme():
    linked = {(ROOT / t.partition("#")[0]).resolve() for t in re.findall(r"\]\(([^)\s#]+[^)\s]*)\)", README)}
    assert not [p.name for p in DOCS.glob("*.md") if p.resolve() not in linked]


# `docs/semantics.md "Caps"`, `README "Dead-letter reason codes"`; in JSON with escaped quotes.
CITATION = re.compile(r"\b(README(?:\.md)?|(?:docs|deploy)/[\w-]+\.md):? \\?\"([^\"\\]+)\\?\"")


def test_cited_pages_and_headings_exist():
    """A comment, docstring or schema that points a reader at a page and a heading points at one that exists."""
    broken, cited = [], 0
    for source in SOURCES:
        text = source.read_text(errors="replace")
        for page in set(re.findall(r"\b(?:docs|deploy)/[\w-]+\.md\b", text)):
            if not (ROOT / page).exists():
                broken.append(f"{source.relative_to(ROOT)}: {page} (no such file)")
        for page, heading in CITATION.findall(re.sub(r"\s*\n\s*(?:#\s*)?", " ", text)):
            cited += 1
            path = ROOT / ("README.md" if page.startswith("README") else page)
            if path.exists() and heading not in [h.replace("`", "") for h in _headings(path)]:
                broken.append(f"{source.relative_to(ROOT)}: {page} {heading!r} (no such heading)")
    assert cited > 10, "the citation pattern no longer finds the citations"
    assert not broken, broken


def test_caps_doc_shows_the_derived_defaults():
    from streams.settings import derived_caps

    caps_doc = (DOCS / "caps.md").read_text()
    for name, value in derived_caps(Settings()).items():
        assert f"| `LIVEPULSE_{name.upper()}` | derived: `{value}` |" in caps_doc, name
