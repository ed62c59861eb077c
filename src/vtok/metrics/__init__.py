"""Quality metrics. Not part of any model's state_dict."""

from .pixel import ms_ssim, psnr, ssim
from .tokens import token_statistics

__all__ = ["ms_ssim", "psnr", "ssim", "token_statistics"]
