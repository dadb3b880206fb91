"""Generate one zoo (or one shard of it) with many processes: a Lightning Fabric world, one part per rank.

Rank r of a world of W processes trains sub-shard ``(i*W + r, n*W)`` of the requested shard
``(i, n)`` with ``zoo.generate`` on its own device, into ``<out>.parts/shard-<k>-of-<n*W>.h5``.
Since ``floor((i*W)*M / (n*W)) = floor(i*M / n)``, the W sub-shards split shard ``(i, n)`` exactly,
so once every rank is done rank 0 merges the parts into ``out`` (``zoo.merge``: an aligned block of
parts is that shard) and removes the folder. Every part is an ordinary resumable zoo file: a killed
run, rerun with the same command, resumes each rank's part, and each model is trained once.

Rank 0 holds ``out``'s lock (``zoo.lock``) from before anything is trained until the merge is
written, and decides alone whether there is anything to do; the other ranks follow its decision
(``fabric.broadcast``), so a refused run stops every rank with the same error and none waits for
the others in vain. Ranks finish at different times, so the process group gets a long timeout.

Fabric starts the other W-1 processes itself (``fabric.launch()`` re-runs the command), or, under
SLURM or torchrun, reads the cluster's environment and starts nothing.
"""
from __future__ import annotations

import contextlib
import datetime
import logging
import os
import re
import shutil
import sys
import threading
import time
from pathlib import Path
from typing import Callable

import torch

from .config import ZooConfig
from .generate import default_output, generate, shard_indices
from .lock import hold
from .merge import merge
from .store import STATUS_PENDING, ZooFileError, zoo_identity
from .errors import InputError

# How long a rank may wait for the others in a collective (the slowest rank's whole part, at the
# end); torch's default of 30 minutes would kill any long run.
RANK_TIMEOUT = datetime.timedelta(days=7)
_PART = re.compile(r"shard-(\d+)-of-(\d+)\.h5")


def parts_dir(out: str | Path) -> Path:
    """The folder of the ranks' parts of zoo ``out``: ``<out>.parts``."""
    out = Path(out)
    return out.with_name(out.name + ".parts")


def rank_shard(shard: tuple[int, int], rank: int, world: int) -> tuple[int, int]:
    """The sub-shard that rank ``rank`` of ``world`` trains of shard ``shard``."""
    return (shard[0] * world + rank, shard[1] * world)


def part_path(out: str | Path, shard: tuple[int, int], rank: int, world: int) -> Path:
    k, count = rank_shard(shard, rank, world)
    return parts_dir(out) / f"shard-{k}-of-{count}.h5"


def existing_parts(out: str | Path) -> dict[Path, tuple[int, int]]:
    """The part files in ``out``'s parts folder: path -> (k, N), in name order."""
    found = {}
    folder = parts_dir(out)
    if folder.is_dir():
        for p in sorted(folder.iterdir()):
            m = _PART.fullmatch(p.name)
            if m:
                found[p] = (int(m.group(1)), int(m.group(2)))
    return found


def check_world(config: ZooConfig, shard: tuple[int, int], world: int) -> None:
    """Refuse a world that would leave a rank without models (more parts than the shard has models)."""
    size = len(shard_indices(config.num_models, shard))
    if size == 0 or any(len(shard_indices(config.num_models, rank_shard(shard, r, world))) == 0 for r in range(world)):
        most = config.num_models // shard[1]
        raise InputError(f"--devices: {world} processes would split shard {shard[0]}/{shard[1]} ({size} models of "
                         f"{config.num_models}) into parts of which some hold no models; use at most {most} "
                         f"processes (--devices x --num-nodes)")


def check_parts(config: ZooConfig, out: Path, shard: tuple[int, int], world: int) -> None:
    """Refuse a parts folder that this run cannot resume: parts of another world size, of another
    shard, or of another config (checked before any rank trains, so no rank fails alone)."""
    found = existing_parts(out)
    if not found:
        return
    folder, count = parts_dir(out), shard[1] * world
    counts = sorted({c for _, c in found.values()})
    if counts != [count]:
        runs = ", ".join(f"{c // shard[1]} processes (parts of {c} shards)" if c % shard[1] == 0 else
                         f"parts of {c} shards" for c in counts)
        names = ", ".join(p.name for p in list(found)[:4]) + (", ..." if len(found) > 4 else "")
        raise ZooFileError(f"{folder}: holds {len(found)} part file(s) ({names}) of an unfinished run with {runs}; "
                           f"this run has {world} process(es) for shard {shard[0]}/{shard[1]}. Rerun with "
                           f"--devices x --num-nodes making that many processes to finish it, or delete the "
                           f"folder to start over.")
    block = range(shard[0] * world, (shard[0] + 1) * world)
    chash = config.hash()
    for p, (k, _) in found.items():
        if k not in block:
            raise ZooFileError(f"{p}: part {k} of {count}, not one of this run's parts {block.start}..{block.stop - 1} "
                               f"(shard {shard[0]}/{shard[1]}): left by a run with another --shard. Rerun that "
                               f"one, or delete {folder} to start over.")
        ident = zoo_identity(p)
        if ident["config_hash"] != chash:
            raise ZooFileError(f"{p}: made from a different config (hash {ident['config_hash']}, this config "
                               f"{chash}). Delete {folder} to start over, or choose another --out.")


