"""Quality metrics. Not part of any model's state_dict."""

from .pixel import psnr, ssim

__all__ = ["psnr", "ssim"]
