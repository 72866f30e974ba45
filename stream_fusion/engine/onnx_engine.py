"""The trained network on ONNX Runtime: :class:`OnnxEngine`, with its input and output buffers bound on the device."""
from __future__ import annotations

import functools
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple

import numpy as np

from stream_fusion.engine import PROVIDERS, check_provider, import_onnxruntime
from stream_fusion.engine.frames import fuse_colour, fuse_luma, pad_to_multiple
from stream_fusion.engine.graph import frame_dims, frame_graph, is_colour_model, model_metadata, read_model
from stream_fusion.engine.sessions import default_cache_dir, file_digest, open_session
from stream_fusion.errors import StreamFusionError, first_line
from stream_fusion.warp import IrWarp, fuse_registered

ort = import_onnxruntime()

# Frame size used for warm-up (and the TensorRT shape profile) when the caller does not say: the common thermal
# core resolution. Pass ``resolution=`` (or call :meth:`OnnxEngine.warmup`) with the real camera size.
DEFAULT_RESOLUTION = (640, 512)

log = logging.getLogger(__name__)


class Placement(NamedTuple):
    """Where the per-pixel work runs on one provider."""

    in_session: bool  # the IR warp, luma split, chroma merge and padding inside the session (else OpenCV on the host)
    fixed_size: bool  # the session is built for one frame size (its shape arithmetic folded into constants)


