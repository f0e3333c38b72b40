"""`python -m cluster.wait_for_ray HOST:PORT --nodes N`: wait until N Ray nodes are alive (the batch
script runs it between starting the head, the other nodes and the driver)."""
from __future__ import annotations

import argparse
import sys
import time


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("address")
    ap.add_argument("--nodes", type=int, default=1)
    ap.add_argument("--timeout", type=float, default=120)
    args = ap.parse_args()
    import ray

    deadline, last = time.time() + args.timeout, "not reachable"
    while time.time() < deadline:
        try:
            ray.init(address=args.address, logging_level="ERROR", log_to_driver=False)
            alive = sum(n["Alive"] for n in ray.nodes())
            ray.shutdown()
            if alive >= args.nodes:
                print(f"treediff: Ray at {args.address}: {alive} node(s) up", flush=True)
                return 0
            last = f"{alive} of {args.nodes} nodes up"
        except Exception as e:  # not up yet
            last = str(e).splitlines()[0] if str(e) else type(e).__name__
            if ray.is_initialized():
                ray.shutdown()
        time.sleep(2)
    print(f"treediff: Ray at {args.address}: {last} after {args.timeout:.0f} s", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
