"""Memory guard: the estimate against independent counts, the available memory as the system
reports it, and refusals before anything is written.

The command-line refusals (exit 2, no run folder, ``--no-memory-check``) are in
``tests/test_validation_cli.py``.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from niflow import _system
from niflow import config as cfgmod
from niflow._system import available_memory, format_bytes
from niflow.data.errors import DataError
from niflow.data.io import load_arrays
from niflow.data.simulate import simulate
from niflow.model import NIFModel
from niflow.runs.pipeline import train_run
from niflow.train import memory as resources
from niflow.train.memory import (
    MemoryEstimate,
    ResourceError,
    activation_bytes,
    check_memory,
    estimate_training_memory,
)

SHAPE = (1, 40, 40)
VOXELS = {"V1": 25, "V2": 15}


def _cfg(name: str = "default", batch_size: int = 8) -> cfgmod.RunConfig:
    cfg = cfgmod.preset(name)
    cfg.train.batch_size = batch_size
    return cfg.validate()


def _estimate(cfg, n_train: int = 200) -> MemoryEstimate:
    return estimate_training_memory(cfg, SHAPE, VOXELS, n_samples=300, n_train_rows=n_train,
                                    n_eval_rows=30)


# --------------------------------------------------------------------------- the estimate


@pytest.mark.parametrize("name", ["default", "basicnif"])
def test_parameter_bytes_match_the_real_model(name):
    cfg = _cfg(name)
    est = _estimate(cfg)
    model = NIFModel(cfg, SHAPE, VOXELS)  # on the CPU, allocated for real
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    buffers = sum(b.numel() * b.element_size() for b in model.buffers())
    assert est.gradients == params
    assert est.optimizer == 2 * params  # Adam: exp_avg and exp_avg_sq per parameter
    assert est.parameters == params + buffers
    # Adam's state as PyTorch really keeps it, after one step
    opt = torch.optim.Adam(model.parameters())
    sum(y.sum() for y in model(torch.rand(2, *SHAPE)).values()).backward()
    opt.step()
    moments = sum(t.numel() * t.element_size() for s in opt.state.values()
                  for k, t in s.items() if k != "step")
    assert moments == est.optimizer


class _ModuleOutputs:
    """Bytes of the outputs of every leaf module (forward hooks): an independent count."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.total = 0
        self.handles = [m.register_forward_hook(self._hook) for m in model.modules()
                        if not list(m.children())]

    def _hook(self, module, args, out) -> None:
        if not any(out is a for a in args):  # nn.Identity returns its input
            self.total += out.numel() * out.element_size()

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


@pytest.mark.parametrize("name", ["default", "basicnif"])
def test_activation_trace_against_real_forward_passes(name):
    cfg = _cfg(name)
    with torch.device("meta"):
        meta_model = NIFModel(cfg, SHAPE, VOXELS)
    meta_model.train()
    fixed, per_sample, largest = activation_bytes(meta_model, SHAPE)

    model = NIFModel(cfg, SHAPE, VOXELS)
    model.train()
    hooks = _ModuleOutputs(model)
    counts = {}
    for batch in (4, 8):
        hooks.total = 0
        model(torch.rand(batch, *SHAPE))
        counts[batch] = hooks.total
    hooks.remove()
    per_sample_modules = (counts[8] - counts[4]) // 4
    # the trace sees every tensor the modules return, and the temporaries inside them too
    assert per_sample_modules <= per_sample <= 3 * per_sample_modules
    # the largest per-sample tensor is at least the biggest feature map of one sample
    biggest_map = max(cfg_area.channels for cfg_area in cfg.areas) * SHAPE[1] * SHAPE[2] * 4
    assert largest >= biggest_map
    assert fixed > 0  # readout spatial maps do not depend on the batch


def test_trace_on_meta_equals_trace_on_real_tensors():
    cfg = _cfg("default")
    model = NIFModel(cfg, SHAPE, VOXELS)
    model.train()
    x = torch.rand(3, *SHAPE)
    counter = resources._OutputBytes()
    with counter:
        out = model(x)
        loss = sum(torch.mean((y - torch.zeros_like(y)) ** 2) for y in out.values())
        loss + model.regularizer()
    with torch.device("meta"):
        meta_model = NIFModel(cfg, SHAPE, VOXELS)
    meta_model.train()
    assert resources._trace(meta_model, SHAPE, 3) == counter.sizes


def test_activations_grow_linearly_with_the_batch_size():
    acts = {b: _estimate(_cfg("default", b)).activations for b in (4, 8, 16, 32)}
    steps = [acts[8] - acts[4], (acts[16] - acts[8]) / 2, (acts[32] - acts[16]) / 4]
    assert steps[0] > 0
    assert max(steps) - min(steps) <= 2  # integer rounding only
    # a batch never holds more rows than there are training rows
    assert _estimate(_cfg("default", 500), n_train=32).activations == acts[32]


def test_estimate_counts_the_data():
    est = _estimate(_cfg())
    stim_f32 = 300 * SHAPE[0] * SHAPE[1] * SHAPE[2] * 4
    responses = 300 * sum(VOXELS.values()) * 4
    assert est.data >= stim_f32 + 2 * responses
    assert est.total == (est.parameters + est.gradients + est.optimizer + est.weight_copies
                         + est.data + est.transient + est.runtime)


