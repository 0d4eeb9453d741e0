"""Finding and loading the dataset's images, and the Dataset that feeds them to the encoder."""
from __future__ import annotations

import contextlib
import warnings
from collections import Counter
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from utils.errors import DUCHError

# PIL's own default (about 89 megapixels): larger images are refused as possible decompression bombs
DEFAULT_MAX_IMAGE_PIXELS = 1024 * 1024 * 1024 // 4 // 3


def high_bit_depth_rule(bit_depth: int = 16) -> str:
    """How images that are not 8 bits per sample become the encoder's 8-bit RGB input.

    Deterministic, per pixel, never a clipped white; recorded in the feature file's provenance.
    ``bit_depth``: the significant bits of 16-bit images (e.g. 12 for 12-bit sensor data in 16-bit files).
    """
    top = 2 ** bit_depth - 1
    return (
        f"16-bit integer images (PIL modes I;16*, and I) hold {bit_depth}-bit values 0..{top} and are scaled by "
        f"that range: round(v * 255 / {top}) (larger values are refused; --bit-depth sets the bits); "
        "floating-point images (mode F) must hold values in [0, 1] and are scaled by 255; "
        "multi-band 16-bit TIFFs are read as Pillow reads them (the high byte of each sample, i.e. 16 bits scaled "
        "to 8); single-band images are replicated to RGB; of 4-band RGBA/RGBX images (e.g. RGB + near infrared) "
        "the first three bands are used"
    )


_UNREADABLE = (OSError, SyntaxError, ValueError)  # UnidentifiedImageError is an OSError


def _candidates(image_dir: Path, filename: str, classname, filepath, folder_real: str | None) -> list[Path]:
    """Where an image of the JSON may be, each refused by name if it leads outside ``image_dir``."""
    from utils.paths import contained

    out = [contained(image_dir, filename, "dataset JSON filename", folder_real)]
    for field, folder in (("classname", classname), ("filepath", filepath)):
        if folder:
            out.append(contained(image_dir, f"{folder}/{filename}", f"dataset JSON {field}/filename", folder_real))
    return out


def find_image(image_dir: Path, filename: str, classname: str | None = None, folder_real: str | None = None,
               filepath: str | None = None) -> Path:
    """``image_dir/filename`` (UCM captions / RSICD flat layout), else ``image_dir/classname/filename``, else
    ``image_dir/filepath/filename`` (a records file's ``test/x.tif``).

    Both names come from the dataset JSON: a name that leads outside ``image_dir`` (``..``, an absolute
    path, a symlink pointing out) is refused by name (``utils.paths.contained``), never read."""
    candidates = _candidates(image_dir, filename, classname, filepath, folder_real)
    for path in candidates:
        if path.is_file():
            return path
    searched = " or ".join(str(c.parent) for c in candidates)
    raise DUCHError(f"image {filename} not found in {searched}; pass --image-dir to the folder that holds the images")


def find_images(image_dir: str | Path, images: Sequence[dict]) -> list[Path]:
    """The file of every JSON image entry, in JSON order; the first missing one is a clear error.

    Looked for as ``image_dir/filename``, ``image_dir/classname/filename`` (NWPU-Captions),
    ``image_dir/filepath/filename`` (records files), or, for images in other nested folders, the one file
    of that name anywhere under ``image_dir``."""
    import os

    from utils.paths import is_inside

    image_dir = Path(image_dir)
    if not image_dir.is_dir():
        raise DUCHError(f"image folder not found: {image_dir}; pass --image-dir to the folder that holds the images")
    folder_real = os.path.realpath(image_dir)
    nested: dict[str, list[Path]] | None = None
    out = []
    for entry in images:
        filename, classname, filepath = entry["filename"], entry.get("classname"), entry.get("filepath")
        # every candidate is checked, not only the one found: a name that leads outside is refused by name
        direct = _candidates(image_dir, filename, classname, filepath, folder_real)
        found = next((p for p in direct if p.is_file()), None)
        if found is None:
            if nested is None:
                nested = {}
                for path in sorted(image_dir.rglob("*")):
                    if path.is_file():
                        nested.setdefault(path.name, []).append(path)
            matches = nested.get(Path(filename).name, [])
            outside = next((m for m in matches if not is_inside(m, image_dir, folder_real)), None)
            if outside is not None:
                raise DUCHError(f"image {outside} leads outside {image_dir} once resolved (a symlink); refused")
            if len(matches) > 1:
                raise DUCHError(f"image {filename} occurs {len(matches)} times under {image_dir} "
                                f"({matches[0]}, {matches[1]}, ...); "
                                f"give its folder in the JSON's file name or pass --image-dir to the right folder")
            # find_image's error names where it looked
            found = matches[0] if matches else find_image(image_dir, filename, classname, folder_real, filepath)
        out.append(found)
    return out


def check_in_roots(path: str | Path, roots: Sequence[str | Path] | None) -> None:
    """At the moment of reading: ``path``, resolved, lies inside one of ``roots`` (None: no rule). A symlink
    planted after the paths were found is caught here, where the file is opened."""
    if roots is None:
        return
    from utils.paths import is_inside

    if not any(is_inside(path, root) for root in roots):
        raise DUCHError(f"image {path} leads outside its image folder ({', '.join(map(str, roots))}) once resolved; "
                        f"refused")


