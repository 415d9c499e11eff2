"""from_pretrained by name: first use (download, verify, convert, cache) and later uses (cache) vs a hand conversion.

Serves a PANN-layout checkpoint of the chosen architecture (fresh weights, under its release file
name) from a local HTTP server with Zenodo's path layout, points ``VIPANN_PANNS_ENDPOINT`` at it,
injects the file's md5 into the registry, and measures in this run:

1. baseline: ``from_panns_checkpoint(file, name)`` on the local file (what a user did by hand);
2. cold: ``vipann.from_pretrained(name)`` with an empty cache (download + md5 + conversion + atomic
   write of the model directory + load);
3. warm: the same call again (cache hit: SHA-256 check of the weights + load).

It prints the seconds and the ratios cold/baseline and warm/baseline.

    python benchmarks/bench_zoo_release.py                 # det-cnn14 (327 MB)
    python benchmarks/bench_zoo_release.py --quick         # det-cnn6 (19 MB)
    python benchmarks/bench_zoo_release.py --name det-resnet22
"""

import argparse
import contextlib
import dataclasses
import hashlib
import http.server
import os
import tempfile
import threading
import time
from pathlib import Path

import torch

import vipann
from vipann.zoo.convert import from_panns_checkpoint
from vipann.zoo.registry import _REGISTRY, get_pretrained_cfg


@contextlib.contextmanager
def serve(root: Path):
    handler = lambda *a, **k: http.server.SimpleHTTPRequestHandler(*a, directory=str(root), **k)  # noqa: E731
    http.server.SimpleHTTPRequestHandler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--name", help="a det- or drop- registry name (default det-cnn14; --quick: det-cnn6)")
    parser.add_argument("--quick", action="store_true", help="det-cnn6: a few seconds")
    args = parser.parse_args(argv)
    if args.name is None:  # an explicit --name wins over either size
        args.name = "det-cnn6" if args.quick else "det-cnn14"
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(2)
    cfg = get_pretrained_cfg(args.name)
    filename = cfg.source.filename
    with tempfile.TemporaryDirectory() as tmp:
        files = Path(tmp) / "server" / "records" / "3987831" / "files"
        files.mkdir(parents=True)
        path = files / filename
        torch.manual_seed(0)
        torch.save({"iteration": 0, "model": vipann.create_model(args.name).state_dict()}, path)
        md5 = hashlib.md5(path.read_bytes()).hexdigest()
        for name, entry in list(_REGISTRY.items()):
            if entry.source is not None and entry.source.filename == filename:
                source = dataclasses.replace(entry.source, md5=md5, size=path.stat().st_size, sha256=None)
                _REGISTRY[name] = dataclasses.replace(entry, source=source)
        os.environ.update(VIPANN_CACHE_DIR=str(Path(tmp) / "cache"), HF_HUB_DISABLE_PROGRESS_BARS="1")
        os.environ["NO_PROXY"] = "127.0.0.1,localhost"
        print(f"{args.name}: {filename}, {path.stat().st_size / 1e6:.1f} MB, served from 127.0.0.1")
        with serve(Path(tmp) / "server") as endpoint:
            os.environ["VIPANN_PANNS_ENDPOINT"] = endpoint
            t = time.perf_counter()
            from_panns_checkpoint(path, args.name)
            baseline = time.perf_counter() - t
            t = time.perf_counter()
            vipann.from_pretrained(args.name)
            cold = time.perf_counter() - t
            t = time.perf_counter()
            vipann.from_pretrained(args.name)
            warm = time.perf_counter() - t
    print(f"baseline  from_panns_checkpoint(local file)  {baseline:7.2f} s")
    print(f"cold      from_pretrained (download+convert)  {cold:7.2f} s   {cold / baseline:5.2f}x baseline")
    print(f"warm      from_pretrained (cache)             {warm:7.2f} s   {warm / baseline:5.2f}x baseline")
    print(
        f"ratio: {args.name} first from_pretrained (download+verify+convert) / hand conversion = {cold / baseline:.2f}x"
    )
    print(f"ratio: {args.name} cached from_pretrained / hand conversion = {warm / baseline:.2f}x")


if __name__ == "__main__":
    main()
