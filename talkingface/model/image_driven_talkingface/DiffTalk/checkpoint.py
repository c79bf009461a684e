"""Loading and exporting DiffTalk weights: strict, shape-checked, ``weights_only`` unless the user opts in."""

from __future__ import annotations

import logging
import pickle
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from talkingface.errors import TalkingFaceError
from talkingface.paths import atomic_output

from .config import CONFIG_CKPT_KEY

log = logging.getLogger(__name__)

FIRST_STAGE_PREFIX = "first_stage_model."
#: Plain top-level entries of our trainer's checkpoints (and metadata of safetensors exports): the whole config as
#: a dict, and the audio feature kind the model was trained on.
IGNORED_FIRST_STAGE_PREFIXES = ("loss.",)  # perceptual loss + discriminator of the released VQ checkpoint
_MAX_LISTED = 5  # keys shown per list in a mismatch error (with the counts): a summary, not kilobytes


class CheckpointError(TalkingFaceError, RuntimeError):
    """A checkpoint is missing, unreadable, or does not match the model."""


#: How a torch checkpoint begins: a zip archive (``torch.save`` since 1.6), or a pickle (``\x80`` and protocol 2-5).
_ZIP_MAGIC = b"PK\x03\x04"


def torch_file_problem(path: str | Path) -> str | None:
    """None when the file ``path`` begins as a torch checkpoint does (a zip archive, or an older pickled one), else
    what is wrong: random bytes, text or another format are "not a checkpoint", never "Python objects"."""
    with open(path, "rb") as f:
        head = f.read(len(_ZIP_MAGIC))
    if head.startswith(_ZIP_MAGIC) or (len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5):
        return None
    if not head:
        return "is empty: not a checkpoint"
    return "is not a checkpoint: neither a torch file (a zip archive or a pickle) nor safetensors"


def unsupported_global(err: BaseException) -> str | None:
    """The Python object a ``weights_only`` load refused (``module.Name``), or None when the unpickler failed for
    another reason (damaged bytes)."""
    found = re.search(r"Unsupported global: GLOBAL (\S+)", str(err))
    return found.group(1) if found else None


def check_feature_kind(stored: object, configured: str | None, source: str = "the checkpoint") -> None:
    """Raise ``CheckpointError`` when a checkpoint's recorded audio feature kind differs from the config's."""
    if isinstance(stored, str) and configured is not None and stored != configured:
        raise CheckpointError(f"{source} was trained on '{stored}' audio features but the config says '{configured}'")


