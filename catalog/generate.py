#!/usr/bin/env python3
"""Generates imaged's sample catalog (catalog/sample/) from the description below.

The output is committed; tests regenerate it into a scratch directory and compare, so the two
never drift apart, and the generation is byte-for-byte deterministic (fixed times, owners and
gzip headers, sorted entries).

Each package becomes a real .apk file, as apk writes them minus the signature: a gzip'd control
tar segment holding .PKGINFO (with the datahash of the data segment), then a gzip'd data tar of
its files. APKINDEX lists every package with C: = "Q1" + base64(SHA-1 of the control segment).

Usage: catalog/generate.py [OUTPUT_DIR]     (default: catalog/sample beside this script)
"""

import base64
import gzip
import hashlib
import io
import os
import shutil
import sys
import tarfile

ARCH = "x86_64"
MTIME = 1733011200  # 2024-12-01T00:00:00Z: every file's time, so the same inputs give the same bytes


def pkg(name, version, desc, license="MIT", depends=(), provides=(), priority=None, files=None):
    return dict(name=name, version=version, desc=desc, license=license, depends=list(depends),
                provides=list(provides), priority=priority, files=files or {})


def text(content, mode=0o644):
    return ("file", content, mode)


def link(target):
    return ("link", target, 0o777)


def script(content):
    return ("file", "#!/bin/sh\n" + content + "\n", 0o755)


def lib(name, version):
    return {f"usr/lib/{name}": text(f"{name} {version}: shared library stand-in for the sample catalog\n", 0o755)}


# --- the packages ---------------------------------------------------------------------------

PACKAGES = []


def add(*packages):
    PACKAGES.extend(packages)


# The C library and other bases, several versions so that lines pin different ones.
for v in ["2.39-r0", "2.40-r2", "2.40-r3", "2.41-r0"]:
    add(pkg("glibc", v, "GNU C library", "LGPL-2.1-or-later",
            provides=["so:libc.so.6=6", "so:libm.so.6=6"],
            files={"lib/libc.so.6": text(f"glibc {v}\n", 0o755), "lib/libm.so.6": text(f"libm {v}\n", 0o755),
                   "etc/ld.so.conf": text("/usr/local/lib\n/usr/lib\n/lib\n")}))
for v in ["20241010-r0", "20241121-r0"]:
    add(pkg("ca-certificates-bundle", v, "Mozilla CA certificate bundle", "MPL-2.0",
            files={"etc/ssl/certs/ca-certificates.crt": text(f"# CA bundle {v}\n-----BEGIN CERTIFICATE-----\nsample\n-----END CERTIFICATE-----\n")}))
