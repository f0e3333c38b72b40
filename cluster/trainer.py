"""The TorchTrainer every Ray Train run of the project starts: Ray Train's own, less a helper that
cannot work on a cluster without Ray's dashboard.

Ray Train V2 starts a PlacementGroupCleaner beside each run's controller: a detached actor that
asks Ray's State API every second whether the controller is alive, to remove the run's placement
group if the controller dies. The State API is served by the dashboard. A local cluster starts
without one (cluster/session.py), so each query blocks (measured: `ray.util.state.get_actor` waits
40 s, then fails), and the controller's shutdown waits 12 s for the cleaner before it gives up:
every run (a growth, each diffusion mode, the classifier) ended 12 s after its last step. On a
cluster without a dashboard the cleaner is left out; a placement group of a controller that died
goes with the cluster there (a local cluster lives as long as its driver). Where a dashboard runs
(a cluster joined by address, usually), Ray Train's callbacks are kept as they are.
"""
from __future__ import annotations

from ray.train.torch import TorchTrainer


def dashboard_running() -> bool:
    """Whether the connected cluster serves Ray's dashboard (and with it the State API)."""
    try:
        from ray._private.worker import get_dashboard_url
        return bool(get_dashboard_url())
    except Exception:  # noqa: BLE001 - an API that moved: assume a dashboard, keep Ray's behaviour
        return True


def without_cleaner(callbacks: list, dashboard: bool) -> list:
    """Ray Train's default callbacks, less the placement-group cleaner when there is no dashboard."""
    if dashboard:
        return callbacks
    return [c for c in callbacks if type(c).__name__ != "PlacementGroupCleanerCallback"]


class Trainer(TorchTrainer):
    def _create_default_callbacks(self):
        return without_cleaner(super()._create_default_callbacks(), dashboard_running())
