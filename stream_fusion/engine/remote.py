"""A fusion engine whose network runs on a Triton Inference Server: ``--model triton://HOST:PORT/NAME``.

The edge box keeps every host-side step of the local engine on the CPU route (the IR warp, the luma split and the
chroma merge of a luminance network, the colour checks: :mod:`stream_fusion.engine.frames`) and sends the server only
what the network takes, as uint8 over gRPC (the KServe v2 protocol): a luminance network gets the IR frame and the
visible luma, the colour network the IR frame and the BGR frame. The served graph pads and crops itself
(:func:`stream_fusion.engine.graph.served_graph`), so the fused frames are the local engine's for the same network.
The server batches the frames of every stream that sends to it.

A lost server (restarted, network down) is retried for ``reconnect_s`` seconds from the first failed frame; each
recovery counts as a reconnect in the run's summary; past the window the stream ends with one line. Needs the
``[remote]`` extra (tritonclient); no ONNX Runtime.
"""
from __future__ import annotations

import logging
import re
import time
from typing import Any

import numpy as np

from stream_fusion.engine.frames import fuse_colour, fuse_luma
from stream_fusion.errors import StreamFusionError, first_line
from stream_fusion.warp import IrWarp, fuse_registered

SCHEME = "triton://"
DEFAULT_PORT = 8001
RETRY_PAUSE_S = 0.25  # between tries while the server is away
REQUEST_TIMEOUT_S = 30.0  # one frame's round trip; a server that builds a TensorRT engine answers its first late
# gRPC's own reconnect backoff grows to 2 minutes by default: capped, so a restarted server is found within a second.
_MAX_MESSAGE = 2**31 - 1
CHANNEL_ARGS = [("grpc.max_send_message_length", _MAX_MESSAGE), ("grpc.max_receive_message_length", _MAX_MESSAGE),
                ("grpc.initial_reconnect_backoff_ms", 200), ("grpc.min_reconnect_backoff_ms", 200),
                ("grpc.max_reconnect_backoff_ms", 1000)]

log = logging.getLogger(__name__)


def parse_url(url: str) -> tuple[str, str]:
    """``triton://HOST[:PORT]/NAME`` -> (``HOST:PORT``, ``NAME``); the port defaults to Triton's gRPC 8001."""
    match = re.fullmatch(r"triton://([^/:]+|\[[^\]]+\])(?::(\d+))?/([\w.-]+)", url)
    if match is None:
        raise StreamFusionError(f"--model {url!r}: a fusion server is named triton://HOST:PORT/NAME, e.g. "
                                "triton://10.0.0.5:8001/lite")
    host, port, name = match.groups()
    return f"{host}:{port or DEFAULT_PORT}", name


