#include "daemon/catalog/starter.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <set>

#include "daemon/catalog/atom.h"
#include "daemon/catalog/version.h"

namespace imaged::catalog {
namespace {

constexpr size_t kMaxTextBytes = 4096;
constexpr size_t kMaxLines = 256;
constexpr size_t kMaxVersions = 1024;
constexpr size_t kMaxPins = 10000;
constexpr size_t kMaxListItems = 256;

// A problem at a YAML node; thrown inside the parser and turned into a Result at its edge.
struct Invalid {
  size_t line;
  std::string message;
};

size_t lineOf(const YAML::Node& n) {
  return n.Mark().line >= 0 ? size_t(n.Mark().line) + 1 : 0;
}

[[noreturn]] void fail(const YAML::Node& n, std::string message) {
  throw Invalid{lineOf(n), std::move(message)};
}

std::string scalar(const YAML::Node& n, const char* what, size_t maxBytes = kMaxTextBytes) {
  if (!n.IsScalar()) fail(n, std::string(what) + " must be a string");
  std::string s = n.Scalar();
  if (s.size() > maxBytes)
    fail(n, std::string(what) + " is longer than " + std::to_string(maxBytes) + " bytes");
  return s;
}

std::vector<std::string> stringList(const YAML::Node& n, const char* what) {
  std::vector<std::string> out;
  if (n.IsNull()) return out;
  if (!n.IsSequence()) fail(n, std::string(what) + " must be a list of strings");
  if (n.size() > kMaxListItems) fail(n, std::string(what) + " has more than 256 items");
  for (const auto& item : n) out.push_back(scalar(item, what));
  return out;
}

std::vector<EnvVar> envMap(const YAML::Node& n, const char* what) {
  std::vector<EnvVar> out;
  if (n.IsNull()) return out;
  if (!n.IsMap()) fail(n, std::string(what) + " must be a map of NAME: value");
  if (n.size() > kMaxListItems) fail(n, std::string(what) + " has more than 256 entries");
  std::set<std::string> seen;
  for (const auto& kv : n) {
    std::string key = scalar(kv.first, "an environment name", 256);
    if (!isValidEnvKey(key)) fail(kv.first, "'" + key + "' is not a valid environment name");
    if (!seen.insert(key).second) fail(kv.first, "environment name " + key + " given twice");
    out.push_back({std::move(key), scalar(kv.second, "an environment value")});
  }
  return out;
}

bool parseBool(const YAML::Node& n, const char* what) {
  if (!n.IsScalar()) fail(n, std::string(what) + " must be true or false");
  const std::string& s = n.Scalar();
  if (s == "true" || s == "True" || s == "yes") return true;
  if (s == "false" || s == "False" || s == "no") return false;
  fail(n, std::string(what) + " must be true or false, not '" + s + "'");
}

template <typename Fn>
void forEachField(const YAML::Node& map, const std::string& file,
                  const std::set<std::string>& known, std::vector<CatalogProblem>* warnings,
                  Fn&& fn) {
  for (const auto& kv : map) {
    const std::string key = scalar(kv.first, "a field name", 256);
    if (known.count(key)) {
      fn(key, kv.second);
    } else if (warnings) {
      warnings->push_back({file, lineOf(kv.first), "unknown field '" + key + "' ignored", false});
    }
  }
}

StarterVersion parseVersion(const YAML::Node& n, const std::string& file,
                            std::vector<CatalogProblem>* warnings) {
  if (!n.IsMap()) fail(n, "a version must be a map with version, published and packages");
  StarterVersion v;
  bool hasPackages = false;
  forEachField(n, file, {"version", "published", "packages"}, warnings,
               [&](const std::string& key, const YAML::Node& value) {
                 if (key == "version") {
                   v.version = scalar(value, "version", 64);
                   if (!isDottedNumeric(v.version)) {
                     fail(value, "version '" + v.version + "' is not dotted numeric (e.g. 3.12.8)");
                   }
                 } else if (key == "published") {
                   v.published = scalar(value, "published", 64);
                 } else {
                   hasPackages = true;
                   if (!value.IsSequence()) fail(value, "packages must be a list of name=version");
                   if (value.size() > kMaxPins) fail(value, "more than 10000 packages");
                   std::set<std::string> names;
                   for (const auto& item : value) {
                     const std::string text = scalar(item, "a package", 512);
                     auto atom = parseAtom(text);
                     if (!atom.ok() || atom->conflict || atom->op != VersionOp::kEqual) {
                       fail(item, "package '" + text + "' is not name=version");
                     }
                     if (!names.insert(atom->name).second) fail(item, atom->name + " pinned twice");
                     v.packages.push_back({atom->name, atom->version});
                   }
                 }
               });
  if (v.version.empty()) fail(n, "a version has no 'version'");
  if (!hasPackages || v.packages.empty()) fail(n, "version " + v.version + " pins no packages");
  return v;
}

StarterLine parseLine(const YAML::Node& n, const std::string& file,
                      std::vector<CatalogProblem>* warnings) {
  if (!n.IsMap()) fail(n, "a line must be a map with line and versions");
  StarterLine line;
  YAML::Node versions;
  forEachField(n, file, {"line", "maintained", "environment", "versions"}, warnings,
               [&](const std::string& key, const YAML::Node& value) {
                 if (key == "line") {
                   line.line = scalar(value, "line", 64);
                   if (!isDottedNumeric(line.line)) {
                     fail(value, "line '" + line.line + "' is not dotted numeric (e.g. 3.12)");
                   }
                 } else if (key == "maintained") {
                   line.maintained = parseBool(value, "maintained");
                 } else if (key == "environment") {
                   line.environment = envMap(value, "environment");
                 } else {
                   versions = value;
                 }
               });
  if (line.line.empty()) fail(n, "a line has no 'line'");
  if (!versions || !versions.IsSequence() || versions.size() == 0) {
    fail(n, "line " + line.line + " has no versions");
  }
  if (versions.size() > kMaxVersions) fail(versions, "more than 1024 versions");
  std::set<std::string> seen;
  for (const auto& v : versions) {
    line.versions.push_back(parseVersion(v, file, warnings));
    if (!seen.insert(line.versions.back().version).second) {
      fail(v, "version " + line.versions.back().version + " given twice");
    }
  }
  std::stable_sort(line.versions.begin(), line.versions.end(),
                   [](const StarterVersion& a, const StarterVersion& b) {
                     return compareVersions(a.version, b.version) > 0;
                   });
  return line;
}

Starter parseStarterNode(const YAML::Node& root, const std::string& file,
                         std::vector<CatalogProblem>* warnings) {
  if (!root.IsMap()) fail(root, "a starter file must hold a map (name, lines, ...)");
  Starter s;
  s.file = file;
  YAML::Node lines;
  forEachField(
      root, file,
      {"name", "description", "environment", "entrypoint", "cmd", "user", "workdir", "lines"},
      warnings, [&](const std::string& key, const YAML::Node& value) {
        if (key == "name") {
          s.name = scalar(value, "name", 128);
          if (!isValidStarterName(s.name)) {
            fail(value, "name '" + s.name + "' must match [a-z0-9][a-z0-9._-]*");
          }
        } else if (key == "description") {
          s.description = value.IsNull() ? "" : scalar(value, "description");
        } else if (key == "environment") {
          s.environment = envMap(value, "environment");
        } else if (key == "entrypoint") {
          s.entrypoint = stringList(value, "entrypoint");
        } else if (key == "cmd") {
          s.cmd = stringList(value, "cmd");
        } else if (key == "user") {
          s.user = value.IsNull() ? "" : scalar(value, "user", 256);
        } else if (key == "workdir") {
          s.workdir = value.IsNull() ? "" : scalar(value, "workdir", 4096);
        } else {
          lines = value;
        }
      });
  if (s.name.empty()) fail(root, "the starter has no name");
  if (!lines || !lines.IsSequence() || lines.size() == 0)
    fail(root, "starter " + s.name + " has no lines");
  if (lines.size() > kMaxLines) fail(lines, "more than 256 lines");
  std::set<std::string> seen;
  for (const auto& l : lines) {
    s.lines.push_back(parseLine(l, file, warnings));
    if (!seen.insert(s.lines.back().line).second)
      fail(l, "line " + s.lines.back().line + " given twice");
  }
  std::stable_sort(s.lines.begin(), s.lines.end(), [](const StarterLine& a, const StarterLine& b) {
    return compareVersions(a.line, b.line) > 0;
  });
  return s;
}

}  // namespace

bool isDottedNumeric(std::string_view s) {
  if (s.empty() || s.size() > 64) return false;
  bool digit = false;
  for (char c : s) {
    if (c >= '0' && c <= '9') {
      digit = true;
    } else if (c == '.' && digit) {
      digit = false;
    } else {
      return false;
    }
  }
  return digit;
}

bool isValidStarterName(std::string_view s) {
  if (s.empty() || s.size() > 128) return false;
  auto alnum = [](char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); };
  if (!alnum(s[0])) return false;
  return std::all_of(s.begin(), s.end(),
                     [&](char c) { return alnum(c) || c == '.' || c == '_' || c == '-'; });
}