def check_start(config: ZooConfig, out: Path, shard: tuple[int, int], world: int,
                log: Callable[[str], None]) -> bool:
    """Rank 0's look before any rank trains: True if there is work, False if ``out`` is already a
    complete zoo of this config; a ZooFileError for what ``world`` processes must not resume."""
    if out.exists():
        ident = zoo_identity(out)
        if ident["config_hash"] != config.hash():
            raise ZooFileError(f"{out}: made from a different config (hash {ident['config_hash']}, this config "
                               f"{config.hash()}); refusing to overwrite it. Choose another --out or delete the file.")
        if ident["shard"] != shard:
            raise ZooFileError(f"{out}: holds shard {ident['shard'][0]}/{ident['shard'][1]}, "
                               f"not {shard[0]}/{shard[1]}")
        status = ident["status"]
        pending = int((status == STATUS_PENDING).sum())
        if pending:
            # its pending models are rows of one file: W processes would need it split, and its chunk plan
            raise ZooFileError(f"{out}: a zoo of this config with {pending} of {len(status)} models pending, left "
                               f"by a run of one process; resume it with --devices 1 --num-nodes 1, or delete it "
                               f"to generate it with {world} processes.")
        log(f"{out}: a complete zoo of this config ({len(status)} models); nothing to train")
        if parts_dir(out).exists():
            log(f"{parts_dir(out)}: left by an earlier run and not needed; it can be deleted")
        return False
    check_parts(config, out, shard, world)
    return True


def generate_part(config: ZooConfig, out: str | Path, *, shard: tuple[int, int], rank: int, world: int,
                  device: str = "auto", progress: bool = False, log: Callable[[str], None] = print,
                  max_chunks: int | None = None) -> Path:
    """Train (or resume) rank ``rank``'s part of shard ``shard`` of ``out`` in a world of ``world``."""
    return generate(config, part_path(out, shard, rank, world), shard=rank_shard(shard, rank, world), device=device,
                    progress=progress, log=log, max_chunks=max_chunks)


def merge_parts(out: str | Path, shard: tuple[int, int], world: int) -> Path:
    """Join the ``world`` parts of shard ``shard`` into ``out``, then remove the parts folder."""
    merge([part_path(out, shard, r, world) for r in range(world)], out)
    shutil.rmtree(parts_dir(out))
    return Path(out)


