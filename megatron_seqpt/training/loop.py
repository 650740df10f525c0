"""The training loop on megatron-core's forward/backward schedules, for any workload.

One step = ``global_batch_size`` samples split into micro-batches over the data-parallel ranks,
gradients accumulated in megatron-core's DDP buffers, one optimizer and scheduler step. Every
piece of state a step depends on (weights, optimizer, scheduler, data position, RNG, counters)
is in the checkpoint, so a resumed run takes the same steps as one that was never stopped.
What is trained (data, model, loss) comes from a Workload: pre-training by default, a
fine-tuning task when the caller passes one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import shutil
import time
from pathlib import Path
from typing import Callable, Optional

import torch
import torch.distributed as dist
from megatron.core.pipeline_parallel import get_forward_backward_func

from megatron_seqpt.config import RunConfig, dump
from megatron_seqpt.errors import UserError
from megatron_seqpt.models.builder import parameter_count
from megatron_seqpt.models.specs import choose_impl
from megatron_seqpt.models.vocab import padded_vocab_size
from megatron_seqpt.runtime import cpu_compat
from megatron_seqpt.runtime.distributed import DistributedContext, seed_everything
from megatron_seqpt.runtime.log import log
from megatron_seqpt.training import checkpoint as ckpt
from megatron_seqpt.training import evaluation, freeze, optimizer_state, run_lock, run_state
from megatron_seqpt.training.checkpoint import TOKENIZER_FILE
from megatron_seqpt.training.freeze import FreezeSchedule
from megatron_seqpt.training.metrics import MetricsLogger, Window
from megatron_seqpt.training.optim import Optimization, rebuild_for, step_if_finite
from megatron_seqpt.training.preemption import PreemptionHandler
from megatron_seqpt.training.pretraining import PretrainWorkload
from megatron_seqpt.training.state import RunResult, Status, TrainState
from megatron_seqpt.training.workload import Workload


def resolve_precision(requested: str, bf16_available: bool) -> str:
    if requested == "auto":
        return "bf16" if bf16_available else "fp32"
    return requested


class Trainer:
    """Builds data, model, optimizer and checkpoints for one run directory, then trains."""

    def __init__(self, config: RunConfig, run_dir: str | Path, ctx: DistributedContext, *,
                 resume: Optional[bool] = None, workload: Optional[Workload] = None):
        self.run_dir = Path(run_dir)
        self.ctx = ctx
        created = not self.run_dir.exists()
        self._lock_run_dir()
        try:
            self._build(config, resume, workload)
        except BaseException:
            run_lock.release(self.run_dir)
            if created and ctx.is_main:  # a run refused at set-up leaves no directory behind
                (self.run_dir / run_lock.LOCK_FILE).unlink(missing_ok=True)
                with contextlib.suppress(OSError):
                    self.run_dir.rmdir()
            raise

    def _lock_run_dir(self) -> None:
        """Refuse a run directory that is a file, or that another run is writing."""
        if self.run_dir.exists() and not self.run_dir.is_dir():
            raise UserError(f"--run-dir {self.run_dir} is a file, not a directory; name a new "
                            "or an existing run directory")
        busy: Optional[UserError] = None
        if self.ctx.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            try:
                run_lock.acquire(self.run_dir)
            except run_lock.RunDirectoryBusy as err:
                busy = err
        flag = torch.tensor([1.0 if busy else 0.0], device=self.ctx.backend.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        if flag.item():
            raise busy or run_lock.RunDirectoryBusy(
                f"{self.run_dir} is in use by another run (see the first rank's message)")

    def _build(self, config: RunConfig, resume: Optional[bool],
               workload: Optional[Workload]) -> None:
        ctx = self.ctx
        self.device = ctx.backend.device
        self.workload = workload or PretrainWorkload(config)
        self.precision = resolve_precision(config.train.precision, ctx.backend.bf16)
        per_step = config.train.micro_batch_size * ctx.data_parallel
        if config.train.global_batch_size % per_step:
            raise UserError(
                f"train.global_batch_size ({config.train.global_batch_size}) must be a multiple "
                f"of train.micro_batch_size ({config.train.micro_batch_size}) x data-parallel "
                f"size ({ctx.data_parallel}) = {per_step}")
        self.num_microbatches = config.train.global_batch_size // per_step

        # Seeded here as well as at start-up: a trainer built later in the same process
        # (tests, multi-stage recipes) starts from the same random state as a fresh process.
        seed_everything(config.train.seed)
        self.checkpoints = ckpt.CheckpointManager(self.run_dir, config.checkpoint.keep_last)
        self.checkpoints.remove_partial()
        resume_from = self._resume_source(resume)
        self.data = self.workload.build_data(
            ctx, ckpt.content_metadata(resume_from) if resume_from else None)
        # The workload may have settled data-dependent values (an epoch count in steps).
        self.config = config = self.workload.config
        self.vocab_size = padded_vocab_size(self.data.vocab_size, ctx.tensor_parallel)
        self.impl = choose_impl(config.model.transformer_impl, config.model.local_attention,
                                ctx.backend)
        self.modules = self.workload.build_modules(ctx, self.vocab_size, self.precision,
                                                   self.impl)
        self.freeze = FreezeSchedule(config.freeze, config.train.steps)
        # The model's forward makes no CUDA placements: no need for the CPU layer's mode there.
        self.forward_step = cpu_compat.without_mode(
            self.workload.forward_step(self.impl, self.device, self._encoder_frozen))
        self.state = TrainState()
        self._describe()
        # DDP and optimizer hold the groups that train at the step the run starts from (for a
        # resumed run, those of the checkpoint); the schedule takes over from the next step.
        self.trainable: dict[str, bool] = {}
        self.opt: Optional[Optimization] = None
        self.set_trainable(ckpt.content_metadata(resume_from)["trainable"] if resume_from
                           else self.freeze.trainable(0))
        if resume_from is not None:
            self.load_checkpoint(resume_from, full=True)
            log(f"resumed from {resume_from} at step {self.state.step}")
        elif config.checkpoint.load:
            source = ckpt.resolve(config.checkpoint.load)
            self.load_checkpoint(source, full=False)
            log(f"initialised weights from {source}")
        else:
            for source in self.workload.weight_sources():
                self._check_tokenizer(source, ckpt.content_metadata(source))
            done = self.workload.initialize(self.modules, self.vocab_size)
            if done:
                self.opt.optimizer.reload_model_params()
                log(done)
        self._write_run_files()
        self.metrics = MetricsLogger(self.run_dir, enabled=ctx.is_main,
                                     tensorboard=config.logging.tensorboard,
                                     start_step=self.state.step)

    # ----------------------------------------------------------------- set-up helpers

    def _describe(self) -> None:
        local = sum(parameter_count(m) for m in self.modules)
        log(f"run directory {self.run_dir.resolve()}")
        log(self.ctx.describe())
        log(f"model={self.config.model.kind} {self.impl.describe()} precision={self.precision} "
            f"vocab={self.data.vocab_size} (padded {self.vocab_size}) "
            f"parameters on this rank={local:,}")
        if self.workload.describe():
            log(self.workload.describe())
        log(f"global batch {self.config.train.global_batch_size} = micro-batch "
            f"{self.config.train.micro_batch_size} x {self.num_microbatches} micro-batches x "
            f"data-parallel {self.ctx.data_parallel}")
        log(f"freeze schedule: {self.freeze.describe()}")

    def _write_run_files(self) -> None:
        """The resolved config and the tokenizer in the run directory, written once the run
        is accepted (a refused resume leaves the run's own files as they were)."""
        if not self.ctx.is_main:
            return
        dump(self.config, self.run_dir / "config.yaml")
        tokenizer = Path(self.data.tokenizer.model_file)
        target = self.run_dir / TOKENIZER_FILE
        if not target.exists() or target.read_bytes() != tokenizer.read_bytes():
            shutil.copyfile(tokenizer, target.with_suffix(".tmp"))
            target.with_suffix(".tmp").replace(target)

    def _resume_source(self, resume: Optional[bool]) -> Optional[Path]:
        if resume is False:
            return None
        latest = self.checkpoints.latest()
        if resume and latest is None:
            raise UserError(f"--resume given but {self.run_dir}/checkpoints has no complete "
                            "checkpoint")
        if latest is not None and ckpt.content_metadata(latest).get("weights_only"):
            raise UserError(f"{self.run_dir} holds converted weights, not a run to resume; "
                            f"start a new run directory from them with "
                            f"checkpoint.load={self.run_dir}")
        return latest

    def _encoder_frozen(self) -> bool:
        """Nothing at or below the encoder trains: it can run without autograd."""
        return not (self.trainable["encoder"] or self.trainable["embeddings"])

    def set_trainable(self, trainable: dict[str, bool]) -> None:
        """Freeze/unfreeze groups: (re)build DDP, optimizer and scheduler for the groups that
        train, carrying over the state of those that trained before."""
        self.opt, counts = rebuild_for(
            trainable, self.opt, self.modules, self.config.optim, self.config.parallel,
            self.precision == "bf16", self.config.train.steps, self.ctx.backend.cuda,
            self.freeze)
        self.optimizer_format = optimizer_state.checkpoint_format(self.opt.optimizer)
        self.trainable = dict(trainable)
        self.groups_present = self._groups_anywhere(counts)
        log(f"trainable groups at step {self.state.step}: "
            + ", ".join(f"{g} ({counts[g]:,} parameters)" for g in counts if trainable[g])
            + (f"; frozen: {', '.join(g for g in counts if not trainable[g])}"
               if not all(trainable[g] for g in counts) else ""))

    def _groups_anywhere(self, counts: dict[str, int]) -> tuple[str, ...]:
        """Groups with parameters on any rank (pipeline stages hold different ones)."""
        groups = list(freeze.GROUP_PREFIXES)
        present = torch.tensor([float(counts.get(g, 0)) for g in groups], device=self.device)
        dist.all_reduce(present)
        return tuple(g for g, n in zip(groups, present.tolist()) if n > 0)

    # ----------------------------------------------------------------- checkpoints

    def _layout(self) -> dict:
        return {"tp": self.ctx.tensor_parallel, "pp": self.ctx.pipeline_parallel,
                "dp": self.ctx.data_parallel}

    def _metadata(self) -> dict:
        tokenizer = self.data.tokenizer
        return {"model": self.workload.model_metadata(self.vocab_size),
                "layout": self._layout(),
                "step": self.state.step,
                "trainable": self.trainable,
                "precision": self.precision,
                "optimizer_format": self.optimizer_format,
                "tokenizer": tokenizer.identity,
                **self.workload.metadata()}

    def _weights_finite(self) -> bool:
        """True on every rank if no rank's parameters hold NaN or inf (a collective)."""
        finite = all(bool(torch.isfinite(p).all()) for m in self.modules for p in m.parameters())
        flag = torch.tensor([1.0 if finite else 0.0], device=self.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MIN)
        return bool(flag.item())

    def save_checkpoint(self, check_abort: Callable[[], None] = lambda: None) -> Optional[Path]:
        """The checkpoint written, or None when the weights are not finite: such a state is
        never saved (it would become ``latest`` and be resumed). ``check_abort``: see
        ``CheckpointManager.save``."""
        if not self._weights_finite():
            log(f"not saving step {self.state.step}: the weights hold NaN or inf")
            return None
        started = time.perf_counter()
        # Wall time differs by rank; the checkpoint's common state must not (the slowest counts).
        seconds = torch.tensor([self.state.train_seconds], dtype=torch.float64, device=self.device)
        dist.all_reduce(seconds, op=dist.ReduceOp.MAX)
        self.state.train_seconds = float(seconds.item())
        state = run_state.sharded_state(self.modules, self.opt, self.state, self.data,
                                        for_loading=False, full=True,
                                        optimizer_format=self.optimizer_format)
        path = self.checkpoints.save(self.state.step, state, self._metadata(),
                                     lambda d: dump(self.config, d / "config.yaml"),
                                     check_abort)
        log(f"saved checkpoint {path} ({time.perf_counter() - started:.1f} s)")
        return path

    def load_checkpoint(self, path: Path, *, full: bool) -> None:
        """``full``: resume everything; otherwise take the weights only."""
        meta = ckpt.content_metadata(path)
        self._check_tokenizer(path, meta)
        self.workload.check_checkpoint(path, meta, self.vocab_size)
        loaded = run_state.restore(path, meta, self.modules, self.opt, self.data,
                                   same_layout=meta["layout"] == self._layout(), full=full,
                                   optimizer_format=self.optimizer_format)
        if loaded is not None:
            self.state = loaded

    def _check_tokenizer(self, path: Path, meta: dict) -> None:
        ckpt.check_tokenizer(path, meta.get("tokenizer"), self.data.tokenizer)

    # ----------------------------------------------------------------- steps

    def _run_schedule(self, data_iterator, forward_only: bool):
        return get_forward_backward_func()(
            forward_step_func=self.forward_step, data_iterator=data_iterator,
            model=self.opt.chunks, num_microbatches=self.num_microbatches,
            seq_length=self.workload.schedule_seq_length(self.ctx),
            micro_batch_size=self.config.train.micro_batch_size,
            decoder_seq_length=None, forward_only=forward_only)

    def _global_losses(self, reports: list[dict]) -> evaluation.LossTotals:
        return evaluation.global_losses(reports, self.workload.loss_keys, self.device)

    def forward_backward(self) -> dict[str, float]:
        """Gradients of one global batch in the DDP buffers; returns its mean token losses."""
        for chunk in self.opt.chunks:
            chunk.zero_grad_buffer()
        self.opt.optimizer.zero_grad()
        totals = self._global_losses(self._run_schedule(self.data.train, forward_only=False))
        return {key: evaluation.mean(total) for key, total in totals.items()}

    def optimizer_step(self) -> Optional[float]:
        """The update from the gradients in the DDP buffers: their norm, or None where they are
        not finite and nothing was updated (``optim.step_if_finite``)."""
        return step_if_finite(self.opt.optimizer)

    def train_step(self) -> dict:
        """One optimizer step; returns its metrics. A non-finite loss skips the update.

        Groups whose schedule changes at this step are frozen/unfrozen first.
        """
        wanted = self.freeze.trainable(self.state.step)
        record = {}
        if wanted != self.trainable:
            self.set_trainable(wanted)
            record["event"] = "trainable groups changed"
        started = time.perf_counter()
        losses = self.forward_backward()
        loss = record["loss"] = losses[self.workload.loss_keys[0]]
        if "encoder mlm loss" in losses:
            record["encoder_mlm_loss"] = losses["encoder mlm loss"]
        # A non-finite loss skips the update; so do non-finite gradients.
        if not math.isfinite(loss):
            skipped, grad_norm = "loss", None
        else:
            grad_norm = self.optimizer_step()
            skipped = None if grad_norm is not None else "gradients"
        if skipped is None:
            record["grad_norm"] = grad_norm
            self.state.skipped_in_a_row = 0
        else:
            self.state.skipped_in_a_row += 1
            self.state.skipped_total += 1
            record["event"] = f"skipped non-finite {skipped}"
        # The schedule follows the step count, skipped steps included.
        self.opt.scheduler.step(increment=1)
        step_flops = self.workload.step_flops(self.trainable)
        self.state.step += 1
        self.state.consumed_samples += self.config.train.global_batch_size
        self.state.flops += step_flops
        self.state.train_seconds += time.perf_counter() - started
        record.update(trainable=freeze.trainable_names(self.trainable, self.groups_present),
                      flops=step_flops,
                      total_flops=self.state.flops)
        return record

    def evaluate(self) -> Optional[float]:
        """Mean loss per token over the validation batches (None when there are none)."""
        if self.data.valid_stream is None:
            return None
        stream = self.data.valid_stream()
        return evaluation.validation_loss(
            self.opt.chunks, self.data.eval_batches,
            lambda: self._global_losses(self._run_schedule(stream, forward_only=True)),
            self.workload.loss_keys[0])

    # ----------------------------------------------------------------- the loop

    def run(self) -> RunResult:
        try:
            return self._train()
        finally:
            run_lock.release(self.run_dir)

    def _train(self) -> RunResult:
        train = self.config.train
        valid_loss = None
        last_saved = None
        status: Status = "completed"
        window = Window()
        if self.state.step == 0:
            valid_loss = self._evaluate_and_log()
        with PreemptionHandler() as preemption:
            while self.state.step < train.steps:
                started = time.perf_counter()
                record = self.train_step()
                window.add(record["loss"], time.perf_counter() - started)
                step = self.state.step
                if step % self.config.logging.log_interval == 0 or step == train.steps \
                        or "event" in record:
                    self.log_train(record, window)
                    window = Window()
                if step % train.eval_interval == 0 or step == train.steps:
                    valid_loss = self._evaluate_and_log()
                diverged = self.state.skipped_in_a_row >= train.max_skipped_steps
                preempted = preemption.requested(self.device)
                if step % self.config.checkpoint.save_interval == 0 or step == train.steps \
                        or diverged or preempted:
                    saved = self.save_checkpoint(preemption.abort.raise_if_set)
                    if saved is None:
                        status = "diverged"
                        log(f"stopping: non-finite weights at step {step}; the last checkpoint "
                            f"({last_saved or 'none from this run'}) is the one to resume from")
                        break
                    last_saved = saved
                if diverged:
                    status = "diverged"
                    log(f"stopping: {self.state.skipped_in_a_row} non-finite losses in a row "
                        f"(train.max_skipped_steps={train.max_skipped_steps}); last checkpoint "
                        f"{last_saved}")
                    break
                if preempted:
                    status = "preempted"
                    log(f"stopping on signal {preemption.received or 'from another rank'}; "
                        "run the same command again to resume")
                    break
        self.metrics.close()
        result = RunResult(status, self.state.step, valid_loss, last_saved)
        if self.ctx.is_main:
            # Read by job scripts: "preempted" means requeue and resume. Strict JSON: a
            # non-finite validation loss is null.
            summary = {**dataclasses.asdict(result), "checkpoint": str(last_saved),
                       "flops": self.state.flops, "train_seconds": self.state.train_seconds,
                       "consumed_tokens": self.consumed_tokens()}
            if summary["valid_loss"] is not None and not math.isfinite(summary["valid_loss"]):
                summary["valid_loss"] = None
            (self.run_dir / "result.json").write_text(
                json.dumps(summary, indent=1, allow_nan=False) + "\n")
        return result

    def _evaluate_and_log(self) -> Optional[float]:
        valid_loss = self.evaluate()
        if valid_loss is not None:
            self.metrics.log({"step": self.state.step, "split": "valid", "loss": valid_loss,
                              "consumed_tokens": self.consumed_tokens(),
                              "total_flops": self.state.flops},
                             total_steps=self.config.train.steps)
        return valid_loss

    def tokens_per_sample(self) -> int:
        return self.workload.tokens_per_sample()

    def consumed_tokens(self) -> int:
        return self.state.consumed_samples * self.tokens_per_sample()

    def log_train(self, record: dict, window: Window) -> None:
        """Losses are averaged over the steps since the last line; throughput counts
        training-step time only (not evaluation or checkpointing)."""
        tokens = window.steps * self.config.train.global_batch_size * self.tokens_per_sample()
        self.metrics.log({
            "step": self.state.step,
            **record,
            "loss": window.mean_loss() if window.finite else record["loss"],
            "lr": self.opt.scheduler.base_lr(),
            "tokens_per_s": tokens / max(window.seconds, 1e-9),
            "step_time_s": window.seconds / window.steps,
            "consumed_samples": self.state.consumed_samples,
            "consumed_tokens": self.consumed_tokens(),
        }, total_steps=self.config.train.steps)
