"""Batches for training and evaluation.

Small-image datasets (digits, CIFAR, TinyImageNet) are held as one uint8 tensor on the training
device; the CIFAR augmentation (random crop with zero padding, horizontal flip) is done for the
whole batch with one gather, with no per-sample Python work. ImageNet-scale data goes through one
persistent torchvision DataLoader per split (`FileBatches`), its augmentation seeded per sample.

Views. The CIFAR augmentation can only produce (2p + 1)^2 * 2 distinct views of an image (162 for
padding 4): a row offset and a column offset in [0, 2p] and a flip. `encode_views` numbers them
0..n-1 (`view = (row * (2p + 1) + col) * 2 + flip`), which is how the teacher-logit cache
(trainables/teacher_cache.py) stores the teacher's logits of every view; `TensorBatches.epoch`
yields the view of every image it crops, and `TensorBatches.view_inputs` rebuilds any view.
Without flips (`hflip=False`: the digits set, whose mirror images are other glyphs) there are
(2p + 1)^2 views, numbered `row * (2p + 1) + col`; with flips nothing changes (same draws, same ids).
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from trainables.data.sources import ImageSet


@dataclass(frozen=True)
class Normalization:
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    @staticmethod
    def of(images: np.ndarray) -> "Normalization":
        """Per-channel mean and std of uint8 images (N, H, W, 3), in [0, 1] units."""
        flat = images.reshape(-1, images.shape[-1]).astype(np.float64) / 255.0
        std = np.maximum(flat.std(0), 1e-3)
        return Normalization(tuple(float(v) for v in flat.mean(0)), tuple(float(v) for v in std))


def crop_flip_parameters(batch: int, padding: int, generator: torch.Generator,
                         hflip: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random (row offset, column offset, flip) per image: offsets uniform in [0, 2*padding], flip with p=0.5.

    With `hflip=False` no image is flipped (all False) and no coin is drawn.
    """
    offsets = torch.randint(0, 2 * padding + 1, (2, batch), generator=generator)
    if hflip:
        flips = torch.rand(batch, generator=generator) < 0.5
    else:
        flips = torch.zeros(batch, dtype=torch.bool)
    return offsets[0], offsets[1], flips


def view_count(padding: int, flips: bool) -> int:
    """Distinct views of one image: (2p + 1)^2 crop offsets, times 2 with horizontal flips."""
    return (2 * padding + 1) ** 2 * (2 if flips else 1)


def encode_views(rows: torch.Tensor, cols: torch.Tensor, flips: torch.Tensor, padding: int,
                 with_flips: bool = True) -> torch.Tensor:
    """(row offset, column offset, flip) -> view id in [0, view_count(padding, with_flips))."""
    side = 2 * padding + 1
    grid = rows.long() * side + cols.long()
    return grid * 2 + flips.long() if with_flips else grid


