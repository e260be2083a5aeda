// The client library: a thin, synchronous C++ API over imaged's RPC interface. Every call
// returns its result or an Error with a stable code: the daemon's (E_NOT_FOUND, E_ENV_*, ...),
// or E_UNAVAILABLE when the daemon cannot be reached or the connection breaks, or E_TIMEOUT.
//
// A Client is one connection; use it from one thread.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/result.h"

namespace imaged::client {

struct EnvVar {
  std::string key, value;
};

struct Line {
  std::string line, version, status;  // status: built, skipped, pending
  std::vector<std::string> packages;
  std::string code, reason, digest;
};

struct Tag {
  std::string tag, version, digest;
};

struct Build {
  uint64_t id = 0;
  uint32_t number = 0;
  std::string reason, status, requestedAt, endedAt, catalogDigest;
  std::vector<Line> lines;
  std::optional<Error> error;
};

struct Image {
  std::string name, fullName, tenant, description, starter, status, createdAt;
  std::vector<std::string> packages;
  std::vector<EnvVar> env;
  uint64_t version = 0;
  std::vector<Line> lines;
  std::vector<Tag> tags;
  std::optional<Error> error;
  std::vector<Build> builds;
};

struct StarterSummary {
  std::string name, description;
  std::vector<std::string> lines;
};

struct StarterVersion {
  std::string version, published;
  std::vector<std::string> packages;
};

struct StarterLine {
  std::string line, production;
  bool maintained = true;
  std::vector<EnvVar> environment;
  std::vector<StarterVersion> versions;
  std::vector<std::string> licenses;
};

struct Starter {
  std::string name, description, user, workdir;
  std::vector<EnvVar> environment;
  std::vector<std::string> entrypoint, cmd;
  std::vector<StarterLine> lines;
};

struct PackageHit {
  std::string name, version, description;
  std::vector<std::string> versions;
};

struct TagMove {
  std::string time;
  uint64_t sequence = 0;
  std::string fromVersion, fromDigest, toVersion, toDigest;  // "" when absent
  uint64_t buildId = 0;
  std::string reason;
};

struct HistoryEntry {
  uint64_t sequence = 0, version = 0;
  std::string time, kind, summary, actor;
};

struct CatalogInfo {
  std::string digest, source;
  uint32_t starters = 0, packages = 0;
  std::vector<std::string> problems;
};

struct ImageSpec {
  std::string name, description, starter;
  std::vector<std::string> packages;
  std::vector<EnvVar> env;
};

struct ImageEdit {
  std::vector<std::string> addPackages, removePackages;
  std::vector<EnvVar> setEnv;
  std::vector<std::string> unsetEnv;
  std::optional<std::string> description;
  // The starter and name of an image are fixed: setting either is refused (E_IMMUTABLE_FIELD).
  std::optional<std::string> starter, name;
};

class Client {
 public:
  // Connects to the daemon's socket: `socketPath`, else $IMAGED_SOCKET, else the default
  // ($XDG_RUNTIME_DIR/imaged.sock; /run/imaged/imaged.sock for root). E_UNAVAILABLE when no
  // daemon answers there. `timeout` bounds every call (E_TIMEOUT).
  static Result<std::unique_ptr<Client>> connect(
      const std::string& socketPath = "",
      std::chrono::milliseconds timeout = std::chrono::seconds(30));
  static std::string defaultSocket();
  ~Client();

  Result<std::vector<StarterSummary>> starters();
  Result<Starter> starter(const std::string& name);
  Result<std::vector<PackageHit>> search(const std::string& query, uint32_t limit);
  Result<std::vector<Line>> preview(const ImageSpec& spec);
  // A retry with the same key returns the first result; an empty key gets a fresh random one.
  Result<Image> create(const ImageSpec& spec, const std::string& idempotencyKey = "");
  Result<Image> get(const std::string& name, const std::string& atTime = "");
  Result<std::vector<Image>> list();
  Result<Image> edit(const std::string& name, const ImageEdit& edit, uint64_t expectedVersion = 0);
  Result<Image> rebuild(const std::string& name, uint64_t expectedVersion = 0);
  Status remove(const std::string& name, uint64_t expectedVersion = 0);
  Result<std::vector<HistoryEntry>> history(const std::string& name);
  // Every move of one of the image's tags, oldest first.
  Result<std::vector<TagMove>> tagHistory(const std::string& name, const std::string& tag);
  // Follows the image's current build live: `onLine` for each line result as it is recorded;
  // returns the image once the build has ended (at once when none is running). Waits at most
  // `timeout` (E_TIMEOUT).
  Result<Image> watch(const std::string& name, const std::function<void(const Line&)>& onLine,
                      std::chrono::milliseconds timeout);
  // Raw events (flat Cap'n Proto Event messages) from sequence `from`; for the daemon's own uid.
  Result<std::vector<std::string>> readEvents(uint64_t from, uint32_t limit);
  // Every event from sequence `from` on, in order, then each new one as it is committed, in
  // batches to `onEvents` (each a flat Cap'n Proto Event message), until `onEvents` returns
  // false (Ok) or `timeout` passes (E_TIMEOUT). For the daemon's own uid.
  Status subscribe(uint64_t from,
                   const std::function<bool(const std::vector<std::string>&)>& onEvents,
                   std::chrono::milliseconds timeout);
  // Writes the image as an OCI image layout in `dir` (oci-layout, index.json with each tag as
  // org.opencontainers.image.ref.name, blobs/sha256/...): all its tags, or those named. Blobs are
  // fetched from the daemon and checked against their digests.
  Result<std::vector<Tag>> exportImage(const std::string& name, const std::string& dir,
                                       const std::vector<std::string>& tags);
  struct Sbom {
    std::string line, version, spdx;  // spdx: the SPDX 2.3 JSON document
  };
  // The SBOM of a built line (`line` empty: the one `latest` points at).
  Result<Sbom> sbom(const std::string& name, const std::string& line);
  Result<CatalogInfo> reloadCatalog();
  Result<CatalogInfo> catalogInfo();

  // Low-level: a new random idempotency key.
  static std::string newIdempotencyKey();

 private:
  struct Impl;
  explicit Client(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace imaged::client
