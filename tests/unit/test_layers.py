"""The science layer never imports the distributed stack or the config system."""
import ast
from pathlib import Path

FORBIDDEN = {"ray", "deepspeed", "hydra", "omegaconf"}


def test_treediff_imports_no_ray_deepspeed_or_hydra():
    root = Path(__file__).resolve().parents[2] / "treediff"
    offenders = []
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            offenders += [f"{path.relative_to(root)}: {n}" for n in names if n.split(".")[0] in FORBIDDEN]
    assert list(root.rglob("*.py")) and not offenders, offenders