bool isValidEnvKey(std::string_view s) {
  if (s.empty()) return false;
  auto alpha = [](char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'; };
  if (!alpha(s[0])) return false;
  return std::all_of(s.begin(), s.end(),
                     [&](char c) { return alpha(c) || (c >= '0' && c <= '9'); });
}

std::vector<EnvVar> Starter::environmentFor(const StarterLine& line) const {
  std::vector<EnvVar> out = environment;
  for (const EnvVar& e : line.environment) {
    auto it = std::find_if(out.begin(), out.end(), [&](const EnvVar& o) { return o.key == e.key; });
    if (it != out.end()) {
      it->value = e.value;
    } else {
      out.push_back(e);
    }
  }
  return out;
}

bool Starter::setsEnv(std::string_view key) const {
  auto has = [&](const std::vector<EnvVar>& env) {
    return std::any_of(env.begin(), env.end(), [&](const EnvVar& e) { return e.key == key; });
  };
  return has(environment) || std::any_of(lines.begin(), lines.end(),
                                         [&](const StarterLine& l) { return has(l.environment); });
}

const StarterLine* Starter::findLine(std::string_view line) const {
  for (const auto& l : lines) {
    if (l.line == line) return &l;
  }
  return nullptr;
}

Result<Starter> parseStarter(std::string_view text, const std::string& file,
                             std::vector<CatalogProblem>* problems) {
  auto failure = [&](size_t line, std::string message) {
    problems->push_back({file, line, message, true});
    return Error{"E_CATALOG_INVALID",
                 file + (line ? ":" + std::to_string(line) : std::string()) + ": " + message};
  };
  if (text.size() > kMaxStarterFileBytes) return failure(0, "larger than 4 MiB");
  try {
    YAML::Node root = YAML::Load(std::string(text));
    return parseStarterNode(root, file, problems);
  } catch (const Invalid& e) {
    return failure(e.line, e.message);
  } catch (const YAML::Exception& e) {
    return failure(e.mark.line >= 0 ? size_t(e.mark.line) + 1 : 0, "not valid YAML: " + e.msg);
  }
}

}  // namespace imaged::catalog
