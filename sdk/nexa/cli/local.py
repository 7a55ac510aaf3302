"""``nexa up`` / ``nexa down`` / ``nexa status``: a local Nexa (gateway + pull workers) on this machine.

Processes run detached (their own session, so closing the terminal or Ctrl-C in
it does not kill them) and leave pid files and logs under ``$NEXA_HOME/run/``.
Secrets (worker secret, bootstrap API key) are generated once and kept in
``$NEXA_HOME/config.json`` (mode 0600), so restarts keep the same key.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.panel import Panel
from rich.table import Table

from nexa import config
from nexa.cli.context import EXIT_FAILURE, EXIT_USAGE, OPTIONS, CliError, handle_errors
from nexa.cli.render import console, err_console
from nexa.client import NexaClient
from nexa.contracts.artifacts import Deployment

GATEWAY = "gateway"
READY_TIMEOUT = 60.0
STOP_GRACE = 20.0
PROCESS_MARKERS = {GATEWAY: "nexa_gateway", "worker": "nexa_engines.worker"}


@dataclass
class LocalNexa:
    """A running local Nexa: where it listens and the credentials it was started with."""

    home: Path
    url: str
    api_key: str
    worker_secret: str
    pids: dict[str, int] = field(default_factory=dict)
    already_running: bool = False


@contextlib.contextmanager
def home_env(home: Path) -> Iterator[None]:
    """Point NEXA_HOME (and so ``nexa.config``) at ``home`` for the duration of the block."""
    previous = os.environ.get(config.ENV_HOME)
    os.environ[config.ENV_HOME] = str(home)
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(config.ENV_HOME, None)
        else:
            os.environ[config.ENV_HOME] = previous


def run_dir(home: Path) -> Path:
    """Where pid files, logs and the state file live."""
    return home / "run"


def _kind(name: str) -> str:
    return GATEWAY if name == GATEWAY else "worker"


def read_pids(home: Path) -> dict[str, int]:
    """Process name -> pid, from ``run/*.pid`` (unreadable files are skipped)."""
    pids: dict[str, int] = {}
    directory = run_dir(home)
    if not directory.is_dir():
        return pids
    for pid_file in sorted(directory.glob("*.pid")):
        try:
            pids[pid_file.stem] = int(pid_file.read_text().strip())
        except (OSError, ValueError):
            continue
    return pids


def pid_alive(pid: int, kind: str | None = None) -> bool:
    """True when ``pid`` runs (and, where /proc tells, is the Nexa process ``kind``, not a reused pid)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return kind is None
    proc = Path(f"/proc/{pid}")
    if proc.is_dir():
        try:
            if (proc / "stat").read_text().split(") ", 1)[1].startswith("Z"):
                return False  # a zombie: exited, not yet reaped
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, IndexError):
            return True
        if kind is not None and PROCESS_MARKERS[kind] not in cmdline:
            return False
    return True


def gateway_ready(url: str, timeout: float = 2.0) -> bool:
    """True when ``GET /readyz`` answers 200."""
    try:
        return httpx.get(f"{url}/readyz", timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    """True when something accepts connections on ``host:port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _require(module: str, extra: str) -> None:
    if importlib.util.find_spec(module) is None:
        raise CliError(
            f"{module} is not installed; a local Nexa needs it: pip install 'nexa-forge[{extra}]'", EXIT_USAGE
        )


def _generate_api_key() -> str:
    from nexa_gateway.services.keys import generate_api_key

    return str(generate_api_key())


def load_secrets(stored: dict[str, Any]) -> tuple[str, str]:
    """(bootstrap API key, worker secret): the ones kept in config, else fresh ones."""
    api_key = stored.get("local_api_key")
    secret = stored.get("worker_secret")
    if not isinstance(api_key, str) or not api_key:
        api_key = _generate_api_key()
    if not isinstance(secret, str) or not secret:
        secret = secrets.token_urlsafe(32)
    return api_key, secret


# One user on their own machine: their local endpoints (a vLLM on localhost, their own
# deployments) are fair targets for teachers and judges.
LOOPBACK = "127.0.0.0/8,::1,localhost"


def allowed_dataset_roots() -> list[str]:
    """The user's own files: home directory, current directory, system temp directory."""
    roots = [str(Path.home()), str(Path.cwd()), tempfile.gettempdir()]
    return list(dict.fromkeys(os.path.realpath(r) for r in roots))


def gateway_env(home: Path, api_key: str, secret: str, database_url: str | None) -> dict[str, str]:
    """The environment a local gateway runs with."""
    env = dict(os.environ)
    env.setdefault("NEXA_OUTBOUND_ALLOWLIST", LOOPBACK)
    env.update(
        {
            config.ENV_HOME: str(home),
            "NEXA_DATABASE_URL": database_url or f"sqlite:///{home / 'nexa.db'}",
            "NEXA_ARTIFACT_ROOT": str(home / "artifacts"),
            "NEXA_ALLOWED_DATASET_ROOTS": os.pathsep.join(allowed_dataset_roots()),
            # One user on their own machine: their tenant reads their files, and their own
            # local endpoints (a vLLM on localhost) are callable as teachers and judges.
            "NEXA_BOOTSTRAP_GRANT_LOCAL_ROOTS": "true",
            "NEXA_WORKER_SECRET": secret,
            "NEXA_BOOTSTRAP_API_KEY": api_key,
        }
    )
    return env


def _spawn(
    home: Path, name: str, argv: list[str], env: dict[str, str], detach: bool
) -> subprocess.Popen[bytes]:
    directory = run_dir(home)
    directory.mkdir(parents=True, exist_ok=True)
    with (directory / f"{name}.log").open("ab") as log_file:
        proc = subprocess.Popen(
            argv,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=detach,
            cwd=str(home),
        )
    (directory / f"{name}.pid").write_text(f"{proc.pid}\n")
    return proc


def log_tail(home: Path, name: str, lines: int = 15) -> str:
    """The last lines of a process's log."""
    try:
        text = (run_dir(home) / f"{name}.log").read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def _start_workers(
    home: Path,
    url: str,
    secret: str,
    count: int,
    detach: bool,
    skip: set[str],
    tiers: Sequence[str] = (),
) -> dict[str, int]:
    env = dict(os.environ)
    env.setdefault("NEXA_OUTBOUND_ALLOWLIST", LOOPBACK)  # the same outbound policy as the gateway's
    env.update({config.ENV_HOME: str(home), "NEXA_WORKER_SECRET": secret})
    started: dict[str, subprocess.Popen[bytes]] = {}
    for index in range(1, count + 1):
        name = f"worker-{index}"
        if name in skip:
            continue
        argv = [
            sys.executable,
            "-m",
            "nexa_engines.worker",
            "--gateway",
            url,
            "--name",
            f"local-{index}",
            "--workdir",
            str(home / "work" / name),
        ]
        if tiers:
            # Separate nodes of the mesh: each its own key (a replica per node) and a pinned tier.
            argv += ["--state-dir", str(home / "nodes" / name), "--tier", tiers[(index - 1) % len(tiers)]]
        started[name] = _spawn(home, name, argv, env, detach)
    # A worker that dies at once (no engines, refused secret) says why in its log.
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline:
        for name, proc in started.items():
            if proc.poll() is not None:
                raise CliError(f"{name} exited at start (code {proc.returncode}):\n{log_tail(home, name)}")
        time.sleep(0.2)
    return {name: proc.pid for name, proc in started.items()}


def _wait_ready(home: Path, url: str, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise CliError(
                f"the gateway exited at start (code {proc.returncode}):\n{log_tail(home, GATEWAY)}"
            )
        if gateway_ready(url, timeout=1.0):
            return
        time.sleep(0.25)
    raise CliError(
        f"the gateway did not become ready in {timeout:.0f} s; see {run_dir(home) / 'gateway.log'}"
    )


def start_local(
    home: Path,
    *,
    port: int = 8080,
    workers: int = 2,
    database_url: str | None = None,
    write_config: bool = True,
    detach: bool = True,
    worker_tiers: Sequence[str] = (),
) -> LocalNexa:
    """Start (or find running) a local gateway and ``workers`` workers; secrets kept in ``home``'s config.

    With ``worker_tiers``, each worker is a node of its own (its own key) pinned to the next tier."""
    _require("nexa_gateway", "gateway")
    _require("nexa_engines", "engines")
    home = home.expanduser().resolve()
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    with home_env(home):
        stored = config.load_config()
        api_key, secret = load_secrets(stored)
        url = f"http://127.0.0.1:{port}"
        pids = read_pids(home)
        gateway_pid = pids.get(GATEWAY)
        if gateway_pid and pid_alive(gateway_pid, GATEWAY) and gateway_ready(stored.get("base_url") or url):
            url = str(stored.get("base_url") or url)
            alive = {n for n, p in pids.items() if n != GATEWAY and pid_alive(p, "worker")}
            new = _start_workers(home, url, secret, workers, detach, skip=alive)
            running = {n: p for n, p in pids.items() if n == GATEWAY or n in alive} | new
            return LocalNexa(home, url, api_key, secret, running, already_running=True)
        stop_local(home, grace=5.0)  # leftovers of a crashed run
        if port_in_use(port):
            raise CliError(
                f"port {port} is already in use by another program; pick another with --port", EXIT_USAGE
            )
        env = gateway_env(home, api_key, secret, database_url)
        argv = [sys.executable, "-m", "nexa_gateway", "--host", "127.0.0.1", "--port", str(port)]
        proc = _spawn(home, GATEWAY, argv, env, detach)
        try:
            _wait_ready(home, url, proc, READY_TIMEOUT)
            worker_pids = _start_workers(home, url, secret, workers, detach, skip=set(), tiers=worker_tiers)
        except BaseException:
            stop_local(home, grace=5.0)
            raise
        (run_dir(home) / "state.json").write_text(
            json.dumps({"url": url, "port": port, "started_at": time.time()})
        )
        updates = {"local_api_key": api_key, "worker_secret": secret}
        if write_config:
            updates |= {"base_url": url, "api_key": api_key}
        config.save_config(updates)
        return LocalNexa(home, url, api_key, secret, {GATEWAY: proc.pid} | worker_pids)


def stop_local(home: Path, *, grace: float = STOP_GRACE) -> list[str]:
    """SIGTERM the processes named by the pid files (workers first), SIGKILL after ``grace``; remove pid files."""
    pids = read_pids(home)
    order = sorted(pids, key=lambda name: name == GATEWAY)  # workers hand their jobs back first
    stopped: list[str] = []
    for phase in ([n for n in order if n != GATEWAY], [GATEWAY] if GATEWAY in pids else []):
        live = {n: pids[n] for n in phase if pid_alive(pids[n], _kind(n))}
        for pid in live.values():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while any(pid_alive(p, _kind(n)) for n, p in live.items()) and time.monotonic() < deadline:
            _reap()
            time.sleep(0.1)
        for name, pid in live.items():
            if pid_alive(pid, _kind(name)):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        _reap()
        stopped.extend(live)
    for name in pids:
        (run_dir(home) / f"{name}.pid").unlink(missing_ok=True)
    (run_dir(home) / "state.json").unlink(missing_ok=True)
    return stopped


def _reap() -> None:
    """Collect exited children (``--foreground`` and ``nexa demo`` start them as our children)."""
    with contextlib.suppress(ChildProcessError, OSError):
        while os.waitpid(-1, os.WNOHANG)[0] != 0:
            pass


def _home(home: Path | None) -> Path:
    if home is not None:
        os.environ[config.ENV_HOME] = str(home.expanduser().resolve())
    return config.nexa_home().expanduser().resolve()


def _ready_panel(local: LocalNexa) -> Panel:
    lines = [
        f"[bold]URL[/]        {local.url}",
        f"[bold]console[/]    {local.url}/console (sign in with the API key: nexa keys env)",
        f"[bold]API key[/]    in {config.config_path()} (used by NexaClient() and the CLI)",
        f"[bold]processes[/]  {', '.join(f'{n} ({p})' for n, p in sorted(local.pids.items()))}",
        f"[bold]logs[/]       {run_dir(local.home)}",
        "[bold]try[/]        nexa demo        [bold]stop[/]  nexa down",
        '[bold]curl[/]       eval "$(nexa keys env)"',
        '           curl -H "Authorization: Bearer $NEXA_API_KEY" "$NEXA_BASE_URL/v1/jobs"',
    ]
    if (
        os.environ.get(config.ENV_HOME)
        and Path(os.environ[config.ENV_HOME]).expanduser().resolve() != (Path.home() / ".nexa").resolve()
    ):
        lines.append(f"[bold]env[/]        export NEXA_HOME={local.home}")
    title = "Nexa is already running" if local.already_running else "Nexa is up"
    return Panel("\n".join(lines), title=title, border_style="green", expand=False)


@handle_errors
def up(
    port: Annotated[int, typer.Option("--port", "-p", min=1, max=65535, help="Gateway port.")] = 8080,
    workers: Annotated[
        int, typer.Option("--workers", "-w", min=0, max=64, help="Local worker processes.")
    ] = 2,
    database_url: Annotated[
        str | None, typer.Option("--database-url", help="Job database (default: SQLite in NEXA_HOME).")
    ] = None,
    home: Annotated[
        Path | None, typer.Option("--home", help="State directory (default: $NEXA_HOME or ~/.nexa).")
    ] = None,
    foreground: Annotated[
        bool, typer.Option("--foreground", help="Stay attached; Ctrl-C stops everything.")
    ] = False,
) -> None:
    """Start a local Nexa: a gateway and pull workers on this machine."""
    directory = _home(home)
    with console.status("starting the gateway and workers..."):
        local = start_local(
            directory, port=port, workers=workers, database_url=database_url, detach=not foreground
        )
    console.print(_ready_panel(local))
    if foreground:
        _stay_attached(local)


def _stay_attached(local: LocalNexa) -> None:
    stop = {"now": False}

    def on_signal(signum: int, frame: object) -> None:
        stop["now"] = True

    previous = signal.signal(signal.SIGTERM, on_signal)
    try:
        while not stop["now"] and pid_alive(local.pids.get(GATEWAY, -1), GATEWAY):
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        err_console.print("stopping...")
        stop_local(local.home)


@handle_errors
def down(
    home: Annotated[
        Path | None, typer.Option("--home", help="State directory (default: $NEXA_HOME or ~/.nexa).")
    ] = None,
    grace: Annotated[
        float, typer.Option("--grace", min=0, help="Seconds to wait before SIGKILL.")
    ] = STOP_GRACE,
) -> None:
    """Stop the local Nexa started by `nexa up` (deployed models keep serving, and are listed)."""
    directory = _home(home)
    serving = _serving_deployments()
    stopped = stop_local(directory, grace=grace)
    console.print(f"stopped {', '.join(sorted(stopped))}" if stopped else "nothing was running")
    if serving:
        # A served model is the user's to stop: say what is left running and how to stop it.
        console.print(f"still serving ({len(serving)}), each its own process:")
        for deployment in serving:
            console.print(f"  {deployment.deployment_id}  {deployment.openai_base_url or ''}")
        console.print(
            "stop them with `nexa deployments undeploy <id>` while Nexa is up, "
            "or start it again (`nexa up`) first"
        )


def _serving_deployments() -> list[Deployment]:
    """The local gateway's running deployments; none when it cannot be asked."""
    try:
        # Briefly and once: a hung gateway must not keep `nexa down` from stopping it.
        with NexaClient(
            api_key=OPTIONS.api_key, base_url=OPTIONS.base_url, timeout=3.0, max_retries=0
        ) as client:
            return [d for d in client.list_deployments(limit=200) if d.status == "running"]
    except Exception:  # a down or unreachable gateway: nothing to list, and down still stops the rest
        return []


@handle_errors
def status(
    home: Annotated[
        Path | None, typer.Option("--home", help="State directory (default: $NEXA_HOME or ~/.nexa).")
    ] = None,
) -> None:
    """What runs locally; exit 1 when the gateway is not up."""
    directory = _home(home)
    pids = read_pids(directory)
    stored = config.load_config()
    url = str(stored.get("base_url") or "http://127.0.0.1:8080")
    table = Table(show_edge=False, header_style="bold")
    for column in ("PROCESS", "PID", "STATE", "LOG"):
        table.add_column(column)
    for name, pid in sorted(pids.items(), key=lambda item: (item[0] != GATEWAY, item[0])):
        alive = pid_alive(pid, _kind(name))
        table.add_row(
            name,
            str(pid),
            "[green]running[/]" if alive else "[red]exited[/]",
            str(run_dir(directory) / f"{name}.log"),
        )
    ready = gateway_ready(url)
    if pids:
        console.print(table)
    gateway_up = bool(pids.get(GATEWAY)) and pid_alive(pids[GATEWAY], GATEWAY)
    if ready:
        console.print(f"gateway {url}: [green]ready[/]")
    elif gateway_up:
        console.print(
            f"gateway {url}: [yellow]running, not ready[/] (see {run_dir(directory) / 'gateway.log'})"
        )
    else:
        console.print("no local Nexa is running: start one with `nexa up`")
    if not ready:
        raise typer.Exit(EXIT_FAILURE)
