"""No-reference image-fusion metrics: EN, SD, SF, AG, MI, SCD, VIF, Qabf, SSIM.

No ground-truth fused image exists, so the infrared-visible fusion (IVIF) field scores a fused image ``F`` by itself
(EN, SD, SF, AG) or by how much of each source ``A`` (IR) and ``B`` (visible) it keeps (MI, SCD, VIF, Qabf, SSIM).
The conventions follow the evaluator most IVIF papers report with (MMIF-CDDFuse ``utils/Evaluator.py``, Zhao et al.,
CVPR 2023), so our numbers sit next to published tables: gray images on the 0..255 scale, MI / VIF / SSIM *summed*
over the two sources, Qabf with the Xydeas-Petrovic constants and zero-padded Sobel. Where that evaluator relies on a
library default we state the value used (MI in nats; SSIM with L = 255, see :func:`ssim`).

Every function takes 2-D gray arrays (uint8 or float on 0..255); colour fused images are scored on their luma
(:func:`stream_fusion.engine.to_gray`) by the caller. Everything is vectorised numpy/OpenCV: all nine metrics of a
768x576 pair take a fraction of a second. No torch: this runs on deployment boxes.
"""
from __future__ import annotations

import math

import cv2
import numpy as np

METRIC_NAMES: tuple[str, ...] = ("EN", "SD", "SF", "AG", "MI", "SCD", "VIF", "Qabf", "SSIM")

# Xydeas & Petrovic (2000) sigmoid constants for edge strength (g) and orientation (a) preservation.
_QABF_TG, _QABF_KG, _QABF_DG = 0.9994, -15.0, 0.5
_QABF_TA, _QABF_KA, _QABF_DA = 0.9879, -22.0, 0.8
# Correlation (not convolution) kernels matching the reference evaluator's scipy ``convolve2d`` Sobel responses,
# whose sign convention decides the edge angle where the x response is zero (angle = pi/2 there).
_SOBEL_X = np.array([[1, 0, -1], [2, 0, -2], [1, 0, -1]], dtype=np.float64)
_SOBEL_Y = np.array([[-1, -2, -1], [0, 0, 0], [1, 2, 1]], dtype=np.float64)


def _f64(image: np.ndarray) -> np.ndarray:
    if image.ndim != 2:
        raise ValueError(f"metrics take 2-D gray images, got shape {image.shape}")
    return np.asarray(image, dtype=np.float64)


def _levels(image: np.ndarray) -> np.ndarray:
    """Integer gray levels 0..255, the 256 histogram bins EN and MI count."""
    return np.clip(np.rint(_f64(image)), 0, 255).astype(np.intp)


def _same_shape(*images: np.ndarray) -> None:
    shapes = {image.shape for image in images}
    if len(shapes) != 1:
        raise ValueError(f"metric inputs differ in shape: {sorted(shapes)}")


def entropy(image: np.ndarray) -> float:
    """EN, Shannon entropy in bits of the 256-bin gray histogram.

    Roberts, van Aardt & Ahmed, "Assessment of image fusion procedures using entropy, image quality, and
    multispectral classification", J. Appl. Remote Sens. 2(1), 2008. More information -> higher, but noise raises it too.
    """
    p = np.bincount(_levels(image).ravel(), minlength=256) / image.size
    p = p[p > 0]
    return float(-(p * np.log2(p)).sum())


def standard_deviation(image: np.ndarray) -> float:
    """SD, population standard deviation of the gray levels: global contrast.

    As defined in the IVIF survey of Ma, Ma & Li, "Infrared and visible image fusion methods and applications:
    a survey", Inf. Fusion 45, 2019. Rewards contrast and noise alike.
    """
    return float(_f64(image).std())


def spatial_frequency(image: np.ndarray) -> float:
    """SF = sqrt(RF^2 + CF^2), RF / CF the RMS of horizontal / vertical neighbour differences.

    Eskicioglu & Fisher, "Image quality measures and their performance", IEEE Trans. Commun. 43(12), 1995.
    """
    f = _f64(image)
    row = np.mean(np.diff(f, axis=1) ** 2) if f.shape[1] > 1 else 0.0
    col = np.mean(np.diff(f, axis=0) ** 2) if f.shape[0] > 1 else 0.0
    return float(math.sqrt(row + col))


def average_gradient(image: np.ndarray) -> float:
    """AG = mean of sqrt((Gx^2 + Gy^2) / 2), central differences inside, one-sided at the border.

    Cui et al., "Detail preserved fusion of visible and infrared images using regional saliency extraction and
    multi-scale image decomposition", Opt. Commun. 341, 2015.
    """
    f = _f64(image)
    if min(f.shape) < 2:
        return 0.0
    gy, gx = np.gradient(f)
    return float(np.mean(np.sqrt((gx * gx + gy * gy) / 2.0)))


