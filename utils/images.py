"""Finding and loading the dataset's images, and the Dataset that feeds them to the encoder."""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

from utils.errors import DUCHError


def find_image(image_dir: Path, filename: str, classname: str | None = None) -> Path:
    """``image_dir/filename`` (UCM captions / RSICD flat layout), else ``image_dir/classname/filename``."""
    candidates = [image_dir / filename]
    if classname:
        candidates.append(image_dir / classname / filename)
    for path in candidates:
        if path.is_file():
            return path
    searched = " or ".join(str(c.parent) for c in candidates)
    raise DUCHError(f"image {filename} not found in {searched}; pass --image-dir to the folder that holds the images")


def find_images(image_dir: str | Path, images: Sequence[dict]) -> list[Path]:
    """The file of every JSON image entry, in JSON order; the first missing one is a clear error."""
    image_dir = Path(image_dir)
    if not image_dir.is_dir():
        raise DUCHError(f"image folder not found: {image_dir}; pass --image-dir to the folder that holds the images")
    return [find_image(image_dir, entry["filename"], entry.get("classname")) for entry in images]


def load_image(path: str | Path):
    """The image as an RGB PIL image; an unreadable file is a clear error."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise DUCHError(f"cannot read image {path}: {err}") from None


def check_images_readable(paths: Sequence[Path]) -> None:
    """Cheap header check of every image before the long work (decoding errors are still caught later)."""
    from PIL import Image, UnidentifiedImageError

    for path in paths:
        try:
            with Image.open(path):
                pass
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
            raise DUCHError(f"cannot read image {path}: {err}") from None


class ImageDataset:
    """Map-style dataset of (image tensor, JSON index, error message or '') for a DataLoader.

    Errors travel as data rather than exceptions, so a bad file in a worker process still
    ends as one clear message in the main process (see ``collate_or_error``).
    """

    def __init__(self, paths: Sequence[Path], transform: Callable):
        self.paths = list(paths)
        self.transform = transform  # (PIL image, index) -> tensor

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        import torch

        path = self.paths[index]
        try:
            image = load_image(path)
        except DUCHError as err:
            return torch.empty(0), index, str(err)
        try:
            return self.transform(image, index), index, ""
        except (ValueError, RuntimeError) as err:  # e.g. a random crop larger than the image
            return torch.empty(0), index, f"cannot transform image {path} ({image.width}x{image.height}): {err}"


def collate_or_error(batch):
    """Stack a batch into (images, indices), or return the first error message as a string."""
    import torch

    errors = [message for _, _, message in batch if message]
    if errors:
        return errors[0]
    images = torch.stack([image for image, _, _ in batch])
    indices = torch.tensor([index for _, index, _ in batch], dtype=torch.long)
    return images, indices
