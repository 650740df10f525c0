"""Downstream tasks: fine-tuning and evaluating the pre-trained encoders and T5 models."""
