#!/usr/bin/env python3
"""Gives every record of DIR/APKINDEX a real .apk beside it (a control segment with .PKGINFO,
a data segment with one file) and the matching C: checksum, so that a test catalog written as
plain index text can build images. Usage: make_apks.py DIR"""
import base64, gzip, hashlib, io, sys, tarfile

def segment(entries, cut):
    buf = io.BytesIO()
    tf = tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT)
    for name, data in entries:
        info = tarfile.TarInfo(name)
        info.size, info.mtime, info.mode = len(data), 0, 0o644
        tf.addfile(info, io.BytesIO(data))
    end = tf.offset
    tf.close()
    raw = buf.getvalue()[:end] if cut else buf.getvalue()
    out = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=0) as g:
        g.write(raw)
    return out.getvalue()

directory = sys.argv[1]
records = open(f"{directory}/APKINDEX").read().strip().split("\n\n")
out = []
for record in records:
    fields = dict(line.split(":", 1) for line in record.splitlines() if len(line) > 1 and line[1] == ":")
    name, version = fields["P"], fields["V"]
    data = segment([(f"usr/share/{name}/VERSION", f"{name} {version}\n".encode())], False)
    pkginfo = f"pkgname = {name}\npkgver = {version}\ndatahash = {hashlib.sha256(data).hexdigest()}\n"
    control = segment([(".PKGINFO", pkginfo.encode())], True)
    open(f"{directory}/{name}-{version}.apk", "wb").write(control + data)
    lines = [l for l in record.splitlines() if not l.startswith("C:")]
    lines.insert(0, "C:Q1" + base64.b64encode(hashlib.sha1(control).digest()).decode())
    out.append("\n".join(lines))
open(f"{directory}/APKINDEX", "w").write("\n\n".join(out) + "\n")
