// The work of a build, split so that each line is resolved on a worker thread with immutable
// inputs, and the events that record it. The orchestration (which build runs when, appending
// the results) is the daemon's; this is the part with no threads and no I/O.
#pragma once

#include <atomic>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "common/result.h"
#include "daemon/catalog/catalog.h"
#include "daemon/catalog/resolver.h"
#include "daemon/domain/events.h"
#include "daemon/domain/projection.h"
#include "daemon/image/line_image.h"

namespace imaged::domain {

// Line resolutions already made against one catalog object: resolution is a pure function of
// the catalog and the request, and images of one starter with the same added packages (many
// creates, or every image of a starter rebuilt after a catalog change) ask the same question.
// Entries belong to the catalog they were made against and go when another one is asked about;
// at most kMaxEntries. Thread-safe.
class ResolutionMemo {
 public:
  static constexpr size_t kMaxEntries = 4096;
  catalog::LineResolution resolve(const std::shared_ptr<const catalog::Catalog>& catalog,
                                  const catalog::LineRequest& request);
  size_t size() const;

 private:
  mutable std::mutex mutex_;
  // Compared by owner: the weak pointer keeps the catalog's control block, so another catalog
  // can never look like this one.
  std::weak_ptr<const catalog::Catalog> catalog_;
  std::unordered_map<std::string, catalog::LineResolution> entries_;
};

struct LineJob {
  std::shared_ptr<const catalog::Catalog> catalog;  // kept alive for the job
  uint64_t buildId = 0;
  std::string line, version;
  std::vector<catalog::Pin> pins;
  std::vector<catalog::Atom> added;
  // Where the line's image goes; null to resolve only (preview).
  std::shared_ptr<image::BlobStore> blobs;
  // When set (the build was superseded), the job stops before its next step.
  std::shared_ptr<const std::atomic<bool>> cancelled;
  std::shared_ptr<ResolutionMemo> memo;  // optional
  image::LineImageInput image;           // all but `packages`, which resolution fills in
};

struct LineOutcome {
  uint64_t buildId = 0;
  std::string line, version;
  bool built = false;
  std::vector<events::ResolvedPackage> packages;  // when built, sorted by name
  std::string digest;                             // when built and written: the manifest's
  std::string sbomDigest;                         // and its SPDX SBOM's
  std::string code, reason;                       // when skipped
};

// The jobs of a build: one per maintained line of the image's starter, at its production
// version. E_STARTER_NOT_FOUND when the catalog no longer offers the starter; E_PACKAGE_NOT_FOUND
// (or E_INVALID_ARGUMENT) when an added package is gone from the catalog.
Result<std::vector<LineJob>> planBuild(const std::shared_ptr<const catalog::Catalog>& catalog,
                                       const ImageState& image, uint64_t buildId,
                                       std::shared_ptr<image::BlobStore> blobs = nullptr,
                                       std::shared_ptr<ResolutionMemo> memo = nullptr);

// Resolves one line and, when the job has a blob store, writes its image (a package file that
// is missing or corrupt skips the line with E_PACKAGE_MISSING / E_PACKAGE_CORRUPT). Safe on any
// thread.
LineOutcome buildLine(const LineJob& job);

// The event that records a line's outcome.
events::Payload lineEvent(const LineOutcome& outcome);

// The build's end, once every line has an outcome: BuildSucceeded when at least one built, else
// BuildFailed with E_NO_BUILDABLE_LINE and every line's reason.
events::Payload endEvent(uint64_t buildId, const std::vector<LineOutcome>& outcomes);

}  // namespace imaged::domain
