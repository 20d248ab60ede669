"""Helpers for the serving tests: tiny checkpoints and a server in a subprocess."""

import os
import socket
import subprocess
import sys
import time

import httpx
from test_finetune import cfg, make_pretrained, quiet, write_jsonl

import tinyroots as tr
from tinyroots.finetune import finetune
from tinyroots.tokenizer import Tokenizer

DIALOGUES = [
    {"messages": [{"role": "user", "content": "hello"},
                  {"role": "assistant", "content": "the cat saw a dog"}]},
    {"messages": [{"role": "user", "content": "how can I help you ?"},
                  {"role": "assistant", "content": "le chien mange"}]},
]


def make_chat_model(d):
    """A tiny model fine-tuned (`finetune chat`) until it has memorised two replies."""
    pre = make_pretrained(d / "pre", block_size=64)
    data = (write_jsonl(d / "train.jsonl", DIALOGUES * 8), write_jsonl(d / "val.jsonl",
                                                                       DIALOGUES))
    finetune(cfg("chat", pre, data, d / "run", learning_rate=1e-2, max_steps=80,
                 warmup_steps=5, eval_interval=40), out=quiet)
    return str(d / "run")


def make_slow_model(path):
    """Random weights, a long context: a request of 900 tokens takes seconds to decode."""
    tok = Tokenizer.train("the cat saw a dog . " * 50, vocab_size=300)
    tr.manual_seed(0)
    model = tr.GPT(tr.GPTConfig(n_layer=6, n_head=6, n_embd=384, vocab_size=tok.vocab_size,
                                block_size=1024))
    model.save_pretrained(path, tokenizer=tok)
    return str(path)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """`python -m tinyroots.serve` on a free loopback port, waited for until /health answers."""

    def __init__(self, checkpoint, *args, env=None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        full_env = dict(os.environ, **(env or {}))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tinyroots.serve", "--checkpoint", checkpoint,
             "--port", str(self.port), "--num-threads", "1", *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=full_env)
        deadline = time.time() + 90
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited: {self.proc.stderr.read()}")
            try:
                if httpx.get(self.url + "/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError("the server did not answer /health within 90 s")

    def health(self):
        return httpx.get(self.url + "/health", timeout=60).json()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode
