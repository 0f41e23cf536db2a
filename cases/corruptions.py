"""Common corruptions of images, in NumPy/SciPy, after ImageNet-C (Hendrycks & Dietterich, ICLR 2019,
"Benchmarking Neural Network Robustness to Common Corruptions and Perturbations", arXiv:1903.12261).

Every function takes images ``x`` as a float array of shape (N, C, H, W) or (N, H, W) with values in
[0, 1], a ``severity`` from 1 to 5, and a ``seed`` (only the random ones use it), and returns a new float32
array of the same shape clipped to [0, 1]; ``x`` itself is never modified. Noise, contrast and brightness
use ImageNet-C's parameters; ImageNet-C's blur widths are for 224-pixel images, so the Gaussian blur here
uses widths in pixels chosen for 8x8 digits. Grayscale brightness adds ``c`` to every pixel (ImageNet-C
adds it to the V channel in HSV, the same thing for gray images).
"""
from __future__ import annotations

from typing import Callable

import numpy as np

NOISE_STD = (0.08, 0.12, 0.18, 0.26, 0.38)           # ImageNet-C gaussian_noise
CONTRAST = (0.4, 0.3, 0.2, 0.1, 0.05)                 # ImageNet-C contrast (factor on deviations)
BRIGHTNESS = (0.1, 0.2, 0.3, 0.4, 0.5)                # ImageNet-C brightness (added)
BLUR_SIGMA = (0.5, 0.75, 1.0, 1.25, 1.5)              # pixels, for 8x8 images


def _level(table, severity: int) -> float:
    if not 1 <= int(severity) <= 5 or int(severity) != severity:
        raise ValueError(f"severity must be 1, 2, 3, 4 or 5, got {severity!r}")
    return table[int(severity) - 1]


def _images(x) -> np.ndarray:
    a = np.array(x, dtype=np.float32, copy=True)
    if a.ndim not in (3, 4):
        raise ValueError(f"expected images of shape (N, H, W) or (N, C, H, W), got {a.shape}")
    return a


def gaussian_noise(x, severity: int = 3, seed: int = 0) -> np.ndarray:
    """x + N(0, s^2) per pixel, s = 0.08 .. 0.38 for severities 1 .. 5."""
    a = _images(x)
    rng = np.random.default_rng(seed)
    return np.clip(a + rng.normal(0.0, _level(NOISE_STD, severity), a.shape).astype(np.float32), 0, 1)


def contrast(x, severity: int = 3, seed: int = 0) -> np.ndarray:
    """Deviations from each image's mean (over its pixels and channels) scaled by c = 0.4 .. 0.05."""
    a = _images(x)
    axes = tuple(range(1, a.ndim))
    mean = a.mean(axis=axes, keepdims=True)
    return np.clip((a - mean) * _level(CONTRAST, severity) + mean, 0, 1)


def brightness(x, severity: int = 3, seed: int = 0) -> np.ndarray:
    """Every pixel raised by c = 0.1 .. 0.5."""
    return np.clip(_images(x) + _level(BRIGHTNESS, severity), 0, 1)


def gaussian_blur(x, severity: int = 3, seed: int = 0) -> np.ndarray:
    """Each image (each channel) blurred by a Gaussian of width 0.5 .. 1.5 pixels (``scipy.ndimage``,
    edges mirrored)."""
    from scipy.ndimage import gaussian_filter
    a = _images(x)
    sigma = _level(BLUR_SIGMA, severity)
    spatial = (0,) * (a.ndim - 2) + (sigma, sigma)
    return np.clip(gaussian_filter(a, sigma=spatial, mode="reflect"), 0, 1).astype(np.float32)


CORRUPTIONS: dict[str, Callable[..., np.ndarray]] = {
    "gaussian noise": gaussian_noise,
    "contrast": contrast,
    "brightness": brightness,
    "gaussian blur": gaussian_blur,
}


def corrupt(x, name: str, severity: int = 3, seed: int = 0):
    """Apply the corruption ``name`` (a key of :data:`CORRUPTIONS`); a torch tensor comes back as a tensor."""
    try:
        fn = CORRUPTIONS[name]
    except KeyError:
        raise KeyError(f"no corruption {name!r}; known: {sorted(CORRUPTIONS)}") from None
    if type(x).__module__.startswith("torch"):
        import torch
        return torch.from_numpy(fn(x.detach().cpu().numpy(), severity, seed))
    return fn(x, severity, seed)