add(
    pkg("libcrypto3", "3.3.2-r0", "OpenSSL crypto library", "Apache-2.0", ["glibc"],
        ["so:libcrypto.so.3=3"], files=lib("libcrypto.so.3", "3.3.2")),
    pkg("libssl3", "3.3.2-r0", "OpenSSL TLS library", "Apache-2.0", ["glibc", "so:libcrypto.so.3"],
        ["so:libssl.so.3=3"], files=lib("libssl.so.3", "3.3.2")),
    pkg("zlib", "1.3.1-r0", "Compression library", "Zlib", ["glibc"], ["so:libz.so.1=1.3.1"],
        files=lib("libz.so.1", "1.3.1")),
    pkg("libffi", "3.4.6-r0", "Portable foreign function interface library", "MIT", ["glibc"],
        ["so:libffi.so.8=8"], files=lib("libffi.so.8", "3.4.6")),
    pkg("sqlite-libs", "3.47.1-r0", "SQLite database library", "blessing", ["glibc"],
        ["so:libsqlite3.so.0=0"], files=lib("libsqlite3.so.0", "3.47.1")),
    pkg("tzdata", "2024b-r0", "Time zone data", "Public-Domain",
        files={"usr/share/zoneinfo/UTC": text("TZif2 UTC\n"), "usr/share/zoneinfo/Europe/Paris": text("TZif2 CET\n")}),
    pkg("busybox", "1.37.0-r0", "Size-optimized toolbox of Unix utilities (with a shell)", "GPL-2.0-only",
        ["glibc"], ["cmd:sh", "cmd:ls", "cmd:cat"], priority=10,
        files={"bin/busybox": script("echo busybox"), "bin/sh": link("busybox")}),
    pkg("bash", "5.2.37-r0", "The GNU Bourne Again shell", "GPL-3.0-or-later", ["glibc", "readline"],
        ["cmd:bash=5.2.37-r0", "cmd:sh"], priority=100,
        files={"bin/bash": script("echo bash 5.2.37"), "etc/bash/bashrc": text("# bashrc\n")}),
    pkg("readline", "8.2.13-r0", "GNU readline library", "GPL-3.0-or-later", ["glibc", "ncurses-libs"],
        ["so:libreadline.so.8=8"], files=lib("libreadline.so.8", "8.2.13")),
    pkg("ncurses-libs", "6.5-r0", "Terminal handling libraries", "X11", ["glibc"],
        ["so:libncursesw.so.6=6"], files=lib("libncursesw.so.6", "6.5")),
    pkg("libcurl", "8.11.0-r0", "The multiprotocol file transfer library", "curl",
        ["glibc>=2.40", "so:libssl.so.3", "so:libz.so.1"], ["so:libcurl.so.4=4"],
        files=lib("libcurl.so.4", "8.11.0")),
    pkg("curl", "8.11.0-r0", "URL retrieval utility", "curl", ["glibc>=2.40", "libcurl=8.11.0-r0"],
        ["cmd:curl=8.11.0-r0"], files={"usr/bin/curl": script("echo curl 8.11.0")}),
    pkg("oniguruma", "6.9.9-r0", "Regular expressions library", "BSD-2-Clause", ["glibc"],
        ["so:libonig.so.5=5"], files=lib("libonig.so.5", "6.9.9")),
    pkg("jq", "1.7.1-r0", "Command-line JSON processor", "MIT", ["glibc", "so:libonig.so.5"],
        ["cmd:jq=1.7.1-r0"], files={"usr/bin/jq": script("echo jq-1.7.1")}),
    # An add-on built against a newer C library than any line pins: every line skips it.
    pkg("fasttool", "2.0-r0", "A tool that needs glibc 2.42", "MIT", ["glibc>=2.42"],
        files={"usr/bin/fasttool": script("echo fasttool 2.0")}),
    pkg("pcre2", "10.44-r0", "Perl-compatible regular expressions", "BSD-3-Clause", ["glibc"],
        ["so:libpcre2-8.so.0=0"], files=lib("libpcre2-8.so.0", "10.44")),
    pkg("libmaxminddb", "1.11.0-r0", "MaxMind DB reader library", "Apache-2.0", ["glibc"],
        ["so:libmaxminddb.so.0=0"], files=lib("libmaxminddb.so.0", "1.11.0")),
)

# Python: one package per minor line, each providing python3; "auto" add-ons (py3-pip,
# py3-requests, py3-flask) come as one package per line, and the right one is chosen per line.
PYTHONS = {"3.11": ["3.11.10-r0"], "3.12": ["3.12.7-r0", "3.12.8-r0"], "3.13": ["3.13.0-r1", "3.13.1-r0"]}
for minor, versions in PYTHONS.items():
    for v in versions:
        plain = v.split("-")[0]
        add(pkg(f"python-{minor}", v, f"Python {minor} interpreter", "PSF-2.0",
                ["glibc", "so:libssl.so.3", "so:libz.so.1", "so:libffi.so.8", "so:libsqlite3.so.0"],
                [f"python3={v}", f"cmd:python3={v}", f"cmd:python{minor}={v}"],
                files={f"usr/bin/python{minor}": script(f"echo Python {plain}"),
                       "usr/bin/python3": link(f"python{minor}"),
                       f"usr/lib/python{minor}/os.py": text(f"# os module of Python {plain}\n"),
                       f"usr/lib/python{minor}/site.py": text("# site configuration\n")}))
    add(pkg(f"py{minor}-pip", "24.3.1-r0", f"Python package installer for Python {minor}", "MIT",
            [f"python-{minor}"], ["py3-pip=24.3.1-r0", "cmd:pip3=24.3.1-r0"],
            files={"usr/bin/pip3": script("echo pip 24.3.1"),
                   f"usr/lib/python{minor}/site-packages/pip/__init__.py": text('__version__ = "24.3.1"\n')}))
    add(pkg(f"py{minor}-urllib3", "2.2.3-r0", f"HTTP library for Python {minor}", "MIT", [f"python-{minor}"],
            ["py3-urllib3=2.2.3-r0"],
            files={f"usr/lib/python{minor}/site-packages/urllib3/__init__.py": text('__version__ = "2.2.3"\n')}))
    add(pkg(f"py{minor}-requests", "2.32.3-r0", f"HTTP requests for Python {minor}", "Apache-2.0",
            [f"python-{minor}", f"py{minor}-urllib3"], ["py3-requests=2.32.3-r0"],
            files={f"usr/lib/python{minor}/site-packages/requests/__init__.py": text('__version__ = "2.32.3"\n')}))
