#include "daemon/catalog/apkindex.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <fstream>

namespace imaged::catalog {
namespace {

const std::string kData = IMAGED_SHARED_DATA;

const PackageRecord* find(const ParsedIndex& index, std::string_view name) {
  auto it = std::find_if(index.records.begin(), index.records.end(),
                         [&](const PackageRecord& r) { return r.name == name; });
  return it == index.records.end() ? nullptr : &*it;
}

TEST(ApkIndex, ReadsTheWholeAlpine316Index) {
  auto text = readIndexArchive(kData + "/alpine-3.16-main/x86_64/APKINDEX.tar.gz");
  ASSERT_TRUE(text.ok()) << text.error().message;
  auto index = parseApkIndex(*text, "APKINDEX");
  EXPECT_EQ(index.records.size(), 4929u);
  EXPECT_TRUE(index.problems.empty()) << index.problems.front().message;

  const PackageRecord* musl = find(index, "musl");
  ASSERT_NE(musl, nullptr);
  EXPECT_EQ(musl->version, "1.2.3-r2");
  EXPECT_EQ(musl->arch, "x86_64");
  EXPECT_EQ(musl->license, "MIT");
  EXPECT_EQ(musl->provides, (std::vector<Provide>{{"so:libc.musl-x86_64.so.1", "1"}}));

  const PackageRecord* python = find(index, "python3");
  ASSERT_NE(python, nullptr);
  EXPECT_EQ(python->version, "3.10.8-r0");
  EXPECT_EQ(python->depends.size(), 15u);
  EXPECT_EQ(python->depends.front().name, "so:libbz2.so.1");
  EXPECT_TRUE(std::count(python->provides.begin(), python->provides.end(),
                         Provide{"cmd:python3", "3.10.8-r0"}));
  EXPECT_TRUE(std::any_of(index.records.begin(), index.records.end(),
                          [](const PackageRecord& r) { return r.providerPriority == 900; }));
}

TEST(ApkIndex, ReadsASignedApkoIndexIgnoringTheSignature) {
  auto text = readIndexArchive(kData + "/apko-testdata/x86_64/APKINDEX.tar.gz");
  ASSERT_TRUE(text.ok()) << text.error().message;
  auto index = parseApkIndex(*text, "APKINDEX");
  ASSERT_EQ(index.records.size(), 4u);
  const PackageRecord* replayout = find(index, "replayout");
  ASSERT_NE(replayout, nullptr);
  EXPECT_EQ(replayout->depends.front().name, "pretend-baselayout");
  EXPECT_EQ(find(index, "custom-ca-certs-1")->provides,
            (std::vector<Provide>{{"custom-ca-certificates", ""}}));
}

TEST(ApkIndex, SkipsMalformedRecordsWithTheirLineAndKeepsTheRest) {
  const std::string text =
      "P:good-one\nV:1.0-r0\nD:libfoo>=2 !bad-thing so:libc.so.6\n\n"  // lines 1-3
      "P:no-version\nT:missing V\n\n"                                  // 5-6
      "P:bad-version\nV:1.0-rx\n\n"                                    // 8-9
      "P:bad-dep\nV:1\nD:ok this>=notaversion\n\n"                     // 11-13
      "P:bad-line\nV:1\nnonsense\n\n"                                  // 15-17
      "P:bad-size\nV:1\nS:12kb\n\n"                                    // 19-21
      "V:2\nT:no name\n\n"                                             // 23-24
      "P:good-two\nV:2.0\nZ:unknown field\nx:another\nk:10\n";         // 26-, no blank at end
  auto index = parseApkIndex(text, "repo/APKINDEX");
  ASSERT_EQ(index.records.size(), 2u);
  EXPECT_EQ(index.records[0].name, "good-one");
  EXPECT_EQ(index.records[0].depends.size(), 3u);
  EXPECT_TRUE(index.records[0].depends[1].conflict);
  EXPECT_EQ(index.records[1].name, "good-two");
  EXPECT_EQ(index.records[1].providerPriority, 10);
  EXPECT_EQ(index.records[1].line, 26u);

  ASSERT_EQ(index.problems.size(), 6u);
  std::vector<size_t> lines;
  for (const auto& p : index.problems) {
    EXPECT_EQ(p.file, "repo/APKINDEX");
    lines.push_back(p.line);
  }
  EXPECT_EQ(lines, (std::vector<size_t>{5, 9, 13, 17, 21, 23}));
  EXPECT_NE(index.problems[0].message.find("no V:"), std::string::npos);
  EXPECT_NE(index.problems[1].message.find("bad-version"), std::string::npos);
}

TEST(ApkIndex, AcceptsCrLfAndRecordsWithOnlyNameAndVersion) {
  auto index = parseApkIndex("P:a\r\nV:1\r\n\r\nP:b\r\nV:2\r\n", "f");
  ASSERT_EQ(index.records.size(), 2u);
  EXPECT_EQ(index.records[1].version, "2");
  EXPECT_EQ(index.records[1].arch, "");
  EXPECT_TRUE(index.problems.empty());
}

TEST(ApkIndex, RejectsOverlongFieldsAndDuplicateNames) {
  std::string text = "P:a\nV:1\nT:" + std::string(kMaxFieldBytes + 1, 'x') + "\n\nP:b\nP:c\nV:1\n";
  auto index = parseApkIndex(text, "f");
  EXPECT_TRUE(index.records.empty());
  ASSERT_EQ(index.problems.size(), 2u);
  EXPECT_NE(index.problems[0].message.find("64 KiB"), std::string::npos);
  EXPECT_NE(index.problems[1].message.find("second P:"), std::string::npos);
}

TEST(ApkIndex, ArchiveErrorsAreClear) {
  auto missing = readIndexArchive("/nonexistent/APKINDEX.tar.gz");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.error().code, "E_CATALOG_INVALID");

  const std::string garbage = ::testing::TempDir() + "/garbage.tar.gz";
  std::ofstream(garbage) << "this is not a gzip file at all";
  auto bad = readIndexArchive(garbage);
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.error().code, "E_CATALOG_INVALID");

  // A real archive with no APKINDEX in it: an .apk package file.
  auto noIndex = readIndexArchive(kData + "/apko-testdata/x86_64/replayout-1.0.0-r0.apk");
  ASSERT_FALSE(noIndex.ok());
  EXPECT_NE(noIndex.error().message.find("no APKINDEX"), std::string::npos);
}

}  // namespace
}  // namespace imaged::catalog
