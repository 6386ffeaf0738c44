#!/usr/bin/env python3
"""Makes testdata/peft-0.21 from the full PEFT 0.21 reference set (python3, standard library only).

Keeps the tensors of the blocks in BLOCKS, byte for byte, in their order and with their
metadata, and leaves out the fused files, which the tests derive from the base and the merged
adapters. Usage: python3 testdata/trim.py FULL_SET testdata/peft-0.21
"""
import json
import pathlib
import shutil
import struct
import sys

BLOCKS = ("down_blocks.0", "mid_block")


def kept(name):
    return any(
        ("." + block + ".") in ("." + name) or name.startswith("lora_unet_" + block.replace(".", "_") + "_")
        for block in BLOCKS
    )


def trim(source, target):
    data = source.read_bytes()
    (header_size,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + header_size])
    body = data[8 + header_size :]
    metadata = header.pop("__metadata__", None)
    out = {} if metadata is None else {"__metadata__": metadata}
    chunks = []
    offset = 0
    for name, info in sorted(header.items(), key=lambda item: item[1]["data_offsets"][0]):
        if not kept(name):
            continue
        start, end = info["data_offsets"]
        chunks.append(body[start:end])
        out[name] = {"dtype": info["dtype"], "shape": info["shape"], "data_offsets": [offset, offset + end - start]}
        offset += end - start
    encoded = json.dumps(out, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(struct.pack("<Q", len(encoded)) + encoded + b"".join(chunks))


def main(full, trimmed):
    for path in sorted(full.rglob("*")):
        relative = path.relative_to(full)
        if path.is_dir() or relative.parts[0] == "fused":
            continue
        if path.suffix == ".safetensors":
            trim(path, trimmed / relative)
        else:
            (trimmed / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, trimmed / relative)


if __name__ == "__main__":
    main(pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]))
