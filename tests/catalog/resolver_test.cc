#include "daemon/catalog/resolver.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <map>
#include <random>
#include <set>
#include <thread>

#include "tests/catalog/index_text.h"
#include "tests/common/temp_dir.h"

namespace imaged::catalog {
namespace {

// A catalog from APKINDEX text (one repository) and no starters.
std::shared_ptr<const Catalog> catalogOf(const std::string& index) {
  auto parsed = parseApkIndex(index, "test");
  EXPECT_TRUE(parsed.problems.empty()) << parsed.problems.front().message;
  return Catalog::build({Repository{"main", "", std::move(parsed.records)}}, {});
}

std::vector<Atom> atoms(std::initializer_list<const char*> texts) {
  std::vector<Atom> out;
  for (const char* t : texts) out.push_back(*parseAtom(t));
  return out;
}

std::vector<Pin> pins(std::initializer_list<const char*> texts) {
  std::vector<Pin> out;
  for (const char* t : texts) {
    auto a = *parseAtom(t);
    out.push_back({a.name, a.version});
  }
  return out;
}

std::vector<std::string> labels(const Catalog& c, const std::vector<PackageId>& ids) {
  std::vector<std::string> out;
  for (PackageId id : ids) out.push_back(c.label(id));
  return out;
}

// An independent check of a resolved set against every rule of CATALOG.md: "" when the set is
// valid, else the first rule it breaks.
std::string violation(const Catalog& c, const LineRequest& req, const std::vector<PackageId>& set) {
  auto matches = [&](const Atom& a, PackageId id) {
    const PackageRecord& r = c.package(id);
    if (r.name == a.name && versionSatisfies(a, r.version)) return true;
    return std::any_of(r.provides.begin(), r.provides.end(), [&](const Provide& p) {
      if (p.name != a.name) return false;
      return p.version.empty() ? a.op == VersionOp::kAny : versionSatisfies(a, p.version);
    });
  };
  auto satisfied = [&](const Atom& a) {
    return std::any_of(set.begin(), set.end(), [&](PackageId id) { return matches(a, id); });
  };
  for (const Pin& p : req.pinned) {
    if (!std::any_of(set.begin(), set.end(), [&](PackageId id) {
          return c.package(id).name == p.name && c.package(id).version == p.version;
        })) {
      return "pin " + p.name + " missing";
    }
  }
  for (const Atom& a : req.added) {
    if (!satisfied(a)) return "added " + a.str() + " unmet";
  }
  std::map<std::string_view, PackageId> slotOwner;
  for (PackageId id : set) {
    for (const Atom& d : c.package(id).depends) {
      if (!d.conflict && !satisfied(d)) return c.label(id) + " needs " + d.str();
      if (d.conflict) {
        for (PackageId other : set) {
          if (other != id && matches(d, other))
            return c.label(id) + " conflicts with " + c.label(other);
        }
      }
    }
    for (auto slot : c.slots(id)) {
      if (!slotOwner.emplace(slot, id).second) return "two packages take " + std::string(slot);
    }
  }
  return "";
}

void expectValid(const Catalog& c, const LineRequest& req, const std::vector<PackageId>& set) {
  EXPECT_EQ(violation(c, req, set), "");
}

const char* kPythonRepo =
    "P:glibc\nV:2.40-r3\n\nP:glibc\nV:2.41-r0\n\n"
    "P:python-3.11\nV:3.11.10-r0\nD:glibc\np:python3=3.11.10-r0 cmd:python3=3.11.10-r0\n\n"
    "P:python-3.12\nV:3.12.8-r0\nD:glibc\np:python3=3.12.8-r0 cmd:python3=3.12.8-r0\n\n"
    "P:python-3.13\nV:3.13.1-r0\nD:glibc\np:python3=3.13.1-r0 cmd:python3=3.13.1-r0\n\n"
    "P:py3.12-flask\nV:3.0.3-r0\nD:python-3.12 py3.12-werkzeug\np:py3-flask=3.0.3-r0\n\n"
    "P:py3.13-flask\nV:3.0.3-r0\nD:python-3.13 py3.13-werkzeug\np:py3-flask=3.0.3-r0\n\n"
    "P:py3.12-werkzeug\nV:3.1.0-r0\nD:python-3.12\n\n"
    "P:py3.13-werkzeug\nV:3.1.0-r0\nD:python-3.13\n\n"
    "P:curl\nV:8.11.0-r0\nD:glibc>=2.41 libcurl=8.11.0-r0\n\n"
    "P:curl\nV:8.5.0-r0\nD:glibc>=2.40 libcurl=8.5.0-r0\n\n"
    "P:libcurl\nV:8.11.0-r0\nD:glibc>=2.41\n\n"
    "P:libcurl\nV:8.5.0-r0\nD:glibc\n\n"
    "P:newtool\nV:1.0-r0\nD:glibc>=2.41\n\n"
    "P:busybox\nV:1.36-r0\np:cmd:sh\nk:10\n\n"
    "P:dash\nV:0.5-r0\np:cmd:sh\nk:100\n\n"
    "P:legacy-ssl\nV:1.0-r0\nD:!glibc>=2.40\n\n"
    "P:ca-certs-a\nV:1-r0\np:ca-certificates\n\n"
    "P:ca-certs-b\nV:1-r0\np:ca-certificates\n";

LineRequest line(const char* name, std::vector<Pin> pinned, std::vector<Atom> added) {
  return LineRequest{name, std::move(pinned), std::move(added)};
}

TEST(Resolver, InstallsThePinsPlusAddedPackagesClosedUnderDependencies) {
  auto c = catalogOf(kPythonRepo);
  auto req = line("3.13", pins({"python-3.13=3.13.1-r0", "glibc=2.40-r3"}), atoms({"py3-flask"}));
  auto r = resolveLine(*c, req);
  ASSERT_TRUE(r.ok()) << r.error->message;
  EXPECT_EQ(labels(*c, r.packages),
            (std::vector<std::string>{"glibc-2.40-r3", "py3.13-flask-3.0.3-r0",
                                      "py3.13-werkzeug-3.1.0-r0", "python-3.13-3.13.1-r0"}));
  expectValid(*c, req, r.packages);
}

TEST(Resolver, PinnedVersionsNeverChangeSoTheNewestAddOnThatFitsIsChosen) {
  auto c = catalogOf(kPythonRepo);
  // curl 8.11 needs glibc 2.41 but the line pins 2.40: curl 8.5 and libcurl 8.5 instead.
  auto req = line("3.12", pins({"python-3.12=3.12.8-r0", "glibc=2.40-r3"}), atoms({"curl"}));
  auto r = resolveLine(*c, req);
  ASSERT_TRUE(r.ok()) << r.error->message;
  auto got = labels(*c, r.packages);
  EXPECT_NE(std::find(got.begin(), got.end(), "curl-8.5.0-r0"), got.end());
  EXPECT_NE(std::find(got.begin(), got.end(), "libcurl-8.5.0-r0"), got.end());
  EXPECT_NE(std::find(got.begin(), got.end(), "glibc-2.40-r3"), got.end());
  expectValid(*c, req, r.packages);
}

TEST(Resolver, SkipsLineWhenAddedPackageNeedsNewerGlibc) {
  auto c = catalogOf(kPythonRepo);
  auto r = resolveLine(
      *c, line("3.12", pins({"python-3.12=3.12.8-r0", "glibc=2.40-r3"}), atoms({"newtool"})));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error->code, "E_PACKAGE_CONFLICT");
  EXPECT_EQ(r.conflict.requests, (std::vector<std::string>{"newtool"}));
  ASSERT_EQ(r.conflict.candidates.size(), 1u);
  const std::string& why = r.conflict.candidates[0].reason;
  EXPECT_NE(why.find("glibc-2.40-r3 is pinned"), std::string::npos) << why;
  EXPECT_NE(why.find("newtool-1.0-r0 requires glibc>=2.41"), std::string::npos) << why;
  EXPECT_NE(r.error->message.find("line 3.12"), std::string::npos) << r.error->message;
}

TEST(Resolver, ExplainsEveryProviderOfAVirtualNameThatTheLineExcludes) {
  auto c = catalogOf(kPythonRepo);
  auto r = resolveLine(
      *c, line("3.11", pins({"python-3.11=3.11.10-r0", "glibc=2.40-r3"}), atoms({"py3-flask"})));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error->code, "E_PACKAGE_CONFLICT");
  ASSERT_EQ(r.conflict.candidates.size(), 2u);
  EXPECT_EQ(r.conflict.candidates[0].package, "py3.12-flask-3.0.3-r0");
  EXPECT_EQ(r.conflict.candidates[1].package, "py3.13-flask-3.0.3-r0");
  for (const auto& cand : r.conflict.candidates) {
    EXPECT_NE(cand.reason.find("python-3.11-3.11.10-r0 is pinned"), std::string::npos)
        << cand.reason;
    EXPECT_NE(cand.reason.find("'python3'"), std::string::npos) << cand.reason;  // the shared slot
  }
  EXPECT_NE(r.conflict.candidates[0].reason.find("requires python-3.12"), std::string::npos);
  const std::string& m = r.error->message;
  EXPECT_NE(m.find("py3-flask cannot be installed on line 3.11"), std::string::npos) << m;
  EXPECT_NE(m.find("none of its 2 candidates"), std::string::npos) << m;
}

