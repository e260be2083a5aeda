// Reading apk package files: several concatenated gzip streams (an optional signature, the
// control segment with .PKGINFO, the data segment with the files), each a tar segment.
//
// An apk is untrusted input: its segments are decompressed with size limits, its control
// segment is checked against the index's C: checksum ("Q1" + base64 SHA-1 of the compressed
// segment), its data segment against .PKGINFO's datahash (SHA-256), and every path must stay
// inside the root. Failures: E_PACKAGE_MISSING (no such file), E_PACKAGE_CORRUPT (anything else).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/result.h"

namespace imaged::image {

inline constexpr uint64_t kMaxApkBytes = uint64_t{1} << 30;      // a file on disk
inline constexpr uint64_t kMaxSegmentBytes = uint64_t{4} << 30;  // one segment, uncompressed
inline constexpr size_t kMaxEntries = 200'000;

struct FileEntry {
  enum class Type { kFile, kDirectory, kSymlink, kHardlink };
  std::string path;  // relative, normalized ("usr/bin/python3"); never escapes the root
  Type type = Type::kFile;
  uint32_t mode = 0644;  // permission bits (and setuid/setgid/sticky)
  uint32_t uid = 0, gid = 0;
  std::string uname, gname;
  std::string data;  // file content
  std::string link;  // symlink target (as written) or hardlink target (normalized path)
};

struct ApkFile {
  std::string pkginfo;          // the .PKGINFO text
  std::string controlChecksum;  // "Q1..." of the control segment
  std::string dataHash;         // hex SHA-256 of the data segment
  std::vector<FileEntry> files;
};

// Reads and verifies the package at `path`. `expectedChecksum` is the index's C: field ("" when
// the index has none: then only datahash is checked).
Result<ApkFile> readApk(const std::string& path, const std::string& expectedChecksum);

// Normalizes a path from an archive: drops "./" and trailing "/"; fails for an absolute path, a
// ".." component, an empty path, or a NUL byte.
Result<std::string> safeRelativePath(const std::string& path);

}  // namespace imaged::image
