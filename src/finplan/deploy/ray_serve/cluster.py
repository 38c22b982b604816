"""Starting, joining and leaving Ray, and running the application on it, with timeouts everywhere.

``ServeSession(graph, address=None | "host:port", ...)`` is a context manager:

* without ``address`` it starts a local Ray instance of its own: one Ray node per plan node,
  labelled ``finplan-node=<name>`` (the same placement as on real machines), all bound to
  127.0.0.1, with usage statistics, cloud metadata probes and the dashboard off, and its
  temporary files in a private folder; on exit it stops that instance and removes the folder;
* with ``address`` it joins an existing cluster (checking first that the address answers, so
  an unreachable one gives one line instead of Ray's endless retries) and on exit deletes
  only its own application and disconnects: a cluster finplan did not start is never stopped.

Before deploying it checks that a Ray node carries every plan node (else one line naming
the label to add), and it gives ``serve.run`` (which has no timeout) a deadline.
"""
from __future__ import annotations

import contextlib
import logging
import os
import shutil
import socket
import tempfile
import threading
from pathlib import Path

from finplan.deploy.ray_serve.graph import AppGraph
from finplan.errors import EnvironmentFault, FinplanError, FinplanInputError

DEFAULT_START_TIMEOUT_S = 120.0
CONNECT_TIMEOUT_S = 5.0
# A local instance is stopped (its processes killed) right after Serve's shutdown, so that
# shutdown need not wait for Serve's controller: in throughput-optimised mode it took 30 s
# (its default timeout) on Ray 2.60, in default mode under a second.
LOCAL_SERVE_SHUTDOWN_TIMEOUT_S = 1.0


def ray_missing_error() -> EnvironmentFault:
    return EnvironmentFault("Ray Serve is not installed", check="install finplan's [ray] extra: pip install 'finplan[ray]'")


def require_ray() -> None:
    """One clear line when Ray Serve is missing; looks without importing ray (Ray reads some of
    the environment at import time, which ``ServeSession`` sets first)."""
    import importlib.util

    spec = importlib.util.find_spec("ray")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    has_serve = any(Path(location, "serve", "__init__.py").is_file() for location in locations)
    if not has_serve or importlib.util.find_spec("starlette") is None:
        raise ray_missing_error()


# Ray Serve's throughput-optimised mode (direct gRPC between replicas, user code on the
# replica's loop) first shipped in Ray 2.56; it roughly halves the cost of a hop.
THROUGHPUT_OPTIMIZED_MIN_RAY = (2, 56)
THROUGHPUT_OPTIMIZED_ENV = "RAY_SERVE_THROUGHPUT_OPTIMIZED"


def installed_ray_version() -> tuple[int, ...] | None:
    """The installed Ray's version as integers (without importing ray), or None."""
    import importlib.metadata

    try:
        text = importlib.metadata.version("ray")
    except importlib.metadata.PackageNotFoundError:
        return None
    numbers = []
    for piece in text.split(".")[:3]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        numbers.append(int(digits or 0))
    return tuple(numbers)


def throughput_optimized_supported() -> bool:
    version = installed_ray_version()
    return version is not None and version[:2] >= THROUGHPUT_OPTIMIZED_MIN_RAY


def serve_mode(throughput_optimized: bool, *, joined: bool) -> str:
    """How the application's Serve runs, in words (``serve``'s startup line, the run report)."""
    if joined:
        # the cluster's processes were started by someone else, with their own environment
        return ("as the cluster was started (throughput-optimised only if its nodes ran with "
                f"{THROUGHPUT_OPTIMIZED_ENV}=1)")
    if throughput_optimized:
        return "throughput-optimised (direct gRPC between replicas)"
    version = installed_ray_version()
    why = "turned off" if throughput_optimized_supported() else \
        f"needs Ray >= {'.'.join(map(str, THROUGHPUT_OPTIMIZED_MIN_RAY))}, installed {'.'.join(map(str, version or ()))}"
    return f"default (throughput-optimised mode {why})"


