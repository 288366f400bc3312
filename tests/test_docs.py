"""The documentation, checked: its programs run, its fragments compile, its test suite
passes, and the built site's API page is whole.

Which code blocks run (the rule; nothing in the Markdown marks them):

- A ```` ```python ```` block of ``README.md`` or ``docs/*.md`` is a **complete
  program** when it starts itself: a line, at column 0, that calls ``anyio.run(``,
  ``trio.run(`` or ``asyncio.run(``, or ``if __name__ == "__main__":``. Each one is run
  as a process of its own (``python program.py``), with a timeout, and must exit 0.
  One that uses Redis (``redis://localhost...``) gets a private ``redis-server`` of
  its own, its URL written in place of the page's. One that calls ``anyio.run`` runs
  on both backends (the call's ``backend=`` is overridden): the same code runs on
  trio and asyncio, as the pages say.
- When the page shows what a program prints (the next block is a plain ```` ``` ````
  block introduced by a paragraph that mentions ``prints`` and ends with ``:``), its
  output must be exactly that; a 16 or 32 digit hex id (trace and span ids) stands
  for any, the same id for the same one.
- Every other ``python`` block is a **fragment**: it is compiled (top-level ``await``
  allowed), so a syntax error fails, and not run.
- A block introduced by a paragraph that starts with a file name in backticks
  (`` `worker.py` (process B...): ``) is that file: the programs of a page import
  each other by these names.
- A block that only includes a file (``--8<-- "examples/chat.py"``) shows a program
  that its own test runs (``INCLUDED`` below says which); here it is only compiled.

Exceptions, each with its own test here: the two processes of docs/observability.md
(a worker that waits for the publisher: ``SEPARATE``), and docs/testing.md, whose
named files are a pytest suite, run with pytest. The README's first example's printed
``Event(...)`` is checked by tests/test_channels.py.
"""

from __future__ import annotations

import ast
import os
import re
import selectors
import subprocess
import sys
import time
import tomllib
import types
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from html.parser import HTMLParser
from pathlib import Path

import pytest

import tidings
import tidings.asgi
import tidings.testing
from tests.redis_server import RedisServer

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
#: Seconds a program of the docs may take (they take well under one).
TIMEOUT = 30

#: A line that starts a program.
STARTS = re.compile(r"^(?:(?:anyio|trio|asyncio)\.run\(|if __name__ == [\"']__main__[\"']:)", re.M)
#: The Redis URLs programs use, replaced with their private server's.
LOCAL_REDIS = re.compile(r"redis://localhost(?::6379)?(?P<db>/\d+)?")
#: Runs a program with anyio.run's backend overridden: python -c LAUNCHER BACKEND FILE.
LAUNCHER = """
import runpy, sys
import anyio

backend, path = sys.argv[1:3]
sys.argv = [path, *sys.argv[3:]]
_run = anyio.run

def run(func, *args, **kwargs):
    kwargs["backend"] = backend
    return _run(func, *args, **kwargs)

anyio.run = run
runpy.run_path(path, run_name="__main__")
"""

#: Programs included from examples/, and the test that runs each as the page says.
INCLUDED = {
    "examples/chat.py": "tests/test_examples.py",
    "examples/web_starlette.py": "tests/test_web_recipe.py",
    "examples/web_fastapi.py": "tests/test_web_recipe.py",
    "examples/web_trio.py": "tests/test_web_recipe.py",
}
#: Programs run by a test of their own below: (page, file name) -> that test.
SEPARATE = {
    ("docs/observability.md", "worker.py"): "test_a_trace_across_two_processes",
    ("docs/observability.md", "publisher.py"): "test_a_trace_across_two_processes",
}


# -- the blocks of the pages ---------------------------------------------------------