TEST(Resolver, TheSeedsPhpExampleNamesTheChain) {
  auto c = catalogOf(
      "P:php-8.3\nV:8.3.14-r0\np:php=8.3.14\n\nP:php-8.4\nV:8.4.1-r0\np:php=8.4.1\n\n"
      "P:php-8.2\nV:8.2.26-r0\np:php=8.2.26\n\n"
      "P:php-8.2-redis\nV:6.1.0-r0\nD:php-8.2\np:php-redis=6.1.0-r0\n\n"
      "P:php-8.3-redis\nV:6.1.0-r0\nD:php-8.3\np:php-redis=6.1.0-r0\n");
  auto on83 = resolveLine(*c, line("8.3", pins({"php-8.3=8.3.14-r0"}), atoms({"php-redis"})));
  ASSERT_TRUE(on83.ok());
  EXPECT_EQ(labels(*c, on83.packages),
            (std::vector<std::string>{"php-8.3-8.3.14-r0", "php-8.3-redis-6.1.0-r0"}));
  auto on84 = resolveLine(*c, line("8.4", pins({"php-8.4=8.4.1-r0"}), atoms({"php-redis"})));
  ASSERT_FALSE(on84.ok());
  const std::string& m = on84.error->message;
  for (const char* part : {"php-redis cannot be installed on line 8.4", "php-8.2-redis-6.1.0-r0",
                           "php-8.3-redis-6.1.0-r0", "requires php-8.3", "requires php-8.2",
                           "php-8.4-8.4.1-r0 is pinned", "'php'"}) {
    EXPECT_NE(m.find(part), std::string::npos) << part << " in: " << m;
  }
}

