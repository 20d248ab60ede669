"""One dataclass per job, overridable from a TOML/JSON file and from the command line.

    @dataclass
    class TrainConfig:
        learning_rate: float = 6e-4     # peak learning rate
        ...

    cfg = parse_config(TrainConfig, argv, presets=PRESETS)

Precedence, lowest to highest: the dataclass defaults, ``--preset NAME``, ``--config FILE``
(TOML or JSON), then ``--key value`` flags. Every field becomes a flag (``learning_rate`` is
``--learning-rate``, and ``--learning_rate`` works too); the comment after a field is its help
text. An unknown key or a value of the wrong type is an error that names the key and says
what was expected, whether it came from the file or the command line.
"""

import argparse
import ast
import dataclasses
import difflib
import inspect
import math
import os
import re
import sys
import typing

from .fileio import parse_json, write_json

try:
    import tomllib
except ImportError:  # Python < 3.11
    try:
        import tomli as tomllib
    except ImportError:
        tomllib = None


class ConfigError(ValueError):
    """A configuration key or value is wrong."""


def field_help(cls):
    """{field: the comment written after it in the class body}."""
    try:
        source = inspect.getsource(cls)
    except (OSError, TypeError):
        return {}
    helps = {}
    for line in source.splitlines():
        m = re.match(r"\s+(\w+)\s*:\s*[^=]+=.*?#\s*(.+)$", line)
        if m:
            helps[m.group(1)] = m.group(2).strip()
    return helps


def _base_type(tp):
    """Optional[int] -> (int, True); int -> (int, False)."""
    origin = typing.get_origin(tp)
    if origin is typing.Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return tp, False


