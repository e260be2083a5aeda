// Reading apk repository indexes: the APKINDEX text format (one `X:value` field per line, a
// blank line between records) and the APKINDEX.tar.gz that repositories publish (a signature
// tar segment and the index tar segment, each gzip-compressed and concatenated).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"
#include "daemon/catalog/atom.h"

namespace imaged::catalog {

// Limits on untrusted index input.
inline constexpr size_t kMaxIndexBytes = size_t{256} << 20;  // uncompressed APKINDEX
inline constexpr size_t kMaxFieldBytes = 64 << 10;           // one field's value
inline constexpr size_t kMaxRecords = 2'000'000;

struct PackageRecord {
  std::string name;               // P:
  std::string version;            // V:
  std::string arch;               // A: ("" fits every architecture)
  std::string description;        // T:
  std::string license;            // L:
  std::string url;                // U:
  std::string origin;             // o:
  std::string checksum;           // C: ("Q1" + base64 SHA-1 of the control segment)
  uint64_t size = 0;              // S:
  uint64_t installedSize = 0;     // I:
  int64_t providerPriority = 0;   // k:
  std::vector<Atom> depends;      // D: (conflicts included, `conflict` set)
  std::vector<Provide> provides;  // p:
  std::vector<Atom> installIf;    // i: (read, not acted on)
  size_t line = 0;                // where the record starts in its file, 1-based
};

// A record (or line) that was skipped, with where it was.
struct IndexProblem {
  std::string file;
  size_t line = 0;
  std::string message;
};

struct ParsedIndex {
  std::vector<PackageRecord> records;
  std::vector<IndexProblem> problems;
};

// Parses APKINDEX text. Never fails as a whole: a malformed record (no P: or V:, an invalid
// version, dependency or provide, a number that is not one, a field over kMaxFieldBytes, a
// line that is not `X:value`) is skipped and reported with `file` and its line. Unknown fields
// are ignored.
ParsedIndex parseApkIndex(std::string_view text, std::string_view file);

// The APKINDEX member of an APKINDEX.tar.gz, uncompressed (at most kMaxIndexBytes). Other
// members (the signature, DESCRIPTION) are ignored. E_CATALOG_INVALID when the file is not a
// gzip'd tar, has no APKINDEX, or is too large; the message says which, not the file's name.
Result<std::string> readIndexArchive(const std::string& path);

}  // namespace imaged::catalog
