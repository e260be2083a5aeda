#include "daemon/catalog/version.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace imaged::catalog {
namespace {

struct Pair {
  const char* a;
  char op;  // '<', '=', '>'
  const char* b;
};

// Pairs whose order apk-tools defines; each is checked both ways round.
const std::vector<Pair> kPairs = {
    // plain numeric parts, numerically
    {"1", '<', "2"},
    {"9", '<', "10"},
    {"3.9", '<', "3.10"},
    {"3.10", '<', "3.12"},
    {"1.0", '>', "1"},
    {"1.0.0", '>', "1.0"},
    {"1.2.1", '>', "1.2"},
    {"1.10.0", '>', "1.9.9"},
    {"2.0", '>', "1.99.99"},
    {"20050718", '>', "3.9.8"},
    {"3.0.20060720", '<', "20060720"},
    {"1.0.0", '=', "1.0.0"},
    {"12.17.9", '>', "2.6.1.3"},
    {"7.0.174", '>', "7.0.17"},
    {"2.6.15.20060110", '<', "2.6.16.20060323"},
    {"0.0.16", '<', "0.0.25"},
    // leading zeros: a dotted part starting with 0 compares as a string
    {"1.01", '<', "1.1"},
    {"1.001", '<', "1.01"},
    {"1.02", '<', "1.03"},
    {"1.02.07", '<', "1.02.10"},
    {"1.06", '<', "006"},
    {"006", '>', "1.0.0"},
    {"013", '<', "014"},
    {"087", '<', "103"},
    {"1.07", '<', "1.19"},
    {"1.2.07.8", '<', "1.2.12.04"},
    {"0.01", '<', "0.06"},
    {"4.01", '<', "4.20"},
    {"1.0", '<', "1.1"},
    {"2.01.01_alpha10", '>', "0.94"},
    {"1.00", '>', "0.98"},
    {"0.20070118", '<', "0.20070207_rc1"},
    // a trailing letter
    {"1.1a", '<', "1.3a"},
    {"2.5.1", '<', "2.5.1a"},
    {"1.7", '<', "1.7b"},
    {"1.6d", '>', "1.2.07.8"},
    {"0.15.1b", '<', "1.0.1"},
    {"2.3.0b-r1", '<', "2.3.0b-r2"},
    {"6b-r7", '>', "1.12-r7"},
    {"2.12r-r4", '<', "2.12r-r5"},
    {"1.0a", '<', "1.0b"},
    {"1.0z", '<', "1.1"},
    {"0.99f7-r0", '>', "0.99f-r0"},
    {"0.99f7", '<', "0.99f10"},
    {"0.99f7", '<', "0.99g"},
    // pre-release suffixes below the release, post-release above
    {"1.0_alpha", '<', "1.0_beta"},
    {"1.0_beta", '<', "1.0_pre"},
    {"1.0_pre", '<', "1.0_rc"},
    {"1.0_rc", '<', "1.0"},
    {"1.0", '<', "1.0_cvs"},
    {"1.0_cvs", '<', "1.0_svn"},
    {"1.0_svn", '<', "1.0_git"},
    {"1.0_git", '<', "1.0_hg"},
    {"1.0_hg", '<', "1.0_p"},
    {"1.0_p", '<', "1.0.1"},
    {"1.1", '>', "1.1_alpha1"},
    {"0.1.0_alpha2", '>', "0.1.0_alpha"},
    {"1.3_alpha2", '<', "1.3_alpha3"},
    {"1.3_alpha", '<', "1.3_alpha2"},
    {"0.13_beta4", '<', "0.13_beta5"},
    {"2.0.0_rc3-r1", '<', "2.0.0"},
    {"3.1_p16", '<', "3.1_p17"},
    {"1.0_p9-r0", '<', "1.0_p10-r0"},
    {"1.8.5", '<', "1.8.5_p2"},
    {"4.2.52_p2-r1", '<', "4.2.52_p4-r2"},
    {"2.1_pre20", '<', "2.1_pre26"},
    {"0.1.0_alpha_pre2", '<', "0.1.0_alpha"},
    {"1.3_pre1-r1", '<', "1.3.2"},
    {"3.9_pre20060124", '>', "0.01"},
    {"0.10.0", '<', "0.10.1_rc1"},
    {"1.0.0_pre20191002222144-r0", '<', "1.0.0_pre20210530193627-r0"},
    {"3.12.8_rc1-r0", '<', "3.12.8-r0"},
    {"1.0_rc1", '<', "1.0_rc10"},
    {"1.0_p", '>', "1.0_p_alpha"},
    // revisions
    {"1.0.4-r3", '<', "1.0.4-r4"},
    {"1.2.2-r1", '>', "1.2.2"},
    {"2.11-r1", '>', "2.11"},
    {"1.3.5-r10", '>', "1.3.5-r8"},
    {"104-r11", '>', "104-r9"},
    {"2.18.3-r10", '>', "1.05-r18"},
    {"1.0-r0", '>', "1.0"},
    {"1.0-r1", '<', "1.0.1"},
    {"1.3-r0", '<', "1.3.1-r0"},
    {"1.0-r9", '<', "1.0-r10"},
    {"3.13.1-r0", '>', "3.13.0-r1"},
    {"2.40-r3", '>', "2.40-r2"},
    {"4.5_p1", '<', "4.5_p1-r1"},
    {"2.9.11_pre20051101", '<', "2.9.11_pre20051101-r3"},
    // commit hashes sort below the revision and compare as text
    {"1.0~abc", '<', "1.0~abd"},
    {"1.0~abc-r1", '>', "1.0~abc-r0"},
    // equal
    {"0.1.0_alpha", '=', "0.1.0_alpha"},
    {"2.16.1-r3", '=', "2.16.1-r3"},
    {"3.0.24", '=', "3.0.24"},
    {"20241121-r0", '=', "20241121-r0"},
    // large numbers (more than 32 bits)
    {"1.20250101000000", '>', "1.20240101000000"},
    {"9999999999", '<', "10000000000"},
    // an invalid tail sorts by its valid prefix, then by token kind (as apk does)
    {"1.0", '<', "1.0bc"},
};

TEST(Version, OrdersPairsAsApkDoes) {
  for (const Pair& p : kPairs) {
    const int r = compareVersions(p.a, p.b), back = compareVersions(p.b, p.a);
    const int want = p.op == '<' ? -1 : p.op == '>' ? 1 : 0;
    EXPECT_EQ((r > 0) - (r < 0), want) << p.a << " " << p.op << " " << p.b;
    EXPECT_EQ((back > 0) - (back < 0), -want) << p.b << " vs " << p.a << " (reversed)";
  }
}

TEST(Version, SortingAListGivesApksOrder) {
  std::vector<std::string> v = {"3.10", "3.9", "3.10.1_rc1", "3.10.1", "3.10-r1", "3.9a", "3.09"};
  std::sort(v.begin(), v.end(),
            [](const std::string& a, const std::string& b) { return compareVersions(a, b) < 0; });
  EXPECT_EQ(v, (std::vector<std::string>{"3.09", "3.9", "3.9a", "3.10", "3.10-r1", "3.10.1_rc1",
                                         "3.10.1"}));
}

TEST(Version, ValidatesTheGrammar) {
  for (const char* ok :
       {"1", "1.2.3", "1.2.3-r4", "3.12.8_rc1-r0", "2.40a-r1", "1.0_alpha_pre2", "1.0_p",
        "20241121-r0", "1.0~c0ffee-r2", "0.1.0_git20240101", "006", "0.99f7-r0"}) {
    EXPECT_TRUE(isValidVersion(ok)) << ok;
  }
  for (const char* bad :
       {"", "a", "1.", "1..2", "1.0bc", "1.0-1", "1.0-r", "1.0_foo", "1.0-r1-r2", "1.0-r1_p",
        "1.0~", "1.0~xyz", "v1.0", "1.0 ", "1.0_rc1a", "-r1", "1.0a.1"}) {
    EXPECT_FALSE(isValidVersion(bad)) << bad;
  }
}

TEST(Version, FuzzyMatchIsATokenPrefixMatch) {
  EXPECT_TRUE(fuzzyMatch("3.12.8-r0", "3.12"));
  EXPECT_TRUE(fuzzyMatch("3.12", "3.12"));
  EXPECT_TRUE(fuzzyMatch("3.12.8_rc1-r0", "3.12.8"));
  EXPECT_TRUE(fuzzyMatch("1.2.3", "1"));
  EXPECT_FALSE(fuzzyMatch("3.120", "3.12"));  // token by token, not character by character
  EXPECT_FALSE(fuzzyMatch("3.13.0", "3.12"));
  EXPECT_FALSE(fuzzyMatch("3.1", "3.12"));
  EXPECT_FALSE(fuzzyMatch("3", "3.12"));  // the version is shorter than the prefix
}

}  // namespace
}  // namespace imaged::catalog
