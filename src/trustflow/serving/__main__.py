"""``python -m trustflow.serving``: the inference server on one ONNX file, with only the serving
dependencies. It is the container image's entry point (infra/docker/Dockerfile); ``trustflow
serve`` is the same server with the model registry and several worker processes.

Settings come from the command line or the environment (``PORT``, ``TRUSTFLOW_MODEL``,
``TRUSTFLOW_ENCRYPTED``), so a Kubernetes Deployment or ``docker run -e PORT=...`` can set them
without a new image.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from pydantic import ValidationError

from trustflow.serving.app import FileSource, ServeSettings, load_scorer
from trustflow.serving.run import announce, check_port, run_one_process
from trustflow.serving.scorer import ModelLoadError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trustflow.serving", description=__doc__)
    parser.add_argument("--model", default=os.environ.get("TRUSTFLOW_MODEL", "model/model.onnx"))
    parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8080")))
    # Defaults are ServeSettings': an option not given stays unset.
    parser.add_argument("--max-rows", type=int, help="rows per request (default 10,000)")
    parser.add_argument("--max-body-bytes", type=int, help="(default 4 MiB)")
    parser.add_argument("--threads", type=int, help="onnxruntime threads (default 1)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), help="(default auto)")
    parser.add_argument(
        "--strict",
        action="store_true",
        default=None,
        help="refuse what MLflow drops, ignores or converts",
    )
    parser.add_argument(
        "--encrypted",
        action="store_true",
        # An image of a release that passed the encryption gate sets it (infra/docker).
        default=os.environ.get("TRUSTFLOW_ENCRYPTED") == "1" or None,
        help="also serve a linear model on CKKS ciphertexts (needs tenseal; "
        "TRUSTFLOW_ENCRYPTED=1 sets it)",
    )
    parser.add_argument("--max-encrypted-bytes", type=int,
                        help="body limit of encrypted requests (default 64 MiB)")  # fmt: skip
    parser.add_argument("--access-log", action="store_true", help="log every request")
    args = parser.parse_args(argv)
    try:
        given = {name: getattr(args, name, None) for name in ServeSettings.model_fields}
        settings = ServeSettings(**{k: v for k, v in given.items() if v is not None})
        source = FileSource(Path(args.model).resolve())
        scorer = load_scorer(source.load(), settings)
        check_port(settings.host, settings.port)
    except (ModelLoadError, ValidationError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    announce(scorer, settings)
    run_one_process(source, settings, scorer, args.access_log)
    return 0


if __name__ == "__main__":
    sys.exit(main())
