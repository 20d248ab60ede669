"""tinyroots.safetensors: the format, checked strictly; against the safetensors library, torch."""

import json
import struct

import numpy as np
import pytest

from tinyroots.safetensors import (MAX_HEADER_BYTES, SafetensorsError, bf16_to_float32,
                                   float32_to_bf16, load_safetensors, read_header,
                                   save_safetensors)


def test_safetensors_library_compatibility(tmp_path):
    st = pytest.importorskip("safetensors.numpy")
    arrays = {"a": np.arange(12, dtype=np.float32).reshape(3, 4),
              "b": np.array([1, -2], dtype=np.int64), "c": np.zeros((0, 3), np.float32)}
    save_safetensors(tmp_path / "ours.safetensors", arrays, {"format": "np"})
    theirs = st.load_file(str(tmp_path / "ours.safetensors"))
    for k in arrays:
        np.testing.assert_array_equal(theirs[k], arrays[k])
    st.save_file(arrays, str(tmp_path / "theirs.safetensors"))
    ours, _ = load_safetensors(tmp_path / "theirs.safetensors")
    for k in arrays:
        np.testing.assert_array_equal(ours[k], arrays[k])


def test_truncated_and_corrupt_files(tmp_path):
    path = tmp_path / "model.safetensors"
    save_safetensors(path, {"a": np.ones((4, 40), np.float32), "b": np.zeros(3, np.int64)})
    good = path.read_bytes()
    path.write_bytes(good[:-100])
    with pytest.raises(SafetensorsError, match=r"model.safetensors: tensor '.*' .*truncated"):
        load_safetensors(path)
    path.write_bytes(b"\xff" * 4)
    with pytest.raises(SafetensorsError, match="too short"):
        load_safetensors(path)
    path.write_bytes((10 ** 12).to_bytes(8, "little") + b"{}")
    with pytest.raises(SafetensorsError, match="header length"):
        load_safetensors(path)
    path.write_bytes((4).to_bytes(8, "little") + b"{{{{")
    with pytest.raises(SafetensorsError, match="corrupt safetensors header"):
        load_safetensors(path)


# ---------------------------------------------------------------------------------------------
# the format's rules, enforced: each bad file is one SafetensorsError naming the file (and tensor)


def _file(header, data=b""):
    """A safetensors file's bytes from a header (dict or raw str) and a data section."""
    if isinstance(header, (dict, list)):
        header = json.dumps(header)
    blob = header.encode() if isinstance(header, str) else header
    return struct.pack("<Q", len(blob)) + blob + data


def _t(dtype, shape, begin, end):
    return {"dtype": dtype, "shape": shape, "data_offsets": [begin, end]}


EIGHT = bytes(range(8))
BAD_FILES = [
    # (header, data, what the message must say)
    ({"a": _t("F32", [2], 0, 8), "b": _t("F32", [2], 8, 16)}, EIGHT * 3, "trailing bytes"),
    ({"a": _t("F32", [2], 0, 8), "b": _t("F32", [2], 4, 12)}, EIGHT * 2, "'a' and 'b' overlap"),
    ({"a": _t("F32", [2], 0, 8), "b": _t("F32", [2], 0, 8)}, EIGHT, "overlap"),
    ({"a": _t("F32", [2], 8, 16)}, EIGHT * 2, "bytes 0..8 .* belong to no tensor"),
    ({"a": _t("F32", [2], 0, 8)}, b"", "truncated"),
    ({"a": _t("F32", [2.0], 0, 8)}, EIGHT, "tensor 'a': shape \\[2.0\\] is not a list of integers"),
    ({"a": _t("F32", [True, 2], 0, 8)}, EIGHT, "tensor 'a': shape"),
    ({"a": _t("F32", [-2], 0, 8)}, EIGHT, "tensor 'a': shape"),
    ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8.7]}}, EIGHT,
     "tensor 'a': data_offsets \\[0, 8.7\\] are not two integers"),
    ({"a": {"dtype": "F32", "shape": [16], "data_offsets": [0, 64.7]}}, EIGHT * 8, "data_offsets"),
    ({"a": _t("F32", [2], 8, 0)}, EIGHT, "0 <= begin <= end"),
    ({"a": _t("F32", [2 ** 32, 2 ** 32], 0, 8)}, EIGHT,
     "tensor 'a' \\(shape \\[4294967296, 4294967296\\], F32\\) needs 73786976294838206464 bytes"),
    ({"a": _t("F32", [3], 0, 8)}, EIGHT, "needs 12 bytes but data_offsets \\[0, 8\\] hold 8"),
    ({"a": _t("Q8", [2], 0, 8)}, EIGHT, "tensor 'a': unknown dtype 'Q8'"),
    ({"a": {"dtype": "F32", "shape": [2]}}, EIGHT, "tensor 'a': expected"),
    ({"a": {**_t("F32", [2], 0, 8), "extra": 1}}, EIGHT, "tensor 'a': expected"),
    ({"a": [1, 2]}, EIGHT, "tensor 'a': expected"),
    ({"__metadata__": {"k": 5}, "a": _t("F32", [2], 0, 8)}, EIGHT, "__metadata__ must map strings"),
    ('{"a": %s, "a": %s}' % (json.dumps(_t("F32", [2], 0, 8)), json.dumps(_t("F32", [2], 8, 16))),
     EIGHT * 2, "the key 'a' appears twice"),
    ("[1, 2]", b"", "corrupt safetensors header"),
    ('{"a": ' * 200_000, b"", "corrupt safetensors header: not valid JSON here .*nested"),
    ('{"a": ' + "[" * 200_000, b"", "nested"),
    ('{"a": 1', b"", "corrupt safetensors header: not valid JSON"),
    (b'{"a\xff": 1}', b"", "corrupt safetensors header: not UTF-8"),
]


