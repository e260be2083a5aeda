// The daemon's core on the loop thread: the projection, the catalog in force, command
// execution through the event log, and the build orchestrator. It knows nothing of RPC; the
// server translates to and from it.
//
// Threads: every method is called on the loop thread (the io_context's), and every callback is
// invoked there. The store's answer thread and the build workers reach it only through
// asio::post. Hence no locks around the projection.
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <spdlog/spdlog.h>

#include "common/result.h"
#include "daemon/asio.h"
#include "daemon/catalog/catalog.h"
#include "daemon/domain/build.h"
#include "daemon/domain/commands.h"
#include "daemon/domain/projection.h"
#include "daemon/image/oci.h"
#include "store/event_log.h"

namespace imaged {

class Service {
 public:
  struct Options {
    std::string catalogDir;
    std::string blobDir;  // where images go ("": resolve only, write no images)
    size_t buildWorkers = 2;
    // Test hook: each line job waits this long before resolving, so that tests can stop the
    // daemon in the middle of a build. Set from IMAGED_TEST_LINE_DELAY_MS; 0 in production.
    std::chrono::milliseconds lineDelay{0};
    // Blobs younger than this are never collected (IMAGED_TEST_GC_GRACE_S in tests).
    std::chrono::seconds gcGrace{3600};
    // Collections asked for by build ends and deletes start at most this often (and at most
    // as often as the grace period, so that tests with no grace collect at once).
    std::chrono::seconds gcInterval{60};
    // Where projection snapshots go ("": none), and after how many applied events the next
    // one is written in the background (0: never, not even at shutdown).
    std::string snapshotDir;
    uint64_t snapshotEvery = 100'000;
  };

  // `io`, `log` and `logger` must outlive the service.
  Service(asio::io_context& io, store::EventLog& log, std::shared_ptr<spdlog::logger> logger,
          Options options);
  ~Service();

  // Loads the catalog, replays the log into the projection, records a CatalogLoaded when the
  // catalog differs from the last one recorded (rebuilding the images whose starter changed),
  // and resumes every build that has no end. Fails when the catalog cannot be loaded at all or
  // the log cannot be read.
  Status start();

  // Stops taking new builds; running line jobs finish into the void.
  void stop();

  const domain::Projection& projection() const { return projection_; }
  std::shared_ptr<const catalog::Catalog> catalog() const { return catalog_; }
  store::EventLog& log() { return log_; }
  // The blob store images go to (null when the daemon writes none).
  std::shared_ptr<image::BlobStore> blobs() const { return blobs_; }

  using Done = std::function<void(Result<store::AppendResult>)>;
  // Appends a plan; `done` runs once its events are durable and applied to the projection (or
  // with the plan's or the store's error).
  void execute(Result<store::AppendRequest> plan, Done done);

  // The same for a plan made against the projection with the image's current version as the
  // expected one: when other events of the image (its running build's, above all) land first
  // and the store refuses that version, it catches up and plans again, up to `replans` times.
  // For requests whose caller named no expected version, and for the daemon's own.
  using Plan = std::function<Result<store::AppendRequest>()>;
  static constexpr int kReplans = 8;
  void executeLatest(Plan plan, Done done, int replans = kReplans);

  // Reloads the catalog from its directory: on success records CatalogLoaded (when changed) and
  // rebuilds the live images whose starter's lines or production versions changed; on failure
  // keeps the catalog in force and returns why.
  void reloadCatalog(std::function<void(Result<std::shared_ptr<const catalog::Catalog>>)> done);

  // Resolves `jobs` on the build workers (nothing is recorded); `done` gets the outcomes, in the
  // jobs' order, on the loop thread.
  void resolveLines(std::vector<domain::LineJob> jobs,
                    std::function<void(std::vector<domain::LineOutcome>)> done);

