"""The ``trustflow`` command.

People get one line per stage and a summary table; ``--json`` prints exactly one JSON object on
stdout. Errors are one line on stderr and a non-zero exit (the traceback only with ``--debug``).
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import errno
import json
import logging
import os
import shutil
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console

from flows.pipelines import PIPELINES


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="trustflow", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run a training pipeline")
    run.add_argument("pipeline", nargs="?", default="tabular", choices=list(PIPELINES))
    run.add_argument("--config", help="YAML config file (default: built-in defaults)")
    run.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one config value, e.g. --set train.seed=7 (repeatable)",
    )
    run.add_argument(
        "--candidates",
        metavar="A,B",
        help="train only these of train.candidates, by name, e.g. --candidates logreg,hgb",
    )
    run.add_argument("--workspace", help="workspace directory (default: $TRUSTFLOW_WORKSPACE or .)")
    run.add_argument("--json", action="store_true", help="print one JSON summary on stdout")
    run.add_argument("--quiet", action="store_true", help="no stage lines on stderr")
    run.add_argument("--debug", action="store_true", help="show Prefect's logs and tracebacks")

    pipelines = commands.add_parser("pipelines", help="list the pipelines `trustflow run` runs")
    pipelines.add_argument("--json", action="store_true", help="print one JSON object on stdout")

    deploy = commands.add_parser(
        "deploy", help="deploy a registered model: build context, Docker image, Kubernetes, Triton"
    )
    # Defaults not given here are deploy-model's own (flows/deploy.py), declared once there.
    deploy.add_argument("--model", help="models:/NAME@ALIAS or models:/NAME/VERSION "
                        "(default: the champion of the tabular pipeline's model)")  # fmt: skip
    deploy.add_argument("--target", choices=("bundle", "docker", "kubernetes", "triton"),
                        default="docker")  # fmt: skip
    deploy.add_argument("--out", help="directory for the target's files (default: under "
                        "<workspace>/.trustflow/deploy/NAME-vVERSION/)")  # fmt: skip
    deploy.add_argument("--base-image",
                        help="docker: the image to build on (its Python must be 3.11)")  # fmt: skip
    deploy.add_argument("--port", type=int,
                        help="docker: host port for the verification container")  # fmt: skip
    deploy.add_argument("--registry", help="docker: push NAME:VERSION and NAME:ALIAS there; "
                        "kubernetes: the image's registry")  # fmt: skip
    deploy.add_argument("--no-vendor-wheels", action="store_true",
                        help="bundle: let the image build install from PyPI")  # fmt: skip
    deploy.add_argument("--no-apply", action="store_true",
                        help="kubernetes: only write, even when kubectl has a context")  # fmt: skip
    deploy.add_argument("--gpu", action="store_true", help="triton: KIND_GPU instances")
    deploy.add_argument("--workspace", help="workspace whose registry holds the model")
    deploy.add_argument("--json", action="store_true", help="print one JSON summary on stdout")
    deploy.add_argument("--summary", metavar="FILE", help="append what was released as Markdown "
                        "(e.g. $GITHUB_STEP_SUMMARY)")  # fmt: skip
    deploy.add_argument("--quiet", action="store_true", help="no stage lines on stderr")
    deploy.add_argument("--debug", action="store_true", help="show Prefect's logs and tracebacks")

    serve = commands.add_parser("serve", help="serve a model over HTTP with ONNX Runtime")
    serve.add_argument(
        "--model",
        required=True,
        help="models:/NAME@ALIAS (follows the alias), models:/NAME/VERSION or path/to/model.onnx",
    )
    # Defaults are ServeSettings' (src/trustflow/serving/app.py): an option not given stays unset.
    serve.add_argument("--host", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="(default 8000)")
    serve.add_argument("--workers", type=int, help="server processes (default 1)")
    serve.add_argument("--max-body-bytes", type=int, help="(default 4 MiB)")
    serve.add_argument("--max-rows", type=int, help="rows per request (default 10,000)")
    serve.add_argument("--poll-seconds", type=float,
                       help="how often to look for a new release of the alias or file "
                       "(default 10)")  # fmt: skip
    serve.add_argument("--device", choices=("auto", "cpu", "cuda"), help="(default auto)")
    serve.add_argument("--threads", type=int, help="onnxruntime threads per worker (default 1)")
    serve.add_argument(
        "--strict",
        action="store_true",
        default=None,
        help="refuse unknown columns, unknown keys, params and numbers as strings "
        "(by default they are dropped, ignored or converted, as MLflow does)",
    )
    serve.add_argument(
        "--encrypted",
        action="store_true",
        default=None,
        help="also serve /v1/encrypted/*: a linear model scored on CKKS ciphertexts the "
        "server cannot read (docs/encrypted.md)",
    )
    serve.add_argument(
        "--max-encrypted-bytes", type=int, help="body limit of encrypted requests (default 64 MiB)"
    )
    serve.add_argument(
        "--max-contexts", type=int, help="client contexts kept for --encrypted (default 32)"
    )
    serve.add_argument("--max-context-bytes", type=int, help="their total size (default 256 MiB)")
    serve.add_argument("--workspace", help="workspace whose registry resolves models:/ URIs")
    serve.add_argument("--access-log", action="store_true", help="log every request")
    serve.add_argument("--debug", action="store_true", help="tracebacks on errors")
    predict = commands.add_parser(
        "predict", help="score records on a running server (encrypted with --encrypted)"
    )
    predict.add_argument("records", help='JSON file: {"records": [...]}, as /v1/predict takes')
    predict.add_argument("--url", default="http://127.0.0.1:8000", help="the server")
    predict.add_argument(
        "--encrypted",
        action="store_true",
        help="encrypt the rows here (CKKS); the server scores them without reading them",
    )
    predict.add_argument(
        "--layout",
        choices=("packed", "feature-major"),
        default="packed",
        help="with --encrypted: packed (rows share a ciphertext; fast for few rows) or "
        "feature-major (a ciphertext per feature; the answer is the logits only)",
    )
    predict.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    predict.add_argument("--debug", action="store_true", help="tracebacks on errors")
    trigger = commands.add_parser(
        "trigger", help="run a deployment on the Prefect server, wait, report its gates (for CI)"
    )
    trigger.add_argument("deployment", nargs="?", default="train-tabular",
                         help="FLOW/DEPLOYMENT, or one name for both")  # fmt: skip
    trigger.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one value of the flow's config (repeatable); the deployment's defaults "
        "fill in the rest",
    )
    trigger.add_argument("--param", dest="params", action="append", default=[],
                         metavar="NAME=VALUE", help="another flow parameter, e.g. "
                         "--param workspace=/srv/ws (repeatable)")  # fmt: skip
    trigger.add_argument("--timeout", type=float, default=3600,
                         help="seconds to wait for the run to end (default 3600)")  # fmt: skip
    trigger.add_argument("--summary", metavar="FILE", help="append the report as Markdown "
                         "(e.g. $GITHUB_STEP_SUMMARY)")  # fmt: skip
    trigger.add_argument("--workspace", help="workspace whose MLflow store to read when "
                         "MLFLOW_TRACKING_URI is not set")  # fmt: skip
    trigger.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    trigger.add_argument("--debug", action="store_true", help="tracebacks on errors")
    schema = commands.add_parser("schema", help="write a data set schema")
    schema_commands = schema.add_subparsers(dest="schema_command", required=True)
    infer = schema_commands.add_parser(
        "infer", help="a schema read off a CSV file, on stdout: check it, then use it"
    )
    infer.add_argument("file", help="the CSV file")
    infer.add_argument("--target", required=True, help="the column to predict")
    infer.add_argument("--task", choices=("binary", "multiclass", "regression"),
                       help="default: binary for two distinct target values, multiclass for up to "
                       "50, regression for more numbers")  # fmt: skip
    infer.add_argument("--sensitive", default="", help="sensitive features: a,b")
    infer.add_argument("--columns", help="keep only these columns: a,b,c (the rest: ignore)")
    infer.add_argument("--encoding", default="utf-8", help="the file's text encoding")
    infer.add_argument("--debug", action="store_true", help="tracebacks on errors")
    server = commands.add_parser(
        "server", help="start, stop or check local Prefect + MLflow servers and a worker"
    )
    server.add_argument("action", choices=("up", "down", "status"))
    server.add_argument(
        "--workspace", help="workspace directory (default: $TRUSTFLOW_WORKSPACE or .)"
    )
    server.add_argument("--prefect-port", type=int, default=4200)
    server.add_argument("--mlflow-port", type=int, default=5000)
    server.add_argument(
        "--pool", default="trustflow-process", help="work pool the worker serves (prefect.yaml's)"
    )
    server.add_argument(
        "--database-url",
        help="postgresql://USER@HOST:PORT/NAME: run both servers on PostgreSQL (default SQLite)",
    )
    server.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    return parser


def _quiet_prefect(debug: bool) -> None:
    """Prefect's console logs are for --debug; people see our stage lines instead. Must run
    before Prefect is imported."""
    if not debug:
        os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "CRITICAL")
        os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_FLOW_RUNS_LEVEL", "CRITICAL")
        os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_TASK_RUNS_LEVEL", "CRITICAL")


def _isolate_prefect(workspace: Any) -> None:
    """The local engine's database and settings live in the workspace (two workspaces share no
    flow runs or cache records), unless PREFECT_HOME or PREFECT_API_URL says otherwise. Profiles
    still come from the user's own file. Must run before Prefect is imported."""
    if "PREFECT_HOME" in os.environ or "PREFECT_API_URL" in os.environ:
        return
    user_profiles = Path("~/.prefect/profiles.toml").expanduser()
    if user_profiles.is_file():
        os.environ.setdefault("PREFECT_PROFILES_PATH", str(user_profiles))
    workspace.make_dir(workspace.prefect_home)  # Prefect makes only the leaf
    os.environ["PREFECT_HOME"] = str(workspace.prefect_home)


