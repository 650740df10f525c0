"""Pre-training as a workload: MLM samples for the encoder, span corruption for T5, on the
prepared multilingual corpus; T5 optionally pipelined (packed states) or warm-started from an
MLM encoder (``init.from_encoder``)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

import torch
from megatron.core import parallel_state

from megatron_seqpt.config import RunConfig
from megatron_seqpt.models.builder import build_model
from megatron_seqpt.models.encoder_masking import EncoderMasking
from megatron_seqpt.models.forward import make_forward_step
from megatron_seqpt.models.specs import LayerImpl
from megatron_seqpt.runtime.distributed import DistributedContext
from megatron_seqpt.runtime.log import log
from megatron_seqpt.training import checkpoint as ckpt
from megatron_seqpt.training import initialization
from megatron_seqpt.training.data import build_training_data
from megatron_seqpt.training.flops import FlopModel
from megatron_seqpt.training.workload import RunData, Workload


def _span(layers: range) -> str:
    return f"{layers.start}-{layers.stop - 1}" if layers else "-"


class PretrainWorkload(Workload):
    def __init__(self, config: RunConfig):
        super().__init__(config)
        self.masking: Optional[EncoderMasking] = None
        self.flops: Optional[FlopModel] = None
        self.train_samples: list[int] = []  # the training data's parts (see training/data.py)
        if config.model.kind == "t5" and config.model.encoder_mlm_weight:
            # The encoder MLM variant reports its second loss.
            self.loss_keys = ("lm loss", "encoder mlm loss")

    def _pipelined_t5(self, ctx: DistributedContext) -> bool:
        return self.config.model.kind == "t5" and ctx.pipeline_parallel > 1

    def build_data(self, ctx: DistributedContext, resumed: Optional[dict] = None) -> RunData:
        data, self.train_samples = build_training_data(
            self.config, ctx, (resumed or {}).get("train_samples"))
        if self.config.model.kind == "t5" and self.config.model.encoder_mlm_weight:
            self.masking = EncoderMasking(data.tokenizer.mask,
                                          torch.from_numpy(data.tokenizer.ordinary_ids),
                                          self.config.data.masking_probability)
        return data

    def build_modules(self, ctx: DistributedContext, vocab_size: int, precision: str,
                      impl: LayerImpl) -> list[torch.nn.Module]:
        config = self.config
        self.flops = FlopModel.build(config.model, vocab_size, config.data.seq_length,
                                     config.data.decoder_seq_length,
                                     config.train.global_batch_size,
                                     config.data.masking_probability)
        stage = None
        if self._pipelined_t5(ctx):
            stages = self.flops.t5_pipeline_stages(config.model, ctx.pipeline_parallel,
                                                   config.parallel.pipeline_layers)
            stage = stages[parallel_state.get_pipeline_model_parallel_rank()]
            log("pipeline stages (encoder layers | decoder layers): " + "; ".join(
                f"{i}: {_span(s.encoder)} | {_span(s.decoder)}" for i, s in enumerate(stages)))
        return [build_model(
            config.model, config.parallel, vocab_size, precision, impl, ctx.backend,
            pre_process=parallel_state.is_pipeline_first_stage(),
            post_process=parallel_state.is_pipeline_last_stage(), stage=stage,
            encoder_seq_length=config.data.seq_length)]

    def forward_step(self, impl: LayerImpl, device: torch.device,
                     encoder_frozen: Callable[[], bool]) -> Callable:
        return make_forward_step(self.config.model.kind, impl, device,
                                 encoder_frozen=encoder_frozen, encoder_masking=self.masking,
                                 encoder_mlm_weight=self.config.model.encoder_mlm_weight)

    def schedule_seq_length(self, ctx: DistributedContext) -> int:
        # A pipelined T5 sends the encoder and decoder states packed along the sequence.
        data = self.config.data
        return data.seq_length + (data.decoder_seq_length if self._pipelined_t5(ctx) else 0)

    def metadata(self) -> dict:
        return {"train_samples": self.train_samples}

    def model_metadata(self, vocab_size: int) -> dict:
        return ckpt.model_shape(self.config.model, vocab_size)

    def check_checkpoint(self, path: Path, meta: dict, vocab_size: int) -> None:
        if "task" in meta:
            raise ckpt.CheckpointError(
                f"{path} holds a fine-tuning checkpoint (task {meta['task']['kind']}): "
                "pre-train into another --run-dir (or checkpoint.load=) than a fine-tuning "
                "run's")
        if meta["model"]["kind"] == "encoder" and self.config.model.kind == "t5":
            raise ckpt.CheckpointError(
                f"{path} is an MLM encoder; a T5 run takes its encoder with "
                f"init.from_encoder={path} (or seqpt convert warm-start)")
        ckpt.check_same_shape(path, meta["model"], self.model_metadata(vocab_size))

    def weight_sources(self) -> list[Path]:
        return [ckpt.resolve(self.config.init.from_encoder)] if self.config.init.from_encoder \
            else []

    def initialize(self, modules: list[torch.nn.Module], vocab_size: int) -> Optional[str]:
        if not self.config.init.from_encoder:
            return None
        source = ckpt.resolve(self.config.init.from_encoder)
        initialization.load_encoder(modules, source, self.config.model, vocab_size)
        return f"warm-started embeddings and encoder from the MLM encoder {source}"

    def step_flops(self, trainable: dict[str, bool]) -> float:
        return sum(self.flops.step(trainable).values())

    def tokens_per_sample(self) -> int:
        data = self.config.data
        return data.seq_length + (data.decoder_seq_length if self.config.model.kind == "t5"
                                  else 0)
