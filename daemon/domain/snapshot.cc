#include "daemon/domain/snapshot.h"

#include <fcntl.h>
#include <unistd.h>

#include <capnp/message.h>
#include <capnp/serialize.h>
#include <openssl/evp.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <vector>

#include "schema/lists.h"
#include "store/codec.h"

namespace imaged::domain {

namespace {

namespace fs = std::filesystem;
using schema_lists::envOf;
using schema_lists::setEnv;
using schema_lists::setTexts;
using schema_lists::texts;

constexpr uint32_t kFormat = 1;

constexpr char kMagic[] = "imaged-snapshot\n";
constexpr size_t kMagicSize = sizeof kMagic - 1;
constexpr size_t kHeaderSize = kMagicSize + store::kHashSize;
// A snapshot of a few million images is a few GiB; anything larger is not ours.
constexpr uintmax_t kMaxSnapshotBytes = uintmax_t{16} << 30;

store::Hash sha256(kj::ArrayPtr<const kj::byte> bytes) {
  store::Hash out{};
  unsigned int len = 0;
  EVP_Digest(bytes.begin(), bytes.size(), out.data(), &len, EVP_sha256(), nullptr);
  return out;
}

std::string fileName(uint64_t sequence) {
  char name[64];
  std::snprintf(name, sizeof name, "projection-%020llu.snap",
                static_cast<unsigned long long>(sequence));
  return name;
}

// Snapshot files in `dir`, newest first, with the sequence their name gives.
std::vector<std::pair<uint64_t, fs::path>> listSnapshots(const std::string& dir) {
  std::vector<std::pair<uint64_t, fs::path>> out;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (name.size() != fileName(0).size() || !name.starts_with("projection-") ||
        !name.ends_with(".snap")) {
      continue;
    }
    const std::string digits = name.substr(11, 20);
    if (!std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '9'; })) {
      continue;
    }
    out.emplace_back(std::stoull(digits), entry.path());
  }
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
  return out;
}

Status writeAll(int fd, const void* data, size_t size, const std::string& path) {
  const auto* p = static_cast<const char*>(data);
  while (size > 0) {
    const ssize_t n = ::write(fd, p, size);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Error{"E_STORAGE", "writing " + path + ": " + std::strerror(errno)};
    p += n;
    size -= static_cast<size_t>(n);
  }
  return Ok{};
}

schema::SnapshotBuildStatus toSnapshot(BuildStatus s) {
  switch (s) {
    case BuildStatus::kInProgress:
      return schema::SnapshotBuildStatus::IN_PROGRESS;
    case BuildStatus::kSucceeded:
      return schema::SnapshotBuildStatus::SUCCEEDED;
    case BuildStatus::kFailed:
      return schema::SnapshotBuildStatus::FAILED;
    case BuildStatus::kCancelled:
      return schema::SnapshotBuildStatus::CANCELLED;
  }
  return schema::SnapshotBuildStatus::IN_PROGRESS;
}

BuildStatus fromSnapshot(schema::SnapshotBuildStatus s) {
  switch (s) {
    case schema::SnapshotBuildStatus::IN_PROGRESS:
      return BuildStatus::kInProgress;
    case schema::SnapshotBuildStatus::SUCCEEDED:
      return BuildStatus::kSucceeded;
    case schema::SnapshotBuildStatus::FAILED:
      return BuildStatus::kFailed;
    case schema::SnapshotBuildStatus::CANCELLED:
      return BuildStatus::kCancelled;
  }
  KJ_FAIL_REQUIRE("unknown build status in the snapshot");
}

schema::SnapshotLineStatus toSnapshot(LineStatus s) {
  switch (s) {
    case LineStatus::kPending:
      return schema::SnapshotLineStatus::PENDING;
    case LineStatus::kBuilt:
      return schema::SnapshotLineStatus::BUILT;
    case LineStatus::kSkipped:
      return schema::SnapshotLineStatus::SKIPPED;
  }
  return schema::SnapshotLineStatus::PENDING;
}