@dataclass(frozen=True)
class Block:
    """A fenced code block of a page."""

    page: str  # relative to the repository: "docs/testing.md"
    line: int  # of the opening fence, 1-based
    lang: str
    body: str
    before: str  # the text between the previous block and this one

    @property
    def id(self) -> str:
        return f"{self.page}:{self.line}"

    @property
    def intro(self) -> str:
        """The paragraph right before the block."""
        return self.before.strip().split("\n\n")[-1].strip()

    @property
    def included(self) -> str | None:
        match = re.fullmatch(r'--8<-- "([^"]+)"', self.body.strip())
        return match.group(1) if match else None

    @cached_property
    def source(self) -> str:
        return (ROOT / self.included).read_text() if self.included else self.body

    @property
    def filename(self) -> str | None:
        match = re.match(r"`([\w.-]+\.\w+)`[ :]", self.intro)
        return match.group(1) if match else None

    @property
    def program(self) -> bool:
        return self.lang == "python" and STARTS.search(self.source) is not None

    @property
    def shows_output(self) -> bool:
        """A plain block the page says a program prints."""
        return self.lang in ("", "text") and "prints" in self.intro and self.intro.endswith(":")


def blocks_of(page: Path) -> list[Block]:
    blocks: list[Block] = []
    lines = page.read_text().splitlines()
    before: list[str] = []
    i = 0
    while i < len(lines):
        fence = re.match(r"^( *)(`{3,})([\w+-]*)", lines[i])
        if fence is None:
            before.append(lines[i])
            i += 1
            continue
        indent, ticks, lang = fence.groups()
        start, body = i, []
        i += 1
        while not re.match(rf"^ *{ticks}\s*$", lines[i]):
            body.append(lines[i][len(indent) :])
            i += 1
        blocks.append(
            Block(
                str(page.relative_to(ROOT)),
                start + 1,
                lang,
                "\n".join(body) + "\n",
                "\n".join(before),
            )
        )
        before = []
        i += 1
    return blocks


BLOCKS = [block for page in PAGES for block in blocks_of(page)]
PYTHON = [block for block in BLOCKS if block.lang == "python"]


def shown_output(block: Block) -> Block | None:
    """The output the page shows for a program: the next block, if it is one."""
    following = BLOCKS[BLOCKS.index(block) + 1 :]
    if following and following[0].page == block.page and following[0].shows_output:
        return following[0]
    return None


def uses_redis(source: str) -> bool:
    return "redis://" in source or "rediss://" in source


def runs() -> Iterator[object]:
    """(program, backend) pairs of the programs run by test_a_program_of_the_docs_runs."""
    for block in PYTHON:
        if not block.program or block.included or (block.page, block.filename) in SEPARATE:
            continue
        marks = [pytest.mark.redis] if uses_redis(block.source) else []
        backends = ["asyncio", "trio"] if "anyio.run(" in block.source else [None]
        for backend in backends:
            suffix = f"[{backend}]" if backend else ""
            yield pytest.param(block, backend, marks=marks, id=block.id + suffix)


# -- the programs and fragments ------------------------------------------------------


def environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env["PYTHONUNBUFFERED"] = "1"  # what a program printed, in order, even if killed
    return env


def write(block: Block, directory: Path, redis_url: str | None) -> Path:
    source = block.source
    if redis_url is not None:
        source = LOCAL_REDIS.sub(lambda m: redis_url + (m.group("db") or ""), source)
        assert "localhost" not in source, f"{block.id}: a Redis URL the test cannot replace"
    path = directory / (block.filename or "program.py")
    path.write_text(source)
    return path


def hex_ids_as_groups(shown: str) -> str:
    """A regex of the shown text in which each hex id stands for any, the same id
    (by its value on the page) for the same one."""
    names: dict[str, str] = {}
    pattern = ""
    position = 0
    for match in re.finditer(r"\b(?:[0-9a-f]{32}|[0-9a-f]{16})\b", shown):
        pattern += re.escape(shown[position : match.start()])
        token = match.group()
        if token in names:
            pattern += f"(?P={names[token]})"
        else:
            names[token] = f"id{len(names)}"
            pattern += f"(?P<{names[token]}>[0-9a-f]{{{len(token)}}})"
        position = match.end()
    return pattern + re.escape(shown[position:])


def normal(text: str) -> str:
    return "\n".join(line.rstrip() for line in text.strip("\n").splitlines())


