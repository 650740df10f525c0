"""Hugging Face export and import of the project's models (MegatronBert*, Blenderbot-layout
T5, a fast tokenizer), exact to fp32 rounding and checked at export."""
