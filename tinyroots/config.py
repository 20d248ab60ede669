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
import inspect
import json
import os
import re
import sys
import typing

from .fileio import write_json

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
            if isinstance(value, bool):
                raise ValueError
            if isinstance(value, float) and value.is_integer():
                return int(value)
            if isinstance(value, str):
                return int(float(value)) if re.fullmatch(r"[+-]?\d+(\.0*)?(e\+?\d+)?", value,
                                                         re.I) else int(value)
            return int(value)
        if tp is float:
            if isinstance(value, bool):
                raise ValueError
            return float(value)
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
    except (ValueError, TypeError, SyntaxError):
        name = getattr(tp, "__name__", str(tp))
        raise ConfigError(f"{cls.__name__}: '{key}' must be {name}"
                          f"{' or none' if optional else ''}, got {value!r}") from None


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
        try:
            data = json.loads(raw.decode("utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: not valid JSON ({exc})") from None
    else:
        if tomllib is None:
            raise ConfigError(f"{path}: reading TOML needs Python 3.11+ or the 'tomli' package")
        try:
            data = tomllib.loads(raw.decode("utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: not valid TOML ({exc})") from None
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


def build_parser(cls, prog, description, presets=None):
    helps = field_help(cls)
    # allow_abbrev=False: a prefix such as --learning-rat must be an unknown-key error, not a
    # silent guess at --learning-rate
    parser = argparse.ArgumentParser(prog=prog, description=description, allow_abbrev=False,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", metavar="FILE",
                        help="TOML or JSON file of key = value settings (flags override it)")
    if presets:
        parser.add_argument("--preset", choices=sorted(presets),
                            help="start from a named recipe: " + "; ".join(
                                f"{k}: {v.get('_doc', '')}" for k, v in sorted(presets.items())))
    defaults = cls()
    for f in dataclasses.fields(cls):
        flag = "--" + f.name.replace("_", "-")
        names = [flag] if "_" not in f.name else [flag, "--" + f.name]
        default = getattr(defaults, f.name)
        parser.add_argument(*names, dest=f.name, default=argparse.SUPPRESS,
                            metavar=_metavar(cls, f.name),
                            help=f"{helps.get(f.name, '')} (default: {default!r})")
    return parser


def _metavar(cls, name):
    tp, _ = _base_type(typing.get_type_hints(cls)[name])
    return {bool: "BOOL", int: "INT", float: "FLOAT", str: "STR"}.get(tp, "VALUE")


def parse_config(cls, argv=None, presets=None, prog=None, description=None):
    """Build a ``cls`` instance from defaults, preset, config file and command-line flags.

    Returns (cfg, sources) where sources says where non-default values came from.
    Exits with a clear message (argparse style) on any error.
    """
    parser = build_parser(cls, prog, description or cls.__doc__, presets)
    args = parser.parse_args(argv)
    try:
        cfg = cls()
        preset = getattr(args, "preset", None)
        if preset:
            cfg = apply_overrides(cls, cfg, {k: v for k, v in presets[preset].items()
                                             if not k.startswith("_")}, f"preset {preset}")
        if args.config:
            cfg = apply_overrides(cls, cfg, load_config_file(args.config), args.config)
        flags = {k: v for k, v in vars(args).items() if k not in ("config", "preset")}
        cfg = apply_overrides(cls, cfg, flags, "command line")
        validate = getattr(cfg, "validate", None)
        if validate:
            validate()
    except ConfigError as exc:
        parser.exit(2, f"{parser.prog}: error: {exc}\n")
    except ValueError as exc:
        parser.exit(2, f"{parser.prog}: error: {exc}\n")
    return cfg


def save_config(cfg, path):
    write_json(path, dataclasses.asdict(cfg))


def load_saved_config(cls, path):
    """A ``cls`` from a JSON file written by save_config; unknown keys are an error."""
    data = load_config_file(path)
    return apply_overrides(cls, cls(), data, path)


def main_guard(main):
    """Run main(), turning Ctrl-C outside the training loop into a short message."""
    try:
        return main()
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
