"""The cleaning run end to end: CLI on a temp dir of mixed inputs, report, workers, rejected."""

import gzip
import json
import os
import subprocess
import sys

import pytest

from tinyroots.data import CleanConfig, clean, clean_document, format_report
from tinyroots.data.cleaning import STEPS, line_hashes, line_key, line_keys, line_keys_py, \
    remove_lines
from tinyroots.data.synthetic import FOOTER, HEADER, chunk_documents, make_corpus, shakespeare

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = chunk_documents(shakespeare())


def write_jsonl(path, docs, gz=False):
    data = "".join(json.dumps(d) + "\n" for d in docs).encode()
    path.write_bytes(gzip.compress(data) if gz else data)


def read_jsonl(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """A folder with every kind of input, and the truth of what was planted."""
    root = tmp_path_factory.mktemp("corpus")
    docs, truth = make_corpus(n_docs=300, seed=3, source="chunks")
    (root / "nested" / "deep").mkdir(parents=True)
    write_jsonl(root / "part1.jsonl", docs[:100])
    write_jsonl(root / "nested" / "part2.jsonl.gz", docs[100:200], gz=True)
    for d in docs[200:250]:
        (root / "nested" / "deep" / f"{d['id']}.txt").write_text(d["text"], encoding="utf-8")
    write_jsonl(root / "part3.jsonl", docs[250:])
    (root / "nested" / "photo.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00" + os.urandom(100))
    (root / "legacy.txt").write_bytes("Très bien, ça marche. ".encode("latin-1") * 10)
    return root, docs, truth


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "tinyroots.data", *args], cwd=ROOT,
                          capture_output=True, text=True)


# -- per-document pieces ---------------------------------------------------------------------

def test_line_keys_and_boilerplate_removal():
    text = f"{HEADER}\nshort\n  {FOOTER}  \nsome real line of the play, long enough\n{FOOTER}"
    keys = line_keys_py(text, 20)
    assert keys[1] == 0 and keys[2] == keys[4] == line_key(FOOTER)
    assert (line_keys(text, 20) == keys).all()  # the Cython twin, when built
    assert len(line_hashes(text, 20)) == 3  # header, footer, the real line: once each
    bp = {line_key(HEADER), line_key(FOOTER)}
    body, n = remove_lines(text, bp, 20)
    assert (body, n) == ("short\nsome real line of the play, long enough", 3)
    assert remove_lines(text, set(), 20) == (text, 0)
    assert remove_lines(text, {line_key("not in the text at all, no")}, 20) == (text, 0)


def test_clean_document_steps():
    cfg = CleanConfig()
    doc = DOCS[5] + "\nWrite to jane@example.com about it."
    out = clean_document(doc, cfg)
    assert out["reason"] is None and "<EMAIL>" in out["text"] and out["pii"] == {"<EMAIL>": 1}
    assert "jane@example.com" not in out["text"]
    assert out["out_bytes"] == len(out["text"].encode())
    bp = {line_key("Write to jane@example.com about it.")}
    out = clean_document(doc, cfg, boilerplate=bp)
    assert out["lines_removed"] == 1 and out["pii"] == {}
    assert out["lang"] == "en" and out["lang_score"] >= 0.8 and out["params"] == "en"
    english = CleanConfig(language_id=False, languages=("en",))
    assert clean_document("tiny", english)["reason"] == "too_few_words"
    assert clean_document("tiny", cfg)["reason"] == "uncertain_language"


# -- the whole run ----------------------------------------------------------------------------

