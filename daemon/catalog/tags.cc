#include "daemon/catalog/tags.h"

#include <algorithm>

#include "daemon/catalog/version.h"

namespace imaged::catalog {
namespace {

// The first `n` dotted parts of `version` ("" when it has fewer).
std::string prefix(const std::string& version, int n) {
  size_t end = 0;
  for (int part = 0; part < n; ++part) {
    if (part > 0) {
      if (end == version.size()) return "";  // fewer than n parts
      ++end;                                 // past the dot
    }
    end = std::min(version.find('.', end), version.size());
  }
  return version.substr(0, end);
}

// Points `tag` at `version` unless it already points at a more advanced one.
void advance(std::map<std::string, std::string>& tags, const std::string& tag,
             const std::string& version) {
  auto [it, inserted] = tags.emplace(tag, version);
  if (!inserted && compareVersions(version, it->second) > 0) it->second = version;
}

}  // namespace

std::map<std::string, std::string> deriveTags(const std::vector<BuiltLine>& built) {
  std::map<std::string, std::string> floating, exact;
  for (const BuiltLine& b : built) {
    exact[b.version] = b.version;
    advance(floating, "latest", b.version);
    if (auto major = prefix(b.version, 1); !major.empty()) advance(floating, major, b.version);
    if (auto minor = prefix(b.version, 2); !minor.empty()) advance(floating, minor, b.version);
  }
  for (auto& [tag, version] : exact) floating[tag] = version;
  return floating;
}

std::vector<BuiltLine> buildableLines(const Starter& starter) {
  std::vector<BuiltLine> out;
  for (const StarterLine& line : starter.lines) {
    if (line.maintained) out.push_back({line.line, line.production().version});
  }
  return out;
}

}  // namespace imaged::catalog
