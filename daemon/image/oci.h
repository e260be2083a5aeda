// OCI image pieces, written reproducibly: a layer (tar + gzip) from package files, the image
// config, the manifest, and a content-addressed blob store. The same inputs give the same bytes:
// entries sorted by path, fixed times, owners as in the packages, gzip headers without time or
// name, JSON with sorted keys.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"
#include "common/sha256.h"
#include "daemon/image/apk_file.h"

namespace imaged::image {

inline constexpr char kLayerMediaType[] = "application/vnd.oci.image.layer.v1.tar+gzip";
inline constexpr char kConfigMediaType[] = "application/vnd.oci.image.config.v1+json";
inline constexpr char kManifestMediaType[] = "application/vnd.oci.image.manifest.v1+json";

struct Descriptor {
  std::string mediaType;
  std::string digest;  // "sha256:<hex>"
  uint64_t size = 0;
};

using imaged::sha256Digest;

struct Layer {
  std::string tarGz;   // the blob
  std::string diffId;  // digest of the uncompressed tar
};

// A tar of `files` (sorted by path; missing parent directories added as 0755 root-owned), every
// entry's time set to `mtime`, gzip'd without a timestamp or name.
Result<Layer> writeLayer(std::vector<FileEntry> files, int64_t mtime);

struct ImageConfig {
  std::vector<std::pair<std::string, std::string>> env;  // in order
  std::vector<std::string> entrypoint, cmd;
  std::string user, workdir;
  std::map<std::string, std::string> labels;
  std::string created;  // RFC 3339, from the inputs
};

std::string configJson(const ImageConfig& config, const std::vector<std::string>& diffIds);
std::string manifestJson(const Descriptor& config, const std::vector<Descriptor>& layers);

// Blobs under DIR/sha256/<hex>, written once (temp file, fsync, rename) and shared by every
// image. Thread-safe: concurrent writers of one blob write the same bytes.
// Content-addressed blobs in <dir>/sha256/<hex>. A blob's modification time is when it was last
// written or reused: the garbage collector removes only unreferenced blobs older than its grace
// period, and reuse (put() of existing bytes, a layer from the cache) refreshes the time under
// the same lock as removal, so a blob being reused is never removed under a new image.
// Thread-safe.
class BlobStore {
 public:
  explicit BlobStore(std::string dir) : dir_(std::move(dir)) {}
  Result<Descriptor> put(std::string_view bytes, const std::string& mediaType);
  bool has(const std::string& digest) const;
  Result<std::string> read(const std::string& digest) const;
  std::string pathOf(const std::string& digest) const;
  const std::string& dir() const { return dir_; }

  // Marks the blob as just used; false when it is not there (any more).
  bool refresh(const std::string& digest);
  // Removes the blob if it was last written or used at least `age` ago; its size when removed.
  std::optional<uint64_t> removeIfOlder(const std::string& digest, std::chrono::seconds age);

  // What was written from some inputs, by a digest of everything that decides the bytes
  // (line_image.cc: a layer from its packages, a whole line image from all its inputs), so that
  // the same inputs are not written twice. In memory, bounded. Use one only after refresh()
  // succeeded for each of its blobs.
  struct Derived {
    std::vector<Descriptor> blobs;
    std::string note;  // what else goes with them (a layer's diff id)
  };
  // `recent`, when given, tells whether the entry was found intact (markChecked) less than
  // recheckAfter() ago: its blobs were refreshed then, so the collector, which keeps a blob
  // for a grace period after its last use, cannot have taken them since.
  std::optional<Derived> derived(const std::string& key, bool* recent = nullptr) const;
  void remember(const std::string& key, Derived derived);
  void markChecked(const std::string& key);
  // 0 (the default): every use checks again. Keep it well below the collector's grace period.
  void setRecheckAfter(std::chrono::milliseconds after) { recheckAfter_ = after; }
  std::chrono::milliseconds recheckAfter() const { return recheckAfter_; }
  // refresh() of every blob; false when one is gone.
  bool refreshAll(const Derived& derived);

 private:
  struct Entry {
    Derived derived;
    std::chrono::steady_clock::time_point checked{};  // last found intact; never: epoch
  };
  std::string dir_;
  std::mutex reuseMutex_;  // refresh() against removeIfOlder()
  mutable std::mutex cacheMutex_;
  std::chrono::milliseconds recheckAfter_{0};
  std::map<std::string, Entry> derived_;
  std::deque<std::string> derivedOrder_;  // oldest first, for eviction
  static constexpr size_t kMaxDerived = 8192;
};

// Writes an OCI image layout in `dir` (oci-layout, index.json, blobs/sha256/...) holding each
// tagged manifest with everything it references, each as org.opencontainers.image.ref.name.
Status writeLayout(const BlobStore& blobs,
                   const std::vector<std::pair<std::string, Descriptor>>& taggedManifests,
                   const std::string& dir);

}  // namespace imaged::image
