"""Training: the one epoch loop (early stopping, divergence, checkpoints) of image and movie
models, what image models train on, the runtime (device, precision, DDP), the memory guard,
model selection.
"""

from niflow.train.epochs import EpochTask, run_epochs
from niflow.train.loop import (
    Batches,
    History,
    batch_loss,
    correlation_from_sums,
    correlation_sums,
    epoch_plan,
    fit,
    load_checkpoint,
    seed_everything,
    validation_score,
    write_log,
)
from niflow.train.memory import (
    MemoryEstimate,
    ResourceError,
    activation_bytes,
    check_memory,
    estimate_training_memory,
)
from niflow.train.runtime import (
    Runtime,
    agree,
    all_reduce_sum,
    autocast,
    broadcast_object,
    maybe_compile,
    precision_dtype,
    resolve_device,
    runtime_from_environment,
    shard,
    warn_compile_failed,
)
from niflow.train.safety import (
    CheckpointError,
    TrainingDiverged,
    TrainingError,
    TrainingInterrupted,
)
from niflow.train.select import (
    Selection,
    is_active,
    member_config,
    member_data,
    select_and_train,
)

__all__ = [
    "EpochTask",
    "run_epochs",
    "History",
    "seed_everything",
    "Batches",
    "correlation_sums",
    "correlation_from_sums",
    "validation_score",
    "load_checkpoint",
    "epoch_plan",
    "batch_loss",
    "fit",
    "write_log",
    "Runtime",
    "autocast",
    "precision_dtype",
    "resolve_device",
    "runtime_from_environment",
    "shard",
    "all_reduce_sum",
    "agree",
    "broadcast_object",
    "maybe_compile",
    "warn_compile_failed",
    "ResourceError",
    "MemoryEstimate",
    "activation_bytes",
    "estimate_training_memory",
    "check_memory",
    "Selection",
    "is_active",
    "member_data",
    "member_config",
    "select_and_train",
    "TrainingError",
    "TrainingDiverged",
    "CheckpointError",
    "TrainingInterrupted",
]
