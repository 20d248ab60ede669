"""Checkpoints: round trips, Hugging Face compatibility, corrupt files, atomic writes."""

import json
import os

import numpy as np
import pytest

import tinyroots as tr
from tinyroots import checkpoint as ck
from tinyroots.checkpoint import CheckpointError
from tinyroots.safetensors import save_safetensors

CFG = dict(n_layer=2, n_head=2, n_embd=16, vocab_size=50, block_size=32)


def logits_of(model, ids):
    with tr.no_grad():
        return model(ids).logits.data


@pytest.fixture
def model():
    tr.manual_seed(0)
    return tr.GPT(tr.GPTConfig(**CFG))


IDS = np.array([[1, 5, 7, 3, 49, 0]])


def test_round_trip(tmp_path, model):
    model.save_pretrained(tmp_path)
    assert sorted(os.listdir(tmp_path)) == ["config.json", "generation_config.json",
                                           "model.safetensors"]
    loaded = tr.GPT.from_pretrained(tmp_path)
    assert loaded.config == model.config
    for (n, p), (n2, p2) in zip(model.named_parameters(), loaded.named_parameters()):
        assert n == n2
        np.testing.assert_array_equal(p.data, p2.data)
    np.testing.assert_array_equal(logits_of(model, IDS), logits_of(loaded, IDS))


def test_loaded_weights_are_memory_mapped_and_copy_on_write(tmp_path, model):
    model.save_pretrained(tmp_path)
    before = open(tmp_path / "model.safetensors", "rb").read()
    loaded = tr.GPT.from_pretrained(tmp_path)
    w = loaded.transformer.wte.weight.data
    assert not w.flags.owndata            # a view of the mapped file, not a copy
    w += 1.0                              # training writes to it ...
    assert open(tmp_path / "model.safetensors", "rb").read() == before   # ... the file stays


def test_hugging_face_reads_ours_and_we_read_theirs(tmp_path, model):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    model.save_pretrained(tmp_path / "ours")
    hf = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "ours").eval()
    with torch.no_grad():
        hf_logits = hf(torch.tensor(IDS)).logits.numpy()
    np.testing.assert_allclose(hf_logits, logits_of(model, IDS), rtol=1e-4, atol=1e-5)

    hf.save_pretrained(tmp_path / "theirs")
    back = tr.GPT.from_pretrained(tmp_path / "theirs")
    np.testing.assert_allclose(logits_of(back, IDS), hf_logits, rtol=1e-4, atol=1e-5)


def test_sharded_checkpoint(tmp_path, model):
    tensors = dict(model.state_dict())
    names = list(tensors)
    half = len(names) // 2
    save_safetensors(tmp_path / "model-00001-of-00002.safetensors",
                     {n: tensors[n] for n in names[:half]})
    save_safetensors(tmp_path / "model-00002-of-00002.safetensors",
                     {n: tensors[n] for n in names[half:]})
    index = {"metadata": {}, "weight_map": {n: ("model-00001-of-00002.safetensors" if i < half
                                                else "model-00002-of-00002.safetensors")
                                            for i, n in enumerate(names)}}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    ck.write_json(tmp_path / "config.json", model.config.to_hf_dict())
    loaded = tr.GPT.from_pretrained(tmp_path)
    np.testing.assert_array_equal(logits_of(loaded, IDS), logits_of(model, IDS))


def test_bf16_and_unprefixed_names_load(tmp_path, model):
    # GPT-2's original files name tensors without "transformer." and may be bfloat16
    state = {n.replace("transformer.", ""): a for n, a in model.state_dict().items()}
    save_safetensors(tmp_path / "model.safetensors", state, dtypes={n: "BF16" for n in state})
    ck.write_json(tmp_path / "config.json", model.config.to_hf_dict())
    loaded = tr.GPT.from_pretrained(tmp_path)
    w = loaded.transformer.wte.weight.data
    # bf16 keeps 8 significant bits (7 stored): rounding moves a value by at most half a unit
    # in the last place, 2**-8 of it
    np.testing.assert_allclose(w, model.transformer.wte.weight.data, rtol=2 ** -8, atol=0)


def test_mismatched_and_missing_tensors(tmp_path, model):
    model.save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["n_embd"] = 32
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=r"'transformer.wte.weight' has shape \(50, 16\)"):
        tr.GPT.from_pretrained(tmp_path)
    cfg["n_embd"], cfg["n_layer"] = 16, 3
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=r"'transformer.h.2.ln_1.weight' .* missing"):
        tr.GPT.from_pretrained(tmp_path)
    cfg["n_layer"] = 1
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="unexpected tensor 'transformer.h.1"):
        tr.GPT.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="config.json: not valid JSON"):
        tr.GPT.from_pretrained(tmp_path)
    os.remove(tmp_path / "config.json")
    with pytest.raises(CheckpointError, match=r"neither a model directory \(config.json\)"):
        tr.GPT.from_pretrained(tmp_path)


