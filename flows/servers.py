"""``trustflow server up|down|status``: a Prefect server, an MLflow tracking server and a Prefect
worker for the deployments' work pool (``trustflow-process``), on loopback, as background
processes of one workspace.

State lives in ``<workspace>/.trustflow/servers/``: ``servers.json`` (ports, URLs, pids) and one
log per process. By default the Prefect server keeps a SQLite database in ``servers/prefect/``
and the MLflow server uses the workspace's own ``mlflow.db``, so runs made before with the local
store are visible in its UI. With ``--database-url postgresql://USER@HOST:PORT/NAME`` both run on
PostgreSQL instead, in databases ``NAME_prefect`` and ``NAME_mlflow`` (created when missing:
each keeps its own schema migrations). Artifacts stay in the workspace's ``mlartifacts/``.
Each process is its own session (process group), so ``down`` stops it with everything it
spawned.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx

from trustflow.errors import TrustflowError
from trustflow.workspace import Workspace

BIN = Path(sys.executable).parent
HOST = "127.0.0.1"


class ServerError(TrustflowError):
    """A server could not be started, reached or stopped."""


@dataclass
class Service:
    name: str
    pid: int
    url: str  # what a person opens (or, for the worker, the API it polls)
    health: str | None  # a URL answering 200 when it is up; None for the worker
    log: str


def _state_dir(ws: Workspace) -> Path:
    return ws.state_dir / "servers"


def _state_file(ws: Workspace) -> Path:
    return _state_dir(ws) / "servers.json"


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (exited, not yet reaped) is not alive for our purposes.
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split()[2] == "Z")


def _port_free(port: int) -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((HOST, port))
        except OSError:
            return False
    return True


def _healthy(url: str | None) -> bool:
    if url is None:
        return True
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "no output"


def _tail(path: str, lines: int = 5) -> str:
    try:
        text = Path(path).read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(text[-lines:])


def _start(name: str, command: list[str], env: dict[str, str], ws: Workspace) -> tuple[int, str]:
    log = _state_dir(ws) / f"{name}.log"
    with open(log, "w") as out:
        process = subprocess.Popen(
            command,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # its own process group: down stops its children too
            cwd=ws.root,
        )
    return process.pid, str(log)


def _wait(service: Service, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not process_alive(service.pid):
            raise ServerError(f"{service.name} exited during start: {_tail(service.log)}")
        if service.health is None or _healthy(service.health):
            return
        time.sleep(0.3)
    raise ServerError(f"{service.name} did not answer {service.health} within {timeout:.0f} s")


def _wait_online(worker: Service, api: str, pool: str, timeout: float) -> None:
    """Until the pool lists a worker ONLINE (its first heartbeat), so runs can start."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not process_alive(worker.pid):
            raise ServerError(f"worker exited during start: {_tail(worker.log)}")
        try:
            found = httpx.post(f"{api}/work_pools/{pool}/workers/filter", json={}, timeout=5)
            if any(w.get("status") == "ONLINE" for w in found.json()):
                return
        except (httpx.HTTPError, ValueError):
            pass
        time.sleep(0.5)
    raise ServerError(f"no worker came online in pool '{pool}' within {timeout:.0f} s")


def _stop(service: Service, timeout: float = 20) -> None:
    if not process_alive(service.pid):
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(service.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process_alive(service.pid):
        time.sleep(0.2)
    if process_alive(service.pid):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(service.pid, signal.SIGKILL)


@dataclass(frozen=True)
class Databases:
    prefect: str  # SQLAlchemy URLs
    mlflow: str


def postgres_databases(url: str) -> Databases:
    """Check ``url`` is a reachable PostgreSQL server and create ``NAME_prefect`` and
    ``NAME_mlflow`` on it when missing."""
    from urllib.parse import urlsplit, urlunsplit

    import psycopg2

    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    if parts.scheme not in ("postgresql", "postgres") or not name or not parts.hostname:
        raise ServerError(f"--database-url {url}: expected postgresql://USER@HOST:PORT/NAME")
    wanted = {"prefect": f"{name}_prefect", "mlflow": f"{name}_mlflow"}
    maintenance = urlunsplit(("postgresql", parts.netloc, "/postgres", "", ""))
    try:
        connection = psycopg2.connect(maintenance, connect_timeout=5)
    except psycopg2.OperationalError as exc:
        reason = str(exc).strip().splitlines()[0]
        raise ServerError(f"cannot reach PostgreSQL at {parts.netloc}: {reason}") from exc
    connection.autocommit = True  # CREATE DATABASE cannot run inside a transaction
    try:
        with connection.cursor() as cursor:
            for database in wanted.values():
                cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,))
                if cursor.fetchone() is None:
                    cursor.execute(f'CREATE DATABASE "{database}"')
    except psycopg2.Error as exc:  # e.g. no CREATEDB right
        reason = str(exc).strip().splitlines()[0]
        raise ServerError(f"cannot create {database} on {parts.netloc}: {reason}") from exc
    finally:
        connection.close()

    def at(scheme: str, database: str) -> str:
        return urlunsplit((scheme, parts.netloc, f"/{database}", "", ""))

    return Databases(
        prefect=at("postgresql+asyncpg", wanted["prefect"]),
        mlflow=at("postgresql+psycopg2", wanted["mlflow"]),  # SQLAlchemy 2.1 defaults to psycopg 3
    )


