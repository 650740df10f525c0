import os
import shutil
import tempfile

import pytest
import torch

from megatron_seqpt.runtime.local_ranks import LocalRanks
from tests.prepared_data import DATA_DIR_VARIABLE


def pytest_configure(config):
    if DATA_DIR_VARIABLE not in os.environ:
        os.environ[DATA_DIR_VARIABLE] = tempfile.mkdtemp(prefix="seqpt-test-data-")
        config._seqpt_owned_data_dir = os.environ[DATA_DIR_VARIABLE]


def pytest_unconfigure(config):
    owned = getattr(config, "_seqpt_owned_data_dir", None)
    if owned:
        shutil.rmtree(owned, ignore_errors=True)


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def single_process(monkeypatch):
    """A world of one for the test, torn down afterwards (no launcher variables leak in)."""
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT",
                "SLURM_PROCID", "SLURM_NTASKS", "SLURM_STEP_NUM_TASKS", "SLURM_LOCALID"):
        monkeypatch.delenv(var, raising=False)
    from megatron_seqpt.runtime import distributed

    yield distributed
    distributed.shutdown()


@pytest.fixture(scope="session")
def recipe_root(tmp_path_factory):
    """Where tests/recipe_runs.py keeps its tiny trained runs for the session."""
    return tmp_path_factory.mktemp("recipes")


@pytest.fixture(scope="module")
def ranks():
    """Rank processes for the module's worlds, started once (each start imports torch and
    megatron-core again); every world initialises and tears down its own groups."""
    with LocalRanks() as local_ranks:
        yield local_ranks
