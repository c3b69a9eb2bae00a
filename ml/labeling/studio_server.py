"""A throw-away Label Studio server on this machine, in a virtual environment of its own: what
tests/test_label_studio.py and `benchmarks/active_learning.py --label-studio` run the round trip against.

    why = install()                                  # None when ready (first time ~2 min, ~1 GB)
    server = start(Path("ls-data"), Path("docroot"))  # server.url, server.token; pools in subfolders of docroot
    stop(server)
    python -m ml.labeling.studio_server              # install only

Label Studio brings Django and its own numpy/pandas pins, so it never enters the project's lock: the venv lives
under ~/.cache/visionflow (or $VISIONFLOW_CACHE; keyed by version, kept between runs) and the server runs as a
subprocess on 127.0.0.1 with a fixed user and legacy API token (a local throw-away server, never a shared one).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import venv
from dataclasses import dataclass
from pathlib import Path

import httpx

VERSION = "1.23.2"
VENV = Path(os.environ.get("VISIONFLOW_CACHE", Path.home() / ".cache" / "visionflow")) / f"label-studio-{VERSION}"
USER = "annotator@example.com"
PASSWORD = "visionflow-test-pw"
TOKEN = "0123456789abcdef0123456789abcdef01234567"


def ls_python() -> Path:
    """The Label Studio venv's interpreter (the SDK's RLE decoder runs there)."""
    return VENV / "bin" / "python"


# sentry-sdk 3 dropped the send_default_pii option that Label Studio 1.23.2 passes at start-up (TypeError: Unknown
# option), and label-studio does not cap it
REQUIREMENTS = (f"label-studio=={VERSION}", "sentry-sdk<3")


def install() -> str | None:
    """Create the cached venv with label-studio once; returns why it could not be installed, or None when ready.
    A venv installed with other requirements (the marker file lists them) is brought up to these."""
    ready = VENV / ".installed"
    wanted = "\n".join(REQUIREMENTS) + "\n"
    if ready.exists() and ready.read_text() == wanted:
        return None
    if not ls_python().exists():
        VENV.parent.mkdir(parents=True, exist_ok=True)
        venv.EnvBuilder(with_pip=True, clear=True).create(VENV)
    # the machine-wide pip constraints cap torch for the project; Label Studio needs none of them
    env = {**os.environ, "PIP_CONSTRAINT": ""}
    cmd = [str(ls_python()), "-m", "pip", "install", "-q", "--disable-pip-version-check", *REQUIREMENTS]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        return f"pip install {' '.join(REQUIREMENTS)} failed: {done.stderr.strip()[-500:]}"
    ready.write_text(wanted)
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class LabelStudio:
    url: str
    token: str
    document_root: Path
    process: subprocess.Popen


def server_env(data_dir: Path, document_root: Path) -> dict[str, str]:
    """The environment the README's recipe sets: local files served below `document_root`, a user and token."""
    return {
        **os.environ,
        "LABEL_STUDIO_BASE_DATA_DIR": str(data_dir),
        "LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED": "true",
        "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT": str(document_root),
        "LABEL_STUDIO_USERNAME": USER,
        "LABEL_STUDIO_PASSWORD": PASSWORD,
        "LABEL_STUDIO_USER_TOKEN": TOKEN,
        "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true",
        "LABEL_STUDIO_LATEST_VERSION_CHECK": "false",
        "LABEL_STUDIO_COLLECT_ANALYTICS": "false",
        # reject malformed predictions with 400 instead of logging them
        "fflag_feat_utc_210_prediction_validation_15082025": "true",
    }


def start(data_dir: Path, document_root: Path, timeout: float = 240) -> LabelStudio:
    """Start `label-studio start` and wait until its API answers with the token."""
    port = free_port()
    exe = VENV / "bin" / "label-studio"
    log = open(data_dir / "server.log", "w")  # noqa: SIM115 - the server writes to it for its whole life
    proc = subprocess.Popen(
        [str(exe), "start", "--host", "127.0.0.1", "--port", str(port), "--no-browser"],
        env=server_env(data_dir, document_root),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(
                f"label-studio exited {proc.returncode}: {(data_dir / 'server.log').read_text()[-2000:]}"
            )
        try:
            if httpx.get(f"{url}/api/projects", headers={"Authorization": f"Token {TOKEN}"}, timeout=5).is_success:
                return LabelStudio(url, TOKEN, document_root, proc)
        except httpx.TransportError:
            pass
        time.sleep(1)
    proc.kill()
    raise RuntimeError(f"label-studio did not answer within {timeout}s")


def stop(server: LabelStudio) -> None:
    server.process.terminate()
    try:
        server.process.wait(20)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()


if __name__ == "__main__":
    sys.exit(install())
