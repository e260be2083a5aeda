#!/usr/bin/env python3
"""A catalog for the image.write benchmark: one starter whose line pins PACKAGES packages of
MB megabytes each (files of pseudo-random words: compressible like real binaries and text).
Usage: make_big_catalog.py DIR PACKAGES MB"""
import base64, hashlib, os, random, sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "catalog"))
from generate import gz, tar_bytes  # one apk writer for the sample catalog, tests and benchmarks

out, count, megabytes = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
repo = f"{out}/repositories/main/x86_64"
os.makedirs(repo, exist_ok=True)
os.makedirs(f"{out}/starters", exist_ok=True)
rng = random.Random(50)
words = [bytes(rng.choice(b"abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(rng.randint(2, 12))) for _ in range(4096)]

index, pins = [], []
for p in range(count):
    name, version = f"big{p}", "1.0-r0"
    files = []
    for f in range(8):
        size = megabytes * 1024 * 1024 // 8
        chunk = b" ".join(rng.choice(words) for _ in range(size // 7 + 1))[:size]
        files.append((f"usr/share/{name}/data{f}.bin", "file", chunk, 0o644))
    data = gz(tar_bytes(files, cut=False), level=1)  # fast: this is setup, not what is measured
    pkginfo = f"pkgname = {name}\npkgver = {version}\ndatahash = {hashlib.sha256(data).hexdigest()}\n"
    control = gz(tar_bytes([(".PKGINFO", "file", pkginfo, 0o644)], cut=True))
    open(f"{repo}/{name}-{version}.apk", "wb").write(control + data)
    index.append(f"C:Q1{base64.b64encode(hashlib.sha1(control).digest()).decode()}\nP:{name}\nV:{version}\nL:MIT\n")
    pins.append(f"{name}={version}")
open(f"{repo}/APKINDEX", "w").write("\n".join(index))
open(f"{out}/starters/big.yaml", "w").write(
    "name: big\nlines:\n  - line: \"1\"\n    versions:\n      - version: \"1.0\"\n        published: 2026-01-01T00:00:00Z\n"
    "        packages: [" + ", ".join(pins) + "]\n")