class OnnxEngine:
    """The trained network on ONNX Runtime: TensorRT, then CUDA, then CPU, whichever actually loads.

    Where each step runs. Always inside the ONNX Runtime session (on the GPU under TensorRT or CUDA, whose input and
    output buffers live on the device and are reused from frame to frame): uint8 -> float normalisation, a colour
    model's HWC <-> CHW transposes, the network, clipping and rounding back to uint8.

    With ``in_session`` on (default: whenever a GPU provider runs) the rest runs in the session too: the IR warp
    (:class:`stream_fusion.warp.IrWarp`: a calibration, a live shift), a luminance model's luma split and chroma
    merge, and the reflect padding to the size multiple (:func:`frame_graph`; the crop back is a view of the output
    the host copies back anyway). Off (the CPU provider), OpenCV and numpy do them on the host, faster there than
    ONNX Runtime's CPU kernels for the same work (the padding is a no-op at multiples such as 640x512).

    ``cuda_graph`` (TensorRT and CUDA only): capture the session's kernels once as a CUDA graph and replay it for
    every frame, so the host launches one graph instead of a kernel per node (base at 640x512: 428). It relies on what
    the engine already guarantees under a GPU provider: fixed sizes, inputs and output bound at fixed device
    addresses, every node on the GPU. ``None`` (the default): on whenever ``resolution`` is known, since a graph is
    captured for one frame size; without it a GPU engine says once that it runs without one. ``True`` without
    ``resolution`` is refused; ``False`` turns it off. The CPU provider has no graphs. Why it is on by default, and
    what it gains: docs/engine.md (*CUDA graphs*).

    ``path``: the model file, or one file per provider short name (``tensorrt``, ``cuda``, ``cpu``: exports of the
    same network, such as a shipped network's fp32 and fp16 files, :mod:`stream_fusion.engine.precision`); the
    attributes that describe the model (``path``, ``precision``, ``metadata``...) are those of the file that runs;
    ``files`` says which file each provider would run.
    """

    def __init__(
        self,
        path: str | Path | Mapping[str, str | Path],
        provider: str = "auto",
        *,
        resolution: tuple[int, int] | None = None,
        ir_resolution: tuple[int, int] | None = None,
        in_session: bool | None = None,
        fixed_size: bool | None = None,
        cache_dir: str | Path | None = None,
        threads: int | None = None,
        device_id: int = 0,
        cuda_graph: bool | None = None,
        warmup: bool = True,
    ) -> None:
        check_provider(provider)
        if cuda_graph and resolution is None:
            raise StreamFusionError("cuda_graph needs resolution=(width, height): a CUDA graph is captured for one "
                                    "frame size")
        self.files = {name: Path(path[name] if isinstance(path, Mapping) else path) for name in PROVIDERS}
        protos = {file: read_model(file) for file in set(self.files.values())}
        self._metadata = {file: model_metadata(proto) for file, proto in protos.items()}
        kinds = {(m["model_name"], m["preset"], m["size_multiple"], m.get("vis_channels"))
                 for m in self._metadata.values()}
        if len(kinds) > 1:
            raise StreamFusionError(f"the files {', '.join(map(str, protos))} are not exports of one network")
        self._use("tensorrt" if provider == "auto" else provider)
        self.device_id = device_id
        graphed = resolution is not None if cuda_graph is None else cuda_graph
        self._requested = (in_session, fixed_size)
        self._graph = lambda name: frame_graph(protos[self.files[name]],
                                               self._placement(name).in_session).SerializeToString()
        trt_file = self.files["tensorrt"]
        self._options = {
            # ONNX Runtime names a cached TensorRT engine after the model path, or (for an in-memory model, as here)
            # its graph, never its weights (ORT maintainers in triton-inference-server/onnxruntime_backend#126): one
            # folder per file content, so re-exported weights never run a stale engine.
            "cache_dir": Path(cache_dir or default_cache_dir()) / f"{trt_file.stem}-{file_digest(trt_file)}",
            "threads": threads,
            "device_id": device_id,
            "cuda_graph": graphed,
        }
        self._open(provider, resolution, ir_resolution or resolution)
        self.cuda_graph = graphed  # the option the session was built with; the CPU provider ignores it
        if cuda_graph is None and not graphed and self.provider != "cpu":
            log.warning("%s on %s without a CUDA graph: the frame size is not known before the first frame "
                        "(give resolution=(w, h) to capture one)", self.name, self.provider.upper())
        if warmup:
            self._warmup_or_ungraph(resolution or DEFAULT_RESOLUTION, asked=cuda_graph)

    def _use(self, provider: str) -> None:
        """Describe the engine by the file that ``provider`` runs."""
        self.path = self.files[provider]
        self.metadata = self._metadata[self.path]
        self.size_multiple = int(self.metadata["size_multiple"])
        self.preset = self.metadata["preset"]
        self.precision = self.metadata.get("precision", "fp32")
        self.name = f"{self.metadata['model_name']}-{self.preset}"
        self.colour = is_colour_model(self.metadata)

    def _warmup_or_ungraph(self, size: tuple[int, int], asked: bool | None) -> None:
        """Warm up; the warm-up runs are where a provider captures its CUDA graph. A graph that was not asked for
        (on by default) and cannot be captured (a node that a provider cannot put in a graph) costs its speed-up, in
        one warning, not the run."""
        try:
            self.warmup(*size, ir_size=self.ir_resolution)
        except Exception as error:  # ORT raises its own Fail / RuntimeException types
            if not self.cuda_graph or asked or self.provider == "cpu":
                raise
            log.warning("%s on %s: CUDA graph capture failed (%s); running without one", self.name,
                        self.provider.upper(), first_line(error))
            self._options["cuda_graph"] = self.cuda_graph = False
            self._open(self.provider, self.resolution, self.ir_resolution)
            self.warmup(*size, ir_size=self.ir_resolution)

    def _placement(self, provider: str) -> Placement:
        """``in_session`` and ``fixed_size`` on ``provider``: as asked, else on for a GPU provider, off on the CPU
        (where OpenCV does the per-pixel work faster, and a CPU engine fuses any frame size)."""
        return Placement(*(provider != "cpu" if asked is None else asked for asked in self._requested))

    def _open(self, provider: str, resolution: tuple[int, int] | None, ir_resolution: tuple[int, int] | None) -> None:
        """(Re)build the session on ``provider`` for visible frames of ``resolution`` and IR frames of
        ``ir_resolution`` (w, h; None: any size, no TensorRT profile, no fixed sizes)."""
        self.resolution, self.ir_resolution = resolution, ir_resolution
        first = "tensorrt" if provider == "auto" else provider  # the profile and sizes are for a GPU attempt
        self.in_session = self._placement(first).in_session
        self._profile = self._shapes(resolution, ir_resolution)
        dims = frame_dims(resolution, ir_resolution, self.size_multiple, self.in_session) if resolution else None
        self.session, self.provider = open_session(
            self._graph, provider, shapes=self._profile,
            dims=lambda name: dims if self._placement(name).fixed_size else None, **self._options,
        )
        self._use(self.provider)
        self.in_session, fixed = self._placement(self.provider)
        self.fixed_size = fixed and dims is not None
        self._profile = self._shapes(resolution, ir_resolution)
        self._buffers = _BoundBuffers(self.session, "cpu" if self.provider == "cpu" else "cuda", self.device_id)

    def cancel(self) -> None:
        """End the session run in flight, if any (it raises in the fusing thread): a stop must not wait out a
        frame that takes seconds, nor tear the session down under it. Later calls run normally."""
        self._buffers.cancel()

    def warmup(self, width: int, height: int, ir_size: tuple[int, int] | None = None) -> None:
        """One run at the frame size to come: allocates buffers, picks kernels, builds a TensorRT engine, so the
        first real frame is not the slow one."""
        frame = np.zeros((height, width, 3), np.uint8)
        ir_width, ir_height = ir_size if ir_size is not None and self.in_session else (width, height)
        self.fuse(np.zeros((ir_height, ir_width), np.uint8), frame)

    @property
    def takes_bgr(self) -> bool:
        """Whether the session takes and returns BGR frames (a colour model, or any model ``in_session``)."""
        return self.colour or self.in_session

    def fuse(self, ir: np.ndarray, vis: np.ndarray, warp: IrWarp | None = None) -> np.ndarray:
        if not self.in_session:
            return fuse_registered(ir, vis, warp, self._fuse_registered)
        warp = warp or IrWarp.resize((ir.shape[1], ir.shape[0]), (vis.shape[1], vis.shape[0]))
        return fuse_colour(ir, vis, functools.partial(self._fuse_bgr, warp=warp), warp)

    def _fuse_registered(self, ir: np.ndarray, vis: np.ndarray) -> np.ndarray:
        """The host route, for a pair on one grid: colour in the session or the YCrCb route around it."""
        if self.takes_bgr:
            return fuse_colour(ir, vis, functools.partial(self._fuse_bgr, warp=None))
        return fuse_luma(ir, vis, self._fuse_y)

    def _fuse_bgr(self, ir: np.ndarray, bgr: np.ndarray, warp: IrWarp | None) -> np.ndarray:
        h, w = bgr.shape[:2]
        if warp is not None:  # in_session: the session pads and warps; the frames go as they are
            m = self.size_multiple
            fused = self.run(ir[None, None], bgr[None], warp.session_inputs((w + -w % m, h + -h % m)))
        else:
            vis = pad_to_multiple(bgr[None], self.size_multiple, channels_last=True)
            fused = self.run(pad_to_multiple(ir[None, None], self.size_multiple), vis)
        return np.ascontiguousarray(fused[0, :h, :w])

    def _fuse_y(self, ir: np.ndarray, vis_y: np.ndarray) -> np.ndarray:
        h, w = vis_y.shape
        frames = pad_to_multiple(np.stack([ir, vis_y])[:, None], self.size_multiple)
        fused = self.run(frames[0:1], frames[1:2])
        return np.ascontiguousarray(fused[0, 0, :h, :w])

    def run(self, ir: np.ndarray, vis: np.ndarray, warp_inputs: dict[str, np.ndarray] | None = None) -> np.ndarray:
        """The session alone, uint8 in and out, H and W multiples of ``size_multiple``: ``N x 1 x H x W`` each ->
        the same (luminance model); ``ir`` ``N x 1 x H x W`` and ``vis`` ``N x H x W x 3`` -> ``N x H x W x 3``
        (colour model). ``in_session``: ``ir`` is ``1 x 1 x h x w`` of its own size, ``vis`` ``1 x H x W x 3`` of any
        H and W for every model, ``warp_inputs`` are :meth:`IrWarp.session_inputs`, and the output is the padded
        frame, ``1 x len(grid_y) x len(grid_x) x 3``."""
        feeds = {"ir": ir, "vis": vis, **(warp_inputs or {})}
        if self.in_session != bool(warp_inputs):
            raise ValueError("this session warps the IR: pass warp_inputs" if self.in_session
                             else "this session does not warp the IR: warp_inputs must be empty")
        fixed = self._profile is not None and (self.fixed_size or self.provider == "tensorrt")
        if fixed and any(feeds[name].shape != self._profile[name] for name in ("ir", "vis")):
            # A camera that changed mode, or reported another size than it delivers: rebuild for the new size
            # rather than fail mid-stream (TensorRT builds a new engine: minutes, once; then it is cached).
            size, ir_size = _size(vis.shape, self.takes_bgr), _size(ir.shape)
            log.warning("%s: frames are now IR %dx%d and visible %dx%d, not the sizes its %s session was built for: "
                        "rebuilding it", self.name, *ir_size, *size, self.provider)
            self._open(self.provider, size, ir_size)
        out_shape = (1, len(warp_inputs["grid_y"]), len(warp_inputs["grid_x"]), 3) if warp_inputs else vis.shape
        return self._buffers.run(feeds, out_shape)

    def _shapes(
        self, resolution: tuple[int, int] | None, ir_resolution: tuple[int, int] | None
    ) -> dict[str, tuple[int, ...]] | None:
        """The session's input shapes for one frame of ``resolution`` (visible) and ``ir_resolution`` (the IR as
        its camera delivers it, for the in-session warp): the TensorRT profile. None when the size is not known."""
        if resolution is None:
            return None
        m = self.size_multiple
        width, height = resolution
        h, w = height + -height % m, width + -width % m
        if self.in_session:  # the frames as they come; the session pads to (w, h); the warp's own small inputs
            iw, ih = ir_resolution or resolution
            warp_inputs = IrWarp.resize((iw, ih), (width, height)).session_inputs((w, h))
            return {"ir": (1, 1, ih, iw), "vis": (1, height, width, 3),
                    **{name: value.shape for name, value in warp_inputs.items()}}
        return {"ir": (1, 1, h, w), "vis": (1, h, w, 3) if self.colour else (1, 1, h, w)}


