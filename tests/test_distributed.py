"""Start-up as one process and as 2 gloo ranks: process groups, megatron-core parallel state,
the layout checks, and the CPU shims (device redirection, per-rank RNG streams)."""

import os
import subprocess
import sys

import pytest
import torch

from megatron_seqpt.config import load_run_config
from megatron_seqpt.runtime.distributed import LayoutError, check_layout


def test_single_process_start(single_process):
    config = load_run_config()
    ctx = single_process.initialize(config.parallel, config.model, seed=7)
    from megatron.core import parallel_state
    from megatron.core.tensor_parallel import get_cuda_rng_tracker

    assert ctx.launch.launcher == "single" and ctx.world_size == 1
    assert (ctx.tensor_parallel, ctx.pipeline_parallel, ctx.data_parallel) == (1, 1, 1)
    assert parallel_state.get_tensor_model_parallel_world_size() == 1
    assert parallel_state.get_data_parallel_world_size() == 1
    assert torch.distributed.get_backend() == "gloo"
    # CPU shims: megatron-core's CUDA placements land on the CPU.
    assert torch.zeros(2, device="cuda").device.type == "cpu"
    assert torch.ones(2).cuda().device.type == "cpu"
    with get_cuda_rng_tracker().fork():
        inside = torch.rand(4)
    outside = torch.rand(4)
    assert not torch.equal(inside, outside)


def test_shutdown_takes_the_cpu_layer_off_again(single_process):
    """The layer's function mode sees every torch call of the process; after shutdown, code
    that runs next (another library, a Hugging Face baseline) runs without it."""
    current_device = torch.cuda.current_device
    config = load_run_config()
    single_process.initialize(config.parallel, config.model)
    assert torch.overrides._get_current_function_mode() is not None
    single_process.shutdown()
    assert torch.overrides._get_current_function_mode() is None
    assert torch.cuda.current_device is current_device
    single_process.initialize(config.parallel, config.model)  # and on again
    assert torch.zeros(2, device="cuda").device.type == "cpu"


def test_seed_makes_start_up_deterministic(single_process):
    config = load_run_config()
    from megatron.core.tensor_parallel import get_cuda_rng_tracker

    draws = []
    for _ in range(2):
        single_process.initialize(config.parallel, config.model, seed=11)
        with get_cuda_rng_tracker().fork():
            draws.append((torch.rand(3), torch.rand(3)))
        single_process.shutdown()
    assert torch.equal(draws[0][0], draws[1][0]) and torch.equal(draws[0][1], draws[1][1])


def _start(tp: int, pp: int):
    from megatron.core import parallel_state
    from megatron.core.tensor_parallel import get_cuda_rng_tracker

    from megatron_seqpt.runtime import distributed

    config = load_run_config(None, [f"parallel.tensor_model_parallel_size={tp}",
                                    f"parallel.pipeline_model_parallel_size={pp}"])
    ctx = distributed.initialize(config.parallel, config.model, seed=3)
    total = torch.tensor([float(ctx.rank + 1)])
    torch.distributed.all_reduce(total)
    with get_cuda_rng_tracker().fork():
        tp_stream = torch.rand(4)
    result = {
        "launcher": ctx.launch.launcher,
        "sum": total.item(),
        "tp": (parallel_state.get_tensor_model_parallel_world_size(),
               parallel_state.get_tensor_model_parallel_rank()),
        "pp": (parallel_state.get_pipeline_model_parallel_world_size(),
               parallel_state.get_pipeline_model_parallel_rank()),
        "dp": (parallel_state.get_data_parallel_world_size(),
               parallel_state.get_data_parallel_rank()),
        "tp_stream": tp_stream,
        "default_stream": torch.rand(4),
        "pid": os.getpid(),
    }
    distributed.shutdown()
    return result


