// The real imaged, started as a process on a temporary socket and data directory, driven
// through imagectl and the client library.
#include <capnp/serialize.h>
#include <gtest/gtest.h>
#include <pwd.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <regex>
#include <set>
#include <sstream>
#include <thread>

#include "client/client.h"
#include "schema/events.capnp.h"
#include "tests/common/temp_dir.h"
#include "tests/integration/harness.h"

namespace imaged::testing {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

const std::string kSample = std::string(IMAGED_SOURCE_DIR) + "/catalog/sample";

// A catalog for the seed's example: php lines 8.4, 8.3 and 8.2; php-redis exists for 8.2 and
// 8.3 only, so adding it skips 8.4.
void writePhpCatalog(const std::string& dir, const std::string& newest84 = "8.4.1",
                     bool packageFiles = true) {
  writeFile(dir + "/repositories/main/x86_64/APKINDEX",
            "P:glibc\nV:2.40-r3\nL:LGPL-2.1\n\n"
            "P:php-8.2\nV:8.2.26-r0\nD:glibc\np:php=8.2.26\n\n"
            "P:php-8.3\nV:8.3.14-r0\nD:glibc\np:php=8.3.14\n\n"
            "P:php-8.4\nV:8.4.1-r0\nD:glibc\np:php=8.4.1\n\n"
            "P:php-8.4\nV:8.4.2-r0\nD:glibc\np:php=8.4.2\n\n"
            "P:php-8.2-redis\nV:6.1.0-r0\nD:php-8.2\np:php-redis=6.1.0-r0\n\n"
            "P:php-8.3-redis\nV:6.1.0-r0\nD:php-8.3\np:php-redis=6.1.0-r0\n\n"
            "P:php-8.4-intl\nV:8.4.1-r0\nD:php-8.4\np:php-intl=8.4.1\n");
  writeFile(dir + "/starters/php.yaml",
            "name: php\ndescription: PHP runtime\nenvironment: {PATH: /usr/bin}\nlines:\n"
            "  - line: \"8.4\"\n    versions:\n      - {version: \"" +
                newest84 +
                "\", packages: [php-8.4=" + (newest84 == "8.4.1" ? "8.4.1-r0" : "8.4.2-r0") +
                ", glibc=2.40-r3]}\n"
                "  - line: \"8.3\"\n    versions:\n      - {version: \"8.3.14\", packages: "
                "[php-8.3=8.3.14-r0, glibc=2.40-r3]}\n"
                "  - line: \"8.2\"\n    versions:\n      - {version: \"8.2.26\", packages: "
                "[php-8.2=8.2.26-r0, glibc=2.40-r3]}\n");
  if (!packageFiles) return;  // an index-only catalog: lines resolve, no images
  // Real package files, so that the lines' images can be written.
  ProcessResult made =
      runProcess({"python3", std::string(IMAGED_SOURCE_DIR) + "/tests/integration/make_apks.py",
                  dir + "/repositories/main/x86_64"});
  ASSERT_EQ(made.code, 0) << made.err;
}

class DaemonTest : public ::testing::Test {
 protected:
  void SetUp() override { ::chmod(dir.path().c_str(), 0755); }

  void start(const std::string& catalog = kSample, std::vector<std::string> extra = {},
             std::map<std::string, std::string> env = {}) {
    daemon =
        std::make_unique<Daemon>(Daemon::Options{catalog, dir.sub("data"), socket(), extra, env});
    ASSERT_TRUE(daemon->start()) << daemon->log();
  }
  void restart(const std::string& catalog = kSample, std::map<std::string, std::string> env = {}) {
    const auto extra = daemon->options().extraArgs;
    daemon.reset();
    start(catalog, extra, env);
  }
  std::string socket() const { return dir.sub("imaged.sock"); }

  ProcessResult ctl(std::vector<std::string> args, std::vector<std::string> prefix = {}) {
    std::vector<std::string> argv = prefix;
    argv.push_back(IMAGECTL_BIN);
    argv.push_back("--socket");
    argv.push_back(socket());
    argv.insert(argv.end(), args.begin(), args.end());
    return runProcess(argv);
  }
  json ctlJson(std::vector<std::string> args, int expectCode = 0) {
    args.insert(args.begin(), "--json");
    ProcessResult r = ctl(args);
    EXPECT_EQ(r.code, expectCode) << r.err << r.out;
    try {
      return json::parse(r.out);
    } catch (const std::exception& e) {
      ADD_FAILURE() << "not JSON: " << r.out << r.err;
      return json();
    }
  }
  std::unique_ptr<client::Client> connect() {
    auto c = client::Client::connect(socket());
    EXPECT_TRUE(c.ok()) << (c.ok() ? "" : c.error().message);
    return c.ok() ? std::move(c).value() : nullptr;
  }
  size_t eventCount() {
    auto events = connect()->readEvents(1, 10000);
    EXPECT_TRUE(events.ok());
    return events.ok() ? events->size() : 0;
  }
  bool buildEnded(const std::string& name) {
    json j = ctlJson({"show", name});
    return j.value("status", "") != "in-progress";
  }

