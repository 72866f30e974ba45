"""A Triton Inference Server for our networks on one box, for sites that don't run NVIDIA's container, and for tests.

    python -m stream_fusion.serve                                  # lite, base, cdfusion on gRPC 8001, HTTP 8000
    python -m stream_fusion.serve --models lite --grpc-port 9001 --provider cpu

It is a real tritonserver (bundled by NVIDIA's ``nvidia-pytriton``, the ``[serve]`` extra, in its own virtual
environment: pytriton needs numpy<2), speaking the KServe v2 protocol on gRPC and HTTP, with dynamic batching: the
requests of many streams waiting together (at most ``QUEUE_DELAY_US``) run as one batch. Each model is a Python
callable that runs the served frame graph (:func:`stream_fusion.engine.graph.served_graph`, the same model.onnx
``python -m export.triton`` writes for the container) in ONNX Runtime on the whole batch. Clients:
``--model triton://HOST:8001/lite`` (:mod:`stream_fusion.engine.remote`).

Ctrl-C or SIGTERM stops it (tritonserver with it); bad input exits 2 with one line.
"""
from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import sys
import sysconfig
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

import numpy as np

from stream_fusion.engine import SHIPPED_MODELS, check_provider, shipped_models
from stream_fusion.errors import StreamFusionError, run_cli

MAX_BATCH = 16
PREFERRED_BATCHES = [4, 8, 16]
QUEUE_DELAY_US = 3000  # as export.triton's config.pbtxt: a tenth of a 30 fps frame period

REEXEC_MARKER = "STREAM_FUSION_SERVE_REEXEC"

log = logging.getLogger("stream_fusion.serve")


def own_libpython_env() -> dict[str, str] | None:
    """The environment to re-run this command in when its interpreter's own libpython is not first on
    ``LD_LIBRARY_PATH`` (None: it is, or the interpreter has none). pytriton's Python-backend stub links libpython
    dynamically; an interpreter built outside the system (pyenv, conda) then gets the system's libpython of another
    patch version, which fails inside the stub (``'_thread.RLock' object has no attribute '_recursion_count'``)."""
    libdir, library = sysconfig.get_config_var("LIBDIR"), sysconfig.get_config_var("LDLIBRARY")
    if not libdir or not library or not (Path(libdir) / library).is_file() or library.endswith(".a"):
        return None
    paths = [path for path in os.environ.get("LD_LIBRARY_PATH", "").split(os.pathsep) if path]
    # Anywhere in the list: the system's libpython is found after it (a default path), and OpenCV 4.11 prepends
    # its own folder at import. The marker stops a second re-run whatever the list holds then.
    if libdir in paths or os.environ.get(REEXEC_MARKER):
        return None
    return {**os.environ, "LD_LIBRARY_PATH": os.pathsep.join([libdir, *paths]), REEXEC_MARKER: "1"}



