// Benchmarks of the catalog and the resolver. Usage: catalog_bench SHARED_DATA_DIR SCRATCH
// [--quick]
//
// catalog.load.alpine   Catalog::load of a catalog holding the Alpine 3.16 index, against only
//                       decompressing and reading that index (libarchive) in the same run.
// catalog.search.alpine search of the Alpine index (name, prefix, substring, description);
//                       p50 against the 1 ms target.
// resolve.alpine        one line on the Alpine index: pins musl and busybox, adds python3, curl
//                       and git (deep so: dependencies); p50 against the 2 ms target.
// resolve.synthetic100k one line on a generated index of 100,000 records (2,000 names with 50
//                       versions each, versioned dependencies, a pin that forces backtracking);
//                       p50 against the 20 ms target.
#include <algorithm>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "bench_util.h"
#include "daemon/catalog/catalog.h"
#include "daemon/catalog/resolver.h"

using namespace imaged::catalog;
using imaged::bench::median;
using imaged::bench::report;
using imaged::bench::Stopwatch;
namespace fs = std::filesystem;

namespace {

double percentile(std::vector<double> v, double p) {
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(p * static_cast<double>(v.size())))];
}

template <typename Fn>
std::vector<double> timesMs(int runs, Fn&& fn) {
  std::vector<double> out;
  for (int i = 0; i < runs; ++i) {
    Stopwatch sw;
    fn();
    out.push_back(sw.seconds() * 1000);
  }
  return out;
}

std::string pct(const char* name, double v) {
  return std::string("\"") + name + "\": " + std::to_string(v);
}

void benchLoad(const std::string& data, const std::string& scratch, bool quick) {
  const std::string dir = scratch + "/alpine-catalog";
  fs::create_directories(dir + "/repositories/main/x86_64");
  fs::create_directories(dir + "/starters");
  const std::string index = dir + "/repositories/main/x86_64/APKINDEX.tar.gz";
  fs::copy_file(data + "/alpine-3.16-main/x86_64/APKINDEX.tar.gz", index,
                fs::copy_options::overwrite_existing);
  const int runs = quick ? 5 : 20;
  auto load = timesMs(runs, [&] {
    auto c = Catalog::load(dir);
    if (!c.ok() || (*c)->packageCount() != 4929) std::abort();
  });
  auto raw = timesMs(runs, [&] {
    auto text = readIndexArchive(index);
    if (!text.ok()) std::abort();
  });
  report("catalog.load.alpine", "ms", median(load), "libarchive.read_index", median(raw),
         "\"target_ms\": 50, \"packages\": 4929");
}

void benchResolveAlpine(const std::string& data, const std::string& scratch, bool quick) {
  const std::string dir = scratch + "/alpine-catalog";
  auto c = *Catalog::load(dir);
  LineRequest req{"3.16", {{"musl", "1.2.3-r2"}, {"busybox", "1.35.0-r17"}}, {}};
  for (const char* a : {"python3", "curl", "git"}) req.added.push_back(*parseAtom(a));
  size_t installed = 0;
  auto t = timesMs(quick ? 50 : 300, [&] {
    auto r = resolveLine(*c, req);
    if (!r.ok()) std::abort();
    installed = r.packages.size();
  });
  (void)data;
  report("resolve.alpine", "ms", median(t), "target", 2.0,
         pct("p99_ms", percentile(t, 0.99)) + ", \"packages\": " + std::to_string(installed));
}

void benchSearch(const std::string& scratch, bool quick) {
  auto c = *Catalog::load(scratch + "/alpine-catalog");
  const char* queries[] = {"python3", "curl", "ssl", "compression library", "3.10"};
  size_t hits = 0;
  auto t = timesMs(quick ? 20 : 100, [&] {
    for (const char* q : queries) hits += c->search(q, 20).size();
  });
  for (double& ms : t) ms /= std::size(queries);
  report("catalog.search.alpine", "ms", median(t), "target", 1.0,
         pct("p99_ms", percentile(t, 0.99)) + ", \"hits\": " + std::to_string(hits));
}

// 2,000 names x 50 versions. Version v of name n depends on two later names at >= a version near
// v, and every 10th name provides a versioned virtual. The pin holds name 0's dependency chain
// below its newest versions, so the newest candidates fail and the solver must backtrack.
std::shared_ptr<const Catalog> syntheticCatalog() {
  constexpr int kNames = 2000, kVersions = 50;
  std::mt19937 rng(100000);
  std::vector<PackageRecord> records;
  records.reserve(kNames * kVersions);
  for (int n = 0; n < kNames; ++n) {
    for (int v = 1; v <= kVersions; ++v) {
      PackageRecord r;
      r.name = "lib" + std::to_string(n);
      r.version = "1." + std::to_string(v) + "-r0";
      for (int d = 0; d < 2 && n + 1 < kNames; ++d) {
        const int target = n + 1 + static_cast<int>(rng() % std::min(50, kNames - n - 1));
        const int min = std::max(1, v - static_cast<int>(rng() % 10));
        r.depends.push_back(
            *parseAtom("lib" + std::to_string(target) + ">=1." + std::to_string(min)));
      }
      if (n % 10 == 0) r.provides.push_back({"virtual" + std::to_string(n / 10), r.version});
      records.push_back(std::move(r));
    }
  }
  PackageRecord base;
  base.name = "base";
  base.version = "1-r0";
  // Conflicts with the newest 20 versions of lib1 .. lib5: requests must settle lower.
  for (int n = 1; n <= 5; ++n)
    base.depends.push_back(*parseAtom("!lib" + std::to_string(n) + ">1.30"));
  records.push_back(base);
  return Catalog::build({Repository{"synthetic", "", std::move(records)}}, {});
}

void benchResolveSynthetic(bool quick) {
  auto c = syntheticCatalog();
  LineRequest req{"1", {{"base", "1-r0"}}, {}};
  for (const char* a : {"lib0", "virtual3", "lib25>=1.10"}) req.added.push_back(*parseAtom(a));
  size_t installed = 0;
  auto t = timesMs(quick ? 10 : 50, [&] {
    auto r = resolveLine(*c, req);
    if (!r.ok()) {
      std::fprintf(stderr, "synthetic: %s\n", r.error->message.c_str());
      std::abort();
    }
    installed = r.packages.size();
  });
  report("resolve.synthetic100k", "ms", median(t), "target", 20.0,
         pct("p99_ms", percentile(t, 0.99)) + ", \"records\": " +
             std::to_string(c->packageCount()) + ", \"packages\": " + std::to_string(installed));
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: catalog_bench SHARED_DATA_DIR SCRATCH [--quick]\n");
    return 2;
  }
  const std::string data = argv[1], scratch = argv[2];
  const bool quick = argc > 3 && std::string(argv[3]) == "--quick";
  fs::create_directories(scratch);
  benchLoad(data, scratch, quick);
  benchSearch(scratch, quick);
  benchResolveAlpine(data, scratch, quick);
  benchResolveSynthetic(quick);
  fs::remove_all(scratch);
  return 0;
}
