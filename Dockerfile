# GPU image: NVIDIA's PyTorch container already ships CUDA, torch, NVIDIA apex and
# transformer-engine. This adds megatron-core 0.16.1, the other dependencies and the package,
# and leaves the container's torch in place (every install below runs with --no-deps or with
# packages that do not depend on torch).
#
#   docker build -t megatron-seqpt .
#   docker run --gpus all --ipc=host --rm -v $PWD/runs:/workspace/runs megatron-seqpt \
#       seqpt demo --output-dir /workspace/runs/demo
ARG BASE_IMAGE=nvcr.io/nvidia/pytorch:25.04-py3
FROM ${BASE_IMAGE}

WORKDIR /opt/megatron_seqpt
COPY setup.py setup.cfg README.md ./
COPY megatron_seqpt ./megatron_seqpt
COPY tools ./tools
COPY examples ./examples

# megatron-core declares torch>=2.6, which the containers' pre-release torch builds
# (e.g. 2.7.0a0+...) do not satisfy in pip's eyes: install it without dependencies.
RUN pip install --no-cache-dir --no-deps megatron-core==0.16.1 \
 && pip install --no-cache-dir "sentencepiece>=0.2" "nltk>=3.8" "psutil>=5.9" "pyyaml>=6.0" \
        "tqdm>=4.66" "tensorboard>=2.14" "matplotlib>=3.7" "packaging" \
 && pip install --no-cache-dir --no-deps -e . \
 && python -c "import torch, megatron.core, megatron_seqpt; print('torch', torch.__version__)"

ENV PYTHONUNBUFFERED=1
WORKDIR /workspace
CMD ["seqpt", "--help"]