def _size(shape: tuple[int, ...], channels_last: bool = False) -> tuple[int, int]:
    """``(W, H)`` of an ``N x C x H x W`` (or ``N x H x W x C``) shape."""
    h, w = shape[1:3] if channels_last else shape[2:4]
    return int(w), int(h)


class _BoundBuffers:
    """Input and output buffers on the provider's device, bound to the session once per frame size and reused from
    frame to frame: a frame is one copy into each input buffer and one copy out of the output buffer (host to GPU
    and back under CUDA / TensorRT, a uint8 memcpy on the CPU). The warp's few numbers are copied only when they
    change. One code path for every provider, so the CPU tests exercise the binding logic the GPU providers use."""

    FRAMES = ("ir", "vis")  # new content every run; everything else is copied only when it changed

    def __init__(self, session: ort.InferenceSession, device: str, device_id: int) -> None:
        self.session = session
        self.device = device
        self.device_id = device_id
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.buffers: dict[str, ort.OrtValue] = {}
        self.last: dict[str, np.ndarray] = {}
        self.run_options = ort.RunOptions()  # cancel() sets its terminate flag: the run in flight ends early

    def _bind(self, feeds: dict[str, np.ndarray], out_shape: tuple[int, ...]) -> None:
        def device_buffer(shape: tuple[int, ...], dtype: type) -> ort.OrtValue:
            return ort.OrtValue.ortvalue_from_shape_and_type(shape, dtype, self.device, self.device_id)

        self.buffers = {name: device_buffer(array.shape, array.dtype.type) for name, array in feeds.items()}
        self.out = device_buffer(out_shape, np.uint8)
        self.binding = self.session.io_binding()
        for name, buffer in self.buffers.items():
            self.binding.bind_ortvalue_input(name, buffer)
        self.binding.bind_ortvalue_output("fused", self.out)
        self.shapes = {name: array.shape for name, array in feeds.items()}
        self.last = {}

    def run(self, feeds: dict[str, np.ndarray], out_shape: tuple[int, ...]) -> np.ndarray:
        if {name: array.shape for name, array in feeds.items()} != self.shapes:
            self._bind(feeds, out_shape)
        for name, array in feeds.items():
            if name in self.FRAMES or name not in self.last or not np.array_equal(self.last[name], array):
                self.buffers[name].update_inplace(np.ascontiguousarray(array))
                if name not in self.FRAMES:
                    self.last[name] = array.copy()
        self.session.run_with_iobinding(self.binding, self.run_options)
        return self.binding.copy_outputs_to_cpu()[0]

    def cancel(self) -> None:
        """End the run in flight (it raises); later runs get fresh options and run normally."""
        cancelled, self.run_options = self.run_options, ort.RunOptions()
        cancelled.terminate = True
