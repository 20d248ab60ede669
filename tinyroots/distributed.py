"""Data-parallel training over MPI: N processes, one model each, gradients averaged every step.

    mpiexec -n 4 python -m tinyroots.train [the same flags as a single process]
    mpiexec -f hostfile -n 16 python -m tinyroots.train ...     # several machines

Each process ("rank") holds the whole model and runs its share of the micro-batches of every
optimizer step; the gradients are then summed across ranks so that every rank takes exactly the
step a single process would have taken over the whole global batch. The pieces, in the order a
step meets them:

1. ``World``: who am I (rank), how many are we (size), and the few collectives the loop needs.
   A single process gets a World of size 1 whose methods do nothing, so the training loop has
   no "if distributed" branches. mpi4py is imported only when an MPI launcher started us.
2. ``GradientSync``: the gradients go into buckets (about 25 MB). During the backward pass of
   the last micro-batch each parameter announces when its gradient is final
   (``tensor.on_grad_final``); when a bucket's last gradient arrives, the bucket's non-blocking
   allreduce starts while backward goes on with the earlier layers. Arrays travel through MPI's
   buffer interface: no pickling.
3. ``Zero1`` (``--zero 1``): instead of an allreduce each bucket is reduce-scattered, so each
   rank receives the summed gradient of its 1/N of the parameters only; it keeps the AdamW
   moments of that 1/N, updates it, and an allgather hands everyone the new parameters.
4. Start and stop: ``check_same`` (all ranks run the same configuration on the same data),
   ``main_first`` (data preparation once), ``run_command`` (an exception on one rank ends
   the whole job at once instead of leaving the others waiting in a collective forever).

What crosses the network per step without ZeRO: one allreduce of all gradients (4 bytes per
parameter, float32); a ring allreduce sends and receives 2 (N-1)/N times that per rank. ZeRO-1
sends the same amount (reduce-scatter + allgather = the two halves of a ring allreduce).
"""

import dataclasses
import hashlib
import json
import math
import os
import sys
import traceback

import numpy as np

from . import optim
from .config import run_command as run_one_process
from .tensor import on_grad_final
from .training import Hooks

# environment variables that MPI launchers set in every process they start:
# MPICH/Hydra, Intel MPI and Slurm's srun (PMI_*), Open MPI (OMPI_COMM_WORLD_*), PMIx, MVAPICH
RANK_VARS = ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK", "MV2_COMM_WORLD_RANK")
SIZE_VARS = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")

INSTALL_HINT = 'pip install "tinyroots[mpi]"  (mpi4py, plus the mpich wheel or your cluster\'s MPI)'


class DistributedError(ValueError):
    """Something about the set of processes is wrong (no mpi4py, ranks that disagree, a
    grad_accum_steps the processes cannot share). Raised by every rank at the same point, so
    the job can end without MPI_Abort: rank 0 prints it once and everyone exits."""


def launched_by_mpi(environ=None):
    """The launcher's rank/size variables, or None when this process was started by hand.

        {"PMI_RANK": "1", "PMI_SIZE": "4"} -> (1, 4);  {} -> None
    The size is None when the launcher sets a rank but no size we know of (PMIx).
    """
    env = os.environ if environ is None else environ
    rank = next((int(env[v]) for v in RANK_VARS if v in env), None)
    size = next((int(env[v]) for v in SIZE_VARS if v in env), None)
    if rank is None and size is None:
        return None
    return rank, size


# ---------------------------------------------------------------------------------------------
# the world: rank, size and the few collectives the training loop needs