def _share_cores(local_world: int) -> None:
    """CPU ranks of one machine split its cores (unless OMP_NUM_THREADS says otherwise): each
    using all of them, they would fight over them. Fabric's own launcher does this too; SLURM and
    torchrun workers get it here."""
    if "OMP_NUM_THREADS" in os.environ:
        return
    total = os.cpu_count() or 1
    mine = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else total
    torch.set_num_threads(max(1, min(mine, total // local_world)))


def _follow_parent() -> None:
    """A rank that Fabric started as a child of rank 0 exits when rank 0 is gone: Fabric's watcher
    of the children lives in rank 0 and dies with it, and a rank left waiting for rank 0 in a
    collective would wait for the whole (long) timeout."""
    parent = os.getppid()

    def watch() -> None:
        while True:
            time.sleep(5)
            if os.getppid() != parent:
                print(f"wsl: rank 0 (pid {parent}) is gone; stopping (rerun the command to resume)",
                      file=sys.stderr, flush=True)
                os._exit(1)

    threading.Thread(target=watch, daemon=True, name="wsl-follow-rank-0").start()


def launch(devices: int, num_nodes: int, accelerator: str, quiet: bool = False):
    """A launched Fabric world of ``devices`` processes on each of ``num_nodes`` machines (DDP);
    ``quiet``: without Fabric's banner of the ranks joining."""
    from lightning.fabric import Fabric
    from lightning.fabric.plugins.environments import LightningEnvironment
    from lightning.fabric.strategies import DDPStrategy
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    if quiet:  # after the import, which sets the levels
        for name in ("lightning.fabric", "lightning.pytorch"):  # the latter's logger prints rank 0's banner
            logging.getLogger(name).setLevel(logging.WARNING)

    try:
        fabric = Fabric(accelerator=accelerator, devices=devices, num_nodes=num_nodes,
                        strategy=DDPStrategy(timeout=RANK_TIMEOUT))
    except (MisconfigurationException, ValueError, RuntimeError) as e:
        raise InputError(f"--devices {devices} --num-nodes {num_nodes} --accelerator {accelerator}: {e}") from None
    fabric.launch()
    # Fabric's own launcher started this rank (torchrun and SLURM workers have their own environment)
    if isinstance(fabric.strategy.cluster_environment, LightningEnvironment) and fabric.local_rank > 0:
        _follow_parent()
    return fabric


def run(config: ZooConfig, out: str | Path | None = None, *, shard: tuple[int, int] = (0, 1), devices: int = 1,
        num_nodes: int = 1, accelerator: str = "auto", device: str = "auto", progress: bool = True,
        log: Callable[[str], None] = lambda s: print(s, flush=True)) -> Path:
    """Generate (or resume) shard ``shard`` of ``config``'s zoo into ``out`` with ``devices`` x
    ``num_nodes`` processes; one process is a plain ``generate`` (``device`` picks its device)."""
    for flag, value in (("--devices", devices), ("--num-nodes", num_nodes)):
        if not (isinstance(value, int) and value >= 1):
            raise InputError(f"{flag}: expected a whole number >= 1, found {value!r}")
    out = Path(out) if out is not None else default_output(config, shard)
    world = devices * num_nodes
    if world == 1:
        if not out.exists():  # a leftover folder of many processes: resume it, don't start over
            check_parts(config, out, shard, 1)
        if device == "auto" and accelerator != "auto":
            device = "cpu" if accelerator == "cpu" else "cuda"
        return generate(config, out, shard=shard, device=device, progress=progress, log=log)
    if device != "auto":
        raise InputError(f"--device {device}: names one device, but {world} processes each take their own; choose "
                         f"their kind with --accelerator")
    check_world(config, shard, world)
    fabric = launch(devices, num_nodes, accelerator, quiet=not progress)
    try:
        return _run_rank(fabric, config, out, shard, devices, progress, log)
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def _run_rank(fabric, config: ZooConfig, out: Path, shard: tuple[int, int], devices: int, progress: bool,
              log: Callable[[str], None]) -> Path:
    rank, world = fabric.global_rank, fabric.world_size
    if fabric.device.type == "cpu":
        _share_cores(devices)
    # rank 0 shows the progress bar of its part; with --quiet every rank logs, its lines prefixed
    part_log = (lambda s: log(f"[rank {rank}/{world}] {s}")) if rank == 0 or not progress else (lambda s: None)
    with contextlib.ExitStack() as held:
        verdict, error = None, None
        if rank == 0:
            try:
                held.enter_context(hold(out))
                verdict = "train" if check_start(config, out, shard, world, log) else "done"
            except Exception as e:  # every rank must hear of it, or they would wait for rank 0 forever
                error = e
                verdict = str(e) if isinstance(e, ValueError) else f"rank 0 failed: {e!r}"
        verdict = fabric.broadcast(verdict, src=0)
        if error is not None:
            raise error
        if verdict not in ("train", "done"):
            raise ZooFileError(verdict)
        if verdict == "done":
            return out
        if rank == 0:
            log(f"{out}: {world} processes ({fabric.device.type}) train shard {shard[0]}/{shard[1]} as parts "
                f"{shard[0] * world}..{shard[0] * world + world - 1} of {shard[1] * world} in {parts_dir(out)}")
        failure = None
        try:
            generate_part(config, out, shard=shard, rank=rank, world=world, device=str(fabric.device),
                          progress=progress and rank == 0, log=part_log)
        except Exception as e:  # the others must still meet this rank below, then all stop
            failure = e
        flags = torch.zeros(world, dtype=torch.int32, device=fabric.device)  # 1 where a rank failed
        flags[rank] = int(failure is not None)
        flags = fabric.all_reduce(flags, reduce_op="sum")  # also the barrier: every part is written
        failed = [r for r in range(world) if int(flags[r])]
        if failure is not None:
            raise failure
        if failed:
            raise ZooFileError(f"{out}: rank(s) {failed} of {world} failed (their errors are above); the models they "
                               f"finished are kept in {parts_dir(out)}: rerun the same command to resume")
        if rank == 0:
            merge_parts(out, shard, world)
            log(f"merged {world} parts into {out}")
    return out
