"""The state-dict manifest (key, shape, dtype) of a latent-diffusion ``VQModel`` first stage, from its published config.

Written from the construction rules of the published code, not from this project's module (a test of our
autoencoder against it would otherwise be circular):

* ``ldm.models.autoencoder.VQModel``: ``encoder``, ``decoder``, ``loss`` (not in our state dict: perceptual loss and
  discriminator, dropped on load), ``quantize`` (taming ``VectorQuantizer2``: ``embedding`` of ``n_embed x
  embed_dim``, no ``used`` buffer without ``remap``), ``quant_conv`` (``z_channels -> embed_dim``, 1x1),
  ``post_quant_conv`` (``embed_dim -> z_channels``, 1x1), registered in that order.
* ``ldm.modules.diffusionmodules.model.Encoder``: ``conv_in``; per level ``i`` (``in_ch_mult = (1,) + ch_mult``)
  ``num_res_blocks`` ``ResnetBlock(ch * in_ch_mult[i] -> ch * ch_mult[i])``, each followed by an ``AttnBlock``
  when the level's side (``resolution`` halved per level) is in ``attn_resolutions``, and a ``downsample.conv``
  except on the last level; ``mid.block_1``, ``mid.attn_1``, ``mid.block_2``; ``norm_out``; ``conv_out``
  (``z_channels`` out, ``double_z`` false).
* ``Decoder``: ``conv_in``, the same ``mid``; levels from the last to the first, stored as ``up.<level>``
  (``insert(0)``), ``num_res_blocks + 1`` blocks, attention by the same rule (sides doubling from
  ``resolution / 2**(levels-1)``), ``upsample.conv`` except on level 0; ``norm_out``; ``conv_out``.
* ``ResnetBlock``: ``norm1``, ``conv1`` (3x3), ``norm2``, ``conv2`` (3x3), ``nin_shortcut`` (1x1) when the channel
  count changes; no ``temb_proj`` (``temb_ch`` is 0 in the autoencoder). ``AttnBlock``: ``norm``, ``q``, ``k``,
  ``v``, ``proj_out`` (1x1). Every norm is a GroupNorm with an affine weight and bias.

It reproduces the measured vq-f4 manifest (``fixtures/vq_f4_first_stage_state_dict.tsv``, taken from the reference
implementation) exactly; ``fixtures/vq_f8_first_stage_state_dict.tsv`` is its output for the published vq-f8
config (``CompVis/latent-diffusion`` ``models/first_stage_models/vq-f8/config.yaml``):

    python tests/vq_manifest.py vq-f8 > tests/fixtures/vq_f8_first_stage_state_dict.tsv
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

#: ``ddconfig`` + ``embed_dim``/``n_embed`` of the published latent-diffusion VQ first stages (their config.yaml).
PUBLISHED = {
    "vq-f4": {
        "embed_dim": 3,
        "n_embed": 8192,
        "z_channels": 3,
        "resolution": 256,
        "in_channels": 3,
        "out_ch": 3,
        "ch": 128,
        "ch_mult": (1, 2, 4),
        "num_res_blocks": 2,
        "attn_resolutions": (),
    },
    "vq-f8": {
        "embed_dim": 4,
        "n_embed": 16384,
        "z_channels": 4,
        "resolution": 256,
        "in_channels": 3,
        "out_ch": 3,
        "ch": 128,
        "ch_mult": (1, 2, 2, 4),
        "num_res_blocks": 2,
        "attn_resolutions": (32,),
    },
}

Shape = tuple[int, ...]


def _conv(prefix: str, c_out: int, c_in: int, k: int) -> list[tuple[str, Shape]]:
    return [(f"{prefix}.weight", (c_out, c_in, k, k)), (f"{prefix}.bias", (c_out,))]


def _norm(prefix: str, c: int) -> list[tuple[str, Shape]]:
    return [(f"{prefix}.weight", (c,)), (f"{prefix}.bias", (c,))]


def _resnet(prefix: str, c_in: int, c_out: int) -> list[tuple[str, Shape]]:
    rows = _norm(f"{prefix}.norm1", c_in) + _conv(f"{prefix}.conv1", c_out, c_in, 3)
    rows += _norm(f"{prefix}.norm2", c_out) + _conv(f"{prefix}.conv2", c_out, c_out, 3)
    if c_in != c_out:
        rows += _conv(f"{prefix}.nin_shortcut", c_out, c_in, 1)
    return rows


def _attn(prefix: str, c: int) -> list[tuple[str, Shape]]:
    rows = _norm(f"{prefix}.norm", c)
    for name in ("q", "k", "v", "proj_out"):
        rows += _conv(f"{prefix}.{name}", c, c, 1)
    return rows


def _mid(prefix: str, c: int) -> list[tuple[str, Shape]]:
    return _resnet(f"{prefix}.block_1", c, c) + _attn(f"{prefix}.attn_1", c) + _resnet(f"{prefix}.block_2", c, c)


def vq_manifest(
    embed_dim: int,
    n_embed: int,
    z_channels: int,
    resolution: int,
    in_channels: int,
    out_ch: int,
    ch: int,
    ch_mult: Sequence[int],
    num_res_blocks: int,
    attn_resolutions: Sequence[int],
) -> list[tuple[str, Shape]]:
    """Every ``(key, shape)`` of the first stage's state dict, in registration order (all float32)."""
    levels = len(ch_mult)
    in_ch_mult = (1, *ch_mult)
    rows = _conv("encoder.conv_in", ch, in_channels, 3)
    side = resolution
    for i in range(levels):
        block_in, block_out = ch * in_ch_mult[i], ch * ch_mult[i]
        blocks, attns = [], []
        for j in range(num_res_blocks):
            blocks += _resnet(f"encoder.down.{i}.block.{j}", block_in, block_out)
            block_in = block_out
            if side in attn_resolutions:
                attns += _attn(f"encoder.down.{i}.attn.{j}", block_in)
        rows += blocks + attns
        if i != levels - 1:
            rows += _conv(f"encoder.down.{i}.downsample.conv", block_in, block_in, 3)
            side //= 2
    rows += _mid("encoder.mid", block_in)
    rows += _norm("encoder.norm_out", block_in) + _conv("encoder.conv_out", z_channels, block_in, 3)

    block_in = ch * ch_mult[-1]
    side = resolution // 2 ** (levels - 1)
    rows += _conv("decoder.conv_in", block_in, z_channels, 3) + _mid("decoder.mid", block_in)
    ups: list[list[tuple[str, Shape]]] = []
    for i in reversed(range(levels)):
        block_out = ch * ch_mult[i]
        blocks, attns = [], []
        for j in range(num_res_blocks + 1):
            blocks += _resnet(f"decoder.up.{i}.block.{j}", block_in, block_out)
            block_in = block_out
            if side in attn_resolutions:
                attns += _attn(f"decoder.up.{i}.attn.{j}", block_in)
        level = blocks + attns
        if i != 0:
            level += _conv(f"decoder.up.{i}.upsample.conv", block_in, block_in, 3)
            side *= 2
        ups.insert(0, level)
    rows += [row for level in ups for row in level]
    rows += _norm("decoder.norm_out", block_in) + _conv("decoder.conv_out", out_ch, block_in, 3)

    rows += [("quantize.embedding.weight", (n_embed, embed_dim))]
    rows += _conv("quant_conv", embed_dim, z_channels, 1) + _conv("post_quant_conv", z_channels, embed_dim, 1)
    return rows


def manifest_tsv(rows: list[tuple[str, Shape]]) -> str:
    """The manifest in the fixtures' TSV form: ``key<TAB>shape (AxBxC)<TAB>dtype``, a header line first."""
    lines = ["key\tshape\tdtype"] + [f"{key}\t{'x'.join(map(str, shape))}\tfloat32" for key, shape in rows]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.stdout.write(manifest_tsv(vq_manifest(**PUBLISHED[sys.argv[1] if len(sys.argv) > 1 else "vq-f8"])))