TEST(Resolver, VersionedProvidesAreExclusiveButUnversionedOnesAreNot) {
  auto c = catalogOf(kPythonRepo);
  // Two providers of unversioned ca-certificates may both be installed.
  auto both = resolveLine(*c, line("x", {}, atoms({"ca-certs-a", "ca-certs-b"})));
  ASSERT_TRUE(both.ok());
  EXPECT_EQ(both.packages.size(), 2u);
  // Two pythons both provide python3=…: only one may be installed.
  auto two = resolveLine(*c, line("x", pins({"python-3.12=3.12.8-r0"}), atoms({"python-3.13"})));
  ASSERT_FALSE(two.ok());
  EXPECT_EQ(two.error->code, "E_PACKAGE_CONFLICT");
  EXPECT_NE(two.error->message.find("'python3'"), std::string::npos) << two.error->message;
}

TEST(Resolver, ConflictAtomsAreRespected) {
  auto c = catalogOf(kPythonRepo);
  auto r = resolveLine(*c, line("x", pins({"glibc=2.40-r3"}), atoms({"legacy-ssl"})));
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error->message.find("legacy-ssl-1.0-r0 conflicts with glibc>=2.40"),
            std::string::npos)
      << r.error->message;
  auto fine = resolveLine(*c, line("x", {}, atoms({"legacy-ssl"})));
  ASSERT_TRUE(fine.ok());
  EXPECT_EQ(labels(*c, fine.packages), (std::vector<std::string>{"legacy-ssl-1.0-r0"}));
}

