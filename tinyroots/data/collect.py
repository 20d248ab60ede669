"""Collect: turn paths, directories and globs into a stream of documents.

    inputs  ->  resolve_inputs()  ->  files  ->  check_file()  ->  iter_documents()  ->  Document

* a directory is walked recursively, in sorted order, skipping hidden files and folders;
* a pattern with * ? or [ is a glob (** crosses directories);
* ``.jsonl`` / ``.jsonl.gz`` files hold one JSON object per line with the text in a field
  (``text`` unless told otherwise); every other file is plain UTF-8 text (``.gz`` is
  decompressed), cut into documents by ``txt_split``.

Nothing here holds more than one document (and one read block) in memory: a corpus far larger
than RAM streams through. A file that is binary, not UTF-8, or a corrupt gzip is reported by
check_file and skipped, never a crash.
"""

import codecs
import glob
import gzip
import json
import os
import zlib
from dataclasses import dataclass

BLOCK = 1 << 20  # bytes read at a time when checking files, characters when reading lines


@dataclass(frozen=True)
class Document:
    """One document: its text, the file it came from, and an id unique within the corpus."""
    text: str
    source: str
    id: str


# --------------------------------------------------------------------------------------------
# paths

def _is_glob(pattern):
    return any(c in pattern for c in "*?[")


def _walk(directory):
    """Every non-hidden file under directory, sorted, recursively."""
    for root, dirs, files in os.walk(directory):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))  # walk in sorted order
        for name in sorted(files):
            if not name.startswith("."):
                yield os.path.join(root, name)


def resolve_inputs(inputs):
    """Expand files, directories and globs into a list of files (each once, in order).

    Raises FileNotFoundError naming the input when a path does not exist or a glob matches
    nothing: a typo must not silently produce an empty corpus.
    """
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    files, seen = [], set()

    def add(path):
        key = os.path.realpath(path)
        if key not in seen:
            seen.add(key)
            files.append(path)

    for item in inputs:
        item = os.fspath(item)
        if _is_glob(item) and not os.path.exists(item):
            matches = sorted(glob.glob(item, recursive=True))
            if not matches:
                raise FileNotFoundError(f"input glob {item!r} matches no file")
        else:
            if not os.path.exists(item):
                raise FileNotFoundError(f"input {item!r}: no such file or directory")
            matches = [item]
        for path in matches:
            if os.path.isdir(path):
                for f in _walk(path):
                    add(f)
            else:
                add(path)
    return files


def file_kind(path):
    """'jsonl' for .jsonl / .jsonl.gz (also .ndjson), else 'text'.

    >>> file_kind("a/b.jsonl.gz"), file_kind("notes.txt")
    ('jsonl', 'text')
    """
    name = path.lower()
    if name.endswith(".gz"):
        name = name[:-3]
    return "jsonl" if name.endswith((".jsonl", ".ndjson")) else "text"


def _open_binary(path):
    return gzip.open(path, "rb") if path.lower().endswith(".gz") else open(path, "rb")


def check_file(path):
    """None if path is readable UTF-8 text, else a short reason to report and skip it.

    Reads the whole file once (decompressing .gz), in blocks: a NUL byte in the first block
    means binary; any invalid UTF-8 sequence means not UTF-8 (with its byte offset).

    subtle: we check the whole file before emitting any document from it, so a bad byte near
    the end cannot leave half a file in the corpus.
    """
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset = 0
    try:
        with _open_binary(path) as f:
            while True:
                block = f.read(BLOCK)
                nul = block.find(b"\x00") if offset == 0 else -1
                if nul >= 0:
                    return f"binary file (NUL byte at offset {nul})"
                pending = len(decoder.getstate()[0])  # bytes of a character cut by the block
                try:
                    decoder.decode(block, final=not block)
                except UnicodeDecodeError as exc:
                    # exc.start counts from the pending bytes, which came before offset
                    return f"not UTF-8 (invalid byte at offset {offset - pending + exc.start})"
                if not block:
                    return None
                offset += len(block)
    except (OSError, EOFError, zlib.error) as exc:  # corrupt or truncated gzip, unreadable
        return f"unreadable ({type(exc).__name__}: {exc})"


# --------------------------------------------------------------------------------------------
# documents

def _read_lines(f):
    # subtle: readline with a limit, so one enormous line cannot fill memory.
    return iter(lambda: f.readline(BLOCK), "")


def _text_documents(path, split, max_chars):
    """Documents of a plain-text file.

    split='file': the whole file, cut at a blank line once it passes max_chars (and at any
    line past 2 * max_chars); 'paragraph': each blank-line-separated block; 'line': each line.
    """
    with (gzip.open(path, "rt", encoding="utf-8") if path.lower().endswith(".gz")
          else open(path, encoding="utf-8")) as f:
        if split == "line":
            for line in _read_lines(f):
                if line.strip():
                    yield line.rstrip("\n")
            return
        parts, size = [], 0
        for line in _read_lines(f):
            blank = not line.strip()
            if split == "paragraph":
                cut = blank
            else:
                cut = (blank and size >= max_chars) or size >= 2 * max_chars
            if parts and cut:
                yield "".join(parts)
                parts, size = [], 0
            if parts or not blank:  # no leading blank lines in a document
                parts.append(line)
                size += len(line)
        if parts:
            yield "".join(parts)


def _jsonl_documents(path, text_field, id_field, problems):
    """(text, id) of each record; malformed lines are counted into problems, not raised."""
    opener = gzip.open if path.lower().endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        for lineno, line in enumerate(_read_lines(f), 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                problems.append(f"{path}:{lineno}: not valid JSON")
                continue
            except RecursionError:  # "[[[[..." 100,000 deep: json recurses once per level
                problems.append(f"{path}:{lineno}: JSON nested too deeply")
                continue
            text = record.get(text_field) if isinstance(record, dict) else None
            if not isinstance(text, str):
                problems.append(f"{path}:{lineno}: no string field {text_field!r}")
                continue
            rid = record.get(id_field)
            yield text, (str(rid) if rid is not None else f"{path}:{lineno}")


def iter_documents(files, text_field="text", id_field="id", txt_split="file",
                   max_doc_chars=100_000, problems=None):
    """Yield a Document for every document of every file, in order (a generator).

    files should come from resolve_inputs and have passed check_file. Malformed JSONL records
    are skipped and described in the problems list when one is given.
    """
    problems = [] if problems is None else problems
    for path in files:
        if file_kind(path) == "jsonl":
            for text, rid in _jsonl_documents(path, text_field, id_field, problems):
                yield Document(text, path, rid)
        else:
            for k, text in enumerate(_text_documents(path, txt_split, max_doc_chars)):
                yield Document(text, path, f"{path}#{k}")
