"""Pretraining on several GPUs of one node: one process per GPU, started by torchrun, trained with DDP.

``launch(n, kwargs)`` runs ``pretrain(**kwargs)`` in ``n`` processes started by torchrun
(``python -m torch.distributed.run --standalone``, so no address or port to configure) and waits for
them. ``main`` is what each process runs: it joins the process group (NCCL with one GPU per rank,
``LOCAL_RANK``; gloo on CPU, which is how the tests run two ranks on a machine without GPUs) and calls
``pretrain``. There the loader gives each rank its part of every global batch (``batch_size`` stays the
global batch), the engine wraps the model in DistributedDataParallel, and the methods take their batch
statistics over the global batch (``scjepa.models.distributed``); rank 0 alone writes checkpoints and
the model directory, and every rank resumes from rank 0's checkpoint. Each rank gets
``num_threads // n`` CPU threads: one for its training loop, the rest for its loader workers.

The workflow's pretrain rule calls ``launch`` when a method asks for ``gpu: N`` with N > 1 (SLURM:
``--gpus=N`` on one node, ``--cpus-per-task`` = the rule's threads; see profiles/slurm/config.yaml).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

log = logging.getLogger(__name__)


def _stream(f):
    """A file object with a real descriptor (the rule log replaces sys.stderr), else None (inherit)."""
    try:
        f.fileno()
        return f
    except (AttributeError, OSError, ValueError):
        return None


def launch(n_procs: int, kwargs: dict) -> None:
    """Run ``scjepa.methods.pretrain(**kwargs)`` on ``n_procs`` data-parallel ranks of this node.

    ``kwargs``: JSON-serialisable keyword arguments of ``pretrain`` (no ``loader``); ``num_threads`` is
    the CPU count of the whole job and is split between the ranks. The ranks' output goes to this
    process's stderr (the rule's log). SIGTERM/SIGINT are passed on to torchrun, which stops the ranks.
    Raises RuntimeError when a rank fails.
    """
    n_procs = int(n_procs)
    if n_procs < 1:
        raise ValueError(f"n_procs must be >= 1 (got {n_procs})")
    kwargs = dict(kwargs)
    total = kwargs.get("num_threads") or os.cpu_count() or 1
    kwargs["num_threads"] = max(1, int(total) // n_procs)
    with tempfile.NamedTemporaryFile("w", suffix=".json", prefix="scjepa-ddp-", delete=False) as fh:
        json.dump(kwargs, fh)
        spec = fh.name
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={n_procs}",
           "-m", "scjepa.methods.distributed", spec]
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", str(kwargs["num_threads"]))  # torchrun would set 1 and warn
    err = _stream(sys.stderr)
    log.info("starting %d ranks: %s", n_procs, " ".join(cmd))
    try:
        proc = subprocess.Popen(cmd, env=env, stdout=err, stderr=err)
        forwarded = {}
        if threading.current_thread() is threading.main_thread():
            def forward(signum, frame):
                proc.send_signal(signum)

            forwarded = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            rc = proc.wait()
        finally:
            for s, h in forwarded.items():
                signal.signal(s, h)
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    finally:
        os.unlink(spec)
    if rc != 0:
        raise RuntimeError(f"data-parallel pretraining failed: torchrun exited with status {rc} "
                           "(the ranks' errors are in the log above)")


def main(argv=None) -> None:
    """One rank (run by torchrun): join the process group, pretrain, leave."""
    import torch
    import torch.distributed as dist

    from scjepa.methods import pretrain

    spec = json.loads(Path((argv or sys.argv[1:])[0]).read_text())
    rank, local_rank = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"])
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING, stream=sys.stderr,
                        format=f"%(asctime)s rank {rank} %(levelname)s %(name)s: %(message)s")
    device = spec.get("hparams", {}).get("device", "auto")
    cuda = device != "cpu" and torch.cuda.is_available()
    if cuda:
        if local_rank >= torch.cuda.device_count():
            raise RuntimeError(f"rank {rank} (local rank {local_rank}) has no GPU: {torch.cuda.device_count()} "
                               "visible; ask for as many GPUs as ranks on one node")
        torch.cuda.set_device(local_rank)
    dist.init_process_group("nccl" if cuda else "gloo")
    try:
        log.info("rank %d of %d (%s)", rank, dist.get_world_size(), f"cuda:{local_rank}" if cuda else "cpu, gloo")
        pretrain(**spec)
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
