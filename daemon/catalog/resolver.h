// Resolution of one image line: the line's pinned SBOM plus the added packages, closed under
// dependencies, by the rules of CATALOG.md ("Resolution of one line"); or, when no such set
// exists, an explanation that names the packages and constraints in conflict.
//
// Pure and thread-safe: resolving several lines at once, on any threads, over one shared
// Catalog is safe.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "common/result.h"
#include "daemon/catalog/catalog.h"

namespace imaged::catalog {

struct LineRequest {
  std::string line;         // the line's name, for messages ("3.11")
  std::vector<Pin> pinned;  // the production version's SBOM
  std::vector<Atom> added;  // the image's added packages, in the user's order
};

// Why one candidate of a request cannot be installed.
struct CandidateReason {
  std::string package;  // "name-version"
  std::string reason;   // the chain of steps, "; "-separated
};

struct ConflictExplanation {
  std::vector<std::string> requests;  // the added atoms in conflict ("" entries never)
  std::vector<CandidateReason> candidates;
  std::string message;  // the whole explanation, for people
};

struct LineResolution {
  std::optional<Error> error;       // E_PACKAGE_CONFLICT, E_PACKAGE_NOT_FOUND, E_RESOLUTION_LIMIT,
                                    // E_INVALID_ARGUMENT
  std::vector<PackageId> packages;  // when resolved: the set, sorted by name then version
  ConflictExplanation conflict;     // when E_PACKAGE_CONFLICT

  bool ok() const { return !error; }
};

struct ResolveOptions {
  size_t maxConflicts = 200'000;  // search budget per solve, then E_RESOLUTION_LIMIT
  size_t maxExplainedCandidates = 8;
};

LineResolution resolveLine(const Catalog& catalog, const LineRequest& request,
                           const ResolveOptions& options = {});

// E_PACKAGE_NOT_FOUND for the first atom that no repository has by name or provides;
// E_INVALID_ARGUMENT for a conflict atom (`!name`), which is not something to add.
Status checkAddedPackages(const Catalog& catalog, const std::vector<Atom>& added);

}  // namespace imaged::catalog
