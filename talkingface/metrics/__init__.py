"""Image metrics shared by training and evaluation: PSNR and SSIM (``image``), the face and mouth boxes they are
measured on (``regions``), and ``batch_metrics`` for validation during training (``batch``).

Below the drivers: ``talkingface.training``, ``talkingface.evaluate`` and the synthetic learnability benchmark all
import it; it imports nothing of the project.
"""
