// The projection: the state the daemon shows (galleries, images, builds, tags), as a pure
// function of the event log. apply() is deterministic, does no I/O and reads no clock, so the
// daemon at start-up, the daemon after each commit, and the audit tools replaying to any point
// all compute the same state from the same events.
#pragma once

#include <algorithm>
#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <tuple>
#include <vector>

#include "common/time.h"
#include "daemon/catalog/starter.h"
#include "daemon/catalog/tags.h"
#include "schema/events.capnp.h"
#include "schema/snapshot.capnp.h"

namespace imaged::domain {

using catalog::EnvVar;

enum class LineStatus : uint8_t { kPending, kBuilt, kSkipped };
enum class BuildStatus : uint8_t { kInProgress, kSucceeded, kFailed, kCancelled };

// A resolved package set (name=version, sorted). Identical sets are shared: most lines of most
// images resolve to one of a few sets, and the projection keeps one copy of each.
using PackageSet = std::vector<std::string>;

// Texts that many lines and builds share (line names, versions, codes, reasons, digests) are
// interned: one copy in the Projection, an 8-byte handle everywhere else, which reads as a
// string_view and, for Cap'n Proto setters, as a C string.
class Text {
 public:
  Text() = default;
  explicit Text(const std::string* s) : s_(s) {}
  operator std::string_view() const { return s_ ? std::string_view(*s_) : std::string_view(); }
  std::string_view view() const { return *this; }
  const char* c_str() const { return s_ ? s_->c_str() : ""; }
  std::string str() const { return s_ ? *s_ : std::string(); }
  bool empty() const { return !s_ || s_->empty(); }
  friend bool operator==(Text a, std::string_view b) { return a.view() == b; }
  friend bool operator==(Text a, Text b) { return a.view() == b.view(); }
  template <typename Stream>
  friend auto operator<<(Stream& out, Text t) -> decltype(out << std::string_view()) {
    return out << t.view();
  }

 private:
  const std::string* s_ = nullptr;
};

inline const char* cstr(std::string_view interned) {
  return interned.empty() ? "" : interned.data();
}
inline const char* cstr(Text t) {
  return t.c_str();
}

// A list that many images share (their added packages, their env): one copy in the
// Projection, a pointer in each image. Reads as the const std::vector<T> it points to.
template <typename T>
class SharedList {
 public:
  SharedList() = default;
  explicit SharedList(const std::vector<T>* list) : list_(list) {}
  const std::vector<T>& get() const { return list_ ? *list_ : none(); }
  operator const std::vector<T>&() const { return get(); }
  auto begin() const { return get().begin(); }
  auto end() const { return get().end(); }
  size_t size() const { return get().size(); }
  bool empty() const { return get().empty(); }
  const T& operator[](size_t i) const { return get()[i]; }
  friend bool operator==(const SharedList& a, const std::vector<T>& b) { return a.get() == b; }

 private:
  static const std::vector<T>& none() {
    static const std::vector<T> kNone;
    return kNone;
  }
  const std::vector<T>* list_ = nullptr;
};

struct LineState {
  Text line;
  Text version;
  LineStatus status = LineStatus::kPending;
  const PackageSet* packages = &kNoPackages;  // when built; owned by the Projection

  // A skipped line has a code and a reason, a built one the digests of its manifest and of its
  // SPDX SBOM (when written); the two pairs share their storage.
  Text code() const { return status == LineStatus::kSkipped ? first_ : Text(); }
  Text reason() const { return status == LineStatus::kSkipped ? second_ : Text(); }
  Text digest() const { return status == LineStatus::kBuilt ? first_ : Text(); }
  Text sbomDigest() const { return status == LineStatus::kBuilt ? second_ : Text(); }
  void setBuilt(Text digest, Text sbomDigest) {
    status = LineStatus::kBuilt;
    first_ = digest;
    second_ = sbomDigest;
  }
  void setSkipped(Text code, Text reason) {
    status = LineStatus::kSkipped;
    first_ = code;
    second_ = reason;
  }

  static const PackageSet kNoPackages;

 private:
  Text first_, second_;
};

struct BuildState {
  uint64_t id = 0;      // sequence number of its BuildRequested
  uint32_t number = 0;  // 1-based within the image
  schema::BuildReason reason = schema::BuildReason::CREATED;
  BuildStatus status = BuildStatus::kInProgress;
  bool started = false;  // BuildStarted recorded: `lines` and `catalogDigest` are set
  Text catalogDigest;    // requested against, then resolved against
  int64_t requestedAt = 0, endedAt = 0;
  std::vector<LineState> lines;
  Text errorCode, errorMessage;  // when failed or cancelled
};

struct ImageState {
  std::string streamId;
  Text tenant;  // interned: few tenants, many images
  std::string name, description;
  Text starter;  // interned
  SharedList<std::string> packages;
  SharedList<EnvVar> env;
  uint64_t version = 0;  // stream version: the last event's
  bool deleted = false;
  int64_t createdAt = 0;           // end of the first successful build; 0 before
  std::vector<BuildState> builds;  // oldest first