def coerce(cls, key, value):
    """Convert ``value`` (a string from the command line, or a parsed TOML/JSON value) to the
    type of field ``key`` of ``cls``, or raise ConfigError naming the key."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    if key not in fields:
        raise ConfigError(unknown_key_message(cls, key))
    hints = typing.get_type_hints(cls)
    tp, optional = _base_type(hints[key])
    if optional and (value is None or (isinstance(value, str)
                                       and value.lower() in ("none", "null", ""))):
        return None
    try:
        if tp is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on"):
                return True
            if isinstance(value, str) and value.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if tp is int:
            return _to_int(value)
        if tp is float:
            if isinstance(value, bool) or not isinstance(value, (int, float, str)):
                raise ValueError
            number = float(value)
            if not math.isfinite(number):
                raise ConfigError(f"{cls.__name__}: '{key}' must be a finite number, got "
                                  f"{value!r}")
            return number
        if tp is str:
            if not isinstance(value, (str, int, float)) or isinstance(value, bool):
                raise ValueError
            return str(value)
        if typing.get_origin(tp) in (tuple, list):
            if isinstance(value, str):
                value = ast.literal_eval(value if value.strip().startswith(("(", "["))
                                         else f"[{value}]")
            inner = typing.get_args(tp)[0] if typing.get_args(tp) else str
            return typing.get_origin(tp)(inner(v) for v in value)
        return tp(value)
    except ConfigError:
        raise
    except (ValueError, TypeError, SyntaxError):
        name = getattr(tp, "__name__", str(tp))
        raise ConfigError(f"{cls.__name__}: '{key}' must be {name}"
                          f"{' or none' if optional else ''}, got {value!r}") from None


def _to_int(value):
    """1, 1.0, "1", "1e3" -> int; 2.5, "2.5", True, "x" -> ValueError (never rounded)."""
    if isinstance(value, bool):
        raise ValueError
    if isinstance(value, float):
        if not value.is_integer():
            raise ValueError
        return int(value)
    if isinstance(value, str):
        if re.fullmatch(r"\s*[+-]?\d+(\.0*)?(e\+?\d+)?\s*", value, re.I):
            return int(float(value)) if len(value) < 20 else int(value)
        return int(value)
    if isinstance(value, int):
        return value
    raise ValueError


def unknown_key_message(cls, key):
    names = [f.name for f in dataclasses.fields(cls)]
    close = [n for n in names if n.startswith(key[:4]) or key in n]
    hint = f" (did you mean {', '.join(close[:3])}?)" if close else ""
    return f"{cls.__name__}: unknown key '{key}'{hint}"


def load_config_file(path):
    """A dict from a .toml or .json file (a [section] table is flattened into its keys)."""
    if not os.path.isfile(path):
        raise ConfigError(f"config file {path} not found")
    with open(path, "rb") as f:
        raw = f.read()
    if path.endswith(".json"):
        data = parse_json(raw, path, error=ConfigError)
    else:
        if tomllib is None:
            raise ConfigError(f"{path}: reading TOML needs Python 3.11+ or the 'tomli' package")
        try:
            data = tomllib.loads(raw.decode("utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: not valid TOML ({exc})") from None
        except RecursionError:       # the parser recurses once per level of nesting
            raise ConfigError(f"{path}: not valid TOML here (arrays or tables nested too "
                              "deeply)") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a table of key = value pairs")
    flat = {}
    for k, v in data.items():
        if isinstance(v, dict):      # [train] / [model] sections are just grouping
            flat.update(v)
        else:
            flat[k] = v
    return flat


def apply_overrides(cls, cfg, overrides, source):
    """A new cfg with ``overrides`` (a dict) applied; errors name ``source`` and the key."""
    values = dataclasses.asdict(cfg)
    for key, value in overrides.items():
        key = key.replace("-", "_")
        try:
            values[key] = coerce(cls, key, value)
        except ConfigError as exc:
            raise ConfigError(f"{source}: {exc}") from None
    return cls(**values)


class CommandParser(argparse.ArgumentParser):
    """argparse for every tinyroots command: a wrong command line is one line on stderr and
    exit status 2, as any other user error is, instead of argparse's whole usage block (dozens
    of lines for train's flags) above it. An unknown flag names its closest match:

        python -m tinyroots.train: error: unrecognized arguments: --learning-rat 3 (did you
        mean --learning-rate?); see python -m tinyroots.train --help
    """

    def error(self, message):
        hint = ""
        if message.startswith("unrecognized arguments:"):
            known = self._long_flags()
            for word in message.split(":", 1)[1].split():
                if word.startswith("--"):
                    close = difflib.get_close_matches(word.split("=", 1)[0], known, n=1)
                    if close:
                        hint = f" (did you mean {close[0]}?)"
                        break
        self.exit(2, f"{self.prog}: error: {message}{hint}; see {self.prog} --help\n")

    def _long_flags(self):
        """Every --flag of this parser and of its subcommands' parsers (an unknown flag after
        a subcommand is reported by the parser above it)."""
        flags = []
        for action in self._actions:
            flags += [o for o in action.option_strings if o.startswith("--")]
            choices = getattr(action, "choices", None)  # a dict of parsers for subcommands
            if isinstance(choices, dict):
                flags += [f for sub in choices.values() if isinstance(sub, CommandParser)
                          for f in sub._long_flags()]
        return flags


def build_parser(cls, prog, description, presets=None, defaults=None):
    helps = field_help(cls)
    # allow_abbrev=False: a prefix such as --learning-rat must be an unknown-key error, not a
    # silent guess at --learning-rate
    parser = CommandParser(prog=prog, description=description, allow_abbrev=False,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", metavar="FILE",
                        help="TOML or JSON file of key = value settings (flags override it)")
    if presets:
        parser.add_argument("--preset", choices=sorted(presets),
                            help="start from a named recipe: " + "; ".join(
                                f"{k}: {v.get('_doc', '')}" for k, v in sorted(presets.items())))
    parser.add_argument("--debug", action="store_true",
                        help="on an error, show the full traceback, not just its one line")
    defaults = cls() if defaults is None else defaults
    for f in dataclasses.fields(cls):
        flag = "--" + f.name.replace("_", "-")
        names = [flag] if "_" not in f.name else [flag, "--" + f.name]
        default = getattr(defaults, f.name)
        text = f"{helps.get(f.name, '')} (default: {default!r})"
        if _metavar(cls, f.name) == "BOOL":
            # a bare switch (--resume) means true; --resume false and --no-resume say false
            off = "--no-" + f.name.replace("_", "-")
            parser.add_argument(*names, dest=f.name, default=argparse.SUPPRESS, nargs="?",
                                const="true", metavar="BOOL",
                                help=f"{text}; {flag} alone means true, {off} false")
            parser.add_argument(off, dest=f.name, action="store_const", const="false",
                                default=argparse.SUPPRESS, help=argparse.SUPPRESS)
            continue
        parser.add_argument(*names, dest=f.name, default=argparse.SUPPRESS,
                            metavar=_metavar(cls, f.name), help=text)
    return parser


def _metavar(cls, name):
    tp, _ = _base_type(typing.get_type_hints(cls)[name])
    return {bool: "BOOL", int: "INT", float: "FLOAT", str: "STR"}.get(tp, "VALUE")


def parse_config(cls, argv=None, presets=None, prog=None, description=None, explicit=None,
                 defaults=None):
    """Build a ``cls`` instance from defaults, preset, config file and command-line flags.

    defaults: an instance of ``cls`` to start from instead of ``cls()`` (a fine-tuning task's
    own defaults, say); --help shows its values.

    explicit: a set, if given, receives the names of the fields the preset, the config file
    or a flag set (resume uses it: only those change a saved run's configuration).
    Exits with a clear message (argparse style) on any error.
    """
    parser = build_parser(cls, prog, description or cls.__doc__, presets, defaults)
    args = parser.parse_args(argv)
    explicit = set() if explicit is None else explicit
    try:
        cfg = cls() if defaults is None else defaults
        preset = getattr(args, "preset", None)
        if preset:
            values = {k: v for k, v in presets[preset].items() if not k.startswith("_")}
            cfg = apply_overrides(cls, cfg, values, f"preset {preset}")
            explicit.update(values)
        if args.config:
            values = load_config_file(args.config)
            cfg = apply_overrides(cls, cfg, values, args.config)
            explicit.update(k.replace("-", "_") for k in values)
        flags = {k: v for k, v in vars(args).items() if k not in ("config", "preset", "debug")}
        cfg = apply_overrides(cls, cfg, flags, "command line")
        explicit.update(flags)
        validate = getattr(cfg, "validate", None)
        if validate:
            validate()
    except ConfigError as exc:
        parser.exit(2, f"{parser.prog}: error: {exc}\n")
    except ValueError as exc:
        parser.exit(2, f"{parser.prog}: error: {exc}\n")
    return cfg


# ---------------------------------------------------------------------------------------------
# value checks shared by the job configs

MAX_THREADS_PER_CORE = 4       # --num-threads above 4 x the cores is refused (libgomp's
                               # stacks overflow long before 100,000 threads)


def check_ranges(cfg, ranges):
    """ranges: {field: (lo, hi)}, both inclusive, None for no bound; a field that is None
    (an Optional left unset) passes. Raises ConfigError naming the field, value and range."""
    name = type(cfg).__name__
    for key, (lo, hi) in ranges.items():
        value = getattr(cfg, key)
        if value is None:
            continue
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            want = (f"in [{lo}, {hi}]" if lo is not None and hi is not None
                    else f">= {lo}" if lo is not None else f"<= {hi}")
            raise ConfigError(f"{name}: '{key}' must be {want}, got {value!r}")


def check_common(cfg):
    """seed, num_threads, beta1, beta2, dtype: the same rules in every job that has them."""
    cap = MAX_THREADS_PER_CORE * (os.cpu_count() or 1)
    ranges = {"seed": (0, 2 ** 63 - 1), "num_threads": (0, cap)}
    check_ranges(cfg, {k: v for k, v in ranges.items() if hasattr(cfg, k)})
    for key in ("beta1", "beta2"):
        if hasattr(cfg, key) and not 0.0 <= getattr(cfg, key) < 1.0:
            raise ConfigError(f"{type(cfg).__name__}: '{key}' must be in [0, 1), got "
                              f"{getattr(cfg, key)!r}")
    if hasattr(cfg, "dtype") and cfg.dtype not in ("fp32", "bf16"):
        raise ConfigError(f"{type(cfg).__name__}: 'dtype' must be 'fp32' or 'bf16', got "
                          f"{cfg.dtype!r}")


def save_config(cfg, path):
    write_json(path, dataclasses.asdict(cfg))


def load_saved_config(cls, path):
    """A ``cls`` from a JSON file written by save_config; unknown keys are an error."""
    data = load_config_file(path)
    return apply_overrides(cls, cls(), data, path)


def run_command(prog, body, argv=None):
    """Run body(argv) as a command's main: user errors (a bad value, a missing or corrupt file,
    a run that cannot fit in memory) print one line and return 2; Ctrl-C returns 130.
    ``--debug`` anywhere in argv shows the traceback instead."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    try:
        return body(argv)
    except KeyboardInterrupt:
        if debug:
            raise
        print(f"\n{prog}: interrupted", file=sys.stderr)
        return 130
    except (OSError, ValueError, MemoryError, RecursionError) as exc:
        if debug:
            raise
        message = str(exc) or type(exc).__name__
        if isinstance(exc, MemoryError):
            message = f"out of memory ({message}); try a smaller model, batch or context"
        print(f"{prog}: error: {message}", file=sys.stderr)
        return 2


def main_guard(main):
    """Run main(), turning Ctrl-C outside the training loop into a short message."""
    try:
        return main()
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
