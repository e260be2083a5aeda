#include "daemon/catalog/atom.h"

#include "daemon/catalog/version.h"

namespace imaged::catalog {
namespace {

bool isOperatorChar(char c) {
  return c == '<' || c == '>' || c == '=' || c == '~';
}

Result<VersionOp> parseOp(std::string_view op) {
  if (op == "=") return VersionOp::kEqual;
  if (op == "<") return VersionOp::kLess;
  if (op == "<=") return VersionOp::kLessEqual;
  if (op == ">") return VersionOp::kGreater;
  if (op == ">=") return VersionOp::kGreaterEqual;
  if (op == "~" || op == "=~" || op == "~=") return VersionOp::kFuzzy;
  return Error{"E_INVALID_ARGUMENT", "unknown version operator '" + std::string(op) + "'"};
}

const char* opText(VersionOp op) {
  switch (op) {
    case VersionOp::kAny:
      return "";
    case VersionOp::kEqual:
      return "=";
    case VersionOp::kLess:
      return "<";
    case VersionOp::kLessEqual:
      return "<=";
    case VersionOp::kGreater:
      return ">";
    case VersionOp::kGreaterEqual:
      return ">=";
    case VersionOp::kFuzzy:
      return "~";
  }
  return "";
}

Error invalid(std::string_view text, std::string why) {
  return Error{"E_INVALID_ARGUMENT", "'" + std::string(text.substr(0, 80)) + "': " + why};
}

}  // namespace

bool isValidPackageName(std::string_view name) {
  if (name.empty() || name.size() > kMaxNameBytes) return false;
  for (char c : name) {
    const auto u = static_cast<unsigned char>(c);
    if (u <= 0x20 || u >= 0x7f || isOperatorChar(c) || c == '!') return false;
  }
  return true;
}

std::string Atom::str() const {
  std::string s;
  if (conflict) s += '!';
  s += name;
  s += opText(op);
  s += version;
  return s;
}

Result<Atom> parseAtom(std::string_view text) {
  Atom atom;
  std::string_view rest = text;
  if (!rest.empty() && rest[0] == '!') {
    atom.conflict = true;
    rest.remove_prefix(1);
  }
  size_t opStart = 0;
  while (opStart < rest.size() && !isOperatorChar(rest[opStart])) ++opStart;
  const std::string_view name = rest.substr(0, opStart);
  if (name.empty()) return invalid(text, "no package name");
  if (!isValidPackageName(name)) {
    return invalid(text, name.size() > kMaxNameBytes ? "name longer than 255 bytes"
                                                     : "name has a space or a control character");
  }
  atom.name = std::string(name);
  if (opStart == rest.size()) return atom;

  size_t opEnd = opStart;
  while (opEnd < rest.size() && isOperatorChar(rest[opEnd])) ++opEnd;
  auto op = parseOp(rest.substr(opStart, opEnd - opStart));
  if (!op.ok()) return invalid(text, op.error().message);
  const std::string_view version = rest.substr(opEnd);
  if (version.empty()) return invalid(text, "an operator without a version");
  if (version.size() > kMaxVersionBytes) return invalid(text, "version longer than 128 bytes");
  if (!isValidVersion(version))
    return invalid(text, "'" + std::string(version) + "' is not an apk version");
  atom.op = *op;
  atom.version = std::string(version);
  return atom;
}

Result<Provide> parseProvide(std::string_view text) {
  const size_t eq = text.find('=');
  const std::string_view name = text.substr(0, eq);
  if (!isValidPackageName(name)) return invalid(text, "not a valid provided name");
  Provide p{std::string(name), ""};
  if (eq != std::string_view::npos) {
    // Not held to apk's grammar: real indexes carry provides such as `pc:librtmp=v2.4`, which
    // apk keeps and compares as far as they parse.
    const std::string_view version = text.substr(eq + 1);
    if (version.empty() || version.size() > kMaxVersionBytes || !isValidPackageName(version)) {
      return invalid(text, "'" + std::string(version.substr(0, 40)) + "' is not a version");
    }
    p.version = std::string(version);
  }
  return p;
}

bool versionSatisfies(const Atom& atom, std::string_view version) {
  if (atom.op == VersionOp::kAny) return true;
  if (atom.op == VersionOp::kFuzzy) return fuzzyMatch(version, atom.version);
  const int c = compareVersions(version, atom.version);
  switch (atom.op) {
    case VersionOp::kEqual:
      return c == 0;
    case VersionOp::kLess:
      return c < 0;
    case VersionOp::kLessEqual:
      return c <= 0;
    case VersionOp::kGreater:
      return c > 0;
    case VersionOp::kGreaterEqual:
      return c >= 0;
    default:
      return false;
  }
}

}  // namespace imaged::catalog
