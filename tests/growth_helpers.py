"""Short growths for tests. The digits preset sizes its phases in optimiser steps (a 400-step
floor per subtree phase, a 3,000-step fine-tune) and retrains the whole tree every 3 splits; a test
that asks for 1-6 epochs per phase switches those off, so its phases train what it says."""
NO_FLOORS = ["optim.min_steps_subtree=0", "optim.min_steps_finetune=0", "growth.intermediate_fulltrain_every=0"]
