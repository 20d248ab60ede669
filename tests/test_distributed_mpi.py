"""Data-parallel training with real processes: `mpiexec -n 2 python -m tinyroots.train`.

Each test starts MPICH's mpiexec from the environment's bin/ (the `mpi` extra installs it) on a
one-layer character model, a few steps long, one thread per process, with a time limit.

Tolerances: the same global batch in the same order on 1 and 2 processes gives the same
gradients up to float32 summation order (two partial sums added by the allreduce instead of
one running sum); AdamW then divides by sqrt(v), which turns those 1e-7 relative differences
into at most ~1e-5 relative differences of the weights after a few steps, so losses agree to
1e-4 relative. Any real mistake (a micro-batch lost or counted twice, a missing 1/N, moments
of the wrong shard) moves the loss by 1e-2 or more at these learning rates.
"""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

MPIEXEC = os.path.join(os.path.dirname(sys.executable), "mpiexec")
pytestmark = pytest.mark.skipif(
    not os.path.exists(MPIEXEC), reason='needs the mpi extra: pip install "tinyroots[mpi]"')

RTOL = 1e-4
TINY = ["--tokenizer", "char", "--n-layer", "1", "--n-head", "2", "--n-embd", "32",
        "--block-size", "32", "--batch-size", "4", "--grad-accum-steps", "4",
        "--learning-rate", "3e-3", "--warmup-steps", "2", "--lr-decay-steps", "6",
        "--grad-clip", "0.5", "--eval-interval", "3", "--eval-batches", "3",
        "--log-interval", "1", "--sample-tokens", "0", "--progress", "false",
        "--plot", "false"]


def env():
    e = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    for var in ("PMI_RANK", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK"):
        e.pop(var, None)
    return e


def train(out_dir, n, *flags, steps=6, timeout=120):
    cmd = [sys.executable, "-m", "tinyroots.train", *TINY, "--max-steps", str(steps),
           "--out-dir", str(out_dir), *flags]
    if n > 1:
        cmd = [MPIEXEC, "-n", str(n), *cmd]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env(),
                          cwd=out_dir.parent)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def metrics(out_dir):
    with open(os.path.join(out_dir, "metrics.jsonl"), encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def by_step(records, key):
    return {r["step"]: r[key] for r in records if key in r}


def assert_same_run(a, b, keys=("train_loss", "val_loss", "grad_norm")):
    for key in keys:
        ka, kb = by_step(a, key), by_step(b, key)
        assert ka and ka.keys() == kb.keys(), (key, ka, kb)
        for step in ka:
            assert kb[step] == pytest.approx(ka[step], rel=RTOL), (key, step, ka[step], kb[step])


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    out = tmp_path_factory.mktemp("n1")
    train(out, 1)
    return out


@pytest.mark.parametrize("zero", ["0", "1"])
def test_two_processes_give_the_one_process_run(one_process, tmp_path, zero):
    train(tmp_path, 2, "--zero", zero)
    a, b = metrics(one_process), metrics(tmp_path)
    assert_same_run(a, b)
    # rank 0 alone writes: one record per step, not two
    assert [r["step"] for r in b] == [r["step"] for r in a]
    # clipping was active (norms above 0.5), so the global norm is what both runs clipped by
    assert max(by_step(a, "grad_norm").values()) > 0.5
    wa = _weights(one_process / "last")
    wb = _weights(tmp_path / "last")
    for name in wa:
        np.testing.assert_allclose(wb[name], wa[name], rtol=1e-3, atol=1e-5, err_msg=name)


def _weights(path):
    from safetensors.numpy import load_file
    return load_file(os.path.join(path, "model.safetensors"))


@pytest.mark.parametrize("first, then", [((2, "1"), (1, "0")), ((1, "0"), (2, "1"))])
def test_a_run_saved_at_one_n_resumes_at_another(one_process, tmp_path, first, then):
    # 3 steps at one process count (ZeRO-1's moments gathered into the single-process
    # format), then resumed to 6 at another: the same losses as the straight 6-step run
    train(tmp_path, first[0], "--zero", first[1], steps=3)
    with open(tmp_path / "last" / "trainer_state.json", encoding="utf-8") as f:
        assert json.load(f)["step"] == 3
    train(tmp_path, then[0], "--zero", then[1], "--resume", steps=6)
    assert_same_run(metrics(one_process), metrics(tmp_path))


def test_global_gradient_clipping_matches_one_process(tmp_path):
    script = tmp_path / "clip.py"
    script.write_text(CLIP_SCRIPT)
    proc = subprocess.run([MPIEXEC, "-n", "2", sys.executable, str(script)], capture_output=True,
                          text=True, timeout=60, env=env(), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    one = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                         timeout=60, env=env(), cwd=tmp_path)
    assert one.returncode == 0, one.stderr[-3000:]
    n2, n1 = json.loads(proc.stdout.splitlines()[-1]), json.loads(one.stdout.splitlines()[-1])
    for mode in ("plain", "zero"):
        # the norm of the global gradient (not of a rank's half), then clipped to 0.05
        assert n2[mode]["norm"] == pytest.approx(n1["plain"]["norm"], rel=1e-5)
        assert n2[mode]["norm"] > 0.05
        assert n2[mode]["clipped"] == pytest.approx(0.05, rel=1e-4)


CLIP_SCRIPT = r'''
import json
import numpy as np
import tinyroots as tr
from tinyroots import distributed, optim

world = distributed.init()
result = {}
for mode in ("plain", "zero"):
    tr.random.manual_seed(0)
    model = tr.GPT(tr.GPTConfig(n_layer=1, n_head=2, n_embd=16, vocab_size=32, block_size=8))
    params = model.parameters()
    opt = optim.AdamW(params, lr=0.0, weight_decay=0.0)
    hooks = distributed.DataParallel(world, zero=1 if mode == "zero" else 0, bucket_mb=0.002)
    hooks.attach(opt)
    ids = np.random.default_rng(0).integers(0, 32, (4, 9))
    mine = list(hooks.shard(4))
    for i in mine:
        loss = model(ids[i:i + 1, :-1], targets=ids[i:i + 1, 1:], return_logits=False).loss
        if i == mine[-1]:
            hooks.before_last_backward(params)
        loss.backward(np.float32(0.25))
    hooks.after_backward(params)
    norm = hooks.clip_grad_norm(params, 0.05)
    if mode == "zero":
        clipped = hooks.sync.clip_grad_norm(None)    # the norm of the clipped pieces
    else:
        clipped = optim.grad_norm(params)
    result[mode] = {"norm": norm, "clipped": clipped}
if world.is_main:
    print(json.dumps(result))
'''


def test_a_rank_that_raises_ends_the_job_within_60s(tmp_path):
    script = tmp_path / "fail.py"
    script.write_text(
        "import sys\n"
        "from tinyroots import distributed, model, train\n"
        "if distributed.init().rank == 1:\n"
        "    forward, calls = model.GPT.forward, [0]\n"
        "    def failing(self, *a, **k):\n"
        "        calls[0] += 1\n"
        "        if calls[0] > 12:\n"
        "            raise RuntimeError('injected failure on rank 1')\n"
        "        return forward(self, *a, **k)\n"
        "    model.GPT.forward = failing\n"
        "sys.exit(train.main(sys.argv[1:]))\n")
    cmd = [MPIEXEC, "-n", "2", sys.executable, str(script), *TINY, "--max-steps", "1000",
           "--out-dir", str(tmp_path / "run")]
    t0 = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=90, env=env(),
                          cwd=tmp_path)
    elapsed = time.time() - t0
    why = f"exit {proc.returncode} after {elapsed:.0f} s, stderr ends:\n{proc.stderr[-3000:]}"
    assert elapsed < 60, why
    assert proc.returncode != 0, why
    assert "injected failure on rank 1" in proc.stderr, why


