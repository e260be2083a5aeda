// Starter images as the catalog describes them (CATALOG.md, "Starter image"), and the reader
// of their YAML (or JSON) files.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"

namespace imaged::catalog {

struct EnvVar {
  std::string key;
  std::string value;
  bool operator==(const EnvVar&) const = default;
};

// One exact package of a starter version's SBOM: `name=version`.
struct Pin {
  std::string name;
  std::string version;
  bool operator==(const Pin&) const = default;
};

struct StarterVersion {
  std::string version;    // dotted numeric, e.g. "3.13.1"
  std::string published;  // as written, e.g. "2026-11-20T00:00:00Z" ("" when absent)
  std::vector<Pin> packages;
};

struct StarterLine {
  std::string line;  // dotted numeric, e.g. "3.13"
  bool maintained = true;
  std::vector<EnvVar> environment;       // the line's own, merged over the starter's
  std::vector<StarterVersion> versions;  // newest first; never empty

  // The newest version: the one that is built.
  const StarterVersion& production() const { return versions.front(); }
};

struct Starter {
  std::string name;
  std::string description;
  std::vector<EnvVar> environment;
  std::vector<std::string> entrypoint;
  std::vector<std::string> cmd;
  std::string user;
  std::string workdir;
  std::vector<StarterLine> lines;  // newest line first; never empty
  std::string file;                // where it was read from

  // The starter's env with the line's merged over it, in the starter's order, new keys last.
  std::vector<EnvVar> environmentFor(const StarterLine& line) const;
  // True when the starter or any of its lines sets `key` (custom env may not set it).
  bool setsEnv(std::string_view key) const;
  const StarterLine* findLine(std::string_view line) const;
};

// Limits on starter files.
inline constexpr size_t kMaxStarterFileBytes = 4 << 20;

// A problem found in one place of a catalog file. Errors made something unavailable (a record, a
// starter); warnings did not.
struct CatalogProblem {
  std::string file;
  size_t line = 0;  // 1-based; 0 when not known
  std::string message;
  bool error = true;
};

// Parses one starter file's text. Appends to `problems` what it ignored (unknown fields, as
// warnings) and, on failure, the error that made the starter unusable, with its line; the
// returned Error (E_CATALOG_INVALID) says the same.
Result<Starter> parseStarter(std::string_view text, const std::string& file,
                             std::vector<CatalogProblem>* problems);

// Dotted numeric ("3", "3.12", "3.12.8"), as lines and starter versions must be.
bool isDottedNumeric(std::string_view s);
// [a-z0-9][a-z0-9._-]*, at most 128 bytes.
bool isValidStarterName(std::string_view s);
// [A-Za-z_][A-Za-z0-9_]*
bool isValidEnvKey(std::string_view s);

}  // namespace imaged::catalog
