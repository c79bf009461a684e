"""Step 8: the synthetic faces span skin tones light to dark in both splits, and the pixel mouth measure reads the
same on every skin tone (dark skin is not an open mouth)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from talkingface.data.constants import NOSE_BOTTOM
from talkingface.synthetic.face import (
    MOUTH_INTERIOR,
    SKIN_TONES,
    darkness_absolute,
    luminance,
    mouth_box,
    mouth_opening_px,
    sample_identity,
    video_mouth_width,
)
from talkingface.synthetic.generate import (
    clip_crops,
    clip_rng,
    clip_skin_tone,
    measure_ceiling_by_tone,
    render_clip,
    video_skin,
)

SIZE = 160


def test_clips_cycle_through_ten_tones_light_to_dark() -> None:
    identities = [sample_identity(clip_rng(0, v), clip_skin_tone(v)) for v in range(1, 11)]
    assert [i.skin_tone for i in identities] == list(range(10))
    lum = np.array([float(luminance(i.skin)) for i in identities])
    # light to dark; Monk tones 2 and 3 have about the same luminance (3 is yellower), hence the small tolerance
    assert (np.diff(lum) < 0.03).all() and lum[0] > 0.85 and lum[-1] < 0.2
    assert np.corrcoef(np.arange(10), lum)[0, 1] < -0.95


def test_held_out_end_of_a_run_covers_light_and_dark() -> None:
    tones = [clip_skin_tone(v) for v in range(1, 65)]
    held_out, train = tones[-8:], tones[:-8]
    assert min(held_out) <= 1 and max(held_out) >= 8
    assert set(train) == set(range(10))


def test_skin_tone_leaves_the_rest_of_the_identity_and_is_deterministic() -> None:
    a = sample_identity(np.random.default_rng(5), 0)
    b = sample_identity(np.random.default_rng(5), 9)
    assert (a.skin_tone, b.skin_tone) == (0, 9) and a.face_width == b.face_width and a.hair == b.hair
    assert sample_identity(np.random.default_rng(5), 9) == b


def test_mouth_interior_is_darker_than_every_face_colour() -> None:
    interior = float(luminance(MOUTH_INTERIOR))
    for tone in range(len(SKIN_TONES)):
        for seed in range(5):
            ident = sample_identity(np.random.default_rng(seed), tone)
            skin = np.array(ident.skin, dtype=float)
            for colour in (skin, 0.7 * skin, 0.85 * skin, np.array(ident.lip, float), 0.75 * np.array(ident.lip)):
                assert float(luminance(colour)) > 2 * interior


def _truth_and_measure(tone: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ground-truth opening, the measure and the former absolute-threshold measure on layout crops of ``tone``."""
    clip = render_clip(clip_rng(3, tone + 1), 3.0, SIZE, skin_tone=tone)
    crops, lms = clip_crops(clip, 128)
    width = video_mouth_width(lms)
    measured = np.array([mouth_opening_px(c, lm[NOSE_BOTTOM], width) for c, lm in zip(crops, lms, strict=True)])
    boxes = [mouth_box(c, lm[NOSE_BOTTOM], width) for c, lm in zip(crops, lms, strict=True)]
    old = np.array([darkness_absolute(b).sum() / width for b in boxes])  # the former mouth_opening_px
    return clip.speech.opening, measured, old


def test_measure_ceiling_per_tone_and_dark_skin_is_not_an_open_mouth() -> None:
    readings = {}
    for tone in (0, 5, 9):  # light, medium, darkest
        truth, measured, old = _truth_and_measure(tone)
        assert np.corrcoef(measured, truth)[0, 1] >= 0.9, f"tone {tone}"
        closed, wide = int(np.argmin(truth)), int(np.argmax(truth))
        assert truth[closed] < 0.05 and truth[wide] > 0.4
        assert measured[closed] < 0.1 * measured[wide], f"tone {tone}: a closed mouth reads as open"
        open_ = truth > 0.3
        readings[tone] = ((measured[open_] / truth[open_]).mean(), old[closed], old[wide])
    # the same units on every skin tone: reading per unit of true opening agrees within a factor 1.5
    slopes = [r[0] for r in readings.values()]
    assert max(slopes) < 1.5 * min(slopes), slopes
    # regression: the former absolute threshold (Y < 0.3) read the closed mouth on the darkest skin as wide open
    _, old_closed_dark, old_wide_dark = readings[9]
    assert old_closed_dark > 0.5 * old_wide_dark
    assert readings[0][1] < 0.1 * readings[0][2]  # ... while it worked on light skin


def test_ceiling_table_by_tone_group() -> None:
    table = measure_ceiling_by_tone(seed=0, seconds=2.0)
    assert set(table) == {"light", "medium", "dark"}
    assert all(r >= 0.9 for r in table.values()), table


def test_layout_records_skin_tone(tmp_path: Path) -> None:
    from talkingface.commands.synthetic import main

    out = tmp_path / "syn"
    argv = ["--out", str(out), "--identities", "2", "--seconds", "0.4", "--seed", "1", "--layout", "--no-videos"]
    assert main([*argv, "--no-progress"]) == 0
    info = [video_skin(out / "dataset", v) for v in (1, 2)]
    assert [i["skin_tone"] for i in info] == [0, 1]
    assert 0.85 < info[0]["skin_luminance"] <= 1.0