def test_pickle_checkpoints_are_refused_never_unpickled(tmp_path, model):
    ck.write_json(tmp_path / "config.json", model.config.to_hf_dict())
    marker = tmp_path / "pwned"
    # a pickle that would create a file if it were ever loaded
    payload = (b"cos\nsystem\n(S'touch " + str(marker).encode() + b"'\ntR.")
    (tmp_path / "pytorch_model.bin").write_bytes(payload)
    with pytest.raises(CheckpointError, match="refusing to load a pickle"):
        tr.GPT.from_pretrained(tmp_path)
    assert not marker.exists()


def test_missing_directory_and_hub_name(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(FileNotFoundError, match="never downloads"):
        tr.GPT.from_pretrained("gpt2")
    # a path that is not there is reported as a missing directory, not looked up as a hub name
    for missing in (tmp_path / "no-such-run", "./no-such-run", "runs/a/b"):
        with pytest.raises(FileNotFoundError, match="no such directory") as err:
            tr.GPT.from_pretrained(missing)
        assert "huggingface-cli" not in str(err.value)


def test_hub_name_resolves_from_local_cache(tmp_path, monkeypatch, model):
    snap = tmp_path / "hub" / "models--openai-community--gpt2" / "snapshots" / "abc123"
    model.save_pretrained(snap)
    (tmp_path / "hub" / "models--openai-community--gpt2" / "refs").mkdir()
    (tmp_path / "hub" / "models--openai-community--gpt2" / "refs" / "main").write_text("abc123")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    loaded = tr.GPT.from_pretrained("gpt2")
    np.testing.assert_array_equal(logits_of(loaded, IDS), logits_of(model, IDS))


def test_atomic_write_leaves_old_file_when_interrupted(tmp_path, model, monkeypatch):
    model.save_pretrained(tmp_path)
    good = (tmp_path / "model.safetensors").read_bytes()
    real_write = ck.os.fsync

    def crash(fd):
        raise KeyboardInterrupt   # Ctrl-C arriving in the middle of a save

    monkeypatch.setattr(ck.os, "fsync", crash)
    for p in model.parameters():
        p.data += 1.0
    with pytest.raises(KeyboardInterrupt):
        model.save_pretrained(tmp_path)
    monkeypatch.setattr(ck.os, "fsync", real_write)
    assert (tmp_path / "model.safetensors").read_bytes() == good
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]
    tr.GPT.from_pretrained(tmp_path)   # still loads


def test_loading_draws_no_random_initial_weights(tmp_path, model):
    """from_pretrained builds the model inside nn.skip_init(): no 124M-number random init that
    the file then overwrites (it cost a second and its memory stayed in the process)."""
    from tinyroots import random as trandom
    model.save_pretrained(tmp_path)
    state = trandom.get_state()
    loaded = tr.GPT.from_pretrained(tmp_path)
    assert trandom.get_state() == state
    tr.GPT(tr.GPTConfig(**CFG))                  # outside skip_init the draws happen again
    assert trandom.get_state() != state
    np.testing.assert_array_equal(logits_of(loaded, IDS), logits_of(model, IDS))


# ---------------------------------------------------------------------------------------------
# nothing in a checkpoint directory is trusted before it is checked


def test_from_pretrained_returns_eval_mode(tmp_path):
    """As transformers does: GPT-2's configs carry dropout 0.1, and a loss that changed on
    every call would surprise anyone running the Hugging Face snippet."""
    tr.manual_seed(0)
    model = tr.GPT(tr.GPTConfig(**CFG, dropout=0.1))
    model.save_pretrained(tmp_path)
    loaded = tr.GPT.from_pretrained(tmp_path)
    assert not loaded.training and all(not m.training for m in loaded.modules())
    losses = {float(loaded(IDS, labels=IDS).loss) for _ in range(3)}
    assert len(losses) == 1
    assert loaded.train().training                # training is one call away


def _deep_json(path):
    path.write_text("[" * 200_000)


