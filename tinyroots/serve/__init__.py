"""`python -m tinyroots.serve`: an OpenAI-compatible server with continuous batching and a page.

    pip install ".[serve]"
    python -m tinyroots.serve --checkpoint out-faq                    # http://127.0.0.1:8000
    python -m tinyroots.serve --checkpoint out-faq --api-key s3cret    # or TINYROOTS_API_KEY
    curl http://127.0.0.1:8000/v1/chat/completions -H 'Content-Type: application/json' \\
        -d '{"model": "out-faq", "messages": [{"role": "user", "content": "Where is my order?"}]}'

Endpoints: GET /v1/models, POST /v1/completions, POST /v1/chat/completions (OpenAI's request
and response shapes; ``stream: true`` sends server-sent events), GET /health, and GET / -- a
page with a chat, a writing assistant and a translator that streams tokens and can show the
probabilities the model gave each one.

The files, in reading order: engine.py (the decoding thread: continuous batching over
model.decode_rows), protocol.py (checking requests; OpenAI's error body), api.py (the
Starlette routes, text and stop strings, the response shapes), __main__.py (the command),
page.html (the page: plain HTML and JavaScript, no network access beyond this server).
"""

from .api import ServeConfig, create_app  # noqa: F401
from .engine import Engine, QueueFull, Sequence  # noqa: F401
