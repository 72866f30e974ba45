"""CIE L*a*b* in torch, differentiable and exportable (Pow / Where / MatMul-free einsum on fixed constants).

Two users: the colour model's training loss measures chroma in Lab (where the evaluation's CIEDE2000 measures it),
and its colour prior changes lightness in Lab (:func:`with_lightness_of`), which keeps the visible a*/b* exactly
where the YCbCr route (add the luma change to B, G and R) shifts them and desaturates brightened pixels.
Constants are sRGB / D65, the ones OpenCV's ``COLOR_BGR2Lab`` uses, so training, export and evaluation agree.
"""
from __future__ import annotations

import torch

# sRGB (D65) -> CIE XYZ, rows X, Y, Z; columns R, G, B.
RGB_TO_XYZ = torch.tensor(
    [[0.412453, 0.357580, 0.180423], [0.212671, 0.715160, 0.072169], [0.019334, 0.119193, 0.950227]]
)
XYZ_TO_RGB = torch.linalg.inv(RGB_TO_XYZ)
WHITE_D65 = torch.tensor([0.950456, 1.0, 1.088754])
_EPS = 0.008856  # (6/29)^3: below it CIE's f() is linear
_F_EPS = 6.0 / 29.0


def _to_linear(c: torch.Tensor) -> torch.Tensor:
    return torch.where(c > 0.04045, ((c.clamp(min=0.04045) + 0.055) / 1.055) ** 2.4, c / 12.92)


def _to_gamma(c: torch.Tensor) -> torch.Tensor:
    c = c.clamp(0.0, 1.0)
    return torch.where(c > 0.0031308, 1.055 * c.clamp(min=0.0031308) ** (1.0 / 2.4) - 0.055, 12.92 * c)


def _f(t: torch.Tensor) -> torch.Tensor:
    return torch.where(t > _EPS, t.clamp(min=_EPS) ** (1.0 / 3.0), 7.787 * t + 16.0 / 116.0)


def _f_inverse(f: torch.Tensor) -> torch.Tensor:
    return torch.where(f > _F_EPS, f.clamp(min=_F_EPS) ** 3, (f - 16.0 / 116.0) / 7.787)


def _lab_f(bgr: torch.Tensor) -> torch.Tensor:
    """``f(X/Xn), f(Y/Yn), f(Z/Zn)`` of an N x 3 x H x W BGR image in 0..1: Lab is a fixed linear map of these."""
    xyz = torch.einsum("ij,njhw->nihw", RGB_TO_XYZ.to(bgr), _to_linear(bgr.flip(1)))
    return _f(xyz / WHITE_D65.to(bgr).view(1, 3, 1, 1))


def bgr_to_lab(bgr: torch.Tensor) -> torch.Tensor:
    """N x 3 x H x W BGR in 0..1 -> CIE L*a*b* (L 0..100)."""
    fx, fy, fz = _lab_f(bgr).unbind(1)
    return torch.stack([116.0 * fy - 16.0, 500.0 * (fx - fy), 200.0 * (fy - fz)], dim=1)


def with_lightness_of(colour: torch.Tensor, lightness: torch.Tensor) -> torch.Tensor:
    """``colour``'s a*, b* with ``lightness``'s L*, back to BGR in 0..1 (both N x 3 x H x W BGR).

    In f-space, L* depends on f_y alone and a*, b* on the differences f_x - f_y and f_y - f_z, so shifting all three
    f values by the same amount changes lightness and nothing else. Colours the new lightness puts outside sRGB are
    clipped per channel (the only place hue can still move); a black visible pixel becomes a neutral gray at the
    new lightness, which is what a thermal target in the dark should look like.
    """
    f = _lab_f(colour)
    shift = _lab_f(lightness)[:, 1:2] - f[:, 1:2]
    xyz = _f_inverse(f + shift) * WHITE_D65.to(colour).view(1, 3, 1, 1)
    rgb = torch.einsum("ij,njhw->nihw", XYZ_TO_RGB.to(colour), xyz)
    return _to_gamma(rgb).flip(1)
