"""Training (chapters 20-22): tile streams, the loop, checkpoints, scale-out, shipping a model.

Hand-written: the part's public API, re-exported from the generated modules.
"""
from aef_lit.training.checkpoint import (  # noqa: F401
    BEST,
    CHECKPOINT,
    METRICS,
    MetricsLog,
    WeightAverage,
    load_checkpoint,
    model_config_from_json,
    model_config_to_json,
    read_metrics,
    rng_state,
    save_checkpoint,
    set_rng_state,
    unwrap,
)
from aef_lit.training.cli import SECTIONS, build_parser, config_from_args, field_help, main  # noqa: F401
from aef_lit.training.config import TERMS, TrainConfig, lr_at, warmup_steps  # noqa: F401
from aef_lit.training.heldout import HELDOUT_PERIODS, evaluate_heldout, heldout_errors, row_periods  # noqa: F401
from aef_lit.training.loop import (  # noqa: F401
    NonFiniteLossError,
    Run,
    RunLog,
    TrainResult,
    build_model_and_objective,
    checkpoint_if_due,
    default_data,
    finish_run,
    optimiser_step,
    resume_or_init,
    setup_run,
    train,
)
from aef_lit.training.release import PRETRAINED, export_model, load_pretrained, model_card, ship  # noqa: F401
from aef_lit.training.runtime import (  # noqa: F401
    DistInfo,
    TrainStep,
    autocast_context,
    enable_activation_checkpointing,
    init_distributed,
    params_digest,
    resolve_device,
    step_generator,
    unwrap_ddp,
    xla_sync,
)