def test_cli_end_to_end(corpus, tmp_path):
    root, docs, truth = corpus
    out = tmp_path / "out"
    res = run_cli("clean", str(root / "part1.jsonl"), str(root / "nested"),
                  str(root / "part*.jsonl"), str(root / "legacy.txt"), "-o", str(out),
                  "--keep-rejected", "5", "--min-words", "20", "--no-near-dedup",
                  "--languages", "en")
    assert res.returncode == 0, res.stderr
    # the table: in, each step, out
    assert "input" in res.stdout and "output" in res.stdout and "exact_dup" in res.stdout
    assert "language" in res.stdout  # the Cyrillic and Chinese noise: not English
    assert "photo.png: binary file" in res.stdout and "legacy.txt: not UTF-8" in res.stdout

    report = json.loads((out / "report.json").read_text())
    assert report["config"]["near_dedup"] is False and report["config"]["min_words"] == 20
    assert report["files"] == 3 + 50 and len(report["skipped_files"]) == 2  # 3 jsonl, 50 txt
    assert report["docs_in"] == len(docs)  # part1 given twice (file and glob): read once
    # every byte is accounted for: in - removed by each step = out
    removed = sum(report["steps"][s]["bytes"] for s in STEPS)
    assert report["bytes_in"] - removed == report["bytes_out"]
    removed_docs = sum(report["steps"][s]["docs"] for s in STEPS)
    assert report["docs_in"] - removed_docs == report["docs_out"]

    kept = read_jsonl(out / "clean.jsonl")
    assert len(kept) == report["docs_out"]
    assert all(set(d) == {"text", "source", "id"} for d in kept)
    ids = {d["id"] for d in kept}
    assert not ids & set(truth["exact_dup"])  # exact duplicates gone
    assert not ids & set(truth["noise"])  # every planted noise document filtered
    txt_ids = {d["id"] for d in kept if d["source"].endswith(".txt")}
    assert txt_ids and all(i.endswith("#0") for i in txt_ids)
    # PII: no planted secret survives, and the tags are there
    text = "\n".join(d["text"] for d in kept)
    for doc_id, value in truth["pii_values"].items():
        assert value not in text, (doc_id, value)
    assert sum(report["pii"].values()) >= len(set(truth["pii"]) & ids)
    # boilerplate: header and footer are gone from every document
    assert HEADER not in text and FOOTER not in text
    assert report["steps"]["boilerplate"]["lines"] >= 2 * 10
    # rejected samples, at most 5 per reason, each with its reason
    rejected = sorted(os.listdir(out / "rejected"))
    assert "exact_dup.jsonl" in rejected
    for name in rejected:
        items = read_jsonl(out / "rejected" / name)
        assert 1 <= len(items) <= 5
        assert all(i["reason"] == name[:-len(".jsonl")] for i in items)


def test_workers_give_the_same_output(corpus, tmp_path):
    root, _, _ = corpus
    reports = {}
    for workers in (1, 2):
        reports[workers] = clean([str(root)], str(tmp_path / f"w{workers}"), workers=workers,
                                 keep_rejected=3)
    one, two = (tmp_path / "w1" / "clean.jsonl").read_bytes(), \
        (tmp_path / "w2" / "clean.jsonl").read_bytes()
    assert one == two and len(one) > 100_000
    for key in ("steps", "pii", "docs_out", "bytes_out", "skipped_files"):
        assert reports[1][key] == reports[2][key]
    for name in os.listdir(tmp_path / "w1" / "rejected"):
        assert (tmp_path / "w1" / "rejected" / name).read_bytes() == \
            (tmp_path / "w2" / "rejected" / name).read_bytes()
    assert "MB/s" in format_report(reports[2])


def test_pure_python_path_gives_the_same_output(corpus, tmp_path):
    """TINYROOTS_BACKEND=numpy: no Cython anywhere; the output must not change by a byte."""
    root, _, _ = corpus
    clean([str(root / "part1.jsonl")], str(tmp_path / "fast"))
    env = dict(os.environ, TINYROOTS_BACKEND="numpy")
    res = subprocess.run([sys.executable, "-m", "tinyroots.data", "clean",
                          str(root / "part1.jsonl"), "-o", str(tmp_path / "pure")],
                         cwd=ROOT, env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "fast" / "clean.jsonl").read_bytes() == \
        (tmp_path / "pure" / "clean.jsonl").read_bytes()


def test_cli_config_file_and_errors(corpus, tmp_path):
    root, _, _ = corpus
    cfg = tmp_path / "clean.toml"
    cfg.write_text("[clean]\nmin_words = 5000\npii = false\n", encoding="utf-8")
    res = run_cli("clean", str(root / "part1.jsonl"), "-o", str(tmp_path / "o"), "--config",
                  str(cfg), "--max-words", "200000")
    assert res.returncode == 0, res.stderr
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    assert report["config"]["min_words"] == 5000 and report["config"]["pii"] is False
    assert report["config"]["max_words"] == 200000 and report["docs_out"] == 0

    bad = tmp_path / "bad.json"
    bad.write_text('{"min_wrds": 3}', encoding="utf-8")
    res = run_cli("clean", str(root), "-o", str(tmp_path / "o2"), "--config", str(bad))
    assert res.returncode == 2 and "unknown CleanConfig key 'min_wrds'" in res.stderr
    assert "did you mean 'min_words'" in res.stderr
    res = run_cli("clean", str(root), "-o", str(tmp_path / "o3"), "--max-special-chars", "2")
    assert res.returncode == 2 and "CleanConfig.max_special_chars" in res.stderr
    res = run_cli("clean", str(tmp_path / "missing"), "-o", str(tmp_path / "o4"))
    assert res.returncode == 2 and "missing" in res.stderr