def _fail(
    err: Console, args: argparse.Namespace, exc: BaseException, stage: str | None = None
) -> int:
    """One line on stderr. An error of ours says what is wrong; any other gets a sentence of
    ours naming the stage, then its first line (its traceback with --debug)."""
    from trustflow.errors import TrustflowError

    message = str(exc)
    if not isinstance(exc, TrustflowError):
        first = (message.strip().splitlines() or [""])[0]
        during = f"the {stage} stage failed: " if stage else ""
        message = f"{during}{type(exc).__name__}: {first}"
        if not args.debug:
            message += " (run again with --debug for the traceback)"
    if args.debug:
        traceback.print_exception(exc)
    err.print(f"[red]error:[/red] {message}", highlight=False, soft_wrap=True)
    if getattr(args, "json", False):
        print(json.dumps({"state": "FAILED", "error": message, "error_type": type(exc).__name__}))
    return 1


def _names(text: str) -> list[str]:
    """A comma-separated list of names (``a,b``), blanks dropped."""
    return [name.strip() for name in text.split(",") if name.strip()]


def run_command(args: argparse.Namespace) -> int:
    from trustflow.workspace import Workspace

    err = Console(stderr=True, highlight=False)
    workspace = Workspace.resolve(args.workspace)
    pipeline = PIPELINES[args.pipeline]
    _quiet_prefect(args.debug)
    _isolate_prefect(workspace)
    # Imported here: Prefect reads its settings at import time.
    from trustflow.config import load_config
    from trustflow.errors import ConfigError

    try:
        chosen = None if args.candidates is None else _names(args.candidates)
        config = load_config(args.config, args.overrides, pipeline.config, candidates=chosen)
    except ConfigError as exc:
        return _fail(err, args, exc)
    title = f"[bold]{pipeline.flow_name}[/bold] in {workspace.root}"

    def waiting(holder: str) -> None:
        err.print(f"waiting for another run in this workspace ({holder})", highlight=False)

    with workspace.exclusive(waiting):
        code, summary = _run_flow(
            args, err, title, lambda: pipeline.run(config, workspace), workspace, pipeline.flow
        )
    if summary is None:
        return code
    if args.json:
        print(json.dumps(summary))
    else:
        pipeline.show(summary)
    return 0


