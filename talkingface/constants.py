"""Named constants shared by the model, media, data, the drivers and the commands; this module imports nothing.

Values that are also DiffTalk config fields are the defaults of the config schema
(``talkingface/model/image_driven_talkingface/DiffTalk/config.py`` and ``talkingface/training/config.py`` take them
from here, one source): the audio window shape (``model.conditioning``), the model landmark count, the model image
and latent sides and the reference distance (``data``, ``model.unet``). A config may override those fields; these
names are the defaults.
"""

from __future__ import annotations

#: Video frame rate of every dataset (frames per second).
FPS = 25
#: Audio sample rate fed to every feature backend (Hz).
SAMPLE_RATE = 16_000
#: Rate of the per-feature-frame audio features (Hz): two feature frames per video frame.
FEATURE_RATE_HZ = 50
#: Feature frames per video frame.
FEATURES_PER_FRAME = FEATURE_RATE_HZ // FPS
#: Default feature dimension (DeepSpeech's 29 symbols, or 29 log-mel bands); whisper features have the encoder's
#: width, recorded in meta.json and set by ``model.conditioning.audio_feature_dim``.
FEATURE_DIM = 29
#: Feature frames in one per-video-frame window (AD-NeRF ``aud.npy``: 16 x 29).
AUDIO_WINDOW = 16
#: Neighbouring windows stacked for smoothing (AD-NeRF ``smo_size``).
SMOOTH_WINDOWS = 8
#: Shape of one ``audio_smooth/<v>_<f>.npy`` file.
AUDIO_SMOOTH_SHAPE = (SMOOTH_WINDOWS, AUDIO_WINDOW, FEATURE_DIM)

#: Points in the iBUG 68-point layout.
N_LANDMARKS = 68
#: Rows of the 68 that the model consumes: 0-3 then 13-47 (39 rows), as the reference loader selects them.
MODEL_LANDMARK_ROWS = tuple(range(0, 4)) + tuple(range(13, 48))
#: iBUG 68-point names (0-based), used alike in code and docs: landmark 30 is the nose tip; landmark 33 is the
#: nose bottom (the base of the nose between the nostrils), which does not move with speech.
NOSE_TIP = 30
NOSE_BOTTOM = 33
#: Landmark whose y coordinate starts the masked (generated) lower half in training.
TRAIN_MASK_LANDMARK = NOSE_TIP
#: Jaw points 2..14 plus the nose bottom outline the region generated at inference.
INFERENCE_MASK_ROWS = tuple(range(2, 15)) + (NOSE_BOTTOM,)

#: Default side of the saved square frames (pixels).
DEFAULT_IMAGE_SIZE = 512
#: Side of the images the model sees (pixels).
MODEL_IMAGE_SIZE = 256
#: Side of the first-stage latent the inference mask is built for.
LATENT_SIZE = 64
#: Minimum distance (frames) between a frame and its reference frame.
REFERENCE_MIN_DISTANCE = 60

# ------------------------------------------------------------------------------------------------- sampling
#: The sampler names: ``ddim`` (reference-exact) and ``dpm++`` (DPM-Solver++ 2M).
DDIM, DPM_SOLVER_PP = "ddim", "dpm++"
#: The sampler and steps of the lip-sync pipeline, the web app and ``DiffTalkModel.sample`` / ``inpaint`` when
#: neither the user nor the checkpoint names any (the fast defaults).
DEFAULT_SAMPLER, DEFAULT_STEPS = DPM_SOLVER_PP, 25
#: The DDIM steps of the reference's inference script (``ddim_ldm_ref_inpaint.py``).
REFERENCE_DDIM_STEPS = 200
#: DDIM steps of the images the trainer logs (``train.image_log_ddim_steps``).
IMAGE_LOG_DDIM_STEPS = 50
#: DPM-Solver++ steps of the validation samples scored with PSNR/SSIM (``train.val_metrics_steps``).
VALIDATION_STEPS = 10
#: DPM-Solver++ steps of the synthetic demo and of the learnability benchmark's evaluation.
DEMO_STEPS = 20