  TempDir dir;
  std::unique_ptr<Daemon> daemon;
};

TEST_F(DaemonTest, CreateWaitShowListAndTagsFollowTheJsonContract) {
  start();
  ProcessResult created = ctl({"create", "web", "--starter", "python", "--add", "py3-flask",
                               "--env", "APP_MODE=prod", "--description", "the web app", "--wait"});
  ASSERT_EQ(created.code, 0) << created.err;
  // --wait shows each line as it is recorded, then the summary.
  for (const char* line : {"line 3.13: built", "line 3.12: built", "line 3.11: skipped"}) {
    EXPECT_NE(created.out.find(line), std::string::npos) << created.out;
  }
  json show = ctlJson({"show", "web"});
  for (const char* key : {"name", "fullName", "description", "starter", "status", "createdAt",
                          "packages", "env", "version", "lines", "tags", "error"}) {
    EXPECT_TRUE(show.contains(key)) << key;
  }
  EXPECT_EQ(show["name"], "web");
  EXPECT_EQ(show["fullName"], "local/web");
  EXPECT_EQ(show["description"], "the web app");
  EXPECT_EQ(show["status"], "created");
  EXPECT_TRUE(std::regex_match(show["createdAt"].get<std::string>(),
                               std::regex(R"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ)")));
  EXPECT_EQ(show["packages"], json::array({"py3-flask"}));
  EXPECT_EQ(show["env"], json({{"APP_MODE", "prod"}}));
  EXPECT_TRUE(show["error"].is_null());
  ASSERT_EQ(show["lines"].size(), 3u);
  EXPECT_EQ(show["lines"][0]["line"], "3.13");
  EXPECT_EQ(show["lines"][0]["status"], "built");
  EXPECT_NE(std::find(show["lines"][0]["packages"].begin(), show["lines"][0]["packages"].end(),
                      "py3.13-flask=3.1.0-r0"),
            show["lines"][0]["packages"].end());
  EXPECT_EQ(show["lines"][2]["status"], "skipped");
  EXPECT_EQ(show["lines"][2]["code"], "E_PACKAGE_CONFLICT");
  EXPECT_NE(show["lines"][2]["reason"].get<std::string>().find("python-3.11"), std::string::npos);
  EXPECT_EQ(show["tags"], json({{"3", "3.13.1"},
                                {"3.12", "3.12.8"},
                                {"3.12.8", "3.12.8"},
                                {"3.13", "3.13.1"},
                                {"3.13.1", "3.13.1"},
                                {"latest", "3.13.1"}}));
  EXPECT_EQ(ctlJson({"tags", "web"}), show["tags"]);
  // Built lines are real images: a manifest digest each, the same on a rebuild.
  const std::string digest = show["lines"][0]["digest"];
  EXPECT_TRUE(std::regex_match(digest, std::regex("sha256:[0-9a-f]{64}"))) << digest;
  EXPECT_FALSE(show["lines"][2].contains("digest"));
  ASSERT_EQ(ctl({"rebuild", "web", "--wait"}).code, 0);
  EXPECT_EQ(ctlJson({"show", "web"})["lines"][0]["digest"], digest);
  json list = ctlJson({"list"});
  ASSERT_TRUE(list.is_array());
  ASSERT_EQ(list.size(), 1u);
  EXPECT_EQ(list[0]["fullName"], "local/web");
  EXPECT_EQ(list[0]["tags"], show["tags"]);
}

TEST_F(DaemonTest, StartersStarterAndSearchShowTheCatalog) {
  start();
  ProcessResult starters = ctl({"starters"});
  ASSERT_EQ(starters.code, 0) << starters.err;
  for (const char* row : {"nginx", "node", "python   3.13, 3.12, 3.11"}) {
    EXPECT_NE(starters.out.find(row), std::string::npos) << starters.out;
  }
  json list = ctlJson({"starters"});
  ASSERT_TRUE(list.is_array());
  ASSERT_EQ(list.size(), 3u);
  EXPECT_EQ(list[2]["name"], "python");
  EXPECT_EQ(list[2]["lines"], json::array({"3.13", "3.12", "3.11"}));

  // One starter: its env, each line with what its env adds, its versions, and the SBOM (with
  // licenses) of its production version.
  ProcessResult python = ctl({"starter", "python"});
  ASSERT_EQ(python.code, 0) << python.err;
  for (const char* text :
       {"env LANG=C.UTF-8", "line 3.13: production 3.13.1\n  env PYTHON_VERSION=3.13\n",
        "  version 3.13.0  2026-10-08T00:00:00Z", "SBOM of 3.13.1:\n    python-3.13=3.13.1-r0  (",
        "line 3.12: production 3.12.8\n  env PYTHON_VERSION=3.12\n"}) {
    EXPECT_NE(python.out.find(text), std::string::npos) << text << "\n" << python.out;
  }
  EXPECT_EQ(python.out.find("SBOM of 3.13.0"), std::string::npos) << python.out;
  json starter = ctlJson({"starter", "python"});
  EXPECT_EQ(starter["entrypoint"], json::array({"/usr/bin/python3"}));
  EXPECT_EQ(starter["user"], "65532");
  ASSERT_EQ(starter["lines"].size(), 3u);
  const json& line = starter["lines"][0];
  EXPECT_EQ(line["line"], "3.13");
  EXPECT_EQ(line["production"], "3.13.1");
  EXPECT_EQ(line["env"]["PYTHON_VERSION"], "3.13");
  EXPECT_EQ(line["env"]["LANG"], "C.UTF-8");
  EXPECT_EQ(line["sbom"][0], "python-3.13=3.13.1-r0");
  EXPECT_EQ(line["licenses"].size(), line["sbom"].size());
  EXPECT_EQ(line["versions"].size(), 2u);
  ProcessResult missing = ctl({"starter", "ruby"});
  EXPECT_EQ(missing.code, 1);
  EXPECT_NE(missing.err.find("error[E_STARTER_NOT_FOUND]"), std::string::npos) << missing.err;

  // Search: by name (the exact name first), description and version; --limit.
  json hits = ctlJson({"search", "zlib"});
  ASSERT_FALSE(hits.empty());
  EXPECT_EQ(hits[0]["name"], "zlib");
  EXPECT_EQ(hits[0]["version"], "1.3.1-r0");
  json described = ctlJson({"search", "Python 3.13", "--limit", "2"});
  ASSERT_EQ(described.size(), 2u);
  for (const auto& h : described) {
    EXPECT_NE(h["description"].get<std::string>().find("Python 3.13"), std::string::npos) << h;
  }
  json byVersion = ctlJson({"search", "3.47.1"});
  ASSERT_EQ(byVersion.size(), 1u);
  EXPECT_EQ(byVersion[0]["name"], "sqlite-libs");
  ProcessResult table = ctl({"search", "flask"});
  EXPECT_NE(table.out.find("py3.13-flask  3.1.0-r0  Web micro-framework for Python 3.13"),
            std::string::npos)
      << table.out;
}

TEST_F(DaemonTest, TheSeedsExampleLatestAndMajorPointAt83When84IsSkipped) {
  writePhpCatalog(dir.sub("php-catalog"));
  start(dir.sub("php-catalog"));
  ASSERT_EQ(ctl({"create", "api", "--starter", "php", "--add", "php-redis", "--wait"}).code, 0);
  json show = ctlJson({"show", "api"});
  EXPECT_EQ(show["lines"][0]["line"], "8.4");
  EXPECT_EQ(show["lines"][0]["status"], "skipped");
  EXPECT_EQ(show["tags"]["latest"], "8.3.14");
  EXPECT_EQ(show["tags"]["8"], "8.3.14");
  EXPECT_EQ(show["tags"]["8.2"], "8.2.26");
  EXPECT_FALSE(show["tags"].contains("8.4"));
  const std::string why = show["lines"][0]["reason"];
  for (const char* part :
       {"php-redis", "php-8.3-redis", "php-8.2-redis", "php-8.4-8.4.1-r0 is pinned"}) {
    EXPECT_NE(why.find(part), std::string::npos) << part << " in " << why;
  }
}

TEST_F(DaemonTest, TagHistoryShowsEveryMoveOfATagAndWhatMovedIt) {
  writePhpCatalog(dir.sub("php"));
  start(dir.sub("php"));
  ASSERT_EQ(ctl({"create", "api", "--starter", "php", "--add", "php-redis", "--wait"}).code, 0);
  // Times are shown to the second: let the edit happen in a later one.
  std::this_thread::sleep_for(std::chrono::milliseconds(1100));
  ASSERT_EQ(ctl({"edit", "api", "--remove", "php-redis", "--wait"}).code, 0);
  json moves = ctlJson({"tag-history", "api", "latest"});
  ASSERT_EQ(moves.size(), 2u) << moves.dump();
  EXPECT_TRUE(moves[0]["from"].is_null());
  EXPECT_EQ(moves[0]["to"], "8.3.14");
  EXPECT_EQ(moves[0]["reason"], "created");
  EXPECT_EQ(moves[1]["from"], "8.3.14");
  EXPECT_EQ(moves[1]["to"], "8.4.1");
  EXPECT_EQ(moves[1]["reason"], "edited");
  EXPECT_TRUE(
      std::regex_match(moves[1]["toDigest"].get<std::string>(), std::regex("sha256:[0-9a-f]{64}")));
  // 8.2 kept its version but the edit changed its content: it moved to a new digest.
  json moves82 = ctlJson({"tag-history", "api", "8.2"});
  ASSERT_EQ(moves82.size(), 2u);
  EXPECT_EQ(moves82[1]["from"], moves82[1]["to"]);
  EXPECT_NE(moves82[1]["fromDigest"], moves82[1]["toDigest"]);
  // The tags as they were, answered from the log.
  const std::string firstMove = moves[0]["time"];
  EXPECT_EQ(ctlJson({"tags", "api", "--at", firstMove})["latest"], "8.3.14");
}

TEST_F(DaemonTest, AnIndexOnlyCatalogResolvesAndTagsLinesWithoutWritingImages) {
  writePhpCatalog(dir.sub("php"), "8.4.1", /*packageFiles=*/false);
  start(dir.sub("php"));
  ASSERT_EQ(ctl({"create", "api", "--starter", "php", "--add", "php-redis", "--wait"}).code, 0);
  json show = ctlJson({"show", "api"});
  EXPECT_EQ(show["status"], "created");
  EXPECT_EQ(show["lines"][1]["status"], "built");
  EXPECT_FALSE(show["lines"][1].contains("digest"));
  EXPECT_EQ(show["tags"]["latest"], "8.3.14");
  EXPECT_EQ(ctl({"export", "api", dir.sub("out")}).code, 1);  // nothing was written to export
}

TEST_F(DaemonTest, EveryRefusedRequestHasItsCodeAndRecordsNothing) {
  start();
  ASSERT_EQ(ctl({"create", "web", "--starter", "python", "--wait"}).code, 0);
  const size_t before = eventCount();
  struct Case {
    std::vector<std::string> args;
    const char* code;
  };
  const std::vector<Case> cases = {
      {{"create", "web", "--starter", "python"}, "E_NAME_TAKEN"},
      {{"create", "Web!", "--starter", "python"}, "E_INVALID_NAME"},
      {{"create", "x.", "--starter", "python"}, "E_INVALID_NAME"},
      {{"create", std::string(129, 'a'), "--starter", "python"}, "E_INVALID_NAME"},
      {{"create", "x", "--starter", "cobol"}, "E_STARTER_NOT_FOUND"},
      {{"create", "x", "--starter", "python", "--env", "A=1", "--env", "A=2"},
       "E_ENV_DUPLICATE_KEY"},
      {{"create", "x", "--starter", "python", "--env", "A"}, "E_ENV_EMPTY_VALUE"},
      {{"create", "x", "--starter", "python", "--env", "A="}, "E_ENV_EMPTY_VALUE"},
      {{"create", "x", "--starter", "python", "--env", "2A=x"}, "E_ENV_INVALID_KEY"},
      {{"create", "x", "--starter", "python", "--env", "LANG=fr"}, "E_ENV_RESERVED_KEY"},
      {{"create", "x", "--starter", "python", "--env", "PYTHON_VERSION=2"}, "E_ENV_RESERVED_KEY"},
      {{"create", "x", "--starter", "python", "--add", "left-pad"}, "E_PACKAGE_NOT_FOUND"},
      {{"create", "x", "--starter", "python", "--add", "curl>="}, "E_INVALID_ARGUMENT"},
      {{"show", "nothing"}, "E_NOT_FOUND"},
      {{"delete", "nothing"}, "E_NOT_FOUND"},
      {{"edit", "web", "--expect-version", "1", "--add", "jq"}, "E_VERSION_CONFLICT"},
      {{"edit", "web", "--remove", "jq"}, "E_INVALID_ARGUMENT"},
      {{"edit", "web", "--starter", "node"}, "E_IMMUTABLE_FIELD"},
      {{"edit", "web", "--name", "other", "--add", "jq"}, "E_IMMUTABLE_FIELD"},
      {{"show", "web", "--at", "yesterday"}, "E_INVALID_ARGUMENT"},
  };
  for (const Case& c : cases) {
    std::vector<std::string> args = c.args;
    args.insert(args.begin(), "--json");
    ProcessResult r = ctl(args);
    EXPECT_EQ(r.code, 1) << c.code << ": " << r.err;
    EXPECT_EQ(r.err.rfind(std::string("error[") + c.code + "]: ", 0), 0u) << r.err;
    json j = json::parse(r.out, nullptr, false);
    EXPECT_EQ(j["error"]["code"], c.code) << r.out;
    EXPECT_FALSE(j["error"]["message"].get<std::string>().empty());
  }
  auto c = connect();
  client::ImageEdit starterChange;
  starterChange.starter = "node";
  auto immutable = c->edit("web", starterChange);
  ASSERT_FALSE(immutable.ok());
  EXPECT_EQ(immutable.error().code, "E_IMMUTABLE_FIELD");
  client::ImageEdit rename;
  rename.name = "other";
  EXPECT_EQ(c->edit("web", rename).error().code, "E_IMMUTABLE_FIELD");
  EXPECT_EQ(eventCount(), before);
}

TEST_F(DaemonTest, PreviewPlansEveryLineAndRecordsNothing) {
  start();
  const size_t before = eventCount();
  json preview = ctlJson({"preview", "--starter", "python", "--add", "curl"});
  ASSERT_EQ(preview["lines"].size(), 3u);
  EXPECT_EQ(preview["lines"][0]["status"], "built");
  EXPECT_EQ(preview["lines"][2]["status"], "skipped");  // curl needs glibc 2.40; 3.11 pins 2.39
  EXPECT_NE(preview["lines"][2]["reason"].get<std::string>().find("glibc-2.39-r0 is pinned"),
            std::string::npos);
  EXPECT_EQ(eventCount(), before);
  EXPECT_EQ(ctlJson({"list"}).size(), 0u);
}

TEST_F(DaemonTest, ARetriedCreateWithTheSameKeyReturnsTheFirstImage) {
  start();
  auto c = connect();
  client::ImageSpec spec{"api", "", "node", {"yarn"}, {}};
  auto first = c->create(spec, "key-42");
  ASSERT_TRUE(first.ok()) << first.error().message;
  ASSERT_TRUE(c->watch("api", nullptr, std::chrono::seconds(20)).ok());  // the build has ended
  const size_t after = eventCount();
  auto again = c->create(spec, "key-42");
  ASSERT_TRUE(again.ok()) << again.error().message;
  EXPECT_EQ(again->fullName, "local/api");
  EXPECT_EQ(eventCount(), after) << "a retry must record nothing";
  // A different key is a different request: the name is taken now.
  EXPECT_EQ(c->create(spec, "key-43").error().code, "E_NAME_TAKEN");
}

TEST_F(DaemonTest, EditRebuildsWithTheNewPackagesAndExpectedVersionsAreHonoured) {
  start();
  ASSERT_EQ(ctl({"create", "web", "--starter", "python", "--wait"}).code, 0);
  json before = ctlJson({"show", "web"});
  const auto version = before["version"].get<uint64_t>();
  ProcessResult edited = ctl({"edit", "web", "--expect-version", std::to_string(version), "--add",
                              "py3-requests", "--env", "MODE=x", "--wait"});
  ASSERT_EQ(edited.code, 0) << edited.err;
  json after = ctlJson({"show", "web"});
  EXPECT_GT(after["version"].get<uint64_t>(), version);
  EXPECT_EQ(after["packages"], json::array({"py3-requests"}));
  EXPECT_EQ(after["env"], json({{"MODE", "x"}}));
  const auto& pkgs = after["lines"][0]["packages"];
  EXPECT_NE(std::find(pkgs.begin(), pkgs.end(), "py3.13-requests=2.32.3-r0"), pkgs.end());
  EXPECT_EQ(after["createdAt"], before["createdAt"]);  // the first successful build's time stays
  json builds = ctlJson({"builds", "web"});
  ASSERT_EQ(builds.size(), 2u);
  EXPECT_EQ(builds[1]["reason"], "edited");
  ASSERT_EQ(ctl({"rebuild", "web", "--wait"}).code, 0);
  EXPECT_EQ(ctlJson({"builds", "web"}).size(), 3u);
}

TEST_F(DaemonTest, AFailedRebuildKeepsThePreviousTagsAndReportsItsCode) {
  start();
  ASSERT_EQ(ctl({"create", "web", "--starter", "python", "--wait"}).code, 0);
  const json tags = ctlJson({"tags", "web"});
  ProcessResult failed = ctl({"edit", "web", "--add", "fasttool", "--wait"});
  EXPECT_EQ(failed.code, 4) << failed.out << failed.err;
  json show = ctlJson({"show", "web"});
  EXPECT_EQ(show["status"], "failed");
  EXPECT_EQ(show["error"]["code"], "E_NO_BUILDABLE_LINE");
  EXPECT_EQ(show["tags"], tags);
  EXPECT_EQ(ctl({"wait", "web"}).code, 4);
}

TEST_F(DaemonTest, DeleteRemovesTheImageAndItsNameCanBeUsedAgain) {
  start();
  ASSERT_EQ(ctl({"create", "web", "--starter", "python", "--wait"}).code, 0);
  ASSERT_EQ(ctl({"delete", "web"}).code, 0);
  EXPECT_EQ(ctl({"show", "web"}).code, 1);
  EXPECT_EQ(ctlJson({"list"}).size(), 0u);
  // Its history stays: the deleted image's events, the deletion last.
  json gone = ctlJson({"history", "web"});
  ASSERT_GE(gone.size(), 3u);
  EXPECT_EQ(gone[0]["kind"], "imageCreated");
  EXPECT_EQ(gone.back()["kind"], "imageDeleted");
  EXPECT_EQ(ctlJson({"history", "never"}, 1)["error"]["code"], "E_NOT_FOUND");
  ASSERT_EQ(ctl({"create", "web", "--starter", "nginx", "--wait"}).code, 0);
  json show = ctlJson({"show", "web"});
  EXPECT_EQ(show["starter"], "nginx");
  json history = ctlJson({"history", "web"});  // the live image's, not the deleted one's
  EXPECT_EQ(history[0]["kind"], "imageCreated");
  EXPECT_EQ(history[0]["version"], 1);
  EXPECT_GT(history[0]["sequence"].get<uint64_t>(), gone.back()["sequence"].get<uint64_t>());
  EXPECT_NE(history.back()["kind"], "imageDeleted");
}

TEST_F(DaemonTest, RestartGivesTheSameState) {
  start();
  ASSERT_EQ(ctl({"create", "a", "--starter", "python", "--add", "py3-flask", "--wait"}).code, 0);
  ASSERT_EQ(ctl({"create", "b", "--starter", "node", "--add", "node-sqlite", "--wait"}).code, 0);
  ASSERT_EQ(ctl({"edit", "b", "--add", "yarn", "--wait"}).code, 0);
  ASSERT_EQ(ctl({"create", "c", "--starter", "nginx", "--wait"}).code, 0);
  ASSERT_EQ(ctl({"delete", "c"}).code, 0);
  const json before = ctlJson({"list"});
  const json showBefore = ctlJson({"show", "b"});
  daemon->signal(SIGTERM);
  EXPECT_EQ(daemon->wait(), 0);
  restart();
  EXPECT_EQ(ctlJson({"list"}), before);
  EXPECT_EQ(ctlJson({"show", "b"}), showBefore);
}

TEST_F(DaemonTest, ABuildKilledMidwayIsResumedAfterTheRestart) {
  start(kSample, {}, {{"IMAGED_TEST_LINE_DELAY_MS", "2000"}});
  ASSERT_EQ(ctl({"create", "web", "--starter", "python"}).code, 0);
  ASSERT_TRUE(eventually([&] {
    json s = ctlJson({"show", "web"});
    return s["lines"].size() == 3;  // BuildStarted is recorded; no line has finished
  }));
  daemon->signal(SIGKILL);
  daemon->wait();
  restart(kSample, {});
  ASSERT_TRUE(eventually([&] { return buildEnded("web"); }));
  json show = ctlJson({"show", "web"});
  EXPECT_EQ(show["status"], "created");
  json builds = ctlJson({"builds", "web"});
  ASSERT_EQ(builds.size(), 1u) << builds.dump();
  EXPECT_EQ(builds[0]["status"], "succeeded");
  EXPECT_NE(daemon->log().find("resuming build"), std::string::npos);
}

TEST_F(DaemonTest, ABuildKilledMidwayEndsInterruptedWhenTheCatalogChangedAndRunsAgain) {
  writePhpCatalog(dir.sub("php"));
  start(dir.sub("php"), {}, {{"IMAGED_TEST_LINE_DELAY_MS", "2000"}});
  ASSERT_EQ(ctl({"create", "api", "--starter", "php"}).code, 0);
  ASSERT_TRUE(eventually([&] { return ctlJson({"show", "api"})["lines"].size() == 3; }));
  daemon->signal(SIGKILL);
  daemon->wait();
  writePhpCatalog(dir.sub("php"), "8.4.2");  // a new production version of line 8.4
  restart(dir.sub("php"), {});
  ASSERT_TRUE(eventually([&] {
    json b = ctlJson({"builds", "api"});
    return b.size() == 2 && b[1]["status"] == "succeeded";
  }));
  json builds = ctlJson({"builds", "api"});
  EXPECT_EQ(builds[0]["status"], "failed");
  EXPECT_EQ(builds[0]["error"]["code"], "E_BUILD_INTERRUPTED");
  EXPECT_EQ(builds[1]["reason"], "resumed");
  EXPECT_EQ(ctlJson({"tags", "api"})["latest"], "8.4.2");
}

TEST_F(DaemonTest, SighupWithANewStarterVersionRebuildsAndMovesTheTags) {
  writePhpCatalog(dir.sub("php"));
  start(dir.sub("php"));
  ASSERT_EQ(ctl({"create", "api", "--starter", "php", "--wait"}).code, 0);
  EXPECT_EQ(ctlJson({"tags", "api"})["latest"], "8.4.1");
  const std::string digest = ctlJson({"catalog"})["digest"];
  writePhpCatalog(dir.sub("php"), "8.4.2");
  daemon->signal(SIGHUP);
  ASSERT_TRUE(eventually([&] { return ctlJson({"tags", "api"}).value("latest", "") == "8.4.2"; }));
  json builds = ctlJson({"builds", "api"});
  ASSERT_EQ(builds.size(), 2u);
  EXPECT_EQ(builds[1]["reason"], "catalog-changed");
  EXPECT_NE(ctlJson({"catalog"})["digest"], digest);
}

TEST_F(DaemonTest, ACatalogThatFailsToLoadLeavesTheOldOneInForce) {
  writePhpCatalog(dir.sub("php"));
  start(dir.sub("php"));
  const std::string digest = ctlJson({"catalog"})["digest"];
  fs::remove_all(dir.sub("php/starters"));
  ProcessResult reload = ctl({"catalog", "--reload"});
  EXPECT_EQ(reload.code, 1);
  EXPECT_NE(reload.err.find("starters"), std::string::npos) << reload.err;
  EXPECT_EQ(ctlJson({"catalog"})["digest"], digest);
  EXPECT_EQ(ctl({"create", "api", "--starter", "php", "--wait"}).code, 0);
}

TEST_F(DaemonTest, TenantsSeeOnlyTheirOwnImagesAndUnmappedUidsAreRefused) {
  if (::geteuid() != 0 || ::system("command -v setpriv >/dev/null") != 0) {
    GTEST_SKIP() << "needs root and setpriv to act as another uid";
  }
  const passwd* nobody = ::getpwnam("nobody");
  ASSERT_NE(nobody, nullptr);
  writeFile(dir.sub("config.yaml"),
            "tenants:\n  \"" + std::to_string(nobody->pw_uid) + "\": globex\n");
  start(kSample,
        {"--config", dir.sub("config.yaml"), "--socket-group", "nogroup", "--tenant", "acme"});
  auto as = [&](uid_t uid) {
    return std::vector<std::string>{"setpriv", "--reuid=" + std::to_string(uid), "--regid=nogroup",
                                    "--clear-groups"};
  };
  ASSERT_EQ(ctl({"create", "web", "--starter", "python", "--wait"}).code, 0);
  EXPECT_EQ(ctlJson({"show", "web"})["fullName"], "acme/web");

  ProcessResult list = ctl({"--json", "list"}, as(nobody->pw_uid));
  ASSERT_EQ(list.code, 0) << list.err;
  EXPECT_EQ(json::parse(list.out).size(), 0u);
  ProcessResult show = ctl({"show", "web"}, as(nobody->pw_uid));
  EXPECT_EQ(show.code, 1);
  EXPECT_NE(show.err.find("E_NOT_FOUND"), std::string::npos);
  ProcessResult create =
      ctl({"--json", "create", "web", "--starter", "node", "--wait"}, as(nobody->pw_uid));
  ASSERT_EQ(create.code, 0) << create.err;
  EXPECT_EQ(json::parse(create.out)["fullName"], "globex/web");
  EXPECT_EQ(ctlJson({"show", "web"})["starter"], "python");  // acme's is untouched
  ProcessResult events = ctl({"catalog", "--reload"}, as(nobody->pw_uid));
  EXPECT_NE(events.err.find("E_PERMISSION_DENIED"), std::string::npos);

  ProcessResult stranger = ctl({"list"}, as(4242));
  EXPECT_EQ(stranger.code, 1);
  EXPECT_NE(stranger.err.find("E_PERMISSION_DENIED"), std::string::npos) << stranger.err;
}

TEST_F(DaemonTest, TheSocketIsPrivateByDefault) {
  start();
  struct stat st {};
  ASSERT_EQ(::stat(socket().c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
}

TEST_F(DaemonTest, AMalformedMessageDropsThatConnectionOnly) {
  start();
  auto c = connect();
  ASSERT_TRUE(c->starters().ok());
  const int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, socket().c_str(), sizeof addr.sun_path - 1);
  ASSERT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  // A segment table claiming a huge message, then garbage.
  const unsigned char junk[] = {0, 0, 0, 0, 0xff, 0xff, 0xff, 0x0f, 1, 2, 3, 4, 5, 6, 7, 8};
  ASSERT_EQ(::write(fd, junk, sizeof junk), static_cast<ssize_t>(sizeof junk));
  char buf[256];
  ssize_t n;
  while ((n = ::read(fd, buf, sizeof buf)) > 0) {
  }
  EXPECT_LE(n, 0) << "the daemon closes the connection";
  ::close(fd);
  EXPECT_TRUE(c->starters().ok()) << "other connections keep working";
  EXPECT_TRUE(connect()->list().ok());
  EXPECT_TRUE(daemon->running());
}

TEST_F(DaemonTest, ASecondDaemonOnTheSameSocketIsRefusedAndAStaleSocketIsReplaced) {
  start();
  ProcessResult second = runProcess(
      {IMAGED_BIN, "--catalog", kSample, "--data-dir", dir.sub("data2"), "--socket", socket()});
  EXPECT_NE(second.code, 0);
  EXPECT_NE(second.err.find("another imaged is serving"), std::string::npos) << second.err;
  EXPECT_TRUE(connect()->starters().ok()) << "the first daemon keeps serving";
  daemon->signal(SIGKILL);  // leaves its socket file behind
  daemon->wait();
  ASSERT_TRUE(fs::exists(socket()));
  restart();
  EXPECT_TRUE(connect()->starters().ok());
}

TEST_F(DaemonTest, SigtermStopsCleanly) {
  start();
  ASSERT_EQ(ctl({"create", "web", "--starter", "python"}).code, 0);
  daemon->signal(SIGTERM);
  EXPECT_EQ(daemon->wait(), 0);
  EXPECT_NE(daemon->log().find("imaged stopped"), std::string::npos);
}

TEST_F(DaemonTest, JsonLogsAreOneObjectPerLineWithARequestLine) {
  start(kSample, {"--log-format", "json"});
  ASSERT_EQ(ctl({"create", "web", "--starter", "python", "--env", "Q=\"quoted\"", "--wait"}).code,
            0);
  ASSERT_EQ(ctl({"show", "nothing"}).code, 1);
  daemon->signal(SIGTERM);
  daemon->wait();
  std::istringstream lines(daemon->log());
  int requests = 0, buildEnds = 0;
  for (std::string line; std::getline(lines, line);) {
    json j = json::parse(line, nullptr, false);
    ASSERT_FALSE(j.is_discarded()) << line;
    const std::string m = j["message"];
    if (m.find("method=createImage outcome=ok") != std::string::npos) ++requests;
    if (m.find("method=getImage outcome=E_NOT_FOUND") != std::string::npos) ++requests;
    if (m.find("succeeded") != std::string::npos && m.rfind("build ", 0) == 0) ++buildEnds;
  }
  EXPECT_EQ(requests, 2);
  EXPECT_EQ(buildEnds, 1);
}

// Blobs larger than the socket's buffer, in 4 MiB pieces: the answers are sent partly at once
// and partly as the client drains the socket, and the client checks every digest.
TEST_F(DaemonTest, ALargeImageTravelsThroughTheSocketIntact) {
  ProcessResult made =
      runProcess({"python3", std::string(IMAGED_SOURCE_DIR) + "/bench/make_big_catalog.py",
                  dir.sub("big"), "2", "6"});
  ASSERT_EQ(made.code, 0) << made.err;
  start(dir.sub("big"));
  ASSERT_EQ(ctl({"create", "big", "--starter", "big", "--wait"}).code, 0);
  ProcessResult exported = ctl({"export", "big", dir.sub("oci")});
  ASSERT_EQ(exported.code, 0) << exported.err;
  uintmax_t largest = 0;
  for (const auto& e : fs::directory_iterator(dir.sub("oci/blobs/sha256")))
    largest = std::max(largest, e.file_size());
  EXPECT_GT(largest, uintmax_t{4} << 20) << "a blob of more than one piece";
  if (::system("command -v skopeo >/dev/null") == 0) {
    ProcessResult inspect = runProcess({"skopeo", "inspect", "oci:" + dir.sub("oci") + ":latest"});
    EXPECT_EQ(inspect.code, 0) << inspect.err;
  }
}

TEST_F(DaemonTest, ExportWritesALayoutThatSkopeoAndUmociRead) {
  if (::system("command -v skopeo >/dev/null && command -v umoci >/dev/null") != 0) {
    GTEST_SKIP() << "needs skopeo and umoci";
  }
  start();
  ASSERT_EQ(ctl({"create", "web", "--starter", "python", "--add", "py3-flask", "--env",
                 "APP_MODE=prod", "--wait"})
                .code,
            0);
  const json show = ctlJson({"show", "web"});
  ProcessResult all = ctl({"export", "web", dir.sub("all")});
  ASSERT_EQ(all.code, 0) << all.err;
  json index = json::parse(std::ifstream(dir.sub("all/index.json")));
  EXPECT_EQ(index["manifests"].size(), show["tags"].size());
  for (const auto& [tag, version] : show["tags"].items()) {
    ProcessResult each = runProcess({"skopeo", "inspect", "oci:" + dir.sub("all") + ":" + tag});
    EXPECT_EQ(each.code, 0) << tag << ": " << each.err;
    EXPECT_EQ(json::parse(each.out)["Labels"]["io.imaged.version"], version.get<std::string>())
        << tag;
  }
  ProcessResult inspect = runProcess({"skopeo", "inspect", "oci:" + dir.sub("all") + ":latest"});
  ASSERT_EQ(inspect.code, 0) << inspect.err;
  json info = json::parse(inspect.out);
  EXPECT_EQ(info["Labels"]["io.imaged.private-image"], "true");
  EXPECT_EQ(info["Labels"]["io.imaged.tenant"], "local");
  EXPECT_EQ(info["Labels"]["io.imaged.version"], "3.13.1");
  EXPECT_NE(std::find(info["Env"].begin(), info["Env"].end(), "APP_MODE=prod"), info["Env"].end());
  EXPECT_EQ(info["Digest"], show["lines"][0]["digest"]);

  ProcessResult one = ctl({"--json", "export", "web", dir.sub("one"), "--tag", "3.12"});
  ASSERT_EQ(one.code, 0) << one.err;
  EXPECT_EQ(json::parse(one.out)["tags"]["3.12"], show["lines"][1]["digest"]);
  ProcessResult unpack = runProcess(
      {"umoci", "unpack", "--rootless", "--image", dir.sub("one") + ":3.12", dir.sub("bundle")});
  ASSERT_EQ(unpack.code, 0) << unpack.err;
  EXPECT_TRUE(
      fs::exists(dir.sub("bundle/rootfs/usr/lib/python3.12/site-packages/flask/__init__.py")));
  EXPECT_TRUE(fs::exists(dir.sub("bundle/rootfs/lib/apk/db/installed")));
  EXPECT_EQ(ctl({"export", "web", dir.sub("none"), "--tag", "9.9"}).code, 1);

  json sbom = ctlJson({"sbom", "web", "--line", "3.12"});
  EXPECT_EQ(sbom["spdxVersion"], "SPDX-2.3");
  bool flask = false;
  for (const auto& p : sbom["packages"]) flask |= p["name"] == "py3.12-flask";
  EXPECT_TRUE(flask);
  ProcessResult table = ctl({"sbom", "web"});
  EXPECT_NE(table.out.find("line 3.13 (3.13.1)"), std::string::npos) << table.out;
  EXPECT_EQ(ctl({"sbom", "web", "--line", "3.11"}).code, 1);  // skipped: no image
}

TEST_F(DaemonTest, SharedLayersAreStoredOnceAndUnreferencedBlobsAreCollected) {
  start(kSample, {}, {{"IMAGED_TEST_GC_GRACE_S", "0"}});
  auto blobFile = [&](const std::string& digest) {
    return dir.sub("data/blobs/sha256/") + digest.substr(7);
  };
  auto blobCount = [&] {
    size_t n = 0;
    for (const auto& e : fs::directory_iterator(dir.sub("data/blobs/sha256")))
      n += e.is_regular_file();
    return n;
  };
  ASSERT_EQ(ctl({"create", "a", "--starter", "nginx", "--wait"}).code, 0);
  const size_t afterA = blobCount();
  ASSERT_EQ(ctl({"create", "b", "--starter", "nginx", "--wait"}).code, 0);
  EXPECT_EQ(ctlJson({"show", "b"})["lines"][0]["digest"],
            ctlJson({"show", "a"})["lines"][0]["digest"]);
  EXPECT_EQ(blobCount(), afterA) << "the same image content is stored once";

  const std::string before = ctlJson({"show", "a"})["lines"][0]["digest"];
  ASSERT_EQ(ctl({"delete", "b"}).code, 0);
  ASSERT_TRUE(eventually([&] { return fs::exists(blobFile(before)); }));
  EXPECT_TRUE(fs::exists(blobFile(before))) << "still referenced by a";

  ASSERT_EQ(ctl({"edit", "a", "--add", "nginx-mod-http-geoip2", "--wait"}).code, 0);
  const std::string after = ctlJson({"show", "a"})["lines"][0]["digest"];
  ASSERT_NE(after, before);
  EXPECT_TRUE(eventually([&] { return !fs::exists(blobFile(before)); }))
      << "no live image references it";
  EXPECT_TRUE(fs::exists(blobFile(after)));
  EXPECT_EQ(ctl({"export", "a", dir.sub("layout")}).code, 0);
}

// The build's own events move the image's version on while it runs; an edit, rebuild or delete
// that names no expected version applies to whatever version the image has by then.
TEST_F(DaemonTest, WritesWithoutAnExpectedVersionAreNotRefusedBecauseABuildMovedOn) {
  start(kSample, {}, {{"IMAGED_TEST_LINE_DELAY_MS", "5"}});
  ASSERT_EQ(ctl({"create", "web", "--starter", "python"}).code, 0);
  auto c = connect();
  ASSERT_NE(c, nullptr);
  for (int i = 0; i < 40; ++i) {
    client::ImageEdit edit;
    edit.setEnv = {{"ROUND", std::to_string(i)}};
    auto r = c->edit("web", edit);
    ASSERT_TRUE(r.ok()) << "edit " << i << ": " << r.error().code << " " << r.error().message;
    if (i % 10 == 9) {
      auto rb = c->rebuild("web");
      ASSERT_TRUE(rb.ok()) << rb.error().code << " " << rb.error().message;
    }
  }
  ASSERT_EQ(ctl({"wait", "web"}).code, 0);
  EXPECT_EQ(ctlJson({"show", "web"})["env"]["ROUND"], "39");
  // With an expected version, a version that moved on is still a conflict.
  client::ImageEdit stale;
  stale.setEnv = {{"ROUND", "x"}};
  auto refused = c->edit("web", stale, 1);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.error().code, "E_VERSION_CONFLICT");
}

TEST_F(DaemonTest, AnEditSupersedesTheRunningBuild) {
  start(kSample, {}, {{"IMAGED_TEST_LINE_DELAY_MS", "700"}});
  ASSERT_EQ(ctl({"create", "web", "--starter", "python"}).code, 0);
  ASSERT_EQ(ctl({"edit", "web", "--add", "py3-requests", "--wait"}).code, 0);
  json builds = ctlJson({"builds", "web"});
  ASSERT_EQ(builds.size(), 2u);
  EXPECT_EQ(builds[0]["status"], "cancelled");
  EXPECT_EQ(builds[1]["status"], "succeeded");
  json history = ctlJson({"history", "web"});
  int linesOfFirst = 0;
  for (const auto& e : history) {
    if (e["kind"] == "lineBuilt" && e["sequence"].get<uint64_t>() < builds[1]["id"].get<uint64_t>())
      ++linesOfFirst;
  }
  EXPECT_EQ(linesOfFirst, 0) << "the superseded build records no line";
  EXPECT_EQ(ctlJson({"show", "web"})["packages"], json::array({"py3-requests"}));
}

TEST_F(DaemonTest, WaitThatTimesOutSaysTheBuildGoesOnAndIsNotADaemonFailure) {
  start(kSample, {}, {{"IMAGED_TEST_LINE_DELAY_MS", "600"}});
  ASSERT_EQ(ctl({"create", "web", "--starter", "python"}).code, 0);
  ProcessResult early = ctl({"wait", "web", "--timeout", "0.2"});
  EXPECT_EQ(early.code, 1) << "not 3: the daemon answered";
  EXPECT_NE(
      early.err.find("error[E_WAIT_TIMEOUT]: web: the build is still in progress after 0.2 s"),
      std::string::npos)
      << early.err;
  json timedOut = ctlJson({"wait", "web", "--timeout", "0.2"}, 1);
  EXPECT_EQ(timedOut["error"]["code"], "E_WAIT_TIMEOUT");
  ProcessResult done = ctl({"wait", "web"});
  EXPECT_EQ(done.code, 0) << done.err;
  EXPECT_NE(done.out.find("local/web: created"), std::string::npos) << done.out;
}

TEST_F(DaemonTest, AuditVerifiesReplaysAndExportsTheLogWhileTheDaemonRuns) {
  start();
  ASSERT_EQ(ctl({"create", "web", "--starter", "python", "--add", "py3-flask", "--wait"}).code, 0);
  const json show = ctlJson({"show", "web"});
  ProcessResult verify = runProcess({IMAGED_AUDIT_BIN, "verify", dir.sub("data")});
  EXPECT_EQ(verify.code, 0) << verify.err;
  EXPECT_EQ(verify.out.rfind("intact: 8 events, head ", 0), 0u) << verify.out;

  ProcessResult replay = runProcess({IMAGED_AUDIT_BIN, "replay", dir.sub("data"), "--json"});
  ASSERT_EQ(replay.code, 0) << replay.err;
  json images = json::parse(replay.out);
  ASSERT_EQ(images.size(), 1u);
  for (const char* key :
       {"fullName", "status", "createdAt", "packages", "env", "version", "tags", "lines"}) {
    EXPECT_EQ(images[0][key], show[key]) << key;
  }
  ProcessResult before =
      runProcess({IMAGED_AUDIT_BIN, "replay", dir.sub("data"), "--until", "3", "--json"});
  EXPECT_EQ(json::parse(before.out)[0]["status"], "in-progress");

  ProcessResult decoded =
      runProcess({"sh", "-c",
                  std::string(IMAGED_AUDIT_BIN) + " export " + dir.sub("data") +
                      " | capnp decode " + IMAGED_SOURCE_DIR + "/schema/events.capnp Event"});
  ASSERT_EQ(decoded.code, 0) << decoded.err;
  EXPECT_NE(decoded.out.find("imageCreated = ("), std::string::npos) << decoded.out.substr(0, 2000);
  EXPECT_NE(decoded.out.find("name = \"web\""), std::string::npos);
  EXPECT_NE(decoded.out.find("buildSucceeded"), std::string::npos);
  ProcessResult lines = runProcess({IMAGED_AUDIT_BIN, "export", dir.sub("data"), "--json"});
  EXPECT_EQ(std::count(lines.out.begin(), lines.out.end(), '\n'), 8);
  ProcessResult history =
      runProcess({IMAGED_AUDIT_BIN, "history", dir.sub("data"), "--image", "local/web"});
  EXPECT_NE(history.out.find("lineSkipped"), std::string::npos) << history.out;

  // A changed byte in a copy of the log is found and named.
  daemon->signal(SIGTERM);
  daemon->wait();
  fs::copy(dir.sub("data"), dir.sub("copy"), fs::copy_options::recursive);
  std::fstream f(dir.sub("copy/log/data.mdb"), std::ios::in | std::ios::out | std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(f)), {});
  // Every copy of the text, since LMDB keeps old copies of pages beside the live one.
  size_t changed = 0;
  for (size_t at = bytes.find("py3-flask"); at != std::string::npos;
       at = bytes.find("py3-flask", at + 1)) {
    f.seekp(static_cast<std::streamoff>(at));
    f.put('Q');
    ++changed;
  }
  f.close();
  ASSERT_GT(changed, 0u);
  ProcessResult damaged = runProcess({IMAGED_AUDIT_BIN, "verify", dir.sub("copy")});
  EXPECT_EQ(damaged.code, 1) << damaged.out << damaged.err;
  EXPECT_NE(damaged.out.find("damaged at sequence 2"), std::string::npos) << damaged.out;
}