def test_summary_names_the_largest_part():
    est = _estimate(_cfg("default", 4096))
    assert est.transient == est.activations
    assert f"activations {format_bytes(est.activations)} (batches of 200)" in est.summary()


@pytest.mark.parametrize("n, text", [(0, "0 B"), (1023, "1023 B"), (1536, "1.5 KiB"),
                                     (5 * 2**20, "5.0 MiB"), (3 * 2**40, "3.0 TiB"),
                                     (2**52, "4096.0 TiB")])
def test_format_bytes(n, text):
    assert format_bytes(n) == text


# --------------------------------------------------------------------------- what is available


def test_meminfo_parsing(tmp_path):
    path = tmp_path / "meminfo"
    path.write_text("MemTotal:       16000000 kB\nMemFree:          500000 kB\n"
                    "MemAvailable:    8000000 kB\nBuffers:           1000 kB\n")
    assert _system._meminfo_available(path) == 8000000 * 1024
    path.write_text("MemTotal: 1 kB\n")  # a kernel older than 3.14
    assert _system._meminfo_available(path) is None
    assert _system._meminfo_available(tmp_path / "missing") is None


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_cgroup_v2_limit(tmp_path):
    root = tmp_path / "cgroup"
    job = root / "batch" / "job42"
    _write(job / "memory.max", "1073741824\n")  # 1 GiB
    _write(job / "memory.current", "268435456\n")  # 256 MiB used ...
    _write(job / "memory.stat", "anon 1000\ninactive_file 67108864\n")  # ... 64 MiB reclaimable
    _write(root / "batch" / "memory.max", "max\n")
    _write(root / "batch" / "memory.current", "999999999999\n")
    own = tmp_path / "self_cgroup"
    own.write_text("0::/batch/job42\n")
    assert _system._cgroup_headroom(root, own) == 2**30 - 2**28 + 2**26


def test_cgroup_v1_limit_of_a_parent(tmp_path):
    root = tmp_path / "cgroup"
    mem = root / "memory"
    _write(mem / "slurm" / "memory.limit_in_bytes", str(2**31))
    _write(mem / "slurm" / "memory.usage_in_bytes", str(2**30))
    _write(mem / "slurm" / "job" / "memory.limit_in_bytes", "9223372036854771712")  # none
    _write(mem / "slurm" / "job" / "memory.usage_in_bytes", str(2**29))
    own = tmp_path / "self_cgroup"
    own.write_text("5:cpu,cpuacct:/slurm/job\n4:memory:/slurm/job\n")
    assert _system._cgroup_headroom(root, own) == 2**30


def test_no_cgroup_limit(tmp_path):
    own = tmp_path / "self_cgroup"
    own.write_text("0::/\n")
    _write(tmp_path / "cgroup" / "memory.max", "max\n")
    assert _system._cgroup_headroom(tmp_path / "cgroup", own) is None
    assert _system._cgroup_headroom(tmp_path / "cgroup", tmp_path / "missing") is None


@pytest.mark.skipif(not Path("/proc/meminfo").exists(), reason="needs Linux /proc")
def test_available_memory_on_this_machine():
    text = Path("/proc/meminfo").read_text()
    meminfo = int(next(line.split()[1] for line in text.splitlines()
                       if line.startswith("MemAvailable:"))) * 1024
    free = available_memory()
    assert free is not None and 0 < free <= meminfo * 1.1  # the two reads are moments apart
    assert available_memory("meta") is None


# --------------------------------------------------------------------------- refusing


def test_check_memory_refuses_with_one_line():
    est = _estimate(_cfg())
    assert check_memory(est, available=est.total) == est.total
    with pytest.raises(ResourceError) as info:
        check_memory(est, available=est.total - 1)
    msg = str(info.value)
    assert "\n" not in msg
    assert format_bytes(est.total) in msg and format_bytes(est.total - 1) in msg
    assert "--batch-size" in msg or "channels" in msg


def test_train_run_refuses_before_writing(tmp_path, monkeypatch):
    sim = simulate(n_per_letter=4, n_voxels={"V1": 12, "V2": 8}, seed=1)
    monkeypatch.setattr(resources, "available_memory", lambda device="cpu": 2**20)
    with pytest.raises(ResourceError, match="1.0 MiB is available"):
        train_run(sim.stim, sim.responses, tmp_path / "run", _cfg(), "20:24", progress=False)
    assert list(tmp_path.iterdir()) == []


def test_loader_refuses_a_variable_larger_than_memory(tmp_path, monkeypatch):
    path = tmp_path / "big.h5"
    with h5py.File(path, "w") as fh:
        fh.create_dataset("V1", data=np.zeros((64, 64)))  # 32 KiB
    monkeypatch.setattr(_system, "available_memory", lambda device="cpu": 4096)
    with pytest.raises(DataError, match="'V1' claims 32.0 KiB"):
        load_arrays(path)
    monkeypatch.setattr(_system, "available_memory", lambda device="cpu": 2**20)
    assert load_arrays(path)["V1"].shape == (64, 64)
