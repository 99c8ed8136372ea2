"""The generated code in brokerage/proto must be what grpcio-tools makes of protos/ today."""

from pathlib import Path

from devtools.protogen import DEFAULT_OUT, generate


def test_generated_code_matches_the_protos(tmp_path: Path) -> None:
    fresh = {path.name: path.read_text() for path in generate(tmp_path)}
    committed = {path.name: path.read_text() for path in DEFAULT_OUT.glob("*_pb2*.py*")}
    stale = sorted(name for name in fresh.keys() | committed.keys() if fresh.get(name) != committed.get(name))
    assert not stale, f"brokerage/proto is stale; run `make proto`: {stale}"