def pipelines_command(args: argparse.Namespace) -> int:
    rows = [
        {
            "name": p.name,
            "flow": p.flow_name,
            "experiment": p.experiment,
            "model": p.model_name,
            "config": str(p.config_file.relative_to(p.config_file.parents[1])),
            "summary": p.summary,
        }
        for p in PIPELINES.values()
    ]
    if args.json:
        print(json.dumps({"pipelines": rows}))
        return 0
    for row in rows:
        print(f"{row['name']:<8} {row['flow']:<14} model {row['model']:<13} {row['summary']}")
    return 0


def _run_flow(
    args: argparse.Namespace,
    err: Console,
    title: str,
    start: Callable[[], Any],
    workspace: Any,
    prepare: Callable[[], Any] | None = None,
) -> tuple[int, dict[str, Any] | None]:
    """Run a flow with the stage lines on stderr (none with --quiet) and, with --json, a clean
    stdout; (exit code, the flow's summary or None when it failed). Without a Prefect API
    configured, the run gets a temporary server of its own, and ``prepare`` (the flow's
    imports) runs while that server starts; an interrupt ends the run cleanly
    (flows/interrupts.py)."""
    from flows.interrupts import StageTracker
    from flows.progress import StageDisplay

    if not getattr(args, "debug", False):
        # Logging's switch for handler errors: Prefect's log sender otherwise prints "Error
        # logging to API" and the server's reply when its server has gone or cannot write (a
        # full disk), in the middle of the stage lines; the run's own one line says what failed.
        logging.raiseExceptions = False
    progress = logging.getLogger("trustflow.progress")
    progress.setLevel(logging.INFO)
    progress.propagate = False
    handlers: list[logging.Handler] = [StageTracker()]
    if not getattr(args, "quiet", False):
        handlers.append(StageDisplay(err))
        err.print(title)
    for handler in handlers:
        progress.addHandler(handler)
    try:
        return _run_with_server(args, err, start, workspace, handlers[0], prepare)
    finally:  # one command's display, not every later one's (tests call main() many times)
        for handler in handlers:
            progress.removeHandler(handler)