# Flask exists for 3.12 and 3.13 only: adding py3-flask makes line 3.11 skip.
for minor in ["3.12", "3.13"]:
    add(pkg(f"py{minor}-werkzeug", "3.1.3-r0", f"WSGI utility library for Python {minor}", "BSD-3-Clause",
            [f"python-{minor}"], ["py3-werkzeug=3.1.3-r0"],
            files={f"usr/lib/python{minor}/site-packages/werkzeug/__init__.py": text('__version__ = "3.1.3"\n')}))
    add(pkg(f"py{minor}-flask", "3.1.0-r0", f"Web micro-framework for Python {minor}", "BSD-3-Clause",
            [f"python-{minor}", f"py{minor}-werkzeug"], ["py3-flask=3.1.0-r0", "cmd:flask=3.1.0-r0"],
            files={"usr/bin/flask": script("echo Flask 3.1.0"),
                   f"usr/lib/python{minor}/site-packages/flask/__init__.py": text('__version__ = "3.1.0"\n')}))

# Node.js: lines 20 and 22.
for major, versions in {"20": ["20.18.0-r0", "20.18.1-r0"], "22": ["22.11.0-r0"]}.items():
    for v in versions:
        plain = v.split("-")[0]
        add(pkg(f"nodejs-{major}", v, f"JavaScript runtime, {major} line", "MIT",
                ["glibc", "so:libssl.so.3", "so:libz.so.1"], [f"nodejs={v}", f"cmd:node={v}"],
                files={"usr/bin/node": script(f"echo v{plain}"),
                       "usr/share/doc/nodejs/README.md": text(f"Node.js {plain}\n")}))
add(
    pkg("npm", "10.9.0-r0", "The package manager for JavaScript", "Artistic-2.0", ["nodejs>=18"],
        ["cmd:npm=10.9.0-r0"], files={"usr/bin/npm": script("echo 10.9.0")}),
    pkg("yarn", "1.22.22-r0", "Fast, reliable JavaScript dependency management", "BSD-2-Clause",
        ["nodejs"], ["cmd:yarn=1.22.22-r0"], files={"usr/bin/yarn": script("echo 1.22.22")}),
    # Needs Node.js 22: adding it makes line 20 skip.
    pkg("node-sqlite", "1.0.0-r0", "node:sqlite helpers, Node.js 22 only", "MIT", ["nodejs>=22"],
        files={"usr/lib/node_modules/node-sqlite/index.js": text("module.exports = {};\n")}),
)

# nginx: lines 1.26 and 1.27; the geoip2 module is "auto" (one build per line).
for minor, versions in {"1.26": ["1.26.2-r0"], "1.27": ["1.27.2-r0", "1.27.3-r0"]}.items():
    for v in versions:
        plain = v.split("-")[0]
        add(pkg(f"nginx-{minor}", v, f"HTTP and reverse proxy server, {minor} line", "BSD-2-Clause",
                ["glibc", "so:libpcre2-8.so.0", "so:libssl.so.3", "so:libz.so.1"], [f"nginx={v}"],
                files={"usr/sbin/nginx": script(f"echo nginx/{plain}"),
                       "etc/nginx/nginx.conf": text("events {}\nhttp { server { listen 8080; } }\n"),
                       "var/lib/nginx/html/index.html": text("<h1>It works</h1>\n")}))
    add(pkg(f"nginx-{minor}-mod-http-geoip2", "3.4-r0", f"GeoIP2 module for nginx {minor}", "BSD-2-Clause",
            [f"nginx-{minor}", "so:libmaxminddb.so.0"], ["nginx-mod-http-geoip2=3.4-r0"],
            files={f"usr/lib/nginx/modules/ngx_http_geoip2_module.so": text(f"geoip2 for nginx {minor}\n", 0o755)}))

# --- the starters ---------------------------------------------------------------------------

BASE = ["glibc", "ca-certificates-bundle"]
PY_LIBS = ["libssl3=3.3.2-r0", "libcrypto3=3.3.2-r0", "zlib=1.3.1-r0", "libffi=3.4.6-r0", "sqlite-libs=3.47.1-r0"]
WEB_LIBS = ["libssl3=3.3.2-r0", "libcrypto3=3.3.2-r0", "zlib=1.3.1-r0"]

