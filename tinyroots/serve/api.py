"""The HTTP layer: OpenAI's /v1/completions and /v1/chat/completions on Starlette.

A request is checked (protocol.py), turned into one engine Sequence per choice, and answered
from the tokens the decoding thread emits: as one JSON object, or as server-sent events
(``data: {...}`` per piece of text, ``data: [DONE]`` at the end). Text is made here: tokens
are decoded as they come, a character split over several byte-level tokens is held back until
complete, and so is any text that could be the start of a stop string.
"""

import asyncio
import hmac
import json
import os
import threading
import time
import uuid
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.responses import HTMLResponse, JSONResponse, StreamingResponse
from starlette.routing import Route

from ..finetune.data import CHAT_TOKENS, TRANSLATE_TOKENS, chat_ids, translation_prompt
from . import protocol as P
from ..model import ROWS_PER_PASS
from .engine import Engine, QueueFull, Sequence

PAGE = os.path.join(os.path.dirname(__file__), "page.html")


class ServeConfig:
    """What create_app needs besides the model: names, limits and the key."""

    def __init__(self, model_name="tinyroots", api_key=None, max_running=16, max_waiting=64,
                 max_n=8, max_body=1 << 20, rows_per_pass=ROWS_PER_PASS):
        self.model_name, self.api_key = model_name, api_key or None
        self.max_running, self.max_waiting = max_running, max_waiting
        self.rows_per_pass = rows_per_pass
        self.max_n, self.max_body = max_n, max_body


# ---------------------------------------------------------------------------------------------
# text from tokens


class TextTracker:
    """The text of one choice, grown token by token; ``add`` returns what is safe to send.

        stops=["\\n\\n"]: "Hi" -> "Hi"; "\\n" -> "" (held: it may begin "\\n\\n");
        "\\n" -> "" and stopped (the text ends at "Hi")
    """

    def __init__(self, tokenizer, skip_ids, stops):
        self.tokenizer, self.skip_ids, self.stops = tokenizer, set(skip_ids), stops
        self.ids, self.text, self.sent, self.stopped = [], "", 0, False

    def add(self, token):
        if self.stopped or token in self.skip_ids:
            return ""
        self.ids.append(token)
        text = self.tokenizer.decode(self.ids)
        cut = min((i for i in (text.find(s) for s in self.stops) if i >= 0), default=-1)
        if cut >= 0:
            self.text, self.stopped = text[:cut], True
            return self._send(len(self.text))
        self.text = text
        # an incomplete character at the end (one U+FFFD) waits for its next bytes; subtle: only
        # one -- invalid bytes in the middle stay U+FFFD forever and must not hold back the rest
        safe = len(text) - text.endswith("\ufffd")
        held = max((k for s in self.stops for k in range(1, len(s))
                    if text[:safe].endswith(s[:k])), default=0)
        return self._send(safe - held)

    def flush(self):
        return self._send(len(self.text))

    def _send(self, upto):
        if upto <= self.sent:
            return ""
        piece, self.sent = self.text[self.sent:upto], upto
        return piece


class Choice:
    """One choice of a request: its engine sequence, its text, its log-probabilities."""

    def __init__(self, index, seq, tracker):
        self.index, self.seq, self.tracker = index, seq, tracker
        self.finish_reason = None
        self.logprobs = []            # (token id, info) of each token in the text
        self.n_tokens = 0


# ---------------------------------------------------------------------------------------------
# the application


