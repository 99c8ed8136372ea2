"""Generates brokerage/proto from protos/ with grpcio-tools: `python -m devtools.protogen [OUT_DIR]`.

protoc names imports after the proto package (`from broker.v1 import common_pb2`); we ship the generated
modules inside `brokerage.proto`, so cross-file imports are rewritten to relative ones.
"""

from __future__ import annotations

import re
import shutil
import sys
import tempfile
from importlib import resources
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"
PACKAGE_DIR = Path("broker") / "v1"
DEFAULT_OUT = ROOT / "brokerage" / "proto"
_ABSOLUTE_IMPORT = re.compile(r"^from broker\.v1 import ", re.MULTILINE)
_HEADER = '"""Generated from protos/broker/v1 by `python -m devtools.protogen`; never edit by hand."""\n'


def proto_files() -> list[Path]:
    return sorted((PROTOS / PACKAGE_DIR).glob("*.proto"))


def generate(out_dir: Path = DEFAULT_OUT) -> list[Path]:
    """Writes the generated modules into out_dir (replacing what was there) and returns their paths."""
    well_known = resources.files("grpc_tools") / "_proto"
    with tempfile.TemporaryDirectory() as tmp:
        args = [
            "grpc_tools.protoc",
            f"-I{PROTOS}",
            f"-I{well_known}",
            f"--python_out={tmp}",
            f"--pyi_out={tmp}",
            f"--grpc_python_out={tmp}",
            *(str(p.relative_to(PROTOS)) for p in proto_files()),
        ]
        if protoc.main(args) != 0:
            raise RuntimeError("protoc failed")
        out_dir.mkdir(parents=True, exist_ok=True)
        for old in out_dir.glob("*_pb2*.py*"):
            old.unlink()
        written = []
        for generated in sorted((Path(tmp) / PACKAGE_DIR).iterdir()):
            target = out_dir / generated.name
            target.write_text(_ABSOLUTE_IMPORT.sub("from . import ", generated.read_text()))
            written.append(target)
    (out_dir / "__init__.py").write_text(_HEADER)
    return written


if __name__ == "__main__":
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_OUT
    paths = generate(out)
    print(f"generated {len(paths)} files in {out}")
    shutil.rmtree(out / "__pycache__", ignore_errors=True)