class World:
    """The processes of one job. ``World()`` is a single process; ``init()`` finds the real one.

    Every method works at size 1 (and does nothing there), so the loop calls them unconditionally.
    """

    def __init__(self, comm=None):
        self.comm = comm
        self.rank = comm.Get_rank() if comm is not None else 0
        self.size = comm.Get_size() if comm is not None else 1

    @property
    def is_main(self):
        return self.rank == 0

    def __repr__(self):
        return f"World(rank={self.rank}, size={self.size})"

    def sum(self, value):
        """The sum of a float (or float64 array) over all ranks, on every rank."""
        if self.comm is None:
            return value
        from mpi4py import MPI
        buf = np.array(value, dtype=np.float64)
        self.comm.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)
        return float(buf) if buf.ndim == 0 else buf

    def barrier(self):
        if self.comm is not None:
            self.comm.Barrier()

    def allgather(self, data):
        """Every rank's small Python value (a hash, a name), on every rank."""
        if self.comm is None:
            return [data]
        return self.comm.allgather(data)

    def abort(self, code=1):
        """End every process of the job now (MPI_Abort): nobody is left waiting in a collective."""
        sys.stdout.flush()
        sys.stderr.flush()
        if self.comm is None:
            os._exit(code)
        self.comm.Abort(code)


_world = None


def init():
    """The World this process belongs to (created once; a single process without MPI is size 1).

    mpi4py is imported only when an MPI launcher started the process, so a plain
    ``python -m tinyroots.train`` never needs it.
    """
    global _world
    if _world is not None:
        return _world
    launched = launched_by_mpi()
    if launched is None:
        _world = World()
        return _world
    try:
        from mpi4py import MPI
    except ImportError:
        rank, size = launched
        if size == 1:
            _world = World()
            return _world
        raise DistributedError(f"started by an MPI launcher ({size or 'several'} processes) "
                               f"but mpi4py is not installed: {INSTALL_HINT}") from None
    comm = MPI.COMM_WORLD
    _world = World(comm if comm.Get_size() > 1 else None)
    return _world


def world():
    """The current World (init() if nobody called it yet)."""
    return _world if _world is not None else init()


def library_version():
    """The MPI library's name and version, or a sentence saying why there is none."""
    try:
        from mpi4py import MPI
    except ImportError:
        return f"none (mpi4py is not installed: {INSTALL_HINT})"
    first = MPI.Get_library_version().strip().splitlines()[0]
    return f"{' '.join(first.split())} (mpi4py {__import__('mpi4py').__version__})"


# ---------------------------------------------------------------------------------------------
# start and stop


def main_first(world):
    """Context manager: rank 0 runs the block first (preparing data, training a tokenizer,
    writing caches), the others wait and then run it too, finding the caches ready."""
    return _MainFirst(world)


class _MainFirst:
    def __init__(self, world):
        self.world = world

    def __enter__(self):
        if not self.world.is_main:
            self.world.barrier()     # wait for rank 0 to finish the block
        return self

    def __exit__(self, exc_type, *rest):
        if exc_type is not None:
            return False             # run_command ends the job
        if self.world.is_main:
            self.world.barrier()     # release the others
        return False


