"""A real Triton Inference Server on CPU for the tests (tests/stream/test_triton_*.py).

nvidia-pytriton's wheel carries ``tritonserver`` with the python backend; it
needs numpy<2, so it lives in its own venv, made once by scripts/triton_env.sh
and reused (``~/.cache/wavstream/triton-venv``, or $WAVSTREAM_TRITON_VENV).
The server binaries are copied once per venv with the python-backend stub of
the venv's Python put in ``backends/python/`` (as pytriton does). The stub
imports wavstream from this checkout through $WAVSTREAM_TRITON_PYTHONPATH.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

REPO = Path(__file__).resolve().parent.parent
_SCRIPT = REPO / "scripts" / "triton_env.sh"


def triton_venv() -> Path:
    """The venv with nvidia-pytriton (created on first use; a failure is an error, not a skip)."""
    out = subprocess.run(["bash", str(_SCRIPT)], check=True, capture_output=True, text=True, timeout=1800)
    return Path(out.stdout.strip().splitlines()[-1])


def _venv_python_info(venv: Path) -> dict:
    code = ("import json,sys,sysconfig,site;print(json.dumps({'ver':f'{sys.version_info[0]}.{sys.version_info[1]}',"
            "'libdir':sysconfig.get_config_var('LIBDIR'),'site':site.getsitepackages()}))")
    return json.loads(subprocess.run([str(venv / "bin" / "python"), "-c", code], check=True, capture_output=True,
                                     text=True).stdout)


def server_install(venv: Path) -> tuple[Path, dict]:
    """tritonserver's folder with the stub for the venv's Python in backends/python/ (copied once)."""
    info = _venv_python_info(venv)
    site = Path(info["site"][0])
    dist = site / "pytriton" / "tritonserver"
    dest = venv / "wavstream-tritonserver"
    stub = dest / "backends" / "python" / "triton_python_backend_stub"
    if not stub.is_file():
        tmp = venv / "wavstream-tritonserver.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(dist, tmp, ignore=shutil.ignore_patterns("python_backend_stubs"))
        shutil.copy2(dist / "python_backend_stubs" / info["ver"] / "triton_python_backend_stub",
                     tmp / "backends" / "python" / "triton_python_backend_stub")
        shutil.rmtree(dest, ignore_errors=True)
        tmp.rename(dest)
    return dest, info


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class TritonServer:
    def __init__(self, proc: subprocess.Popen, grpc_port: int, http_port: int, log: Path) -> None:
        self.proc, self.grpc_port, self.http_port, self.log = proc, grpc_port, http_port, log

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def http(self, path: str, data: Optional[bytes] = None, timeout: float = 120.0) -> tuple[int, bytes]:
        req = urllib.request.Request(f"http://127.0.0.1:{self.http_port}{path}", data=data,
                                     method="POST" if data is not None else "GET")
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def load(self, model: str, timeout: float = 120.0) -> tuple[int, str]:
        """Ask Triton to (re)load ``model``; (status, Triton's message)."""
        code, body = self.http(f"/v2/repository/models/{model}/load", b"{}", timeout=timeout)
        return code, body.decode(errors="replace")

    def crashed(self) -> bool:
        """Triton reported a segmentation fault (its log says so before the process is gone)."""
        return "Signal (11) received" in self.log.read_text(errors="replace")

    def stats(self, model: str) -> dict:
        return json.loads(self.http(f"/v2/models/{model}/stats")[1])


@contextmanager
def triton_server(repo: Path, workdir: Path, *, load: tuple[str, ...] = (), timeout_s: float = 120.0) -> Iterator[TritonServer]:
    """tritonserver on loopback ports over ``repo`` (explicit model control: load only ``load``)."""
    venv = triton_venv()
    server, info = server_install(venv)
    shim = workdir / "pyshim" / "wavstream"
    shim.mkdir(parents=True, exist_ok=True)
    if not (shim / "stream").exists():
        (shim / "stream").symlink_to(REPO / "stream")
    grpc_port, http_port = free_port(), free_port()
    env = dict(os.environ)
    libs = Path(info["site"][0]) / "nvidia_pytriton.libs"
    env["LD_LIBRARY_PATH"] = ":".join(p for p in (str(libs), info["libdir"], env.get("LD_LIBRARY_PATH", "")) if p)
    env["WAVSTREAM_TRITON_PYTHONPATH"] = str(shim.parent)  # templates/model.py: the stub ignores PYTHONPATH
    env["PATH"] = f"{venv / 'bin'}:{env['PATH']}"
    env.pop("PYTHONHOME", None)
    log = workdir / "tritonserver.log"
    cmd = [str(server / "bin" / "tritonserver"), f"--model-repository={repo}", "--model-control-mode=explicit",
           *[f"--load-model={m}" for m in load], f"--grpc-port={grpc_port}", f"--http-port={http_port}",
           "--http-address=127.0.0.1", "--grpc-address=127.0.0.1", "--allow-metrics=false",
           f"--backend-directory={server / 'backends'}", "--log-verbose=0", "--exit-on-error=false"]
    with open(log, "wb") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env)
    ts = TritonServer(proc, grpc_port, http_port, log)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"tritonserver exited ({proc.returncode}):\n{log.read_text()[-4000:]}")
            try:
                if ts.http("/v2/health/live")[0] == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"tritonserver not ready after {timeout_s:g} s:\n{log.read_text()[-4000:]}")
            time.sleep(0.25)
        yield ts
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