@contextlib.contextmanager
def _opened(path: str | Path, max_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS,
            roots: Sequence[str | Path] | None = None):
    """``PIL.Image.open`` with every failure as one DUCHError naming the file.

    Images above ``max_pixels`` (0 or None: no limit) are refused, as PIL refuses decompression bombs;
    ``roots``: the folders the file must resolve into (``check_in_roots``).
    """
    from PIL import Image

    check_in_roots(path, roots)
    saved = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = max_pixels or None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)  # refuse from 1x the limit, not 2x
            try:
                with Image.open(path) as image:
                    yield image
            except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
                raise DUCHError(
                    f"image {path} is too large to be read safely ({err}); if you trust the file, raise the limit "
                    f"with images_augment.py --max-image-pixels (0: no limit), or use a smaller copy"
                ) from None
            except _UNREADABLE as err:
                raise DUCHError(f"cannot read image {path}: {err}") from None
    finally:
        Image.MAX_IMAGE_PIXELS = saved


def describe_image(image) -> str:
    """The pixel format, as recorded in provenance: the PIL mode, and a TIFF's real bits per sample."""
    bits = getattr(image, "tag_v2", {}).get(258)  # TIFF BitsPerSample
    bits = max(bits) if isinstance(bits, (tuple, list)) and bits else bits
    if isinstance(bits, int) and bits > 8 and image.mode in ("RGB", "RGBA", "RGBX", "CMYK", "L", "LA"):
        return f"{image.mode} ({bits}-bit TIFF read as 8 bits: high byte)"
    return image.mode


def is_high_bit_depth(description: str) -> bool:
    return description.startswith(("I", "F")) or "-bit TIFF" in description


def to_rgb8(image, path: str | Path = "image", bit_depth: int = 16):
    """The image as 8-bit RGB for the transforms, by ``high_bit_depth_rule``; unconvertible ones are refused."""
    from PIL import Image

    if not image.mode.startswith(("I", "F")):
        return image.convert("RGB")  # 8-bit modes as PIL converts them (RGBA, RGBX: the first three bands)
    values = np.asarray(image)
    if image.mode == "F":
        if not np.isfinite(values).all() or values.min() < 0 or values.max() > 1:
            raise DUCHError(
                f"image {path} is a floating-point image with values in [{np.nanmin(values):g}, "
                f"{np.nanmax(values):g}]; "
                f"only values in [0, 1] are converted (scaled by 255): rescale it, or save it as 8- or 16-bit"
            )
        scaled = values.astype(np.float64) * 255.0
    else:
        top = 2 ** bit_depth - 1
        if values.min() < 0 or values.max() > top:
            more = " (pass --bit-depth with the real bit depth of the data)" if values.max() <= 65535 and \
                values.min() >= 0 else ": save it as 8- or 16-bit"
            raise DUCHError(
                f"image {path} is a {image.mode} image with values in [{values.min()}, {values.max()}], outside the "
                f"{bit_depth}-bit range 0..{top} that is converted (scaled by 255/{top}){more}"
            )
        scaled = values.astype(np.float64) * (255.0 / top)
    gray = np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
    return Image.fromarray(gray, "L").convert("RGB")


def load_image(path: str | Path, max_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS, bit_depth: int = 16,
               roots: Sequence[str | Path] | None = None):
    """The image as an 8-bit RGB PIL image (``to_rgb8``); an unreadable or too large file, or one outside
    ``roots``, is a clear error."""
    with _opened(path, max_pixels, roots) as image:
        try:
            image.load()
        except _UNREADABLE as err:
            raise DUCHError(f"cannot read image {path}: {err}") from None
        return to_rgb8(image, path, bit_depth)


def check_images_readable(paths: Sequence[Path], max_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS,
                          bit_depth: int = 16, crop_size: tuple[int, int] | None = None,
                          roots: Sequence[str | Path] | None = None) -> Counter:
    """Cheap header check of every image before the long work; returns how many images of each format.

    ``crop_size`` (height, width): an image smaller than the crop is refused by name (the crop would pad it
    with zeros, mostly encoding padding). Decoding errors are still caught later, while encoding.
    """
    formats: Counter = Counter()
    for path in paths:
        with _opened(path, max_pixels, roots) as image:
            description = describe_image(image)
            width, height = image.size
        if crop_size is not None and (crop_size[0] > height or crop_size[1] > width):
            raise DUCHError(f"image {path} is {height}x{width} (HxW), smaller than --crop-size "
                            f"{crop_size[0]} {crop_size[1]}: "
                            f"the crop would be mostly zero padding; choose a --crop-size within every image")
        if bit_depth < 16 and "-bit TIFF" in description:
            raise DUCHError(
                f"image {path} is a multi-band 16-bit TIFF, which Pillow reads only to 8 bits (the high byte), so "
                f"--bit-depth {bit_depth} cannot apply to it; convert it to 8 bits per sample, or use --bit-depth 16"
            )
        formats[description] += 1
    return formats


def original_image_order(num_images: int, seed: int = 42) -> np.ndarray:
    """The original's encoding order: ``np.random.seed(seed); np.random.permutation(num_images)``."""
    return np.random.RandomState(seed).permutation(num_images)


def consecutive_batches(order: Iterable[int], batch_size: int) -> list[list[int]]:
    """``order`` cut into consecutive batches (the original's DataLoader with ``shuffle=False``)."""
    order = [int(i) for i in order]
    return [order[start:start + batch_size] for start in range(0, len(order), batch_size)]


class ImageDataset:
    """Map-style dataset of (image tensor, JSON index, error message or '') for a DataLoader.

    Errors travel as data rather than exceptions, so a bad file in a worker process still
    ends as one clear message in the main process (see ``collate_or_error``).
    """

    def __init__(self, paths: Sequence[Path], transform: Callable, max_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS,
                 bit_depth: int = 16, roots: Sequence[str | Path] | None = None):
        self.paths = list(paths)
        self.transform = transform  # (PIL image, index) -> tensor
        self.max_pixels, self.bit_depth, self.roots = max_pixels, bit_depth, roots

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        import torch

        path = self.paths[index]
        try:
            image = load_image(path, self.max_pixels, self.bit_depth, self.roots)
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