def read_state(ws: Workspace) -> list[Service]:
    path = _state_file(ws)
    if not path.exists():
        return []
    try:
        return [Service(**item) for item in json.loads(path.read_text())["services"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ServerError(f"{path} is unreadable ({exc}); stop the processes by hand") from exc


def status(ws: Workspace) -> list[dict[str, object]]:
    return [
        {
            **asdict(service),
            "running": process_alive(service.pid),
            "healthy": process_alive(service.pid) and _healthy(service.health),
        }
        for service in read_state(ws)
    ]


def up(
    ws: Workspace,
    prefect_port: int = 4200,
    mlflow_port: int = 5000,
    pool: str = "trustflow-process",
    database_url: str | None = None,
) -> list[Service]:
    """Start the three processes (or fail, leaving none of them running)."""
    running = [s for s in read_state(ws) if process_alive(s.pid)]
    if running:
        names = ", ".join(f"{s.name} (pid {s.pid})" for s in running)
        raise ServerError(f"already running in {ws.root}: {names}; `trustflow server down` first")
    for name, port in (("Prefect", prefect_port), ("MLflow", mlflow_port)):
        if not _port_free(port):
            raise ServerError(f"{name} port {HOST}:{port} is in use; choose another port")
    databases = postgres_databases(database_url) if database_url else None
    state = _state_dir(ws)
    state.mkdir(parents=True, exist_ok=True)
    prefect_api = f"http://{HOST}:{prefect_port}/api"
    base_env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_"))}
    prefect_env = {
        **base_env,
        "PREFECT_HOME": str(state / "prefect"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_API_URL": prefect_api,
    }
    server_env = {k: v for k, v in prefect_env.items() if k != "PREFECT_API_URL"}
    server_env["PREFECT_UI_API_URL"] = prefect_api  # the UI's calls go to this port, not 4200
    if databases is not None:
        server_env["PREFECT_SERVER_DATABASE_CONNECTION_URL"] = databases.prefect
    mlflow_store = databases.mlflow if databases else f"sqlite:///{ws.mlflow_db}"
    started: list[Service] = []
    try:
        pid, log = _start(
            "prefect",
            [str(BIN / "prefect"), "server", "start", "--host", HOST, "--port", str(prefect_port)],
            server_env,
            ws,
        )
        started.append(
            Service("prefect", pid, f"http://{HOST}:{prefect_port}", f"{prefect_api}/health", log)
        )
        pid, log = _start(
            "mlflow",
            [
                str(BIN / "mlflow"),
                "server",
                "--host",
                HOST,
                "--port",
                str(mlflow_port),
                "--backend-store-uri",
                mlflow_store,
                "--artifacts-destination",
                str(ws.mlflow_artifacts),
                "--workers",
                "1",
            ],
            {
                **base_env,
                "MLFLOW_DISABLE_TELEMETRY": "true",
                # MLflow's job runner (GenAI evaluation, trace roll-ups) is half a dozen extra
                # processes trustflow never uses; setting the variable keeps it.
                "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": os.environ.get(
                    "MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false"
                ),
            },
            ws,
        )
        started.append(
            Service(
                "mlflow",
                pid,
                f"http://{HOST}:{mlflow_port}",
                f"http://{HOST}:{mlflow_port}/health",
                log,
            )
        )
        for service in started:
            _wait(service, timeout=120)
        created = subprocess.run(
            [str(BIN / "prefect"), "work-pool", "create", pool, "--type", "process"],
            env=prefect_env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        said = created.stdout + created.stderr
        if created.returncode != 0 and "already exists" not in said:  # an existing pool is kept
            raise ServerError(f"could not create work pool '{pool}': {_last_line(said)}")
        # Flow runs the worker starts track to this MLflow server and use this workspace.
        worker_env = {
            **prefect_env,
            "MLFLOW_TRACKING_URI": f"http://{HOST}:{mlflow_port}",
            "TRUSTFLOW_WORKSPACE": str(ws.root),
            # Poll for scheduled runs every 2 s (Prefect's default is 10): a run triggered from
            # the UI starts within seconds on an idle worker.
            "PREFECT_WORKER_QUERY_SECONDS": "2",
        }
        pid, log = _start(
            "worker", [str(BIN / "prefect"), "worker", "start", "--pool", pool], worker_env, ws
        )
        worker = Service("worker", pid, f"{prefect_api} (pool {pool})", None, log)
        started.append(worker)
        _wait_online(worker, prefect_api, pool, timeout=60)
    except BaseException:
        for service in reversed(started):
            _stop(service)
        raise
    _state_file(ws).write_text(json.dumps({"services": [asdict(s) for s in started]}, indent=2))
    return started


def down(ws: Workspace) -> list[str]:
    """Stop every recorded process (the worker first); returns the names stopped."""
    services = read_state(ws)
    stopped = []
    for service in reversed(services):
        if process_alive(service.pid):
            _stop(service)
            stopped.append(service.name)
    _state_file(ws).unlink(missing_ok=True)
    return stopped
