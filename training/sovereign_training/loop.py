"""The training loop, shared by Ray Train workers and the single-process (no Ray) mode.

Everything that differs between the two lives behind `Worker`: rank, world size, device, where
the latest checkpoint is, and how a checkpoint is reported. Data order depends only on
(seed, epoch, step), and the step counter is restored from the checkpoint, so a restarted worker
group continues exactly where the last checkpoint left off.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.distributed as dist

from . import accounting, flops
from .checkpoint import RESULT_FILE, STATE_FILE, load_state, save_state
from .config import TrainingConfig
from .data import Blocks, DatasetError, build_blocks, plan_step, read_rows
from .digest import model_digest
from .model_card import data_entry, render_card
from .modeling import (
    adapter_precision,
    add_lora,
    load_model,
    load_tokenizer,
    lr_lambda,
    make_optimizer,
    param_dtype,
    unwrap,
)
from .placement import refuse_outside
from .progress import emit, progress_line
from .serve.mlflow_pyfunc import add_pyfunc_flavor
from .sources import (
    checked_dataset,
    model_dir,
    parse_uri,
    resolved_revision,
    upload_folder_s3,
)
from .speedups import (
    CausalLMLoss,
    Speedups,
    attention_implementation,
    compile_blocks,
    prepare_lora,
    prepare_model,
)
from .tracking import RunLogger, redact_uri


@dataclass
class WorkerSetup:
    """What the driver resolved before starting the workers; plain data, so Ray can ship it."""

    config_json: str
    dataset_sha256: dict[str, str]
    work_dir: str
    tracking_uri: str | None = None
    run_id: str | None = None
    experiment_id: str | None = None
    compile: bool = False
    gradient_checkpointing: bool = False
    # Levers a job may turn off (SOVAI_FLOAT8=0, SOVAI_FLEX_ATTENTION=0); each is used only
    # where the device has it (speedups.py).
    float8: bool = True
    flex_attention: bool = True
    # Test hook: exit the worker process of `crash_rank` after step `crash_at_step`, once (the
    # marker file records that it happened), to exercise recovery from a lost worker.
    crash_at_step: int | None = None
    crash_rank: int = 0
    crash_marker: str | None = None
    extra_tags: dict[str, str] = field(default_factory=dict)
    # time.time() when the driver started: the start of the job's wall time (accounting.py).
    started_at: float | None = None

    @property
    def config(self) -> TrainingConfig:
        return TrainingConfig.model_validate_json(self.config_json)

    def speedups(self, device: torch.device) -> Speedups:
        """The levers this job trains with on `device` (speedups.py)."""
        levers = Speedups.for_device(device, use_compile=self.compile)
        if not self.float8:
            levers = levers.without("float8")
        if not self.flex_attention:
            levers = levers.without("flex_attention")
        return levers


class Worker(Protocol):
    """One worker of the job, as the loop sees it: its rank and device, and where its
    checkpoints go."""

    rank: int
    world_size: int
    device: torch.device

    def latest_checkpoint(self) -> contextlib.AbstractContextManager[Path | None]: ...

    def report(self, metrics: dict[str, Any], checkpoint_dir: Path | None) -> None: ...

    def settle(self) -> None:
        """Wait until every reported checkpoint is registered."""


class LocalWorker:
    """One process, no Ray: checkpoints are step-NNNNNNNN folders under `root`, `keep` kept."""

    rank = 0
    world_size = 1

    def __init__(self, root: Path, keep: int, device: torch.device) -> None:
        self.root = root
        self.keep = keep
        self.device = device
        self.last_metrics: dict[str, Any] = {}

    def _steps(self) -> list[Path]:
        return sorted(
            p
            for p in self.root.glob("step-*")
            if (p / STATE_FILE).exists() or (p / RESULT_FILE).exists()
        )

    @contextlib.contextmanager
    def latest_checkpoint(self) -> Iterator[Path | None]:
        steps = self._steps()
        yield steps[-1] if steps else None

    def report(self, metrics: dict[str, Any], checkpoint_dir: Path | None) -> None:
        self.last_metrics = metrics
        if checkpoint_dir is None:
            return
        self.root.mkdir(parents=True, exist_ok=True)
        target = self.root / f"step-{int(metrics['step']):08d}"
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(checkpoint_dir, target)
        for old in self._steps()[: -self.keep]:
            shutil.rmtree(old, ignore_errors=True)

    def settle(self) -> None:
        """Checkpoints are written synchronously; nothing to wait for."""


def _gather(obj: Any, world_size: int) -> list[Any]:
    if world_size == 1 or not dist.is_initialized():
        return [obj]
    out: list[Any] = [None] * world_size
    dist.all_gather_object(out, obj)
    return out


def _all_reduce(t: torch.Tensor) -> torch.Tensor:
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(t)
    return t


def _merge_nodes(*lists: list[dict[str, str]]) -> list[dict[str, str]]:
    seen = {(n["node"], n["region"]) for lst in lists for n in lst}
    return [{"node": node, "region": region} for node, region in sorted(seen)]


def _load_blocks(
    cfg: TrainingConfig, setup: WorkerSetup, tokenizer: Any
) -> tuple[Blocks, Blocks | None]:
    ds = cfg.dataset
    hp = cfg.method.hyperparameters
    path, _ = checked_dataset(
        ds.training_uri, "dataset.trainingUri", setup.dataset_sha256["training"]
    )
    train = build_blocks(
        tokenizer, read_rows(path, ds.format.value, "dataset.trainingUri"), hp.max_seq_length
    )
    val = None
    if ds.validation_uri:
        vpath, _ = checked_dataset(
            ds.validation_uri, "dataset.validationUri", setup.dataset_sha256.get("validation")
        )
        rows = read_rows(vpath, ds.format.value, "dataset.validationUri")
        val = build_blocks(tokenizer, rows, hp.max_seq_length)
    return train, val


def _batch(blocks: Blocks, idx: list[int], device: torch.device) -> dict[str, torch.Tensor]:
    sel = torch.tensor(idx)
    return {
        "input_ids": blocks.input_ids[sel].to(device, non_blocking=True),
        "labels": blocks.labels[sel].to(device, non_blocking=True),
        "position_ids": blocks.position_ids[sel].to(device, non_blocking=True),
    }


def _label_count(blocks: Blocks, idx: list[int]) -> int:
    # The model shifts labels by one: position 0's label is never a target.
    return int((blocks.labels[torch.tensor(idx), 1:] != -100).sum())


@torch.no_grad()
def evaluate(model: Any, val: Blocks, worker: Worker, micro_batch_size: int) -> float:
    """Mean token loss over the validation blocks, split across workers."""
    model.eval()
    mine = list(range(worker.rank, len(val), worker.world_size))
    totals = torch.zeros(2, dtype=torch.float64, device=worker.device)
    for i in range(0, len(mine), micro_batch_size):
        idx = mine[i : i + micro_batch_size]
        count = _label_count(val, idx)
        if count == 0:
            continue
        out = model(
            **_batch(val, idx, worker.device),
            num_items_in_batch=torch.tensor(count, device=worker.device),
        )
        totals[0] += out.loss.double() * count
        totals[1] += count
    _all_reduce(totals)
    model.train()
    return float(totals[0] / totals[1]) if totals[1] > 0 else float("nan")


def _system_tags(worker: Worker) -> dict[str, str]:
    import transformers

    tags = {
        "sovai.system.python": platform.python_version(),
        "sovai.system.torch": torch.__version__,
        "sovai.system.transformers": transformers.__version__,
        "sovai.system.platform": platform.platform(),
        "sovai.system.device": worker.device.type,
        "sovai.system.world_size": str(worker.world_size),
    }
    if worker.device.type == "cuda":
        tags["sovai.system.gpu"] = torch.cuda.get_device_name(worker.device)
        tags["sovai.system.cuda"] = str(torch.version.cuda)
    else:
        tags["sovai.system.cpu_threads"] = str(torch.get_num_threads())
    with contextlib.suppress(ImportError):
        import peft

        tags["sovai.system.peft"] = peft.__version__
    with contextlib.suppress(ImportError):
        import ray

        tags["sovai.system.ray"] = ray.__version__
    return tags


def lineage_tags(
    cfg: TrainingConfig,
    dataset_sha256: dict[str, str],
    nodes: list[dict[str, str]],
    tokens: int,
    gpu_hours: float,
    artifact_kind: str,
    *,
    base_revision: str,
) -> dict[str, str]:
    """The tags every registered version carries (no secrets: URIs are redacted), but its
    digest, which covers the MLmodel file these tags also go into."""
    hp = cfg.method.hyperparameters
    tags = {
        "sovai.base_model.uri": redact_uri(cfg.base_model.uri),
        "sovai.base_model.revision": base_revision,
        "sovai.dataset.training_uri": redact_uri(cfg.dataset.training_uri),
        "sovai.dataset.training_sha256": dataset_sha256["training"],
        "sovai.dataset.validation_uri": redact_uri(cfg.dataset.validation_uri),
        "sovai.dataset.validation_sha256": dataset_sha256.get("validation", ""),
        "sovai.dataset.format": cfg.dataset.format.value,
        "sovai.job.namespace": cfg.job.namespace,
        "sovai.job.name": cfg.job.name,
        "sovai.job.uid": cfg.job.uid,
        "sovai.nodes": json.dumps(nodes, separators=(",", ":")),
        "sovai.regions": ",".join(sorted({n["region"] for n in nodes})),
        "sovai.placement.regions": ",".join(cfg.placement.regions),
        "sovai.tokens_trained": str(tokens),
        "sovai.gpu_hours": f"{gpu_hours:.6f}",
        "sovai.method": cfg.method.type,
        "sovai.merged": str(cfg.method.type == "lora" and cfg.method.merge_adapter).lower(),
        "sovai.artifact_kind": artifact_kind,
        "sovai.hyperparameters": hp.model_dump_json(by_alias=True),
    }
    if cfg.placement.policy_name:
        tags["sovai.policy.name"] = cfg.placement.policy_name
    if cfg.audit.chain_head:
        tags["sovai.audit.chain_head"] = cfg.audit.chain_head
    if cfg.method.lora:
        tags["sovai.lora"] = cfg.method.lora.model_dump_json(by_alias=True)
    return tags


def result_inputs(
    cfg: TrainingConfig, dataset_sha256: dict[str, str], *, base_revision: str
) -> dict[str, Any]:
    """What the model was made from, as the result carries it (result["inputs"]) for the
    operator's audit log: the datasets' sha256 (validation only when there is one) and the
    base model's URI (redacted, as in the MLflow tags) and resolved revision."""
    datasets = {"training": dataset_sha256["training"]}
    if "validation" in dataset_sha256:
        datasets["validation"] = dataset_sha256["validation"]
    return {
        "datasets": datasets,
        "baseModel": {"uri": redact_uri(cfg.base_model.uri), "revision": base_revision},
    }