def check_port_free(port: int, what: str) -> None:
    """One line for a port another process holds, instead of tritonserver's failure deep in its log."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("0.0.0.0", port))
        except OSError as error:
            raise StreamFusionError(f"{what} port {port} is not free ({error.strerror}): choose another with "
                                    f"--{what}-port") from None


class ServedNetwork:
    """One network as the server runs it: its served frame graph in an ONNX Runtime session, and the callable
    pytriton binds (a batch of N frames of one size in, N fused frames out)."""

    def __init__(self, name: str, provider: str, threads: int | None) -> None:
        from stream_fusion.engine.graph import read_model, served_graph
        from stream_fusion.engine.sessions import default_cache_dir, file_digest, open_session

        path = SHIPPED_MODELS[name]
        self.name = name
        self.model = served_graph(read_model(path))
        self.session, self.provider = open_session(
            self.model.SerializeToString(), provider, shapes=None, threads=threads, device_id=0,
            cache_dir=default_cache_dir() / f"served-{path.stem}-{file_digest(path)}",
        )

    def tensors(self, values: Any) -> list[Any]:
        """pytriton's declaration of graph inputs or outputs: names, uint8, shapes less the batch axis."""
        from pytriton.model_config import Tensor

        return [Tensor(name=value.name, dtype=np.uint8,
                       shape=tuple(dim.dim_value if dim.HasField("dim_value") else -1
                                   for dim in value.type.tensor_type.shape.dim[1:]))
                for value in values]

    def infer(self) -> Callable[..., dict[str, np.ndarray]]:
        from pytriton.decorators import batch

        @batch
        def fuse_batch(ir: np.ndarray, vis: np.ndarray) -> dict[str, np.ndarray]:
            return {"fused": self.session.run(["fused"], {"ir": ir, "vis": vis})[0]}

        return fuse_batch


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m stream_fusion.serve", description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=",".join(SHIPPED_MODELS), help="comma-separated networks (default: all)")
    parser.add_argument("--grpc-port", type=int, default=8001, help="gRPC port (clients: triton://HOST:PORT/NAME)")
    parser.add_argument("--http-port", type=int, default=8000, help="HTTP port (KServe v2 REST, health checks)")
    parser.add_argument("--metrics-port", type=int, default=8002, help="Prometheus metrics port")
    parser.add_argument("--provider", default="auto", choices=["auto", "tensorrt", "cuda", "cpu"],
                        help="ONNX Runtime provider of the sessions (auto: TensorRT, CUDA, then CPU)")
    parser.add_argument("--threads", type=int, default=None, help="ONNX Runtime threads per session (default: cores)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    names = shipped_models(args.models)
    check_provider(args.provider)
    for port, what in ((args.grpc_port, "grpc"), (args.http_port, "http"), (args.metrics_port, "metrics")):
        check_port_free(port, what)
    env = own_libpython_env()
    if env is not None:  # before anything starts: the server's children inherit the environment
        os.execve(sys.executable, [sys.executable, "-m", "stream_fusion.serve", *sys.argv[1:]], env)
    try:
        from pytriton.model_config import DynamicBatcher, ModelConfig
        from pytriton.triton import DEFAULT_PROTECTED_ENDPOINTS, Triton, TritonConfig, TritonSecurityConfig
    except ImportError:
        raise StreamFusionError("the server needs nvidia-pytriton: pip install -e '.[serve]' in a virtual environment "
                                "of its own (README, Serving)") from None
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    networks = [ServedNetwork(name, args.provider, args.threads) for name in names]
    config = TritonConfig(grpc_port=args.grpc_port, http_port=args.http_port, metrics_port=args.metrics_port,
                          exit_timeout_secs=5)
    batcher = DynamicBatcher(max_queue_delay_microseconds=QUEUE_DELAY_US, preferred_batch_size=PREFERRED_BATCHES)
    # pytriton restricts every endpoint beyond inference and health to its own token; the statistics, read-only, are
    # opened again: they are how a client that asked for an unknown model learns which ones are served.
    security = TritonSecurityConfig(restricted_endpoints=[name for name in DEFAULT_PROTECTED_ENDPOINTS
                                                          if name != "statistics"])
    signal.signal(signal.SIGTERM, _interrupt)
    with Triton(config=config, security_config=security) as triton:
        for network in networks:
            triton.bind(model_name=network.name, infer_func=network.infer(),
                        inputs=network.tensors(network.model.graph.input),
                        outputs=network.tensors(network.model.graph.output),
                        config=ModelConfig(max_batch_size=MAX_BATCH, batcher=batcher), strict=True)
        providers = sorted({network.provider for network in networks})
        print(f"stream_fusion.serve: {', '.join(names)} on {'/'.join(providers)}, gRPC port {args.grpc_port}, "
              f"HTTP port {args.http_port}; clients: --model triton://HOST:{args.grpc_port}/{names[0]}",
              file=sys.stderr, flush=True)
        triton.serve()
    return 0


def _interrupt(_number: int, _frame: FrameType | None) -> None:
    """SIGTERM as Ctrl-C: pytriton's serve loop stops tritonserver and cleans its workspace on KeyboardInterrupt."""
    raise KeyboardInterrupt


if __name__ == "__main__":
    run_cli(main)
