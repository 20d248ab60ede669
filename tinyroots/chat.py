"""`python -m tinyroots.chat`: talk to a chat-tuned model in the terminal.

    python -m tinyroots.finetune chat --init out --train examples/faq/chat_train.jsonl \\
        --val examples/faq/chat_val.jsonl --out-dir out-faq        # make a chat model first
    python -m tinyroots.chat --checkpoint out-faq
    python -m tinyroots.chat --checkpoint out-faq --system "Answer in one sentence." \\
        --temperature 0.5 --top-p 0.9

Type a message and press Enter; the reply streams as it is generated. Commands:

    /reset          forget the conversation (the system prompt stays)
    /system TEXT    set a new system prompt (and forget the conversation)
    /exit, /quit    leave (so does Ctrl-D)

The conversation is formatted with the template the model was fine-tuned on
(finetune/data.py): <|system|>...<|end|><|user|>...<|end|><|assistant|>...<|end|>, and the
reply ends at the model's <|end|>. When the history no longer fits the model's context (minus
room for the reply), the oldest exchanges are dropped first; the system prompt is kept.
"""

import sys
from dataclasses import dataclass
from typing import Optional

import numpy as np

from . import kernels
from .checkpoint import load_model_and_tokenizer
from .config import ConfigError, check_common, parse_config
from .finetune.data import CHAT_TOKENS, chat_ids, require_tokens
from .tokenizer import TextStreamer


@dataclass
class ChatConfig:
    """Settings for `python -m tinyroots.chat`."""

    checkpoint: str = "out-faq"        # a chat fine-tuning run directory or checkpoint directory
    which: str = "best"                # in a run directory: best or last
    system: str = ""                   # system prompt; empty: none
    max_new_tokens: int = 128          # longest reply, in tokens
    temperature: float = 0.7           # sampling temperature; 0 means greedy
    top_k: Optional[int] = 50          # sample among the k most likely tokens; none: all
    top_p: Optional[float] = None      # nucleus sampling: smallest set with this probability
    seed: Optional[int] = None         # makes the replies reproducible
    max_turns: int = 0                 # past exchanges kept; 0: as many as fit the context
    stream: bool = True                # print the reply as it is generated
    num_threads: int = 0               # kernel threads; 0: default
    dtype: str = "fp32"                # bf16: weights kept in bf16, half the bytes per token

    def validate(self):
        check_common(self)               # seed >= 0, num_threads within the cap, dtype
        if self.which not in ("best", "last"):
            raise ConfigError(f"ChatConfig: 'which' must be best or last, got {self.which!r}")
        if self.max_new_tokens < 1:
            raise ConfigError(f"ChatConfig: 'max_new_tokens' must be >= 1, got "
                              f"{self.max_new_tokens}")
        if self.temperature < 0:
            raise ConfigError(f"ChatConfig: 'temperature' must be >= 0, got {self.temperature}")
        if self.top_k is not None and self.top_k < 1:
            raise ConfigError(f"ChatConfig: 'top_k' must be >= 1, got {self.top_k}")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise ConfigError(f"ChatConfig: 'top_p' must be in (0, 1], got {self.top_p}")
        if self.max_turns < 0:
            raise ConfigError(f"ChatConfig: 'max_turns' must be >= 0, got {self.max_turns}")


class ReplyStreamer(TextStreamer):
    """TextStreamer that leaves special tokens (the closing <|end|>) out of what it prints."""

    def __init__(self, tokenizer, out, skip_ids):
        super().__init__(tokenizer, out)
        self.skip_ids = set(skip_ids)

    def put(self, ids):
        if int(np.asarray(ids).reshape(-1)[0]) not in self.skip_ids:
            super().put(ids)