def quiet_environment(workdir: Path | None, *, throughput_optimized: bool = False) -> dict[str, str]:
    """Environment for Ray processes finplan starts (or the driver, when joining a cluster).

    No traffic may leave the machine: usage statistics off, and their report URL pointed at a
    closed local port because a cluster still posts once otherwise. With ``workdir`` (a local
    instance): HOME points at a folder whose ``ray_bootstrap_config.yaml`` says the provider is
    local (Ray otherwise probes cloud metadata addresses), token authentication is off (it would
    write ``~/.ray/auth_token``), every address is the loopback (Ray otherwise binds to the
    host's address) and Ray's temporary files go to ``workdir`` instead of the shared /tmp/ray.
    """
    env = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_USAGE_STATS_REPORT_URL": "http://127.0.0.1:9/",
           "RAY_SERVE_PROXY_GRACEFUL_SHUTDOWN_TIMEOUT_S": "0.5"}
    if workdir is not None:
        home = workdir / "home"
        home.mkdir(parents=True, exist_ok=True)
        (home / "ray_bootstrap_config.yaml").write_text("provider: {type: local}\n", encoding="utf-8")
        env.update({"HOME": str(home), "RAY_AUTH_MODE": "disabled", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
                    "RAY_TMPDIR": str(workdir)})
    if throughput_optimized:
        # set before Ray starts: every Ray process of the local instance inherits it
        env[THROUGHPUT_OPTIMIZED_ENV] = "1"
    return env


@contextlib.contextmanager
def patched_environ(env: dict[str, str]):
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def check_port_free(host: str, port: int) -> None:
    """One clear line, before Ray starts (tens of seconds), when ``port`` on ``host`` is taken:
    Serve's proxy would otherwise fail deep inside Ray with a long traceback."""
    import errno

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the proxy binds it
        try:
            sock.bind((host.strip("[]"), int(port)))
        except OSError as exc:
            why = "taken by another process" if exc.errno == errno.EADDRINUSE else (exc.strerror or str(exc))
            raise EnvironmentFault(f"--port: port {port} on {host} is {why}",
                                   check="choose another port, or leave --port out for a free one") from None


@contextlib.contextmanager
def keep_sigterm_handler():
    """Ray's init installs its own SIGTERM handler (a native abort, exit 134, in a driver);
    the caller's (``finplan serve`` stops cleanly on SIGTERM as on Ctrl-C) is put back."""
    import signal
    import threading as _threading

    main = _threading.current_thread() is _threading.main_thread()
    previous = signal.getsignal(signal.SIGTERM) if main else None
    try:
        yield
    finally:
        if main and previous is not None:
            signal.signal(signal.SIGTERM, previous)


def check_reachable(address: str, timeout_s: float = CONNECT_TIMEOUT_S) -> None:
    """One clear line when ``address`` (host:port of a Ray head) does not answer."""
    host, sep, port = address.rpartition(":")
    if address.startswith("ray://"):
        raise FinplanInputError(f"is {address!r}; give the head's GCS address host:port (Ray Client is not supported)",
                                field="--address")
    if not sep or not host or not port.isdigit():
        raise FinplanInputError(f"is {address!r}; expected HOST:PORT of a Ray head (ray start --head prints it)",
                                field="--address")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
            pass
    except OSError as exc:
        raise EnvironmentFault(f"--address: no Ray head answers at {address} ({exc.strerror or exc.__class__.__name__})",
                               check="is `ray start --head` running there and the port open?") from None


def missing_plan_nodes(graph: AppGraph, ray_nodes: list[dict]) -> list[str]:
    alive = [n for n in ray_nodes if n.get("Alive", n.get("alive", True))]
    return [node for node in graph.plan_nodes if not any(graph.placement.carried_by(r, node) for r in alive)]


def missing_nodes_error(graph: AppGraph, missing: list[str]) -> EnvironmentFault:
    what = "; ".join(f"plan node {node!r}: on its machine run `{graph.placement.how_to_add(node)}`" for node in missing)
    return EnvironmentFault(f"--address: no Ray node carries {', '.join(repr(m) for m in missing)}", check=what)


