"""The training loop on megatron-core's forward/backward schedules.

One step = ``global_batch_size`` samples split into micro-batches over the data-parallel ranks,
gradients accumulated in megatron-core's DDP buffers, one optimizer and scheduler step. Every
piece of state a step depends on (weights, optimizer, scheduler, data position, RNG, counters)
is in the checkpoint, so a resumed run takes the same steps as one that was never stopped.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional

import torch
import torch.distributed as dist
from megatron.core import parallel_state
from megatron.core.pipeline_parallel import get_forward_backward_func

from megatron_seqpt.config import RunConfig, dump
from megatron_seqpt.errors import UserError
from megatron_seqpt.models.builder import build_model, parameter_count
from megatron_seqpt.models.forward import make_forward_step
from megatron_seqpt.models.specs import choose_impl
from megatron_seqpt.runtime.distributed import DistributedContext, seed_everything
from megatron_seqpt.runtime.log import log
from megatron_seqpt.training import checkpoint as ckpt
from megatron_seqpt.training import optimizer_state
from megatron_seqpt.training.data import TrainingData, build_training_data
from megatron_seqpt.training.metrics import MetricsLogger
from megatron_seqpt.training.optim import build_optimization
from megatron_seqpt.training.preemption import PreemptionHandler

# Model fields that decide parameter shapes; a checkpoint must agree on all of them.
SHAPE_FIELDS = ("kind", "hidden_size", "encoder", "decoder", "max_position_embeddings",
                "normalization", "activation")


@dataclass
class TrainState:
    step: int = 0
    consumed_samples: int = 0
    skipped_in_a_row: int = 0
    skipped_total: int = 0


@dataclass
class RunResult:
    status: Literal["completed", "preempted", "diverged"]
    step: int
    valid_loss: Optional[float]
    checkpoint: Optional[Path]


def resolve_precision(requested: str, bf16_available: bool) -> str:
    if requested == "auto":
        return "bf16" if bf16_available else "fp32"
    return requested


def padded_vocab_size(vocab_size: int, tensor_parallel: int, multiple: int = 128) -> int:
    """Round the vocabulary up so each tensor-parallel shard is a multiple of ``multiple``
    (as Megatron-LM does: faster matmuls, and TP needs equal shards)."""
    step = multiple * tensor_parallel
    return int(math.ceil(vocab_size / step) * step)


def model_shape(config: RunConfig, vocab_size: int) -> dict:
    shape = {k: v for k, v in dataclasses.asdict(config.model).items() if k in SHAPE_FIELDS}
    if config.model.kind != "t5":
        shape.pop("decoder")
    shape["vocab_size"] = vocab_size
    return shape


def check_same_shape(path: Path, saved: dict, current: dict) -> None:
    diffs = [f"model.{key}: checkpoint {saved.get(key)!r}, config {value!r}"
             for key, value in current.items() if saved.get(key) != value]
    if diffs:
        raise ckpt.CheckpointError(
            f"{path} holds a model of another shape:\n  " + "\n  ".join(diffs)
            + f"\nuse the config the checkpoint was written with ({path}/config.yaml)")


class Trainer:
    """Builds data, model, optimizer and checkpoints for one run directory, then trains."""

    def __init__(self, config: RunConfig, run_dir: str | Path, ctx: DistributedContext, *,
                 resume: Optional[bool] = None):
        self.config = config
        self.run_dir = Path(run_dir)
        self.ctx = ctx
        self.device = ctx.backend.device
        train = config.train
        self.precision = resolve_precision(train.precision, ctx.backend.bf16)
        per_step = train.micro_batch_size * ctx.data_parallel
        if train.global_batch_size % per_step:
            raise UserError(
                f"train.global_batch_size ({train.global_batch_size}) must be a multiple of "
                f"train.micro_batch_size ({train.micro_batch_size}) x data-parallel size "
                f"({ctx.data_parallel}) = {per_step}")
        self.num_microbatches = train.global_batch_size // per_step

        # Seeded here as well as at start-up: a trainer built later in the same process
        # (tests, multi-stage recipes) starts from the same random state as a fresh process.
        seed_everything(train.seed)
        self.data: TrainingData = build_training_data(config, ctx)
        self.vocab_size = padded_vocab_size(self.data.vocab_size,
                                            ctx.tensor_parallel)
        self.impl = choose_impl(config.model.transformer_impl, config.model.local_attention,
                                ctx.backend)
        self.modules = [build_model(
            config.model, config.parallel, self.vocab_size, self.precision, self.impl,
            ctx.backend, pre_process=parallel_state.is_pipeline_first_stage(),
            post_process=parallel_state.is_pipeline_last_stage())]
        self.opt = build_optimization(self.modules, config.optim, config.parallel,
                                      self.precision == "bf16", train.steps, ctx.backend.cuda)
        self.optimizer_format = optimizer_state.checkpoint_format(self.opt.optimizer)
        self.forward_step = make_forward_step(config.model.kind, self.impl, self.device)
        self.state = TrainState()
        self.checkpoints = ckpt.CheckpointManager(self.run_dir, config.checkpoint.keep_last)
        self._describe()
        self._restore(resume)
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
        log(f"global batch {self.config.train.global_batch_size} = micro-batch "
            f"{self.config.train.micro_batch_size} x {self.num_microbatches} micro-batches x "
            f"data-parallel {self.ctx.data_parallel}")
        if self.ctx.is_main:
            dump(self.config, self.run_dir / "config.yaml")

    def _restore(self, resume: Optional[bool]) -> None:
        self.checkpoints.remove_partial()
        latest = self.checkpoints.latest()
        if resume and latest is None:
            raise UserError(f"--resume given but {self.run_dir}/checkpoints has no complete "
                            "checkpoint")
        if latest is not None and resume is not False:
            self.load_checkpoint(latest, full=True)
            log(f"resumed from {latest} at step {self.state.step}")
        elif self.config.checkpoint.load:
            source = ckpt.resolve(self.config.checkpoint.load)
            self.load_checkpoint(source, full=False)
            log(f"initialised weights from {source}")

    # ----------------------------------------------------------------- checkpoints

    def _sharded_state(self, for_loading: bool, full: bool = True,
                       optimizer_format: Optional[dict] = None) -> dict:
        model_state = {}
        for module in self.modules:
            model_state.update(module.sharded_state_dict())
        state = {"model": model_state}
        if full:
            state.update(
                optimizer=self.opt.optimizer.sharded_state_dict(
                    model_state, is_loading=for_loading,
                    metadata=optimizer_format or self.optimizer_format),
                scheduler=self.opt.scheduler.state_dict(),
                train_state=dataclasses.asdict(self.state),
                data=self.data.train.state_dict(),
                rng=ckpt.rng_sharded_object(for_loading))
        return state

    def _metadata(self) -> dict:
        return {"model": model_shape(self.config, self.vocab_size),
                "layout": {"tp": self.ctx.tensor_parallel, "pp": self.ctx.pipeline_parallel,
                           "dp": self.ctx.data_parallel},
                "step": self.state.step,
                "optimizer_format": self.optimizer_format}

    def save_checkpoint(self) -> Path:
        started = time.perf_counter()
        path = self.checkpoints.save(self.state.step, self._sharded_state(for_loading=False),
                                     self._metadata(),
                                     lambda d: dump(self.config, d / "config.yaml"))
        log(f"saved checkpoint {path} ({time.perf_counter() - started:.1f} s)")
        return path

    def load_checkpoint(self, path: Path, *, full: bool) -> None:
        """``full``: resume everything; otherwise take the weights only."""
        meta = ckpt.content_metadata(path)
        check_same_shape(path, meta["model"], model_shape(self.config, self.vocab_size))
        same_layout = meta["layout"] == self._metadata()["layout"]
        if full:
            optimizer_state.fill_fresh_state(self.opt.optimizer)
        template = self._sharded_state(for_loading=True, full=full,
                                       optimizer_format=meta.get("optimizer_format"))
        if full and not same_layout:
            # RNG states are per rank; another layout cannot take them over.
            template.pop("rng")
        loaded = ckpt.load(path, template)
        for module in self.modules:
            module.load_state_dict(loaded["model"], strict=True)
        if not full:
            self.opt.optimizer.reload_model_params()
            return
        with torch.no_grad():  # the distributed optimizer copies into fp32 main params
            self.opt.optimizer.load_state_dict(loaded["optimizer"])
        optimizer_state.restore_step_counters(self.opt.optimizer, loaded["optimizer"])
        self.opt.scheduler.load_state_dict(loaded["scheduler"])
        self.state = TrainState(**loaded["train_state"])
        self.data.train.load_state_dict(loaded["data"])
        if "rng" in loaded:
            ckpt.restore_rng(loaded["rng"])
        else:
            log(f"{path} was written with layout {meta['layout']}; dropout RNG starts afresh")

    # ----------------------------------------------------------------- steps

    def _run_schedule(self, data_iterator, forward_only: bool):
        return get_forward_backward_func()(
            forward_step_func=self.forward_step, data_iterator=data_iterator,
            model=self.opt.chunks, num_microbatches=self.num_microbatches,
            seq_length=self.config.data.seq_length,
            micro_batch_size=self.config.train.micro_batch_size,
            # Pipeline stages exchange [decoder_seq_length or seq_length, micro-batch, hidden].
            decoder_seq_length=self.config.data.decoder_seq_length
            if self.config.model.kind == "t5" else None, forward_only=forward_only)

    def _global_loss(self, reports: list[dict]) -> tuple[float, float]:
        """(loss sum, token count) over the global batch, the same on every rank."""
        totals = torch.zeros(2, device=self.device)
        for report in reports:
            totals += report["lm loss"].to(self.device).float()
        dist.all_reduce(totals, group=parallel_state.get_data_parallel_group())
        owner = (parallel_state.is_pipeline_last_stage()
                 and parallel_state.get_tensor_model_parallel_rank() == 0
                 and parallel_state.get_data_parallel_rank() == 0)
        if not owner:
            totals.zero_()
        dist.all_reduce(totals)
        return totals[0].item(), totals[1].item()

    def forward_backward(self) -> float:
        """Gradients of one global batch in the DDP buffers; returns its mean token loss."""
        for chunk in self.opt.chunks:
            chunk.zero_grad_buffer()
        self.opt.optimizer.zero_grad()
        loss_sum, tokens = self._global_loss(self._run_schedule(self.data.train,
                                                                forward_only=False))
        return loss_sum / max(tokens, 1.0)

    def train_step(self) -> dict:
        """One optimizer step; returns its metrics. A non-finite loss skips the update."""
        loss = self.forward_backward()
        record = {"loss": loss}
        if math.isfinite(loss):
            _, grad_norm, _ = self.opt.optimizer.step()
            self.opt.scheduler.step(increment=1)
            record["grad_norm"] = float(grad_norm) if grad_norm is not None else float("nan")
            self.state.skipped_in_a_row = 0
        else:
            self.state.skipped_in_a_row += 1
            self.state.skipped_total += 1
            record["event"] = "skipped non-finite loss"
        self.state.step += 1
        self.state.consumed_samples += self.config.train.global_batch_size
        return record

    def evaluate(self) -> Optional[float]:
        """Mean loss per token over ``train.eval_steps`` global batches of the valid split
        (None when the split has no validation part)."""
        if self.data.valid_stream is None:
            return None
        for chunk in self.opt.chunks:
            chunk.eval()
        stream = self.data.valid_stream()
        loss_sum = tokens = 0.0
        with torch.no_grad():
            for _ in range(self.config.train.eval_steps):
                batch_sum, batch_tokens = self._global_loss(
                    self._run_schedule(stream, forward_only=True))
                loss_sum += batch_sum
                tokens += batch_tokens
        for chunk in self.opt.chunks:
            chunk.train()
        return loss_sum / max(tokens, 1.0)

    def _lr(self) -> float:
        groups = self.opt.optimizer.param_groups
        return next((g["lr"] for g in groups if g.get("default_config")), groups[0]["lr"])

    # ----------------------------------------------------------------- the loop

    def run(self) -> RunResult:
        train = self.config.train
        valid_loss = None
        last_saved = None
        status: Literal["completed", "preempted", "diverged"] = "completed"
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
                    last_saved = self.save_checkpoint()
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
            # Read by job scripts: "preempted" means requeue and resume.
            (self.run_dir / "result.json").write_text(json.dumps(
                {**dataclasses.asdict(result), "checkpoint": str(last_saved)}, indent=1) + "\n")
        return result

    def _evaluate_and_log(self) -> Optional[float]:
        valid_loss = self.evaluate()
        if valid_loss is not None:
            self.metrics.log({"step": self.state.step, "split": "valid", "loss": valid_loss,
                              "consumed_tokens": self.consumed_tokens()},
                             total_steps=self.config.train.steps)
        return valid_loss

    def tokens_per_sample(self) -> int:
        data = self.config.data
        return data.seq_length + (data.decoder_seq_length if self.config.model.kind == "t5"
                                  else 0)

    def consumed_tokens(self) -> int:
        return self.state.consumed_samples * self.tokens_per_sample()

    def log_train(self, record: dict, window: "Window") -> None:
        """Losses are averaged over the steps since the last line; throughput counts
        training-step time only (not evaluation or checkpointing)."""
        tokens = window.steps * self.config.train.global_batch_size * self.tokens_per_sample()
        self.metrics.log({
            "step": self.state.step,
            **record,
            "loss": window.mean_loss() if window.finite else record["loss"],
            "lr": self._lr(),
            "tokens_per_s": tokens / max(window.seconds, 1e-9),
            "step_time_s": window.seconds / window.steps,
            "consumed_samples": self.state.consumed_samples,
            "consumed_tokens": self.consumed_tokens(),
        }, total_steps=self.config.train.steps)


@dataclass
class Window:
    """Steps since the last log line."""

    steps: int = 0
    finite: int = 0
    loss_sum: float = 0.0
    seconds: float = 0.0

    def add(self, loss: float, seconds: float) -> None:
        self.steps += 1
        self.seconds += seconds
        if math.isfinite(loss):
            self.finite += 1
            self.loss_sum += loss

    def mean_loss(self) -> float:
        return self.loss_sum / self.finite