def _params(cfg: TrainingConfig, extra: dict[str, Any]) -> dict[str, Any]:
    hp = cfg.method.hyperparameters.model_dump(by_alias=True)
    params: dict[str, Any] = {f"hp.{k}": v for k, v in hp.items()}
    params |= {
        "method": cfg.method.type,
        "mergeAdapter": cfg.method.merge_adapter,
        "workers": cfg.resources.workers,
        "gpusPerWorker": cfg.resources.gpus_per_worker,
        "baseModel": redact_uri(cfg.base_model.uri),
        "baseModelRevision": cfg.base_model.revision or "",
        "datasetFormat": cfg.dataset.format.value,
    }
    if cfg.method.lora:
        params |= {f"lora.{k}": v for k, v in cfg.method.lora.model_dump(by_alias=True).items()}
    return params | extra


def _copy_output(folder: Path, raw_uri: str) -> None:
    uri = parse_uri(raw_uri, "output.uri")
    if uri.scheme == "s3":
        upload_folder_s3(folder, raw_uri)
    elif uri.scheme in ("local", "pvc"):
        target = Path(uri.location)
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(folder, target)
    else:
        raise ValueError(f"output.uri: write to a local path, pvc:// or s3://, not {raw_uri!r}")


def _save_final(
    cfg: TrainingConfig, model: Any, tokenizer: Any, out: Path
) -> tuple[Path, Path | None, str]:
    """Save the result; returns (folder to register, adapter folder or None, its kind)."""
    base = unwrap(model)
    if cfg.method.type == "full":
        base.save_pretrained(out / "model")
        tokenizer.save_pretrained(out / "model")
        return out / "model", None, "full model"
    adapter = out / "adapter"
    base.save_pretrained(adapter)
    tokenizer.save_pretrained(adapter)
    # Point the adapter at its base by a portable name, not this worker's cache path.
    conf_path = adapter / "adapter_config.json"
    conf = json.loads(conf_path.read_text())
    src = parse_uri(cfg.base_model.uri, "baseModel.uri")
    conf["base_model_name_or_path"] = (
        src.location if src.scheme == "hf" else redact_uri(cfg.base_model.uri)
    )
    conf["revision"] = cfg.base_model.revision
    conf_path.write_text(json.dumps(conf, indent=2, sort_keys=True))
    if not cfg.method.merge_adapter:
        return adapter, adapter, "LoRA adapter (PEFT)"
    merged = base.merge_and_unload()
    merged.save_pretrained(out / "model")
    tokenizer.save_pretrained(out / "model")
    return out / "model", adapter, "full model with the LoRA adapter merged in"