def test_two_ranks_data_parallel(ranks):
    r0, r1 = ranks.run(_start, 2, 1, 1)
    assert r0["launcher"] == "torchrun"
    assert r0["sum"] == r1["sum"] == 3.0
    assert r0["dp"] == (2, 0) and r1["dp"] == (2, 1)
    assert r0["tp"] == r1["tp"] == (1, 0)
    # Replicas share the seed: same dropout streams, identical initialisation.
    assert torch.equal(r0["default_stream"], r1["default_stream"])


def test_two_ranks_tensor_parallel(ranks):
    r0, r1 = ranks.run(_start, 2, 2, 1)
    assert (r0["tp"], r1["tp"]) == ((2, 0), (2, 1))
    assert r0["dp"] == r1["dp"] == (1, 0)
    # Each tensor-parallel rank draws its own stream inside the model-parallel region.
    assert not torch.equal(r0["tp_stream"], r1["tp_stream"])
    assert torch.equal(r0["default_stream"], r1["default_stream"])


def test_two_ranks_pipeline_parallel(ranks):
    r0, r1 = ranks.run(_start, 2, 1, 2)
    assert (r0["pp"], r1["pp"]) == ((2, 0), (2, 1))


def _stages(layouts: list[int]) -> list[tuple[float, int]]:
    """(Runs in a rank process.) One stage per tensor-parallel size, each started and ended as
    a command's stages are (training then scoring, a recipe's runs); rank 1 ends each later."""
    import time

    from megatron.core import parallel_state

    from megatron_seqpt.runtime import distributed

    seen = []
    for tp in layouts:
        config = load_run_config(None, [f"parallel.tensor_model_parallel_size={tp}"])
        ctx = distributed.initialize(config.parallel, config.model)
        total = torch.tensor([float(ctx.rank + 1)])
        torch.distributed.all_reduce(total)
        seen.append((total.item(), parallel_state.get_tensor_model_parallel_world_size()))
        if ctx.rank == 1:
            time.sleep(0.3)
        distributed.shutdown()
    distributed.close()
    return seen


def test_the_stages_of_one_launch_start_one_after_another(ranks):
    """A second process group in the same launch read the first one's rendezvous keys: its
    ranks connected to addresses closed since, and every command of several stages under
    torchrun or srun failed at its second ('Gloo connectFullMesh failed ... Connection
    refused'): fine-tuning then scoring, every stage of seqpt reproduce after the first."""
    r0, r1 = ranks.run(_stages, 2, [1, 2, 1])
    assert r0 == r1 == [(3.0, 1), (3.0, 2), (3.0, 1)]
    assert ranks.run(_stages, 2, [1])[0] == [(3.0, 1)]  # the next world: a group of its own


def _fail_on_rank_1():
    if os.environ["RANK"] == "1":
        raise ValueError("rank 1 fails")
    return os.getpid()


def test_local_ranks_serve_worlds_in_turn_and_are_replaced_after_a_failure(ranks):
    """Later worlds run in the same processes (no second start-up), each a world of its own;
    a rank's exception comes back with its traceback, and the next world gets new processes."""
    first = ranks.run(_start, 2, 1, 1)
    second = ranks.run(_start, 2, 2, 1)
    assert [r["pid"] for r in first] == [r["pid"] for r in second]
    assert (second[0]["tp"], second[1]["tp"]) == ((2, 0), (2, 1))
    with pytest.raises(AssertionError, match=r"(?s)rank 1:\n.*ValueError: rank 1 fails"):
        ranks.run(_fail_on_rank_1, 2)
    third = ranks.run(_start, 2, 1, 1)
    assert third[0]["sum"] == 3.0
    assert not {r["pid"] for r in third} & {r["pid"] for r in first}