class ChatSession:
    """A conversation: history, system prompt, and replies generated within the context.

        session = ChatSession(model, tokenizer, ChatConfig(system="Be brief."))
        session.reply("Where is my order #12345?")     # streams it, returns it, keeps it
        session.reset()
    """

    def __init__(self, model, tokenizer, cfg, out=sys.stdout):
        self.model, self.tokenizer, self.cfg, self.out = model, tokenizer, cfg, out
        self.end_id = require_tokens(tokenizer, CHAT_TOKENS, "chat")[-1]
        self.special_ids = set(tokenizer.special_tokens.values())
        self.system = cfg.system
        self.history = []          # [{"role": "user"|"assistant", "content": ...}]
        self.dropped_turns = 0     # exchanges left out of the last prompt for lack of room
        self.turn = 0

    def reset(self):
        self.history = []

    def prompt_ids(self, user_text):
        """The ids of system + as much history as fits + the new message + <|assistant|>.

        The reply needs room too: the prompt leaves min(max_new_tokens, block_size / 4)
        positions free, so the history gets the other three quarters of the context at least
        (reserving all of max_new_tokens = 128 in a 128-token context left room for the new
        message only). Oldest exchanges go first; if the new message alone is too long, its
        beginning is cut. A reply longer than the room left stops at the end of the context.
        """
        block = self.model.config.block_size
        budget = block - min(self.cfg.max_new_tokens, block // 4)
        system = [{"role": "system", "content": self.system}] if self.system else []
        past = list(self.history)
        if self.cfg.max_turns:
            past = past[-2 * self.cfg.max_turns:]
        new = [{"role": "user", "content": user_text}]
        dropped = (len(self.history) - len(past)) // 2
        while True:
            ids, _ = chat_ids(self.tokenizer, system + past + new, add_generation_prompt=True)
            if len(ids) <= budget or not past:
                break
            past = past[2:]                                   # drop the oldest exchange
            dropped += 1
        if len(ids) > budget:
            # still too long: keep the template's head (<|system|>...) and the end of the text
            head, _ = chat_ids(self.tokenizer, system)
            ids = head + ids[len(ids) - (budget - len(head)):] if budget > len(head) \
                else ids[-budget:]
        self.dropped_turns = dropped
        return ids

    def reply(self, user_text):
        """Generate, stream and remember the assistant's reply to user_text; returns it."""
        cfg = self.cfg
        ids = self.prompt_ids(user_text)
        room = self.model.config.block_size - len(ids)
        streamer = ReplyStreamer(self.tokenizer, self.out, self.special_ids) if cfg.stream \
            else None
        seed = None if cfg.seed is None else cfg.seed + self.turn
        out = self.model.generate(np.asarray([ids], dtype=np.int64),
                                  max_new_tokens=min(cfg.max_new_tokens, room),
                                  do_sample=cfg.temperature > 0, temperature=cfg.temperature,
                                  top_k=cfg.top_k, top_p=cfg.top_p, seed=seed,
                                  eos_token_id=self.end_id, streamer=streamer)
        new = out[0, len(ids):].tolist()
        if self.end_id in new:
            new = new[:new.index(self.end_id)]
        text = self.tokenizer.decode([t for t in new if t not in self.special_ids]).strip()
        self.history += [{"role": "user", "content": user_text},
                         {"role": "assistant", "content": text}]
        self.turn += 1
        return text

    def handle(self, line):
        """One line of input: a command or a message. Returns False when the user leaves."""
        line = line.strip()
        if not line:
            return True
        if line in ("/exit", "/quit"):
            return False
        if line == "/reset":
            self.reset()
            self.out.write("(conversation cleared)\n")
            return True
        if line == "/system" or line.startswith("/system "):
            self.system = line[len("/system"):].strip()
            self.reset()
            self.out.write(f"(system prompt {'set' if self.system else 'removed'}; "
                           "conversation cleared)\n")
            return True
        if line.startswith("/"):
            self.out.write("commands: /reset, /system TEXT, /exit\n")
            return True
        self.out.write("bot> ")
        self.out.flush()
        text = self.reply(line)
        if not self.cfg.stream:
            self.out.write(text + "\n")
        if self.dropped_turns:
            self.out.write(f"(the oldest {self.dropped_turns} exchange(s) no longer fit the "
                           "context and were left out)\n")
        return True


def run(session, read_line=None):
    """The read-reply loop; read_line() returns the next line or raises EOFError."""
    read_line = read_line or (lambda: input("you> "))
    while True:
        try:
            line = read_line()
        except EOFError:
            session.out.write("\n")
            return
        if not session.handle(line):
            return


def main(argv=None):
    cfg = parse_config(ChatConfig, argv, prog="python -m tinyroots.chat", description=__doc__)
    if cfg.num_threads:
        kernels.set_num_threads(cfg.num_threads)
    try:
        model, tokenizer, path = load_model_and_tokenizer(cfg.checkpoint, cfg.which)
        if cfg.dtype == "bf16":
            model.bf16_weights()
        session = ChatSession(model, tokenizer, cfg)
    except (OSError, ValueError) as exc:
        print(f"python -m tinyroots.chat: error: {exc}", file=sys.stderr)
        return 2
    print(f"[{path}: {model.num_parameters() / 1e6:.2f}M parameters, context "
          f"{model.config.block_size} tokens] /reset, /system TEXT, /exit", file=sys.stderr)
    try:
        run(session)
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
