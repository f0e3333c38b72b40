"""bench/gpu/check.py, the check prepared for a lent GPU, runs here on the CPU (small models, no
compile): it must not rot between the tasks that are lent a GPU."""
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_gpu_check_runs_on_the_cpu_and_reports_every_cell(tmp_path):
    out = tmp_path / "gpu_check.json"
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu" / "check.py"), "--device", "cpu", "--quick",
                           "--no-compile", "--steps", "3", "--json", str(out)], capture_output=True, text=True,
                          timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    report = json.loads(out.read_text())
    cells = {(r["stage"], r["precision"]) for r in report["rows"]}
    assert cells == {(s, p) for s in ("U-Net step (path)", "TreeVAE phase step") for p in ("fp32", "bf16")}
    for r in report["rows"]:
        assert r["plain_images_per_s"] > 0 and r["loop_images_per_s"] > 0 and r["gflop_per_step"] > 0
        assert r["overhead"] == r["plain_images_per_s"] / r["loop_images_per_s"]
    assert "TFLOP/s" in proc.stdout and "overhead" in proc.stdout