// Every answer `imagectl show` gave while a scripted history ran (in-progress builds included,
// polled as they went) is what imaged-audit replays for the same point of the log, at every
// sequence where that image was in that state; and replay from the snapshot the daemon wrote at
// shutdown equals replay from the first event.
TEST_F(DaemonTest, ReplayAtEverySequenceEqualsWhatTheDaemonAnsweredThen) {
  const std::map<std::string, std::string> slow = {{"IMAGED_TEST_LINE_DELAY_MS", "120"}};
  start(kSample, {}, slow);
  // What the daemon answered, by image stream and stream version.
  std::map<std::pair<std::string, uint64_t>, json> answers;
  std::map<std::string, int> incarnation;  // name -> n of image/local/<name>/<n> being polled
  std::mutex mu;
  std::atomic<bool> done{false};
  auto record = [&](const std::string& name, int n) {  // with `mu` held
    ProcessResult r = ctl({"--json", "show", name});
    if (r.code != 0) return;
    json j = json::parse(r.out);
    const std::string stream = "image/local/" + name + "/" + std::to_string(n);
    answers[{stream, j["version"].get<uint64_t>()}] = j;
  };
  std::thread poller([&] {
    while (!done) {
      {
        std::lock_guard lk(mu);
        for (const auto& [name, n] : incarnation) record(name, n);
      }
      std::this_thread::yield();
    }
  });
  auto poll = [&](const std::string& name, int n) {
    std::lock_guard lk(mu);
    if (n == 0)
      incarnation.erase(name);
    else
      incarnation[name] = n;
  };
  // Runs a command, then records the image's state once more (so that every state a command
  // leaves is seen, however the polling went).
  auto run = [&](std::vector<std::string> args) {
    ProcessResult r = ctl(args);
    EXPECT_EQ(r.code, 0) << r.err;
    std::lock_guard lk(mu);
    if (auto it = incarnation.find(args[1]); it != incarnation.end()) record(it->first, it->second);
  };
  poll("web", 1);
  poll("api", 1);
  run({"create", "web", "--starter", "python", "--add", "py3-flask", "--wait"});
  run({"create", "api", "--starter", "node", "--wait"});
  run({"edit", "web", "--env", "MODE=prod", "--wait"});
  run({"rebuild", "api", "--wait"});
  run({"edit", "web", "--remove", "py3-flask"});  // in progress, then superseded by the next edit
  run({"edit", "web", "--add", "py3-requests", "--wait"});
  poll("api", 0);
  run({"delete", "api"});
  run({"create", "api", "--starter", "nginx", "--wait"});
  poll("api", 2);
  run({"rebuild", "api", "--wait"});
  daemon->signal(SIGTERM);  // a snapshot at shutdown
  ASSERT_EQ(daemon->wait(), 0);
  restart(kSample, slow);
  poll("db", 1);
  run({"create", "db", "--starter", "python", "--wait"});
  done = true;
  poller.join();
  ASSERT_TRUE(fs::exists(dir.sub("data/snapshots")));

  // Where each (stream, version) lies in the log, and when each stream was created.
  ProcessResult exported = runProcess({IMAGED_AUDIT_BIN, "export", dir.sub("data"), "--json"});
  ASSERT_EQ(exported.code, 0) << exported.err;
  std::map<std::pair<std::string, uint64_t>, uint64_t> sequenceOf;
  std::map<std::string, uint64_t> createdAtSequence;
  std::istringstream lines(exported.out);
  uint64_t last = 0;
  for (std::string line; std::getline(lines, line);) {
    json e = json::parse(line);
    const uint64_t seq = std::stoull(e["sequence"].get<std::string>());
    const uint64_t version = std::stoull(e["streamVersion"].get<std::string>());
    sequenceOf[{e["streamId"], version}] = seq;
    if (version == 1) createdAtSequence[e["streamId"]] = seq;
    last = seq;
  }
  // The stream of the live image `name` after event `seq`.
  auto streamAt = [&](const std::string& name, uint64_t seq) {
    std::string best;
    for (const auto& [stream, created] : createdAtSequence) {
      if (stream.rfind("image/local/" + name + "/", 0) == 0 && created <= seq &&
          (best.empty() || created > createdAtSequence[best])) {
        best = stream;
      }
    }
    return best;
  };

  size_t compared = 0;
  std::set<std::pair<std::string, uint64_t>> matched;
  for (uint64_t seq = 1; seq <= last; ++seq) {
    const std::string until = std::to_string(seq);
    ProcessResult replay =
        runProcess({IMAGED_AUDIT_BIN, "replay", dir.sub("data"), "--until", until, "--json"});
    ASSERT_EQ(replay.code, 0) << replay.err;
    ProcessResult full = runProcess(
        {IMAGED_AUDIT_BIN, "replay", dir.sub("data"), "--until", until, "--json", "--no-snapshot"});
    EXPECT_EQ(replay.out, full.out) << "snapshot and full replay differ at " << seq;
    for (const json& image : json::parse(replay.out)) {
      const std::string stream = streamAt(image["name"], seq);
      auto answered = answers.find({stream, image["version"].get<uint64_t>()});
      if (answered == answers.end()) continue;
      for (const char* key : {"name", "fullName", "description", "starter", "status", "createdAt",
                              "packages", "env", "version", "lines", "tags", "error"}) {
        EXPECT_EQ(image[key], answered->second[key])
            << key << " of " << stream << " at sequence " << seq;
      }
      matched.insert(answered->first);
      ++compared;
    }
  }
  // Every answer had its point in the log, and the polling saw builds in progress too.
  EXPECT_EQ(matched.size(), answers.size());
  for (const auto& [key, answer] : answers) {
    EXPECT_TRUE(sequenceOf.count(key)) << key.first << " v" << key.second;
  }
  const bool sawInProgress = std::any_of(answers.begin(), answers.end(), [](const auto& a) {
    return a.second["status"] == "in-progress";
  });
  EXPECT_TRUE(sawInProgress);
  EXPECT_GT(compared, answers.size());
  EXPECT_GE(answers.size(), 9u);  // at least what each command left

  // The daemon's own answers from the log: as of a moment after the last event, each image is
  // as it is now (api through its second stream, the first having been deleted).
  char soon[32];
  const std::time_t later = std::time(nullptr) + 2;
  std::strftime(soon, sizeof soon, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&later));
  for (const char* name : {"web", "api", "db"}) {
    EXPECT_EQ(ctlJson({"show", name, "--at", soon}), ctlJson({"show", name})) << name;
  }
}