TEST(Resolver, HigherProviderPriorityWins) {
  auto c = catalogOf(kPythonRepo);
  auto r = resolveLine(*c, line("x", {}, atoms({"cmd:sh"})));
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(labels(*c, r.packages), (std::vector<std::string>{"dash-0.5-r0"}));
}

TEST(Resolver, ARequestThatAPinAlreadySatisfiesAddsNothing) {
  auto c = catalogOf(kPythonRepo);
  auto req = line("3.12", pins({"python-3.12=3.12.8-r0", "glibc=2.40-r3"}),
                  atoms({"cmd:python3", "python3~3.12", "glibc"}));
  auto r = resolveLine(*c, req);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(labels(*c, r.packages),
            (std::vector<std::string>{"glibc-2.40-r3", "python-3.12-3.12.8-r0"}));
}

TEST(Resolver, UnknownNamesAndUnmatchableConstraintsHaveTheirOwnCodes) {
  auto c = catalogOf(kPythonRepo);
  auto unknown = resolveLine(*c, line("x", {}, atoms({"nosuchthing"})));
  ASSERT_FALSE(unknown.ok());
  EXPECT_EQ(unknown.error->code, "E_PACKAGE_NOT_FOUND");
  auto tooNew = resolveLine(*c, line("x", {}, atoms({"curl>=99"})));
  ASSERT_FALSE(tooNew.ok());
  EXPECT_EQ(tooNew.error->code, "E_PACKAGE_CONFLICT");
  EXPECT_NE(tooNew.error->message.find("8.11.0-r0, 8.5.0-r0"), std::string::npos)
      << tooNew.error->message;
  EXPECT_EQ(checkAddedPackages(*c, atoms({"curl", "cmd:sh"})).ok(), true);
  EXPECT_EQ(checkAddedPackages(*c, atoms({"!curl"})).error().code, "E_INVALID_ARGUMENT");
}

TEST(Resolver, TwoAddedPackagesThatExcludeEachOtherAreNamedTogether) {
  auto c = catalogOf(kPythonRepo);
  auto r = resolveLine(*c, line("x", {}, atoms({"py3.12-flask", "py3.13-werkzeug"})));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.conflict.requests, (std::vector<std::string>{"py3.12-flask", "py3.13-werkzeug"}));
  EXPECT_NE(r.error->message.find("cannot be installed together"), std::string::npos);
}

