"""megatron_seqpt: install with ``make setup`` (CPU torch first), or see README.md."""

from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent

setup(
    name="megatron_seqpt",
    version="0.1.0",
    description="Sequential pre-training of multilingual MLM encoders and T5 models on "
                "megatron-core",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["megatron_seqpt", "megatron_seqpt.*"]),
    include_package_data=True,
    package_data={"megatron_seqpt": ["resources/**/*"]},
    install_requires=[
        # A range, not a pin: NVIDIA containers ship their own torch build, which must stay.
        "torch>=2.6",
        "megatron-core==0.16.1",
        "sentencepiece>=0.2",
        "nltk>=3.8",
        # nltk's regular-expression engine, used directly for Punkt's patterns.
        "regex>=2021.8.3",
        "numpy>=1.24",
        # megatron-core's checkpoint writer needs it but does not declare it.
        "psutil>=5.9",
        "pyyaml>=6.0",
        "tqdm>=4.66",
        "tensorboard>=2.14",
        # The demo's loss curves.
        "matplotlib>=3.7",
        # Task metrics: accuracy and macro-F1, span F1 of BIO tags, chrF and BLEU.
        "scikit-learn>=1.3",
        "seqeval>=1.2",
        "sacrebleu>=2.3",
        # Piece offsets from sentencepiece (word/label alignment for tagging).
        "protobuf>=3.20",
    ],
    extras_require={
        # The export tests compare exported Hugging Face models with the project's.
        "test": ["pytest>=8", "pytest-timeout>=2.3", "transformers>=4.48", "safetensors>=0.4"],
        # ``seqpt export hf`` / ``seqpt import hf``.
        "export": ["transformers>=4.48", "safetensors>=0.4"],
        # benchmarks/train_throughput.py compares against Hugging Face models.
        "bench": ["transformers>=4.48"],
    },
    entry_points={"console_scripts": ["seqpt=megatron_seqpt.cli:main"]},
)