def test_ctrl_c_saves_last_once_and_every_rank_exits(tmp_path):
    out = tmp_path / "run"
    cmd = [MPIEXEC, "-n", "2", sys.executable, "-m", "tinyroots.train", *TINY,
           "--max-steps", "100000", "--lr-decay-steps", "100000", "--eval-interval", "100000",
           "--out-dir", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env(), cwd=tmp_path)
    try:
        deadline = time.time() + 90
        while time.time() < deadline:
            if os.path.exists(out / "metrics.jsonl") and len(metrics(out)) >= 3:
                break
            time.sleep(0.5)
        else:
            pytest.fail("the run did not get going within 90 s")
        proc.send_signal(signal.SIGINT)        # what Ctrl-C in the terminal sends mpiexec
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err[-3000:]
    with open(out / "last" / "trainer_state.json", encoding="utf-8") as f:
        saved = json.load(f)["step"]
    logged = max(r["step"] for r in metrics(out))
    assert saved >= logged >= 3              # saved where it stopped, after the logged steps
    assert err.count("Ctrl-C: finishing this step") == 1   # rank 0 alone says so


def test_ranks_with_different_configurations_stop_with_a_clear_error(tmp_path):
    base = [sys.executable, "-m", "tinyroots.train", *TINY, "--max-steps", "3",
            "--out-dir", str(tmp_path)]
    cmd = [MPIEXEC, "-n", "1", *base, "--learning-rate", "1e-3", ":",
           "-n", "1", *base, "--learning-rate", "2e-3"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=env(),
                          cwd=tmp_path)
    assert proc.returncode == 2
    assert "disagree on the configuration" in proc.stderr
    assert "rank(s) 1" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_grad_accum_steps_must_split_between_the_processes(tmp_path):
    proc = subprocess.run([MPIEXEC, "-n", "2", sys.executable, "-m", "tinyroots.train", *TINY,
                           "--grad-accum-steps", "3", "--out-dir", str(tmp_path)],
                          capture_output=True, text=True, timeout=60, env=env(), cwd=tmp_path)
    assert proc.returncode == 2
    assert "grad_accum_steps=3" in proc.stderr and "divisible" in proc.stderr
    assert proc.stderr.count("grad_accum_steps=3") == 1      # said once, by rank 0


def test_finetune_on_two_processes_gives_the_one_process_run(one_process, tmp_path):
    text = "the dog and the cat saw a plum near the goat . " * 40
    (tmp_path / "train.txt").write_text(text)
    (tmp_path / "val.txt").write_text(text[:300])
    args = ["lm", "--init", str(one_process / "last"), "--train", str(tmp_path / "train.txt"),
            "--val", str(tmp_path / "val.txt"), "--max-steps", "6", "--grad-accum-steps", "2",
            "--batch-size", "2", "--max-length", "16", "--eval-interval", "3",
            "--learning-rate", "3e-3", "--progress", "false"]
    runs = {}
    for n, zero in ((1, "0"), (2, "0"), (2, "1")):
        out = tmp_path / f"n{n}-zero{zero}"
        cmd = [sys.executable, "-m", "tinyroots.finetune", *args, "--zero", zero,
               "--out-dir", str(out)]
        if n > 1:
            cmd = [MPIEXEC, "-n", str(n), *cmd]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env(),
                              cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr[-3000:]
        runs[n, zero] = metrics(out)
    for two in (runs[2, "0"], runs[2, "1"]):
        assert_same_run(runs[1, "0"], two, keys=("val_loss", "train_loss"))
