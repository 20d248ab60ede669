"""Fine-tuning data: checking JSONL lines, the chat/translation templates, augmentation."""

import json

import numpy as np
import pytest

from tinyroots.finetune.data import (ASSISTANT, END, IGNORE, SOURCE, TARGET, USER, Augmenter,
                                     DataError, EpochSampler, chat_ids, pad_batch,
                                     read_examples, translation_ids, translation_prompt)
from tinyroots.tokenizer import CharTokenizer, Tokenizer


def write_lines(path, lines):
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


BAD_CLASSIFY = [
    ('{"text": "fine", "label": "a"}', None),
    ('{"text": "fine", "label": "b"', "line 2: invalid JSON"),
    ('{"label": "a"}', "line 3: missing field 'text'"),
    ('{"text": 5, "label": "a"}', "line 4: field 'text' must be a string, got int"),
    ('{"text": "   ", "label": "a"}', "line 5: field 'text' is empty"),
    ('{"text": "ok", "label": [1]}', "line 6: field 'label' must be a string or an integer"),
    ('["text", "label"]', "line 7: expected a JSON object, got list"),
    ('{"text": "ok", "label": true}', "line 8: field 'label' must be a string or an integer"),
]


@pytest.mark.parametrize("n", range(1, len(BAD_CLASSIFY)))
def test_each_bad_line_is_an_error_naming_its_line(tmp_path, n):
    good, (bad, message) = BAD_CLASSIFY[0][0], BAD_CLASSIFY[n]
    lines = [good] * n + [bad] + [good]
    path = write_lines(tmp_path / "d.jsonl", lines)
    expected = message.replace("line " + message.split()[1].rstrip(":"), f"line {n + 1}")
    with pytest.raises(DataError) as info:
        read_examples(path, "classify")
    assert str(info.value).startswith(f"{path} {expected}")
    assert "--bad-lines skip" in str(info.value)


def test_skip_mode_leaves_bad_lines_out_and_reports_them(tmp_path):
    lines = [line for line, _ in BAD_CLASSIFY] + ["", '{"text": "last", "label": "b"}']
    path = write_lines(tmp_path / "d.jsonl", lines)
    logged = []
    examples, skipped = read_examples(path, "classify", bad_lines="skip", log=logged.append)
    assert [(e["text"], e["label"], e["line"]) for e in examples] == [("fine", "a", 1),
                                                                      ("last", "b", 10)]
    assert [n for n, _ in skipped] == [2, 3, 4, 5, 6, 7, 8]      # the blank line 9 is no error
    assert "skipped 7 bad line(s)" in logged[0] and "line 3: missing field 'text'" in logged[0]


def test_chat_translate_and_lm_lines_are_checked(tmp_path):
    cases = {
        "chat": ['{"messages": [{"role": "user", "content": "hi"}]}',
                 "no assistant message"],
        "translate": ['{"source": "a cat", "target": ""}', "field 'target' is empty"],
        "lm": ['{"body": "x"}', "missing field 'text'"],
    }
    for task, (line, message) in cases.items():
        path = write_lines(tmp_path / f"{task}.jsonl", [line])
        with pytest.raises(DataError, match=f"line 1: {message}"):
            read_examples(path, task)
    path = write_lines(tmp_path / "c.jsonl", [
        '{"messages": [{"role": "bot", "content": "hi"}]}'])
    with pytest.raises(DataError, match=r"messages\[0\].role must be one of"):
        read_examples(path, "chat")
    path = write_lines(tmp_path / "p.jsonl", ['{"prompt": "hi", "response": "hello", '
                                              '"system": "be kind"}'])
    (ex,), _ = read_examples(path, "chat")
    assert [m["role"] for m in ex["messages"]] == ["system", "user", "assistant"]
    text = tmp_path / "plain.txt"
    text.write_text("Some new domain text.\n")
    (ex,), _ = read_examples(str(text), "lm")
    assert ex["text"].startswith("Some new")
    with pytest.raises(DataError, match="not found"):
        read_examples(str(tmp_path / "missing.jsonl"), "classify")


@pytest.fixture(scope="module")
def tok():
    t = Tokenizer.train("Hello there, how can I help? Where is my order? " * 20, vocab_size=300)
    t.add_special_tokens([USER, ASSISTANT, "<|system|>", END, SOURCE, TARGET])
    return t


def test_chat_template_labels_only_the_assistant(tok):
    msgs = [{"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Where is my order?"},
            {"role": "assistant", "content": "On its way."},
            {"role": "user", "content": "Thanks"},
            {"role": "assistant", "content": "Bye"}]
    ids, labels = chat_ids(tok, msgs)
    assert len(ids) == len(labels)
    text = tok.decode(ids)
    assert text == ("<|system|>Be brief.<|end|><|user|>Where is my order?<|end|>"
                    "<|assistant|>On its way.<|end|><|user|>Thanks<|end|><|assistant|>Bye<|end|>")
    trained = tok.decode([t for t in labels if t != IGNORE])
    assert trained == "On its way.<|end|>Bye<|end|>"
    assert all(lab in (IGNORE, t) for t, lab in zip(ids, labels))
    prompt, plabels = chat_ids(tok, msgs[:2], add_generation_prompt=True)
    assert prompt[-1] == tok.special_tokens[ASSISTANT] and set(plabels) == {IGNORE}
    # a user cannot end the assistant's turn by typing the token's spelling
    ids, _ = chat_ids(tok, [{"role": "user", "content": "<|end|>"}])
    assert ids.count(tok.special_tokens[END]) == 1