def assert_prints(outputs: list[str], shown: list[Block]) -> None:
    """Each output is what its block shows (hex ids matched across all of them)."""
    separator = "\n=====\n"
    expected = separator.join(normal(block.body) for block in shown)
    actual = separator.join(normal(out) for out in outputs)
    assert re.fullmatch(hex_ids_as_groups(expected), actual), (
        f"{', '.join(b.id for b in shown)} shows:\n{expected}\n\nbut the program printed:\n{actual}"
    )


@pytest.mark.parametrize(("block", "backend"), list(runs()))
def test_a_program_of_the_docs_runs(block: Block, backend: str | None, tmp_path: Path) -> None:
    server = RedisServer() if uses_redis(block.source) else None
    try:
        path = write(block, tmp_path, server.url if server else None)
        command = [sys.executable, str(path)]
        if backend is not None:
            command = [sys.executable, "-c", LAUNCHER, backend, str(path)]
        done = subprocess.run(
            command,
            cwd=tmp_path,
            env=environment(),
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
        )
    finally:
        if server is not None:
            server.close()
    assert done.returncode == 0, f"{block.id} failed:\n{done.stderr}"
    output = shown_output(block)
    if output is not None:
        assert_prints([done.stdout], [output])


@pytest.mark.parametrize("block", PYTHON, ids=[block.id for block in PYTHON])
def test_every_python_block_compiles(block: Block) -> None:
    compile(block.source, block.id, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT, dont_inherit=True)


def test_the_rule_finds_the_programs_and_the_exceptions_still_apply() -> None:
    programs = [block for block in PYTHON if block.program]
    assert len(programs) >= 8, [block.id for block in programs]
    separate = {(block.page, block.filename) for block in programs}
    assert set(SEPARATE) <= separate, "an entry of SEPARATE names no program any more"
    included = {block.included for block in BLOCKS if block.included}
    assert included <= set(INCLUDED), (
        f"an included program no test runs: {included - set(INCLUDED)}"
    )
    for example, test in INCLUDED.items():
        assert (ROOT / example).exists()
        assert Path(example).stem in (ROOT / test).read_text(), f"{test} does not run {example}"


