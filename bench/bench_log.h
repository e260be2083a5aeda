// A realistic event log for the benchmarks that read one: what the daemon would have written.
#pragma once

#include <atomic>
#include <chrono>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "daemon/catalog/catalog.h"
#include "daemon/catalog/tags.h"
#include "daemon/domain/events.h"
#include "store/event_log.h"

namespace imaged::bench {

// A log as the daemon would have written it for `images` images of the sample catalog, ten
// events each: created, requested, started, three lines, succeeded, then a rebuild that
// failed (requested, started, failed).
inline void writeLog(const std::string& data, const std::string& catalogDir, int images) {
  auto catalog = *imaged::catalog::Catalog::load(catalogDir);
  imaged::store::EventLog::Options o;
  o.path = data + "/log";
  auto log = std::move(imaged::store::EventLog::open(o)).value();
  std::vector<std::pair<std::string, std::vector<imaged::catalog::BuiltLine>>> starters;
  for (const auto& s : catalog->starters())
    starters.emplace_back(s.name, imaged::catalog::buildableLines(s));
  imaged::store::AppendRequest first;
  first.streamId = "catalog";
  first.payloads.push_back(
      imaged::domain::events::catalogLoaded(catalog->digest(), catalogDir, starters));
  uint64_t next = log->append(std::move(first))->lastSequence + 1;
  const auto& python = *catalog->findStarter("python");
  const auto lines = imaged::catalog::buildableLines(python);
  std::vector<imaged::domain::events::ResolvedPackage> packages;
  for (const auto& p : python.lines[0].production().packages)
    packages.push_back({p.name, p.version});
  std::atomic<int> pending{0};
  for (int i = 0; i < images; ++i) {
    imaged::store::AppendRequest r;
    const std::string name = "image-" + std::to_string(i);
    r.streamId = "image/bench/" + name + "/1";
    r.actor = {"bench", 0, "bench"};
    const uint64_t build = next + 1, rebuild = next + 7;
    r.payloads.push_back(imaged::domain::events::imageCreated("bench", name, "", "python",
                                                              {"py3-flask"}, {{"MODE", "x"}}));
    r.payloads.push_back(imaged::domain::events::buildRequested(
        imaged::schema::BuildReason::CREATED, catalog->digest()));
    r.payloads.push_back(imaged::domain::events::buildStarted(build, catalog->digest(), lines));
    for (const auto& l : lines)
      r.payloads.push_back(
          imaged::domain::events::lineBuilt(build, l.line, l.version, packages, ""));
    r.payloads.push_back(imaged::domain::events::buildSucceeded(build));
    r.payloads.push_back(imaged::domain::events::buildRequested(
        imaged::schema::BuildReason::REBUILD, catalog->digest()));
    r.payloads.push_back(imaged::domain::events::buildStarted(rebuild, catalog->digest(), lines));
    r.payloads.push_back(
        imaged::domain::events::buildFailed(rebuild, "E_NO_BUILDABLE_LINE", "bench"));
    next += r.payloads.size();
    ++pending;
    log->appendAsync(std::move(r), [&](imaged::Result<imaged::store::AppendResult> res) {
      if (!res.ok()) std::abort();
      --pending;
    });
    while (pending > 256) std::this_thread::sleep_for(std::chrono::microseconds(100));
  }
  while (pending > 0) std::this_thread::sleep_for(std::chrono::milliseconds(1));
}

}  // namespace imaged::bench
