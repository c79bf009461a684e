"""Wiring of one training run: config, data checks, run folder, model, Lightning trainer, fit."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import LearningRateMonitor
from pytorch_lightning.loggers import TensorBoardLogger
from pytorch_lightning.utilities import rank_zero_only

from talkingface.model.image_driven_talkingface.DiffTalk.checkpoint import CheckpointError, load_first_stage
from talkingface.model.image_driven_talkingface.DiffTalk.config import (
    config_to_dict,
    first_stage_source,
    with_audio_feature_kind,
)
from talkingface.model.image_driven_talkingface.DiffTalk.loader import resolve_path
from talkingface.paths import require_writable
from talkingface.training.callbacks import ImageLogger, LastCheckpoint, SlimExport, ThroughputMonitor
from talkingface.training.checkpoint_io import AtomicCheckpointIO, StepCheckpoint, check_resume_checkpoint
from talkingface.training.config import TrainingConfig, load_training_config
from talkingface.training.console import StepProgressBar, quiet_lightning
from talkingface.training.data import build_datamodule, check_batch_fits, check_dataset, data_check_error
from talkingface.training.devices import DeviceSpec, build_strategy, device_spec
from talkingface.training.distill import (
    ProgressiveDistillation,
    TrajectoryDistillation,
    check_distill_config,
    load_teacher,
)
from talkingface.training.lr import scaled_learning_rate
from talkingface.training.module import LatentDiffusion
from talkingface.training.run_dir import (
    RUN_DIR_ENV,
    RunDirError,
    RunPaths,
    check_run_dir,
    claim_run_dir,
    missing_top,
    new_run_name,
    remove_created,
    resolve_resume,
    run_lock,
    write_snapshot,
)
from talkingface.training.speed import compile_unet, set_tf32

log = logging.getLogger("talkingface.training")


def exit_status(stopped_by: int | None) -> int:
    """0 when training ended by itself, 128 + the signal number when a signal stopped it (shell convention)."""
    return 0 if stopped_by is None else 128 + int(signal.Signals(stopped_by))


def count_or_fraction(value: float | None) -> int | float | None:
    """Config values such as ``train.limit_val_batches``: below 1 a fraction of the epoch, from 1 up a count of
    batches (YAML and dotlist overrides give floats, so ``1`` must not mean Lightning's "100 %")."""
    if value is None or value < 1:
        return value
    if not float(value).is_integer():
        raise ValueError(f"expected a fraction below 1 or a whole number of batches, got {value}")
    return int(value)


def build_module(cfg: TrainingConfig, learning_rate: float, load_vq: bool = True) -> LatentDiffusion:
    """The Lightning module, with the frozen first stage loaded from ``model.first_stage.ckpt_path``.

    With ``distill.teacher`` set: the distillation module (``talkingface.training.distill``), initialised from the
    teacher (its first stage included) unless resuming (``load_vq`` false: the checkpoint restores it)."""
    t = cfg.train
    if cfg.distill.teacher:
        teacher = load_teacher(cfg)
        options = _module_options(cfg, learning_rate)
        module: LatentDiffusion
        if cfg.distill.method == "trajectory":
            student = load_teacher(cfg, "student") if cfg.distill.student and load_vq else None
            module = TrajectoryDistillation(cfg.model, teacher, cfg.distill, student=student, **options)
        else:
            module = ProgressiveDistillation(cfg.model, teacher, cfg.distill, **options)
        if load_vq:
            module.init_from_teacher()  # type: ignore[attr-defined]
        compile_unet(module, t.compile)
        return module
    module = LatentDiffusion(cfg.model, **_module_options(cfg, learning_rate))
    ckpt = cfg.model.first_stage.ckpt_path
    if ckpt and load_vq:
        path = resolve_path(ckpt)
        if not path.is_file():
            raise CheckpointError(
                ckpt,
                f"first-stage checkpoint {'is a folder, not a file' if path.is_dir() else 'not found'} "
                "(model.first_stage.ckpt_path)",
                hint=f"put {first_stage_source(cfg.model.first_stage)} there, or set model.first_stage.ckpt_path=...",
            )
        load_first_stage(module, path)
    elif not ckpt:
        log.warning("model.first_stage.ckpt_path is null: the first stage is randomly initialised (tests only)")
    compile_unet(module, t.compile)
    return module


def _module_options(cfg: TrainingConfig, learning_rate: float) -> dict[str, Any]:
    t = cfg.train
    return dict(
        learning_rate=learning_rate,
        run_config=config_to_dict(cfg),
        channels_last=t.channels_last,
        fused_optimizer=t.fused_optimizer,
        validation_seed=t.validation_seed,
        val_metrics_batches=t.val_metrics_batches,
        val_metrics_steps=t.val_metrics_steps,
        lr_warmup_steps=t.lr_warmup_steps,
    )


def build_trainer(
    cfg: TrainingConfig, spec: DeviceSpec, paths: RunPaths, extra_callbacks: list[Any]
) -> tuple[pl.Trainer, LastCheckpoint]:
    t = cfg.train
    stopper = LastCheckpoint(paths.last_ckpt, t.checkpoint_every_n_steps)
    callbacks: list[Any] = [
        StepCheckpoint(paths.ckpt_dir, t.checkpoint_every_n_steps, t.keep_last_checkpoints),
        LearningRateMonitor(logging_interval="step"),
        StepProgressBar(),
        ThroughputMonitor(),
        ImageLogger(paths.image_dir, t.image_log_every_n_steps, t.image_log_max_images, t.image_log_ddim_steps),
        stopper,
        *extra_callbacks,
    ]
    if t.export_slim_on_end:
        callbacks.append(SlimExport(paths.slim_export))
    trainer = pl.Trainer(
        accelerator=spec.accelerator,
        devices=spec.devices,
        num_nodes=spec.num_nodes,
        strategy=build_strategy(spec, t.ddp_timeout_s, t.find_unused_parameters),
        precision=t.precision,
        max_epochs=t.max_epochs,
        max_steps=t.max_steps,
        accumulate_grad_batches=t.accumulate_grad_batches,
        gradient_clip_val=t.gradient_clip_val,
        benchmark=t.benchmark if spec.accelerator == "gpu" else None,
        log_every_n_steps=t.log_every_n_steps,
        val_check_interval=count_or_fraction(t.val_check_interval),
        check_val_every_n_epoch=t.check_val_every_n_epoch,
        limit_val_batches=count_or_fraction(t.limit_val_batches),
        num_sanity_val_steps=t.num_sanity_val_steps,
        logger=TensorBoardLogger(save_dir=str(paths.root), name="tensorboard", version=""),
        callbacks=callbacks,
        plugins=[AtomicCheckpointIO()],
        default_root_dir=str(paths.root),
    )
    return trainer, stopper


def run_training(args: Any, overrides: list[str], argv: list[str], extra_callbacks: list[Any]) -> int:
    """Everything after argument parsing of the ``talkingface train`` command."""
    resume_ckpt: Path | None = None
    base = list(args.base)
    if args.resume:
        paths, resume_ckpt = resolve_resume(args.resume)
        base = [str(paths.config_snapshot), *base]
    flags = [] if args.seed is None else [f"train.seed={args.seed}"]
    flags += [] if args.scale_lr is None else [f"model.scale_lr={str(args.scale_lr).lower()}"]
    cfg = check_distill_config(load_training_config(base, [*overrides, *flags]))  # a bad teacher path fails here

    spec = device_spec(args.gpus, args.devices, args.num_nodes, args.strategy)
    meta = check_dataset(cfg)  # fails early
    check_batch_fits(cfg, spec.world_size)
    cfg = with_audio_feature_kind(cfg, meta["audio_feature"]["kind"])  # the checkpoint records what the model eats
    lr = scaled_learning_rate(
        cfg.model.base_learning_rate,
        spec.world_size,
        cfg.data.batch_size,
        cfg.train.accumulate_grad_batches,
        cfg.model.scale_lr,
    )
    if not args.train:
        log.info(
            "config and dataset are fine (%s, %d process(es), lr %.2e); pass -t to train", spec, spec.world_size, lr
        )
        return 0

    if not args.resume:
        root = (
            args.run_dir
            or os.environ.get(RUN_DIR_ENV)
            or Path(args.logdir) / new_run_name(args.base, args.name, args.postfix)
        )
        paths = RunPaths(Path(root))
    if paths.root.exists() and not paths.root.is_dir():
        raise RunDirError(f"--run-dir {paths.root}: is a file, not a folder")
    launcher = launches_the_run()
    if launcher:  # before the model is built and trained: a run that cannot write its checkpoints is refused now
        named_by = (
            "--resume" if args.resume else "--run-dir" if args.run_dir or os.environ.get(RUN_DIR_ENV) else "--logdir"
        )
        check_run_writable(paths, named_by)
    with contextlib.ExitStack() as held:
        locked = launcher and paths.root.is_dir()
        if locked:  # fail at once when another run holds the folder or it is taken
            held.enter_context(run_lock(paths.root))
            if not args.resume:
                check_run_dir(paths, overwrite=args.overwrite_run)
        if resume_ckpt is not None:  # random bytes are no checkpoint: said before anything is built
            check_resume_checkpoint(resume_ckpt)

        quiet_lightning()  # Lightning's tips and known warnings (the frozen first stage in eval mode, ...)
        pl.seed_everything(cfg.train.seed, workers=True)
        set_tf32(cfg.train.tf32)
        module = build_module(cfg, lr, load_vq=resume_ckpt is None)
        if cfg.data.latent_cache and (cfg.model.first_stage.ckpt_path or cfg.distill.teacher) and resume_ckpt is None:
            from talkingface.data.latent_cache import LatentCacheError, check_latent_cache

            try:  # the cache must come from these very first-stage weights
                check_latent_cache(cfg.data.latent_cache, cfg.data.root, cfg.model, module.first_stage_model)
            except LatentCacheError as err:
                raise data_check_error(err) from None
        datamodule = build_datamodule(cfg, meta)
        trainer, stopper = build_trainer(cfg, spec, paths, extra_callbacks)

        # Only now, with the setup done, does the run folder get made or (--overwrite-run) emptied.
        created = open_run_folder(paths, held, locked, not args.resume, args.overwrite_run) if launcher else []
        previous = os.environ.get(RUN_DIR_ENV)
        os.environ[RUN_DIR_ENV] = str(paths.root)  # DDP processes started by Lightning reuse this run folder
        try:
            if launcher:
                write_snapshot(paths, cfg, ["trainer/DiffTalkTrainer.py", *argv])
                log.info("run folder %s", paths.root)
            ckpt_path = str(resume_ckpt) if resume_ckpt else None
            trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
        except BaseException:
            if created and trainer.global_step == 0:  # failed before its first step: leave no half-made run
                remove_created(created)
                log.warning(
                    "the run failed before its first step; removed what it had made: %s", ", ".join(map(str, created))
                )
            raise
        finally:
            if previous is None:
                os.environ.pop(RUN_DIR_ENV, None)
            else:
                os.environ[RUN_DIR_ENV] = previous
    if stopper.received is not None:
        log.warning("stopped by a signal; continue with --resume %s", paths.root)
    else:
        log.info("training finished at step %d; checkpoints in %s", trainer.global_step, paths.ckpt_dir)
    return exit_status(stopper.received)


def check_run_writable(paths: RunPaths, flag: str) -> None:
    """Refuse a run folder (or, when it does not exist yet, the folder it would be made in) that this process cannot
    write, and each of its folders that a run writes into (configs/, checkpoints/, images/, tensorboard/)."""
    hint = f"fix the folder's permissions or give another {flag}" if flag != "--resume" else "fix its permissions"
    require_writable(paths.root, hint=hint)
    for folder in (*paths.run_folders, paths.image_dir):
        if folder.is_dir():
            require_writable(folder, hint=hint)


def launches_the_run() -> bool:
    """True in the process that launched the run (global rank 0 on node 0), the one that locks and writes the run
    folder; DDP processes started by Lightning, torchrun / SLURM ranks above 0 and other nodes' launchers don't."""
    return rank_zero_only.rank == 0 and os.environ.get("NODE_RANK", "0") in ("", "0")


def open_run_folder(
    paths: RunPaths, held: contextlib.ExitStack, locked: bool, new_run: bool, overwrite: bool
) -> list[Path]:
    """Lock the run folder (making it first) unless ``locked`` already, and for a new run claim it
    (:func:`claim_run_dir`). Returns what a new run will create there: the folders to remove if it fails before its
    first step (nothing for a resumed run)."""
    top = missing_top(paths.root)
    if not locked:
        paths.root.mkdir(parents=True, exist_ok=True)
        held.enter_context(run_lock(paths.root))
    if not new_run:
        return []
    claim_run_dir(paths, overwrite=overwrite)
    return [top] if top else [folder for folder in paths.run_folders if not folder.exists()]