@pytest.mark.parametrize("header,data,message", BAD_FILES)
def test_bad_files_give_one_clear_error(tmp_path, header, data, message):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(_file(header, data))
    with pytest.raises(SafetensorsError, match="bad.safetensors: .*" + message) as info:
        load_safetensors(path)
    assert "\n" not in str(info.value)


def test_an_overlap_that_would_shift_a_tensor_is_refused(tmp_path):
    """The attack of the issue: a tensor moved 8 bytes into its neighbour loads different
    numbers silently unless overlap is checked."""
    path = tmp_path / "m.safetensors"
    save_safetensors(path, {"a": np.arange(4, dtype=np.float32), "b": np.ones(4, np.float32)})
    entries, _, _, _ = read_header(path)
    header = {n: _t(d, list(shape), b, e) for n, (d, shape, b, e) in entries.items()}
    header["b"]["data_offsets"] = [8, 24]           # b now starts inside a
    raw = path.read_bytes()
    path.write_bytes(_file(header, raw[8 + int.from_bytes(raw[:8], "little"):]))
    with pytest.raises(SafetensorsError, match="'a' and 'b' overlap"):
        load_safetensors(path)


def test_a_huge_header_is_refused_before_it_is_read(tmp_path):
    """A declared 100 MB header: refused from its 8-byte length, without reading (or
    allocating) the 100 MB. The file is sparse, so the test writes nothing big either."""
    import tracemalloc
    path = tmp_path / "big.safetensors"
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", 100_000_000) + b"{")
        f.truncate(8 + 100_000_000)
    tracemalloc.start()
    with pytest.raises(SafetensorsError, match=f"header length 100000000 .*at most "
                                               f"{MAX_HEADER_BYTES} bytes"):
        load_safetensors(path)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 1_000_000


def test_missing_file_names_it(tmp_path):
    with pytest.raises(SafetensorsError, match="nope.safetensors: file not found"):
        load_safetensors(tmp_path / "nope.safetensors")


def test_empty_file_and_zero_size_tensors(tmp_path):
    path = tmp_path / "e.safetensors"
    save_safetensors(path, {})
    assert load_safetensors(path) == ({}, {})
    save_safetensors(path, {"z": np.zeros((0, 3), np.float32), "y": np.ones(2, np.uint8)})
    arrays, _ = load_safetensors(path)
    assert arrays["z"].shape == (0, 3) and arrays["y"].tolist() == [1, 1]


# ---------------------------------------------------------------------------------------------
# mutated files: each loads what the reference reader loads, or is one clear error


def _reference_file():
    rng = np.random.default_rng(0)
    return {"w": rng.standard_normal((3, 4)).astype(np.float32),
            "ids": np.arange(5, dtype=np.int64), "mask": np.array([1, 0, 1], np.uint8),
            "half": np.array([1.5, -2.0], np.float16), "empty": np.zeros((0,), np.float32)}


def _mutate(raw, kind, at, value, length):
    at %= len(raw) + 1
    if kind == "flip":
        return raw[:at] + bytes([value]) + raw[at + 1:]
    if kind == "truncate":
        return raw[:at]
    if kind == "insert":
        return raw[:at] + bytes([value]) * length + raw[at:]
    if kind == "delete":
        return raw[:at] + raw[at + length:]
    n = int.from_bytes(raw[:8], "little")
    if kind == "data":                  # a flipped byte of the data section: loads, changed
        i = 8 + n + at % (len(raw) - 8 - n)
        return raw[:i] + bytes([value]) + raw[i + 1:]
    # "digit": change one digit of the header (offsets, shapes, the length) to another
    digits = [i for i in range(8, 8 + n) if raw[i:i + 1].isdigit()]
    i = digits[at % len(digits)]
    return raw[:i] + str(value % 10).encode() + raw[i + 1:]


def _fuzz_case(tmp_path, kind, at, value, length):
    st_numpy = pytest.importorskip("safetensors.numpy")
    path = tmp_path / "fuzz.safetensors"
    save_safetensors(path, _reference_file())
    raw = _mutate(path.read_bytes(), kind, at, value, length)
    path.write_bytes(raw)
    try:
        ours, _ = load_safetensors(path, mmap=False)
    except SafetensorsError as exc:
        assert str(path) in str(exc) and "\n" not in str(exc)
        return "refused"
    # accepted: the reference reader must agree, tensor for tensor, byte for byte
    theirs = st_numpy.load_file(str(path))
    assert sorted(ours) == sorted(theirs)
    for k in ours:
        assert ours[k].dtype == theirs[k].dtype and ours[k].shape == theirs[k].shape
        assert ours[k].tobytes() == theirs[k].tobytes()
    return "loaded"


def test_mutated_files_load_as_the_reference_reads_them_or_fail_clearly(tmp_path):
    from hypothesis import given, settings
    from hypothesis import strategies as st
    outcomes = []

    @settings(max_examples=600, deadline=None, derandomize=True)
    @given(st.sampled_from(["flip", "truncate", "insert", "delete", "digit", "data"]),
           st.integers(0, 10_000), st.integers(0, 255), st.integers(1, 16))
    def run(kind, at, value, length):
        outcomes.append(_fuzz_case(tmp_path, kind, at, value, length))

    run()
    # both outcomes happen: the mutations are neither all harmless nor all fatal
    assert outcomes.count("refused") > 50 and outcomes.count("loaded") > 50


# ---------------------------------------------------------------------------------------------
# bfloat16


def test_bf16_conversions_match_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    x = np.concatenate([rng.standard_normal(100_000).astype(np.float32) * 10.0 ** rng.integers(
        -40, 38, 100_000), np.array([0.0, -0.0, np.inf, -np.inf, 3.4e38, -3.4e38, 1e-45,
                                     1.00390625, 1.01171875], np.float32)]).astype(np.float32)
    bits = float32_to_bf16(x)
    theirs = torch.from_numpy(x).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
    np.testing.assert_array_equal(bits, theirs)          # round to nearest even, like torch
    back = bf16_to_float32(bits)
    np.testing.assert_array_equal(back, torch.from_numpy(bits.view(np.int16)).view(
        torch.bfloat16).float().numpy())                  # widening is exact
    nan = float32_to_bf16(np.array([np.nan, -np.nan], np.float32))
    assert np.isnan(bf16_to_float32(nan)).all()           # NaN stays NaN (never inf)


def test_bf16_files_round_trip_with_the_reference(tmp_path):
    torch = pytest.importorskip("torch")
    st_torch = pytest.importorskip("safetensors.torch")
    x = np.random.default_rng(2).standard_normal((3, 5)).astype(np.float32)
    save_safetensors(tmp_path / "ours.safetensors", {"x": x, "i": np.arange(3)},
                     dtypes={"x": "BF16"})
    theirs = st_torch.load_file(str(tmp_path / "ours.safetensors"))
    assert theirs["x"].dtype == torch.bfloat16
    np.testing.assert_array_equal(theirs["x"].float().numpy(), bf16_to_float32(float32_to_bf16(x)))
    st_torch.save_file({"y": torch.from_numpy(x).to(torch.bfloat16)},
                       str(tmp_path / "theirs.safetensors"))
    arrays, _ = load_safetensors(tmp_path / "theirs.safetensors")
    assert arrays["y"].dtype == np.float32
    np.testing.assert_array_equal(arrays["y"],
                                  torch.from_numpy(x).to(torch.bfloat16).float().numpy())
    bits, _ = load_safetensors(tmp_path / "theirs.safetensors", bf16="bits")
    assert bits["y"].dtype == np.uint16
    np.testing.assert_array_equal(bf16_to_float32(bits["y"]), arrays["y"])
    with pytest.raises(TypeError, match="tensor 'i' has dtype int64"):
        save_safetensors(tmp_path / "x.safetensors", {"i": np.arange(3)}, dtypes={"i": "F32"})
