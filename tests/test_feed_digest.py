"""The sidecar's data digest: new feeds carry XXH3-128, older ones BLAKE2b, and both are checked.

A feed published before the switch must still open, and a byte changed under either kind of
sidecar must still be refused, naming the field that did not match.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import xxhash

from mm_sim.errors import UserError
from mm_sim.events import EVENT_DTYPE, Instrument, open_feed, sidecar_path, write_feed


def _feed(tmp_path: Path) -> Path:
    ev = np.zeros(5000, dtype=EVENT_DTYPE)
    ev["exch_ts"] = np.arange(5000, dtype=np.int64) * 1_000_000
    ev["local_ts"] = ev["exch_ts"] + 2_000_000
    ev["price"] = 100.0 + (np.arange(5000) % 7) * 0.01
    ev["qty"] = 1.0
    ev["kind"] = 1
    ev["side"] = np.where(np.arange(5000) % 2 == 0, 1, -1)
    return write_feed(tmp_path / "f.npy", ev, Instrument("X", "test", 0.01, 0.01))


def _data_bytes(p: Path) -> bytes:
    arr = np.load(p, mmap_mode="r")
    return p.read_bytes()[int(arr.offset) :]


def _flip_last_byte(p: Path) -> None:
    raw = bytearray(p.read_bytes())
    raw[-1] ^= 0xFF
    p.write_bytes(bytes(raw))


def test_new_sidecars_carry_the_xxh3_of_the_data_bytes(tmp_path: Path) -> None:
    p = _feed(tmp_path)
    data = json.loads(sidecar_path(p).read_text())["data"]
    body = _data_bytes(p)
    assert data == {"bytes": len(body), "xxh3_128": xxhash.xxh3_128(body).hexdigest()}
    assert len(open_feed(p).events) == 5000
    _flip_last_byte(p)
    with pytest.raises(UserError, match=r"field 'data\.xxh3_128' does not match"):
        open_feed(p)


def test_a_sidecar_written_before_the_switch_is_verified_with_blake2b(tmp_path: Path) -> None:
    p = _feed(tmp_path)
    side = sidecar_path(p)
    meta = json.loads(side.read_text())
    body = _data_bytes(p)
    meta["data"] = {
        "bytes": len(body),
        "blake2b": hashlib.blake2b(body, digest_size=16).hexdigest(),
    }
    side.write_text(json.dumps(meta))
    assert open_feed(p).events.tobytes() == body
    _flip_last_byte(p)
    with pytest.raises(UserError, match=r"field 'data\.blake2b' does not match"):
        open_feed(p)
