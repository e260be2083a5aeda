#include "daemon/catalog/catalog.h"

#include <gtest/gtest.h>

#include <filesystem>

#include "tests/catalog/index_text.h"
#include "tests/common/temp_dir.h"

namespace imaged::catalog {
namespace {

using imaged::testing::TempDir;
using imaged::testing::writeFile;

const std::string kData = IMAGED_SHARED_DATA;

const char* kIndex =
    "P:python-3.12\nV:3.12.8-r0\nL:PSF-2.0\nT:Python 3.12 interpreter\nD:glibc>=2.40\n"
    "p:python3=3.12.8-r0 cmd:python3=3.12.8-r0\n\n"
    "P:python-3.13\nV:3.13.1-r0\nL:PSF-2.0\nT:Python 3.13 interpreter\nD:glibc>=2.40\n"
    "p:python3=3.13.1-r0 cmd:python3=3.13.1-r0\n\n"
    "P:glibc\nV:2.40-r3\nL:LGPL-2.1\nT:GNU C library\n\n"
    "P:glibc\nV:2.40-r2\nL:LGPL-2.1\nT:GNU C library\n\n"
    "P:curl\nV:8.5.0-r0\nT:URL retrieval utility\nD:glibc\n\n"
    "P:curl\nV:8.11.0-r0\nT:URL retrieval utility\nD:glibc\n\n"
    "P:busybox\nV:1.36-r0\nT:Swiss army knife\np:cmd:sh\nk:10\n\n"
    "P:dash\nV:0.5-r0\nT:POSIX shell\np:cmd:sh\nk:100\n";

const char* kPython =
    "name: python\n"
    "description: Minimal Python runtime\n"
    "environment:\n"
    "  PATH: /usr/bin:/bin\n"
    "  LANG: C.UTF-8\n"
    "entrypoint: [/usr/bin/python3]\n"
    "cmd: []\n"
    "user: \"65532\"\n"
    "workdir: /home/nonroot\n"
    "lines:\n"
    "  - line: \"3.12\"\n"
    "    versions:\n"
    "      - version: \"3.12.8\"\n"
    "        published: 2026-11-20T00:00:00Z\n"
    "        packages: [python-3.12=3.12.8-r0, glibc=2.40-r3]\n"
    "  - line: \"3.13\"\n"
    "    environment: {PYTHON_VERSION: \"3.13\"}\n"
    "    versions:\n"
    "      - version: \"3.13.0\"\n"
    "        packages: [python-3.13=3.13.1-r0, glibc=2.40-r2]\n"
    "      - version: \"3.13.1\"\n"
    "        packages: [python-3.13=3.13.1-r0, glibc=2.40-r3]\n";

// The same starter, as JSON, with keys in another order.
const char* kPythonJson = R"({
  "lines": [
    {"versions": [{"packages": ["glibc=2.40-r3", "python-3.12=3.12.8-r0"], "version": "3.12.8",
                   "published": "2026-11-20T00:00:00Z"}], "line": "3.12"},
    {"line": "3.13", "environment": {"PYTHON_VERSION": "3.13"},
     "versions": [{"version": "3.13.1", "packages": ["python-3.13=3.13.1-r0", "glibc=2.40-r3"]},
                  {"version": "3.13.0", "packages": ["python-3.13=3.13.1-r0", "glibc=2.40-r2"]}]}
  ],
  "name": "python", "description": "Minimal Python runtime",
  "environment": {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
  "entrypoint": ["/usr/bin/python3"], "cmd": [], "user": "65532", "workdir": "/home/nonroot"
})";

std::shared_ptr<const Catalog> load(const std::string& dir) {
  auto c = Catalog::load(dir);
  EXPECT_TRUE(c.ok()) << (c.ok() ? "" : c.error().message);
  return c.ok() ? *c : nullptr;
}

class CatalogDir : public ::testing::Test {
 protected:
  void SetUp() override {
    writeFile(dir.sub("repositories/main/x86_64/APKINDEX"), kIndex);
    writeFile(dir.sub("starters/python.yaml"), kPython);
  }
  TempDir dir;
};

TEST_F(CatalogDir, LoadsStartersWithLinesNewestFirstAndTheirProductionVersions) {
  auto c = load(dir.path());
  ASSERT_NE(c, nullptr);
  EXPECT_TRUE(c->problems().empty()) << c->problems().front().message;
  ASSERT_EQ(c->starters().size(), 1u);
  const Starter* py = c->findStarter("python");
  ASSERT_NE(py, nullptr);
  EXPECT_EQ(py->user, "65532");
  EXPECT_EQ(py->entrypoint, (std::vector<std::string>{"/usr/bin/python3"}));
  ASSERT_EQ(py->lines.size(), 2u);
  EXPECT_EQ(py->lines[0].line, "3.13");
  EXPECT_EQ(py->lines[0].production().version, "3.13.1");
  EXPECT_EQ(py->lines[0].production().packages,
            (std::vector<Pin>{{"python-3.13", "3.13.1-r0"}, {"glibc", "2.40-r3"}}));
  EXPECT_TRUE(py->lines[1].maintained);
  EXPECT_EQ(py->lines[1].production().published, "2026-11-20T00:00:00Z");
  auto env = py->environmentFor(py->lines[0]);
  EXPECT_EQ(env, (std::vector<EnvVar>{
                     {"PATH", "/usr/bin:/bin"}, {"LANG", "C.UTF-8"}, {"PYTHON_VERSION", "3.13"}}));
  EXPECT_TRUE(py->setsEnv("PYTHON_VERSION"));
  EXPECT_TRUE(py->setsEnv("PATH"));
  EXPECT_FALSE(py->setsEnv("APP_MODE"));
}

TEST_F(CatalogDir, NumericLineOrderPutsTenAfterNine) {
  writeFile(dir.sub("starters/node.yaml"),
            "name: node\nlines:\n"
            "  - {line: \"3.9\", versions: [{version: \"3.9.1\", packages: [curl=8.5.0-r0]}]}\n"
            "  - {line: \"3.10\", versions: [{version: \"3.10.0\", packages: [curl=8.5.0-r0]}]}\n");
  auto c = load(dir.path());
  const Starter* node = c->findStarter("node");
  ASSERT_NE(node, nullptr);
  EXPECT_EQ(node->lines[0].line, "3.10");
  EXPECT_EQ(node->lines[1].line, "3.9");
}

TEST_F(CatalogDir, StarterPinningAMissingPackageIsReportedAndNotOffered) {
  writeFile(dir.sub("starters/broken.yaml"),
            "name: broken\nlines:\n  - line: \"1\"\n    versions:\n"
            "      - {version: \"1.0\", packages: [glibc=9.99-r0]}\n");
  auto c = load(dir.path());
  EXPECT_EQ(c->findStarter("broken"), nullptr);
  EXPECT_NE(c->findStarter("python"), nullptr);
  ASSERT_EQ(c->problems().size(), 1u);
  EXPECT_NE(c->problems()[0].message.find("glibc=9.99-r0"), std::string::npos);
  EXPECT_NE(c->problems()[0].file.find("broken.yaml"), std::string::npos);
}

TEST_F(CatalogDir, MalformedStarterFilesAreReportedWithTheirLine) {
  writeFile(dir.sub("starters/a-bad-yaml.yaml"), "name: x\nlines: [\n  - oops: {\n");
  writeFile(dir.sub("starters/b-bad-env.yaml"),
            "name: bad-env\nenvironment:\n  OK: 1\n  1BAD: x\nlines:\n"
            "  - {line: \"1\", versions: [{version: \"1\", packages: [curl=8.5.0-r0]}]}\n");
  writeFile(dir.sub("starters/c-bad-line.yaml"),
            "name: bad-line\nlines:\n  - line: three\n    versions: []\n");
  writeFile(dir.sub("starters/d-bad-pin.yaml"),
            "name: bad-pin\nlines:\n  - line: \"1\"\n    versions:\n"
            "      - {version: \"1\", packages: [curl>=8]}\n");
  writeFile(dir.sub("starters/e-bad-name.yaml"),
            "name: Bad_Name\nlines:\n  - {line: \"1\", versions: [{version: \"1\", packages: "
            "[curl=8.5.0-r0]}]}\n");
  writeFile(dir.sub("starters/notes.txt"), "not a starter");
  auto c = load(dir.path());
  EXPECT_EQ(c->starters().size(), 1u);
  ASSERT_EQ(c->problems().size(), 5u);
  EXPECT_NE(c->problems()[0].message.find("YAML"), std::string::npos);
  EXPECT_EQ(c->problems()[1].line, 4u);
  EXPECT_NE(c->problems()[1].message.find("1BAD"), std::string::npos);
  EXPECT_EQ(c->problems()[2].line, 3u);
  EXPECT_EQ(c->problems()[3].line, 5u);
  EXPECT_NE(c->problems()[3].message.find("name=version"), std::string::npos);
  EXPECT_NE(c->problems()[4].message.find("Bad_Name"), std::string::npos);
  for (const auto& p : c->problems()) EXPECT_TRUE(p.error);
}

TEST_F(CatalogDir, OversizedFilesAreReportedOnceWithTheirNameAndTheRestLoads) {
  const std::string big = dir.sub("starters/big.yaml");
  writeFile(big, "name: big\ndescription: \"" + std::string(kMaxStarterFileBytes, 'x') + "\"\n");
  auto c = load(dir.path());
  EXPECT_EQ(c->starters().size(), 1u);
  ASSERT_EQ(c->problems().size(), 1u);
  EXPECT_EQ(c->problems()[0].file, big);
  EXPECT_EQ(c->problems()[0].message, "larger than 4 MiB");  // the file is named once, as `file`
}

TEST_F(CatalogDir, UnknownFieldsAreIgnoredWithAWarning) {
  writeFile(dir.sub("starters/python.yaml"), std::string(kPython) + "maintainer: someone\n");
  auto c = load(dir.path());
  ASSERT_NE(c->findStarter("python"), nullptr);
  ASSERT_EQ(c->problems().size(), 1u);
  EXPECT_FALSE(c->problems()[0].error);
  EXPECT_NE(c->problems()[0].message.find("maintainer"), std::string::npos);
}

TEST_F(CatalogDir, JsonStartersLoadAndGiveTheSameDigestAsYaml) {
  const std::string yamlDigest = load(dir.path())->digest();
  std::filesystem::remove(dir.sub("starters/python.yaml"));
  writeFile(dir.sub("starters/python.json"), kPythonJson);
  auto c = load(dir.path());
  ASSERT_NE(c->findStarter("python"), nullptr);
  EXPECT_EQ(c->digest(), yamlDigest);
  EXPECT_EQ(c->digest().rfind("sha256:", 0), 0u);
}

TEST_F(CatalogDir, DigestIgnoresRecordOrderButSeesEveryChange) {
  const std::string before = load(dir.path())->digest();
  writeFile(dir.sub("repositories/main/x86_64/APKINDEX"), testing::reversedRecords(kIndex));
  EXPECT_EQ(load(dir.path())->digest(), before);

  writeFile(dir.sub("repositories/main/x86_64/APKINDEX"),
            std::string(kIndex) + "\nP:extra\nV:1.0-r0\n");
  EXPECT_NE(load(dir.path())->digest(), before);
}

TEST_F(CatalogDir, ReadsSeveralRepositoriesIncludingTarGzIndexes) {
  std::filesystem::create_directories(dir.sub("repositories/apko/x86_64"));
  std::filesystem::copy_file(kData + "/apko-testdata/x86_64/APKINDEX.tar.gz",
                             dir.sub("repositories/apko/x86_64/APKINDEX.tar.gz"));
  auto c = load(dir.path());
  ASSERT_EQ(c->repositories().size(), 2u);
  EXPECT_EQ(c->repositories()[0].name, "apko");
  EXPECT_EQ(c->packageCount(), 4u + 8u);
  EXPECT_EQ(c->named("replayout").size(), 1u);
  EXPECT_EQ(c->repositoryOf(c->named("replayout")[0]), 0u);
}

TEST_F(CatalogDir, RecordsOfOtherArchitecturesAreLeftOut) {
  writeFile(dir.sub("repositories/main/x86_64/APKINDEX"),
            std::string(kIndex) + "\nP:arm-only\nV:1\nA:aarch64\n\nP:any-arch\nV:1\nA:noarch\n");
  auto c = load(dir.path());
  EXPECT_TRUE(c->named("arm-only").empty());
  EXPECT_EQ(c->named("any-arch").size(), 1u);
}

TEST(Catalog, AnUnusableDirectoryIsAnError) {
  TempDir dir;
  EXPECT_EQ(Catalog::load(dir.sub("absent")).error().code, "E_CATALOG_INVALID");
  writeFile(dir.sub("starters/x.yaml"), "");
  auto noRepos = Catalog::load(dir.path());
  ASSERT_FALSE(noRepos.ok());
  EXPECT_NE(noRepos.error().message.find("repositories"), std::string::npos);
}

TEST_F(CatalogDir, CandidatesPreferTheRealNameThenHigherVersions) {
  auto c = load(dir.path());
  auto curl = c->candidates(*parseAtom("curl"));
  ASSERT_EQ(curl.size(), 2u);
  EXPECT_EQ(c->package(curl[0]).version, "8.11.0-r0");  // 8.11 > 8.5, numerically
  EXPECT_EQ(c->candidates(*parseAtom("curl<8.6")).size(), 1u);
  EXPECT_TRUE(c->candidates(*parseAtom("curl>=9")).empty());

  auto python3 = c->candidates(*parseAtom("python3"));
  ASSERT_EQ(python3.size(), 2u);
  EXPECT_EQ(c->package(python3[0]).name, "python-3.13");
  auto py312 = c->candidates(*parseAtom("python3~3.12"));
  ASSERT_EQ(py312.size(), 1u);
  EXPECT_EQ(c->package(py312[0]).name, "python-3.12");
}

TEST_F(CatalogDir, UnversionedProvidesSatisfyOnlyUnversionedAtomsAndPriorityDecides) {
  auto c = load(dir.path());
  auto sh = c->candidates(*parseAtom("cmd:sh"));
  ASSERT_EQ(sh.size(), 2u);
  EXPECT_EQ(c->package(sh[0]).name, "dash");  // k:100 over k:10
  EXPECT_TRUE(c->candidates(*parseAtom("cmd:sh>=1")).empty());
  EXPECT_TRUE(c->knows("cmd:sh"));
  EXPECT_FALSE(c->knows("cmd:zsh"));
}

TEST_F(CatalogDir, SlotsAreTheNameAndVersionedProvides) {
  auto c = load(dir.path());
  auto slots = c->slots(c->named("python-3.12")[0]);
  EXPECT_EQ(slots, (std::vector<std::string_view>{"python-3.12", "python3", "cmd:python3"}));
  EXPECT_EQ(c->slots(c->named("busybox")[0]), (std::vector<std::string_view>{"busybox"}));
}

TEST_F(CatalogDir, SearchRanksExactThenPrefixThenSubstringThenDescription) {
  writeFile(dir.sub("repositories/main/x86_64/APKINDEX"),
            std::string(kIndex) +
                "\nP:curl-dev\nV:8.11.0-r0\nT:headers\n\nP:libcurl\nV:8.11.0-r0\nT:library\n\n"
                "P:wget\nV:1.24-r0\nT:Retrieve files like curl does\n");
  auto c = load(dir.path());
  auto hits = c->search("curl", 10);
  std::vector<std::string> names;
  for (const auto& h : hits) names.push_back(h.name);
  EXPECT_EQ(names, (std::vector<std::string>{"curl", "curl-dev", "libcurl", "wget"}));
  EXPECT_EQ(hits[0].version, "8.11.0-r0");
  EXPECT_EQ(hits[0].versions, (std::vector<std::string>{"8.11.0-r0", "8.5.0-r0"}));
  EXPECT_EQ(c->search("curl", 2).size(), 2u);
  EXPECT_EQ(c->search("CURL", 1)[0].name, "curl");
  EXPECT_EQ(c->search("python interpreter", 5).size(), 2u);
  EXPECT_TRUE(c->search("", 5).empty());
  auto byVersion = c->search("3.12", 5);
  ASSERT_EQ(byVersion.size(), 1u);
  EXPECT_EQ(byVersion[0].name, "python-3.12");
}

TEST(Catalog, SearchOnTheAlpineIndexPutsTheExactNameFirst) {
  TempDir dir;
  std::filesystem::create_directories(dir.sub("repositories/main/x86_64"));
  std::filesystem::create_directories(dir.sub("starters"));
  std::filesystem::copy_file(kData + "/alpine-3.16-main/x86_64/APKINDEX.tar.gz",
                             dir.sub("repositories/main/x86_64/APKINDEX.tar.gz"));
  auto c = load(dir.path());
  EXPECT_EQ(c->packageCount(), 4929u);
  auto hits = c->search("python3", 20);
  ASSERT_FALSE(hits.empty());
  EXPECT_EQ(hits[0].name, "python3");
  EXPECT_EQ(hits[1].name.rfind("python3", 0), 0u);
}

}  // namespace
}  // namespace imaged::catalog