class LocalCluster:
    """A Ray instance on this machine with one Ray node per plan node (``ray.cluster_utils.Cluster``)."""

    def __init__(self, graph: AppGraph, workdir: Path, *, head_num_cpus: float = 1.0):
        from ray.cluster_utils import Cluster

        self.placement = graph.placement
        self.common = {"node_ip_address": "127.0.0.1", "include_dashboard": False,
                       "object_store_memory": 100 * 1024 * 1024}
        nodes = graph.plan_nodes
        self.cluster = Cluster(initialize_head=True, head_node_args={
            **self.common, "num_cpus": head_num_cpus, "temp_dir": str(workdir / "ray"),
            **graph.placement.local_node_args(nodes[0])})
        self.nodes = {nodes[0]: self.cluster.head_node}
        for node in nodes[1:]:
            self.add(node)

    def add(self, node: str):
        """Start a Ray node standing in for plan node ``node`` (also to bring one back after a fault)."""
        self.nodes[node] = self.cluster.add_node(**self.common, num_cpus=0, **self.placement.local_node_args(node))
        return self.nodes[node]

    @property
    def address(self) -> str:
        return self.cluster.address

    def remove(self, node: str) -> None:
        """Take plan node ``node``'s Ray node away (fault tests): its processes are killed."""
        self.cluster.remove_node(self.nodes.pop(node), allow_graceful=False)

    def shutdown(self) -> None:
        self.cluster.shutdown()


class ServeSession:
    """Ray (local or joined) plus the running application; use as a context manager."""

    def __init__(self, graph: AppGraph, *, address: str | None = None, host: str = "127.0.0.1", port: int | None = None,
                 start_timeout_s: float = DEFAULT_START_TIMEOUT_S, http: bool = True,
                 throughput_optimized: bool | None = None):
        self.graph = graph
        # None: on wherever the installed Ray has it (a local instance only: a joined cluster's
        # processes keep the environment they were started with)
        if throughput_optimized is None:
            throughput_optimized = throughput_optimized_supported()
        self.throughput_optimized = bool(throughput_optimized) and address is None and throughput_optimized_supported()
        self.mode = serve_mode(self.throughput_optimized, joined=address is not None)
        self.address = address
        self.host = host
        self.port = port
        self.start_timeout_s = start_timeout_s
        self.http = http
        self.workdir: Path | None = None
        self.local: LocalCluster | None = None
        self.handle = None
        self._env = None
        self._connected = False
        self._serve_started_here = False

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> "ServeSession":
        try:
            with keep_sigterm_handler():  # Ray's init and Serve's start replace it
                self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def start(self) -> None:
        if self.http and self.port is not None and self.address is None:
            check_port_free(self.host, self.port)  # in seconds, not after Ray's start and a 57-line traceback
        if self.address is not None:
            check_reachable(self.address)
            self._env = patched_environ(quiet_environment(None))
        else:
            # short path: Ray's Unix socket paths must stay under about 100 characters
            self.workdir = Path(tempfile.mkdtemp(prefix="finplan-ray-", dir="/tmp"))
            self._env = patched_environ(quiet_environment(self.workdir, throughput_optimized=self.throughput_optimized))
        self._env.__enter__()  # before the first `import ray`: Ray reads some of it at import time
        require_ray()
        import ray
        if self.address is None:
            _loopback_only()
        from ray import serve

        # Serve's INFO lines ("Started Serve...", "Application ... is ready") are not finplan's output.
        logging.getLogger("ray.serve").setLevel(logging.WARNING)
        if self.address is None:
            self.local = LocalCluster(self.graph, self.workdir)
            address = self.local.address
        else:
            address = self.address
        # never a bare ray.init(): it would silently attach to another process's cluster
        ray.init(address=address, logging_level="WARNING", log_to_driver=False)
        self._connected = True
        missing = missing_plan_nodes(self.graph, ray.nodes())
        if missing:
            raise missing_nodes_error(self.graph, missing)
        if self.http:
            if self.port is None:
                self.port = free_port(self.host) if self.address is None else 8000
            serve.start(http_options={"host": self.host, "port": int(self.port),
                                      "request_timeout_s": self.graph.ingress.timeout_s + 5.0},
                        proxy_location="HeadOnly")
        else:
            serve.start(proxy_location="Disabled")
        self._serve_started_here = True
        from finplan.deploy.ray_serve.app import build_application

        app = build_application(self.graph)
        self.handle = _with_deadline(
            lambda: serve.run(app, name=self.graph.app_name, route_prefix=self.graph.route_prefix if self.http else None),
            self.start_timeout_s,
            f"the application did not become ready within {self.start_timeout_s:.0f} s "
            "(are the Ray nodes short of memory, or onnxruntime missing on one?)", field="--start-timeout-s",
            failure="the application failed to start")

    @property
    def url(self) -> str | None:
        if not self.http or self.port is None:
            return None
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}{self.graph.route_prefix}"

    def close(self) -> None:
        """Delete the application; stop Ray only when this session started it."""
        try:
            if self._connected:
                from ray import serve

                with contextlib.suppress(Exception):
                    if self.local is not None:
                        _shutdown_serve_within(LOCAL_SERVE_SHUTDOWN_TIMEOUT_S)
                        serve.shutdown()
                    else:
                        serve.delete(self.graph.app_name)
                import ray

                with contextlib.suppress(Exception):
                    ray.shutdown()
                self._connected = False
            if self.local is not None:
                with contextlib.suppress(Exception):
                    self.local.shutdown()
                self.local = None
        finally:
            if self._env is not None:
                self._env.__exit__(None, None, None)
                self._env = None
            if self.workdir is not None:
                shutil.rmtree(self.workdir, ignore_errors=True)
                self.workdir = None

    # ------------------------------------------------------------------ helpers for tests and the runner

    def deployment_handle(self, deployment: str, *, blocking: bool = True):
        """A handle on ``deployment``; ``blocking`` (the default: every caller here is a plain
        thread): one whose calls may be waited on with ``.result()`` (throughput-optimised Serve
        otherwise routes on the caller's event loop, which a thread does not have)."""
        from ray import serve

        handle = serve.get_deployment_handle(deployment, app_name=self.graph.app_name)
        if blocking and not handle.is_initialized:  # Serve hands out one handle per deployment, once set up
            handle._init(_run_router_in_separate_loop=True)
        return handle