TEST_F(DaemonTest, AuditReadsALiveStoreWhileTheDaemonWrites) {
  start();
  std::atomic<bool> done{false};
  std::thread writer([&] {
    for (int i = 0; i < 12; ++i) {
      EXPECT_EQ(ctl({"create", "img" + std::to_string(i), "--starter", "python", "--wait"}).code,
                0);
    }
    done = true;
  });
  uint64_t previous = 0;
  int rounds = 0;
  while (!done || rounds < 3) {
    ProcessResult verify = runProcess({IMAGED_AUDIT_BIN, "verify", dir.sub("data")});
    ASSERT_EQ(verify.code, 0) << verify.out << verify.err;
    std::smatch m;
    ASSERT_TRUE(std::regex_search(verify.out, m, std::regex("intact: (\\d+) events")))
        << verify.out;
    const uint64_t events = std::stoull(m[1]);
    EXPECT_GE(events, previous) << "a later read sees at least as much";
    previous = events;
    ProcessResult replay = runProcess({IMAGED_AUDIT_BIN, "replay", dir.sub("data"), "--json"});
    ASSERT_EQ(replay.code, 0) << replay.err;
    EXPECT_TRUE(json::parse(replay.out).is_array());
    ++rounds;
  }
  writer.join();
  EXPECT_GT(rounds, 3);
  EXPECT_GT(previous, 12u);
  EXPECT_EQ(ctlJson({"list"}).size(), 12u);
}