class Server:
    """Holds the model, tokenizer, engine and limits; its methods are the routes."""

    def __init__(self, model, tokenizer, config, engine=None):
        self.model, self.tokenizer, self.cfg = model, tokenizer, config
        self.block = model.config.block_size
        self.engine = engine or Engine(model, config.max_running, config.max_waiting,
                                       config.rows_per_pass)
        self.outbox = None           # made on the first request, on the server's event loop
        specials = getattr(tokenizer, "special_tokens", {}) or {}
        self.special_ids = set(specials.values())
        self.eot = getattr(tokenizer, "eot_token_id", None)
        self.chat = all(t in specials for t in CHAT_TOKENS)
        self.end_id = specials.get(CHAT_TOKENS[-1])
        self.translate = all(t in specials for t in TRANSLATE_TOKENS)
        self.created = int(time.time())

    # -- plumbing ---------------------------------------------------------------------------

    def check_auth(self, request):
        key = self.cfg.api_key
        if key is None:
            return
        given = request.headers.get("authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {key}".encode()):
            raise P.APIError("Missing or incorrect API key: send 'Authorization: Bearer KEY'",
                             status=401, code="invalid_api_key")

    async def read_json(self, request):
        limit = self.cfg.max_body
        length = request.headers.get("content-length", "")
        if length.isdigit() and int(length) > limit:
            raise P.APIError(f"request body of {length} bytes is over the limit of {limit}",
                             status=413, code="request_too_large")
        data, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise P.APIError(f"request body is over the limit of {limit} bytes",
                                 status=413, code="request_too_large")
            data.append(chunk)
        try:
            body = json.loads(b"".join(data))
        except (ValueError, RecursionError) as exc:
            raise P.APIError(f"the request body is not valid JSON ({type(exc).__name__}: "
                             f"{str(exc)[:100]})") from None
        if not isinstance(body, dict):
            raise P.APIError(f"the request body must be a JSON object, got "
                             f"{type(body).__name__}")
        model = body.get("model")
        if model is not None and model != self.cfg.model_name:
            raise P.APIError(f"The model '{model}' does not exist; this server serves "
                             f"'{self.cfg.model_name}'", "model", code="model_not_found")
        return body

    def make_choices(self, prompt_ids, max_tokens, s, stop_ids, skip_ids, logprobs, first):
        out = []
        for j in range(s["n"]):
            index = first + j
            seq = Sequence(prompt_ids, max_tokens, emit=None, temperature=s["temperature"],
                           top_k=s["top_k"], top_p=s["top_p"],
                           seed=None if s["seed"] is None else s["seed"] + index,
                           stop_ids=stop_ids, logprobs=logprobs)
            out.append(Choice(index, seq, TextTracker(self.tokenizer, skip_ids, s["stop"])))
        return out

    async def run(self, request, choices, watch):
        """Submit the choices; yield (choice, text piece, [(token, info)], finished) as tokens
        arrive. Cancels whatever is unfinished when the consumer stops: a streaming response
        is cancelled by Starlette when its client disconnects; with ``watch`` (a plain JSON
        answer) the connection is checked here every second."""
        loop = asyncio.get_running_loop()
        if self.outbox is None or self.outbox.loop is not loop:
            self.outbox = Outbox(loop)
        queue = asyncio.Queue()
        for c in choices:
            c.seq.emit = _emitter(self.outbox, queue, c)
        try:
            self.engine.submit([c.seq for c in choices])
        except QueueFull as exc:
            raise P.APIError(str(exc), status=429, code="rate_limit_exceeded",
                             type="rate_limit_error") from None
        open_choices = len(choices)
        try:
            while open_choices:
                if not watch:                # no timer per token: the common, streaming case
                    c, event = await queue.get()
                else:
                    try:
                        c, event = await asyncio.wait_for(queue.get(), 1.0)
                    except asyncio.TimeoutError:
                        if await request.is_disconnected():
                            return
                        continue
                if event[0] == "token":
                    yield self._on_token(c, event[1], event[2])
                    continue
                open_choices -= 1
                if event[0] == "error":
                    raise P.APIError(f"generation failed: {event[1]}", status=500,
                                     type="server_error")
                c.finish_reason = c.finish_reason or {"cancelled": "stop"}.get(event[1],
                                                                               event[1])
                yield c, c.tracker.flush(), [], True
        finally:
            self.engine.cancel([c.seq for c in choices if not c.seq.finished])

    def _on_token(self, c, token, info):
        if c.tracker.stopped:
            return c, "", [], False      # emitted before our cancel reached the loop
        if token not in c.seq.stop_ids:
            c.n_tokens += 1
        piece = c.tracker.add(token)
        new = [(token, info)] if info is not None and token not in c.seq.stop_ids else []
        c.logprobs += new
        if c.tracker.stopped:
            c.finish_reason = "stop"
            self.engine.cancel([c.seq])
        return c, piece, new, False

    # -- routes -----------------------------------------------------------------------------

    async def page(self, request):
        with open(PAGE, encoding="utf-8") as f:
            return HTMLResponse(f.read())

    async def health(self, request):
        return JSONResponse({"status": "ok", "model": self.cfg.model_name, **self.features(),
                             **self.engine.stats()})

    def features(self):
        return {"context_length": self.block, "chat": self.chat, "translate": self.translate,
                "auth": self.cfg.api_key is not None}

    async def models(self, request):
        self.check_auth(request)
        return JSONResponse({"object": "list", "data": [{
            "id": self.cfg.model_name, "object": "model", "created": self.created,
            "owned_by": "tinyroots", **self.features()}]})

    async def completions(self, request):
        self.check_auth(request)
        body = await self.read_json(request)
        P.unsupported(body, P.COMPLETION_FIELDS)
        s = P.sampling(body, self.cfg.max_n)
        logprobs = P.integer(body, "logprobs", None, 0, P.MAX_LOGPROBS)
        task = body.get("task", "complete")
        if task not in ("complete", "translate"):
            raise P.APIError(f"'task' must be complete or translate, got {task!r}", "task")
        if task == "translate" and not self.translate:
            raise P.APIError("this model was not fine-tuned for translation (its tokenizer has "
                             "no <|source|>/<|target|> tokens); run python -m tinyroots."
                             "finetune translate first", "task", code="no_translation_template")
        items = [self.encode_prompt(p, task) for p in P.prompts(body)]
        if len(items) * s["n"] > self.cfg.max_n * 4:
            raise P.APIError(f"{len(items)} prompts x n={s['n']} is over this server's limit "
                             f"of {self.cfg.max_n * 4} choices per request", "prompt")
        stop_ids = {self.eot} if self.eot is not None else set()
        choices = []
        for ids in items:
            mt = P.max_tokens(body, ("max_tokens",), len(ids), self.block, 16)
            choices += self.make_choices(ids, mt, s, stop_ids, stop_ids, logprobs,
                                         len(choices))
        fmt = CompletionFormat(self, logprobs is not None)
        return await self.respond(request, choices, s, fmt, sum(len(i) for i in items))

    async def chat_completions(self, request):
        self.check_auth(request)
        body = await self.read_json(request)
        P.unsupported(body, P.CHAT_FIELDS)
        s = P.sampling(body, self.cfg.max_n)
        want = P.boolean(body, "logprobs")
        top = P.integer(body, "top_logprobs", None, 0, P.MAX_TOP_LOGPROBS)
        if top is not None and not want:
            raise P.APIError("'top_logprobs' needs 'logprobs': true", "top_logprobs")
        msgs = P.messages(body)
        if not self.chat:
            raise P.APIError("this model has no chat template: its tokenizer lacks the "
                             "<|system|>/<|user|>/<|assistant|>/<|end|> tokens that python -m "
                             "tinyroots.finetune chat adds; use /v1/completions, or fine-tune "
                             "it for chat first", "messages", code="no_chat_template")
        ids, _ = chat_ids(self.tokenizer, msgs, add_generation_prompt=True)
        mt = P.max_tokens(body, ("max_completion_tokens", "max_tokens"), len(ids), self.block,
                          None)
        stop_ids = {self.end_id} | ({self.eot} if self.eot is not None else set())
        choices = self.make_choices(ids, mt, s, stop_ids, self.special_ids,
                                    (top or 0) if want else None, 0)
        return await self.respond(request, choices, s, ChatFormat(self, want), len(ids))

    def encode_prompt(self, prompt, task):
        if isinstance(prompt, list):
            bad = [t for t in prompt if not 0 <= t < self.model.config.vocab_size]
            if bad:
                raise P.APIError(f"'prompt' holds token id {bad[0]}, outside the vocabulary "
                                 f"0..{self.model.config.vocab_size - 1}", "prompt")
            return prompt
        try:
            if task == "translate":
                return translation_prompt(self.tokenizer, prompt)
            ids = self.tokenizer.encode(prompt) if prompt else []
        except ValueError as exc:
            raise P.APIError(f"'prompt' cannot be encoded: {exc}", "prompt") from None
        return ids or [self.eot if self.eot is not None else 0]   # as generate does

    async def respond(self, request, choices, s, fmt, prompt_tokens):
        events = self.run(request, choices, watch=not s["stream"])
        if s["stream"]:
            first = await _first_or_error(events)   # a full queue is a 429, not a broken stream
            return StreamingResponse(fmt.stream(first, events, choices, s, prompt_tokens),
                                     media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache"})
        async for _ in events:
            pass
        if any(c.finish_reason is None for c in choices):   # the client went away
            return JSONResponse({}, status_code=499)
        return JSONResponse(fmt.whole(choices, prompt_tokens))

    def token_text(self, token):
        return self.tokenizer.decode([token])

    def token_bytes(self, token):
        tb = getattr(self.tokenizer, "token_bytes", None)
        b = tb(token) if tb is not None else None
        return list(b if b is not None else self.token_text(token).encode("utf-8"))


class Outbox:
    """Events from the decoding thread to the event loop, handed over in batches.

    A decoding step emits one token for each running sequence. Waking the event loop for each
    (call_soon_threadsafe writes to its wake-up pipe every time) cost more than the HTTP writes
    themselves at 16 streams; waking it once per step still cost the decoding thread about
    0.6 ms a step at 16 streams (measured with py-spy, Intel Xeon, 2 cores): the write gives up
    the GIL, and taking it back waits for the busy event loop. So while tokens flow, the loop
    fetches them itself, every POLL seconds (a timer, no wake-up from the other thread); the
    first event after a quiet spell wakes it once and starts that poller, which stops after
    IDLE_POLLS polls that found nothing. A token waits at most POLL on top of its step.
    """

    POLL = 0.001
    IDLE_POLLS = 50

    def __init__(self, loop):
        self.loop = loop
        self.lock = threading.Lock()
        self.items = []               # (queue, event) not yet delivered
        self.polling = False          # a poller runs (or is about to) on the loop
        self.task = None              # the poller (a reference, so it is not collected)

    def put(self, queue, item):       # called from the decoding thread
        with self.lock:
            self.items.append((queue, item))
            if self.polling:
                return                # the poller will take it
            self.polling = True
        try:
            self.loop.call_soon_threadsafe(self._start)
        except RuntimeError:          # the event loop is closed: the server is gone, and no
            with self.lock:           # poller will run (the next put tries again)
                self.polling = False

    def _start(self):                 # on the event loop
        self.task = self.loop.create_task(self._poll())

    async def _poll(self):
        idle = 0                      # polls in a row that found nothing
        while True:
            with self.lock:
                items, self.items = self.items, []
                if not items and idle >= self.IDLE_POLLS:
                    self.polling = False
                    return
            idle = 0 if items else idle + 1
            for queue, item in items:
                queue.put_nowait(item)
            await asyncio.sleep(self.POLL)


def _emitter(outbox, queue, choice):
    def emit(event):                  # called from the decoding thread
        outbox.put(queue, (choice, event))
    return emit


async def _first_or_error(events):
    """Start the generator (so submit's 429 raises here) -> the first event, or None."""
    try:
        return await events.__anext__()
    except StopAsyncIteration:
        return None


# ---------------------------------------------------------------------------------------------
# response shapes


class CompletionFormat:
    """/v1/completions: object "text_completion", choices[].text, legacy logprobs."""

    def __init__(self, server, logprobs):
        self.server, self.want_logprobs = server, logprobs
        self.id, self.created = f"cmpl-{uuid.uuid4().hex[:24]}", int(time.time())

    def head(self, obj):
        return {"id": self.id, "object": obj, "created": self.created,
                "model": self.server.cfg.model_name}

    def logprobs(self, items, offset=0):
        if not self.want_logprobs:
            return None
        sv = self.server
        tokens = [sv.token_text(t) for t, _ in items]
        offsets, pos = [], offset
        for t in tokens:
            offsets.append(pos)
            pos += len(t)
        return {"tokens": tokens, "token_logprobs": [i["logprob"] for _, i in items],
                "top_logprobs": [{sv.token_text(t): lp for t, lp in i["top"]}
                                 for _, i in items],
                "text_offset": offsets}

    def choice(self, c, text, items, finish):
        return {"text": text, "index": c.index, "logprobs": self.logprobs(items),
                "finish_reason": finish}

    def whole(self, choices, prompt_tokens):
        out = self.head("text_completion")
        out["choices"] = [self.choice(c, c.tracker.text, c.logprobs, c.finish_reason)
                          for c in choices]
        out["usage"] = usage(choices, prompt_tokens)
        return out

    def chunk(self, c, text, items, finish):
        return {**self.head("text_completion"),
                "choices": [self.choice(c, text, items, finish)]}

    def opening(self, c):
        return None

    async def stream(self, first, events, choices, s, prompt_tokens):
        try:
            opened = set()
            pending = [first] if first is not None else []
            while True:
                for c, text, items, done in pending:
                    if c.index not in opened:
                        opened.add(c.index)
                        head = self.opening(c)
                        if head is not None:
                            yield sse(head)
                    if text or items or done:
                        yield sse(self.chunk(c, text, items, c.finish_reason if done else None))
                try:
                    pending = [await events.__anext__()]
                except StopAsyncIteration:
                    break
            if s["include_usage"]:
                yield sse({**self.head(self.chunk_object), "choices": [],
                           "usage": usage(choices, prompt_tokens)})
        except P.APIError as exc:
            yield sse(exc.body())
        finally:
            await events.aclose()
        yield "data: [DONE]\n\n"

    chunk_object = "text_completion"


class ChatFormat(CompletionFormat):
    """/v1/chat/completions: choices[].message (chunks: .delta), logprobs.content."""

    chunk_object = "chat.completion.chunk"

    def __init__(self, server, logprobs):
        super().__init__(server, logprobs)
        self.id = f"chatcmpl-{uuid.uuid4().hex[:24]}"

    def logprobs(self, items, offset=0):
        if not self.want_logprobs:
            return None
        sv = self.server

        def entry(t, lp):
            return {"token": sv.token_text(t), "logprob": lp, "bytes": sv.token_bytes(t)}
        return {"content": [{**entry(t, i["logprob"]),
                             "top_logprobs": [entry(k, lp) for k, lp in i["top"]]}
                            for t, i in items], "refusal": None}

    def whole(self, choices, prompt_tokens):
        out = self.head("chat.completion")
        out["choices"] = [{"index": c.index,
                           "message": {"role": "assistant", "content": c.tracker.text},
                           "logprobs": self.logprobs(c.logprobs),
                           "finish_reason": c.finish_reason} for c in choices]
        out["usage"] = usage(choices, prompt_tokens)
        return out

    def opening(self, c):
        return {**self.head("chat.completion.chunk"), "choices": [{
            "index": c.index, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
            "finish_reason": None}]}

    def chunk(self, c, text, items, finish):
        return {**self.head("chat.completion.chunk"), "choices": [{
            "index": c.index, "delta": {"content": text} if text else {},
            "logprobs": self.logprobs(items) if items else None, "finish_reason": finish}]}


def usage(choices, prompt_tokens):
    done = sum(c.n_tokens for c in choices)
    return {"prompt_tokens": prompt_tokens, "completion_tokens": done,
            "total_tokens": prompt_tokens + done}


def sse(obj):
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"


# ---------------------------------------------------------------------------------------------


def create_app(model, tokenizer, config=None, engine=None):
    """The Starlette application serving ``model``; its engine runs while the app does.

    ``engine``: another decoding loop with Engine's methods (submit, cancel, stats, start,
    stop) driving the same Sequences -- bench/bench_serve.py puts transformers' generate
    behind this same HTTP layer that way.
    """
    server = Server(model, tokenizer, config or ServeConfig(), engine)

    @asynccontextmanager
    async def lifespan(app):
        server.engine.start()
        try:
            yield
        finally:
            server.engine.stop()

    async def api_error(request, exc):
        return JSONResponse(exc.body(), status_code=exc.status)

    async def http_error(request, exc):
        err = P.APIError(str(exc.detail), status=exc.status_code,
                         code="not_found" if exc.status_code == 404 else None)
        return JSONResponse(err.body(), status_code=exc.status_code)

    async def server_error(request, exc):
        err = P.APIError(f"internal error: {type(exc).__name__}", status=500, type="server_error")
        return JSONResponse(err.body(), status_code=500)

    routes = [Route("/", server.page), Route("/health", server.health),
              Route("/v1/models", server.models),
              Route("/v1/completions", server.completions, methods=["POST"]),
              Route("/v1/chat/completions", server.chat_completions, methods=["POST"])]
    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers={
        P.APIError: api_error, HTTPException: http_error, Exception: server_error})
    app.state.server = server
    return app
