"""Sharded checkpoints with megatron-core's dist_checkpointing, written so that a crash or a
kill at any moment leaves the previous checkpoint as the latest loadable one.

Layout of RUN/checkpoints/:
    step_0000100/      one complete checkpoint (dist_checkpointing format + config.yaml +
                       checksums.json: size and sha256 of every file, checked before loading)
    step_0000200.partial/   being written; never loaded, removed at the next start
    latest             text file naming the newest complete checkpoint, replaced atomically
                       only after every rank finished writing
"""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import queue
import random
import re
import shutil
import warnings
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch
import torch.distributed as dist
from megatron.core import dist_checkpointing, parallel_state
from megatron.core.dist_checkpointing.mapping import ShardedObject
from megatron.core.dist_checkpointing.strategies import filesystem_async
from megatron.core.tensor_parallel import get_cuda_rng_tracker

from megatron_seqpt.config.schema import ModelConfig
from megatron_seqpt.errors import UserError
from megatron_seqpt.files import WriteError, write_error
from megatron_seqpt.hashing import file_sha256

FORMAT_VERSION = 1
LATEST = "latest"
PARTIAL_SUFFIX = ".partial"
# A save that failed with less free space than this left on its file system ran out of it
# (torch's writer does not always say so: its C++ stream drops the errno).
FULL_DISK_BYTES = 64 << 20
CHECKSUMS = "checksums.json"
# The run directory's copy of the tokenizer its checkpoints were trained with.
TOKENIZER_FILE = "tokenizer.model"
# Model fields that decide parameter shapes; a checkpoint must agree on all of them.
SHAPE_FIELDS = ("kind", "hidden_size", "encoder", "decoder", "max_position_embeddings",
                "normalization", "activation", "encoder_mlm_weight")


class CheckpointError(UserError):
    pass


def step_dir_name(step: int) -> str:
    return f"step_{step:07d}"


def step_of(directory: Path) -> int:
    return int(directory.name.split("_", 1)[1])


def complete_checkpoints(root: Path) -> list[Path]:
    """The complete step_* directories under ``root``, oldest step first."""
    return sorted((p for p in root.glob("step_*") if not p.name.endswith(PARTIAL_SUFFIX)
                   and (p / "metadata.json").is_file()), key=step_of)


