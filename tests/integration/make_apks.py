#!/usr/bin/env python3
"""Gives every record of DIR/APKINDEX a real .apk beside it (a control segment with .PKGINFO,
a data segment with one file) and the matching C: checksum, so that a test catalog written as
plain index text can build images. Usage: make_apks.py DIR"""
import base64, hashlib, os, sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "catalog"))
from generate import gz, tar_bytes  # one apk writer for the sample catalog, tests and benchmarks

directory = sys.argv[1]
records = open(f"{directory}/APKINDEX").read().strip().split("\n\n")
out = []
for record in records:
    fields = dict(line.split(":", 1) for line in record.splitlines() if len(line) > 1 and line[1] == ":")
    name, version = fields["P"], fields["V"]
    data = gz(tar_bytes([(f"usr/share/{name}/VERSION", "file", f"{name} {version}\n", 0o644)], cut=False))
    pkginfo = f"pkgname = {name}\npkgver = {version}\ndatahash = {hashlib.sha256(data).hexdigest()}\n"
    control = gz(tar_bytes([(".PKGINFO", "file", pkginfo, 0o644)], cut=True))
    open(f"{directory}/{name}-{version}.apk", "wb").write(control + data)
    lines = [l for l in record.splitlines() if not l.startswith("C:")]
    lines.insert(0, "C:Q1" + base64.b64encode(hashlib.sha1(control).digest()).decode())
    out.append("\n".join(lines))
open(f"{directory}/APKINDEX", "w").write("\n\n".join(out) + "\n")