TEST_F(DaemonTest, SnapshotsShortenStartAndOneThatDoesNotMatchTheLogIsIgnored) {
  // Written in the background every 5 events: there even after a SIGKILL.
  start(kSample, {"--snapshot-every", "5"});
  ASSERT_EQ(ctl({"create", "web", "--starter", "python", "--add", "py3-flask", "--wait"}).code, 0);
  const json before = ctlJson({"show", "web"});
  ASSERT_TRUE(eventually([&] {
    return fs::exists(dir.sub("data/snapshots")) && !fs::is_empty(dir.sub("data/snapshots"));
  }));
  daemon->signal(SIGKILL);
  daemon->wait();
  restart();
  EXPECT_NE(daemon->log().find("snapshot at event "), std::string::npos) << daemon->log();
  EXPECT_NE(daemon->log().find(" loaded from "), std::string::npos) << daemon->log();
  EXPECT_EQ(ctlJson({"show", "web"}), before);

  // Another data directory's snapshot at the same sequence, put in place of this one's.
  daemon->signal(SIGTERM);
  ASSERT_EQ(daemon->wait(), 0);
  Daemon other({kSample, dir.sub("other"), dir.sub("other.sock"), {}, {}});
  ASSERT_TRUE(other.start()) << other.log();
  ASSERT_EQ(runProcess({IMAGECTL_BIN, "--socket", dir.sub("other.sock"), "create", "web",
                        "--starter", "python", "--add", "py3-requests", "--wait"})
                .code,
            0);
  other.signal(SIGTERM);
  ASSERT_EQ(other.wait(), 0);
  std::vector<fs::path> ours, theirs;
  for (const auto& e : fs::directory_iterator(dir.sub("data/snapshots"))) ours.push_back(e.path());
  for (const auto& e : fs::directory_iterator(dir.sub("other/snapshots")))
    theirs.push_back(e.path());
  std::sort(ours.begin(), ours.end());
  std::sort(theirs.begin(), theirs.end());
  ASSERT_FALSE(theirs.empty());
  ASSERT_EQ(ours.back().filename(), theirs.back().filename()) << "same sequence";
  fs::copy_file(theirs.back(), ours.back(), fs::copy_options::overwrite_existing);
  ProcessResult verify = runProcess({IMAGED_AUDIT_BIN, "verify", dir.sub("data")});
  EXPECT_EQ(verify.code, 0) << "a snapshot is not the log: " << verify.out;
  EXPECT_NE(verify.out.find("not used: it does not match the log"), std::string::npos)
      << verify.out;
  ProcessResult replay = runProcess({IMAGED_AUDIT_BIN, "replay", dir.sub("data"), "--json"});
  EXPECT_NE(replay.err.find("does not match the log"), std::string::npos) << replay.err;
  EXPECT_EQ(json::parse(replay.out)[0]["packages"], json::array({"py3-flask"}));
  restart();
  EXPECT_NE(daemon->log().find("does not match the log"), std::string::npos) << daemon->log();
  EXPECT_EQ(ctlJson({"show", "web"}), before) << "the state comes from the log";
}