def test_translation_template_and_prompt(tok):
    ids, labels = translation_ids(tok, "Hello there", "Bonjour")
    assert tok.decode(ids) == "<|source|>Hello there<|target|>Bonjour<|endoftext|>"
    assert tok.decode([t for t in labels if t != IGNORE]) == "Bonjour<|endoftext|>"
    assert translation_prompt(tok, "Hello there\n") == ids[:ids.index(tok.special_tokens[
        TARGET]) + 1]
    plain = CharTokenizer.train("abc")
    with pytest.raises(ValueError, match="no <|source|> token"):
        translation_prompt(plain, "abc")


def test_augmenter_touches_only_unlabelled_unprotected_tokens():
    ids = list(range(100, 160))
    labels = [IGNORE] * 30 + ids[30:]
    aug = Augmenter(token_dropout=0.3, token_mask=0.3, span_deletion=0.9, mask_id=7,
                    protect=[100, 101], seed=0)
    for _ in range(50):
        new_ids, new_labels = aug(ids, labels)
        assert len(new_ids) == len(new_labels)
        # the labelled part survives untouched, in order, at the end
        assert new_labels[-30:] == labels[30:] and new_ids[-30:] == ids[30:]
        assert new_ids[:2] == [100, 101]                      # protected tokens stay
        assert set(new_ids[:-30]) <= set(ids[:30]) | {7}
    stats = aug.take_stats()
    assert stats["aug_tokens_dropped"] > 0 and stats["aug_tokens_masked"] > 0
    assert stats["aug_spans_deleted"] > 0 and aug.take_stats() == {}
    # classification (no labels): everything is eligible, never all of it deleted
    aug = Augmenter(token_dropout=0.99, seed=1)
    assert len(aug([5, 6, 7])[0]) >= 1
    off = Augmenter()
    assert off([1, 2], [IGNORE, 2]) == ([1, 2], [IGNORE, 2]) and not off.active
    with pytest.raises(ValueError, match="token_mask"):
        Augmenter(token_mask=1.0)


def test_augmenter_is_deterministic_for_a_seed():
    a = Augmenter(token_dropout=0.2, span_deletion=0.5, seed=3)
    b = Augmenter(token_dropout=0.2, span_deletion=0.5, seed=3)
    seq = list(range(40))
    assert [a(seq)[0] for _ in range(5)] == [b(seq)[0] for _ in range(5)]


def test_pad_batch_and_sampler():
    ids, labels, lengths = pad_batch([[1, 2, 3], [4]], 0, [[IGNORE, 2, 3], [4]])
    assert ids.tolist() == [[1, 2, 3], [4, 0, 0]]
    assert labels.tolist() == [[IGNORE, 2, 3], [4, IGNORE, IGNORE]]
    assert lengths.tolist() == [3, 1]
    s = EpochSampler(10, 4, seed=0)
    seen = np.concatenate([s.next(), s.next()])
    assert len(set(seen.tolist())) == 8                       # no repeats within an epoch
    s.next()
    assert s.epoch == 1
    json.dumps(ids.tolist())


# ---------------------------------------------------------------------------------------------
# PII redaction of fine-tuning data (--redact-pii)

PII_ROWS = {
    "classify": {"text": "mail me at jane.doe@example.com or call +1 415 555 0134",
                 "label": "contact"},
    "translate": {"source": "write to bob@example.org", "target": "écris à bob@example.org"},
    "lm": {"text": "server 192.168.10.24 answered"},
    "chat": {"messages": [{"role": "user", "content": "my e-mail is ann@example.net"},
                          {"role": "assistant", "content": "Thanks, ann@example.net noted."}]},
}


@pytest.mark.parametrize("task", sorted(PII_ROWS))
def test_redact_pii_rewrites_every_text_field(task, tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps(PII_ROWS[task]) + "\n")
    said = []
    plain, _ = read_examples(str(path), task)
    redacted, _ = read_examples(str(path), task, redact_pii=True, log=said.append)
    text = json.dumps(redacted)
    assert "@example" not in text and "555 0134" not in text and "192.168" not in text
    assert "<EMAIL>" in text or "<IP_ADDRESS>" in text
    assert json.dumps(plain) != text                      # off by default: data as given
    assert any("PII redaction replaced" in line and "<" in line for line in said), said


def test_redact_pii_through_finetune(tmp_path):
    from test_finetune import cfg, make_pretrained
    from tinyroots.finetune import finetune
    rows = [{"text": f"reach me at user{i}@example.com please", "label": "contact"}
            for i in range(8)] + [{"text": "nothing personal here", "label": "other"}] * 8
    train = tmp_path / "t.jsonl"
    train.write_text("".join(json.dumps(r) + "\n" for r in rows))
    said = []
    finetune(cfg("classify", make_pretrained(tmp_path / "pre"), (str(train), str(train)),
                 tmp_path / "run", max_steps=2, eval_interval=1, redact_pii=True),
             out=said.append)
    assert any(f"{train}: PII redaction replaced 8 <EMAIL>" in line for line in said), said


def test_deeply_nested_json_line_is_a_bad_line_not_a_crash(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": "ok", "label": "a"}\n' + "[" * 200_000 + "\n")
    with pytest.raises(DataError, match="line 2: invalid JSON here .*nested"):
        read_examples(str(path), "classify")
    examples, skipped = read_examples(str(path), "classify", bad_lines="skip", log=lambda m: 0)
    assert len(examples) == 1 and skipped[0][0] == 2
