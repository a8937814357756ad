"""A small class-conditional GAN: the generator that synthesis draws extra training images from.

Generator: a conditional DCGAN (Radford, Metz & Chintala 2016, "Unsupervised Representation Learning
with Deep Convolutional GANs"): noise z and a learned class embedding, concatenated, a linear layer to
a (4·w)-channel map at a quarter of the image side, two stride-2 transposed convs with BatchNorm and
ReLU, tanh. Discriminator: two stride-2 convs and a linear head, every layer under spectral norm
(Miyato, Kataoka, Koyama & Yoshida 2018, "Spectral Normalization for GANs"), conditioned by projection
(Miyato & Koyama 2018, "cGANs with Projection Discriminator"): D(x, y) = ψ(φ(x)) + embed(y)·φ(x).
Loss: the hinge loss of both papers,

    L_D = E[max(0, 1 − D(x, y))] + E[max(0, 1 + D(G(z, y), y))],   L_G = −E[D(G(z, y), y)],

the recipe those papers found to train stably at 32 px, with Adam(β=(0.5, 0.999)) at the recipe's
learning rate (:class:`augsearch.settings.GanRecipe`).

Training is seeded: each epoch's data order and noise come from ``(seed, epoch)`` alone and a
checkpoint is written (atomically) after every epoch, so a killed training resumes to the same weights
as one never stopped. The caching, the quality figures and the refusals are in
:mod:`augsearch.generator`.
"""

from __future__ import annotations

import copy
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from augsearch import files, progress
from augsearch.settings import GanRecipe