TEST_F(DaemonTest, ACorruptPackageFileFailsOnlyTheLinesThatUseIt) {
  fs::copy(kSample, dir.sub("catalog"), fs::copy_options::recursive);
  const std::string victim = dir.sub("catalog/repositories/main/x86_64/py3.13-flask-3.1.0-r0.apk");
  std::string bytes;
  {
    std::ifstream in(victim, std::ios::binary);
    bytes.assign((std::istreambuf_iterator<char>(in)), {});
  }
  bytes[bytes.size() / 2] ^= 0x01;
  writeFile(victim, bytes);
  start(dir.sub("catalog"));
  ASSERT_EQ(ctl({"create", "web", "--starter", "python", "--add", "py3-flask", "--wait"}).code, 0);
  json show = ctlJson({"show", "web"});
  EXPECT_EQ(show["lines"][0]["status"], "skipped");
  EXPECT_EQ(show["lines"][0]["code"], "E_PACKAGE_CORRUPT");
  EXPECT_NE(show["lines"][0]["reason"].get<std::string>().find("py3.13-flask-3.1.0-r0.apk"),
            std::string::npos);
  EXPECT_EQ(show["lines"][1]["status"], "built");
  EXPECT_EQ(show["tags"]["latest"], "3.12.8");
  fs::remove(dir.sub("catalog/repositories/main/x86_64/py3.12-flask-3.1.0-r0.apk"));
  ASSERT_EQ(ctl({"rebuild", "web", "--wait"}).code, 4);  // no line left
  EXPECT_EQ(ctlJson({"builds", "web"})[1]["lines"][1]["code"], "E_PACKAGE_MISSING");
}

