#include "daemon/catalog/version.h"

#include <cstdint>

namespace imaged::catalog {
namespace {

// Token kinds, in the order in which they may follow one another. The order matters: a later
// kind may not be followed by an earlier one, and at the end the kinds themselves are compared.
enum Token {
  kInitialDigit,
  kDigit,
  kLetter,
  kSuffix,
  kSuffixNumber,
  kCommitHash,
  kRevision,
  kEnd,
  kInvalid,
};

// Pre-release suffixes sort below kNone, post-release ones above.
enum Suffix { kSuffixInvalid, kAlpha, kBeta, kPre, kRc, kNone, kCvs, kSvn, kGit, kHg, kP };

int suffixValue(std::string_view s) {
  if (s == "alpha") return kAlpha;
  if (s == "beta") return kBeta;
  if (s == "pre") return kPre;
  if (s == "rc") return kRc;
  if (s == "cvs") return kCvs;
  if (s == "svn") return kSvn;
  if (s == "git") return kGit;
  if (s == "hg") return kHg;
  if (s == "p") return kP;
  return kSuffixInvalid;
}

bool isDigit(char c) {
  return c >= '0' && c <= '9';
}
bool isLower(char c) {
  return c >= 'a' && c <= 'z';
}
bool isHex(char c) {
  return isDigit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

struct Cursor {
  Token token = kInitialDigit;
  int suffix = kSuffixInvalid;
  uint64_t number = 0;
  std::string_view value;  // the token's text
  std::string_view rest;   // what is left to parse
};

void parseDigits(Cursor& c) {
  size_t n = 0;
  uint64_t v = 0;
  while (n < c.rest.size() && isDigit(c.rest[n])) {
    v = v * 10 + static_cast<uint64_t>(c.rest[n] - '0');  // wraps like apk's on absurd lengths
    ++n;
  }
  c.number = v;
  c.value = c.rest.substr(0, n);
  c.rest.remove_prefix(n);
  if (n == 0) c.token = kInvalid;
}

void first(Cursor& c, std::string_view v) {
  c.rest = v;
  c.token = kInitialDigit;
  parseDigits(c);
}

void next(Cursor& c) {
  if (c.rest.empty()) {
    c.token = kEnd;
    return;
  }
  const char ch = c.rest[0];
  if (isLower(ch)) {
    if (c.token > kDigit) {
      c.token = kInvalid;
      return;
    }
    c.value = c.rest.substr(0, 1);
    c.token = kLetter;
    c.rest.remove_prefix(1);
    return;
  }
  if (ch == '.' || isDigit(ch)) {
    if (ch == '.') {
      if (c.token > kDigit) {
        c.token = kInvalid;
        return;
      }
      c.rest.remove_prefix(1);
    }
    // Digits right after a letter ("0.99f7") continue the version as apk 2.x reads it, and
    // Alpine's own indexes carry such versions.
    if (c.token == kInitialDigit || c.token == kDigit || (c.token == kLetter && ch != '.')) {
      c.token = kDigit;
    } else if (c.token == kSuffix) {
      c.token = kSuffixNumber;
    } else {
      c.token = kInvalid;
      return;
    }
    parseDigits(c);
    return;
  }
  if (ch == '_') {
    if (c.token > kSuffixNumber) {
      c.token = kInvalid;
      return;
    }
    c.rest.remove_prefix(1);
    size_t n = 0;
    while (n < c.rest.size() && isLower(c.rest[n])) ++n;
    c.value = c.rest.substr(0, n);
    c.rest.remove_prefix(n);
    c.suffix = suffixValue(c.value);
    c.token = c.suffix == kSuffixInvalid ? kInvalid : kSuffix;
    return;
  }
  if (ch == '~') {
    if (c.token >= kCommitHash) {
      c.token = kInvalid;
      return;
    }
    c.rest.remove_prefix(1);
    size_t n = 0;
    while (n < c.rest.size() && isHex(c.rest[n])) ++n;
    c.value = c.rest.substr(0, n);
    c.rest.remove_prefix(n);
    c.token = n == 0 ? kInvalid : kCommitHash;
    return;
  }
  if (ch == '-') {
    if (c.token >= kRevision || c.rest.size() < 2 || c.rest[1] != 'r') {
      c.token = kInvalid;
      return;
    }
    c.rest.remove_prefix(2);
    c.token = kRevision;
    parseDigits(c);
    return;
  }
  c.token = kInvalid;
}

int compareStrings(std::string_view a, std::string_view b) {
  const int r = a.compare(b);
  return r < 0 ? -1 : r > 0 ? 1 : 0;
}

int compareTokens(const Cursor& a, const Cursor& b) {
  uint64_t x, y;
  switch (a.token) {
    case kDigit:
      // A leading zero on either side: compare as strings, as Gentoo's rules do.
      if (a.value[0] == '0' || b.value[0] == '0') return compareStrings(a.value, b.value);
      [[fallthrough]];
    case kInitialDigit:
    case kSuffixNumber:
    case kRevision:
      x = a.number;
      y = b.number;
      break;
    case kLetter:
      x = static_cast<unsigned char>(a.value[0]);
      y = static_cast<unsigned char>(b.value[0]);
      break;
    case kSuffix:
      x = static_cast<uint64_t>(a.suffix);
      y = static_cast<uint64_t>(b.suffix);
      break;
    default:
      return compareStrings(a.value, b.value);
  }
  return x < y ? -1 : x > y ? 1 : 0;
}

int compare(std::string_view a, std::string_view b, bool fuzzy) {
  Cursor ta, tb;
  for (first(ta, a), first(tb, b); ta.token == tb.token && ta.token < kEnd; next(ta), next(tb)) {
    if (int r = compareTokens(ta, tb); r != 0) return r;
  }
  if (ta.token == tb.token) return 0;
  if (fuzzy && tb.token == kEnd) return 0;
  // Equal so far and one goes on: the longer is newer, unless it goes on with a pre-release.
  if (ta.token == kSuffix && ta.suffix < kNone) return -1;
  if (tb.token == kSuffix && tb.suffix < kNone) return 1;
  if (ta.token > tb.token) return -1;
  if (tb.token > ta.token) return 1;
  return 0;
}

}  // namespace

bool isValidVersion(std::string_view v) {
  Cursor c;
  for (first(c, v); c.token < kEnd; next(c)) {
  }
  return c.token == kEnd;
}

int compareVersions(std::string_view a, std::string_view b) {
  return compare(a, b, false);
}

bool fuzzyMatch(std::string_view version, std::string_view prefix) {
  return compare(version, prefix, true) == 0;
}

}  // namespace imaged::catalog