def _maybe_crash(setup: WorkerSetup, worker: Worker, done: int) -> None:
    if (
        setup.crash_at_step is None
        or worker.rank != setup.crash_rank
        or done != setup.crash_at_step
    ):
        return
    if setup.crash_marker is None or Path(setup.crash_marker).exists():
        return
    # Ray Train registers a reported checkpoint asynchronously; a crash right after a report
    # may lose it, and the test would resume from the one before. Make the test deterministic.
    worker.settle()
    Path(setup.crash_marker).write_text(f"crashed after step {done}\n")
    os._exit(17)


def train_worker(setup: WorkerSetup, worker: Worker) -> dict[str, Any]:
    """Run (or resume) the job on this worker; returns the result on rank 0, {} elsewhere."""
    cfg = setup.config
    rank, world = worker.rank, worker.world_size
    device = worker.device
    driver_start = setup.started_at if setup.started_at is not None else time.time()
    # Before anything is read: a worker on a node outside the allowed regions touches no data.
    identity = refuse_outside(cfg.placement.regions)
    torch.manual_seed(cfg.method.hyperparameters.seed)

    base_path = model_dir(cfg.base_model.uri, cfg.base_model.revision)
    base_revision = resolved_revision(cfg.base_model.uri, cfg.base_model.revision, base_path)
    tokenizer, fallback_template = load_tokenizer(base_path)
    train, val = _load_blocks(cfg, setup, tokenizer)
    # "auto" hyperparameters are chosen here, where the data is: for the packed training
    # sequences. Every worker packs the same data, so every worker chooses the same.
    cfg = cfg.resolved(max(1, len(train)))
    hp = cfg.chosen()
    chosen = hp.model_dump(by_alias=True)
    steps_per_epoch = len(train) // hp.batch_size
    if steps_per_epoch == 0:
        raise DatasetError(
            f"method.hyperparameters.batchSize: the training data packs into {len(train)} "
            f"sequences of maxSeqLength {hp.max_seq_length}, fewer than one batch of "
            f"{hp.batch_size}; lower batchSize or add data"
        )
    total = steps_per_epoch * hp.epochs
    accumulation = hp.batch_size // (hp.micro_batch_size * world)

    dtype = param_dtype(device)
    speedups = setup.speedups(device)
    attention = attention_implementation(speedups, train.documents_per_block())
    model = load_model(
        base_path,
        dtype,
        device,
        gradient_checkpointing=setup.gradient_checkpointing,
        attention=attention,
    )
    prepare_model(model, speedups)
    is_lora = cfg.method.type == "lora"
    if is_lora:
        assert cfg.method.lora is not None
        model = add_lora(
            model, cfg.method.lora, gradient_checkpointing=setup.gradient_checkpointing
        )
        prepare_lora(model, speedups)
    # Autocast only where PEFT's own forward still computes the adapters.
    autocast_lora = is_lora and not speedups.fused_lora
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = make_optimizer(params, hp.learning_rate, device)
    warmup = round(hp.warmup_ratio * total)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(total, warmup))

    counters: dict[str, Any] = {"step": 0, "tokens": 0, "seconds": 0.0, "nodes": []}
    finished: dict[str, Any] | None = None
    with worker.latest_checkpoint() as ckpt:
        if ckpt is not None and (ckpt / RESULT_FILE).exists():
            finished = json.loads((ckpt / RESULT_FILE).read_text(encoding="utf-8"))
        elif ckpt is not None:
            counters = load_state(ckpt, model, optimizer, scheduler)
    if finished is not None:
        # A restarted driver of a job that already finished: report the same result again.
        worker.report({"step": total, "final": True, "result": finished if rank == 0 else {}}, None)
        return finished if rank == 0 else {}
    start_step = int(counters["step"])
    nodes = _merge_nodes(counters["nodes"], _gather(identity, world))
    earlier_wall = accounting.earlier_wall_seconds(counters, driver_start)

    logger = (
        RunLogger(setup.tracking_uri, setup.run_id)
        if rank == 0 and setup.run_id and setup.tracking_uri
        else None
    )
    n_params = sum(p.numel() for p in unwrap(model).parameters())
    mconf = unwrap(model).config
    layers = getattr(mconf, "num_hidden_layers", 0)
    hidden = getattr(mconf, "hidden_size", 0)
    per_token = flops.flops_per_token(n_params, layers, hidden, hp.max_seq_length, lora=is_lora)
    peak = (
        flops.gpu_peak_flops(torch.cuda.get_device_name(device)) if device.type == "cuda" else None
    )
    gpus = world * cfg.resources.gpus_per_worker
    if logger is not None:
        logger.params(
            _params(
                cfg,
                {
                    "accumulationSteps": accumulation,
                    "worldSize": world,
                    "totalSteps": total,
                    "stepsPerEpoch": steps_per_epoch,
                    "packedSequences": len(train),
                    "rows": train.stats.rows,
                    "rowsTruncated": train.stats.truncated,
                    "rowsDropped": train.stats.dropped,
                    "paramDtype": str(dtype).removeprefix("torch."),
                    "torchCompile": setup.compile,
                    "speedups": speedups.describe(),
                    "attention": attention,
                    "gradientCheckpointing": setup.gradient_checkpointing,
                    "chatTemplateFallback": fallback_template,
                    "trainableParams": sum(p.numel() for p in params),
                    "totalParams": n_params,
                    "flopsPerToken": per_token,
                },
            )
        )
        logger.tags(_system_tags(worker) | setup.extra_tags)
        if start_step:
            logger.tags({"sovai.resumed_from_step": str(start_step)})
    if rank == 0 and start_step:
        emit(f"sovereign_training: resumed from the checkpoint at step {start_step}")

    if speedups.compile:
        compile_blocks(model)
    train_model: Any = CausalLMLoss(model, compile_head=speedups.compile)
    if world > 1:
        ids = [device.index] if device.type == "cuda" else None
        train_model = torch.nn.parallel.DistributedDataParallel(train_model, device_ids=ids)
    train_model.train()

    tokens = int(counters["tokens"])
    seconds = float(counters["seconds"])
    attempt_start = time.perf_counter()
    eval_loss: float | None = None
    train_loss = float("nan")
    for step in range(start_step, total):
        t0 = time.perf_counter()
        plan = plan_step(
            step,
            num_blocks=len(train),
            batch_size=hp.batch_size,
            micro_batch_size=hp.micro_batch_size,
            rank=rank,
            world_size=world,
            seed=hp.seed,
        )
        # Seed per (step, rank): dropout masks after a resume match an uninterrupted run.
        torch.manual_seed(hp.seed * 1_000_003 + step * 4099 + rank)
        global_labels = _label_count(train, plan.global_blocks)
        # DDP averages gradients over workers, so each worker divides its token-loss sum by
        # (global label tokens / workers): the update is the mean over the global batch.
        divisor = torch.tensor(max(global_labels, 1) / world, device=device)
        loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        for i, micro in enumerate(plan.micro_batches):
            last = i == len(plan.micro_batches) - 1
            sync = contextlib.nullcontext() if last or world == 1 else train_model.no_sync()
            with sync:
                with adapter_precision(device, dtype, lora=autocast_lora):
                    loss = train_model(**_batch(train, micro, device), num_items_in_batch=divisor)
                loss.backward()
            loss_sum += loss.detach().double() * divisor
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        train_loss = float(_all_reduce(loss_sum) / max(global_labels, 1))
        step_tokens = int(train.real_tokens[torch.tensor(plan.global_blocks)].sum())
        done = step + 1
        step_seconds = time.perf_counter() - t0
        tokens += step_tokens
        seconds += step_seconds
        at_checkpoint = done % cfg.checkpointing.every_steps == 0
        eval_loss = None
        if val is not None and (at_checkpoint or done == total):
            with adapter_precision(device, dtype, lora=autocast_lora):  # as the training loss
                eval_loss = evaluate(unwrap(model), val, worker, hp.micro_batch_size)
        if rank == 0:
            tps = step_tokens / step_seconds
            rate = (time.perf_counter() - attempt_start) / (done - start_step)
            emit(
                progress_line(
                    {
                        "step": done,
                        "totalSteps": total,
                        "epoch": round(done / steps_per_epoch, 4),
                        "trainLoss": round(train_loss, 6),
                        "evalLoss": None if eval_loss is None else round(eval_loss, 6),
                        "tokensPerSecond": round(tps, 1),
                        "estimatedRemainingSeconds": int(rate * (total - done)),
                        "hyperparameters": chosen,
                    }
                )
            )
            if logger is not None:
                mfu = flops.mfu(
                    hp.batch_size * hp.max_seq_length / step_seconds, per_token, peak, gpus
                )
                logger.metrics(
                    done,
                    {
                        "train_loss": train_loss,
                        "eval_loss": eval_loss,
                        "learning_rate": float(scheduler.get_last_lr()[0]),
                        "tokens_per_second": tps,
                        "step_seconds": step_seconds,
                        "tokens_trained": float(tokens),
                        "mfu": mfu,
                    },
                )
        if at_checkpoint and done < total:
            state = {
                "step": done,
                "tokens": tokens,
                "seconds": seconds,
                "nodes": nodes,
                "wallSeconds": earlier_wall + time.time() - driver_start,
                "earlierWallSeconds": earlier_wall,
                "driverStartedAt": driver_start,
            }
            ckpt_dir = None
            if rank == 0:
                ckpt_dir = Path(tempfile.mkdtemp(dir=setup.work_dir, prefix="ckpt-"))
                save_state(ckpt_dir, unwrap(model), optimizer, scheduler, state)
            worker.report({"step": done, "trainLoss": train_loss, "final": False}, ckpt_dir)
            if ckpt_dir is not None:
                shutil.rmtree(ckpt_dir, ignore_errors=True)
        _maybe_crash(setup, worker, done)

    result: dict[str, Any] = {}
    if rank == 0:
        summary = {
            "steps": total,
            "tokensTrained": tokens,
            "trainLoss": train_loss,
            "evalLoss": eval_loss,
        }
        out = Path(tempfile.mkdtemp(dir=setup.work_dir, prefix="final-"))
        folder, adapter, kind = _save_final(cfg, model, tokenizer, out)
        # The wall time ends here: the card and the tags carry it, so the upload and the
        # registration after them are not counted.
        base_flops, base_flops_source = accounting.base_training_flops(
            cfg.base_model.training_flops, base_path
        )
        compute = accounting.account(
            wall_seconds=earlier_wall + time.time() - driver_start,
            workers=world,
            gpus_per_worker=cfg.resources.gpus_per_worker,
            gpu_name=torch.cuda.get_device_name(device) if device.type == "cuda" else None,
            cpu_threads_per_worker=torch.get_num_threads(),
            tokens=tokens,
            params=n_params,
            layers=layers,
            hidden=hidden,
            seq=hp.max_seq_length,
            lora=is_lora,
            pue=cfg.energy.pue,
            base_flops=base_flops,
            base_flops_source=base_flops_source,
        )
        gpu_hours = float(compute["gpuHours"])
        data = [
            data_entry(
                "training",
                cfg.dataset.training_uri,
                setup.dataset_sha256["training"],
                cfg.dataset.format.value,
                train,
            )
        ]
        if val is not None:
            data.append(
                data_entry(
                    "validation",
                    cfg.dataset.validation_uri,
                    setup.dataset_sha256.get("validation", ""),
                    cfg.dataset.format.value,
                    val,
                )
            )
        card = render_card(
            cfg,
            base_revision=base_revision,
            nodes=nodes,
            metrics=summary,
            run_id=setup.run_id or "",
            artifact_kind=kind,
            data=data,
            compute=compute,
        )
        (folder / "README.md").write_text(card, encoding="utf-8")
        tags = lineage_tags(
            cfg, setup.dataset_sha256, nodes, tokens, gpu_hours, kind, base_revision=base_revision
        ) | accounting.compute_tags(compute)
        # MLflow's pyfunc flavor (mlflow.pyfunc.load_model on models:/NAME/VERSION), written
        # before the digest so that the digest covers every file of the registered folder.
        add_pyfunc_flavor(folder, tags)
        digest = model_digest(folder)
        if cfg.output.uri:
            _copy_output(folder, cfg.output.uri)
        version = ""
        name = cfg.tracking.registered_model_name
        if logger is not None:
            logger.artifacts(folder, "model")
            if adapter is not None and adapter != folder:
                logger.artifacts(adapter, "adapter")
            version = logger.register(
                name,
                "model",
                {**tags, "sovai.model_digest": digest},
                f"{kind} from FineTuneJob {cfg.job.namespace}/{cfg.job.name}",
            )
            logger.tags({"sovai.model_version": version, "sovai.model_digest": digest})
        result = {
            "runId": setup.run_id,
            "experimentId": setup.experiment_id,
            "modelName": name if version else None,
            "modelVersion": version or None,
            "modelUri": f"models:/{name}/{version}" if version else None,
            "outputUri": redact_uri(cfg.output.uri) or None,
            "tokensTrained": tokens,
            "gpuHours": gpu_hours,
            "nodes": nodes,
            "modelDigest": digest,
            "localModelDir": str(folder),
            "resumedFromStep": start_step,
            "steps": total,
            "trainSeconds": round(seconds, 3),
            "compute": compute,
            "inputs": result_inputs(cfg, setup.dataset_sha256, base_revision=base_revision),
            "hyperparameters": chosen,
        }
    # The result travels as a small final checkpoint: Ray Train hands the driver the metrics of
    # the latest checkpoint, and a driver restarted after the end finds the result instead of
    # training or registering again.
    final_dir = None
    if rank == 0:
        final_dir = Path(tempfile.mkdtemp(dir=setup.work_dir, prefix="result-"))
        (final_dir / RESULT_FILE).write_text(json.dumps(result), encoding="utf-8")
    worker.report({"step": total, "final": True, "result": result}, final_dir)
    if final_dir is not None:
        shutil.rmtree(final_dir, ignore_errors=True)
    return result