TEST_F(DaemonTest, ASecondDaemonOnTheSameDataDirectoryRefusesToStart) {
  start();
  ProcessResult second = runProcess({IMAGED_BIN, "--catalog", kSample, "--data-dir",
                                     dir.sub("data"), "--socket", dir.sub("other.sock")});
  EXPECT_NE(second.code, 0);
  EXPECT_NE(second.err.find("is using the data directory"), std::string::npos) << second.err;
  EXPECT_NE(second.err.find("(pid "), std::string::npos) << second.err;
  EXPECT_FALSE(fs::exists(dir.sub("other.sock")));
  // The first one serves on; once it is gone (even killed), the directory is free again.
  EXPECT_EQ(ctl({"list"}).code, 0);
  daemon->signal(SIGKILL);
  daemon->wait();
  restart();
  EXPECT_EQ(ctl({"list"}).code, 0);
}

TEST_F(DaemonTest, ImagectlWithoutADaemonExitsThree) {
  ProcessResult r = ctl({"list"});
  EXPECT_EQ(r.code, 3);
  EXPECT_NE(r.err.find("error[E_UNAVAILABLE]"), std::string::npos) << r.err;
  EXPECT_EQ(ctl({"no-such-command"}).code, 2);
}

TEST_F(DaemonTest, TheLogHoldsEveryChangeAsDecodableEvents) {
  start();
  ASSERT_EQ(ctl({"create", "web", "--starter", "python", "--add", "py3-flask", "--wait"}).code, 0);
  auto events = connect()->readEvents(1, 1000);
  ASSERT_TRUE(events.ok());
  std::vector<std::string> kinds;
  uint64_t expected = 1;
  for (const std::string& bytes : *events) {
    auto words = kj::heapArray<capnp::word>(bytes.size() / sizeof(capnp::word));
    std::memcpy(words.begin(), bytes.data(), bytes.size());
    capnp::FlatArrayMessageReader reader(words);
    auto e = reader.getRoot<schema::Event>();
    EXPECT_EQ(e.getSequence(), expected++);
    kinds.push_back(std::to_string(static_cast<int>(e.getPayload().which())));
  }
  // catalogLoaded, imageCreated, buildRequested, buildStarted, 3 line results, buildSucceeded.
  EXPECT_EQ(events->size(), 8u);
}