@pytest.mark.redis
def test_a_trace_across_two_processes(tmp_path: Path) -> None:
    """docs/observability.md: the worker (process B) waits for an order, the publisher
    (process A) sends it; each prints what the page shows, one trace across both."""
    page = [block for block in BLOCKS if block.page == "docs/observability.md"]
    files = {block.filename: block for block in page if block.filename}
    worker, publisher = files["worker.py"], files["publisher.py"]
    shown_a = shown_output(publisher)
    assert shown_a is not None
    shown_b = page[page.index(shown_a) + 1]
    assert shown_b.shows_output
    assert "process B" in shown_b.intro
    server = RedisServer()
    try:
        for block in (files["tracing.py"], worker, publisher):
            write(block, tmp_path, server.url)
        b = subprocess.Popen(
            [sys.executable, "worker.py"],
            cwd=tmp_path,
            env=environment(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            first = read_until(b, b"waiting for an order\n")
            a = subprocess.run(
                [sys.executable, "publisher.py"],
                cwd=tmp_path,
                env=environment(),
                capture_output=True,
                text=True,
                timeout=TIMEOUT,
            )
            assert a.returncode == 0, a.stderr
            rest, errors = b.communicate(timeout=TIMEOUT)
        finally:
            b.kill()
            b.wait()
        assert b.returncode == 0, errors.decode()
    finally:
        server.close()
    assert_prints([a.stdout, (first + rest).decode()], [shown_a, shown_b])


def read_until(process: subprocess.Popen[bytes], end: bytes) -> bytes:
    """What the process printed, up to and including ``end`` (within TIMEOUT)."""
    assert process.stdout is not None
    got = b""
    deadline = time.monotonic() + TIMEOUT
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        while not got.endswith(end):
            left = deadline - time.monotonic()
            assert left > 0, f"never printed {end!r}: {got!r}"
            assert process.poll() is None, f"ended before printing {end!r}: {got!r}"
            if selector.select(left):
                chunk = os.read(process.stdout.fileno(), 1)
                assert chunk, f"ended before printing {end!r}: {got!r}"
                got += chunk
    return got


@pytest.mark.redis
def test_the_testing_page_is_a_test_suite_that_passes(tmp_path: Path) -> None:
    """docs/testing.md's files, as a project of their own: pytest passes every test,
    the anyio ones on trio and on asyncio (its conftest.py), pytest-trio's too."""
    files = [block for block in BLOCKS if block.page == "docs/testing.md" and block.filename]
    names = [block.filename for block in files]
    assert len(names) == len(set(names))
    assert "conftest.py" in names
    for block in files:
        write(block, tmp_path, None)
    (tmp_path / "pytest.ini").write_text("[pytest]\n")  # this directory is the root
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-v", "-p", "no:cacheprovider", "-W", "error"],
        cwd=tmp_path,
        env=environment(),
        capture_output=True,
        text=True,
        timeout=TIMEOUT * 2,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    passed = set(re.findall(r"::(\w+(?:\[\w+\])?) PASSED", done.stdout))
    assert not re.search(r" (FAILED|ERROR|SKIPPED|XFAIL|XPASS)", done.stdout), done.stdout
    for block in files:
        for test in re.findall(r"^(?:async )?def (test_\w+)", block.source, re.M):
            if "pytest.mark.anyio" in block.source:
                assert {f"{test}[trio]", f"{test}[asyncio]"} <= passed, done.stdout
            else:
                assert test in passed, done.stdout


# -- the pages, as Markdown ----------------------------------------------------------


def test_every_page_of_the_site_is_linked_from_its_home_page() -> None:
    """Each page of mkdocs.yml's nav is linked from docs/index.md, with what it is."""
    nav = re.findall(r"^\s+- [^:\n]+: ([\w-]+\.md)\s*$", (ROOT / "mkdocs.yml").read_text(), re.M)
    assert "api.md" in nav
    assert "testing.md" in nav
    index = (ROOT / "docs" / "index.md").read_text()
    for page in nav:
        if page != "index.md":
            assert re.search(rf"^- \[[^\]]+\]\({re.escape(page)}\): \S", index, re.M), page


def test_the_docs_never_promise_an_install_from_the_package_index() -> None:
    """tidings is not on PyPI: the pages install it from a clone or a wheel (and may
    say, in a line that says "not", that ``pip install tidings`` does not work)."""
    for page in [*PAGES, *sorted((ROOT / "examples").glob("*.py"))]:
        for line in page.read_text().splitlines():
            if re.search(r"pip install\s+[\"']?tidings\b", line):
                assert re.search(r"\bnot\b", line), f"{page}: {line}"
    assert "pip install ." in (ROOT / "README.md").read_text()
    assert "pip install ." in (ROOT / "docs" / "getting-started.md").read_text()


def test_the_install_sections_name_every_extra() -> None:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    assert "otel" in extras
    for page in (ROOT / "README.md", ROOT / "docs" / "getting-started.md"):
        text = page.read_text()
        assert [
            name for name in extras if f"`{name}`" not in text and f".[{name}]" not in text
        ] == []


# -- the built site ------------------------------------------------------------------


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The site, built once for this module with ``mkdocs build --strict``."""
    pytest.importorskip("mkdocs", reason="mkdocs is not installed (pip install -e '.[test]')")
    pytest.importorskip("mkdocstrings", reason="mkdocstrings is not installed")
    directory = tmp_path_factory.mktemp("site")
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet", "--site-dir", directory],
        cwd=ROOT,
        # Not measured by coverage (pyproject's patch = ["subprocess"]): the build reads
        # the sources, it runs none of them, and measuring it doubles its time.
        env={
            **{k: v for k, v in environment().items() if k != "COVERAGE_PROCESS_CONFIG"},
            "NO_MKDOCS_2_WARNING": "1",
        },
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return directory


class Html(HTMLParser):
    """What the checks read of a page: its ids, its prose (text outside code), the
    lines of its code blocks, its cross-references and some tags."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.ids: set[str] = set()
        self.prose: list[str] = []
        self.code_lines: list[str] = []
        #: (identifier, in the first cell of a table row) of each <span title=...>
        self.refs: list[tuple[str, bool]] = []
        self.tags: dict[str, int] = {}
        self._code = 0
        self._pre: list[str] | None = None
        self._cell = 0  # which cell of its row the parser is in (1 = the first)
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        self.tags[tag] = self.tags.get(tag, 0) + 1
        if attributes.get("id"):
            self.ids.add(str(attributes["id"]))
        if tag in ("code", "pre", "script", "style"):
            self._code += 1
        if tag == "pre":
            self._pre = []
        if tag == "tr":
            self._cell = 0
        if tag == "td":
            self._cell += 1
        if tag == "span" and attributes.get("title"):
            self.refs.append((str(attributes["title"]), self._cell == 1))

    def handle_endtag(self, tag: str) -> None:
        if tag in ("code", "pre", "script", "style"):
            self._code -= 1
        if tag == "pre" and self._pre is not None:
            self.code_lines += "".join(self._pre).splitlines()
            self._pre = None

    def handle_data(self, data: str) -> None:
        if self._pre is not None:
            self._pre.append(data)
        elif not self._code:
            self.prose.append(data)


@pytest.fixture(scope="module")
def api(site: Path) -> Html:
    return Html((site / "api" / "index.html").read_text())


def test_the_api_page_has_no_rest_literal_block_markers(api: Html) -> None:
    prose = " ".join(api.prose)
    assert "::" not in prose, re.findall(r".{60}::.{20}", prose)


def test_the_api_page_never_names_the_private_base_class(site: Path) -> None:
    assert "Lifecycle" not in (site / "api" / "index.html").read_text()


def test_the_api_page_s_cross_references_all_resolve(site: Path, api: Html) -> None:
    """A reference mkdocs-autorefs cannot resolve is left as ``<span
    title="tidings.x.Name">Name</span>`` (a dead name) or as the Markdown
    ``[Name][id]`` it was written as. Names of tidings' own must all be anchors on
    the page, except an attribute in the first column of its own object's table."""
    dead = sorted(
        {
            identifier
            for identifier, name_cell in api.refs
            if identifier.startswith("tidings")
            and identifier not in api.ids
            and not (name_cell and identifier.rpartition(".")[0] in api.ids)
        }
    )
    assert dead == []
    assert not re.findall(r"\[[^\]\n]+\]\[[^\]\n]*\]", " ".join(api.prose))
    assert "<autoref" not in (site / "api" / "index.html").read_text()


@pytest.mark.parametrize(
    ("module", "prefix"),
    [(tidings, "tidings"), (tidings.testing, "tidings.testing"), (tidings.asgi, "tidings.asgi")],
    ids=["tidings", "tidings.testing", "tidings.asgi"],
)
def test_the_api_page_documents_every_export(
    api: Html, module: types.ModuleType, prefix: str
) -> None:
    names = list(module.__all__)  # read now: exports are added over time
    assert names
    missing = [name for name in names if f"{prefix}.{name}" not in api.ids]
    assert missing == [], f"add them to docs/api.md: {missing}"


def test_the_api_page_s_code_fits_the_column(site: Path, api: Html) -> None:
    """Signatures are laid out to fit (mkdocs.yml), code is short enough, and what
    is longer on a narrow screen wraps (docs/assets/extra.css) instead of being cut."""
    assert api.code_lines
    long = [line for line in api.code_lines if len(line) > 88]
    assert long == []
    html = (site / "api" / "index.html").read_text()
    assert "assets/extra.css" in html
    assert "white-space: pre-wrap" in (site / "assets" / "extra.css").read_text()


def test_the_api_page_renders_examples_as_code(api: Html) -> None:
    """A ``>>>`` outside an ``Examples:`` section is Markdown's quote, thrice."""
    assert api.tags.get("blockquote", 0) == 0
    assert any(line.startswith(">>> ") for line in api.code_lines)
