"""`python -m tinyroots.chat`: template, history, truncation, commands, streaming."""

import io
import os
import subprocess
import sys

import pytest
from test_finetune import cfg, make_pretrained, quiet, write_jsonl

from tinyroots.chat import ChatConfig, ChatSession, ReplyStreamer, run
from tinyroots.finetune import finetune
from tinyroots.checkpoint import load_model_and_tokenizer

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

DIALOGUE = {"messages": [{"role": "user", "content": "hello"},
                         {"role": "assistant", "content": "the cat saw a dog"}]}


@pytest.fixture(scope="module")
def chat_model(tmp_path_factory):
    """A tiny model that has memorised one reply (so it ends its turn with <|end|>)."""
    d = tmp_path_factory.mktemp("chat_model")
    pre = make_pretrained(d / "pre", block_size=64)
    data = (write_jsonl(d / "train.jsonl", [DIALOGUE] * 8), write_jsonl(d / "val.jsonl",
                                                                         [DIALOGUE]))
    finetune(cfg("chat", pre, data, d / "run", learning_rate=1e-2, max_steps=60,
                 warmup_steps=5, eval_interval=30), out=quiet)
    return str(d / "run")


def session(chat_model, **kw):
    model, tok, _ = load_model_and_tokenizer(chat_model)
    out = io.StringIO()
    values = dict(temperature=0.0, max_new_tokens=12)
    values.update(kw)
    return ChatSession(model, tok, ChatConfig(**values), out=out), out


def test_reply_streams_text_without_special_tokens_and_keeps_history(chat_model):
    s, out = session(chat_model)
    reply = s.reply("hello")
    assert reply == "the cat saw a dog"
    assert out.getvalue() == "the cat saw a dog\n"            # streamed, <|end|> not shown
    assert s.history == [{"role": "user", "content": "hello"},
                         {"role": "assistant", "content": "the cat saw a dog"}]
    ids = s.prompt_ids("hello")
    text = s.tokenizer.decode(ids)
    assert text == ("<|user|>hello<|end|><|assistant|>the cat saw a dog<|end|>"
                    "<|user|>hello<|end|><|assistant|>")


def test_commands_reset_system_exit(chat_model):
    s, out = session(chat_model, system="be kind")
    assert s.handle("hello") and len(s.history) == 2
    assert s.tokenizer.decode(s.prompt_ids("x")).startswith("<|system|>be kind<|end|><|user|>")
    assert s.handle("/reset") and s.history == []
    assert s.handle("/system be brief") and s.system == "be brief"
    assert s.handle("/system") and s.system == ""
    assert s.handle("/nonsense") and "commands:" in out.getvalue()
    assert s.handle("   ")                                      # blank lines are ignored
    assert not s.handle("/exit") and not s.handle("/quit")
    lines = iter(["hello", "/reset"])

    def read_line():
        try:
            return next(lines)
        except StopIteration:
            raise EOFError from None

    s.reset()
    run(s, read_line)                                           # ends at end of input
    assert s.history == []


def test_history_is_truncated_to_the_context_oldest_first(chat_model):
    s, out = session(chat_model, system="be kind", max_new_tokens=24)
    block = s.model.config.block_size                           # 64
    for i in range(6):
        s.history += [{"role": "user", "content": f"hello number {i}"},
                      {"role": "assistant", "content": "the cat saw a dog"}]
    ids = s.prompt_ids("hello")
    budget = block - min(24, block // 4)                        # room kept for the reply
    assert len(ids) <= budget
    assert s.dropped_turns > 0
    text = s.tokenizer.decode(ids)
    assert text.startswith("<|system|>be kind<|end|>")          # the system prompt stays
    assert "hello number 5" in text and "hello number 0" not in text   # newest kept
    assert text.endswith("<|user|>hello<|end|><|assistant|>")
    # a message longer than the whole budget keeps its end, and the template's head
    ids = s.prompt_ids("dog " * 100)
    assert len(ids) <= budget
    assert s.tokenizer.decode(ids).endswith("dog <|end|><|assistant|>")
    # max_turns bounds the history even when more would fit
    s2, _ = session(chat_model, max_turns=1, max_new_tokens=4)
    s2.history = s.history[-4:]
    assert s2.tokenizer.decode(s2.prompt_ids("hi")).count("<|user|>") == 2
    s.handle("hello")
    assert "no longer fit the context" in out.getvalue()


def test_a_long_reply_budget_does_not_crowd_out_the_history(chat_model):
    # max_new_tokens as large as the context used to leave room for the new message only, so
    # the bot forgot the conversation after one exchange
    s, _ = session(chat_model, max_new_tokens=10_000)
    s.history += [{"role": "user", "content": "hello"},
                  {"role": "assistant", "content": "the cat saw a dog"}]
    text = s.tokenizer.decode(s.prompt_ids("and you?"))
    assert s.dropped_turns == 0
    assert "<|user|>hello<|end|><|assistant|>the cat saw a dog<|end|>" in text


def test_reply_streamer_skips_given_ids(chat_model):
    _, tok, _ = load_model_and_tokenizer(chat_model)
    out = io.StringIO()
    end = tok.special_tokens["<|end|>"]
    st = ReplyStreamer(tok, out, {end})
    for t in tok.encode("a cat") + [end]:
        st.put([t])
    st.end()
    assert out.getvalue() == "a cat\n"


def test_chat_cli_and_a_model_that_was_not_chat_tuned(chat_model, tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    res = subprocess.run([sys.executable, "-m", "tinyroots.chat", "--checkpoint", chat_model,
                          "--temperature", "0", "--max-new-tokens", "12"],
                         input="hello\n/exit\n", capture_output=True, text=True, env=env,
                         timeout=300)
    assert res.returncode == 0, res.stderr
    assert "the cat saw a dog" in res.stdout
    res = subprocess.run([sys.executable, "-m", "tinyroots.chat", "--checkpoint", chat_model,
                          "--temperature", "0", "--max-new-tokens", "12", "--dtype", "bf16"],
                         input="hello\n/exit\n", capture_output=True, text=True, env=env,
                         timeout=300)
    assert res.returncode == 0, res.stderr
    assert "the cat saw a dog" in res.stdout            # the same answer with bf16 weights
    plain = make_pretrained(tmp_path / "plain")
    res = subprocess.run([sys.executable, "-m", "tinyroots.chat", "--checkpoint", plain],
                         input="", capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 2 and "not fine-tuned for chat" in res.stderr
