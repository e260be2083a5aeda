// Dependency atoms and provides, as apk writes them in APKINDEX `D:`/`p:` fields and as users
// name added packages: `name`, `name=1.2-r0`, `name>=1.2`, `name<1.2`, `name~1.2`, `!name`,
// `so:libc.so.6`, `cmd:python3`, `pc:zlib`.
#pragma once

#include <string>
#include <string_view>

#include "common/result.h"

namespace imaged::catalog {

// Longest package name, version or atom we accept from any input.
inline constexpr size_t kMaxNameBytes = 255;
inline constexpr size_t kMaxVersionBytes = 128;

enum class VersionOp { kAny, kEqual, kLess, kLessEqual, kGreater, kGreaterEqual, kFuzzy };

struct Atom {
  std::string name;
  VersionOp op = VersionOp::kAny;
  std::string version;    // empty when op is kAny
  bool conflict = false;  // `!name`: must not be installed

  // The canonical text: `!name>=1.2`.
  std::string str() const;
  bool operator==(const Atom&) const = default;
};

// One `p:` entry: `name` (unversioned) or `name=version`.
struct Provide {
  std::string name;
  std::string version;  // empty: unversioned
  bool operator==(const Provide&) const = default;
};

// Parses an atom; E_INVALID_ARGUMENT with a reason for an empty or over-long name, a name with
// spaces or operator characters, an unknown operator, or an invalid version.
Result<Atom> parseAtom(std::string_view text);
// Parses a provide. Its version must be non-empty printable text but need not follow apk's
// grammar (Alpine ships `pc:librtmp=v2.4`); such a version orders as far as it parses.
Result<Provide> parseProvide(std::string_view text);

// True when `version` satisfies the atom's operator and version (the name is not looked at).
bool versionSatisfies(const Atom& atom, std::string_view version);

// True for a valid package or virtual name.
bool isValidPackageName(std::string_view name);

}  // namespace imaged::catalog