TEST(Resolver, BacktracksThroughAChainToTheOnlyWorkingCombination) {
  // xN-v depends on x(N+1)=v for v in 1..4; a pin conflicts with x6 versions 2..4. Greedy picks
  // version 4 everywhere and must come back down to 1 for the whole chain.
  std::string index;
  for (int n = 1; n <= 6; ++n) {
    for (int v = 1; v <= 4; ++v) {
      index += "P:x" + std::to_string(n) + "\nV:" + std::to_string(v) + "\n";
      if (n < 6) index += "D:x" + std::to_string(n + 1) + "=" + std::to_string(v) + "\n";
      index += "\n";
    }
  }
  index += "P:guard\nV:1\nD:!x6>1\n";
  auto c = catalogOf(index);
  auto req = line("x", pins({"guard=1"}), atoms({"x1"}));
  auto r = resolveLine(*c, req);
  ASSERT_TRUE(r.ok()) << r.error->message;
  EXPECT_EQ(labels(*c, r.packages),
            (std::vector<std::string>{"guard-1", "x1-1", "x2-1", "x3-1", "x4-1", "x5-1", "x6-1"}));
  expectValid(*c, req, r.packages);
}

TEST(Resolver, SameInputsGiveTheSameResult) {
  auto c = catalogOf(kPythonRepo);
  auto req = line("3.13", pins({"python-3.13=3.13.1-r0", "glibc=2.41-r0"}),
                  atoms({"curl", "py3-flask", "cmd:sh"}));
  auto first = resolveLine(*c, req);
  ASSERT_TRUE(first.ok());
  for (int i = 0; i < 5; ++i) EXPECT_EQ(resolveLine(*c, req).packages, first.packages);
  // The order of the records in the index does not matter either.
  auto c2 = catalogOf(testing::reversedRecords(kPythonRepo));
  auto second = resolveLine(*c2, req);
  ASSERT_TRUE(second.ok());
  EXPECT_EQ(labels(*c2, second.packages), labels(*c, first.packages));
}

TEST(Resolver, LinesResolveInParallelWithTheSameResults) {
  auto c = catalogOf(kPythonRepo);
  std::vector<LineRequest> reqs = {
      line("3.11", pins({"python-3.11=3.11.10-r0", "glibc=2.40-r3"}), atoms({"py3-flask"})),
      line("3.12", pins({"python-3.12=3.12.8-r0", "glibc=2.40-r3"}), atoms({"py3-flask", "curl"})),
      line("3.13", pins({"python-3.13=3.13.1-r0", "glibc=2.41-r0"}), atoms({"py3-flask", "curl"})),
  };
  std::vector<LineResolution> sequential;
  for (const auto& r : reqs) sequential.push_back(resolveLine(*c, r));
  for (int round = 0; round < 20; ++round) {
    std::vector<LineResolution> parallel(reqs.size());
    std::vector<std::thread> threads;
    for (size_t i = 0; i < reqs.size(); ++i) {
      threads.emplace_back([&, i] { parallel[i] = resolveLine(*c, reqs[i]); });
    }
    for (auto& t : threads) t.join();
    for (size_t i = 0; i < reqs.size(); ++i) {
      EXPECT_EQ(parallel[i].packages, sequential[i].packages);
      EXPECT_EQ(parallel[i].ok(), sequential[i].ok());
      if (!parallel[i].ok()) {
        EXPECT_EQ(parallel[i].error->message, sequential[i].error->message);
      }
    }
  }
}

