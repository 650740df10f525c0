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
from megatron_seqpt.models.encoder_masking import EncoderMasking
from megatron_seqpt.models.forward import make_forward_step
from megatron_seqpt.models.specs import choose_impl
from megatron_seqpt.models.vocab import padded_vocab_size
from megatron_seqpt.recipes import warm_start
from megatron_seqpt.runtime.distributed import DistributedContext, seed_everything
from megatron_seqpt.runtime.log import log
from megatron_seqpt.training import checkpoint as ckpt
from megatron_seqpt.training import freeze, optimizer_state, optimizer_transfer
from megatron_seqpt.training.data import TrainingData, build_training_data
from megatron_seqpt.training.flops import FlopModel
from megatron_seqpt.training.freeze import FreezeSchedule
from megatron_seqpt.training.metrics import MetricsLogger
from megatron_seqpt.training.optim import Optimization, build_optimization
from megatron_seqpt.training.preemption import PreemptionHandler


def _span(layers: range) -> str:
    return f"{layers.start}-{layers.stop - 1}" if layers else "-"


@dataclass
class TrainState:
    step: int = 0
    consumed_samples: int = 0
    skipped_in_a_row: int = 0
    skipped_total: int = 0
    # Executed model FLOPs and training-step seconds since the run began (compute accounting).
    flops: float = 0.0
    train_seconds: float = 0.0


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
        self.flops = FlopModel.build(config.model, self.vocab_size, config.data.seq_length,
                                     config.data.decoder_seq_length, train.global_batch_size,
                                     config.data.masking_probability)
        self.pipelined_t5 = config.model.kind == "t5" and ctx.pipeline_parallel > 1
        stage = None
        if self.pipelined_t5:
            stages = self.flops.t5_pipeline_stages(config.model, ctx.pipeline_parallel,
                                                   config.parallel.pipeline_layers)
            stage = stages[parallel_state.get_pipeline_model_parallel_rank()]
            log("pipeline stages (encoder layers | decoder layers): " + "; ".join(
                f"{i}: {_span(s.encoder)} | {_span(s.decoder)}" for i, s in enumerate(stages)))
        self.modules = [build_model(
            config.model, config.parallel, self.vocab_size, self.precision, self.impl,
            ctx.backend, pre_process=parallel_state.is_pipeline_first_stage(),
            post_process=parallel_state.is_pipeline_last_stage(), stage=stage,
            encoder_seq_length=config.data.seq_length)]
        self.freeze = FreezeSchedule(config.freeze, train.steps)
        masking = None
        if config.model.kind == "t5" and config.model.encoder_mlm_weight:
            masking = EncoderMasking(self.data.tokenizer.mask,
                                     torch.from_numpy(self.data.tokenizer.ordinary_ids),
                                     config.data.masking_probability)
        # Reported per step: the model's loss, and the encoder MLM loss of that variant.
        self.loss_keys = ("lm loss",) + (("encoder mlm loss",) if masking else ())
        self.forward_step = make_forward_step(
            config.model.kind, self.impl, self.device, encoder_frozen=self._encoder_frozen,
            encoder_masking=masking, encoder_mlm_weight=config.model.encoder_mlm_weight)
        self.state = TrainState()
        self.checkpoints = ckpt.CheckpointManager(self.run_dir, config.checkpoint.keep_last)
        self._describe()
        self.checkpoints.remove_partial()
        resume_from = self._resume_source(resume)
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
        elif config.init.from_encoder:
            source = ckpt.resolve(config.init.from_encoder)
            warm_start.load_encoder(self.modules, source, config.model, self.vocab_size)
            self.opt.optimizer.reload_model_params()
            log(f"warm-started embeddings and encoder from the MLM encoder {source}")
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
        log(f"freeze schedule: {self.freeze.describe()}")

    def _resume_source(self, resume: Optional[bool]) -> Optional[Path]:
        latest = self.checkpoints.latest()
        if resume and latest is None:
            raise UserError(f"--resume given but {self.run_dir}/checkpoints has no complete "
                            "checkpoint")
        if latest is not None and ckpt.content_metadata(latest).get("weights_only"):
            raise UserError(f"{self.run_dir} holds converted weights, not a run to resume; "
                            f"start a new run directory from them with "
                            f"checkpoint.load={self.run_dir}")
        return latest if resume is not False else None

    def _encoder_frozen(self) -> bool:
        """Nothing at or below the encoder trains: it can run without autograd."""
        return not (self.trainable["encoder"] or self.trainable["embeddings"])

    def set_trainable(self, trainable: dict[str, bool]) -> None:
        """Freeze/unfreeze groups: (re)build DDP, optimizer and scheduler for the groups that
        train, carrying over the state of those that trained before."""
        previous = self.opt
        if previous is not None:
            # Collective: also a stage that trained nothing so far learns the step count.
            states, step = optimizer_transfer.export_states(previous.optimizer)
            previous.release()
        counts = freeze.apply(self.modules, trainable)
        self.opt = build_optimization(self.modules, self.config.optim, self.config.parallel,
                                      self.precision == "bf16", self.config.train.steps,
                                      self.ctx.backend.cuda, self.freeze)
        if previous is not None:
            optimizer_transfer.import_states(self.opt.optimizer, states, step)
        self.opt.scheduler.num_steps = previous.scheduler.num_steps if previous else 0
        self.opt.scheduler.step(increment=0)
        self.optimizer_format = optimizer_state.checkpoint_format(self.opt.optimizer)
        self.trainable = dict(trainable)
        log(f"trainable groups at step {self.state.step}: "
            + ", ".join(f"{g} ({counts[g]:,} parameters)" for g in counts if trainable[g])
            + (f"; frozen: {', '.join(g for g in counts if not trainable[g])}"
               if not all(trainable[g] for g in counts) else ""))

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
        return {"model": ckpt.model_shape(self.config.model, self.vocab_size),
                "layout": {"tp": self.ctx.tensor_parallel, "pp": self.ctx.pipeline_parallel,
                           "dp": self.ctx.data_parallel},
                "step": self.state.step,
                "trainable": self.trainable,
                "precision": self.precision,
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
        if meta["model"]["kind"] == "encoder" and self.config.model.kind == "t5":
            raise UserError(f"{path} is an MLM encoder; a T5 run takes its encoder with "
                            f"init.from_encoder={path} (or seqpt convert warm-start)")
        ckpt.check_same_shape(path, meta["model"],
                              ckpt.model_shape(self.config.model, self.vocab_size))
        same_layout = meta["layout"] == self._metadata()["layout"]
        if full:
            optimizer_state.init_state(self.opt.optimizer, step=0.0)  # a template to load into
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
        # Pipeline stages exchange [seq_length, micro-batch, hidden]; a pipelined T5 sends the
        # encoder and decoder states packed along the sequence.
        data = self.config.data
        seq_length = data.seq_length + (data.decoder_seq_length if self.pipelined_t5 else 0)
        return get_forward_backward_func()(
            forward_step_func=self.forward_step, data_iterator=data_iterator,
            model=self.opt.chunks, num_microbatches=self.num_microbatches,
            seq_length=seq_length, micro_batch_size=self.config.train.micro_batch_size,
            decoder_seq_length=None, forward_only=forward_only)

    def _global_losses(self, reports: list[dict]) -> dict[str, tuple[float, float]]:
        """(loss sum, token count) per reported loss over the global batch, on every rank."""
        totals = torch.zeros(len(self.loss_keys), 2, device=self.device)
        for report in reports:
            for row, key in enumerate(self.loss_keys):
                if key in report:  # evaluation reports the model's loss only
                    totals[row] += report[key].to(self.device).float()
        dist.all_reduce(totals, group=parallel_state.get_data_parallel_group())
        owner = (parallel_state.is_pipeline_last_stage()
                 and parallel_state.get_tensor_model_parallel_rank() == 0
                 and parallel_state.get_data_parallel_rank() == 0)
        if not owner:
            totals.zero_()
        dist.all_reduce(totals)
        return {key: (totals[row, 0].item(), totals[row, 1].item())
                for row, key in enumerate(self.loss_keys)}

    @staticmethod
    def _mean(total: tuple[float, float]) -> float:
        return total[0] / max(total[1], 1.0)

    def forward_backward(self) -> dict[str, float]:
        """Gradients of one global batch in the DDP buffers; returns its mean token losses."""
        for chunk in self.opt.chunks:
            chunk.zero_grad_buffer()
        self.opt.optimizer.zero_grad()
        totals = self._global_losses(self._run_schedule(self.data.train, forward_only=False))
        return {key: self._mean(total) for key, total in totals.items()}

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
        loss = record["loss"] = losses["lm loss"]
        if "encoder mlm loss" in losses:
            record["encoder_mlm_loss"] = losses["encoder mlm loss"]
        if math.isfinite(loss):
            _, grad_norm, _ = self.opt.optimizer.step()
            self.opt.scheduler.step(increment=1)
            record["grad_norm"] = float(grad_norm) if grad_norm is not None else float("nan")
            self.state.skipped_in_a_row = 0
        else:
            self.state.skipped_in_a_row += 1
            self.state.skipped_total += 1
            record["event"] = "skipped non-finite loss"
        step_flops = sum(self.flops.step(self.trainable).values())
        self.state.step += 1
        self.state.consumed_samples += self.config.train.global_batch_size
        self.state.flops += step_flops
        self.state.train_seconds += time.perf_counter() - started
        record.update(trainable=freeze.trainable_names(self.trainable), flops=step_flops,
                      total_flops=self.state.flops)
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
                batch_sum, batch_tokens = self._global_losses(
                    self._run_schedule(stream, forward_only=True))["lm loss"]
                loss_sum += batch_sum
                tokens += batch_tokens
        for chunk in self.opt.chunks:
            chunk.train()
        return loss_sum / max(tokens, 1.0)

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
                              "consumed_tokens": self.consumed_tokens(),
                              "total_flops": self.state.flops},
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
            "lr": self.opt.scheduler.base_lr(),
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
