"""A server for bench_serve.py: `python bench/serve_worker.py ENGINE MODEL PORT THREADS`.

ENGINE  tinyroots      tinyroots.serve as shipped: continuous batching on tinyroots' kernels
        transformers   the same HTTP layer (tinyroots.serve.api) with transformers' generate
                       behind it, one request at a time -- what a user writes with
                       transformers and a web framework
MODEL   6x384-v65 or gpt2-124M: random weights (seed 0), identical in both engines

Prompts arrive as token ids, so no tokenizer work differs between the two; the tokenizer only
turns generated ids into text (characters for the vocab-65 model, GPT-2's BPE for 124M when
TINYROOTS_GPT2_TOKENIZER names it, else each id printed as a word).
"""

import os
import queue
import sys
import threading

import tinyroots as tr
from tinyroots.model import ROWS_PER_PASS

MODELS = {
    "gpt2-124M": dict(n_layer=12, n_head=12, n_embd=768, vocab_size=50257, block_size=1024),
    "6x384-v65": dict(n_layer=6, n_head=6, n_embd=384, vocab_size=65, block_size=256),
}
CORPUS = os.path.join(os.path.dirname(tr.__file__), "assets", "tinyshakespeare.txt")


class IdTokenizer:
    """Decodes ids as numbers; for when no GPT-2 tokenizer is at hand."""

    special_tokens = {}
    eot_token_id = None

    def decode(self, ids):
        return "".join(f" {i}" for i in ids)


def tokenizer_for(name):
    if name == "6x384-v65":
        with open(CORPUS, encoding="utf-8") as f:
            tok = tr.CharTokenizer.train(f.read())
        assert tok.vocab_size == 65, tok.vocab_size
        return tok
    path = os.environ.get("TINYROOTS_GPT2_TOKENIZER")
    return tr.load_tokenizer(path) if path else IdTokenizer()


class TransformersEngine:
    """Engine's interface over transformers' generate, one sequence at a time, greedy."""

    def __init__(self, hf):
        self.hf = hf
        self.todo = queue.Queue()
        self.running = 0
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def start(self):
        self.thread.start()
        return self

    def submit(self, seqs):
        for s in seqs:
            self.todo.put(s)

    def cancel(self, seqs):
        for s in seqs:
            s.cancel()

    def stats(self):
        return {"running": self.running, "waiting": self.todo.qsize(), "steps": 0}

    def stop(self, timeout=5.0):
        self.todo.put(None)
        self.thread.join(timeout)

    def _loop(self):
        import torch
        from transformers.generation.stopping_criteria import StoppingCriteria
        from transformers.generation.streamers import BaseStreamer

        class Emit(BaseStreamer):
            def __init__(self, seq):
                self.seq, self.prompt_seen = seq, False

            def put(self, value):
                if not self.prompt_seen:          # generate() first passes the prompt
                    self.prompt_seen = True
                    return
                self.seq.emit(("token", int(value.reshape(-1)[0]), None))

            def end(self):
                pass

        class Cancelled(StoppingCriteria):
            def __init__(self, seq):
                self.seq = seq

            def __call__(self, input_ids, scores, **kw):
                return torch.full((input_ids.shape[0],), self.seq.cancelled, dtype=torch.bool)

        while True:
            seq = self.todo.get()
            if seq is None:
                return
            self.running = 1
            eos = sorted(seq.stop_ids) or None
            with torch.no_grad():
                out = self.hf.generate(torch.tensor([seq.prompt]), max_new_tokens=seq.max_tokens,
                                       do_sample=False, eos_token_id=eos, pad_token_id=0,
                                       streamer=Emit(seq),
                                       stopping_criteria=[Cancelled(seq)])
            n = out.shape[1] - len(seq.prompt)
            last = int(out[0, -1])
            seq.finished = True
            seq.emit(("done", "stop" if eos and last in eos and n < seq.max_tokens
                      else "length"))
            self.running = 0


def main(engine_name, model_name, port, threads, rows_per_pass=None):
    import uvicorn

    from tinyroots.serve import ServeConfig, create_app
    tr.set_num_threads(threads)
    tr.manual_seed(0)
    model = tr.GPT(tr.GPTConfig(**MODELS[model_name])).eval()
    engine = None
    if engine_name == "transformers":
        import torch
        import transformers
        torch.set_num_threads(threads)
        cfg = model.config
        hf = transformers.GPT2LMHeadModel(transformers.GPT2Config(
            n_layer=cfg.n_layer, n_head=cfg.n_head, n_embd=cfg.n_embd,
            vocab_size=cfg.vocab_size, n_positions=cfg.block_size)).eval()
        state = {k: torch.from_numpy(p.data) for k, p in model.named_parameters()}
        missing, unexpected = hf.load_state_dict(state, strict=False)
        assert not unexpected and all(k == "lm_head.weight" or k.endswith(".attn.bias")
                                      for k in missing), (missing, unexpected)
        engine = TransformersEngine(hf)
    app = create_app(model, tokenizer_for(model_name),
                     ServeConfig(model_name=model_name, max_running=16, max_waiting=64,
                                 rows_per_pass=rows_per_pass or ROWS_PER_PASS),
                     engine=engine)
    uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")).run()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]),
         *map(int, sys.argv[5:6]))
