"""The distributed runtime (Ray session, Ray Train + DeepSpeed loop, farms, submission).

Only this layer may import ray and deepspeed. The tree stage currently runs in one process
(treediff.vae.trainer); the Ray Train + DeepSpeed loop comes with the runtime milestone.
"""