def load_checkpoint_file(path: str | Path, trust_checkpoint: bool = False) -> dict[str, Any]:
    """Read a ``.ckpt``/``.pt``/``.pth`` (torch) or ``.safetensors`` file into a dict.

    Torch files are read with ``weights_only=True``; a file that needs full unpickling is refused unless
    ``trust_checkpoint=True`` (which can run arbitrary code from the file: only for files you trust).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(path, "checkpoint not found")
    if path.suffix == ".safetensors":
        return _load_safetensors(path)
    problem = torch_file_problem(path)
    if problem is not None:
        raise CheckpointError(path, problem, hint="give a trainer .ckpt or a .safetensors export")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=not trust_checkpoint)
    except pickle.UnpicklingError as err:
        needs = unsupported_global(err)
        if needs is None:  # the unpickler stumbled on the bytes themselves
            raise CheckpointError(path, f"damaged: cannot be unpickled ({str(err).splitlines()[-1].strip()})") from None
        raise CheckpointError(
            path,
            f"holds Python objects beyond plain tensors and containers (it needs {needs}), so it was not loaded with "
            "weights_only=True",
            hint="if you trust this file (it can run code when unpickled), pass --trust-checkpoint, or re-export it "
            "to safetensors",
        ) from None
    except Exception as err:  # noqa: BLE001 - any other failure: name the file
        raise CheckpointError(path, f"could not read the checkpoint ({err})") from err
    if not isinstance(obj, Mapping):
        raise CheckpointError(path, f"does not hold a dict of weights (found {type(obj).__name__})")
    return dict(obj)


def _load_safetensors(path: Path) -> dict[str, Any]:
    """Tensors of a safetensors file, plus its JSON metadata entries (``difftalk_config``, ``audio_feature_kind``)
    as top-level values, like the plain entries of a trainer checkpoint."""
    import json

    from safetensors import safe_open
    from safetensors.torch import load_file

    try:
        out: dict[str, Any] = dict(load_file(str(path)))
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
    except Exception as err:  # noqa: BLE001 - name the file
        raise CheckpointError(path, f"could not read the safetensors file ({err})") from err
    for key, value in metadata.items():
        if key in out:
            continue
        try:
            out[key] = json.loads(value) if key == CONFIG_CKPT_KEY else value
        except json.JSONDecodeError:
            raise CheckpointError(f"{path}: metadata entry {key!r} is not valid JSON") from None
    return out


def extract_state_dict(checkpoint: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """The ``state_dict`` of a Lightning checkpoint, or the mapping itself when it is already one."""
    sd = checkpoint.get("state_dict", checkpoint)
    if not isinstance(sd, Mapping):
        raise CheckpointError("checkpoint 'state_dict' entry is not a mapping")
    return {k.replace("_orig_mod.", ""): v for k, v in sd.items() if isinstance(v, torch.Tensor)}


def _listing(title: str, keys: list[str]) -> str:
    shown = "\n    ".join(keys[:_MAX_LISTED])
    more = f"\n    ... and {len(keys) - _MAX_LISTED} more" if len(keys) > _MAX_LISTED else ""
    return f"  {title} ({len(keys)}):\n    {shown}{more}"


def unusable_weights(expected: Mapping[str, torch.Tensor], state_dict: Mapping[str, torch.Tensor]) -> list[str]:
    """One line per entry of ``state_dict`` that the model (``expected``, its state dict) holds as floating point but
    the checkpoint gives as integers (or booleans), or with NaN or infinite values; in the checkpoint's order.

    Entries the model itself keeps as integers (the EMA's ``num_updates``, batch norm's ``num_batches_tracked``) are
    not checked. Cost: one sum per floating point tensor (a full scan, the counts, only for a bad one)."""
    problems = []
    for key, value in state_dict.items():
        ref = expected.get(key)
        if ref is None or not ref.is_floating_point():
            continue
        if not value.is_floating_point():
            what = "" if value.dtype == torch.bool or value.dtype.is_complex else "integer "
            dtype = str(value.dtype).removeprefix("torch.")
            problems.append(f"{key}: {what}dtype {dtype} where floating point weights are expected")
        elif not bool(torch.isfinite(value.sum())) and not bool(torch.isfinite(value).all()):
            # the sum first: NaN and inf carry into it, and it is many times faster than isfinite() on a CPU; a
            # finite tensor whose sum overflows (fp16) is then cleared by the exact check
            nan = int(torch.isnan(value).sum())
            inf = int(torch.isinf(value).sum())
            counts = [f"{nan} NaN value{'s' * (nan != 1)}"] * bool(nan)
            counts += [f"{inf} infinite value{'s' * (inf != 1)}"] * bool(inf)
            problems.append(f"{key}: {' and '.join(counts)}")
    return problems


def check_state_dict(module: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str = "checkpoint") -> None:
    """Raise ``CheckpointError`` listing missing, unexpected and mis-shaped keys, then (when the keys match) the
    weights that are not usable numbers (:func:`unusable_weights`); silent when all is well."""
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    mismatched = sorted(
        f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in set(expected) & set(state_dict)
        if tuple(state_dict[k].shape) != tuple(expected[k].shape)
    )
    if missing or unexpected or mismatched:
        parts = [f"{source} does not match the model ({type(module).__name__}):"]
        if missing:
            parts.append(_listing("missing keys", missing))
        if unexpected:
            parts.append(_listing("unexpected keys", unexpected))
        if mismatched:
            parts.append(_listing("shape mismatches", mismatched))
        parts.append("Check that the config matches the one the checkpoint was trained with.")
        raise CheckpointError("\n".join(parts))
    bad = unusable_weights(expected, state_dict)
    if bad:
        shown = "; ".join(bad[:_MAX_LISTED]) + (
            f"; ... and {len(bad) - _MAX_LISTED} more" if len(bad) > _MAX_LISTED else ""
        )
        raise CheckpointError(
            f"{source}: refused: {len(bad)} weight tensor(s) do not hold finite floating point values ({shown}); "
            "the file is damaged, wrongly converted, or from a training that diverged: use another checkpoint"
        )


def load_state_dict_strict(
    module: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str = "checkpoint"
) -> None:
    """Shape-checked strict load; dtypes are converted to the module's."""
    check_state_dict(module, state_dict, source)
    module.load_state_dict(state_dict, strict=True)