@pytest.mark.parametrize("world, overrides, words", [
    (3, ["parallel.tensor_model_parallel_size=2"], ["world size 3", "(2)"]),
    (2, ["parallel.tensor_model_parallel_size=2", "model.hidden_size=96",
         "model.encoder.num_attention_heads=3"], ["model.encoder.num_attention_heads (3)"]),
    (2, ["parallel.pipeline_model_parallel_size=2", "model.encoder.num_layers=3"],
     ["model.encoder.num_layers (3)", "pipeline_model_parallel_size (2)"]),
    (4, ["parallel.tensor_model_parallel_size=2", "model.kind=t5", "model.hidden_size=96",
         "model.decoder.num_attention_heads=3"], ["model.decoder.num_attention_heads (3)"]),
])
def test_layout_errors_name_the_numbers(world, overrides, words):
    config = load_run_config(None, overrides)
    with pytest.raises(LayoutError) as info:
        check_layout(world, config.parallel, config.model)
    for word in words:
        assert word in str(info.value)


def test_bad_layout_fails_before_any_process_group(single_process):
    config = load_run_config(None, ["parallel.tensor_model_parallel_size=2"])
    with pytest.raises(LayoutError, match="world size 1"):
        single_process.initialize(config.parallel, config.model)
    assert not torch.distributed.is_initialized()


def test_a_child_the_run_forked_dies_with_it():
    """megatron-core's checkpoint writers are forked; one that outlived a kill -9 of the run
    hung for good. Forked children of a run are killed when it ends."""
    import signal
    import time

    holder = subprocess.Popen(
        [sys.executable, "-c", "import os, time\n"
         "from megatron_seqpt.runtime import child_processes\n"
         "child_processes.install()\n"
         "child = os.fork()\n"
         "if child == 0: time.sleep(600)\n"
         "print(child, flush=True); time.sleep(600)"],
        stdout=subprocess.PIPE, text=True)
    child = int(holder.stdout.readline())
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    deadline = time.time() + 10
    try:
        while time.time() < deadline:
            try:
                os.kill(child, 0)
            except ProcessLookupError:
                return
            time.sleep(0.05)
        raise AssertionError(f"the forked child {child} outlived its killed parent")
    finally:
        try:
            os.kill(child, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_the_interrupt_handler_has_what_it_needs_before_a_run_starts():
    """A second Ctrl-C once landed while megatron-core's first checkpoint save was importing
    psutil: the handler's own ``import psutil`` found the half-initialised module and the run
    died with an AttributeError instead of exit status 130. What the handler uses must be
    imported with it, before any signal can arrive."""
    loaded = subprocess.run(
        [sys.executable, "-c", "import sys\n"
         "import megatron_seqpt.training.preemption\n"
         "print(hasattr(sys.modules.get('psutil'), 'Process'))"],
        capture_output=True, text=True, check=True).stdout.split()[-1]
    assert loaded == "True"


def test_an_interrupted_command_ends_its_helper_processes_before_it_returns(tmp_path):
    """A second Ctrl-C can land while megatron-core's checkpoint results manager (a spawned
    child) is still starting; if the command leaves it to die with the process, it finds the
    pipe closed first and prints a traceback. The command kills its helpers before returning."""
    (tmp_path / "interrupted_cmd.py").write_text(
        "import multiprocessing, time\n"
        "def add_arguments(parser):\n"
        "    pass\n"
        "def run(args):\n"
        "    multiprocessing.get_context('spawn').Process(target=time.sleep, args=(600,)).start()\n"
        "    raise KeyboardInterrupt\n")
    (tmp_path / "main.py").write_text(
        "import multiprocessing, sys\n"
        "from megatron_seqpt import cli\n"
        "cli.COMMANDS['interrupted'] = ('interrupted_cmd', 'starts a helper, is interrupted')\n"
        "if __name__ == '__main__':\n"
        "    code = cli.main(['interrupted'])\n"
        "    print('helpers left:', len(multiprocessing.active_children()), flush=True)\n"
        "    sys.exit(code)\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.getcwd()])}
    done = subprocess.run([sys.executable, str(tmp_path / "main.py")], capture_output=True,
                          text=True, env=env, timeout=120)
    assert done.returncode == 130, done.stderr
    assert "helpers left: 0" in done.stdout, done.stdout + done.stderr
    assert "Traceback" not in done.stderr, done.stderr