TEST_F(DaemonTest, ASubscriberGetsStoredEventsThenLiveOnesInOrder) {
  start();
  ASSERT_EQ(ctl({"create", "a", "--starter", "nginx", "--wait"}).code, 0);
  auto c = connect();
  std::vector<uint64_t> sequences;
  bool sawLiveBuildEnd = false;
  std::thread writer([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    EXPECT_EQ(ctl({"create", "b", "--starter", "node", "--wait"}).code, 0);
  });
  auto done = c->subscribe(
      2,
      [&](const std::vector<std::string>& batch) {
        for (const std::string& bytes : batch) {
          auto words = kj::heapArray<capnp::word>(bytes.size() / sizeof(capnp::word));
          std::memcpy(words.begin(), bytes.data(), bytes.size());
          capnp::FlatArrayMessageReader reader(words);
          auto e = reader.getRoot<schema::Event>();
          sequences.push_back(e.getSequence());
          if (std::string(e.getStreamId().cStr()).find("/b/") != std::string::npos &&
              e.getPayload().which() == schema::Payload::BUILD_SUCCEEDED) {
            sawLiveBuildEnd = true;
          }
        }
        return !sawLiveBuildEnd;
      },
      std::chrono::seconds(20));
  writer.join();
  ASSERT_TRUE(done.ok()) << done.error().message << "\n" << daemon->log();
  EXPECT_TRUE(sawLiveBuildEnd);
  ASSERT_FALSE(sequences.empty());
  for (size_t i = 0; i < sequences.size(); ++i)
    EXPECT_EQ(sequences[i], i + 2) << "gapless, in order";
}

TEST_F(DaemonTest, OnlyTheDaemonsOwnUidMayReadTheWholeLog) {
  if (::geteuid() != 0 || ::system("command -v setpriv >/dev/null") != 0) {
    GTEST_SKIP() << "needs root and setpriv to act as another uid";
  }
  const passwd* nobody = ::getpwnam("nobody");
  writeFile(dir.sub("config.yaml"), "tenants:\n  nobody: globex\n");
  start(kSample, {"--config", dir.sub("config.yaml"), "--socket-group", "nogroup"});
  ProcessResult r =
      runProcess({"setpriv", "--reuid=" + std::to_string(nobody->pw_uid), "--regid=nogroup",
                  "--clear-groups", IMAGECTL_BIN, "--socket", socket(), "catalog", "--reload"});
  EXPECT_NE(r.err.find("E_PERMISSION_DENIED"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace imaged::testing
