"""Diffusion stage: noise schedules, training loss and EMA (`schedule`), classifier-free
guidance (`guidance`), DDIM/DDPM samplers and DDIM inversion (`sampler`), the UNet (`unet`)
and its conditioning encoders (`conditioning`). Plain PyTorch; images are in [-1, 1] throughout.
"""