def decode_views(views: torch.Tensor, padding: int,
                 with_flips: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """View ids -> (row offsets, column offsets, flips): the inverse of `encode_views`."""
    side = 2 * padding + 1
    views = views.long()
    if with_flips:
        flips, grid = (views % 2).bool(), views // 2
    else:
        flips, grid = torch.zeros_like(views, dtype=torch.bool), views
    return grid // side, grid % side, flips


def crop_flip(padded: torch.Tensor, index: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor,
              flips: torch.Tensor, size: int) -> torch.Tensor:
    """Gather crops of `size` from padded images (N, H+2p, W+2p, C) at the given offsets, flipped where asked.

    Equals torchvision's RandomCrop(size, padding) followed by RandomHorizontalFlip for the same
    offsets and flips (tested). Returns (B, size, size, C) in the input dtype.
    """
    device = padded.device
    span = torch.arange(size, device=device)
    row_index = rows.to(device)[:, None] + span  # (B, size)
    col_index = cols.to(device)[:, None] + span
    col_index = torch.where(flips.to(device)[:, None], col_index.flip(1), col_index)
    return padded[index.to(device)[:, None, None], row_index[:, :, None], col_index[:, None, :]]


class TensorBatches:
    """Shuffled, augmented training batches from an in-memory uint8 image tensor.

    The generator state is part of the checkpoint, so a resumed run sees the same batches.
    """

    def __init__(self, images: ImageSet, batch_size: int, device: torch.device, normalization: Normalization,
                 augment: bool = True, padding: int = 4, drop_last: bool = False, channels_last: bool = False,
                 hflip: bool = True, pin_memory: bool = False):
        if images.images is None:
            raise ValueError("TensorBatches needs images held in memory")
        tensor = torch.from_numpy(images.images)  # (N, H, W, C) uint8
        self.size = tensor.shape[1]
        self.padding = padding if augment else 0
        if self.padding:
            tensor = torch.nn.functional.pad(tensor, (0, 0, self.padding, self.padding, self.padding, self.padding))
        self.padded = tensor.to(device)
        self.labels = torch.from_numpy(images.labels).to(device)
        self.batch_size = batch_size
        self.augment = augment
        self.hflip = bool(augment and hflip)  # the augmentation flips images horizontally
        self.drop_last = drop_last
        self.device = device
        self.pin_memory = pin_memory  # host-to-device copies from pinned memory (RunDevice.pin_memory)
        self.channels_last = channels_last
        self.mean = torch.tensor(normalization.mean, device=device).view(1, -1, 1, 1) * 255
        self.std = torch.tensor(normalization.std, device=device).view(1, -1, 1, 1) * 255

    def __len__(self) -> int:
        n = len(self.labels)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    @property
    def n_images(self) -> int:
        return len(self.labels)

    @property
    def n_views(self) -> int:
        """Distinct training views of one image (162 for the CIFAR augmentation, 81 without its flips;
        1 without augmentation)."""
        return view_count(self.padding, self.hflip) if self.augment else 1

    def to_input(self, batch_uint8: torch.Tensor) -> torch.Tensor:
        """(B, H, W, C) uint8 -> normalised float (B, C, H, W)."""
        x = batch_uint8.permute(0, 3, 1, 2).float()
        x = (x - self.mean) / self.std
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x.contiguous()

    def epoch(self, generator: torch.Generator, with_views: bool = False) -> Iterator[tuple[torch.Tensor, ...]]:
        """Yields (inputs, labels, image indices) for one pass over the shuffled training set.

        With `with_views`, also the view id of every image (a CPU int64 tensor; all 0 without
        augmentation). The generator is consumed identically either way, so a run sees the same
        batches and views whether or not it asks for them.
        """
        n = len(self.labels)
        order = torch.randperm(n, generator=generator)
        for step in range(len(self)):
            index = order[step * self.batch_size:(step + 1) * self.batch_size]
            if self.augment:
                rows, cols, flips = crop_flip_parameters(len(index), self.padding, generator, self.hflip)
                on_device = self._to_device(index, rows, cols, flips.long())
                batch = crop_flip(self.padded, on_device[0], on_device[1], on_device[2], on_device[3].bool(), self.size)
            else:
                rows = cols = flips = None
                on_device = self._to_device(index)
                batch = self.padded[on_device[0]]
            inputs, labels = self.to_input(batch), self.labels[on_device[0]]
            if not with_views:
                yield inputs, labels, index
            elif rows is None:
                yield inputs, labels, index, torch.zeros(len(index), dtype=torch.long)
            else:
                yield inputs, labels, index, encode_views(rows, cols, flips, self.padding, self.hflip)

    def _to_device(self, *parts: torch.Tensor) -> torch.Tensor:
        """Small CPU index tensors -> the device in one copy; from pinned memory without a host sync
        when pinning (the generator stays on the CPU, so runs reproduce across devices)."""
        stacked = torch.stack(parts)
        if self.pin_memory:
            return stacked.pin_memory().to(self.device, non_blocking=True)
        return stacked.to(self.device)

    def view_inputs(self, index: torch.Tensor, views: torch.Tensor) -> torch.Tensor:
        """Normalised inputs of images `index` seen through `views` (what `epoch` yields for them)."""
        if not self.augment:
            return self.to_input(self.padded[index.to(self.device)])
        rows, cols, flips = decode_views(views, self.padding, self.hflip)
        return self.to_input(crop_flip(self.padded, index, rows, cols, flips, self.size))

    def ordered(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(inputs, labels) in dataset order without augmentation: for evaluation."""
        start = self.padding
        for first in range(0, len(self.labels), self.batch_size):
            batch = self.padded[first:first + self.batch_size]
            if start:
                batch = batch[:, start:start + self.size, start:start + self.size]
            yield self.to_input(batch), self.labels[first:first + self.batch_size]


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


MASK64 = (1 << 64) - 1


def sample_seed(epoch_seed: int, index: int) -> int:
    """The torch seed of one sample's augmentation: a 64-bit mix (splitmix64) of the epoch seed and
    the sample's dataset index, so it depends on neither the worker nor the position in the epoch."""
    z = (epoch_seed + (index + 1) * 0x9E3779B97F4A7C15) & MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    return z ^ (z >> 31)


class _FileDataset(torch.utils.data.Dataset):
    """Decodes one image file per key (index, epoch seed).

    With an epoch seed (training passes of a training set) the random `augment` transform runs
    under torch's global RNG seeded with `sample_seed(epoch seed, index)` (torchvision's
    RandomResizedCrop and RandomHorizontalFlip draw from it), inside `fork_rng` so the caller's RNG
    state is left as it was (that matters with num_workers=0, where this runs in the main process).
    Without one (None: evaluation) the deterministic `plain` transform runs and draws nothing.
    """

    def __init__(self, images: ImageSet, augment, plain):
        self.paths, self.labels = images.paths, images.labels
        self.augment, self.plain = augment, plain

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, key):
        index, epoch_seed = key if isinstance(key, tuple) else (key, None)
        from PIL import Image

        with Image.open(self.paths[index]) as img:
            img = img.convert("RGB")
        if epoch_seed is None or self.augment is None:
            x = self.plain(img)
        else:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(sample_seed(epoch_seed, index))
                x = self.augment(img)
        return x, int(self.labels[index]), index


class _PassSampler(torch.utils.data.Sampler):
    """The keys (index, epoch seed) of the next pass, set by FileBatches before it iterates.

    The DataLoader calls iter() on it in the main process at the start of every pass (also with
    persistent workers), so one DataLoader serves shuffled training epochs and ordered evaluation.
    """

    def __init__(self, n: int):
        self.n = n
        self.order: list[int] | None = None  # None: dataset order
        self.epoch_seed: int | None = None  # None: no augmentation

    def set_pass(self, order: list[int] | None, epoch_seed: int | None) -> None:
        self.order, self.epoch_seed = order, epoch_seed

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        order = range(self.n) if self.order is None else self.order
        seed = self.epoch_seed
        return iter([(i, seed) for i in order])


class FileBatches:
    """ImageNet-style batches decoded from files by DataLoader workers (RandomResizedCrop + flip).

    One DataLoader per FileBatches, made on first use and kept for every pass; with num_workers > 0
    its workers are persistent (they live until `close()`), so epochs and evaluation passes do not
    start processes. The batches do not depend on num_workers: every training epoch draws exactly
    a permutation of the dataset (`torch.randperm(n, generator=g)`) and then one 63-bit epoch seed
    (`torch.randint(2**63 - 1, (), generator=g)`) from the run's generator, nothing else, and each
    sample is augmented under a torch RNG seeded from (epoch seed, sample index); a run restored
    from the generator's state sees the same next epoch as an unbroken one. The DataLoader's own
    generator (its workers' base seeds, which nothing here uses) is private, so no pass touches the
    run's generator beyond those draws nor torch's global RNG; `ordered()` draws nothing at all.

    One pass at a time: starting a pass while another over the same FileBatches is unfinished makes
    the older one raise RuntimeError on its next batch (an abandoned pass is simply dropped).
    """

    # Batches each worker prepares ahead (the DataLoader's default). An ImageNet batch of 512 is
    # ~300 MB of float32 in shared memory, so 2 x num_workers batches in flight is already plenty.
    PREFETCH_FACTOR = 2

    def __init__(self, images: ImageSet, batch_size: int, device: torch.device, train: bool, image_size: int = 224,
                 num_workers: int = 4, channels_last: bool = False, hflip: bool = True, pin_memory: bool = False):
        from torchvision import transforms

        normalize = transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)
        plain = transforms.Compose([transforms.Resize(int(image_size * 256 / 224)), transforms.CenterCrop(image_size),
                                    transforms.ToTensor(), normalize])
        augment = None
        if train:
            flip = [transforms.RandomHorizontalFlip()] if hflip else []
            augment = transforms.Compose([transforms.RandomResizedCrop(image_size), *flip,
                                          transforms.ToTensor(), normalize])
        self.dataset = _FileDataset(images, augment, plain)
        self.batch_size, self.device, self.train, self.pin_memory = batch_size, device, train, pin_memory
        self.num_workers, self.channels_last = max(0, int(num_workers)), channels_last
        self.labels = torch.from_numpy(images.labels)
        self._sampler = _PassSampler(len(self.dataset))
        self._loader: torch.utils.data.DataLoader | None = None
        self._pass = 0  # number of the latest pass started (see `_run`)

    def __len__(self) -> int:
        return -(-len(self.dataset) // self.batch_size)

    def _get_loader(self) -> torch.utils.data.DataLoader:
        if self._loader is None:
            workers = self.num_workers > 0
            self._loader = torch.utils.data.DataLoader(
                self.dataset, batch_size=self.batch_size, sampler=self._sampler, num_workers=self.num_workers,
                # Private: DataLoader draws its workers' base seed from it (from the global RNG without one).
                generator=torch.Generator().manual_seed(0),
                pin_memory=self.pin_memory, persistent_workers=workers,
                prefetch_factor=self.PREFETCH_FACTOR if workers else None,
            )
        return self._loader

    def close(self) -> None:
        """Shut the workers down (the next pass starts new ones)."""
        loader, self._loader = self._loader, None
        self._pass += 1  # a pass still open over the old loader ends with RuntimeError
        if loader is None:
            return
        iterator = getattr(loader, "_iterator", None)
        loader._iterator = None
        shutdown = getattr(iterator, "_shutdown_workers", None)
        if shutdown is not None:
            shutdown()

    def __enter__(self) -> "FileBatches":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _move(self, x, y):
        x = x.to(self.device, non_blocking=True)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, y.to(self.device, non_blocking=True)

    def _run(self, order: list[int] | None, epoch_seed: int | None):
        loader = self._get_loader()
        self._pass += 1
        token = self._pass
        self._sampler.set_pass(order, epoch_seed)
        batches = iter(loader)  # reads the sampler now (with workers: the first prefetched batches too)
        while True:
            if self._pass != token:
                raise RuntimeError("another pass over this FileBatches started before this one finished")
            try:
                batch = next(batches)
            except StopIteration:
                return
            yield batch

    def epoch(self, generator: torch.Generator):
        """Yields (inputs, labels, image indices) for one shuffled, augmented pass.

        The run's generator is consumed here, at the call, not when iterating: a permutation of the
        dataset, then one epoch seed.
        """
        order = torch.randperm(len(self.dataset), generator=generator).tolist()
        epoch_seed = int(torch.randint(0, 2**63 - 1, (), generator=generator))
        return self._epoch(order, epoch_seed)

    def _epoch(self, order: list[int], epoch_seed: int):
        for x, y, index in self._run(order, epoch_seed):
            yield (*self._move(x, y), index)

    def ordered(self):
        """(inputs, labels) in dataset order with the deterministic evaluation transform (Resize +
        CenterCrop, also for a training set); consumes no random number."""
        for x, y, _ in self._run(None, None):
            yield self._move(x, y)
