"""tinyroots.data.collect: inputs, file checks, and streaming documents with bounded memory."""

import gzip
import inspect
import os
import subprocess
import sys
import textwrap

import pytest

from tinyroots.data.collect import check_file, file_kind, iter_documents, resolve_inputs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def tree(tmp_path):
    (tmp_path / "sub" / "deeper").mkdir(parents=True)
    (tmp_path / ".hidden").mkdir()
    (tmp_path / "a.txt").write_text("alpha\n", encoding="utf-8")
    (tmp_path / "sub" / "b.txt").write_text("beta\n", encoding="utf-8")
    (tmp_path / "sub" / "deeper" / "c.jsonl").write_text('{"text": "gamma"}\n', encoding="utf-8")
    (tmp_path / ".hidden" / "h.txt").write_text("hidden\n", encoding="utf-8")
    (tmp_path / ".dotfile").write_text("dot\n", encoding="utf-8")
    return tmp_path


def test_resolve_inputs_dirs_globs_files(tree):
    rel = lambda paths: [os.path.relpath(p, tree) for p in paths]  # noqa: E731
    assert rel(resolve_inputs([str(tree)])) == ["a.txt", "sub/b.txt", "sub/deeper/c.jsonl"]
    assert rel(resolve_inputs([str(tree / "**" / "*.txt")])) == ["a.txt", "sub/b.txt"]
    # the same file twice is read once
    assert rel(resolve_inputs([str(tree / "a.txt"), str(tree)])) == \
        ["a.txt", "sub/b.txt", "sub/deeper/c.jsonl"]
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        resolve_inputs([str(tree / "nope.txt")])
    with pytest.raises(FileNotFoundError, match=r"\*.xyz"):
        resolve_inputs([str(tree / "*.xyz")])


def test_file_kind():
    assert file_kind("x.jsonl") == file_kind("X.JSONL.GZ") == file_kind("a.ndjson") == "jsonl"
    assert file_kind("x.txt") == file_kind("x.txt.gz") == file_kind("README") == "text"


def test_check_file(tmp_path):
    good = tmp_path / "good.txt"
    good.write_text("héllo\n" * 1000, encoding="utf-8")
    binary = tmp_path / "img.png"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)))
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes(("ok " * 1000 + "café").encode("latin-1"))
    gz = tmp_path / "c.jsonl.gz"
    gz.write_bytes(gzip.compress(b'{"text": "x"}\n'))
    broken_gz = tmp_path / "broken.jsonl.gz"
    broken_gz.write_bytes(gzip.compress(b'{"text": "x"}\n' * 100)[:40])
    assert check_file(str(good)) is None
    assert check_file(str(gz)) is None
    assert check_file(str(binary)).startswith("binary file (NUL byte at offset 8)")
    assert check_file(str(latin1)) == "not UTF-8 (invalid byte at offset 3003)"
    assert check_file(str(broken_gz)).startswith("unreadable")


def test_text_splits(tmp_path):
    p = tmp_path / "t.txt"
    p.write_text("\n\npara one\nline two\n\n\npara two\n\nthree\n", encoding="utf-8")
    texts = lambda **kw: [d.text for d in iter_documents([str(p)], **kw)]  # noqa: E731
    assert texts(txt_split="file") == ["para one\nline two\n\n\npara two\n\nthree\n"]
    assert texts(txt_split="paragraph") == ["para one\nline two\n", "para two\n", "three\n"]
    assert texts(txt_split="line") == ["para one", "line two", "para two", "three"]
    # file mode cuts long files at blank lines once past max_doc_chars
    assert texts(txt_split="file", max_doc_chars=10) == \
        ["para one\nline two\n", "para two\n\nthree\n"]
    ids = [d.id for d in iter_documents([str(p)], txt_split="paragraph")]
    assert ids == [f"{p}#0", f"{p}#1", f"{p}#2"]


def test_jsonl_fields_ids_and_problems(tmp_path):
    p = tmp_path / "d.jsonl.gz"
    lines = ['{"content": "one", "doc": 7}', "", "not json", '{"other": 1}', "[1, 2]",
             '{"content": "two"}']
    p.write_bytes(gzip.compress("\n".join(lines).encode()))
    problems = []
    docs = list(iter_documents([str(p)], text_field="content", id_field="doc",
                               problems=problems))
    assert [(d.text, d.id) for d in docs] == [("one", "7"), ("two", f"{p}:6")]
    assert docs[0].source == str(p)
    assert [s.split(": ", 1)[1] for s in problems] == [
        "not valid JSON", "no string field 'content'", "no string field 'content'"]


def test_reader_is_lazy(tmp_path):
    p = tmp_path / "x.txt"
    p.write_text("a\n\nb\n", encoding="utf-8")
    gen = iter_documents([str(p)], txt_split="paragraph")
    assert inspect.isgenerator(gen)
    assert next(gen).text == "a\n"


def test_reader_memory_is_bounded(tmp_path):
    """Stream 160 MB of text (one 40 MB line included) and check the peak RSS barely moves."""
    script = textwrap.dedent(f"""
        import resource, sys
        sys.path.insert(0, {ROOT!r})
        from tinyroots.data.collect import iter_documents, check_file
        path = sys.argv[1]
        line = ("All the world's a stage, and all the men and women merely players. " * 15)
        with open(path, "w") as f:
            for i in range(12):
                f.write((line + "\\n") * 10_000 + "\\n")       # 10 MB paragraphs
            f.write("x" * 40_000_000 + "\\n")                  # one 40 MB line
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        assert check_file(path) is None
        n = total = 0
        for mode in ("paragraph", "line"):
            for doc in iter_documents([path], txt_split=mode):
                n += 1
                total += len(doc.text)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(n, total, (peak - base) // 1024)
    """)
    out = subprocess.run([sys.executable, "-c", script, str(tmp_path / "big.txt")],
                         capture_output=True, text=True, check=True).stdout.split()
    n_docs, n_chars, growth_mb = map(int, out)
    assert n_chars > 300_000_000  # read twice
    # a document is at most ~10 MB here (a paragraph; the long line comes in 1 MB reads);
    # materialising the file would be 160+ MB
    assert growth_mb < 60, f"peak RSS grew by {growth_mb} MB"