// Completeness and soundness against brute force: small random catalogs, every subset checked.
TEST(Resolver, AgreesWithBruteForceOnRandomCatalogs) {
  std::mt19937 rng(20261204);
  int satisfiable = 0, unsatisfiable = 0;
  for (int round = 0; round < 300; ++round) {
    const int names = 4 + static_cast<int>(rng() % 3);
    std::string index;
    std::vector<std::pair<std::string, std::string>> all;
    for (int n = 0; n < names; ++n) {
      const int versions = 1 + static_cast<int>(rng() % 3);
      for (int v = 1; v <= versions; ++v) {
        const std::string name = "n" + std::to_string(n);
        index += "P:" + name + "\nV:" + std::to_string(v) + "\n";
        std::string deps;
        for (int d = 0; d < 2; ++d) {
          if (rng() % 3 != 0) continue;
          const int target = static_cast<int>(rng() % names);
          if (target == n) continue;
          const char* ops[] = {"", ">=", "<", "="};
          const int op = static_cast<int>(rng() % 4);
          deps += std::string(" ") + (rng() % 5 == 0 ? "!" : "") + "n" + std::to_string(target) +
                  (op ? ops[op] + std::to_string(1 + rng() % 3) : "");
        }
        if (rng() % 4 == 0) deps += " v" + std::to_string(rng() % 2);
        if (!deps.empty()) index += "D:" + deps.substr(1) + "\n";
        if (rng() % 3 == 0)
          index += "p:v" + std::to_string(rng() % 2) + "=" + std::to_string(v) + "\n";
        index += "\n";
        all.push_back({name, std::to_string(v)});
      }
    }
    auto parsed = parseApkIndex(index, "random");
    ASSERT_TRUE(parsed.problems.empty()) << parsed.problems.front().message << "\n" << index;
    auto c = Catalog::build({Repository{"r", "", std::move(parsed.records)}}, {});
    LineRequest req{"x", {}, {}};
    const auto& [pinName, pinVersion] = all[rng() % all.size()];
    req.pinned.push_back({pinName, pinVersion});
    req.added.push_back(*parseAtom("n" + std::to_string(rng() % names)));
    if (rng() % 2) req.added.push_back(*parseAtom("v" + std::to_string(rng() % 2)));

    // Brute force: is there any valid set?
    const size_t n = c->packageCount();
    bool exists = false;
    for (uint32_t mask = 0; mask < (1u << n) && !exists; ++mask) {
      std::vector<PackageId> set;
      for (PackageId id = 0; id < n; ++id) {
        if (mask & (1u << id)) set.push_back(id);
      }
      exists = violation(*c, req, set).empty();
    }
    auto r = resolveLine(*c, req);
    EXPECT_EQ(r.ok(), exists) << index << (r.ok() ? "" : r.error->message);
    if (r.ok()) {
      EXPECT_EQ(violation(*c, req, r.packages), "")
          << index << "pin " << req.pinned[0].name << "=" << req.pinned[0].version << " add "
          << req.added[0].str();
      ++satisfiable;
    } else {
      const bool unknownName = std::any_of(req.added.begin(), req.added.end(),
                                           [&](const Atom& a) { return !c->knows(a.name); });
      EXPECT_EQ(r.error->code, unknownName ? "E_PACKAGE_NOT_FOUND" : "E_PACKAGE_CONFLICT");
      EXPECT_FALSE(r.error->message.empty());
      ++unsatisfiable;
    }
  }
  // The generator must exercise both outcomes for the comparison to mean anything.
  EXPECT_GT(satisfiable, 30);
  EXPECT_GT(unsatisfiable, 30);
}

TEST(Resolver, ResolvesDeepSoDependenciesOnTheAlpineIndex) {
  imaged::testing::TempDir dir;
  std::filesystem::create_directories(dir.sub("repositories/main/x86_64"));
  std::filesystem::create_directories(dir.sub("starters"));
  std::filesystem::copy_file(
      std::string(IMAGED_SHARED_DATA) + "/alpine-3.16-main/x86_64/APKINDEX.tar.gz",
      dir.sub("repositories/main/x86_64/APKINDEX.tar.gz"));
  auto c = *Catalog::load(dir.path());
  auto req = line("3.16", pins({"musl=1.2.3-r2", "busybox=1.35.0-r17"}),
                  atoms({"python3", "curl", "git"}));
  auto r = resolveLine(*c, req);
  ASSERT_TRUE(r.ok()) << r.error->message;
  auto got = labels(*c, r.packages);
  for (const char* want : {"musl-1.2.3-r2", "python3-3.10.8-r0", "libcurl-7.83.1-r4"}) {
    EXPECT_NE(std::find(got.begin(), got.end(), want), got.end()) << want;
  }
  EXPECT_GT(r.packages.size(), 15u);
  expectValid(*c, req, r.packages);
}

}  // namespace
}  // namespace imaged::catalog