STARTERS = {
    "python": dict(
        description="Minimal Python runtime with no shell",
        environment={"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                     "LANG": "C.UTF-8", "SSL_CERT_FILE": "/etc/ssl/certs/ca-certificates.crt"},
        entrypoint=["/usr/bin/python3"], cmd=[], user="65532", workdir="/home/nonroot",
        lines=[
            ("3.13", True, {"PYTHON_VERSION": "3.13"}, [
                ("3.13.1", "2026-11-20T00:00:00Z", ["python-3.13=3.13.1-r0", "glibc=2.40-r3", "ca-certificates-bundle=20241121-r0"] + PY_LIBS),
                ("3.13.0", "2026-10-08T00:00:00Z", ["python-3.13=3.13.0-r1", "glibc=2.40-r2", "ca-certificates-bundle=20241010-r0"] + PY_LIBS)]),
            ("3.12", True, {"PYTHON_VERSION": "3.12"}, [
                ("3.12.8", "2026-11-20T00:00:00Z", ["python-3.12=3.12.8-r0", "glibc=2.40-r3", "ca-certificates-bundle=20241121-r0"] + PY_LIBS),
                ("3.12.7", "2026-10-08T00:00:00Z", ["python-3.12=3.12.7-r0", "glibc=2.40-r2", "ca-certificates-bundle=20241010-r0"] + PY_LIBS)]),
            ("3.11", True, {"PYTHON_VERSION": "3.11"}, [
                ("3.11.10", "2026-09-09T00:00:00Z", ["python-3.11=3.11.10-r0", "glibc=2.39-r0", "ca-certificates-bundle=20241010-r0"] + PY_LIBS)]),
        ]),
    "node": dict(
        description="Node.js runtime with no shell",
        environment={"PATH": "/usr/local/bin:/usr/bin:/bin", "NODE_ENV": "production"},
        entrypoint=["/usr/bin/node"], cmd=[], user="65532", workdir="/app",
        lines=[
            ("22", True, {}, [("22.11.0", "2026-11-01T00:00:00Z", ["nodejs-22=22.11.0-r0", "glibc=2.41-r0", "ca-certificates-bundle=20241121-r0"] + WEB_LIBS)]),
            ("20", True, {}, [
                ("20.18.1", "2026-11-15T00:00:00Z", ["nodejs-20=20.18.1-r0", "glibc=2.40-r3", "ca-certificates-bundle=20241121-r0"] + WEB_LIBS),
                ("20.18.0", "2026-10-01T00:00:00Z", ["nodejs-20=20.18.0-r0", "glibc=2.40-r2", "ca-certificates-bundle=20241010-r0"] + WEB_LIBS)]),
        ]),
    "nginx": dict(
        description="nginx web server, unprivileged, listening on 8080",
        environment={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
        entrypoint=["/usr/sbin/nginx"], cmd=["-g", "daemon off;"], user="65532", workdir="/var/lib/nginx/html",
        lines=[
            ("1.27", True, {}, [
                ("1.27.3", "2026-11-27T00:00:00Z", ["nginx-1.27=1.27.3-r0", "glibc=2.40-r3", "pcre2=10.44-r0", "ca-certificates-bundle=20241121-r0"] + WEB_LIBS),
                ("1.27.2", "2026-10-02T00:00:00Z", ["nginx-1.27=1.27.2-r0", "glibc=2.40-r2", "pcre2=10.44-r0", "ca-certificates-bundle=20241010-r0"] + WEB_LIBS)]),
            ("1.26", True, {}, [
                ("1.26.2", "2026-08-14T00:00:00Z", ["nginx-1.26=1.26.2-r0", "glibc=2.40-r2", "pcre2=10.44-r0", "ca-certificates-bundle=20241010-r0"] + WEB_LIBS)]),
        ]),
}

# --- writing --------------------------------------------------------------------------------


def tar_bytes(entries, cut):
    """A ustar archive of (name, kind, content (str or bytes), mode) entries, in the given order. With `cut`, the
    end-of-archive blocks are left off, as apk does for the control segment so that the segments
    read as one archive."""
    buf = io.BytesIO()
    tf = tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT)
    for name, kind, content, mode in entries:
        info = tarfile.TarInfo(name)
        info.mtime, info.uid, info.gid, info.uname, info.gname, info.mode = MTIME, 0, 0, "root", "root", mode
        if kind == "dir":
            info.type = tarfile.DIRTYPE
            tf.addfile(info)
        elif kind == "link":
            info.type = tarfile.SYMTYPE
            info.linkname = content
            tf.addfile(info)
        else:
            data = content if isinstance(content, bytes) else content.encode()
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    end = tf.offset
    tf.close()
    return buf.getvalue()[:end] if cut else buf.getvalue()


def gz(data, level=9):
    out = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=0, compresslevel=level) as f:
        f.write(data)
    return out.getvalue()