def first_stage_state_dict(checkpoint: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """VQ weights from a released first-stage file (keys without prefix, ``loss.*`` dropped) or from a DiffTalk
    checkpoint (keys under ``first_stage_model.``)."""
    sd = extract_state_dict(checkpoint)
    if any(k.startswith(FIRST_STAGE_PREFIX) for k in sd):
        return {k[len(FIRST_STAGE_PREFIX) :]: v for k, v in sd.items() if k.startswith(FIRST_STAGE_PREFIX)}
    return {k: v for k, v in sd.items() if not k.startswith(IGNORED_FIRST_STAGE_PREFIXES)}


def load_first_stage(model: nn.Module, path: str | Path, trust_checkpoint: bool = False) -> None:
    """Initialise ``model.first_stage_model`` from a VQ checkpoint (e.g. ``models/model.ckpt``)."""
    sd = first_stage_state_dict(load_checkpoint_file(path, trust_checkpoint))
    load_state_dict_strict(model.first_stage_model, sd, source=f"first-stage checkpoint {path}")
    log.info("loaded first stage from %s", path)


def has_first_stage(state_dict: Mapping[str, torch.Tensor]) -> bool:
    return any(k.startswith(FIRST_STAGE_PREFIX) for k in state_dict)


def load_difftalk_checkpoint(
    model: nn.Module,
    path: str | Path,
    trust_checkpoint: bool = False,
    first_stage_ckpt: str | Path | None = None,
) -> dict[str, Any]:
    """Strictly load a DiffTalk checkpoint (reference format, our trainer's, or a safetensors export).

    A checkpoint without ``first_stage_model.*`` keys (a slim export) needs ``first_stage_ckpt``.
    Returns the raw checkpoint dict (for its metadata).
    """
    ckpt = load_checkpoint_file(path, trust_checkpoint)
    sd = extract_state_dict(ckpt)
    if not has_first_stage(sd):
        # a slim export (EMA UNet + encoders): complete it from the VQ file and the config
        if first_stage_ckpt is None:
            raise CheckpointError(
                path,
                "holds no first-stage weights (first_stage_model.*)",
                hint="give the VQ checkpoint too (--first-stage-ckpt, default models/model.ckpt)",
            )
        load_first_stage(model, first_stage_ckpt, trust_checkpoint)
        sd.update({FIRST_STAGE_PREFIX + k: v for k, v in model.first_stage_model.state_dict().items()})
        if getattr(model, "use_ema", False) and not any(k.startswith("model_ema.") for k in sd):
            # the export's UNet weights are the EMA weights: the shadow is the same tensors
            for name, s_name in model.model_ema.m_name2s_name.items():
                if "model." + name in sd:
                    sd["model_ema." + s_name] = sd["model." + name]
            sd.setdefault("model_ema.decay", model.model_ema.decay.clone())
            sd.setdefault("model_ema.num_updates", model.model_ema.num_updates.clone())
        for name, buf in model.named_buffers():
            if "." not in name:  # schedule buffers: recomputed from the config
                sd.setdefault(name, buf)
    load_state_dict_strict(model, sd, source=str(path))
    return ckpt


def export_safetensors(
    model: nn.Module, path: str | Path, slim: bool = True, metadata: Mapping[str, str] | None = None
) -> Path:
    """Write weights to safetensors. ``slim``: EMA UNet + condition encoders only (inference use); the
    first stage then comes from ``models/model.ckpt``. Otherwise the full state dict."""
    from safetensors.torch import save_file

    path = Path(path)
    if slim:
        sd: dict[str, torch.Tensor] = {}
        ema = getattr(model, "model_ema", None) if getattr(model, "use_ema", False) else None
        ema_buffers = dict(ema.named_buffers()) if ema is not None else {}
        for name, p in model.model.named_parameters():
            sd["model." + name] = ema_buffers[ema.m_name2s_name[name]] if ema is not None else p
        for prefix in ("cond_stage_model_for_audio", "cond_stage_model_for_audio_smooth", "cond_stage_model_for_ldm"):
            for name, t in getattr(model, prefix).state_dict().items():
                sd[f"{prefix}.{name}"] = t
    else:
        sd = dict(model.state_dict())
    sd = {k: v.detach().contiguous().cpu() for k, v in sd.items()}
    with atomic_output(path) as tmp:  # renamed when complete; permissions as any new file's (not safetensors' 0600)
        save_file(sd, str(tmp), metadata=dict(metadata or {}))
    return path
