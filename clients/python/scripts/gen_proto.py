#!/usr/bin/env python3
"""Generates `pm_pb2.py` and `pm_pb2.pyi` from protocol/proto/pm/v1/pm.proto into the package.

    python3 scripts/gen_proto.py          # regenerate (after changing the .proto)
    python3 scripts/gen_proto.py --check  # exit 1, printing a diff, if the checked-in files are stale

Uses the protoc bundled with `grpcio-tools` (pinned in requirements-dev.txt): the pinned version decides the
generated code's protobuf version, and so the oldest `protobuf` runtime the package works with.
"""

from __future__ import annotations

import difflib
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent.parent
PROTO_DIR = ROOT / "protocol" / "proto"
PROTO = "pm/v1/pm.proto"
PACKAGE = HERE.parent / "src" / "pipeline_manager"
OUTPUTS = ("pm_pb2.py", "pm_pb2.pyi")


def generate(out: Path) -> None:
    """Runs protoc (from grpcio-tools) on pm.proto, writing into `out`."""
    from grpc_tools import protoc  # type: ignore[import-untyped]

    args = ["protoc", f"-I{PROTO_DIR}", f"--python_out={out}", f"--pyi_out={out}", str(PROTO_DIR / PROTO)]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")


def main() -> int:
    check = "--check" in sys.argv[1:]
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp))
        stale = []
        for name in OUTPUTS:
            fresh = (Path(tmp) / "pm" / "v1" / name).read_text()
            target = PACKAGE / name
            current = target.read_text() if target.exists() else ""
            if fresh == current:
                continue
            if check:
                diff = difflib.unified_diff(
                    current.splitlines(True), fresh.splitlines(True), f"checked-in {name}", f"generated {name}", n=1
                )
                sys.stdout.writelines(list(diff)[:80])
                stale.append(name)
            else:
                target.write_text(fresh)
                print(f"wrote {target}")
    if stale:
        print(f"\n{', '.join(stale)} no longer match {PROTO}: run python3 clients/python/scripts/gen_proto.py")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