LineStatus fromSnapshot(schema::SnapshotLineStatus s) {
  switch (s) {
    case schema::SnapshotLineStatus::PENDING:
      return LineStatus::kPending;
    case schema::SnapshotLineStatus::BUILT:
      return LineStatus::kBuilt;
    case schema::SnapshotLineStatus::SKIPPED:
      return LineStatus::kSkipped;
  }
  KJ_FAIL_REQUIRE("unknown line status in the snapshot");
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Projection <-> ProjectionSnapshot

void Projection::save(schema::ProjectionSnapshot::Builder out) const {
  out.setFormat(kFormat);
  out.setSequence(lastSequence_);
  out.setLastTime(lastTime_);

  auto catalog = out.initCatalog();
  catalog.setDigest(catalog_.digest);
  catalog.setSource(catalog_.source);
  auto starters = catalog.initStarters(static_cast<unsigned>(catalog_.starters.size()));
  unsigned si = 0;
  for (const auto& [name, lines] : catalog_.starters) {
    auto s = starters[si++];
    s.setName(name);
    auto ls = s.initLines(static_cast<unsigned>(lines.size()));
    for (unsigned i = 0; i < lines.size(); ++i) {
      ls[i].setLine(lines[i].line);
      ls[i].setVersion(lines[i].version);
    }
  }

  // Package sets by index (1-based; 0 is "none"), in the order the set keeps them.
  std::map<const PackageSet*, uint32_t> setIndex;
  auto sets = out.initPackageSets(static_cast<unsigned>(packageSets_.size()));
  unsigned pi = 0;
  for (const PackageSet& set : packageSets_) {
    setTexts(sets.init(pi, static_cast<unsigned>(set.size())), set);
    setIndex[&set] = ++pi;
  }

  auto images = out.initImages(static_cast<unsigned>(streams_.size()));
  unsigned ii = 0;
  for (const auto& [streamId, image] : streams_) {
    auto im = images[ii++];
    im.setStreamId(image.streamId);
    im.setTenant(image.tenant.c_str());
    im.setName(image.name);
    im.setDescription(image.description);
    im.setStarter(image.starter.c_str());
    setTexts(im.initPackages(static_cast<unsigned>(image.packages.size())), image.packages);
    setEnv(im.initEnv(static_cast<unsigned>(image.env.size())), image.env.get());
    im.setVersion(image.version);
    im.setDeleted(image.deleted);
    im.setCreatedAt(image.createdAt);
    auto builds = im.initBuilds(static_cast<unsigned>(image.builds.size()));
    for (unsigned bi = 0; bi < image.builds.size(); ++bi) {
      const BuildState& b = image.builds[bi];
      auto sb = builds[bi];
      sb.setId(b.id);
      sb.setNumber(b.number);
      sb.setReason(b.reason);
      sb.setStatus(toSnapshot(b.status));
      sb.setStarted(b.started);
      sb.setCatalogDigest(cstr(b.catalogDigest));
      sb.setRequestedAt(b.requestedAt);
      sb.setEndedAt(b.endedAt);
      sb.setErrorCode(cstr(b.errorCode));
      sb.setErrorMessage(cstr(b.errorMessage));
      auto lines = sb.initLines(static_cast<unsigned>(b.lines.size()));
      for (unsigned li = 0; li < b.lines.size(); ++li) {
        const LineState& l = b.lines[li];
        auto sl = lines[li];
        sl.setLine(cstr(l.line));
        sl.setVersion(cstr(l.version));
        sl.setStatus(toSnapshot(l.status));
        auto found = setIndex.find(l.packages);
        sl.setPackageSet(found == setIndex.end() ? 0 : found->second);
        sl.setCode(cstr(l.code()));
        sl.setReason(cstr(l.reason()));
        sl.setDigest(l.digest().c_str());
        sl.setSbomDigest(l.sbomDigest().c_str());
      }
    }
  }

  auto incarnations = out.initIncarnations(static_cast<unsigned>(names_.size()));
  unsigned ni = 0;
  for (const auto& [k, n] : names_) {
    incarnations[ni].setKey(std::string(k.first) + "/" + std::string(k.second));
    incarnations[ni++].setCount(n.incarnations);
  }
  auto createdBy = out.initCreatedBy(static_cast<unsigned>(createdBy_.size()));
  unsigned ci = 0;
  for (const auto& [k, stream] : createdBy_) {
    createdBy[ci].setKey(k);
    createdBy[ci++].setStreamId(stream);
  }
}

Projection Projection::load(schema::ProjectionSnapshot::Reader in) {
  KJ_REQUIRE(in.getFormat() == kFormat, "unknown snapshot format", in.getFormat());
  Projection p;
  p.lastSequence_ = in.getSequence();
  p.lastTime_ = in.getLastTime();

  auto catalog = in.getCatalog();
  p.catalog_.digest = catalog.getDigest();
  p.catalog_.source = catalog.getSource();
  for (auto s : catalog.getStarters()) {
    auto& lines = p.catalog_.starters[s.getName()];
    for (auto l : s.getLines()) lines.push_back({l.getLine(), l.getVersion()});
  }

  std::vector<const PackageSet*> sets;
  for (auto s : in.getPackageSets()) {
    sets.push_back(&*p.packageSets_.insert(texts(s)).first);
  }

  for (auto im : in.getImages()) {
    ImageState image;
    image.streamId = im.getStreamId();
    image.tenant = p.intern(im.getTenant().cStr());
    image.name = im.getName();
    image.description = im.getDescription();
    image.starter = p.intern(im.getStarter().cStr());
    image.packages = p.intern(texts(im.getPackages()));
    image.env = p.intern(envOf<EnvVar>(im.getEnv()));
    image.version = im.getVersion();
    image.deleted = im.getDeleted();
    image.createdAt = im.getCreatedAt();
    for (auto sb : im.getBuilds()) {
      BuildState b;
      b.id = sb.getId();
      b.number = sb.getNumber();
      b.reason = sb.getReason();
      b.status = fromSnapshot(sb.getStatus());
      b.started = sb.getStarted();
      b.catalogDigest = p.intern(sb.getCatalogDigest().cStr());
      b.requestedAt = sb.getRequestedAt();
      b.endedAt = sb.getEndedAt();
      b.errorCode = p.intern(sb.getErrorCode().cStr());
      b.errorMessage = p.intern(sb.getErrorMessage().cStr());
      for (auto sl : sb.getLines()) {
        LineState l;
        l.line = p.intern(sl.getLine().cStr());
        l.version = p.intern(sl.getVersion().cStr());
        l.status = fromSnapshot(sl.getStatus());
        const uint32_t set = sl.getPackageSet();
        KJ_REQUIRE(set <= sets.size(), "a line refers to a package set the snapshot lacks");
        if (set > 0) l.packages = sets[set - 1];
        if (l.status == LineStatus::kSkipped) {
          l.setSkipped(p.intern(sl.getCode().cStr()), p.intern(sl.getReason().cStr()));
        } else if (l.status == LineStatus::kBuilt) {
          l.setBuilt(p.intern(sl.getDigest().cStr()), p.intern(sl.getSbomDigest().cStr()));
        }
        b.lines.push_back(std::move(l));
      }
      image.builds.push_back(std::move(b));
    }
    KJ_REQUIRE(p.streams_.count(image.streamId) == 0,
               "an image stream appears twice in the snapshot");
    ImageState& stored = p.store(std::move(image));
    Name& n = p.nameOf(stored);
    if (!stored.deleted) {
      KJ_REQUIRE(n.live == nullptr, "two live images have one name in the snapshot");
      n.live = &stored;
    }
  }
  for (auto n : in.getIncarnations()) {
    // Saved as "tenant/name"; every name with incarnations has a stored image.
    const std::string_view key(n.getKey().cStr());
    Name* name = nullptr;
    for (size_t slash = key.find('/'); !name && slash != std::string_view::npos;
         slash = key.find('/', slash + 1)) {
      auto it = p.names_.find(NameKey(key.substr(0, slash), key.substr(slash + 1)));
      if (it != p.names_.end()) name = &it->second;
    }
    KJ_REQUIRE(name != nullptr, "an image name of the snapshot has no image");
    name->incarnations = n.getCount();
  }
  for (auto c : in.getCreatedBy()) {
    KJ_REQUIRE(p.streams_.count(std::string_view(c.getStreamId().cStr())) == 1,
               "an idempotency key names an image the snapshot lacks");
    p.createdBy_[c.getKey()] = c.getStreamId();
  }
  return p;
}

// ---------------------------------------------------------------------------------------------
// Files

namespace {

void fill(capnp::MallocMessageBuilder& builder, const Projection& projection,
          const store::Hash& eventHash) {
  auto root = builder.initRoot<schema::ProjectionSnapshot>();
  projection.save(root);
  root.setEventHash(kj::arrayPtr(eventHash.data(), eventHash.size()));
}

}  // namespace

Status applyLog(const store::ReadTxn& txn, Projection& state, uint64_t until, int64_t maxTime) {
  return txn.forEach(state.lastSequence() + 1, [&](const store::EventRef& e) {
    if (e.sequence() > until) return false;
    capnp::FlatArrayMessageReader reader(e.words());
    auto event = reader.getRoot<schema::Event>();
    if (event.getTime() > maxTime) return false;
    state.apply(event);
    return true;
  });
}

kj::Array<capnp::word> encodeSnapshot(const Projection& projection, const store::Hash& eventHash) {
  capnp::MallocMessageBuilder builder;
  fill(builder, projection, eventHash);
  return capnp::messageToFlatArray(builder);
}

Status writeSnapshot(const std::string& dir, const Projection& projection,
                     const store::Hash& eventHash, size_t keep) {
  capnp::MallocMessageBuilder builder;
  fill(builder, projection, eventHash);
  // The flat form is the segment table, then the segments: written straight from the builder
  // (no flat copy of a possibly large message) and hashed on the way.
  auto segments = builder.getSegmentsForOutput();
  std::vector<uint32_t> table((segments.size() + 2) & ~size_t{1}, 0);
  table[0] = static_cast<uint32_t>(segments.size() - 1);
  for (size_t i = 0; i < segments.size(); ++i) {
    table[i + 1] = static_cast<uint32_t>(segments[i].size());
  }

  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return Error{"E_STORAGE", "creating " + dir + ": " + ec.message()};
  const std::string path = (fs::path(dir) / fileName(projection.lastSequence())).string();
  const std::string temp = path + ".tmp";
  const int fd = ::open(temp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return Error{"E_STORAGE", "creating " + temp + ": " + std::strerror(errno)};
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  EVP_DigestInit_ex(ctx, EVP_sha256(), nullptr);
  const uint8_t zeros[store::kHashSize] = {};
  Status s = writeAll(fd, kMagic, kMagicSize, temp);
  if (s.ok()) s = writeAll(fd, zeros, sizeof zeros, temp);  // the checksum, once known
  if (s.ok()) {
    EVP_DigestUpdate(ctx, table.data(), table.size() * sizeof(uint32_t));
    s = writeAll(fd, table.data(), table.size() * sizeof(uint32_t), temp);
  }
  for (size_t i = 0; s.ok() && i < segments.size(); ++i) {
    const auto bytes = segments[i].asBytes();
    EVP_DigestUpdate(ctx, bytes.begin(), bytes.size());
    s = writeAll(fd, bytes.begin(), bytes.size(), temp);
  }
  store::Hash sum{};
  unsigned int len = 0;
  EVP_DigestFinal_ex(ctx, sum.data(), &len);
  EVP_MD_CTX_free(ctx);
  if (s.ok() &&
      ::pwrite(fd, sum.data(), sum.size(), kMagicSize) != static_cast<ssize_t>(sum.size())) {
    s = Error{"E_STORAGE", "writing " + temp + ": " + std::strerror(errno)};
  }
  if (s.ok() && ::fsync(fd) != 0) {
    s = Error{"E_STORAGE", "syncing " + temp + ": " + std::strerror(errno)};
  }
  ::close(fd);
  if (s.ok() && ::rename(temp.c_str(), path.c_str()) != 0) {
    s = Error{"E_STORAGE", "renaming " + temp + ": " + std::strerror(errno)};
  }
  if (!s.ok()) {
    ::unlink(temp.c_str());
    return s;
  }
  if (const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC); dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
  auto all = listSnapshots(dir);
  for (size_t i = keep; i < all.size(); ++i) fs::remove(all[i].second, ec);
  return Ok{};
}

Result<store::Hash> eventHashAt(const store::ReadTxn& txn, uint64_t sequence) {
  auto stored = txn.get(sequence);
  if (!stored.ok()) return stored.error();
  auto offset = store::locateHash(stored->words.asPtr());
  if (!offset.ok()) return offset.error();
  store::Hash hash{};
  std::memcpy(hash.data(), stored->words.asBytes().begin() + *offset, hash.size());
  return hash;
}

namespace {

// Reads and checks one snapshot file; the reason when it cannot be used.
Result<Projection> readSnapshot(const fs::path& path, uint64_t sequence,
                                const store::ReadTxn& txn) {
  std::error_code ec;
  const uintmax_t size = fs::file_size(path, ec);
  if (ec) return Error{"E_SNAPSHOT", "cannot read it: " + ec.message()};
  if (size < kHeaderSize + sizeof(capnp::word) || size > kMaxSnapshotBytes ||
      (size - kHeaderSize) % sizeof(capnp::word) != 0) {
    return Error{"E_SNAPSHOT", "it is not a snapshot (" + std::to_string(size) + " bytes)"};
  }
  std::ifstream in(path, std::ios::binary);
  char header[kHeaderSize];
  auto words = kj::heapArray<capnp::word>((size - kHeaderSize) / sizeof(capnp::word));
  if (!in.read(header, kHeaderSize) ||
      !in.read(reinterpret_cast<char*>(words.begin()),
               static_cast<std::streamsize>(words.asBytes().size()))) {
    return Error{"E_SNAPSHOT", "cannot read it"};
  }
  if (std::memcmp(header, kMagic, kMagicSize) != 0) {
    return Error{"E_SNAPSHOT", "it is not a snapshot (no header)"};
  }
  const store::Hash sum = sha256(words.asBytes());
  if (std::memcmp(sum.data(), header + kMagicSize, sum.size()) != 0) {
    return Error{"E_SNAPSHOT", "its checksum does not match its contents (damaged)"};
  }
  try {
    capnp::ReaderOptions limits;
    limits.traversalLimitInWords = words.size() * 4 + 1024;
    capnp::FlatArrayMessageReader reader(words, limits);
    auto root = reader.getRoot<schema::ProjectionSnapshot>();
    if (root.getFormat() != kFormat) {
      return Error{"E_SNAPSHOT", "it has format " + std::to_string(root.getFormat()) +
                                     ", this version reads format " + std::to_string(kFormat)};
    }
    if (root.getSequence() != sequence) {
      return Error{"E_SNAPSHOT", "its name says sequence " + std::to_string(sequence) +
                                     " but it holds " + std::to_string(root.getSequence())};
    }
    if (sequence > txn.lastSequence()) {
      return Error{"E_SNAPSHOT", "it is at sequence " + std::to_string(sequence) +
                                     " but the log ends at " + std::to_string(txn.lastSequence())};
    }
    auto logHash = eventHashAt(txn, sequence);
    if (!logHash.ok()) {
      return Error{"E_SNAPSHOT", "the log's event " + std::to_string(sequence) +
                                     " cannot be read: " + logHash.error().message};
    }
    auto recorded = root.getEventHash();
    if (recorded.size() != logHash->size() ||
        std::memcmp(recorded.begin(), logHash->data(), logHash->size()) != 0) {
      return Error{"E_SNAPSHOT", "it does not match the log: event " + std::to_string(sequence) +
                                     " has hash " + store::toHex(*logHash) +
                                     " in the log, another in the snapshot"};
    }
    return Projection::load(root);
  } catch (const kj::Exception& e) {
    return Error{"E_SNAPSHOT", std::string("it does not decode: ") + e.getDescription().cStr()};
  }
}

}  // namespace

std::optional<LoadedSnapshot> loadSnapshot(const std::string& dir, const store::ReadTxn& txn,
                                           uint64_t maxSequence, int64_t maxTime,
                                           const std::function<void(const std::string&)>& warn) {
  for (const auto& [sequence, path] : listSnapshots(dir)) {
    if (sequence > maxSequence) continue;
    auto loaded = readSnapshot(path, sequence, txn);
    if (!loaded.ok()) {
      warn("snapshot " + path.string() + " ignored: " + loaded.error().message);
      continue;
    }
    if (loaded->lastTime() > maxTime) continue;
    return LoadedSnapshot{std::move(loaded).value(), path.string()};
  }
  return std::nullopt;
}

void removeSnapshotLeftovers(const std::string& dir) {
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (name.starts_with("projection-") && name.ends_with(".snap.tmp"))
      fs::remove(entry.path(), ec);
  }
}

std::vector<SnapshotCheck> checkSnapshots(const std::string& dir, const store::ReadTxn& txn) {
  std::vector<SnapshotCheck> out;
  for (const auto& [sequence, path] : listSnapshots(dir)) {
    auto loaded = readSnapshot(path, sequence, txn);
    out.push_back({path.string(), sequence, loaded.ok() ? Status(Ok{}) : Status(loaded.error())});
  }
  return out;
}

Result<uint64_t> takeSnapshot(const std::string& dir, const store::EventLog& log, uint64_t sequence,
                              const std::function<void(const std::string&)>& warn) {
  Projection state;
  {
    auto txn = log.read();
    if (!txn.ok()) return txn.error();
    if (auto loaded = loadSnapshot(dir, **txn, sequence, INT64_MAX, warn)) {
      state = std::move(loaded->projection);
    }
  }
  // The events in slices, each in a read transaction of its own: a long one would hold off the
  // writer's map growth (and pin old pages) for the whole replay.
  constexpr uint64_t kSlice = 50'000;
  store::Hash hash{};
  while (true) {
    auto txn = log.read();
    if (!txn.ok()) return txn.error();
    const uint64_t until = std::min(sequence, state.lastSequence() + kSlice);
    if (auto s = applyLog(**txn, state, until); !s.ok()) return s.error();
    if (state.lastSequence() == sequence) {
      auto h = eventHashAt(**txn, sequence);
      if (!h.ok()) return h.error();
      hash = *h;
      break;
    }
    if (state.lastSequence() != until) {
      return Error{"E_NOT_FOUND", "the log has no event " + std::to_string(sequence)};
    }
  }  // no read transaction during the (slow) write
  if (auto s = writeSnapshot(dir, state, hash); !s.ok()) return s.error();
  return sequence;
}

}  // namespace imaged::domain