  struct Collected {
    size_t removed = 0;
    uint64_t bytes = 0;
  };
  // Removes the blobs that no live image references any more (its latest successful build and
  // its latest build: manifests, configs, layers, SBOMs). Blobs younger than the grace period
  // are kept, so that a build that has written but not yet recorded its image, or an export in
  // progress, never loses one. The listing and removal run on a build worker.
  void collectGarbage(std::function<void(Collected)> done);
  // Asks for a collection after something may have left blobs unused. Requests coalesce: one
  // collection at a time, the next no sooner than gcInterval after the last began, so that a
  // burst of builds costs one pass over the gallery, not one per build.
  void requestCollection();

  // Observers see every event applied to the projection, in order, after it is applied.
  using Observer = std::function<void(const schema::Event::Reader&)>;
  uint64_t addObserver(Observer observer);
  void removeObserver(uint64_t id);

  // Reads committed events past the projection's position and applies them.
  void catchUp();

  // Writes a snapshot of the projection now, on this thread (at shutdown). Does nothing when
  // snapshots are off or no event was applied since the last one.
  Status snapshotNow();

 private:
  struct RunningBuild {
    std::string streamId;
    uint64_t buildId = 0;
    size_t expected = 0;
    std::vector<domain::LineOutcome> outcomes;
    // Set when an edit, rebuild or delete supersedes the build: its line jobs stop early.
    std::shared_ptr<std::atomic<bool>> cancelled = std::make_shared<std::atomic<bool>>(false);
  };

  void onApplied(const schema::Event::Reader& event);
  void startBuild(const std::string& streamId, uint64_t buildId);
  void dispatch(const std::string& streamId, std::vector<domain::LineJob> jobs, size_t expected,
                std::vector<domain::LineOutcome> done);
  void onLineDone(domain::LineOutcome outcome, std::string streamId);
  bool isCurrent(const std::string& streamId, uint64_t buildId) const;
  void appendBuildEvents(const std::string& streamId,
                         std::vector<domain::events::Payload> payloads);
  void resumeBuilds();
  void recordCatalog(const std::string& why, bool waitForIt);
  void loadSnapshot();
  // Starts a background snapshot when `snapshotEvery` events were applied since the last.
  void maybeSnapshot();

  asio::io_context& io_;
  store::EventLog& log_;
  std::shared_ptr<spdlog::logger> logger_;
  Options options_;
  asio::thread_pool workers_;
  std::shared_ptr<image::BlobStore> blobs_;  // null when no images are written
  // Line resolutions against the current catalog, shared by every build.
  std::shared_ptr<domain::ResolutionMemo> resolutions_ = std::make_shared<domain::ResolutionMemo>();
  std::shared_ptr<const catalog::Catalog> catalog_;
  domain::Projection projection_;
  std::map<uint64_t, RunningBuild> running_;              // by build id
  std::multimap<std::string, uint64_t> runningByStream_;  // the same builds, by image stream
  void forgetRunning(std::map<uint64_t, RunningBuild>::iterator it);
  std::map<uint64_t, Observer> observers_;
  uint64_t nextObserver_ = 1;
  bool stopped_ = false;
  bool replaying_ = false;  // applying the log at start: no builds are started from it
  bool gcRunning_ = false, gcWanted_ = false, gcTimerArmed_ = false;
  std::chrono::steady_clock::time_point lastGc_{};
  asio::steady_timer gcTimer_;
  uint64_t snapshotSequence_ = 0;  // of the newest snapshot loaded or written
  bool snapshotting_ = false;      // a background snapshot is being written

  // How other threads (the store's answer thread, build workers) reach the loop thread. Closed
  // when the service goes, after which what they post is dropped instead of reaching a dead one.
  class Poster {
   public:
    explicit Poster(asio::io_context& io) : io_(&io) {}
    template <typename Fn>
    void post(Fn&& fn) {
      std::lock_guard lk(mutex_);
      if (io_) asio::post(*io_, std::forward<Fn>(fn));
    }
    void close() {
      std::lock_guard lk(mutex_);
      io_ = nullptr;
    }

   private:
    std::mutex mutex_;
    asio::io_context* io_;
  };
  std::shared_ptr<Poster> poster_;
};

}  // namespace imaged
