"""Entry points: the `treediff` command and one Hydra app per stage (thin: compose, then call)."""
