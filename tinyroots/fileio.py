"""Small file helpers: atomic writes and JSON, shared by checkpoints, runs and configs.

A write goes to a temporary file in the same directory, is flushed to disk, then renamed over
the target. os.replace is atomic, so a reader (or a crash, or Ctrl-C) sees either the old file
or the new one, never half of one.
"""

import json
import os
import sys
import tempfile
from contextlib import contextmanager


@contextmanager
def atomic_write(path, mode="wb"):
    """Open a temporary file next to ``path``; on success fsync it and rename it over ``path``.

    If anything fails (or Ctrl-C arrives) before the rename, ``path`` is untouched and the
    temporary file is removed.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp",
                               dir=directory)
    try:
        # mkstemp creates the file 0600; give it the mode open() would have: 0666 minus umask
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _umask():
    """The process umask (reading it means setting it, so it is set straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_json(path, obj):
    """Write obj as indented JSON, atomically."""
    with atomic_write(path, "w") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")


def parse_json(text, source, error=ValueError, unique_keys=False):
    """Parse JSON text (str or UTF-8 bytes) read from ``source``; every problem is one ``error``
    naming the source: not UTF-8, not JSON, nested too deeply, or (unique_keys) a key twice.

    subtle: Python's JSON parser recurses once per nesting level, so 200,000 "[" would end in
    a RecursionError (a traceback naming no file); that is caught here and said in one line.
    """
    def no_duplicates(pairs):
        seen = {}
        for k, v in pairs:
            if k in seen:
                raise error(f"{source}: the key {k!r} appears twice")
            seen[k] = v
        return seen
    try:
        if isinstance(text, (bytes, bytearray, memoryview)):
            text = bytes(text).decode("utf-8")
        return json.loads(text, object_pairs_hook=no_duplicates if unique_keys else None)
    except UnicodeDecodeError as exc:
        raise error(f"{source}: not UTF-8 text ({exc})") from None
    except json.JSONDecodeError as exc:
        raise error(f"{source}: not valid JSON ({exc})") from None
    except RecursionError:
        raise error(f"{source}: not valid JSON here (arrays or objects nested more than "
                    f"{sys.getrecursionlimit()} deep)") from None


def read_json(path, what="file", error=ValueError, unique_keys=False, missing=None):
    """Parse a JSON file; a missing file raises ``missing`` (default: ``error``), anything else
    wrong (see parse_json) raises ``error``; both name the path."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise (missing or error)(f"{path}: {what} not found") from None
    except IsADirectoryError:
        raise error(f"{path}: {what} is a directory, expected a JSON file") from None
    return parse_json(raw, path, error, unique_keys)


def require_types(obj, source, types, error=ValueError):
    """Check the keys of a parsed JSON object: ``types`` maps key -> type (or tuple of types)
    that key must have when present. A bool never counts as an int. Returns obj.

        require_types({"n_layer": "2"}, "config.json", {"n_layer": int})
        -> ValueError: config.json: 'n_layer' is '2' (str), expected int
    """
    if not isinstance(obj, dict):
        raise error(f"{source}: expected a JSON object, got {type(obj).__name__}")
    for key, want in types.items():
        if key not in obj:
            continue
        value = obj[key]
        want = want if isinstance(want, tuple) else (want,)
        if not isinstance(value, want) or (isinstance(value, bool) and bool not in want):
            names = " or ".join("null" if w is type(None) else w.__name__ for w in want)
            raise error(f"{source}: '{key}' is {value!r} ({type(value).__name__}), expected "
                        f"{names}")
    return obj