def test_empty_and_tiny_inputs(tmp_path):
    (tmp_path / "empty.txt").write_text("", encoding="utf-8")
    report = clean([str(tmp_path / "empty.txt")], str(tmp_path / "o"))
    assert report["docs_in"] == 0 and (tmp_path / "o" / "clean.jsonl").read_text() == ""


def test_ordered_map_is_lazy_and_ordered():
    """An endless input must not be read ahead without bound (Pool.imap would try)."""
    import itertools

    from tinyroots.data.parallel import ordered_map
    pulled = []

    def endless():
        for i in itertools.count():
            pulled.append(i)
            yield i, "x" * (i % 7)

    out = list(itertools.islice(ordered_map(len, endless(), workers=2), 50))
    assert out == [(i, i % 7) for i in range(50)]
    assert len(pulled) <= 50 + 4  # at most max_pending = 2 * workers ahead


# -- bad input is a clear error, and nothing private is written beside the corpus --------------

def test_rejected_samples_are_redacted(tmp_path):
    secret = "Write to jane.doe@example.com or call +1 (555) 123-4567."
    doc = DOCS[3] + "\n" + secret
    write_jsonl(tmp_path / "in.jsonl", [{"id": "a", "text": doc}, {"id": "b", "text": doc},
                                        {"id": "c", "text": "tiny " + secret}])
    clean([str(tmp_path / "in.jsonl")], str(tmp_path / "o"), keep_rejected=10)
    rejected = {name: read_jsonl(tmp_path / "o" / "rejected" / name)
                for name in os.listdir(tmp_path / "o" / "rejected")}
    assert set(rejected) >= {"exact_dup.jsonl"} and len(rejected) >= 2
    for items in rejected.values():
        for item in items:
            assert "jane.doe@example.com" not in item["text"] and "555" not in item["text"]
            assert "<EMAIL>" in item["text"] and "<PHONE>" in item["text"]


@pytest.mark.parametrize("args, message", [
    (["--workers", "0"], "--workers: expected an integer >= 1, got 0"),
    (["--keep-rejected", "-1"], "--keep-rejected: expected an integer >= 0, got -1"),
    (["--languages", "english"], "CleanConfig.languages: expected lid.176 language codes"),
])
def test_bad_clean_options_are_one_line_errors(tmp_path, args, message):
    (tmp_path / "a.txt").write_text(DOCS[0], encoding="utf-8")
    res = run_cli("clean", str(tmp_path / "a.txt"), "-o", str(tmp_path / "o"), *args)
    assert res.returncode == 2 and message in res.stderr and "Traceback" not in res.stderr


def test_output_that_is_a_file_is_an_error(tmp_path):
    (tmp_path / "a.txt").write_text(DOCS[0], encoding="utf-8")
    (tmp_path / "taken").write_text("keep me", encoding="utf-8")
    res = run_cli("clean", str(tmp_path / "a.txt"), "-o", str(tmp_path / "taken"))
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "is an existing file; expected a directory" in res.stderr
    assert (tmp_path / "taken").read_text() == "keep me"
    with pytest.raises(ValueError, match="workers: expected an integer >= 1"):
        clean([str(tmp_path / "a.txt")], str(tmp_path / "o"), workers=0)


def test_deeply_nested_json_is_counted_as_malformed(tmp_path):
    path = tmp_path / "deep.jsonl"
    path.write_text(json.dumps({"text": DOCS[0], "id": "ok"}) + "\n" + "[" * 200_000 + "\n",
                    encoding="utf-8")
    report = clean([str(path)], str(tmp_path / "o"))
    assert report["docs_in"] == 1 and report["docs_out"] == 1
    assert report["problems"] == [f"{path}:2: JSON nested too deeply"]
    res = run_cli("clean", str(path), "-o", str(tmp_path / "o2"))
    assert res.returncode == 0 and "1 malformed records skipped" in res.stdout
