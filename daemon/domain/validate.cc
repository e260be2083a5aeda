#include "daemon/domain/validate.h"

#include <set>

#include "daemon/catalog/resolver.h"

namespace imaged::domain {
namespace {

bool lowerAlnum(char c) {
  return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

// [a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*
bool validComponent(std::string_view c) {
  size_t i = 0;
  auto alnumRun = [&] {
    const size_t start = i;
    while (i < c.size() && lowerAlnum(c[i])) ++i;
    return i > start;
  };
  if (!alnumRun()) return false;
  while (i < c.size()) {
    if (c[i] == '.') {
      ++i;
    } else if (c[i] == '_') {
      ++i;
      if (i < c.size() && c[i] == '_') ++i;
    } else if (c[i] == '-') {
      while (i < c.size() && c[i] == '-') ++i;
    } else {
      return false;
    }
    if (!alnumRun()) return false;
  }
  return true;
}

}  // namespace

Status validateName(std::string_view name) {
  auto invalid = [&](const std::string& why) {
    return Error{"E_INVALID_NAME", "'" + std::string(name.substr(0, 64)) + "' " + why};
  };
  if (name.empty()) return invalid("is empty");
  if (name.size() > kMaxNameBytes) return invalid("is longer than 128 bytes");
  size_t start = 0;
  for (;;) {
    const size_t slash = name.find('/', start);
    const std::string_view component = name.substr(start, slash - start);
    if (!validComponent(component)) {
      return invalid(
          "breaks the repository-name rules: lowercase letters and digits, separated by '.', "
          "'_', '__', '-' or '/', starting and ending with a letter or digit");
    }
    if (slash == std::string_view::npos) break;
    start = slash + 1;
  }
  return Ok{};
}

Status validateTenant(std::string_view tenant) {
  bool ok = !tenant.empty() && tenant.size() <= 64 && lowerAlnum(tenant[0]);
  for (char c : tenant) ok = ok && (lowerAlnum(c) || c == '_' || c == '-');
  if (!ok) {
    return Error{"E_INVALID_ARGUMENT", "tenant '" + std::string(tenant.substr(0, 64)) +
                                           "' must match [a-z0-9][a-z0-9_-]*"};
  }
  return Ok{};
}

Status validateEnv(const std::vector<EnvVar>& env, const catalog::Starter& starter) {
  if (env.size() > kMaxEnvVars) return Error{"E_INVALID_ARGUMENT", "more than 256 env vars"};
  std::set<std::string> seen;
  for (const EnvVar& e : env) {
    if (!catalog::isValidEnvKey(e.key) || e.key.size() > 256) {
      return Error{"E_ENV_INVALID_KEY", "env key '" + e.key.substr(0, 64) +
                                            "' is not a valid name ([A-Za-z_][A-Za-z0-9_]*)"};
    }
    if (e.value.empty()) {
      return Error{"E_ENV_EMPTY_VALUE", "env " + e.key + " has no value; give KEY=VALUE"};
    }
    if (e.value.size() > kMaxEnvValueBytes) {
      return Error{"E_INVALID_ARGUMENT", "env " + e.key + " is longer than 4096 bytes"};
    }
    if (!seen.insert(e.key).second) {
      return Error{"E_ENV_DUPLICATE_KEY", "env " + e.key + " is given more than once"};
    }
    if (starter.setsEnv(e.key)) {
      return Error{"E_ENV_RESERVED_KEY", "env " + e.key + " is set by the starter image " +
                                             starter.name + " and cannot be overridden"};
    }
  }
  return Ok{};
}

Result<std::vector<catalog::Atom>> validatePackages(const std::vector<std::string>& packages,
                                                    const catalog::Catalog& catalog) {
  if (packages.size() > kMaxPackages) return Error{"E_INVALID_ARGUMENT", "more than 256 packages"};
  std::vector<catalog::Atom> atoms;
  std::set<std::string> names;
  for (const std::string& p : packages) {
    auto atom = catalog::parseAtom(p);
    if (!atom.ok()) return atom.error();
    if (!names.insert(atom->name).second) {
      return Error{"E_INVALID_ARGUMENT", "package " + atom->name + " is added more than once"};
    }
    atoms.push_back(std::move(atom).value());
  }
  if (auto s = catalog::checkAddedPackages(catalog, atoms); !s.ok()) return s.error();
  return atoms;
}

Status validateDescription(std::string_view description) {
  if (description.size() > kMaxDescriptionBytes) {
    return Error{"E_INVALID_ARGUMENT", "description is longer than 4096 bytes"};
  }
  return Ok{};
}

}  // namespace imaged::domain
