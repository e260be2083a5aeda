// OCI image pieces, written reproducibly: a layer (tar + gzip) from package files, the image
// config, the manifest, and a content-addressed blob store. The same inputs give the same bytes:
// entries sorted by path, fixed times, owners as in the packages, gzip headers without time or
// name, JSON with sorted keys.
#pragma once

#include <cstdint>
#include <map>
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
class BlobStore {
 public:
  explicit BlobStore(std::string dir) : dir_(std::move(dir)) {}
  Result<Descriptor> put(std::string_view bytes, const std::string& mediaType);
  bool has(const std::string& digest) const;
  Result<std::string> read(const std::string& digest) const;
  std::string pathOf(const std::string& digest) const;
  const std::string& dir() const { return dir_; }

 private:
  std::string dir_;
};

// Writes an OCI image layout in `dir` (oci-layout, index.json, blobs/sha256/...) holding each
// tagged manifest with everything it references, each as org.opencontainers.image.ref.name.
Status writeLayout(const BlobStore& blobs,
                   const std::vector<std::pair<std::string, Descriptor>>& taggedManifests,
                   const std::string& dir);

}  // namespace imaged::image