def fingerprint(obj):
    """A short hash of a JSON-able object or of arrays: what check_same compares."""
    h = hashlib.sha256()
    if isinstance(obj, np.ndarray):
        h.update(str((obj.dtype.str, obj.shape)).encode())
        h.update(np.ascontiguousarray(obj).view(np.uint8).data)
    else:
        h.update(json.dumps(obj, sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]


def check_same(world, what, fingerprint_value):
    """Raise DistributedError on every rank if the ranks' fingerprints of `what` differ.

    subtle: ranks that disagree on the configuration or the data would still run (the
    collectives only need equal buffer sizes) and silently average gradients of different
    problems, so this is checked once at the start, and every rank raises the same error.
    """
    values = world.allgather(fingerprint_value)
    odd = [r for r, v in enumerate(values) if v != values[0]]
    if odd:
        raise DistributedError(
            f"the processes disagree on the {what}: rank(s) {', '.join(map(str, odd))} differ "
            f"from rank 0 ({values[odd[0]]} vs {values[0]}); every rank must get the same "
            "command line, files and environment")


def quiet(*args, **kwargs):
    """The log of ranks other than 0: they say nothing (rank 0 speaks for the job)."""


def run_command(prog, body, argv=None):
    """A command's main under mpiexec or not: body(argv) -> exit code.

    One process: config.run_command (user errors print one line and return 2). Several: an
    error on any rank must end every rank -- the others may be waiting for this one in a
    collective and would wait forever -- so it prints (one line for a user error, the
    traceback for a bug, prefixed by the rank) and MPI_Abort ends the job with its code.
    DistributedError is the exception: every rank raises it together, rank 0 prints it once.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        world = init()
    except DistributedError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    if world.size == 1:
        return run_one_process(prog, body, argv)
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    try:
        return body(argv)
    except DistributedError as exc:
        if world.is_main:
            print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    except SystemExit:
        raise                            # argparse: --help, a bad flag (every rank alike)
    except BaseException as exc:  # noqa: B036 -- KeyboardInterrupt too: the job must end
        where = f" (rank {world.rank} of {world.size})"
        if isinstance(exc, (OSError, ValueError, MemoryError)) and not debug:
            print(f"{prog}: error{where}: {exc}", file=sys.stderr)
            code = 2
        else:
            print(f"{prog}: failed{where}:", file=sys.stderr)
            traceback.print_exc()
            code = 130 if isinstance(exc, KeyboardInterrupt) else 1
        world.abort(code)


def hooks_for(cfg):
    """The training loop's hooks for this process: training.Hooks() when alone, else
    DataParallel after checking that every rank runs the same configuration.

    cfg: a config dataclass with grad_accum_steps, zero and bucket_mb (TrainConfig and
    FinetuneConfig; a config without the last two gets no ZeRO and 25 MB buckets).
    """
    zero, bucket_mb = getattr(cfg, "zero", 0), getattr(cfg, "bucket_mb", 25.0)
    if zero not in (0, 1):
        raise DistributedError(f"zero must be 0 (off) or 1 (shard AdamW's moments across the "
                               f"processes), got {zero}")
    if not bucket_mb > 0:
        raise DistributedError(f"bucket_mb must be > 0, got {bucket_mb}")
    w = init()
    if w.size == 1:
        return Hooks()
    check_same(w, "configuration", fingerprint(dataclasses.asdict(cfg)))
    split_micro_batches(w, cfg.grad_accum_steps)       # a clear error when N does not divide
    return DataParallel(w, zero=zero, bucket_mb=bucket_mb)


def data_fingerprint(*sources):
    """check_same's value for a run's data: token arrays hashed, shard files by name and size."""
    parts = []
    for source in sources:
        if isinstance(source, np.ndarray):
            parts.append(fingerprint(source))
        else:
            parts.append([(os.path.basename(str(p)), os.path.getsize(p)) for p in source])
    return fingerprint(parts)


def split_micro_batches(world, n_micro):
    """Which of a step's n_micro micro-batches this rank runs: a contiguous 1/N of them.

        4 micro-batches on 2 ranks: rank 0 runs 0, 1; rank 1 runs 2, 3
    The global batch is the same list at every N, which makes the run the same at every N.
    """
    if n_micro % world.size:
        raise DistributedError(
            f"grad_accum_steps={n_micro} counts the micro-batches of one step across all "
            f"processes and must be divisible by the number of processes ({world.size}); "
            f"use a multiple of {world.size}")
    per = n_micro // world.size
    return range(world.rank * per, (world.rank + 1) * per)


# ---------------------------------------------------------------------------------------------
# gradient buckets


class _Bucket:
    """Consecutive parameters whose gradients travel in one message.

    ``flat`` holds them end to end (padded to a multiple of the world size for ZeRO's
    reduce-scatter); ``slots`` is [(param, offset, size)].
    """

    def __init__(self, params, size_multiple):
        self.slots, n = [], 0
        for p in params:
            self.slots.append((p, n, p.data.size))
            n += p.data.size
        n = -(-n // size_multiple) * size_multiple
        self.flat = np.zeros(n, dtype=np.float32)
        self.ready = 0
        self.request = None


def make_buckets(params, bucket_mb, size_multiple=1):
    """Parameters in reverse order (backward finishes the last layers first), cut into buckets
    of about bucket_mb megabytes; a parameter larger than that gets a bucket of its own."""
    limit = max(1.0, bucket_mb * 1e6 / 4)      # floats per bucket (inf: one bucket)
    buckets, current, n = [], [], 0
    for p in reversed(params):
        if current and n + p.data.size > limit:
            buckets.append(_Bucket(current, size_multiple))
            current, n = [], 0
        current.append(p)
        n += p.data.size
    if current:
        buckets.append(_Bucket(current, size_multiple))
    return buckets


class GradientSync:
    """Sum the gradients of all ranks, bucket by bucket, overlapped with the last backward.

        sync = GradientSync(world, model.parameters())
        with sync.last_backward():     # only around the last micro-batch's backward
            loss.backward()
        sync.finish()                  # wait for the last buckets; p.grad is now the sum

    ``overlap=False`` sends everything in one blocking allreduce after backward instead (the
    benchmark compares the two).
    """

    def __init__(self, world, params, bucket_mb=25.0, overlap=True):
        self.world = world
        self.params = [p for p in params if p.requires_grad]
        self.overlap = overlap
        self.buckets = make_buckets(self.params, bucket_mb if overlap else math.inf,
                                    self._size_multiple())
        self.where = {id(p): (b, off, n) for b in self.buckets for p, off, n in b.slots}
        self.has_grad = np.zeros(len(self.params), dtype=np.float32)
        self.index = {id(p): i for i, p in enumerate(self.params)}

    def _size_multiple(self):
        return 1

    # -- during backward -----------------------------------------------------------------------

    def last_backward(self):
        """Context manager for the last micro-batch's backward (a no-op for one process)."""
        for b in self.buckets:
            b.ready = 0
        self.has_grad[:] = 0
        self.complete = 0             # buckets whose gradients are all final
        if self.world.size == 1 or not self.overlap:
            return _Nothing()
        return on_grad_final(self._grad_final)

    def _grad_final(self, p):
        where = self.where.get(id(p))
        if where is None:
            return
        bucket, off, n = where
        self._copy_in(p, bucket, off, n)
        bucket.ready += 1
        if bucket.ready == len(bucket.slots):
            self.complete += 1
            # The bucket completed last has nothing left to overlap with: backward is over.
            # finish() sends it with a blocking call, which MPI libraries run with their best
            # algorithm (MPICH's non-blocking allreduce of one 3 MB bucket measured slower
            # than the blocking one). A model whose gradients fit one bucket thus costs what
            # the blocking exchange costs.
            if self.complete < len(self.buckets):
                self._start(bucket)
        self._progress()

    def _copy_in(self, p, bucket, off, n):
        if p.grad is None:
            bucket.flat[off:off + n] = 0.0
        else:
            self.has_grad[self.index[id(p)]] = 1.0
            bucket.flat[off:off + n] = p.grad.reshape(-1)

    def _progress(self):
        # subtle: MPICH moves a non-blocking collective forward only inside MPI calls, so each
        # announcement pokes the requests in flight; without this the buckets would mostly
        # travel during finish()'s Wait, after backward, and nothing would overlap
        from mpi4py import MPI
        pending = [b.request for b in self.buckets if b.request is not None]
        if pending:
            MPI.Request.Testall(pending)

    def _start(self, bucket, blocking=False):
        from mpi4py import MPI
        if blocking:
            self.world.comm.Allreduce(MPI.IN_PLACE, bucket.flat, op=MPI.SUM)
        else:
            bucket.request = self.world.comm.Iallreduce(MPI.IN_PLACE, bucket.flat, op=MPI.SUM)

    # -- after backward --------------------------------------------------------------------------

    def finish(self):
        """Send what backward did not announce, wait for every bucket, leave the sum in p.grad.

        A parameter no rank computed a gradient for keeps grad None (the optimizer skips it,
        as it would in one process).
        """
        if self.world.size == 1:
            return
        self._reduce_all()
        self._write_back(self.flags)

    def _reduce_all(self):
        """Send the buckets backward did not start (no overlap, the last one, or unused
        parameters) with blocking calls, count on how many ranks each parameter got a gradient
        (a few hundred floats, in self.flags), and wait for the buckets in flight (_start:
        allreduce or, in ZeRO-1, reduce-scatter)."""
        from mpi4py import MPI
        for b in self.buckets:
            if b.request is None:
                if b.ready < len(b.slots):
                    for p, off, n in b.slots:
                        self._copy_in(p, b, off, n)
                    b.ready = len(b.slots)
                self._start(b, blocking=True)
        self.flags = self.has_grad.copy()
        self.world.comm.Allreduce(MPI.IN_PLACE, self.flags, op=MPI.SUM)
        for b in self.buckets:
            if b.request is not None:
                b.request.Wait()
                b.request = None

    def _write_back(self, flags):
        for b in self.buckets:
            for p, off, n in b.slots:
                if flags[self.index[id(p)]] > 0:
                    # a view into the bucket: the next step's first gradient is a fresh array
                    # again (zero_grad sets grad to None), so the bucket is never overwritten
                    # while a parameter still reads it
                    p.grad = b.flat[off:off + n].reshape(p.data.shape)
                else:
                    p.grad = None


class _Nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


# ---------------------------------------------------------------------------------------------
# ZeRO stage 1: optimizer state sharded across ranks


class Zero1(GradientSync):
    """GradientSync whose buckets are reduce-scattered, and the AdamW step that goes with it.

    Bucket b (padded to N*S floats) is cut into N pieces of S; rank r receives the summed
    gradient of piece r only, keeps the AdamW moments of piece r only (2 x 4 bytes x P / N
    instead of 2 x 4 x P), updates those parameters, and an allgather of the pieces gives every
    rank all the new parameters:

        grads (every rank, full) --reduce-scatter--> summed piece r --AdamW--> new params
        piece r --allgather--> new params (every rank, full)

    The step is the same arithmetic as AdamW.step() applied to each piece: the same kernel
    (adamw_update), the hyperparameters of the parameter's group, one step counter per
    parameter. Checkpoints hold the single-process AdamW state: gather_state() assembles it on
    rank 0, load_state() cuts a loaded one into this rank's pieces, at any N.
    """

    def __init__(self, world, optimizer, bucket_mb=25.0, overlap=True):
        from .optim import AdamW
        if not isinstance(optimizer, AdamW):
            raise DistributedError(f"--zero 1 shards AdamW's moments; this run's optimizer is "
                                   f"{type(optimizer).__name__}")
        self.optimizer = optimizer
        super().__init__(world, optimizer.parameters(), bucket_mb, overlap)
        self.group = {id(p): g for g in optimizer.param_groups for p in g["params"]}
        self.steps = np.zeros(len(self.params), dtype=np.int64)
        r = world.rank
        for b in self.buckets:
            S = len(b.flat) // world.size
            b.lo, b.hi = r * S, (r + 1) * S
            b.grad = np.zeros(S, dtype=np.float32)        # the summed gradient of piece r
            b.exp_avg = np.zeros(S, dtype=np.float32)
            b.exp_avg_sq = np.zeros(S, dtype=np.float32)
            b.send = np.zeros(S, dtype=np.float32)
            # (param, where in the param, where in the piece) for the parameters piece r covers
            b.segments = []
            for p, off, n in b.slots:
                a, e = max(off, b.lo), min(off + n, b.hi)
                if a < e:
                    b.segments.append((p, slice(a - off, e - off), slice(a - b.lo, e - b.lo)))

    def _size_multiple(self):
        return self.world.size

    def _start(self, bucket, blocking=False):
        from mpi4py import MPI
        if self.world.size == 1:
            return
        if blocking:
            self.world.comm.Reduce_scatter_block(bucket.flat, bucket.grad, op=MPI.SUM)
        else:
            bucket.request = self.world.comm.Ireduce_scatter_block(bucket.flat, bucket.grad,
                                                                   op=MPI.SUM)

    def finish(self):
        """Wait for the reduce-scatters: bucket.grad holds this rank's summed piece."""
        if self.world.size == 1:
            self._one_process_pieces()
            return
        self._reduce_all()

    def _one_process_pieces(self):
        # one rank owns every piece: the "reduce-scatter" is a copy
        self.has_grad[:] = 0
        for b in self.buckets:
            for p, off, n in b.slots:
                self._copy_in(p, b, off, n)
            b.grad[:] = b.flat
        self.flags = self.has_grad.copy()

    def clip_grad_norm(self, max_norm=None):
        """The global gradient norm (each rank's pieces squared and summed, then summed across
        ranks); scales the pieces so it is at most max_norm. Returns the norm before clipping,
        as optim.clip_grad_norm does, with the same formula."""
        local = sum(float(np.dot(b.grad, b.grad)) for b in self.buckets)
        norm = math.sqrt(self.world.sum(local))
        if max_norm and math.isfinite(norm) and norm > max_norm:
            scale = np.float32(max_norm / (norm + 1e-6))
            for b in self.buckets:
                b.grad *= scale
        return norm

    def step(self):
        """AdamW on this rank's pieces, then allgather the parameters."""
        from . import kernels as K
        self.steps += (self.flags > 0)
        for b in self.buckets:
            for p, in_param, in_piece in b.segments:
                i = self.index[id(p)]
                if self.flags[i] == 0:
                    continue
                g = self.group[id(p)]
                beta1, beta2 = g["betas"]
                K.adamw_update(p.data.reshape(-1)[in_param], b.grad[in_piece],
                               b.exp_avg[in_piece], b.exp_avg_sq[in_piece], g["lr"], beta1,
                               beta2, g["eps"], g["weight_decay"], int(self.steps[i]))
        self._allgather_params()

    def _allgather_params(self):
        if self.world.size == 1:
            return
        for b in self.buckets:
            b.send[:] = 0.0
            for p, in_param, in_piece in b.segments:
                b.send[in_piece] = p.data.reshape(-1)[in_param]
            b.request = self.world.comm.Iallgather(b.send, b.flat)
        for b in self.buckets:
            b.request.Wait()
            b.request = None
            for p, off, n in b.slots:
                p.data.reshape(-1)[:] = b.flat[off:off + n]

    # -- checkpoints: the single-process AdamW state, gathered on rank 0 ------------------------

    def gather_state(self):
        """Every rank calls this; rank 0's optimizer then holds the full AdamW state to save."""
        full = {}
        for name in ("exp_avg", "exp_avg_sq"):
            for k, b in enumerate(self.buckets):
                piece = getattr(b, name)
                if self.world.size == 1:
                    whole = piece.copy()
                else:
                    whole = np.empty(len(b.flat), dtype=np.float32) if self.world.is_main else None
                    self.world.comm.Gather(piece, whole, root=0)
                full[name, k] = whole
        if not self.world.is_main:
            return
        state = self.optimizer.state
        state.clear()
        for k, b in enumerate(self.buckets):
            for p, off, n in b.slots:
                i = self.index[id(p)]
                if self.steps[i] == 0:
                    continue
                state[id(p)] = {"step": int(self.steps[i]),
                                "exp_avg": full["exp_avg", k][off:off + n].reshape(p.shape),
                                "exp_avg_sq": full["exp_avg_sq", k][off:off + n].reshape(p.shape)}

    def release_state(self):
        """Drop the gathered full state after saving (it is N times this rank's share)."""
        self.optimizer.state.clear()

    def load_state(self):
        """Cut the optimizer's loaded single-process state into this rank's pieces."""
        state = self.optimizer.state
        for b in self.buckets:
            b.exp_avg[:] = 0.0
            b.exp_avg_sq[:] = 0.0
            for p, in_param, in_piece in b.segments:
                st = state.get(id(p))
                if st:
                    b.exp_avg[in_piece] = st["exp_avg"].reshape(-1)[in_param]
                    b.exp_avg_sq[in_piece] = st["exp_avg_sq"].reshape(-1)[in_param]
        for p in self.params:
            st = state.get(id(p))
            self.steps[self.index[id(p)]] = int(st["step"]) if st else 0
        state.clear()


# ---------------------------------------------------------------------------------------------
# the training loop's hooks (training.Hooks): where all of the above plugs in


class DataParallel(Hooks):
    """training.Hooks for N processes: the loop calls these and knows nothing else about MPI.

        hooks = DataParallel(world, zero=1, bucket_mb=25)    # before the run: is_main, shard
        hooks.attach(optimizer)                              # once the optimizer exists
        Trainer(job, params, optimizer, schedule, settings, hooks=hooks).run()
    """

    def __init__(self, world, zero=0, bucket_mb=25.0, overlap=True):
        if zero not in (0, 1):
            raise DistributedError(f"zero must be 0 (off) or 1 (shard AdamW's moments), got "
                                   f"{zero}")
        if not bucket_mb > 0:
            raise DistributedError(f"bucket_mb must be > 0, got {bucket_mb}")
        self.world = world
        self.rank, self.world_size = world.rank, world.size
        self.zero, self.bucket_mb, self.overlap = zero, bucket_mb, overlap
        self.sync = None
        self._during_backward = None

    def attach(self, optimizer):
        """Lay out the buckets over the optimizer's parameters (ZeRO-1: and its shards)."""
        if self.zero:
            self.sync = Zero1(self.world, optimizer, self.bucket_mb, self.overlap)
        else:
            self.sync = GradientSync(self.world, optimizer.parameters(), self.bucket_mb,
                                     self.overlap)

    def _sync(self):
        if self.sync is None:
            raise DistributedError("DataParallel: call attach(optimizer) before training")
        return self.sync

    def shard(self, n):
        """A contiguous 1/N of n items when N divides n (the micro-batches of a step: checked
        at start), else every N-th (the batches of an evaluation)."""
        if n % self.world_size == 0:
            per = n // self.world_size
            return range(self.rank * per, (self.rank + 1) * per)
        return range(self.rank, n, self.world_size)

    def before_last_backward(self, params):
        self._during_backward = self._sync().last_backward()
        self._during_backward.__enter__()

    def after_backward(self, params):
        if self._during_backward is not None:
            self._during_backward.__exit__(None, None, None)
            self._during_backward = None
        self._sync().finish()

    def clip_grad_norm(self, params, max_norm):
        if self.zero:
            return self.sync.clip_grad_norm(max_norm)
        # every rank holds the same summed gradients: the local norm is the global one
        return optim.clip_grad_norm(params, max_norm)

    def optimizer_step(self, optimizer):
        if self.zero:
            self.sync.step()
        else:
            optimizer.step()

    def optimizer_state(self, optimizer):
        if not self.zero:
            return optimizer.state_dict()
        self.sync.gather_state()          # every rank sends its pieces; rank 0 assembles
        state = optimizer.state_dict()
        self.sync.release_state()
        return state

    def load_optimizer_state(self, optimizer, arrays, meta):
        optimizer.load_state_dict(arrays, meta)
        if self.zero:
            self._sync().load_state()

    def all_sum(self, x):
        return self.world.sum(x)

    def broadcast(self, x):
        if self.world.comm is None:
            return x
        return self.world.comm.bcast(x, root=0)   # a stop reason: a short string or None
