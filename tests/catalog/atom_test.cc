#include "daemon/catalog/atom.h"

#include <gtest/gtest.h>

namespace imaged::catalog {
namespace {

Atom atom(std::string_view s) {
  auto a = parseAtom(s);
  EXPECT_TRUE(a.ok()) << s << ": " << (a.ok() ? "" : a.error().message);
  return a.ok() ? *a : Atom{};
}

TEST(Atom, ParsesEveryOperator) {
  EXPECT_EQ(atom("curl"), (Atom{"curl", VersionOp::kAny, "", false}));
  EXPECT_EQ(atom("curl=8.5.0-r0"), (Atom{"curl", VersionOp::kEqual, "8.5.0-r0", false}));
  EXPECT_EQ(atom("curl<8"), (Atom{"curl", VersionOp::kLess, "8", false}));
  EXPECT_EQ(atom("curl<=8"), (Atom{"curl", VersionOp::kLessEqual, "8", false}));
  EXPECT_EQ(atom("curl>8"), (Atom{"curl", VersionOp::kGreater, "8", false}));
  EXPECT_EQ(atom("curl>=8.5"), (Atom{"curl", VersionOp::kGreaterEqual, "8.5", false}));
  EXPECT_EQ(atom("python3~3.12"), (Atom{"python3", VersionOp::kFuzzy, "3.12", false}));
  EXPECT_EQ(atom("python3=~3.12").op, VersionOp::kFuzzy);
  EXPECT_EQ(atom("!openssl"), (Atom{"openssl", VersionOp::kAny, "", true}));
  EXPECT_EQ(atom("!openssl<3"), (Atom{"openssl", VersionOp::kLess, "3", true}));
}

TEST(Atom, NamespacedNamesAreNames) {
  EXPECT_EQ(atom("so:libc.musl-x86_64.so.1").name, "so:libc.musl-x86_64.so.1");
  EXPECT_EQ(atom("cmd:python3").name, "cmd:python3");
  EXPECT_EQ(atom("pc:zlib>=1.2").name, "pc:zlib");
  EXPECT_EQ(atom("pc:zlib>=1.2").version, "1.2");
  EXPECT_EQ(atom("so:libssl.so.3=3").version, "3");
}

TEST(Atom, RoundTripsThroughItsText) {
  for (const char* s : {"curl", "curl>=8.5", "!foo<2", "py3-flask~3", "so:libz.so.1=1.3.1"}) {
    EXPECT_EQ(atom(s).str(), s);
  }
}

TEST(Atom, RejectsMalformedAtoms) {
  for (const char* bad : {"", "!", ">=1.2", "curl>=", "curl=>1", "curl<>1", "curl>=abc", "cu rl",
                          "curl\t", "curl=1.0 ", "a\x01"}) {
    auto a = parseAtom(bad);
    EXPECT_FALSE(a.ok()) << "'" << bad << "'";
    if (!a.ok()) {
      EXPECT_EQ(a.error().code, "E_INVALID_ARGUMENT");
    }
  }
  EXPECT_FALSE(parseAtom(std::string(256, 'n')).ok());
  EXPECT_TRUE(parseAtom(std::string(255, 'n')).ok());
}

TEST(Atom, VersionConstraints) {
  EXPECT_TRUE(versionSatisfies(atom("a"), "anything"));
  EXPECT_TRUE(versionSatisfies(atom("a>=3.9"), "3.10"));
  EXPECT_FALSE(versionSatisfies(atom("a>=3.10"), "3.9"));
  EXPECT_TRUE(versionSatisfies(atom("a<2.40-r3"), "2.40-r2"));
  EXPECT_FALSE(versionSatisfies(atom("a<2.40-r3"), "2.40-r3"));
  EXPECT_TRUE(versionSatisfies(atom("a<=2.40-r3"), "2.40-r3"));
  EXPECT_TRUE(versionSatisfies(atom("a=1.0"), "1.0"));
  EXPECT_FALSE(versionSatisfies(atom("a=1.0"), "1.0-r0"));
  EXPECT_TRUE(versionSatisfies(atom("a>1.0_rc1"), "1.0"));
  EXPECT_TRUE(versionSatisfies(atom("a~3.12"), "3.12.8-r0"));
  EXPECT_FALSE(versionSatisfies(atom("a~3.12"), "3.13.0-r0"));
}

TEST(Provide, ParsesVersionedAndUnversioned) {
  auto p = parseProvide("python3=3.12.8-r0");
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(*p, (Provide{"python3", "3.12.8-r0"}));
  auto q = parseProvide("custom-ca-certificates");
  ASSERT_TRUE(q.ok());
  EXPECT_EQ(*q, (Provide{"custom-ca-certificates", ""}));
  EXPECT_FALSE(parseProvide("x=not a version").ok());
  EXPECT_FALSE(parseProvide("x=").ok());
  EXPECT_EQ(parseProvide("pc:librtmp=v2.4")->version, "v2.4");  // as Alpine 3.16 ships it
  EXPECT_FALSE(parseProvide("=1.0").ok());
}

}  // namespace
}  // namespace imaged::catalog