  const BuildState* latestBuild() const { return builds.empty() ? nullptr : &builds.back(); }
  const BuildState* latestSuccessfulBuild() const;
  BuildState* build(uint64_t id);
  // "in-progress", "created" or "failed": that of the latest build that was not cancelled.
  std::string status() const;
  // Tags of the latest successful build (PRODUCT.md rule 7).
  std::map<std::string, std::string> tags() const;
};

// The catalog as the log knows it: its digest and, per starter, the maintained lines with their
// production versions (what a rebuild on catalog change compares).
struct CatalogState {
  std::string digest;
  std::string source;
  std::map<std::string, std::vector<catalog::BuiltLine>> starters;
};

class Projection {
 public:
  Projection() = default;
  Projection(Projection&&) = default;
  Projection& operator=(Projection&&) = default;
  // Lines point into the projection's shared sets and texts: a copy would point into another.
  Projection(const Projection&) = delete;
  Projection& operator=(const Projection&) = delete;

  // Applies one event. Events must come in sequence order, each once; an event that does not
  // fit the state (a line result for a build that has ended, an event of an unknown kind) is
  // skipped, as a newer daemon's events are by an older projection.
  void apply(const schema::Event::Reader& event);

  uint64_t lastSequence() const { return lastSequence_; }
  int64_t lastTime() const { return lastTime_; }

  // The tenant's live image of that name, or null.
  const ImageState* find(const std::string& tenant, const std::string& name) const;
  const ImageState* byStream(const std::string& streamId) const;
  // The tenant's live images, by name.
  std::vector<const ImageState*> gallery(const std::string& tenant) const;
  // Every live image, across tenants.
  std::vector<const ImageState*> liveImages() const;
  // The stream id the next image of that tenant and name gets ("image/<tenant>/<name>/<n>").
  std::string nextStreamId(const std::string& tenant, const std::string& name) const;
  // The last image ever created with that tenant and name (live or deleted), or null.
  const ImageState* lastOfName(const std::string& tenant, const std::string& name) const;
  const CatalogState& catalog() const { return catalog_; }
  // The image an append with this idempotency key created (the key as stored), or null.
  const ImageState* byIdempotencyKey(const std::string& key) const;
  // Every tenant that has (or had) an image, sorted.
  std::vector<std::string> tenants() const;

  // The whole state into a snapshot message and back (daemon/domain/snapshot.h writes and
  // checks the files). load() throws kj::Exception on a message that does not fit the schema.
  void save(schema::ProjectionSnapshot::Builder out) const;
  static Projection load(schema::ProjectionSnapshot::Reader in);

 private:
  void applyToImage(ImageState& image, const schema::Event::Reader& event);
  // Stores an image under a stream id not stored yet; returns the stored one.
  ImageState& store(ImageState image);
  // The name entry of a stored image (created with no incarnations when new).
  struct Name;
  Name& nameOf(const ImageState& stored);

  // Keys are views of what the stored images hold (their stream id, interned tenant and name),
  // so that each is held once; nothing is ever removed from streams_, so they stay valid.
  using NameKey = std::pair<std::string_view, std::string_view>;  // tenant, name
  uint64_t lastSequence_ = 0;
  int64_t lastTime_ = 0;
  std::map<std::string_view, ImageState> streams_;  // by stream id, deleted ones included
  struct Name {
    uint32_t incarnations = 0;         // images ever created with the name
    const ImageState* live = nullptr;  // the live one, in streams_
  };
  std::map<NameKey, Name> names_;                 // by tenant, then name
  std::map<std::string, std::string> createdBy_;  // idempotency key -> stream id
  std::set<PackageSet> packageSets_;              // every distinct resolved set, shared
  std::set<std::string, std::less<>> texts_;      // digests and reasons, shared

  Text intern(std::string_view text) { return Text(&*texts_.emplace(text).first); }
  SharedList<std::string> intern(std::vector<std::string> list) {
    return SharedList<std::string>(&*textLists_.insert(std::move(list)).first);
  }
  SharedList<EnvVar> intern(std::vector<EnvVar> list) {
    return SharedList<EnvVar>(&*envLists_.insert(std::move(list)).first);
  }
  struct EnvListLess {
    bool operator()(const std::vector<EnvVar>& a, const std::vector<EnvVar>& b) const {
      return std::lexicographical_compare(
          a.begin(), a.end(), b.begin(), b.end(), [](const EnvVar& x, const EnvVar& y) {
            return std::tie(x.key, x.value) < std::tie(y.key, y.value);
          });
    }
  };
  std::set<std::vector<std::string>> textLists_;         // images' added packages, shared
  std::set<std::vector<EnvVar>, EnvListLess> envLists_;  // images' env, shared
  CatalogState catalog_;
};

using imaged::formatTime;
using imaged::parseTime;

const char* toString(BuildStatus s);
const char* toString(LineStatus s);
const char* toString(schema::BuildReason r);

}  // namespace imaged::domain
