"""What a console must not show: Ray's, Ray Train's and DeepSpeed's own output (a worker's output
forwarded with its "(Actor pid=N)" prefix, Ray's and DeepSpeed's log records, Ray Train's reports
and its clean-up warnings). It belongs in <run_dir>/logs/."""
import re

RAY_INTERNALS = re.compile(r"\(\w+ pid=\d+|PlacementGroupCleaner|TrainingReport|TrainController|worker\.py:\d+|"
                           r"real_accelerator|\[(?:INFO|WARNING)\]|INFO \w+\.py|ActorDiedError|raylet")


def ray_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if RAY_INTERNALS.search(line)]