class RemoteEngine:
    """The :class:`~stream_fusion.engine.FusionEngine` of a network served by Triton (see the module docstring).
    ``resolution`` (w, h): one zero pair of that size is fused at start, so the server has loaded, batched and (under
    TensorRT) built for the stream's size before the first real frame."""

    provider = "triton"

    def __init__(self, url: str, *, reconnect_s: float = 10.0, resolution: tuple[int, int] | None = None,
                 timeout_s: float = REQUEST_TIMEOUT_S) -> None:
        try:
            import tritonclient.grpc as grpcclient
            from tritonclient.utils import InferenceServerException
        except ImportError:
            raise StreamFusionError(f"--model {url} needs the Triton client: pip install 'stream-fusion[remote]'") \
                from None
        self._grpc, self._server_error = grpcclient, InferenceServerException
        self.address, self.model = parse_url(url)
        self.reconnect_s, self.timeout_s = reconnect_s, timeout_s
        self.reconnects = 0  # times the server was lost and found again within reconnect_s
        self.client = grpcclient.InferenceServerClient(self.address, channel_args=CHANNEL_ARGS)
        try:
            live = self.client.is_server_live(client_timeout=timeout_s)
        except InferenceServerException as error:
            raise StreamFusionError(f"fusion server {self.address} is unreachable ({first_line(error.message())})") \
                from None
        if not live:
            raise StreamFusionError(f"fusion server {self.address} answers but is not live")
        self.colour = self._check_model()
        self.name = f"{self.model}@{self.address}"
        if resolution is not None:
            width, height = resolution
            self.fuse(np.zeros((height, width), np.uint8), np.zeros((height, width, 3), np.uint8))

    def _check_model(self) -> bool:
        """Whether the served network is the colour one; one line for a model the server does not have (naming the
        ones it has) or one that is not a fusion network."""
        if not self.client.is_model_ready(self.model):
            raise StreamFusionError(f"fusion server {self.address} has no model {self.model!r} ready: it serves "
                                    f"{', '.join(self.served_models()) or 'no models'}")
        meta = self.client.get_model_metadata(self.model)
        inputs = {tensor.name: tensor for tensor in meta.inputs}
        outputs = {tensor.name: tensor for tensor in meta.outputs}
        if sorted(inputs) != ["ir", "vis"] or list(outputs) != ["fused"] or any(
                tensor.datatype != "UINT8" for tensor in [*meta.inputs, *meta.outputs]):
            raise StreamFusionError(f"{self.model!r} on {self.address} is not a stream_fusion network (it maps "
                                    f"{', '.join(inputs)} -> {', '.join(outputs)}; export.triton's take uint8 ir, vis "
                                    "-> fused)")
        return list(inputs["vis"].shape)[-1] == 3  # N x H x W x 3 (BGR) for the colour network, N x 1 x H x W luma

    def served_models(self) -> list[str]:
        """The models the server has ready: from its repository index (tritonserver), else from its statistics
        (``stream_fusion.serve``, whose pytriton keeps the repository API to itself)."""
        try:
            return sorted(model.name for model in self.client.get_model_repository_index().models
                          if model.state == "READY")
        except self._server_error:
            return sorted({model.name for model in self.client.get_inference_statistics().model_stats})

    def fuse(self, ir: np.ndarray, vis: np.ndarray, warp: IrWarp | None = None) -> np.ndarray:
        return fuse_registered(ir, vis, warp, self._fuse_registered)

    def _fuse_registered(self, ir: np.ndarray, vis: np.ndarray) -> np.ndarray:
        if self.colour:
            return fuse_colour(ir, vis, lambda gray, bgr: self._infer(gray[None, None], bgr[None])[0])
        return fuse_luma(ir, vis, lambda gray, luma: self._infer(gray[None, None], luma[None, None])[0, 0])

    def _infer(self, ir: np.ndarray, vis: np.ndarray) -> np.ndarray:
        """One round trip; the server lost is retried until ``reconnect_s`` after the first failure."""
        inputs = []
        for name, array in (("ir", ir), ("vis", vis)):
            tensor = self._grpc.InferInput(name, list(array.shape), "UINT8")
            tensor.set_data_from_numpy(np.ascontiguousarray(array))
            inputs.append(tensor)
        outputs = [self._grpc.InferRequestedOutput("fused")]
        lost_at: float | None = None
        while True:
            try:
                result = self.client.infer(self.model, inputs, outputs=outputs, client_timeout=self.timeout_s)
            except self._server_error as error:
                lost_at = self._retry_or_fail(error, lost_at)
                continue
            if lost_at is not None:
                self.reconnects += 1
                log.warning("fusion server %s back after %.1f s (reconnect %d)", self.address,
                            time.monotonic() - lost_at, self.reconnects)
            return result.as_numpy("fused")

    def _retry_or_fail(self, error: Any, lost_at: float | None) -> float:
        """When the failure began; raises once it is older than ``reconnect_s`` or cannot be cured by waiting."""
        message = first_line(error.message() if hasattr(error, "message") else error)
        if "INVALID_ARG" in str(error.status()):  # the request itself is wrong: no retry makes it right
            raise StreamFusionError(f"fusion server {self.address} refused a frame: {message}")
        now = time.monotonic()
        if lost_at is None:
            log.warning("fusion server %s lost (%s): retrying for up to %.0f s", self.address, message,
                        self.reconnect_s)
            lost_at = now
        if now - lost_at >= self.reconnect_s:
            raise StreamFusionError(f"fusion server {self.address} lost for {self.reconnect_s:.0f} s (--reconnect): "
                                    f"{message}")
        time.sleep(RETRY_PAUSE_S)
        return lost_at