def _run_with_server(
    args: argparse.Namespace,
    err: Console,
    start: Callable[[], Any],
    workspace: Any,
    tracker: Any,
    prepare: Callable[[], Any] | None,
) -> tuple[int, dict[str, Any] | None]:
    """The flow on the configured Prefect API, or on a temporary server of its own, under the
    run's interrupt handling."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows import engine_db
    from flows.interrupts import Interrupts, RunServer
    from trustflow.errors import TrustflowError

    api_url = PREFECT_API_URL.value()
    server = None if api_url else RunServer(workspace.prefect_home / "server.log")

    def abandon(signum: int) -> None:
        _abandon(args, err, signum, tracker, api_url, server, workspace)

    with Interrupts(abandon) as interrupts:
        try:
            if server is not None:
                try:
                    start_server = server.start
                    api_url = engine_db.prepared(lambda: start_server(meanwhile=prepare))
                except TrustflowError as exc:
                    return _fail(err, args, exc), None
                # After Prefect's own exit hooks, which send the run's last logs and events.
                atexit.register(server.stop)
            # With --json, stdout carries exactly one JSON object: whatever a library prints
            # meanwhile goes to stderr instead.
            quiet_stdout = contextlib.redirect_stdout(sys.stderr)
            with (
                temporary_settings({PREFECT_API_URL: api_url}),
                quiet_stdout if args.json else contextlib.nullcontext(),
            ):
                state = start()
        except BaseException as exc:
            # KeyboardInterrupt, or whatever Prefect raised while the interrupt unwound it
            if interrupts.signum is None:
                full = _storage_full(exc, tracker, workspace)
                if full is None:
                    raise
                return _fail(err, args, full), None
        if interrupts.signum is not None:  # also when the flow turned it into a failed state
            interrupts.abandon()  # ends the process
    outcome = state.result(raise_on_failure=False)
    if not state.is_completed() or isinstance(outcome, BaseException):
        error = outcome if isinstance(outcome, BaseException) else RuntimeError(state.message)
        full = _storage_full(error, tracker, workspace)
        return _fail(err, args, full or error, tracker.stage), None
    return 0, outcome.model_dump(mode="json")


LOW_SPACE = 1 << 20  # bytes free below which a failed run is put down to a full disk


def _storage_full(error: BaseException, tracker: Any, workspace: Any) -> Exception | None:
    """A full disk, wherever in the run it struck (an OSError ENOSPC naming its file, or SQLite's
    "database or disk is full" from a store), as one line naming the path and the stage."""
    from trustflow.errors import StorageFull, TrustflowError

    seen: BaseException | None = error
    where = None
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno == errno.ENOSPC:
            where = seen.filename or workspace.root
            break
        if "database or disk is full" in str(seen):
            where = workspace.mlflow_db if "sqlalchemy" in type(seen).__module__ else workspace.root
            break
        seen = seen.__cause__ or seen.__context__
    else:
        if isinstance(error, TrustflowError):  # a failure of its own (a gate, bad data)
            return None
        # Prefect's own server, its database in the workspace, answers 500 when its disk is
        # full; the error says nothing of the disk, so ask the disk.
        with contextlib.suppress(OSError):
            if shutil.disk_usage(workspace.root).free < LOW_SPACE:
                where = workspace.root
        if where is None:
            return None
    what = tracker.outcome()
    return StorageFull(
        f"no space left on the device holding {where} (during {tracker.stage}); {what}; "
        "free some space and run again"
    )


def _abandon(
    args: argparse.Namespace,
    err: Console,
    signum: int,
    tracker: Any,
    api_url: str,
    server: Any,
    workspace: Any,
) -> None:
    """An interrupted run, after (or instead of) the flow unwinding: the flow run Cancelled,
    this process's MLflow runs KILLED with a note, one line, children stopped (the caller then
    exits with 130 or 143)."""
    import signal

    from flows.interrupts import stop_children

    name = signal.Signals(signum).name
    stage = tracker.stage
    what = tracker.outcome()
    message = f"interrupted during {stage}; {what}"
    uri = workspace.tracking_uri()
    if not uri.startswith("sqlite:") or workspace.mlflow_db.exists():  # (never create a store)
        with contextlib.suppress(Exception):
            from tasks.tracking.runs import end_interrupted_runs

            end_interrupted_runs(uri, f"Interrupted ({name}) during {stage}.")
    if tracker.flow_run_id:
        with contextlib.suppress(Exception):
            from prefect.client.orchestration import SyncPrefectClient
            from prefect.states import Cancelled

            with SyncPrefectClient(api_url) as client:
                client.set_flow_run_state(
                    tracker.flow_run_id, Cancelled(message=f"{name}: {message}"), force=True
                )
    err.print(message, highlight=False, soft_wrap=True)
    if getattr(args, "json", False):  # the real stdout: the flow may still be redirecting it
        print(json.dumps({"state": "CANCELLED", "error": message, "error_type": "Interrupted",
                          "stage": stage, "signal": name}), file=sys.__stdout__)  # fmt: skip
    for stream in (sys.stdout, sys.__stdout__, sys.stderr):
        if stream is not None:
            stream.flush()
    # What follows may make background threads complain about servers that are gone.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    if server is not None:
        server.stop(wait=5)
    stop_children()


def deploy_command(args: argparse.Namespace) -> int:
    from trustflow.workspace import Workspace

    err = Console(stderr=True, highlight=False)
    workspace = Workspace.resolve(args.workspace)
    _quiet_prefect(args.debug)
    _isolate_prefect(workspace)
    from flows.deploy import run_deploy

    given = {"model": args.model, "base_image": args.base_image, "port": args.port}
    parameters = {
        **{name: value for name, value in given.items() if value is not None},
        "target": args.target,
        "out": args.out,
        "registry": args.registry,
        "vendor_wheels": not args.no_vendor_wheels,
        "apply": not args.no_apply,
        "gpu": args.gpu,
        "workspace": str(workspace.root),
    }
    title = f"[bold]deploy-model[/bold] {args.model or 'the champion'} -> {args.target}"
    code, summary = _run_flow(args, err, title, lambda: run_deploy(parameters), workspace)
    if summary is None:
        return code
    if args.summary:
        from flows.deploy import release_markdown

        with open(args.summary, "a", encoding="utf-8") as out:
            out.write(release_markdown(summary))
    if args.json:
        print(json.dumps(summary))
        return 0
    model, deployment = summary["model"], summary["deployment"]
    print(f"model    {model['name']} v{model['version']}  ({model['source']})")
    for key in ("bundle", "kubernetes", "triton"):
        if key in deployment:
            print(f"{key:<8} {deployment[key]['path']}")
    if "docker" in deployment:
        image = deployment["docker"]
        print(f"image    {', '.join(image['tags'])}  {image['size_bytes'] / 1e6:.0f} MB")
        print(f"run it   docker run --rm -p 8080:8080 {image['image']}")
    print(f"mlflow   run {summary['mlflow_run_id']} (experiment deploy-model)")
    return 0


def serve_command(args: argparse.Namespace) -> int:
    err = Console(stderr=True, highlight=False)
    from pydantic import ValidationError

    from flows.serve import serve
    from trustflow.errors import ConfigError, TrustflowError
    from trustflow.serving.app import ServeSettings
    from trustflow.workspace import Workspace

    try:
        options = {name: getattr(args, name, None) for name in ServeSettings.model_fields}
        settings = ServeSettings(**{k: v for k, v in options.items() if v is not None})
    except ValidationError as exc:
        problem = exc.errors()[0]
        option = str(problem["loc"][0]).replace("_", "-")
        return _fail(err, args, ConfigError(f"--{option}: {problem['msg']}"))
    try:
        serve(args.model, settings, Workspace.resolve(args.workspace), args.access_log)
    except TrustflowError as exc:
        return _fail(err, args, exc)
    return 0


def predict_command(args: argparse.Namespace) -> int:
    """Records from a file scored by a server: labels and probabilities. With --encrypted the
    rows are preprocessed and encrypted here, and only ciphertexts are sent."""
    import httpx

    from trustflow.errors import TrustflowError

    err = Console(stderr=True, highlight=False)
    token = os.environ.get("TRUSTFLOW_SERVE_TOKEN") or None
    try:
        records = _read_records(Path(args.records))
        if args.encrypted:
            from trustflow.client import EncryptedClient

            with EncryptedClient(args.url, token, layout=args.layout) as client:
                prediction = client.predict(records)
            labels, probabilities = prediction.labels, prediction.probabilities
        else:
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            response = httpx.post(
                f"{args.url.rstrip('/')}/v1/predict",
                json={"records": records},
                headers=headers,
                timeout=300,
            )
            answer = response.json()
            if response.status_code >= 400:
                raise TrustflowError(f"{response.status_code}: {answer.get('message')}")
            labels, probabilities = answer["labels"], answer["probabilities"]
    except httpx.HTTPError as exc:
        return _fail(err, args, TrustflowError(f"{args.url}: {exc}"))
    except TrustflowError as exc:
        return _fail(err, args, exc)
    if args.json:
        print(json.dumps({"predictions": labels, "probabilities": probabilities}))
    else:
        for row, (label, probability) in enumerate(zip(labels, probabilities, strict=True)):
            print(f"{row:>6}  {label:<12} {max(probability):.4f}")
    return 0


def _read_records(path: Path) -> list[dict[str, Any]]:
    from trustflow.errors import TrustflowError

    try:
        payload = json.loads(path.read_text())
    except OSError as exc:
        raise TrustflowError(f"{path}: cannot read it ({exc.strerror})") from None
    except json.JSONDecodeError as exc:
        raise TrustflowError(f"{path}: not JSON ({exc})") from None
    records = payload.get("records") if isinstance(payload, dict) else payload
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise TrustflowError(f'{path}: expected {{"records": [{{column: value, ...}}, ...]}}')
    return records


def trigger_command(args: argparse.Namespace) -> int:
    """Exit 0 only when the flow run completed: a failed gate fails the CI job."""
    from trustflow.workspace import Workspace

    err = Console(stderr=True, highlight=False)
    workspace = Workspace.resolve(args.workspace)
    _quiet_prefect(args.debug)
    from flows.trigger import summary_markdown, trigger
    from trustflow.config import apply_overrides, load_config, parse_override
    from trustflow.errors import TrustflowError

    flow = args.deployment.split("/")[0]
    try:
        parameters: dict[str, Any] = {}
        for text in args.params:
            path, value = parse_override(text)
            parameters[".".join(path)] = value
        if args.overrides:
            known = {p.flow_name: p for p in PIPELINES.values()}
            defaults = None
            if flow in known:  # refused here, in one line, before any run is created
                load_config(None, args.overrides, known[flow].config)
                defaults = known[flow].config()  # a list entry set by name starts from these
            parameters["config"] = apply_overrides({}, args.overrides, defaults)
        done = trigger(args.deployment, parameters, workspace, args.timeout)
    except TrustflowError as exc:
        return _fail(err, args, exc)
    if args.summary:
        with open(args.summary, "a", encoding="utf-8") as summary:
            summary.write(summary_markdown(done))
    if args.json:
        print(json.dumps(done.model_dump(mode="json")))
    else:
        print(f"{done.deployment}  {done.state}  flow run {done.flow_run_name}  {done.url or ''}")
        if done.message and not done.completed:
            print(f"  {done.message}")
        report = done.mlflow
        if report is not None:
            print(f"mlflow   run {report.run_id}: {report.reason or report.status}")
            for v in report.versions:
                gates = ", ".join(f"{g.name} {'passed' if g.passed else 'FAILED'}" for g in v.gates)
                aliases = f" @{', @'.join(v.aliases)}" if v.aliases else ""
                print(f"  {v.name} v{v.version}{aliases} ({v.candidate}): {gates}")
    return 0 if done.completed else 1


def server_command(args: argparse.Namespace) -> int:
    from flows import servers
    from trustflow.workspace import Workspace

    ws = Workspace.resolve(args.workspace)
    try:
        if args.action == "up":
            servers.up(ws, args.prefect_port, args.mlflow_port, args.pool, args.database_url)
        elif args.action == "down":
            stopped = servers.down(ws)
            if not args.json:
                print(f"stopped: {', '.join(stopped) or 'nothing was running'}")
                return 0
        report = servers.status(ws)
    except servers.ServerError as exc:
        if args.json:
            print(json.dumps({"error": str(exc), "error_type": type(exc).__name__}))
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps({"workspace": str(ws.root), "services": report}))
    elif args.action != "down":
        if not report:
            print(f"no servers recorded for {ws.root}")
        for item in report:
            state = "up" if item["healthy"] else ("running" if item["running"] else "stopped")
            print(f"{item['name']:<8} {state:<8} pid {item['pid']:<8} {item['url']}")
        if report and args.action == "up":
            urls = {str(i["name"]): i["url"] for i in report}
            print(
                f"\nUIs: Prefect {urls['prefect']}, MLflow {urls['mlflow']}. To record runs "
                f"there: PREFECT_API_URL={urls['prefect']}/api MLFLOW_TRACKING_URI={urls['mlflow']}"
            )
    healthy = all(item["healthy"] for item in report)
    return 0 if args.action != "status" or (report and healthy) else 1


def schema_command(args: argparse.Namespace) -> int:
    from trustflow.data.infer import infer_schema
    from trustflow.data.sources import load_source
    from trustflow.errors import TrustflowError

    try:
        loaded = load_source(f"csv:{args.file}", encoding=args.encoding)
        text = infer_schema(
            loaded.frame,
            Path(args.file),
            args.target,
            sensitive=_names(args.sensitive),
            columns=None if args.columns is None else _names(args.columns),
            task=args.task,
        )
    except TrustflowError as exc:
        return _fail(Console(stderr=True, highlight=False), args, exc)
    print(text, end="")
    return 0


def main(argv: list[str] | None = None) -> int:
    from trustflow.errors import WorkspaceError

    args = _parser().parse_args(argv)
    try:
        if args.command == "serve":
            return serve_command(args)
        if args.command == "server":
            return server_command(args)
        if args.command == "deploy":
            return deploy_command(args)
        if args.command == "pipelines":
            return pipelines_command(args)
        if args.command == "predict":
            return predict_command(args)
        if args.command == "trigger":
            return trigger_command(args)
        if args.command == "schema":
            return schema_command(args)
        return run_command(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except WorkspaceError as exc:  # before a command could start (an unwritable workspace)
        return _fail(Console(stderr=True, highlight=False), args, exc)


if __name__ == "__main__":
    sys.exit(main())