def data_entries(files):
    dirs = set()
    for path in files:
        parts = path.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            dirs.add("/".join(parts[:i]))
    entries = [(d + "/", "dir", None, 0o755) for d in dirs]
    entries += [(path, kind, content, mode) for path, (kind, content, mode) in files.items()]
    return sorted(entries, key=lambda e: e[0].rstrip("/"))


def installed_size(files):
    return sum(len(c.encode()) for kind, c, _ in files.values() if kind == "file")


def write_apk(p, repo_dir):
    data = gz(tar_bytes(data_entries(p["files"]), cut=False))
    pkginfo = [
        "# Generated by imaged's catalog/generate.py",
        f"pkgname = {p['name']}", f"pkgver = {p['version']}", f"pkgdesc = {p['desc']}",
        "url = https://example.invalid/imaged-sample", f"builddate = {MTIME}",
        "packager = imaged sample catalog", f"size = {installed_size(p['files'])}", f"arch = {ARCH}",
        f"origin = {p['name']}", f"license = {p['license']}",
    ]
    pkginfo += [f"depend = {d}" for d in p["depends"]]
    pkginfo += [f"provides = {x}" for x in p["provides"]]
    if p["priority"] is not None:
        pkginfo.append(f"provider_priority = {p['priority']}")
    pkginfo.append(f"datahash = {hashlib.sha256(data).hexdigest()}")
    control = gz(tar_bytes([(".PKGINFO", "file", "\n".join(pkginfo) + "\n", 0o644)], cut=True))
    apk = control + data
    with open(os.path.join(repo_dir, f"{p['name']}-{p['version']}.apk"), "wb") as f:
        f.write(apk)
    record = [
        "C:Q1" + base64.b64encode(hashlib.sha1(control).digest()).decode(),
        f"P:{p['name']}", f"V:{p['version']}", f"A:{ARCH}", f"S:{len(apk)}",
        f"I:{installed_size(p['files'])}", f"T:{p['desc']}", "U:https://example.invalid/imaged-sample",
        f"L:{p['license']}", f"o:{p['name']}",
    ]
    if p["depends"]:
        record.append("D:" + " ".join(p["depends"]))
    if p["provides"]:
        record.append("p:" + " ".join(p["provides"]))
    if p["priority"] is not None:
        record.append(f"k:{p['priority']}")
    return "\n".join(record) + "\n"


def quote(s):
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def write_starter(name, s, path):
    out = [f"# Generated by catalog/generate.py; edit the description there, not this file.",
           f"name: {name}", f"description: {s['description']}", "environment:"]
    out += [f"  {k}: {quote(v)}" for k, v in s["environment"].items()]
    out.append("entrypoint: [" + ", ".join(quote(x) for x in s["entrypoint"]) + "]")
    out.append("cmd: [" + ", ".join(quote(x) for x in s["cmd"]) + "]")
    out += [f"user: {quote(s['user'])}", f"workdir: {s['workdir']}", "lines:"]
    for line, maintained, env, versions in s["lines"]:
        out.append(f"  - line: {quote(line)}")
        out.append(f"    maintained: {'true' if maintained else 'false'}")
        if env:
            out.append("    environment: {" + ", ".join(f"{k}: {quote(v)}" for k, v in env.items()) + "}")
        out.append("    versions:")
        for version, published, packages in versions:
            out.append(f"      - version: {quote(version)}")
            out.append(f"        published: {published}")
            out.append("        packages:")
            out += [f"          - {p}" for p in packages]
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(here, "sample")
    if os.path.exists(out):
        shutil.rmtree(out)
    repo_dir = os.path.join(out, "repositories", "main", ARCH)
    os.makedirs(repo_dir)
    os.makedirs(os.path.join(out, "starters"))
    records = [write_apk(p, repo_dir) for p in sorted(PACKAGES, key=lambda p: (p["name"], p["version"]))]
    with open(os.path.join(repo_dir, "APKINDEX"), "w") as f:
        f.write("\n".join(records))
    for name, s in STARTERS.items():
        write_starter(name, s, os.path.join(out, "starters", f"{name}.yaml"))
    print(f"{len(PACKAGES)} packages, {len(STARTERS)} starters in {out}")


if __name__ == "__main__":
    main()