def _shutdown_serve_within(timeout_s: float) -> None:
    """Serve's shutdown, waiting at most ``timeout_s`` for its controller (``serve.shutdown``
    waits 30 s and takes no timeout)."""
    from ray.serve.context import _get_global_client

    client = _get_global_client(raise_if_no_controller_running=False)
    if client is None:
        return
    serve_logger = logging.getLogger("ray.serve")
    level = serve_logger.level
    serve_logger.setLevel(logging.ERROR)  # its "failed to shut down" warning is expected: Ray is stopped next
    try:
        client.shutdown(timeout_s=timeout_s)
    finally:
        serve_logger.setLevel(level)


def _loopback_only() -> None:
    """Make Ray resolve "this machine" to 127.0.0.1 even when ray was imported before the
    environment was set (Ray reads RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER once, at import): otherwise
    the driver dials the host's address while the local instance listens on the loopback."""
    from ray._private import ray_constants

    ray_constants.ENABLE_RAY_CLUSTER = False


def _with_deadline(function, timeout_s: float, message: str, *, field: str, failure: str = "the call failed"):
    """Run ``function`` in a daemon thread; raise one clear line if it has not returned in time."""
    box: dict = {}

    def target():
        try:
            box["value"] = function()
        except BaseException as exc:  # carried to the caller's thread
            box["error"] = exc

    thread = threading.Thread(target=target, name="finplan-ray-call", daemon=True)
    thread.start()
    thread.join(timeout_s)
    if thread.is_alive():
        raise EnvironmentFault(f"{field}: {message}")
    if "error" in box:
        error = box["error"]
        if isinstance(error, FinplanError):
            raise error
        text = str(error).strip().splitlines()
        raise EnvironmentFault(f"{field}: {failure}: {error.__class__.__name__}{': ' + text[0] if text else ''}") from None
    return box.get("value")
