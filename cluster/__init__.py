"""The distributed runtime: Ray session, Ray Train + DeepSpeed loop, tree growth as Ray tasks,
TensorBoard. Only this layer (and jobs/) imports ray and deepspeed."""
import os as _os

# Ray 2.60 turns token authentication on for a head it starts; a driver or node joining it must
# say so too (otherwise: AuthenticationError ... InvalidAuthToken). Ray reads this at import.
_os.environ.setdefault("RAY_AUTH_MODE", "token")
