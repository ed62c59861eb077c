"""Quality metrics. Not part of any model's state_dict.

Offline: pixel metrics, token statistics and (extra ``perceptual``) the EffNet-Lite0 feature
distance in `vtok.metrics.perceptual`. Published metrics from the user's weight files: `LPIPS`
(VGG or AlexNet) and `InceptionV3Features` for FID.
"""

from .inception import InceptionV3Features
from .lpips import LPIPS
from .pixel import ms_ssim, psnr, ssim
from .tokens import token_statistics

__all__ = ["InceptionV3Features", "LPIPS", "ms_ssim", "psnr", "ssim", "token_statistics"]
