import numpy as np
import pytest

from utils.errors import DUCHError
from utils.retrieval.codes import n_bytes, pack_codes, unpack_codes


@pytest.mark.parametrize("bits", [8, 12, 24, 64, 65])
def test_pack_round_trip(bits):
    rng = np.random.default_rng(bits)
    codes = np.where(rng.random((7, bits)) > 0.5, 1, -1).astype(np.int8)
    packed = pack_codes(codes)
    assert packed.dtype == np.uint8 and packed.shape == (7, n_bytes(bits))
    assert np.array_equal(unpack_codes(packed, bits), codes)


def test_bit_order_is_numpy_big_endian():
    code = -np.ones((1, 16), dtype=np.int8)
    code[0, 0] = 1  # bit 0 of the code is the high bit of byte 0
    code[0, 15] = 1
    assert pack_codes(code).tolist() == [[0b10000000, 0b00000001]]


def test_wrong_width_is_refused():
    with pytest.raises(DUCHError, match="bytes per row"):
        unpack_codes(np.zeros((2, 3), dtype=np.uint8), 64)


def test_to_binary_is_the_sign_with_zero_taken_as_plus_one():
    import torch

    from models.duch import to_binary

    h = torch.tensor([[-2.0, -1e-30, -0.0, 0.0, 1e-30, 3.0]], dtype=torch.float64)
    codes = to_binary(h)
    assert codes.dtype == torch.float64 and codes.tolist() == [[-1, -1, 1, 1, 1, 1]]
