#include "daemon/service.h"

#include <capnp/serialize.h>
#include <malloc.h>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <set>
#include <thread>

#include "daemon/domain/events.h"
#include "daemon/domain/snapshot.h"

namespace imaged {
namespace {

// A vector of one payload (an initializer list would have to copy it).
std::vector<domain::events::Payload> only(domain::events::Payload p) {
  std::vector<domain::events::Payload> v;
  v.push_back(std::move(p));
  return v;
}

}  // namespace

using domain::BuildStatus;
using domain::LineStatus;

Service::Service(asio::io_context& io, store::EventLog& log, std::shared_ptr<spdlog::logger> logger,
                 Options options)
    : io_(io),
      log_(log),
      logger_(std::move(logger)),
      options_(std::move(options)),
      workers_(options_.buildWorkers),
      blobs_(options_.blobDir.empty() ? nullptr
                                      : std::make_shared<image::BlobStore>(options_.blobDir)),
      gcTimer_(io),
      poster_(std::make_shared<Poster>(io)) {
  // An image reused within a second of the last check is not checked again (line_image.cc);
  // that second must stay well inside the collector's grace period (0 in tests: always check).
  if (blobs_) {
    blobs_->setRecheckAfter(std::min<std::chrono::milliseconds>(
        std::chrono::seconds(1),
        std::chrono::duration_cast<std::chrono::milliseconds>(options_.gcGrace) / 4));
  }
}

Service::~Service() {
  stop();
  poster_->close();
  log_.setCommitListener(nullptr);
  workers_.join();
}

void Service::stop() {
  stopped_ = true;
}

Status Service::start() {
  auto loaded = catalog::Catalog::load(options_.catalogDir);
  if (!loaded.ok()) return loaded.error();
  catalog_ = *loaded;
  for (const auto& p : catalog_->problems()) {
    logger_->warn("catalog: {}{}: {}", p.file, p.line ? ":" + std::to_string(p.line) : "",
                  p.message);
  }
  logger_->info("catalog {} loaded from {}: {} starters, {} packages", catalog_->digest(),
                options_.catalogDir, catalog_->starters().size(), catalog_->packageCount());

  loadSnapshot();
  replaying_ = true;
  catchUp();
  replaying_ = false;
  logger_->info("log replayed: {} events ({} after the snapshot)", projection_.lastSequence(),
                projection_.lastSequence() - snapshotSequence_);
  // Decoding the snapshot and replaying left freed memory in the heap that the daemon will not
  // need again at that size: give it back.
  malloc_trim(0);
  // A snapshot due now is taken once the daemon serves, not before.
  poster_->post([this] { maybeSnapshot(); });

  log_.setCommitListener(
      [this, poster = poster_](uint64_t) { poster->post([this] { catchUp(); }); });
  resumeBuilds();  // before the catalog record, so that it sees the builds resumed against it
  recordCatalog("loaded at start", /*waitForIt=*/true);
  return Ok{};
}

void Service::catchUp() {
  auto txn = log_.read();
  if (!txn.ok()) {
    logger_->error("reading the log: {}", txn.error().message);
    return;
  }
  auto s = (*txn)->forEach(projection_.lastSequence() + 1, [&](const store::EventRef& e) {
    capnp::FlatArrayMessageReader reader(e.words());
    auto event = reader.getRoot<schema::Event>();
    projection_.apply(event);
    onApplied(event);
    return true;
  });
  if (!s.ok()) logger_->error("applying the log: {}", s.error().message);
  if (!replaying_) maybeSnapshot();
}

void Service::loadSnapshot() {
  if (options_.snapshotDir.empty() || options_.snapshotEvery == 0) return;
  domain::removeSnapshotLeftovers(options_.snapshotDir);  // of a write a crash cut short
  auto txn = log_.read();
  if (!txn.ok()) return;  // catchUp() reports it
  auto loaded = domain::loadSnapshot(options_.snapshotDir, **txn, UINT64_MAX, INT64_MAX,
                                     [&](const std::string& why) { logger_->warn("{}", why); });
  if (!loaded) return;
  projection_ = std::move(loaded->projection);
  snapshotSequence_ = projection_.lastSequence();
  logger_->info("snapshot at event {} loaded from {}", snapshotSequence_, loaded->path);
}

void Service::maybeSnapshot() {
  if (options_.snapshotDir.empty() || options_.snapshotEvery == 0 || snapshotting_ || stopped_ ||
      projection_.lastSequence() < snapshotSequence_ + options_.snapshotEvery) {
    return;
  }
  // Computed on a worker from the files (the last snapshot and the log), never from the live
  // projection: encoding a large one would hold up the loop.
  snapshotting_ = true;
  const uint64_t sequence = projection_.lastSequence();
  asio::post(workers_, [this, poster = poster_, sequence] {
    const auto start = std::chrono::steady_clock::now();
    std::vector<std::string> warnings;
    auto r = domain::takeSnapshot(options_.snapshotDir, log_, sequence,
                                  [&](const std::string& w) { warnings.push_back(w); });
    ::malloc_trim(0);  // give back the second projection's memory now, not some day
    const double ms =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
    poster->post([this, sequence, r = std::move(r), warnings = std::move(warnings), ms] {
      snapshotting_ = false;
      for (const auto& w : warnings) logger_->warn("{}", w);
      if (!r.ok()) {
        logger_->warn("snapshot at event {} not written: {}", sequence, r.error().message);
        return;
      }
      snapshotSequence_ = std::max(snapshotSequence_, sequence);
      logger_->info("snapshot at event {} written in {:.0f} ms", sequence, ms);
    });
  });
}

Status Service::snapshotNow() {
  if (options_.snapshotDir.empty() || options_.snapshotEvery == 0 ||
      projection_.lastSequence() <= snapshotSequence_) {
    return Ok{};
  }
  auto txn = log_.read();
  if (!txn.ok()) return txn.error();
  auto hash = domain::eventHashAt(**txn, projection_.lastSequence());
  if (!hash.ok()) return hash.error();
  txn = Error{};  // end the read before the write
  if (auto s = domain::writeSnapshot(options_.snapshotDir, projection_, *hash); !s.ok()) return s;
  snapshotSequence_ = projection_.lastSequence();
  logger_->info("snapshot at event {} written", snapshotSequence_);
  return Ok{};
}

void Service::execute(Result<store::AppendRequest> plan, Done done) {
  if (!plan.ok()) {
    done(plan.error());
    return;
  }
  log_.appendAsync(std::move(plan).value(),
                   [this, poster = poster_, done](Result<store::AppendResult> r) {
                     poster->post([this, done, r = std::move(r)]() mutable {
                       if (r.ok())
                         catchUp();  // reply only once the events are applied, never before
                       done(std::move(r));
                     });
                   });
}

void Service::executeLatest(Plan plan, Done done, int replans) {
  Result<store::AppendRequest> request = plan();
  execute(std::move(request), [this, plan = std::move(plan), done = std::move(done),
                               replans](Result<store::AppendResult> r) mutable {
    if (r.ok() || replans <= 0 || r.error().code != "E_VERSION_CONFLICT") {
      done(std::move(r));
      return;
    }
    catchUp();  // the events that moved the version on
    executeLatest(std::move(plan), std::move(done), replans - 1);
  });
}

uint64_t Service::addObserver(Observer observer) {
  observers_[nextObserver_] = std::move(observer);
  return nextObserver_++;
}

void Service::removeObserver(uint64_t id) {
  observers_.erase(id);
}

void Service::onApplied(const schema::Event::Reader& event) {
  // Observers may remove themselves while being called: iterate over a copy of the ids.
  std::vector<uint64_t> ids;
  for (const auto& [id, o] : observers_) ids.push_back(id);
  for (uint64_t id : ids) {
    auto it = observers_.find(id);
    if (it != observers_.end()) it->second(event);
  }
  if (replaying_) return;
  auto payload = event.getPayload();
  const std::string streamId = event.getStreamId();
  // A running build that this event superseded (an edit, rebuild, delete) stops its jobs.
  std::vector<uint64_t> superseded;
  for (auto [it, end] = runningByStream_.equal_range(streamId); it != end; ++it) {
    if (!isCurrent(streamId, it->second)) superseded.push_back(it->second);
  }
  for (uint64_t id : superseded) {
    auto it = running_.find(id);
    *it->second.cancelled = true;
    forgetRunning(it);
  }
  switch (payload.which()) {
    case schema::Payload::BUILD_REQUESTED:
      startBuild(streamId, event.getSequence());
      break;
    case schema::Payload::BUILD_SUCCEEDED:
    case schema::Payload::BUILD_FAILED: {
      const domain::ImageState* image = projection_.byStream(streamId);
      const bool ok = payload.which() == schema::Payload::BUILD_SUCCEEDED;
      const uint64_t id =
          ok ? payload.getBuildSucceeded().getBuildId() : payload.getBuildFailed().getBuildId();
      if (image) {
        logger_->info("build {} of {}/{} {}{}", id, image->tenant, image->name,
                      ok ? "succeeded" : "failed: ",
                      ok ? "" : std::string(payload.getBuildFailed().getCode()));
      }
      if (auto it = running_.find(id); it != running_.end()) forgetRunning(it);
      requestCollection();  // a build's end may leave the previous images unused
      break;
    }
    case schema::Payload::IMAGE_DELETED:
      requestCollection();
      break;
    default:
      break;
  }
}

void Service::forgetRunning(std::map<uint64_t, RunningBuild>::iterator it) {
  for (auto [i, end] = runningByStream_.equal_range(it->second.streamId); i != end; ++i) {
    if (i->second == it->first) {
      runningByStream_.erase(i);
      break;
    }
  }
  running_.erase(it);
}

bool Service::isCurrent(const std::string& streamId, uint64_t buildId) const {
  const domain::ImageState* image = projection_.byStream(streamId);
  if (!image || image->deleted) return false;
  const domain::BuildState* b = image->latestBuild();
  return b && b->id == buildId && b->status == BuildStatus::kInProgress;
}

void Service::appendBuildEvents(const std::string& streamId,
                                std::vector<domain::events::Payload> payloads) {
  store::AppendRequest r;
  r.streamId = streamId;
  r.actor = {"", 0, "imaged/builder"};
  r.payloads = std::move(payloads);
  log_.appendAsync(
      std::move(r), [this, poster = poster_, streamId](Result<store::AppendResult> res) {
        if (res.ok()) return;
        poster->post([this, streamId, error = res.error()] {
          logger_->error("recording a build result of {}: {}", streamId, error.message);
        });
      });
}

void Service::startBuild(const std::string& streamId, uint64_t buildId) {
  if (stopped_ || running_.count(buildId) || !isCurrent(streamId, buildId)) return;
  const domain::ImageState& image = *projection_.byStream(streamId);
  auto jobs = domain::planBuild(catalog_, image, buildId, blobs_, resolutions_);
  if (!jobs.ok()) {
    appendBuildEvents(streamId, only(domain::events::buildFailed(buildId, jobs.error().code,
                                                                 jobs.error().message)));
    return;
  }
  std::vector<catalog::BuiltLine> lines;
  for (const auto& j : *jobs) lines.push_back({j.line, j.version});
  std::vector<domain::events::Payload> payloads;
  payloads.push_back(domain::events::buildStarted(buildId, catalog_->digest(), lines));
  if (jobs->empty()) payloads.push_back(domain::endEvent(buildId, {}));
  appendBuildEvents(streamId, std::move(payloads));
  if (!jobs->empty()) {
    const size_t n = jobs->size();
    dispatch(streamId, std::move(jobs).value(), n, {});
  }
}

void Service::dispatch(const std::string& streamId, std::vector<domain::LineJob> jobs,
                       size_t expected, std::vector<domain::LineOutcome> done) {
  const uint64_t buildId = jobs.empty() ? 0 : jobs.front().buildId;
  if (auto it = running_.find(buildId); it != running_.end()) forgetRunning(it);
  RunningBuild& running = running_[buildId] =
      RunningBuild{streamId, buildId, expected, std::move(done)};
  runningByStream_.emplace(streamId, buildId);
  for (auto& job : jobs) {
    job.cancelled = running.cancelled;
    asio::post(workers_, [this, poster = poster_, streamId, job = std::move(job)] {
      if (options_.lineDelay.count() > 0) std::this_thread::sleep_for(options_.lineDelay);
      domain::LineOutcome outcome = domain::buildLine(job);
      poster->post([this, streamId, outcome = std::move(outcome)]() mutable {
        onLineDone(std::move(outcome), streamId);
      });
    });
  }
}

void Service::requestCollection() {
  gcWanted_ = true;
  if (gcRunning_ || gcTimerArmed_ || stopped_) return;
  const auto interval = std::min(options_.gcInterval, options_.gcGrace);
  const auto due = lastGc_ + interval;
  if (std::chrono::steady_clock::now() < due) {
    gcTimerArmed_ = true;
    gcTimer_.expires_at(due);
    gcTimer_.async_wait([this](const boost::system::error_code& ec) {
      if (ec) return;  // cancelled: the service is going
      gcTimerArmed_ = false;
      requestCollection();
    });
    return;
  }
  gcWanted_ = false;
  gcRunning_ = true;
  lastGc_ = std::chrono::steady_clock::now();
  collectGarbage([this](Collected) {
    gcRunning_ = false;
    if (gcWanted_) requestCollection();
  });
}

void Service::collectGarbage(std::function<void(Collected)> done) {
  if (!blobs_) {
    done({});
    return;
  }
  // What is referenced, from the projection, on the loop thread.
  std::set<std::string> keep;
  auto keepLines = [&](const domain::BuildState* b) {
    if (!b) return;
    for (const domain::LineState& l : b->lines) {
      if (!l.digest().empty()) keep.insert(l.digest().str());
      if (!l.sbomDigest().empty()) keep.insert(l.sbomDigest().str());
    }
  };
  for (const domain::ImageState* image : projection_.liveImages()) {
    keepLines(image->latestSuccessfulBuild());
    keepLines(image->latestBuild());
  }
  asio::post(workers_,
             [poster = poster_, blobs = blobs_, keep = std::move(keep), grace = options_.gcGrace,
              logger = logger_, done = std::move(done)]() mutable {
               namespace fs = std::filesystem;
               // Manifests name their config and layers.
               std::set<std::string> referenced = keep;
               for (const std::string& digest : keep) {
                 auto manifest = blobs->read(digest);
                 if (!manifest.ok()) continue;
                 auto m = nlohmann::json::parse(*manifest, nullptr, false);
                 if (m.is_discarded() || !m.contains("layers")) continue;
                 referenced.insert(m["config"].value("digest", ""));
                 for (const auto& l : m["layers"]) referenced.insert(l.value("digest", ""));
               }
               Collected collected;
               std::error_code ec;
               for (const auto& entry : fs::directory_iterator(blobs->dir() + "/sha256", ec)) {
                 const std::string digest = "sha256:" + entry.path().filename().string();
                 if (referenced.count(digest) || digest.find(".tmp.") != std::string::npos)
                   continue;
                 // Checked and removed under the store's lock: a blob being reused right now
                 // (its time refreshed) stays.
                 if (auto size = blobs->removeIfOlder(digest, grace)) {
                   ++collected.removed;
                   collected.bytes += *size;
                 }
               }
               if (collected.removed > 0) {
                 logger->info("garbage collection removed {} blobs ({} bytes)", collected.removed,
                              collected.bytes);
               }
               poster->post([done = std::move(done), collected] { done(collected); });
             });
}

void Service::resolveLines(std::vector<domain::LineJob> jobs,
                           std::function<void(std::vector<domain::LineOutcome>)> done) {
  if (jobs.empty()) {
    done({});
    return;
  }
  struct Gather {
    std::vector<domain::LineOutcome> outcomes;
    size_t left;
    std::function<void(std::vector<domain::LineOutcome>)> done;
  };
  auto gather = std::make_shared<Gather>(
      Gather{std::vector<domain::LineOutcome>(jobs.size()), jobs.size(), std::move(done)});
  for (size_t i = 0; i < jobs.size(); ++i) {
    asio::post(workers_, [poster = poster_, gather, i, job = std::move(jobs[i])] {
      domain::LineOutcome outcome = domain::buildLine(job);
      poster->post([gather, i, outcome = std::move(outcome)]() mutable {
        gather->outcomes[i] = std::move(outcome);
        if (--gather->left == 0) gather->done(std::move(gather->outcomes));
      });
    });
  }
}

void Service::onLineDone(domain::LineOutcome outcome, std::string streamId) {
  auto it = running_.find(outcome.buildId);
  if (it == running_.end()) return;
  if (!isCurrent(streamId, outcome.buildId)) {  // superseded by an edit, rebuild or delete
    forgetRunning(it);
    return;
  }
  RunningBuild& b = it->second;
  std::vector<domain::events::Payload> payloads;
  payloads.push_back(domain::lineEvent(outcome));
  b.outcomes.push_back(std::move(outcome));
  if (b.outcomes.size() == b.expected) payloads.push_back(domain::endEvent(b.buildId, b.outcomes));
  appendBuildEvents(streamId, std::move(payloads));
}

void Service::resumeBuilds() {
  for (const domain::ImageState* image : projection_.liveImages()) {
    const domain::BuildState* b = image->latestBuild();
    if (!b || b->status != BuildStatus::kInProgress) continue;
    if (!b->started) {
      logger_->info("resuming build {} of {}/{}: not started before the restart", b->id,
                    image->tenant, image->name);
      startBuild(image->streamId, b->id);
      continue;
    }
    if (b->catalogDigest != catalog_->digest()) {
      // The lines it planned may no longer exist: end it, and build again.
      logger_->info("build {} of {}/{} was interrupted and the catalog changed: run again", b->id,
                    image->tenant, image->name);
      store::AppendRequest r;
      r.streamId = image->streamId;
      r.actor = {"", 0, "imaged/builder"};
      r.payloads.push_back(domain::events::buildFailed(
          b->id, "E_BUILD_INTERRUPTED",
          "the build was interrupted by a restart and the catalog changed since; it is run again"));
      r.payloads.push_back(
          domain::events::buildRequested(schema::BuildReason::RESUMED, catalog_->digest()));
      execute(std::move(r), [](Result<store::AppendResult>) {});
      continue;
    }
    auto jobs = domain::planBuild(catalog_, *image, b->id, blobs_, resolutions_);
    if (!jobs.ok()) {
      appendBuildEvents(image->streamId, only(domain::events::buildFailed(
                                             b->id, "E_BUILD_INTERRUPTED", jobs.error().message)));
      continue;
    }
    std::vector<domain::LineOutcome> done;
    std::vector<domain::LineJob> remaining;
    for (const domain::LineState& l : b->lines) {
      if (l.status == LineStatus::kPending) {
        for (auto& j : *jobs) {
          if (j.line == l.line) remaining.push_back(j);
        }
        continue;
      }
      domain::LineOutcome o{b->id,
                            std::string(l.line),
                            std::string(l.version),
                            l.status == LineStatus::kBuilt,
                            {},
                            l.digest().str(),
                            l.sbomDigest().str(),
                            std::string(l.code()),
                            std::string(l.reason())};
      done.push_back(std::move(o));
    }
    logger_->info("resuming build {} of {}/{}: {} of {} lines left", b->id, image->tenant,
                  image->name, remaining.size(), b->lines.size());
    if (remaining.empty()) {
      appendBuildEvents(image->streamId, only(domain::endEvent(b->id, done)));
      continue;
    }
    dispatch(image->streamId, std::move(remaining), b->lines.size(), std::move(done));
  }
}

void Service::recordCatalog(const std::string& why, bool waitForIt) {
  const domain::CatalogState previous = projection_.catalog();
  if (previous.digest == catalog_->digest()) return;
  std::vector<std::pair<std::string, std::vector<catalog::BuiltLine>>> starters;
  for (const catalog::Starter& s : catalog_->starters()) {
    starters.emplace_back(s.name, catalog::buildableLines(s));
  }
  store::AppendRequest r;
  r.streamId = "catalog";
  r.actor = {"", 0, "imaged"};
  r.correlationId = why;
  r.payloads.push_back(
      domain::events::catalogLoaded(catalog_->digest(), options_.catalogDir, starters));
  auto afterRecorded = [this, previous, starters](Result<store::AppendResult> res) {
    if (!res.ok()) {
      logger_->error("recording the catalog: {}", res.error().message);
      return;
    }
    if (previous.digest.empty()) return;  // the first catalog: nothing to keep up with
    auto linesOf = [](const std::map<std::string, std::vector<catalog::BuiltLine>>& m,
                      const std::string& name) {
      auto it = m.find(name);
      return it == m.end() ? std::vector<catalog::BuiltLine>{} : it->second;
    };
    std::map<std::string, std::vector<catalog::BuiltLine>> now(starters.begin(), starters.end());
    for (const domain::ImageState* image : projection_.liveImages()) {
      // A build already under way against this catalog keeps going.
      const domain::BuildState* latest = image->latestBuild();
      if (latest && latest->status == BuildStatus::kInProgress &&
          latest->catalogDigest == catalog_->digest()) {
        continue;
      }
      const auto before = linesOf(previous.starters, image->starter.str());
      const auto after = linesOf(now, image->starter.str());
      auto same = before.size() == after.size() &&
                  std::equal(before.begin(), before.end(), after.begin(),
                             [](const catalog::BuiltLine& a, const catalog::BuiltLine& b) {
                               return a.line == b.line && a.version == b.version;
                             });
      if (same) continue;
      logger_->info("starter {} changed: rebuilding {}/{}", image->starter, image->tenant,
                    image->name);
      domain::Caller system{"", 0, "imaged"};
      executeLatest(
          [this, system, stream = image->streamId]() -> Result<store::AppendRequest> {
            const domain::ImageState* now = projection_.byStream(stream);
            if (!now || now->deleted) return Error{"E_NOT_FOUND", "the image was deleted"};
            return domain::planRebuild(projection_, *catalog_, system, *now,
                                       schema::BuildReason::CATALOG_CHANGED, 0);
          },
          [this, name = image->name](Result<store::AppendResult> rr) {
            if (!rr.ok())
              logger_->warn("rebuild of {} after a catalog change: {}", name, rr.error().message);
          });
    }
  };
  if (waitForIt) {
    // At start-up: durable and applied before the daemon takes its first request.
    auto res = log_.append(std::move(r));
    if (res.ok()) catchUp();
    afterRecorded(std::move(res));
  } else {
    execute(std::move(r), std::move(afterRecorded));
  }
}

void Service::reloadCatalog(
    std::function<void(Result<std::shared_ptr<const catalog::Catalog>>)> done) {
  asio::post(workers_, [this, poster = poster_, done = std::move(done)] {
    auto loaded = catalog::Catalog::load(options_.catalogDir);
    poster->post([this, done, loaded = std::move(loaded)]() mutable {
      if (!loaded.ok()) {
        logger_->error("catalog reload failed, the old catalog stays in force: {}",
                       loaded.error().message);
        done(loaded.error());
        return;
      }
      catalog_ = *loaded;
      for (const auto& p : catalog_->problems()) {
        logger_->warn("catalog: {}{}: {}", p.file, p.line ? ":" + std::to_string(p.line) : "",
                      p.message);
      }
      logger_->info("catalog {} reloaded from {}", catalog_->digest(), options_.catalogDir);
      recordCatalog("reloaded", /*waitForIt=*/false);
      done(catalog_);
    });
  });
}

}  // namespace imaged
