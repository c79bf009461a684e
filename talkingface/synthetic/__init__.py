"""Synthetic talking faces: identities drawn from a parametric 68-point face, speech-like audio made in code,
a mouth that follows the audio. Used by the learnability benchmark and the out-of-the-box demo model.

    python -m talkingface.synthetic --out DIR --identities 8 --seconds 10 --seed 0 [--layout]
"""

from talkingface.synthetic.face import FaceIdentity, draw_face, face_landmarks, sample_identity
from talkingface.synthetic.speech import SpeechTrack, synthesize_speech

__all__ = [
    "FaceIdentity",
    "SpeechTrack",
    "draw_face",
    "face_landmarks",
    "sample_identity",
    "synthesize_speech",
]