def write_checksums(directory: Path) -> None:
    """Size and sha256 of every file of a written checkpoint, in ``checksums.json``."""
    entries = {str(f.relative_to(directory)): {"size": f.stat().st_size, "sha256": file_sha256(f)}
               for f in sorted(directory.rglob("*")) if f.is_file() and f.name != CHECKSUMS}
    tmp = directory / (CHECKSUMS + ".tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(entries, handle, indent=1)
        handle.flush()
        os.fsync(handle.fileno())
    tmp.replace(directory / CHECKSUMS)


def damage(directory: Path, full: bool = True) -> Optional[str]:
    """What is wrong with a checkpoint's files against its checksums, or None. ``full=False``
    compares sizes only (cheap: what every rank can afford). A checkpoint written before
    checksums existed has nothing to compare with and passes."""
    listing = directory / CHECKSUMS
    if not listing.is_file():
        return None
    try:
        entries = json.loads(listing.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError):
        return f"{CHECKSUMS} does not parse"
    for name, entry in entries.items():
        path = directory / name
        if not path.is_file():
            return f"{name} is missing"
        size = path.stat().st_size
        if size != entry["size"]:
            return f"{name} has {size} bytes, {entry['size']} were written"
        if full and file_sha256(path) != entry["sha256"]:
            return f"{name} does not match its checksum (its bytes changed after it was written)"
    return None


# Checkpoints this process has verified: path -> mtime of their checksums file.
_verified: dict[Path, float] = {}


def verify(checkpoint: Path) -> None:
    """Refuse a damaged checkpoint, naming the file and the newest intact one before it. The
    main rank compares checksums; the others compare sizes."""
    listing = checkpoint / CHECKSUMS
    stamp = listing.stat().st_mtime if listing.is_file() else 0.0
    key = checkpoint.resolve()
    if _verified.get(key) == stamp:
        return
    main = not dist.is_initialized() or dist.get_rank() == 0
    problem = damage(checkpoint, full=main)
    if problem is None:
        _verified[key] = stamp
        return
    # Only the newest intact one is named: older ones are not read.
    older = reversed(complete_checkpoints(checkpoint.parent)) \
        if checkpoint.name.startswith("step_") else ()
    intact = next((p for p in older if step_of(p) < step_of(checkpoint)
                   and damage(p, full=main) is None), None)
    offer = (f"the newest intact one before it is {intact.name}: write that name into "
             f"{checkpoint.parent / LATEST} to resume from it") if intact else \
        "there is no intact checkpoint before it"
    raise CheckpointError(f"checkpoint {checkpoint} is damaged: {problem}; {offer}")


def resolve(path: str | Path) -> Path:
    """A checkpoint directory from a run directory, a checkpoints/ directory or itself."""
    path = Path(path).expanduser()
    for root in (path / "checkpoints", path):
        pointer = root / LATEST
        if pointer.is_file():
            target = root / pointer.read_text(encoding="utf-8").strip()
            if not (target / "metadata.json").is_file():
                found = [p.name for p in complete_checkpoints(root)]
                raise CheckpointError(
                    f"{pointer} names {target.name}, which is not a complete checkpoint; write "
                    "the name of a complete one into it "
                    f"({', '.join(found) if found else 'there is none'}) or use a new run "
                    "directory")
            verify(target)
            return target
    if (path / "metadata.json").is_file():
        verify(path)
        return path
    raise CheckpointError(f"no checkpoint at {path}: expected a run directory (with "
                          "checkpoints/latest), a checkpoints/ directory or a step_* directory")


def content_metadata(path: Path) -> dict:
    """What a checkpoint says about itself (model shape, layout, step), readable before load."""
    try:
        meta = dist_checkpointing.load_content_metadata(str(path))
    except Exception as err:  # a damaged file of a checkpoint written without checksums
        raise CheckpointError(f"checkpoint {path} cannot be read ({type(err).__name__}: "
                              f"{err}); it is damaged: resume from an earlier one by writing "
                              f"its name into {path.parent / LATEST}") from None
    if not meta or meta.get("format") != FORMAT_VERSION:
        raise CheckpointError(f"{path} was not written by megatron_seqpt (format "
                              f"{FORMAT_VERSION}); convert it with tools/convert_checkpoint.py")
    return meta


def model_shape(model: ModelConfig, vocab_size: int) -> dict:
    """The shape-deciding model settings, as stored in every checkpoint's metadata."""
    shape = {k: v for k, v in dataclasses.asdict(model).items() if k in SHAPE_FIELDS}
    if model.kind != "t5":
        shape.pop("decoder")
        shape.pop("encoder_mlm_weight")
    else:  # only whether the encoder MLM head exists matters for shapes
        shape["encoder_mlm_weight"] = bool(model.encoder_mlm_weight)
    shape["vocab_size"] = vocab_size
    return shape


def check_same_shape(path: Path, saved: dict, current: dict) -> None:
    diffs = [f"model.{key}: checkpoint {saved.get(key)!r}, config {value!r}"
             for key, value in current.items() if saved.get(key) != value]
    if diffs:
        raise CheckpointError(
            f"{path} holds a model of another shape:\n  " + "\n  ".join(diffs)
            + f"\nuse the config the checkpoint was written with ({path}/config.yaml)")


def tokenizer_file_of(checkpoint: Path) -> Path:
    """The run directory's copy of the tokenizer ``checkpoint`` was trained with."""
    return checkpoint.parent.parent / TOKENIZER_FILE


def check_tokenizer(path: Path, saved: Optional[dict], tokenizer: Any,
                    fix: Optional[str] = None) -> None:
    """Refuse to load a checkpoint trained with another tokenizer than ``tokenizer`` (a
    SentencePieceTokenizer; ``saved`` is the checkpoint's record of its identity, and one
    without a record, such as an old conversion, is taken as it is). ``fix`` says what to do;
    by default: use the run's own copy."""
    current = tokenizer.identity
    if not saved or saved.get("sha256") == current["sha256"]:
        return
    if fix is None:
        own = tokenizer_file_of(path)
        fix = "use the tokenizer it was trained with: " + (
            f"data.tokenizer_model={own}" if own.is_file() else "data.tokenizer_model")
    raise CheckpointError(
        f"{path} was trained with another tokenizer (sha256 {saved['sha256'][:12]}, "
        f"{saved.get('vocab_size')} pieces) than {tokenizer.model_file} (sha256 "
        f"{current['sha256'][:12]}, {current['vocab_size']} pieces): its ids would mean other "
        f"pieces; {fix}")


def _rng_state() -> dict[str, Any]:
    state = {"random": random.getstate(), "numpy": np.random.get_state(),
             "torch": torch.get_rng_state(), "tracker": get_cuda_rng_tracker().get_states()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["random"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])
    get_cuda_rng_tracker().set_states(state["tracker"])


def rng_sharded_object(for_loading: bool) -> ShardedObject:
    """Every rank's RNG state: one object per (pipeline, tensor) rank holding the list of its
    data-parallel replicas' states (as Megatron-LM stores them)."""
    dp_group = parallel_state.get_data_parallel_group()
    states = None
    if not for_loading:
        states = [None] * dist.get_world_size(dp_group)
        dist.all_gather_object(states, _rng_state(), group=dp_group)
    return ShardedObject(
        "rng_state", states,
        (parallel_state.get_pipeline_model_parallel_world_size(),
         parallel_state.get_tensor_model_parallel_world_size()),
        (parallel_state.get_pipeline_model_parallel_rank(),
         parallel_state.get_tensor_model_parallel_rank()),
        replica_id=parallel_state.get_data_parallel_rank())


def restore_rng(states: list) -> None:
    dp_rank = parallel_state.get_data_parallel_rank()
    _set_rng_state(states[dp_rank] if dp_rank < len(states) else states[0])


def _disk_error(err: BaseException, directory: Path) -> Optional[OSError]:
    """The OS error behind a failed save: raised as it is, or reported by torch's checkpoint
    writer as text ("[Errno 28] No space left on device") from a worker, or lost in its C++
    stream ("unexpected pos"), where the file system with no space left tells it."""
    if isinstance(err, (KeyboardInterrupt, SystemExit)):  # torch's CheckpointException is a
        return None                                        # BaseException too
    if isinstance(err, OSError) and err.errno:
        return err
    found = re.search(r"\[Errno (\d+)\]", str(err))
    if found:
        code = int(found.group(1))
        return OSError(code, os.strerror(code))
    try:
        if shutil.disk_usage(directory).free >= FULL_DISK_BYTES:
            return None
    except OSError:
        return None
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _results_in_process() -> None:
    """Have megatron-core's checkpoint writer hand its write results back through a queue of
    this process, a new one for each save (what an interrupted save left in it cannot pass
    for the next one's results). Its default is one queue served by a spawned multiprocessing
    manager, which async saving (a writer in another process) needs; saves here are
    synchronous, and that manager imported torch to unpickle the first results: ~2.8 s of
    each process's first save on a 2-core machine, and a process left behind."""
    filesystem_async._results_queue = queue.Queue()


class CheckpointManager:
    """Saves and finds checkpoints of one run directory."""

    def __init__(self, run_dir: Path, keep_last: int):
        self.root = Path(run_dir) / "checkpoints"
        self.keep_last = keep_last
        self.is_main = dist.get_rank() == 0

    def latest(self) -> Optional[Path]:
        """The checkpoint to resume from; None for a run with none. A broken or missing
        ``latest`` next to complete checkpoints is refused: starting over would overwrite
        the run's metrics and prune its checkpoints."""
        if (self.root / LATEST).is_file():
            return resolve(self.root)
        found = complete_checkpoints(self.root) if self.root.is_dir() else []
        if found:
            raise CheckpointError(
                f"{self.root} holds checkpoints (newest {found[-1].name}) but no {LATEST} "
                f"pointer; write {found[-1].name} into {self.root / LATEST} to resume from it, "
                "or use a new run directory")
        return None

    def remove_partial(self) -> None:
        """Leftovers of a save that was interrupted."""
        if self.is_main and self.root.is_dir():
            for stale in self.root.glob(f"*{PARTIAL_SUFFIX}"):
                shutil.rmtree(stale, ignore_errors=True)
        dist.barrier()

    def save(self, step: int, state: dict, metadata: dict,
             write_extra: Callable[[Path], None],
             check_abort: Callable[[], None] = lambda: None) -> Path:
        """Write ``state`` (a sharded state dict) for ``step`` and make it the latest.

        ``write_extra(directory)`` runs on the main rank before the checkpoint is published
        (the resolved config goes there). ``check_abort()`` runs on every rank once the state
        is written, and raises to have the save undone (an abort requested meanwhile).
        """
        final = self.root / step_dir_name(step)
        partial = final.with_name(final.name + PARTIAL_SUFFIX)
        if self.is_main:
            shutil.rmtree(partial, ignore_errors=True)
            partial.mkdir(parents=True)
        dist.barrier()
        _results_in_process()
        try:
            dist_checkpointing.save(state, str(partial),
                                    content_metadata={"format": FORMAT_VERSION, **metadata})
            check_abort()
            dist.barrier()
            if self.is_main:
                write_extra(partial)
                write_checksums(partial)
        except BaseException as err:  # an error or a second Ctrl-C: no half-written directory
            disk = _disk_error(err, partial)
            if self.is_main:
                shutil.rmtree(partial, ignore_errors=True)
            if disk is not None:
                latest = self.root / LATEST
                kept = latest.read_text(encoding="utf-8").strip() if latest.is_file() \
                    else "none yet"
                raise WriteError(f"{write_error(disk, final)} (latest checkpoint still: "
                                 f"{kept})") from None
            raise
        if self.is_main:
            if final.exists():
                shutil.rmtree(final)
            partial.rename(final)
            self._point_latest_to(final)
            self._prune(step)
        dist.barrier()
        return final

    def _point_latest_to(self, target: Path) -> None:
        tmp = self.root / (LATEST + ".tmp")
        tmp.write_text(target.name + "\n", encoding="utf-8")
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        tmp.replace(self.root / LATEST)

    def _prune(self, written: int) -> None:
        """Keep the newest ``keep_last`` checkpoints up to the one just written; newer ones (a
        run pointed back at an older checkpoint) are not this run's to delete."""
        if self.keep_last <= 0:
            return
        older = [p for p in complete_checkpoints(self.root) if step_of(p) < written]
        for old in older[: max(0, len(older) - (self.keep_last - 1))]:
            shutil.rmtree(old, ignore_errors=True)


# Deprecations that megatron-core 0.16's loading sets off in torch (its ShardedTensor and
# ``load_state_dict``), shown on every resume and load with a source line of theirs: nothing a
# user of this project can change.
_LOADING_DEPRECATIONS = (r"`load_state_dict` is deprecated", r"Please use DTensor instead")


def load(path: Path, state_template: dict) -> dict:
    """Load into the shapes of ``state_template``; shape mismatches become a clear error."""
    try:
        with warnings.catch_warnings():
            for message in _LOADING_DEPRECATIONS:
                warnings.filterwarnings("ignore", message, FutureWarning)
            return dist_checkpointing.load(state_template, str(path))
    except (RuntimeError, ValueError, KeyError) as err:
        raise CheckpointError(f"cannot load {path} into this model: {err}") from err
