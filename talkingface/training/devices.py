"""``--gpus 0,1,`` (the reference's syntax) and friends -> Lightning accelerator / devices / strategy."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from talkingface.errors import TalkingFaceError


class DeviceSpecError(TalkingFaceError, ValueError):
    """A ``--gpus`` / ``--devices`` value cannot be understood."""


@dataclass(frozen=True)
class DeviceSpec:
    accelerator: str  # "gpu" or "cpu"
    devices: list[int] | int  # GPU indices, or a number of CPU processes
    num_nodes: int = 1
    strategy_name: str = "auto"  # "ddp", "ddp_spawn" or "auto"

    @property
    def processes_per_node(self) -> int:
        return len(self.devices) if isinstance(self.devices, list) else int(self.devices)

    @property
    def world_size(self) -> int:
        return self.processes_per_node * self.num_nodes


def parse_gpus(gpus: str) -> list[int]:
    """``"0,1,2,"`` -> ``[0, 1, 2]``; ``"0,"`` -> ``[0]``. A trailing comma is allowed, as in the reference."""
    parts = [p.strip() for p in str(gpus).split(",") if p.strip()]
    if not parts:
        raise DeviceSpecError(f"--gpus: {gpus!r}: give GPU indices like '0,' or '0,1,2,3,'")
    try:
        ids = [int(p) for p in parts]
    except ValueError:
        raise DeviceSpecError(f"--gpus: {gpus!r}: GPU indices must be integers, e.g. '0,1,'") from None
    if len(set(ids)) != len(ids) or min(ids) < 0:
        raise DeviceSpecError(f"--gpus: {gpus!r}: indices must be distinct and >= 0")
    return ids


def device_spec(gpus: str | None, cpu_devices: int = 1, num_nodes: int = 1, strategy: str | None = None) -> DeviceSpec:
    """GPUs when ``gpus`` is given, else ``cpu_devices`` CPU processes. DDP whenever there is more than one process."""
    if num_nodes < 1 or cpu_devices < 1:
        raise DeviceSpecError("--num-nodes / --devices: must be >= 1")
    if gpus:
        spec = DeviceSpec("gpu", parse_gpus(gpus), num_nodes)
    else:
        spec = DeviceSpec("cpu", cpu_devices, num_nodes)
    name = strategy or ("ddp" if spec.world_size > 1 else "auto")
    if name not in ("ddp", "ddp_spawn", "auto"):
        raise DeviceSpecError(f"--strategy: {name!r}: use ddp, ddp_spawn or auto")
    return DeviceSpec(spec.accelerator, spec.devices, num_nodes, name)


def build_strategy(spec: DeviceSpec, timeout_s: int, find_unused_parameters: bool = False) -> object:
    """A Lightning strategy: DDP (gloo on CPU, NCCL on GPU) with a collective timeout, or ``"auto"``."""
    if spec.strategy_name == "auto":
        return "auto"
    from pytorch_lightning.strategies import DDPStrategy

    return DDPStrategy(
        start_method="spawn" if spec.strategy_name == "ddp_spawn" else "popen",
        timeout=timedelta(seconds=timeout_s),
        find_unused_parameters=find_unused_parameters,
        gradient_as_bucket_view=True,
    )
