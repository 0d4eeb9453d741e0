"""Published mAP@20 of the DUCH paper's tables (ResNet18 + BERT features), (I->T, T->I), by dataset, method and bits.

The one place for the paper's numbers: the comparison tables print them beside a run's results.
Only the cells the paper reports are here.
"""

from __future__ import annotations

PUBLISHED_MAP20: dict[str, dict[str, dict[int, tuple[float, float]]]] = {
    "ucm": {
        "duch": {16: (0.760, 0.799), 32: (0.794, 0.851), 64: (0.844, 0.916), 128: (0.870, 0.927)},
        "jdsh": {64: (0.820, 0.884)},
        "djsrh": {64: (0.735, 0.776)},
    },
    "rsicd": {
        "duch": {16: (0.684, 0.697), 32: (0.791, 0.780), 64: (0.836, 0.824), 128: (0.829, 0.826)},
    },
}


def published(dataset: str, method: str, bit: int) -> tuple[float, float] | None:
    """(I->T, T->I) mAP@20 the paper reports for this cell, or None."""
    return PUBLISHED_MAP20.get(dataset, {}).get(method, {}).get(int(bit))