class Generator(nn.Module):
    """G(z, y) -> images in [-1, 1], (N, C, S, S)."""

    def __init__(self, num_classes: int, channels: int, image_size: int, z_dim: int, width: int) -> None:
        super().__init__()
        self.z_dim, self.image_size, self.channels = z_dim, image_size, 4 * width
        self.base = -(-image_size // 4)  # ceil: 28 -> 7, 16 -> 4, 32 -> 8; the output is cropped to size
        self.embed = nn.Embedding(num_classes, z_dim)
        self.project = nn.Sequential(
            nn.Linear(2 * z_dim, 4 * width * self.base**2, bias=False),
            nn.BatchNorm1d(4 * width * self.base**2),
            nn.ReLU(inplace=True),
        )
        self.body = nn.Sequential(
            nn.ConvTranspose2d(4 * width, 2 * width, 4, 2, 1, bias=False),
            nn.BatchNorm2d(2 * width),
            nn.ReLU(inplace=True),
            nn.ConvTranspose2d(2 * width, channels, 4, 2, 1),
            nn.Tanh(),
        )

    def forward(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        h = self.project(torch.cat([z, self.embed(labels)], dim=1))
        out = self.body(h.view(len(z), self.channels, self.base, self.base))
        margin = (out.shape[-1] - self.image_size) // 2
        return out[..., margin : margin + self.image_size, margin : margin + self.image_size]


class Discriminator(nn.Module):
    """D(x, y): spectral-norm convs, projection conditioning (see the module docstring)."""

    def __init__(self, num_classes: int, channels: int, image_size: int, width: int) -> None:
        super().__init__()
        self.features = nn.Sequential(
            spectral_norm(nn.Conv2d(channels, 2 * width, 4, 2, 1)),
            nn.LeakyReLU(0.2, inplace=True),
            spectral_norm(nn.Conv2d(2 * width, 4 * width, 4, 2, 1)),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Flatten(),
        )
        size = 4 * width * (image_size // 4) ** 2  # kernel 4, stride 2, padding 1 halves a side (floor)
        self.head = spectral_norm(nn.Linear(size, 1))
        self.embed = spectral_norm(nn.Embedding(num_classes, size))

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        h = self.features(images)
        return self.head(h).squeeze(1) + (self.embed(labels) * h).sum(dim=1)


def build_generator(recipe: GanRecipe, num_classes: int, channels: int, image_size: int) -> Generator:
    return Generator(num_classes, channels, image_size, recipe.z_dim, recipe.width)


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Generator output in [-1, 1], (N, C, H, W) -> uint8 (N, H, W, C), the loader's image format."""
    scaled = ((images.float() + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
    return scaled.permute(0, 2, 3, 1).contiguous()


def from_uint8(images: np.ndarray) -> torch.Tensor:
    """uint8 (N, H, W, C) -> float (N, C, H, W) in [-1, 1], what the discriminator sees."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1


def _epoch_seed(seed: int, epoch: int) -> int:
    return int(np.random.SeedSequence([seed % 2**32, epoch, 0x67616E]).generate_state(1)[0])  # "gan"


def train_gan(
    x: np.ndarray,
    y: np.ndarray,
    num_classes: int,
    recipe: GanRecipe,
    seed: int,
    device: torch.device,
    checkpoint: Path,
    memory_format: torch.memory_format = torch.contiguous_format,
) -> tuple[Generator, dict[str, float]]:
    """Train G and D on uint8 images ``x`` with labels ``y`` (the training split only); returns the
    generator in eval mode and what the training measured. Resumes from ``checkpoint`` if one is
    there (an unusable one is moved aside to ``.corrupt`` and training starts over)."""
    channels, size = int(x.shape[3]), int(x.shape[1])
    torch.manual_seed(seed)
    generator = build_generator(recipe, num_classes, channels, size).to(device, memory_format=memory_format)
    critic = Discriminator(num_classes, channels, size, recipe.width).to(device, memory_format=memory_format)
    opt_g = torch.optim.Adam(generator.parameters(), lr=recipe.lr, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(critic.parameters(), lr=recipe.lr, betas=(0.5, 0.999))
    modules = {"generator": generator, "critic": critic, "opt_g": opt_g, "opt_d": opt_d}
    history = {"seconds": 0.0, "d_loss": 0.0, "g_loss": 0.0}
    first = _resume(checkpoint, modules, history, device)
    images, labels = from_uint8(x), torch.from_numpy(y.astype(np.int64))
    per_epoch = len(x) if recipe.epoch_images is None else min(len(x), recipe.epoch_images)
    steps = max(1, per_epoch // recipe.batch_size)
    for epoch in range(first, recipe.epochs):
        start = time.perf_counter()
        stream = torch.Generator().manual_seed(_epoch_seed(seed, epoch))
        order = torch.randperm(len(x), generator=stream)
        noise = torch.Generator(device=device).manual_seed(_epoch_seed(seed, epoch))
        d_sum = g_sum = torch.zeros((), device=device)
        bar = progress.bar(range(steps), desc=f"generator epoch {epoch + 1}/{recipe.epochs}", leave=False)
        for step in bar:
            rows = order[step * recipe.batch_size : (step + 1) * recipe.batch_size]
            real, cls = images[rows].to(device, memory_format=memory_format), labels[rows].to(device)
            z = torch.randn(len(rows), recipe.z_dim, generator=noise, device=device)
            fake = generator(z, cls)
            d_loss = F.relu(1 - critic(real, cls)).mean() + F.relu(1 + critic(fake.detach(), cls)).mean()
            opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            opt_d.step()
            g_loss = -critic(fake, cls).mean()
            opt_g.zero_grad(set_to_none=True)
            g_loss.backward()
            opt_g.step()
            d_sum, g_sum = d_sum + d_loss.detach(), g_sum + g_loss.detach()
        history["seconds"] += time.perf_counter() - start
        history["d_loss"], history["g_loss"] = d_sum.item() / steps, g_sum.item() / steps
        _save(checkpoint, epoch + 1, modules, history)
        progress.line(
            f"generator epoch {epoch + 1}/{recipe.epochs}: D loss {history['d_loss']:.4f}, "
            f"G loss {history['g_loss']:.4f}"
        )
    return generator.eval(), history


def _save(path: Path, epochs_done: int, modules: dict, history: dict[str, float]) -> None:
    state = {name: module.state_dict() for name, module in modules.items()}
    files.save_torch(path, {"epochs_done": epochs_done, "history": dict(history), **state})


def _resume(path: Path, modules: dict, history: dict[str, float], device: torch.device) -> int:
    """The first epoch still to run: 0 without a checkpoint, or after an unusable one (moved aside,
    one line on stderr, every module back as it was)."""
    if not path.is_file():
        return 0
    fresh = {name: copy.deepcopy(module.state_dict()) for name, module in modules.items()}
    try:
        state = torch.load(path, map_location=device, weights_only=True)
        for name, module in modules.items():
            module.load_state_dict(state[name])
        done = int(state["epochs_done"])
        found = {key: float(value) for key, value in dict(state["history"]).items()}
    except Exception as error:  # torch/zipfile/pickle raise many kinds; all mean "not usable"
        for name, module in modules.items():
            module.load_state_dict(fresh[name])
        files.set_aside(path, error)
        return 0
    history.update(found)
    return done


ARCHITECTURE = "dcgan-sn-projection-hinge"


def recipe_dict(recipe: GanRecipe) -> dict[str, Any]:
    """The recipe as it is written beside the weights (and into the policy file's provenance)."""
    return {"architecture": ARCHITECTURE, **asdict(recipe)}


@torch.inference_mode()
def sample(generator: Generator, labels: torch.Tensor, stream: torch.Generator) -> torch.Tensor:
    """uint8 (N, H, W, C) images of classes ``labels`` (on the generator's device), the noise drawn
    from ``stream`` (a generator on that device): the same stream state, the same images."""
    z = torch.randn(len(labels), generator.z_dim, generator=stream, device=labels.device)
    return to_uint8(generator(z, labels))