@pytest.mark.parametrize("change,message", [
    ({"n_layer": 2.5}, "config.json: 'n_layer' is 2.5 \\(float\\), expected int"),
    ({"n_embd": "16"}, "config.json: 'n_embd' is '16' \\(str\\), expected int"),
    ({"n_head": True}, "config.json: 'n_head' is True \\(bool\\), expected int"),
    ({"tinyroots": "x"}, "config.json: 'tinyroots' is 'x' \\(str\\), expected dict"),
    ({"tinyroots": {"bias": "no"}}, "config.json: 'tinyroots': 'bias' is 'no' \\(str\\)"),
    ({"layer_norm_epsilon": "1e-5"}, "'layer_norm_epsilon' is '1e-5' \\(str\\), expected int "
                                     "or float"),
    ({"n_inner": [4]}, "'n_inner' is \\[4\\] \\(list\\), expected int or null"),
    ({"model_type": "llama"}, "config.json: model_type is 'llama'"),
])
def test_config_json_of_the_wrong_types_names_file_and_key(tmp_path, model, change, message):
    model.save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**cfg, **change}))
    with pytest.raises(CheckpointError, match=message):
        tr.GPT.from_pretrained(tmp_path)


def test_deeply_nested_config_json_is_one_clear_error(tmp_path, model):
    model.save_pretrained(tmp_path)
    _deep_json(tmp_path / "config.json")
    with pytest.raises(CheckpointError, match="config.json: not valid JSON here .*nested") as e:
        tr.GPT.from_pretrained(tmp_path)
    assert "\n" not in str(e.value)


def test_weight_map_of_the_wrong_types(tmp_path, model):
    ck.write_json(tmp_path / "config.json", model.config.to_hf_dict())
    index = tmp_path / "model.safetensors.index.json"
    index.write_text(json.dumps({"weight_map": {"transformer.wte.weight": 3}}))
    with pytest.raises(CheckpointError, match=r"index.json: weight_map\['transformer.wte.weight'\]"
                                              r" is 3, expected the file name of a shard"):
        tr.GPT.from_pretrained(tmp_path)
    index.write_text(json.dumps({"weight_map": [1, 2]}))
    with pytest.raises(CheckpointError, match="index.json: no 'weight_map' object"):
        tr.GPT.from_pretrained(tmp_path)


def _hub_cache(tmp_path, model, repo="openai-community/gpt2", ref="abc123"):
    repo_dir = tmp_path / "hub" / ("models--" + repo.replace("/", "--"))
    model.save_pretrained(repo_dir / "snapshots" / "abc123")
    (repo_dir / "refs").mkdir()
    (repo_dir / "refs" / "main").write_text(ref)
    return repo_dir


def test_owner_name_hub_ids_resolve_from_the_local_cache(tmp_path, monkeypatch, model):
    _hub_cache(tmp_path, model)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    for name in ("openai-community/gpt2", "gpt2"):
        loaded = tr.GPT.from_pretrained(name)
        np.testing.assert_array_equal(logits_of(loaded, IDS), logits_of(model, IDS))
    assert ck.resolve_model_dir("openai-community/gpt2").endswith("abc123")


def test_a_cache_stored_under_the_old_name_answers_the_new_one(tmp_path, monkeypatch, model):
    _hub_cache(tmp_path, model, repo="gpt2")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    loaded = tr.GPT.from_pretrained("openai-community/gpt2")
    np.testing.assert_array_equal(logits_of(loaded, IDS), logits_of(model, IDS))


@pytest.mark.parametrize("ref", ["../../../elsewhere", "/etc", "..", "a/b", "abc\x00"])
def test_refs_main_cannot_lead_out_of_the_cache(tmp_path, monkeypatch, model, ref):
    outside = tmp_path / "elsewhere"
    model.save_pretrained(outside)              # what a tampered ref would point at
    _hub_cache(tmp_path, model, ref=ref)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(FileNotFoundError, match=r"refs/main: expected a commit hash"):
        tr.GPT.from_pretrained("openai-community/gpt2")


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_checkpoint_files_respect_the_umask(tmp_path, model, umask):
    old = os.umask(umask)
    try:
        model.save_pretrained(tmp_path)
    finally:
        os.umask(old)
    for name in ("config.json", "model.safetensors", "generation_config.json"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o666 & ~umask, name


def test_load_model_and_tokenizer_from_a_run_directory(tmp_path, model):
    tok = tr.CharTokenizer.train("abcdefgh")
    tok.save_pretrained(tmp_path / "run" / "last")
    model.save_pretrained(tmp_path / "run" / "last")
    m, t, path = ck.load_model_and_tokenizer(str(tmp_path / "run"))
    assert path == str(tmp_path / "run" / "last") and t.vocab_size == 8 and not m.training
    big = tr.CharTokenizer.train("".join(chr(0x400 + i) for i in range(60)))
    big.save_pretrained(tmp_path / "run" / "last")
    with pytest.raises(CheckpointError, match="the tokenizer has 60 tokens but the model only 50"):
        ck.load_model_and_tokenizer(str(tmp_path / "run"))
