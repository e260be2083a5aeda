// Mutable tags (PRODUCT.md rule 7): which version each tag of a private image points at, from
// the lines of its latest successful build. Pure: same lines, same tags.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "daemon/catalog/starter.h"

namespace imaged::catalog {

struct BuiltLine {
  std::string line;     // "3.12"
  std::string version;  // "3.12.8": the starter version that was built
};

// For every built line: `<full version>` and `<major>.<minor>` (of its version) point at that
// line's build; `<major>` at the most advanced built version of that major; `latest` at the most
// advanced built version. Order is numeric per dotted part (3.9 < 3.10). Where a full version
// and a floating tag coincide (version "3" and major "3"), the full version wins. No lines, no
// tags.
std::map<std::string, std::string> deriveTags(const std::vector<BuiltLine>& built);

// The lines a build covers: the maintained ones, each with its production version, newest
// line first. Unmaintained lines are never built.
std::vector<BuiltLine> buildableLines(const Starter& starter);

}  // namespace imaged::catalog
