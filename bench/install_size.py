"""What a user's install weighs: a fresh virtual environment with the CPU torch wheel and ``pip install .``
of the committed tree (the service and the engine, no test tools), measured before and after Python
compiles its bytecode.

    python -m bench.install_size            # about 3 minutes; needs the package index
    python -m bench.install_size --extra test   # the developers' install, for comparison

Prints the totals and the largest packages, and writes bench/out/install-size.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.common import OUT_DIR

REPO = Path(__file__).resolve().parents[1]
TORCH = "torch==2.13.0"  # the CPU wheel .ci/run installs


def _mb(path: Path, suffix: str | None = None) -> float:
    files = (p for p in path.rglob("*") if p.is_file() and not p.is_symlink())
    return sum(p.stat().st_size for p in files if suffix is None or p.suffix == suffix) / 1e6


def _pip(venv: Path, *args: str) -> None:
    subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "--no-compile", *args], check=True)


def measure(extra: str | None) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="gtc-size-") as tmp:
        venv = Path(tmp) / "venv"
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        # From a clean copy of the committed tree: building in place would leave build/ in the checkout.
        source = Path(tmp) / "src"
        source.mkdir()
        archive = subprocess.run(["git", "-C", str(REPO), "archive", "HEAD"], check=True, capture_output=True)
        subprocess.run(["tar", "-x", "-C", str(source)], input=archive.stdout, check=True)
        _pip(venv, TORCH)
        _pip(venv, f"{source}[{extra}]" if extra else str(source))
        (site,) = (venv / "lib").glob("python3*/site-packages")
        before = _mb(venv)
        compile_all = [str(venv / "bin" / "python"), "-m", "compileall", "-q", "-j", "0", str(site)]
        subprocess.run(compile_all, check=False)  # a few third-party test files do not compile
        packages = sorted(((_mb(p), p.name) for p in site.iterdir() if p.is_dir()), reverse=True)
        return {
            "install": f".[{extra}]" if extra else ".",
            "torch": TORCH,
            "mb_files": round(before, 1),
            "mb_with_bytecode": round(_mb(venv), 1),
            "largest": [{"package": name, "mb": round(mb, 1)} for mb, name in packages[:12]],
        }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--extra", help="an optional-dependencies group, e.g. test")
    args = p.parse_args(argv)
    result = measure(args.extra)
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    name = f"install-size{'-' + args.extra if args.extra else ''}.json"
    (OUT_DIR / name).write_text(json.dumps(result, indent=1))
    print(
        f"pip install {result['install']} with {TORCH} (CPU): {result['mb_files']:.0f} MB of files, "
        f"{result['mb_with_bytecode']:.0f} MB once the bytecode is compiled"
    )
    for row in result["largest"]:  # type: ignore[attr-defined]
        print(f"  {row['package']:<28} {row['mb']:>7.1f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
