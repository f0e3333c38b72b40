"""Augmentations for the contrastive routing term (reference notes, section 6).

Each preset maps a uint8 (C, H, W) tensor to an augmented uint8 (C, H, W) tensor, built from
torchvision's transforms (v2, which work on uint8 tensors directly). The stream draws `views`
of every image with it (two for the contrastive term); DDPM training uses none.

  cifar   RandomResizedCrop(scale 0.2-1, bicubic), h-flip, ColorJitter(0.4, 0.4, 0.4, 0.1) with
          p = 0.8, RandomGrayscale p = 0.2 (CIFAR-10 and CUBICC in the reference)
  celeba  RandomResizedCrop(scale 0.75-1, ratio 4/5-5/4, bicubic), h-flip, ColorJitter(0.2, 0.2, 0.2)
          with p = 0.8
  crop    the cifar preset's crop and h-flip without its colour jitter and greyscale (data whose
          classes differ by colour)
  flip    h-flip only (grey-scale data; the reference uses no augmentation there)
  affine  RandomAffine: rotation up to 10 degrees, shift up to 1/8 of the side, scale 0.9-1.1
          (digits and other grey-scale glyphs, whose class a flip can change; not in the reference)
"""
from __future__ import annotations

from typing import Callable

import torch

PRESETS = ("cifar", "celeba", "crop", "flip", "affine")
COLOUR_PRESETS = ("cifar", "celeba")   # these jitter colours: 3-channel data only


def contrastive_augment(preset: str, image_size: int, channels: int) -> Callable[[torch.Tensor], torch.Tensor]:
    from torchvision.transforms import InterpolationMode, v2

    if preset not in PRESETS:
        raise ValueError(f"augmentation preset must be one of {PRESETS}, got {preset!r}")
    if preset == "flip":
        return v2.RandomHorizontalFlip()
    if preset == "affine":
        return v2.RandomAffine(degrees=10, translate=(0.125, 0.125), scale=(0.9, 1.1),
                               interpolation=InterpolationMode.BILINEAR)
    if preset == "crop":
        return v2.Compose([
            v2.RandomResizedCrop(image_size, scale=(0.2, 1.0), interpolation=InterpolationMode.BICUBIC,
                                 antialias=True),
            v2.RandomHorizontalFlip(),
        ])
    if channels != 3:
        raise ValueError(f"augmentation preset {preset!r} needs colour images, got {channels} channel(s)")
    if preset == "cifar":
        return v2.Compose([
            v2.RandomResizedCrop(image_size, scale=(0.2, 1.0), interpolation=InterpolationMode.BICUBIC,
                                 antialias=True),
            v2.RandomHorizontalFlip(),
            v2.RandomApply([v2.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
            v2.RandomGrayscale(p=0.2),
        ])
    return v2.Compose([
        v2.RandomResizedCrop(image_size, scale=(0.75, 1.0), ratio=(4 / 5, 5 / 4),
                             interpolation=InterpolationMode.BICUBIC, antialias=True),
        v2.RandomHorizontalFlip(),
        v2.RandomApply([v2.ColorJitter(0.2, 0.2, 0.2)], p=0.8),
    ])


def augment_u8(u8: torch.Tensor, augment: Callable[[torch.Tensor], torch.Tensor], views: int) -> torch.Tensor:
    """uint8 (B, C, H, W) -> `views` augmented views of each image, (B, views, C, H, W); each image
    and view draws its own crop, flip and jitter."""
    return torch.stack([torch.stack([augment(img) for img in u8]) for _ in range(views)], 1)


def augment_views(x: torch.Tensor, augment: Callable[[torch.Tensor], torch.Tensor], views: int = 2) -> torch.Tensor:
    """Float images in [-1, 1], (B, C, H, W) -> (B, views, C, H, W), augmented on their uint8 pixels
    as the stream does with the shards' images."""
    u8 = ((x + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8)
    return augment_u8(u8, augment, views).float().div(127.5).sub(1.0)
