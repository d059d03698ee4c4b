"""The LiteLLM proxy as a comparison point, set up in its own venv under ``bench/``.

On first use this creates ``bench/.litellm-venv`` and runs ``pip install
'litellm[proxy]'`` there (it is git-ignored and never touches the project's venv).
:func:`start_litellm` writes a config that routes one model, ``bench-model``, to the
benchmark's fake upstream as an OpenAI-compatible endpoint, with no database, no
master key (like our server in these runs, which has no access token set) and
one worker, and starts the proxy on a free port of 127.0.0.1.

The model cost map is read from the installed package rather than fetched (the
proxy would otherwise try the network on start and retry for seconds).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Final

from bench._processes import Proc, allocator_env, free_port, http_json, start, wait_until

__all__ = ["LITELLM_MODEL", "ensure_litellm", "litellm_version", "start_litellm"]

VENV: Final = Path(__file__).resolve().parent / ".litellm-venv"
LITELLM_MODEL: Final = "bench-model"
_BIN: Final = VENV / "bin"


def ensure_litellm() -> Path:
    """The ``litellm`` executable, installing it into ``bench/.litellm-venv`` if needed.

    Raises:
        RuntimeError: the venv could not be created or the install failed.
    """
    executable = _BIN / "litellm"
    if executable.exists():
        return executable
    print("bench: installing litellm[proxy] into bench/.litellm-venv (first use only)...", file=sys.stderr)
    steps = [
        [sys.executable, "-m", "venv", str(VENV)],
        [str(_BIN / "python"), "-m", "pip", "install", "--quiet", "--upgrade", "pip"],
        [str(_BIN / "python"), "-m", "pip", "install", "--quiet", "litellm[proxy]"],
    ]
    for step in steps:
        completed = subprocess.run(step, capture_output=True, check=False)
        if completed.returncode != 0:
            raise RuntimeError(
                f"setting up LiteLLM failed ({' '.join(step[:4])}): "
                f"{completed.stderr.decode(errors='replace')[-1500:]}"
            )
    if not executable.exists():
        raise RuntimeError("litellm[proxy] installed, but bench/.litellm-venv/bin/litellm is missing")
    return executable


def litellm_version() -> str:
    completed = subprocess.run(
        [str(_BIN / "python"), "-c", "import importlib.metadata as m; print(m.version('litellm'))"],
        capture_output=True,
        check=False,
    )
    return completed.stdout.decode().strip() or "unknown"


def _config(upstream_url: str) -> str:
    return f"""\
model_list:
  - model_name: {LITELLM_MODEL}
    litellm_params:
      model: openai/{LITELLM_MODEL}
      api_base: {upstream_url}/v1
      api_key: sk-bench-not-a-real-key
litellm_settings:
  drop_params: true
  telemetry: false
  set_verbose: false
general_settings: {{}}
"""


def start_litellm(upstream_url: str, workdir: Path, *, timeout: float = 90.0) -> tuple[Proc, float]:
    """Start the proxy in front of ``upstream_url``; return it and its cold start in seconds.

    Cold start is the time from process start to the first successful chat completion.

    Raises:
        RuntimeError: the proxy did not answer within ``timeout``.
    """
    executable = ensure_litellm()
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "litellm.yaml"
    config.write_text(_config(upstream_url))
    port = free_port()
    env = {
        **allocator_env(),
        "PATH": f"{_BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        "HOME": str(workdir),
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "LITELLM_LOG": "ERROR",
        "LITELLM_TELEMETRY": "False",
        "NO_PROXY": "*",
        # Our server runs without access control in these benchmarks; so does the proxy.
        "LITELLM_DANGEROUSLY_PERMIT_WEAK_OR_UNSET_MASTER_KEY": "true",
    }
    began = time.perf_counter()
    proc = start(
        "litellm",
        [str(executable), "--config", str(config), "--host", "127.0.0.1", "--port", str(port),
         "--num_workers", "1"],
        env=env,
        cwd=workdir,
        log_path=workdir / "litellm.log",
    )
    url = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        if not proc.alive():
            raise RuntimeError(f"LiteLLM exited: {proc.log_tail()}")
        status, _, _ = http_json(
            f"{url}/v1/chat/completions",
            {"model": LITELLM_MODEL, "messages": [{"role": "user", "content": "warm up"}]},
            timeout=10,
        )
        return status == 200

    if not wait_until(answers, timeout, interval=0.02):
        proc.stop()
        raise RuntimeError(f"LiteLLM did not answer within {timeout:.0f} s: {proc.log_tail()}")
    proc.first_line = url
    return proc, time.perf_counter() - began