def mutual_information(a: np.ndarray, b: np.ndarray) -> float:
    """Mutual information of two images' gray levels (256 x 256 joint histogram), in nats.

    Natural log, as the reference evaluator (scikit-learn ``mutual_info_score``) computes it; so the MI of an image
    with itself is its entropy in nats (``entropy(a) * ln 2``).
    """
    _same_shape(a, b)
    joint = np.bincount((_levels(a) * 256 + _levels(b)).ravel(), minlength=256 * 256).reshape(256, 256)
    p_ab = joint / a.size
    outer = p_ab.sum(axis=1, keepdims=True) * p_ab.sum(axis=0, keepdims=True)
    nz = p_ab > 0
    return float((p_ab[nz] * np.log(p_ab[nz] / outer[nz])).sum())


def fusion_mi(fused: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    """MI = MI(F, A) + MI(F, B), in nats: information the fused image carries about both sources.

    Qu, Zhang & Yan, "Information measure for performance of image fusion", Electron. Lett. 38(7), 2002.
    """
    return mutual_information(fused, a) + mutual_information(fused, b)


def correlation(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson correlation; 0 where either side is constant (nothing to correlate, not an undefined number)."""
    dx, dy = x - x.mean(), y - y.mean()
    denominator = math.sqrt(float((dx * dx).sum()) * float((dy * dy).sum()))
    return float((dx * dy).sum() / denominator) if denominator > 0 else 0.0


def scd(fused: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    """SCD = corr(F - B, A) + corr(F - A, B): how much of what each source adds appears in the fused image.

    Aslantas & Bendes, "A new image quality metric for image fusion: the sum of the correlations of differences",
    AEU Int. J. Electron. Commun. 69(12), 2015. Range -2..2.
    """
    _same_shape(fused, a, b)
    f, fa, fb = _f64(fused), _f64(a), _f64(b)
    return correlation(f - fb, fa) + correlation(f - fa, fb)


def _gaussian_valid(image: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Separable Gaussian filter keeping only fully-covered pixels (MATLAB ``filter2(..., 'valid')``)."""
    r = len(kernel) // 2
    if image.shape[0] <= 2 * r or image.shape[1] <= 2 * r:
        return np.zeros((0, 0))
    out = cv2.sepFilter2D(image, cv2.CV_64F, kernel, kernel, borderType=cv2.BORDER_REFLECT)
    return out[r:-r, r:-r]


def vif_single(reference: np.ndarray, distorted: np.ndarray) -> float:
    """Pixel-domain VIF (vifp) of ``distorted`` against ``reference``: 4 scales, Gaussian windows 17/9/5/3,
    sigma = N/5, HVS noise variance 2.

    Sheikh & Bovik, "Image information and visual quality", IEEE Trans. Image Process. 15(2), 2006. A reference
    with no variance anywhere carries no information and scores 1 (the reference evaluator's convention).
    """
    _same_shape(reference, distorted)
    ref, dist = _f64(reference), _f64(distorted)
    sigma_n_sq, eps = 2.0, 1e-10
    num = den = 0.0
    for scale in range(1, 5):
        n = 2 ** (5 - scale) + 1
        x = np.arange(n) - (n - 1) / 2
        kernel = np.exp(-(x * x) / (2 * (n / 5.0) ** 2))
        kernel /= kernel.sum()
        if scale > 1:
            ref = _gaussian_valid(ref, kernel)[::2, ::2]
            dist = _gaussian_valid(dist, kernel)[::2, ::2]
        mu1, mu2 = _gaussian_valid(ref, kernel), _gaussian_valid(dist, kernel)
        if mu1.size == 0:
            break
        sigma1_sq = np.maximum(_gaussian_valid(ref * ref, kernel) - mu1 * mu1, 0)
        sigma2_sq = np.maximum(_gaussian_valid(dist * dist, kernel) - mu2 * mu2, 0)
        sigma12 = _gaussian_valid(ref * dist, kernel) - mu1 * mu2
        g = sigma12 / (sigma1_sq + eps)
        sv_sq = sigma2_sq - g * sigma12
        flat_ref = sigma1_sq < eps
        g[flat_ref] = 0
        sv_sq[flat_ref] = sigma2_sq[flat_ref]
        sigma1_sq[flat_ref] = 0
        flat_dist = sigma2_sq < eps
        g[flat_dist] = 0
        sv_sq[flat_dist] = 0
        negative = g < 0
        sv_sq[negative] = sigma2_sq[negative]
        g[negative] = 0
        sv_sq = np.maximum(sv_sq, eps)
        num += float(np.log10(1 + g * g * sigma1_sq / (sv_sq + sigma_n_sq)).sum())
        den += float(np.log10(1 + sigma1_sq / sigma_n_sq).sum())
    return num / den if den > 0 else 1.0


def vif(fused: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    """VIF = vifp(A, F) + vifp(B, F), summed over the sources (Han, Cai, Cao & Xu, "A new image fusion performance
    metric based on visual information fidelity", Inf. Fusion 14(2), 2013; pixel-domain VIF of Sheikh & Bovik 2006)."""
    return vif_single(a, fused) + vif_single(b, fused)


def _edges(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sobel edge strength and orientation (arctan(sy / sx), pi/2 where sx == 0), zero padding at the border."""
    f = _f64(image)
    sx = cv2.filter2D(f, cv2.CV_64F, _SOBEL_X, borderType=cv2.BORDER_CONSTANT)
    sy = cv2.filter2D(f, cv2.CV_64F, _SOBEL_Y, borderType=cv2.BORDER_CONSTANT)
    strength = np.sqrt(sx * sx + sy * sy)
    zero = sx == 0
    angle = np.where(zero, math.pi / 2, np.arctan(sy / np.where(zero, 1.0, sx)))
    return strength, angle


def _edge_preservation(g_src: np.ndarray, a_src: np.ndarray, g_f: np.ndarray, a_f: np.ndarray) -> np.ndarray:
    """Per-pixel Q^{XF} = Qg * Qa: how well F keeps the source's edge strength and orientation (0..~0.975)."""
    hi = np.maximum(g_src, g_f)
    strength_ratio = np.where(hi > 0, np.minimum(g_src, g_f) / np.where(hi > 0, hi, 1.0), 1.0)
    orientation = 1 - np.abs(a_src - a_f) / (math.pi / 2)
    q_g = _QABF_TG / (1 + np.exp(_QABF_KG * (strength_ratio - _QABF_DG)))
    q_a = _QABF_TA / (1 + np.exp(_QABF_KA * (orientation - _QABF_DA)))
    return q_g * q_a


def qabf(fused: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    """Q^{AB/F}: edge information transferred from both sources, weighted by source edge strength (L = 1).

    Xydeas & Petrovic, "Objective image fusion performance measure", Electron. Lett. 36(4), 2000; constants
    Tg = 0.9994, kg = -15, Dg = 0.5, Ta = 0.9879, ka = -22, Da = 0.8. Perfect transfer scores
    ~0.975 (the product of the two sigmoids at ratio 1), not exactly 1. Sources without any edge score 1.
    """
    _same_shape(fused, a, b)
    g_a, a_a = _edges(a)
    g_b, a_b = _edges(b)
    g_f, a_f = _edges(fused)
    weight = float((g_a + g_b).sum())
    if weight == 0:
        return 1.0
    transferred = _edge_preservation(g_a, a_a, g_f, a_f) * g_a + _edge_preservation(g_b, a_b, g_f, a_f) * g_b
    return float(transferred.sum() / weight)


def ssim_single(x: np.ndarray, y: np.ndarray, data_range: float = 255.0) -> float:
    """Mean SSIM with a 7x7 uniform window, sample covariances, K1 = 0.01, K2 = 0.03, averaged over fully-covered
    windows (scikit-image ``structural_similarity`` defaults).

    Wang, Bovik, Sheikh & Simoncelli, "Image quality assessment: from error visibility to structural similarity",
    IEEE Trans. Image Process. 13(4), 2004. ``data_range`` is L = 255 for 8-bit images. (The reference evaluator
    called scikit-image on float images without ``data_range``, which old scikit-image versions took as 2; that
    shrinks C1, C2 and gives lower scores on flat, noisy regions. We use the paper's L for the 0..255 data.)
    """
    _same_shape(x, y)
    a, b = _f64(x), _f64(y)
    win = 7
    if min(a.shape) < win:
        raise ValueError(f"SSIM needs images of at least {win}x{win}, got {a.shape[1]}x{a.shape[0]}")
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    cov_norm = win * win / (win * win - 1)

    def mean(image: np.ndarray) -> np.ndarray:
        return cv2.boxFilter(image, cv2.CV_64F, (win, win), borderType=cv2.BORDER_REFLECT)

    mu_a, mu_b = mean(a), mean(b)
    var_a = cov_norm * (mean(a * a) - mu_a * mu_a)
    var_b = cov_norm * (mean(b * b) - mu_b * mu_b)
    cov = cov_norm * (mean(a * b) - mu_a * mu_b)
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a * mu_a + mu_b * mu_b + c1) * (var_a + var_b + c2))
    pad = (win - 1) // 2
    return float(s[pad:-pad, pad:-pad].mean())


def ssim(fused: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    """SSIM = SSIM(F, A) + SSIM(F, B), summed over the sources as the IVIF field reports it (range up to 2)."""
    return ssim_single(fused, a) + ssim_single(fused, b)


def all_metrics(fused: np.ndarray, ir: np.ndarray, vis: np.ndarray) -> dict[str, float]:
    """Every metric of :data:`METRIC_NAMES` for one gray fused image and its gray IR (A) and visible (B) sources."""
    _same_shape(fused, ir, vis)
    return {
        "EN": entropy(fused),
        "SD": standard_deviation(fused),
        "SF": spatial_frequency(fused),
        "AG": average_gradient(fused),
        "MI": fusion_mi(fused, ir, vis),
        "SCD": scd(fused, ir, vis),
        "VIF": vif(fused, ir, vis),
        "Qabf": qabf(fused, ir, vis),
        "SSIM": ssim(fused, ir, vis),
    }


# ---------------------------------------------------------------------------------------------------------------------
# Colour fidelity: how faithfully a colour fused image keeps the visible camera's colours.

COLOUR_METRIC_NAMES: tuple[str, ...] = ("dE00", "dE00_ab", "chroma_r")
# A chroma channel whose standard deviation is below this (a*/b* units) counts as constant: OpenCV's float32
# BGR -> Lab conversion of a perfectly gray image leaves a*/b* noise of about 0.02 std (at most 0.125), which would
# otherwise "correlate" with the visible chroma through its dependence on lightness. The least colourful RoadScene
# visible image has an a* std of 0.93, so real colour is far above it.
CONSTANT_CHROMA_STD = 0.1
_25_POW_7 = 25.0**7


def _chroma_weight(c: np.ndarray) -> np.ndarray:
    """sqrt(C^7 / (C^7 + 25^7)): near 0 for neutral colours, near 1 for saturated ones."""
    c7 = c**7
    return np.sqrt(c7 / (c7 + _25_POW_7))


def ciede2000(lab1: np.ndarray, lab2: np.ndarray) -> np.ndarray:
    """Per-pixel CIEDE2000 colour difference of two CIELAB arrays (..., 3) (L 0..100, a*, b*), kL = kC = kH = 1.

    CIEDE2000 is the CIE's perceptual colour difference: 1 is about a just-noticeable difference, and unlike the
    Euclidean Lab distance it corrects for the eye being less sensitive to chroma changes of saturated colours, to
    lightness changes away from mid-gray, and for the blue-region hue/chroma interaction. Formula and conventions
    (hue of a neutral colour = 0; hue difference 0 and mean hue = sum where either chroma is 0) as in Sharma, Wu &
    Dalal, "The CIEDE2000 color-difference formula: implementation notes, supplementary test data, and mathematical
    observations", Color Res. Appl. 30(1), 2005. Vectorised, float64.
    """
    lab1, lab2 = np.asarray(lab1, dtype=np.float64), np.asarray(lab2, dtype=np.float64)
    if lab1.shape != lab2.shape or lab1.shape[-1:] != (3,):
        raise ValueError(f"ciede2000 takes two Lab arrays of one shape (..., 3), got {lab1.shape} and {lab2.shape}")
    l1, a1, b1 = np.moveaxis(lab1, -1, 0)
    l2, a2, b2 = np.moveaxis(lab2, -1, 0)
    g = 0.5 * (1 - _chroma_weight((np.hypot(a1, b1) + np.hypot(a2, b2)) / 2))
    a1p, a2p = (1 + g) * a1, (1 + g) * a2
    c1p, c2p = np.hypot(a1p, b1), np.hypot(a2p, b2)
    h1p = np.degrees(np.arctan2(b1, a1p)) % 360  # arctan2(0, 0) = 0: the neutral hue convention
    h2p = np.degrees(np.arctan2(b2, a2p)) % 360
    chromatic = c1p * c2p != 0

    dl = l2 - l1
    dc = c2p - c1p
    dh = h2p - h1p
    dh = np.where(dh > 180, dh - 360, np.where(dh < -180, dh + 360, dh))
    dh = np.where(chromatic, dh, 0.0)
    dh_big = 2 * np.sqrt(c1p * c2p) * np.sin(np.radians(dh / 2))

    l_mean = (l1 + l2) / 2
    c_mean = (c1p + c2p) / 2
    h_sum = h1p + h2p
    h_mean = np.where(np.abs(h1p - h2p) <= 180, h_sum / 2, np.where(h_sum < 360, (h_sum + 360) / 2, (h_sum - 360) / 2))
    h_mean = np.where(chromatic, h_mean, h_sum)

    t = (1 - 0.17 * np.cos(np.radians(h_mean - 30)) + 0.24 * np.cos(np.radians(2 * h_mean))
         + 0.32 * np.cos(np.radians(3 * h_mean + 6)) - 0.20 * np.cos(np.radians(4 * h_mean - 63)))
    d_theta = 30 * np.exp(-(((h_mean - 275) / 25) ** 2))
    r_t = -2 * _chroma_weight(c_mean) * np.sin(np.radians(2 * d_theta))
    s_l = 1 + 0.015 * (l_mean - 50) ** 2 / np.sqrt(20 + (l_mean - 50) ** 2)
    s_c = 1 + 0.045 * c_mean
    s_h = 1 + 0.015 * c_mean * t
    el, ec, eh = dl / s_l, dc / s_c, dh_big / s_h
    return np.sqrt(el * el + ec * ec + eh * eh + r_t * ec * eh)


def bgr_to_lab(image: np.ndarray) -> np.ndarray:
    """CIELAB (L 0..100, D65) of an 8-bit-range BGR or gray image, via OpenCV's float conversion (sRGB assumed)."""
    bgr = np.asarray(image, dtype=np.float32) / 255.0
    if bgr.ndim == 2:
        bgr = cv2.cvtColor(bgr, cv2.COLOR_GRAY2BGR)
    if bgr.ndim != 3 or bgr.shape[2] != 3:
        raise ValueError(f"colour metrics take HxWx3 BGR or HxW gray images, got shape {image.shape}")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2Lab)


def chroma_correlation(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson correlation of two chroma channels, with the constant cases defined instead of undefined:
    both constant (no colour structure on either side, e.g. two gray images) -> 1, since nothing was lost; only
    one constant (a gray image against a colour one, or colour invented where the reference has none) -> 0.
    "Constant" means a standard deviation below :data:`CONSTANT_CHROMA_STD`."""
    flat_x = float(np.std(x)) < CONSTANT_CHROMA_STD
    flat_y = float(np.std(y)) < CONSTANT_CHROMA_STD
    if flat_x or flat_y:
        return 1.0 if flat_x and flat_y else 0.0
    return correlation(np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64))


def colour_metrics(fused_bgr: np.ndarray, vis_bgr: np.ndarray) -> dict[str, float]:
    """Colour fidelity of a fused image to its visible source, in CIELAB (OpenCV, D65, sRGB), both 8-bit range.

    ``dE00``: mean per-pixel CIEDE2000 (:func:`ciede2000`) between fused and visible: the perceived colour error,
    lightness included, so fusing in thermal detail raises it for every method; lower is better.
    ``dE00_ab``: the same with the fused lightness replaced by the visible one: the hue and saturation error
    alone. On RoadScene-50, 97 % of a YCbCr-route fusion's dE00 is lightness, i.e. the fusion itself (thermal
    targets brightened, night scenes lifted); this column says how well the *colour* survived it.
    ``chroma_r``: mean of the Pearson correlations of a* and of b* over the pixels: whether the visible image's
    colour *structure* (which regions are red, which blue) survives even where the fusion changed lightness, which
    dE00 alone would punish. 1 = kept; about 0 for a gray fused image (see :func:`chroma_correlation`).

    ``fused_bgr`` may be gray (HxW): a gray fusion of a colour scene is legitimate input and scores badly, which
    is the point. The 9 structural metrics are scored on luma and never see colour; these two only see colour.
    """
    if fused_bgr.shape[:2] != vis_bgr.shape[:2]:
        raise ValueError(f"colour metric inputs differ in size: {fused_bgr.shape} and {vis_bgr.shape}")
    fused, vis = bgr_to_lab(fused_bgr), bgr_to_lab(vis_bgr)
    r_a = chroma_correlation(fused[:, :, 1], vis[:, :, 1])
    r_b = chroma_correlation(fused[:, :, 2], vis[:, :, 2])
    same_lightness = fused.copy()
    same_lightness[:, :, 0] = vis[:, :, 0]
    return {"dE00": float(ciede2000(fused, vis).mean()), "dE00_ab": float(ciede2000(same_lightness, vis).mean()),
            "chroma_r": (r_a + r_b) / 2}
