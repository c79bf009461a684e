"""Conformance with the reference implementation (sstzal/DiffTalk on CompVis/latent-diffusion).

The golden fixture holds inputs and outputs of the reference for the tiny config with deterministic weights.
Each stage is checked twice: fed with the golden inputs *of that stage* (isolates the stage), and chained from
the raw inputs through our own earlier stages (what a user gets).
"""

from __future__ import annotations

import pytest
import torch
from golden import load_golden

from talkingface.model.image_driven_talkingface.DiffTalk import DiffTalkConditions, DiffTalkModel

TOL = 1e-4


def rel_err(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return float((actual.double() - expected.double()).abs().max() / expected.double().abs().max())


def nchw(x: torch.Tensor) -> torch.Tensor:
    return x.permute(0, 3, 1, 2).contiguous()


@pytest.fixture(scope="module")
def golden() -> dict:
    return load_golden()


@pytest.fixture(scope="module")
def chained(tiny_model: DiffTalkModel, golden: dict) -> dict[str, torch.Tensor]:
    """Every output computed from the raw inputs alone, through the public API."""
    i, steps, eta = golden["inputs"], golden["ddim_steps"], golden["ddim_eta"]
    out: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        out["z"] = tiny_model.encode_first_stage(nchw(i["image"]))
        cond = tiny_model.encode_conditions(
            i["audio_smooth"], i["landmarks"], nchw(i["reference_img"]), nchw(i["image_mask"])
        )
        out.update(c_ref=cond.reference, c_mask=cond.masked, c_audio=cond.audio, c_ldm=cond.landmarks)
        out["x_noisy"] = tiny_model.q_sample(out["z"], i["t"], i["noise"])
        out["eps"] = tiny_model.predict_eps(out["x_noisy"], i["t"], cond)
        with tiny_model.ema_scope():
            out["eps_ema"] = tiny_model.predict_eps(out["x_noisy"], i["t"], cond)
        out["loss"], _ = tiny_model.training_loss(out["z"], cond, i["t"], i["noise"])
        out["x_rec"] = tiny_model.decode_first_stage(out["z"])
        with tiny_model.ema_scope():
            out["ddim_latent"] = tiny_model.sample(cond, tiny_model.sampling_plan("ddim", steps, eta), x_T=i["x_T"])
        out["ddim_image"] = tiny_model.decode_first_stage(out["ddim_latent"])
    return out


def golden_conditions(o: dict) -> DiffTalkConditions:
    return DiffTalkConditions(audio=o["c_audio"], landmarks=o["c_ldm"], reference=o["c_ref"], masked=o["c_mask"])


def test_golden_fixture_has_every_output(golden: dict) -> None:
    expected = {"z", "c_ref", "c_mask", "c_audio", "c_ldm", "x_noisy", "eps", "eps_ema", "loss", "x_rec"}
    assert expected | {"ddim_latent", "ddim_image"} == set(golden["outputs"])


@pytest.mark.slow
def test_stagewise_outputs_match_reference(tiny_model: DiffTalkModel, golden: dict) -> None:
    """Each output from the golden inputs of its own stage: all within 1e-4."""
    i, o = golden["inputs"], golden["outputs"]
    cond = golden_conditions(o)
    got: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        got["z"] = tiny_model.encode_first_stage(nchw(i["image"]))
        got["c_ref"] = tiny_model.encode_first_stage(nchw(i["reference_img"]))
        got["c_mask"] = tiny_model.encode_first_stage(nchw(i["image_mask"]))
        got["c_audio"] = tiny_model.encode_audio(i["audio_smooth"])
        got["c_ldm"] = tiny_model.encode_landmarks(i["landmarks"])
        got["x_noisy"] = tiny_model.q_sample(o["z"], i["t"], i["noise"])
        got["eps"] = tiny_model.predict_eps(o["x_noisy"], i["t"], cond)
        with tiny_model.ema_scope():
            got["eps_ema"] = tiny_model.predict_eps(o["x_noisy"], i["t"], cond)
            plan = tiny_model.sampling_plan("ddim", golden["ddim_steps"], golden["ddim_eta"])
            got["ddim_latent"] = tiny_model.sample(cond, plan, x_T=i["x_T"])
        got["loss"], _ = tiny_model.training_loss(o["z"], cond, i["t"], i["noise"])
        got["x_rec"] = tiny_model.decode_first_stage(o["z"])
        got["ddim_image"] = tiny_model.decode_first_stage(o["ddim_latent"])
    errors = {k: rel_err(got[k], o[k]) for k in o}
    assert all(e < TOL for e in errors.values()), errors


@pytest.mark.slow
def test_chained_outputs_match_reference(chained: dict, golden: dict) -> None:
    """End to end from the raw inputs. The reference's own first-stage encodings are 1.4e-5 (relative) away from
    a float64 evaluation of the same network (ours in float32 is much closer to float64), and the UNet with
    random weights amplifies that input difference about 7x in ``eps`` (only there: 1.01e-4 measured on CPU),
    so ``eps`` gets 2e-4; every other output is held to 1e-4."""
    o = golden["outputs"]
    errors = {k: rel_err(chained[k], o[k]) for k in o}
    limits = {k: (2e-4 if k == "eps" else TOL) for k in o}
    assert all(errors[k] < limits[k] for k in o), errors


@pytest.mark.slow
def test_ema_weights_differ_from_raw(golden: dict, chained: dict) -> None:
    """Guards the EMA path: eps and eps_ema must differ, so using the wrong weights cannot pass."""
    assert rel_err(chained["eps_ema"], golden["outputs"]["eps"]) > 1e-2


def test_condition_order_is_defined_once(tiny_model: DiffTalkModel, golden: dict) -> None:
    """Swapping masked and reference latents (or audio and landmarks) changes the prediction."""
    o, i = golden["outputs"], golden["inputs"]
    cond = golden_conditions(o)
    swapped = DiffTalkConditions(
        audio=cond.landmarks, landmarks=cond.audio, reference=cond.masked, masked=cond.reference
    )
    with torch.no_grad():
        good = tiny_model.predict_eps(o["x_noisy"], i["t"], cond)
        bad = tiny_model.predict_eps(o["x_noisy"], i["t"], swapped)
    assert rel_err(good, o["eps"]) < TOL
    assert rel_err(bad, o["eps"]) > 1e-2
    assert torch.equal(cond.context()[:, 0, :64], cond.audio)
    assert torch.equal(cond.concat(o["x_noisy"])[:, 3:6], cond.masked)
