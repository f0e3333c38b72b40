"""The CLI's two front ends share one registry below both: no import circle."""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_submit_and_cli_import_only_the_registry_below_them():
    code = ("import sys, jobs.submit; assert 'jobs.cli' not in sys.modules, 'jobs.submit imports jobs.cli'; "
            "import jobs.registry as r, jobs.cli as c; assert c.JOBS is r.JOBS and c.compose is r.compose; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
    for path in ("jobs/submit.py", "jobs/registry.py"):
        assert "from .cli import" not in (ROOT / path).read_text()
