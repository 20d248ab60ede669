"""Find a Hugging Face hub model (e.g. 'gpt2') in the local cache -- never download.

tinyroots does not reach the network. If a user has already downloaded a model with Hugging
Face tools, its files sit in the hub cache:

    $HF_HUB_CACHE (default ~/.cache/huggingface/hub)/models--<org>--<name>/snapshots/<rev>/

and ``from_pretrained('gpt2')`` (or ``'openai-community/gpt2'``) uses them from there.
checkpoint.resolve_model_dir is the one entry point; this module only searches the cache.
"""

import os
import re

# GPT-2's checkpoints moved from 'gpt2' to 'openai-community/gpt2'; both cache names occur
ALIASES = {
    "gpt2": ("gpt2", "openai-community/gpt2"),
    "gpt2-medium": ("gpt2-medium", "openai-community/gpt2-medium"),
    "gpt2-large": ("gpt2-large", "openai-community/gpt2-large"),
    "gpt2-xl": ("gpt2-xl", "openai-community/gpt2-xl"),
    "distilgpt2": ("distilgpt2", "distilbert/distilgpt2"),
}


def hub_cache_dirs():
    """Directories where the Hugging Face hub cache may live, most specific first."""
    dirs = []
    if os.environ.get("HF_HUB_CACHE"):
        dirs.append(os.environ["HF_HUB_CACHE"])
    if os.environ.get("HUGGINGFACE_HUB_CACHE"):
        dirs.append(os.environ["HUGGINGFACE_HUB_CACHE"])
    if os.environ.get("HF_HOME"):
        dirs.append(os.path.join(os.environ["HF_HOME"], "hub"))
    xdg = os.environ.get("XDG_CACHE_HOME", os.path.join(os.path.expanduser("~"), ".cache"))
    dirs.append(os.path.join(xdg, "huggingface", "hub"))
    return list(dict.fromkeys(dirs))


# a hub id is "name" or "owner/name"; each part letters, digits, '-', '_', '.', not starting
# with '.' (so never '.' or '..'); a commit hash in refs/main is a name of the same kind
_PART = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]*")


def looks_like_repo_id(name):
    """'gpt2' or 'openai-community/gpt2' -> True; './gpt2', '/x', 'a/b/c', '' -> False."""
    parts = os.fspath(name).split("/")
    return len(parts) <= 2 and all(_PART.fullmatch(p) for p in parts)


def _repo_ids(name):
    """The cache names a hub id may be stored under (GPT-2's moved to openai-community/)."""
    for short, ids in ALIASES.items():
        if name in ids:
            return ids if name == short else (name, *[i for i in ids if i != name])
    return (name,)


def _snapshot(repo_dir):
    """The snapshot folder refs/main points at, else the newest one.

    refs/main holds a commit hash; it is joined to a path, so anything else in it (an absolute
    path, '../..') is refused rather than followed out of the cache.
    """
    snaps = os.path.join(repo_dir, "snapshots")
    if not os.path.isdir(snaps):
        return None
    ref = os.path.join(repo_dir, "refs", "main")
    if os.path.isfile(ref):
        with open(ref, encoding="utf-8", errors="replace") as f:
            rev = f.read().strip()
        if not _PART.fullmatch(rev):
            raise FileNotFoundError(f"{ref}: expected a commit hash, got {rev[:80]!r} -- the "
                                    "Hugging Face cache is corrupt or was tampered with")
        if os.path.isdir(os.path.join(snaps, rev)):
            return os.path.join(snaps, rev)
    candidates = [os.path.join(snaps, d) for d in os.listdir(snaps)]
    candidates = [c for c in candidates if os.path.isdir(c)]
    return max(candidates, key=os.path.getmtime) if candidates else None


def cached_snapshot(name, required=("config.json",)):
    """Map a hub id to a local snapshot directory holding ``required`` files, or raise."""
    name = os.fspath(name)
    if not looks_like_repo_id(name):
        # a hub id is "name" or "owner/name": this is a path, and it is not there
        raise FileNotFoundError(f"'{name}': no such directory (expected a directory holding "
                                "config.json + model.safetensors)")
    repo_ids = _repo_ids(name)
    searched = []
    for cache in hub_cache_dirs():
        for repo_id in repo_ids:
            repo_dir = os.path.join(cache, "models--" + repo_id.replace("/", "--"))
            searched.append(repo_dir)
            snap = _snapshot(repo_dir)
            if snap and all(os.path.exists(os.path.join(snap, r)) for r in required):
                return snap
    raise FileNotFoundError(
        f"'{name}' is not a directory, and no local copy of the hub model '{name}' was found "
        f"(looked in: {', '.join(searched)}). tinyroots never downloads. Either pass the path of "
        "a directory holding config.json + model.safetensors (and vocab.json + merges.txt for "
        "the tokenizer), or download the model once with Hugging Face tools, e.g. "
        f"`huggingface-cli download {repo_ids[-1]}`, which fills the cache above.")
