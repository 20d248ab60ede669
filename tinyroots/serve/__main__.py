"""`python -m tinyroots.serve --checkpoint DIR [--host 127.0.0.1] [--port 8000] [--api-key KEY]`

Serves a checkpoint (a run directory or a model directory, as generate and chat take) with
OpenAI's API and a page at http://HOST:PORT/. Ctrl-C or SIGTERM stops taking new connections,
lets running requests finish for up to --shutdown-timeout seconds, cancels the rest, and exits 0.
"""

import contextlib
import ipaddress
import os
import signal
import sys
import threading
from dataclasses import dataclass

from .. import kernels
from ..config import ConfigError, check_common, parse_config
from ..model import ROWS_PER_PASS


@dataclass
class ServeArgs:
    """Settings for `python -m tinyroots.serve`."""

    checkpoint: str = "out"            # run directory or model directory
    which: str = "best"                # in a run directory: best or last
    host: str = "127.0.0.1"            # address to listen on (loopback: this machine only)
    port: int = 8000                   # TCP port
    api_key: str = ""                  # require 'Authorization: Bearer KEY' (or TINYROOTS_API_KEY)
    model_name: str = ""               # the model id clients send; default: the directory name
    max_running: int = 16              # sequences decoded together in one batch
    rows_per_pass: int = ROWS_PER_PASS  # rows per pass through the weights; <= 16: exact (README)
    max_waiting: int = 64              # sequences queued beyond those; more is HTTP 429
    max_n: int = 8                     # the largest n (choices per request)
    max_body: int = 1048576            # largest request body in bytes; more is HTTP 413
    shutdown_timeout: float = 10.0     # seconds running requests may take to finish on exit
    num_threads: int = 0               # kernel threads; 0: default
    dtype: str = "fp32"                # bf16: weights kept in bf16, half the bytes per token

    def validate(self):
        if self.which not in ("best", "last"):
            raise ConfigError(f"ServeArgs: 'which' must be best or last, got {self.which!r}")
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"ServeArgs: 'port' must be in 0..65535, got {self.port}")
        for name in ("max_running", "max_waiting", "max_n", "max_body", "rows_per_pass"):
            if getattr(self, name) < 1:
                raise ConfigError(f"ServeArgs: '{name}' must be >= 1, got {getattr(self, name)}")
        if not self.shutdown_timeout >= 0:
            raise ConfigError(f"ServeArgs: 'shutdown_timeout' must be >= 0, got "
                              f"{self.shutdown_timeout}")
        check_common(self)     # num_threads, dtype: before the checkpoint is loaded


def is_loopback(host):
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def main(argv=None):
    cfg = parse_config(ServeArgs, argv, prog="python -m tinyroots.serve", description=__doc__)
    prog = "python -m tinyroots.serve"
    try:
        import uvicorn

        from .api import ServeConfig, create_app
    except ImportError as exc:
        print(f"{prog}: error: {exc.name} is not installed (pip install \".[serve]\")",
              file=sys.stderr)
        return 2
    from ..checkpoint import load_model_and_tokenizer
    if cfg.num_threads:
        kernels.set_num_threads(cfg.num_threads)
    try:
        model, tokenizer, path = load_model_and_tokenizer(cfg.checkpoint, cfg.which)
        if cfg.dtype == "bf16":
            model.bf16_weights()
    except (OSError, ValueError) as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    key = cfg.api_key or os.environ.get("TINYROOTS_API_KEY", "")
    name = cfg.model_name or os.path.basename(os.path.normpath(cfg.checkpoint))
    if not is_loopback(cfg.host) and not key:
        print(f"warning: listening on {cfg.host} without an API key: anyone who can reach "
              "this port can use the model (set --api-key or TINYROOTS_API_KEY)", file=sys.stderr)
    app = create_app(model, tokenizer, ServeConfig(
        model_name=name, api_key=key, max_running=cfg.max_running,
        max_waiting=cfg.max_waiting, max_n=cfg.max_n, max_body=cfg.max_body,
        rows_per_pass=cfg.rows_per_pass))
    server = QuietServer(uvicorn.Config(
        app, host=cfg.host, port=cfg.port, log_level="warning", lifespan="on",
        timeout_graceful_shutdown=cfg.shutdown_timeout))
    shown = f"[{cfg.host}]" if ":" in cfg.host else cfg.host
    print(f"[{path}: {model.num_parameters() / 1e6:.2f}M parameters, {cfg.dtype}] serving "
          f"'{name}' at http://{shown}:{cfg.port}/ (Ctrl-C to stop)", file=sys.stderr, flush=True)
    try:
        server.run()
    except SystemExit:              # uvicorn exits when it cannot bind (it logged why)
        server.started = False
    if not server.started:
        print(f"{prog}: error: could not listen on {cfg.host}:{cfg.port}", file=sys.stderr)
        return 1
    print("stopped", file=sys.stderr)
    return 0


def _server_class():
    import uvicorn

    class _QuietServer(uvicorn.Server):
        """uvicorn's Server, except that a Ctrl-C or SIGTERM is handled, not re-raised once the
        server has shut down (uvicorn re-raises it, and the process would end by the signal
        instead of exiting 0 after a clean shutdown)."""

        @contextlib.contextmanager
        def capture_signals(self):
            if threading.current_thread() is not threading.main_thread():
                yield
                return
            sigs = (signal.SIGINT, signal.SIGTERM)
            original = {s: signal.signal(s, self.handle_exit) for s in sigs}
            try:
                yield
            finally:
                for s, handler in original.items():
                    signal.signal(s, handler)
    return _QuietServer


def QuietServer(config):  # noqa: N802 - builds the class lazily: uvicorn is an optional extra
    return _server_class()(config)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(0)
