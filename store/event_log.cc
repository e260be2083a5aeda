#include "store/event_log.h"

#include <capnp/message.h>
#include <capnp/serialize.h>
#include <kj/io.h>
#include <lmdb.h>

#include <pthread.h>
#include <sys/resource.h>
#include <sys/statvfs.h>
#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <future>
#include <optional>
#include <unordered_map>
#include <utility>

namespace imaged::store {
namespace {

// Names of the LMDB databases and meta keys; docs/storage.md describes them.
constexpr char kEventsDb[] = "events";
constexpr char kStreamsDb[] = "streams";
constexpr char kIdempotencyDb[] = "idempotency";
constexpr char kMetaDb[] = "meta";
constexpr std::string_view kMetaFormat = "format";
constexpr std::string_view kMetaHead = "head";  // formats 1-2: u64 BE sequence ‖ hash
// Format 3: the head (u64 BE sequence ‖ 32-byte hash) is a key of LMDB's main database, whose
// page every commit rewrites anyway (it holds the roots of the named databases): one page less
// to write and fsync per commit than a key of `meta`.
constexpr std::string_view kMainHead = "imaged.head";
constexpr std::string_view kMetaIndexed = "indexed";  // u64 BE: events up to here are in streams

// An LMDB failure while staging a request (the stager fails the request) or storing a batch
// (the writer aborts the transaction).
struct LmdbFailure {
  int rc;
};

void check(int rc) {
  if (rc != MDB_SUCCESS) throw LmdbFailure{rc};
}

MDB_val val(const void* data, size_t size) {
  return MDB_val{size, const_cast<void*>(data)};
}
MDB_val val(std::string_view s) {
  return val(s.data(), s.size());
}

Error storageError(int rc, std::string_view what) {
  std::string message = std::string(what) + ": " + mdb_strerror(rc);
  if (rc == ENOSPC || rc == EFBIG || rc == EDQUOT) {
    return Error{"E_STORAGE_FULL", message + " (no room left for the log; free disk space)"};
  }
  if (rc == MDB_PANIC) {
    return Error{"E_STORAGE", message + " (the store hit a fatal I/O error; restart the process)"};
  }
  return Error{"E_STORAGE", message};
}

bool isAligned(const void* p) {
  return reinterpret_cast<uintptr_t>(p) % sizeof(capnp::word) == 0;
}

// A damaged `streams` entry met while staging a request; the stager fails the request with it.
struct CorruptIndex {
  std::string message;
};

// One `streams` entry: versions firstVersion .. firstVersion + count - 1 of a stream, stored at
// sequences firstSequence .. firstSequence + count - 1.
struct StreamRun {
  uint64_t firstVersion = 0;
  uint64_t firstSequence = 0;
  uint64_t count = 0;
  uint64_t lastVersion() const { return firstVersion + count - 1; }
};

// Decodes the `streams` entry under the cursor when it belongs to `streamId`; nullopt when the
// key is another stream's. Throws CorruptIndex for a value of the wrong size.
std::optional<StreamRun> decodeRun(const MDB_val& key, const MDB_val& data,
                                   std::string_view streamId) {
  const size_t prefix = streamId.size() + 1;
  const auto* k = static_cast<const char*>(key.mv_data);
  if (key.mv_size != prefix + 8 || std::memcmp(k, streamId.data(), streamId.size()) != 0 ||
      k[streamId.size()] != '\0') {
    return std::nullopt;
  }
  StreamRun run;
  run.firstVersion = decodeU64(k + prefix);
  if (data.mv_size == 8) {  // one event (every entry of a format-1 store)
    run.firstSequence = decodeU64(data.mv_data);
    run.count = 1;
  } else if (data.mv_size == 16) {
    run.firstSequence = decodeU64(data.mv_data);
    run.count = decodeU64(static_cast<const char*>(data.mv_data) + 8);
  }
  if (run.count == 0 || run.firstVersion == 0 || run.firstSequence == 0) {
    throw CorruptIndex{"a streams entry of " + std::string(streamId) + " is damaged"};
  }
  return run;
}

// The last version of `streamId` in the `streams` index of `txn` (0: none).
uint64_t lastIndexedVersion(MDB_txn* txn, MDB_dbi dbi, std::string_view streamId) {
  MDB_cursor* cursor = nullptr;
  check(mdb_cursor_open(txn, dbi, &cursor));
  std::unique_ptr<MDB_cursor, void (*)(MDB_cursor*)> guard(cursor, mdb_cursor_close);
  // Position after the stream's last possible key, then step back onto its last real one.
  std::string probe = streamKey(streamId, UINT64_MAX);
  MDB_val key = val(probe), data;
  int rc = mdb_cursor_get(cursor, &key, &data, MDB_SET_RANGE);
  if (rc == MDB_SUCCESS) {
    if (key.mv_size == probe.size() && std::memcmp(key.mv_data, probe.data(), probe.size()) == 0) {
      return UINT64_MAX;
    }
    rc = mdb_cursor_get(cursor, &key, &data, MDB_PREV);
  } else if (rc == MDB_NOTFOUND) {
    rc = mdb_cursor_get(cursor, &key, &data, MDB_LAST);
  }
  if (rc == MDB_NOTFOUND) return 0;
  check(rc);
  auto run = decodeRun(key, data, streamId);
  return run ? run->lastVersion() : 0;
}

struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};

}  // namespace

struct StreamTail {
  std::unordered_map<std::string, std::vector<StreamRun>, StringHash, std::equal_to<>> streams;
  uint64_t events = 0;

  // Versions `version` .. + count - 1 of the stream, at sequences from `sequence`.
  void add(std::string_view streamId, uint64_t version, uint64_t sequence, uint64_t count) {
    auto it = streams.find(streamId);
    if (it == streams.end()) it = streams.emplace(std::string(streamId), 0).first;
    auto& runs = it->second;
    if (!runs.empty() && runs.back().lastVersion() + 1 == version &&
        runs.back().firstSequence + runs.back().count == sequence) {
      runs.back().count += count;  // continues the last run
    } else {
      runs.push_back(StreamRun{version, sequence, count});
    }
    events += count;
  }

  void merge(const StreamTail& later) {
    for (const auto& [id, runs] : later.streams) {
      for (const auto& r : runs) add(id, r.firstVersion, r.firstSequence, r.count);
    }
  }

  const std::vector<StreamRun>* find(std::string_view streamId) const {
    auto it = streams.find(streamId);
    return it == streams.end() ? nullptr : &it->second;
  }

  uint64_t lastVersion(std::string_view streamId) const {
    const auto* runs = find(streamId);
    return runs ? runs->back().lastVersion() : 0;
  }

  void clear() {
    streams.clear();
    events = 0;
  }
};

namespace {

// Reads the stream and version of every event after `after` in `txn` into `out`. A record that
// does not decode is in no stream: it is left out here, as it cannot be read as an event
// anyway, and verify() names it. (Refusing the whole log for it would stop every append.)
Status collectTail(const ReadTxn& txn, uint64_t after, StreamTail* out) {
  return txn.forEach(after + 1, [&](const EventRef& e) {
    try {
      capnp::FlatArrayMessageReader reader(e.words());
      auto ev = reader.getRoot<schema::Event>();
      auto id = ev.getStreamId();
      const uint64_t version = ev.getStreamVersion();
      if (version > 0) out->add(std::string_view(id.begin(), id.size()), version, e.sequence(), 1);
    } catch (const kj::Exception&) {
    }
    return true;
  });
}

Status validate(const AppendRequest& r) {
  auto invalid = [](std::string m) { return Error{"E_INVALID_ARGUMENT", std::move(m)}; };
  if (r.streamId.empty()) return invalid("stream id is empty");
  if (r.streamId.size() > kMaxStreamIdBytes) return invalid("stream id is longer than 256 bytes");
  if (r.streamId.find('\0') != std::string::npos) return invalid("stream id contains a NUL byte");
  if (r.idempotencyKey.size() > kMaxIdempotencyKeyBytes) {
    return invalid("idempotency key is longer than 256 bytes");
  }
  if (r.payloads.empty()) return invalid("an append needs at least one event");
  return Ok{};
}

capnp::ReaderOptions payloadLimits() {
  capnp::ReaderOptions limits;
  limits.traversalLimitInWords = kMaxEventBytes / sizeof(capnp::word);
  return limits;
}

// Checks that every payload of the request decodes completely within the limits, so that
// copying it into an event cannot fail half-way through a request.
Status checkPayloads(const AppendRequest& r) {
  for (size_t i = 0; i < r.payloads.size(); ++i) {
    try {
      capnp::FlatArrayMessageReader reader(r.payloads[i].asPtr(), payloadLimits());
      reader.getRoot<schema::Payload>().totalSize();
    } catch (const kj::Exception& e) {
      return Error{"E_INVALID_ARGUMENT", "event " + std::to_string(i + 1) +
                                             " of the request does not decode as a Payload: " +
                                             e.getDescription().cStr()};
    }
  }
  return Ok{};
}

// Where the chain's two hashes lie in an encoded record (bytes from its start).
struct RecordLayout {
  size_t bytes = 0;
  size_t prevHashOffset = 0;
  size_t hashOffset = 0;
};

// Encodes one event record, the envelope and a copy of the payload, with `prevHash` and `hash`
// left zero for seal(). `reserve(bytes)` gives the memory the flat record is written to (LMDB's
// page, or a buffer). The request must have passed checkPayloads().
template <typename Reserve>
RecordLayout encodeEvent(const AppendRequest& r, const kj::Array<capnp::word>& payload,
                         uint64_t sequence, uint64_t version, int64_t time, Reserve&& reserve) {
  capnp::FlatArrayMessageReader payloadReader(payload.asPtr(), payloadLimits());

  // Sized so that the whole event fits in the first segment: one segment, one contiguous record.
  const size_t textBytes = r.streamId.size() + r.actor.tenant.size() + r.actor.client.size() +
                           r.correlationId.size() + r.idempotencyKey.size();
  capnp::MallocMessageBuilder builder(payload.size() + textBytes / 8 + 64);
  auto ev = builder.initRoot<schema::Event>();
  ev.setSequence(sequence);
  ev.setStreamVersion(version);
  ev.setTime(time);
  // The stream id and the payload first, so that they lie right after the root: a reader of the
  // envelope and the payload's kind touches the record's first two cache lines only.
  ev.setStreamId(r.streamId);
  ev.setPayload(payloadReader.getRoot<schema::Payload>());
  auto actor = ev.initActor();
  actor.setTenant(r.actor.tenant);
  actor.setUid(r.actor.uid);
  actor.setClient(r.actor.client);
  ev.setCorrelationId(r.correlationId);
  ev.setIdempotencyKey(r.idempotencyKey);
  const auto* prevField = reinterpret_cast<const uint8_t*>(ev.initPrevHash(kHashSize).begin());
  const auto* hashField = reinterpret_cast<const uint8_t*>(ev.initHash(kHashSize).begin());

  // The flat form: a segment table, then the segments in order. Find the hash fields in it.
  auto segments = builder.getSegmentsForOutput();
  RecordLayout layout;
  layout.bytes = (segments.size() / 2 + 1) * sizeof(capnp::word);  // the table
  layout.prevHashOffset = layout.hashOffset = SIZE_MAX;
  for (auto segment : segments) {
    const auto* begin = reinterpret_cast<const uint8_t*>(segment.begin());
    const size_t bytes = segment.size() * sizeof(capnp::word);
    if (hashField >= begin && hashField < begin + bytes) {
      layout.hashOffset = layout.bytes + (hashField - begin);
    }
    if (prevField >= begin && prevField < begin + bytes) {
      layout.prevHashOffset = layout.bytes + (prevField - begin);
    }
    layout.bytes += bytes;
  }
  KJ_REQUIRE(layout.hashOffset != SIZE_MAX && layout.prevHashOffset != SIZE_MAX,
             "a hash field is outside the message");

  uint8_t* out = reserve(layout.bytes);
  kj::ArrayOutputStream stream(kj::arrayPtr(out, layout.bytes));
  capnp::writeMessage(stream, segments);
  return layout;
}

// Chains an encoded record to `prev`: writes prev into its prevHash, then its own hash
// (SHA-256 of prev ‖ the record with hash zero) into its hash. Returns that hash.
Hash seal(uint8_t* record, const RecordLayout& layout, const Hash& prev) {
  std::memcpy(record + layout.prevHashOffset, prev.data(), kHashSize);
  const Hash hash = chainHash(prev, kj::arrayPtr(record, layout.bytes), layout.hashOffset);
  std::memcpy(record + layout.hashOffset, hash.data(), kHashSize);
  return hash;
}

// The events of one large request, built on a helper thread while the writer chains and stores
// the ones built before. Building the records and hashing them are most of an append's work;
// the chain makes the hashing sequential, but not the building (a record's hashes are written
// into it afterwards). Chunks come out in order; at most kChunksAhead wait.
class EncodePipeline {
 public:
  static constexpr size_t kMinEvents = 512;  // below this, a thread costs more than it saves
  struct Chunk {
    std::vector<capnp::word> words;
    std::vector<std::pair<size_t, RecordLayout>> records;  // offset in words, layout
  };

  EncodePipeline(const AppendRequest& r, uint64_t firstSequence, uint64_t firstVersion,
                 int64_t time)
      : request_(r),
        firstSequence_(firstSequence),
        firstVersion_(firstVersion),
        time_(time),
        thread_([this] { run(); }) {}

  ~EncodePipeline() {
    {
      std::lock_guard lk(mutex_);
      stop_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }

  // The next chunk, or nullptr after the last. Rethrows what stopped the encoder.
  std::unique_ptr<Chunk> next() {
    std::unique_lock lk(mutex_);
    cv_.wait(lk, [&] { return !ready_.empty() || done_; });
    if (ready_.empty()) {
      if (error_) std::rethrow_exception(error_);
      return nullptr;
    }
    auto chunk = std::move(ready_.front());
    ready_.pop_front();
    cv_.notify_all();
    return chunk;
  }

 private:
  static constexpr size_t kChunkEvents = 256;
  static constexpr size_t kChunksAhead = 4;

  void run() {
    pthread_setname_np(pthread_self(), "log-encoder");
    try {
      const auto& payloads = request_.payloads;
      for (size_t i = 0; i < payloads.size();) {
        auto chunk = std::make_unique<Chunk>();
        for (size_t end = std::min(payloads.size(), i + kChunkEvents); i < end; ++i) {
          const size_t at = chunk->words.size();
          auto layout = encodeEvent(request_, payloads[i], firstSequence_ + i, firstVersion_ + i,
                                    time_, [&](size_t bytes) {
                                      chunk->words.resize(at + bytes / sizeof(capnp::word));
                                      return reinterpret_cast<uint8_t*>(chunk->words.data() + at);
                                    });
          chunk->records.emplace_back(at, layout);
        }
        std::unique_lock lk(mutex_);
        cv_.wait(lk, [&] { return ready_.size() < kChunksAhead || stop_; });
        if (stop_) break;
        ready_.push_back(std::move(chunk));
        cv_.notify_all();
      }
    } catch (...) {
      std::lock_guard lk(mutex_);
      error_ = std::current_exception();
    }
    {
      std::lock_guard lk(mutex_);
      done_ = true;
    }
    cv_.notify_all();
  }

  const AppendRequest& request_;
  const uint64_t firstSequence_, firstVersion_;
  const int64_t time_;
  std::mutex mutex_;
  std::condition_variable cv_;
  std::deque<std::unique_ptr<Chunk>> ready_;
  bool stop_ = false, done_ = false;
  std::exception_ptr error_;
  std::thread thread_;  // last: starts once the fields above exist
};

}  // namespace

// ---------------------------------------------------------------------------------------------
// EventLog: what the stager and the writer share

// A batch of requests: staged (checked, sequenced, encoded and, where it can, chained) by the
// stager, then stored and committed by the writer. Its events follow `base`, the log's head when
// it was opened (the committed log, or the batch in flight).
//
// The chain: the stager seals records while it knows the hash before them. A large request
// (EncodePipeline::kMinEvents events or more) is only checked and sequenced here, and encoded
// by the writer as it stores it, on the encoder thread, so that building its records overlaps
// storing them (as they need no check, nothing of a batch waits for them). The writer then seals
// every record after it, and the stager knows the chain again once that batch is committed.
struct EventLog::Batch {
  struct Record {
    size_t block;   // in blocks
    size_t offset;  // in words
    RecordLayout layout;
  };
  // A large request, stored by the writer before records[beforeRecord].
  struct Deferred {
    size_t pending;  // its index in `pending`
    size_t beforeRecord;
    uint64_t firstSequence, firstVersion;
    int64_t time;
  };
  std::vector<Pending> pending;
  std::vector<Result<AppendResult>> results;  // one per pending entry
  std::vector<std::vector<capnp::word>> blocks;
  std::vector<Record> records;  // staged events, in sequence order (with `deferred` between)
  std::vector<Deferred> deferred;
  // Idempotency keys of the requests that write events, with their results.
  std::unordered_map<std::string, AppendResult, StringHash, std::equal_to<>> keys;
  StreamTail streams;  // where the new events lie in their streams
  Head base, head;     // the log's head before and after the batch (hashes: see below)
  bool chainKnown;     // head.hash is the chain's (every record so far is sealed)
  size_t sealed = 0;   // records[0, sealed) are sealed; the last one's hash is sealedHash
  Hash sealedHash{};
  size_t bytes = 0;  // of the events, for the stager's limit

  Batch(const Head& after, bool chainKnown) : base(after), head(after), chainKnown(chainKnown) {}
  bool empty() const { return records.empty() && deferred.empty(); }
};

// A read transaction on the committed log for the stager, begun on first need. Begun while
// stageMutex_ is held, it agrees with tail_ and inflight_: a commit it does not see is still
// inflight_, and the writer changes tail_ only once its commit is visible.
class EventLog::Snapshot {
 public:
  explicit Snapshot(const EventLog& log) : log_(log) {}
  ~Snapshot() { end(); }
  MDB_txn* txn() {
    if (!txn_) {
      lock_ = std::shared_lock(log_.resizeMutex_);
      check(mdb_txn_begin(log_.env_, nullptr, MDB_RDONLY, &txn_));
    }
    return txn_;
  }
  // Before anything that waits for the writer, which may need to grow the map.
  void end() {
    if (txn_) mdb_txn_abort(txn_);
    txn_ = nullptr;
    if (lock_.owns_lock()) lock_.unlock();
  }

 private:
  const EventLog& log_;
  std::shared_lock<std::shared_mutex> lock_;
  MDB_txn* txn_ = nullptr;
};

// ---------------------------------------------------------------------------------------------
// ReadTxn

ReadTxn::ReadTxn(const EventLog& log, std::shared_lock<std::shared_mutex> lock, MDB_txn* txn)
    : log_(log), resizeLock_(std::move(lock)), txn_(txn) {
  // The head: in the main database (format 3), or in `meta` (a format 1 or 2 store, read-only;
  // a writer upgrades it, perhaps while this reader is open).
  MDB_val key = val(kMainHead), data;
  int rc = mdb_get(txn_, log_.mainDbi_, &key, &data);
  if (rc != MDB_SUCCESS) {
    key = val(kMetaHead);
    rc = mdb_get(txn_, log_.metaDbi_, &key, &data);
  }
  if (rc == MDB_SUCCESS && data.mv_size == 8 + kHashSize) {
    lastSequence_ = decodeU64(data.mv_data);
    std::memcpy(head_.data(), static_cast<const uint8_t*>(data.mv_data) + 8, kHashSize);
  }
  // No `indexed` (a format-1 store): every event is in the index.
  indexed_ = lastSequence_;
  key = val(kMetaIndexed);
  if (mdb_get(txn_, log_.metaDbi_, &key, &data) == MDB_SUCCESS && data.mv_size == 8) {
    indexed_ = std::min(decodeU64(data.mv_data), lastSequence_);
  }
}

ReadTxn::~ReadTxn() {
  mdb_txn_abort(txn_);
}

Result<const StreamTail*> ReadTxn::tail() const {
  if (!tail_) {
    auto t = std::make_unique<StreamTail>();
    if (indexed_ < lastSequence_) {
      if (auto s = collectTail(*this, indexed_, t.get()); !s.ok()) return s.error();
    }
    tail_ = std::move(t);
  }
  return tail_.get();
}

uint64_t ReadTxn::streamVersion(std::string_view streamId) const {
  try {
    auto t = tail();
    if (t.ok()) {
      if (uint64_t v = (*t)->lastVersion(streamId); v > 0) return v;
    }
    return lastIndexedVersion(txn_, log_.streamsDbi_, streamId);
  } catch (const LmdbFailure&) {
    return 0;
  } catch (const CorruptIndex&) {
    return 0;
  }
}

Status ReadTxn::visit(uint64_t sequence, const void* data, size_t size,
                      const std::function<bool(const EventRef&)>& fn, bool* more) const {
  if (size % sizeof(capnp::word) != 0) {
    return Error{"E_STORE_CORRUPT", "event " + std::to_string(sequence) +
                                        " is not a whole number of words (" + std::to_string(size) +
                                        " bytes)"};
  }
  const size_t n = size / sizeof(capnp::word);
  if (isAligned(data)) {
    *more = fn(EventRef(sequence, kj::arrayPtr(static_cast<const capnp::word*>(data), n)));
  } else {
    auto copy = kj::heapArray<capnp::word>(n);
    std::memcpy(copy.begin(), data, size);
    *more = fn(EventRef(sequence, copy.asPtr()));
  }
  return Ok{};
}

Status ReadTxn::forEach(uint64_t from, const std::function<bool(const EventRef&)>& fn) const {
  MDB_cursor* cursor = nullptr;
  int rc = mdb_cursor_open(txn_, log_.eventsDbi_, &cursor);
  if (rc != MDB_SUCCESS) return storageError(rc, "opening a cursor on events");
  std::unique_ptr<MDB_cursor, void (*)(MDB_cursor*)> guard(cursor, mdb_cursor_close);
  // A scan is bound by memory latency, not by work: the cursor runs kAhead records ahead of
  // the caller and asks for each record's first cache lines (the envelope and the payload's
  // root) as it steps onto it, so that those loads overlap the caller's work on the records
  // before. (Measured: +15 % events/s for a scan that decodes every event.)
  constexpr size_t kAhead = 4;
  struct Entry {
    MDB_val key, data;
  };
  Entry ring[kAhead];
  size_t queued = 0, next = 0;
  auto start = encodeU64(from);
  MDB_val key = val(start.data(), start.size()), data;
  rc = mdb_cursor_get(cursor, &key, &data, MDB_SET_RANGE);
  bool more = true;
  bool badKey = false;
  while (more && (queued > 0 || (rc == MDB_SUCCESS && !badKey))) {
    while (rc == MDB_SUCCESS && queued < kAhead) {
      if (key.mv_size != 8) {
        badKey = true;
        break;
      }
      const auto* p = static_cast<const char*>(data.mv_data);
      for (size_t line = 0; line < std::min<size_t>(data.mv_size, 192); line += 64) {
        __builtin_prefetch(p + line);
      }
      ring[(next + queued++) % kAhead] = Entry{key, data};
      rc = mdb_cursor_get(cursor, &key, &data, MDB_NEXT);
    }
    if (queued == 0) {  // only after a bad key, once the records before it were delivered
      return Error{"E_STORE_CORRUPT", "an events key is not 8 bytes"};
    }
    const Entry& e = ring[next];
    next = (next + 1) % kAhead;
    --queued;
    auto s = visit(decodeU64(e.key.mv_data), e.data.mv_data, e.data.mv_size, fn, &more);
    if (!s.ok()) return s;
  }
  if (rc != MDB_SUCCESS && rc != MDB_NOTFOUND) return storageError(rc, "reading events");
  return Ok{};
}

Status ReadTxn::forEachInStream(std::string_view streamId, uint64_t fromVersion,
                                const std::function<bool(const EventRef&)>& fn) const {
  fromVersion = std::max<uint64_t>(fromVersion, 1);
  MDB_cursor* events = nullptr;
  int rc = mdb_cursor_open(txn_, log_.eventsDbi_, &events);
  if (rc != MDB_SUCCESS) return storageError(rc, "opening a cursor on events");
  std::unique_ptr<MDB_cursor, void (*)(MDB_cursor*)> eventsGuard(events, mdb_cursor_close);
  bool more = true;
  // Hands out the run's events from version `from` on (they are consecutive in `events`).
  auto emit = [&](const StreamRun& run, uint64_t from) -> Status {
    if (run.lastVersion() < from) return Ok{};
    const uint64_t skip = from > run.firstVersion ? from - run.firstVersion : 0;
    for (uint64_t i = skip; i < run.count && more; ++i) {
      const uint64_t seq = run.firstSequence + i;
      auto seqKey = encodeU64(seq);
      MDB_val key = val(seqKey.data(), seqKey.size()), data;
      int erc = mdb_cursor_get(events, &key, &data, i == skip ? MDB_SET_KEY : MDB_NEXT);
      if (erc == MDB_NOTFOUND ||
          (erc == MDB_SUCCESS && (key.mv_size != 8 || decodeU64(key.mv_data) != seq))) {
        return Error{"E_STORE_CORRUPT",
                     "the streams index names missing event " + std::to_string(seq)};
      }
      if (erc != MDB_SUCCESS) return storageError(erc, "reading an event");
      if (auto s = visit(seq, data.mv_data, data.mv_size, fn, &more); !s.ok()) return s;
    }
    return Ok{};
  };

  // The index: start at the run holding fromVersion (the last one that starts at or before it).
  MDB_cursor* cursor = nullptr;
  rc = mdb_cursor_open(txn_, log_.streamsDbi_, &cursor);
  if (rc != MDB_SUCCESS) return storageError(rc, "opening a cursor on streams");
  std::unique_ptr<MDB_cursor, void (*)(MDB_cursor*)> guard(cursor, mdb_cursor_close);
  uint64_t lastIndexed = 0;
  try {
    const std::string probe =
        streamKey(streamId, fromVersion == UINT64_MAX ? UINT64_MAX : fromVersion + 1);
    MDB_val key = val(probe), data;
    rc = mdb_cursor_get(cursor, &key, &data, MDB_SET_RANGE);
    rc = mdb_cursor_get(cursor, &key, &data, rc == MDB_SUCCESS ? MDB_PREV : MDB_LAST);
    std::optional<StreamRun> run;
    if (rc == MDB_SUCCESS) run = decodeRun(key, data, streamId);
    if (!run || run->lastVersion() < fromVersion) {
      if (run) lastIndexed = run->lastVersion();
      key = val(probe);
      rc = mdb_cursor_get(cursor, &key, &data, MDB_SET_RANGE);
      run = rc == MDB_SUCCESS ? decodeRun(key, data, streamId) : std::nullopt;
    }
    while (run && more) {
      if (auto s = emit(*run, fromVersion); !s.ok()) return s;
      lastIndexed = run->lastVersion();
      rc = mdb_cursor_get(cursor, &key, &data, MDB_NEXT);
      run = rc == MDB_SUCCESS ? decodeRun(key, data, streamId) : std::nullopt;
    }
  } catch (const CorruptIndex& c) {
    return Error{"E_STORE_CORRUPT", c.message};
  }
  if (rc != MDB_SUCCESS && rc != MDB_NOTFOUND) return storageError(rc, "reading a stream");

  // Then the events after the index.
  auto t = tail();
  if (!t.ok()) return t.error();
  if (const auto* runs = (*t)->find(streamId)) {
    for (const auto& run : *runs) {
      if (!more) break;
      if (run.firstVersion <= lastIndexed) {
        return Error{"E_STORE_CORRUPT", "version " + std::to_string(run.firstVersion) + " of " +
                                            std::string(streamId) + " is in the log twice"};
      }
      if (auto s = emit(run, fromVersion); !s.ok()) return s;
    }
  }
  return Ok{};
}

Result<StoredEvent> ReadTxn::get(uint64_t sequence) const {
  auto k = encodeU64(sequence);
  MDB_val key = val(k.data(), k.size()), data;
  int rc = mdb_get(txn_, log_.eventsDbi_, &key, &data);
  if (rc == MDB_NOTFOUND) return Error{"E_NOT_FOUND", "no event " + std::to_string(sequence)};
  if (rc != MDB_SUCCESS) return storageError(rc, "reading an event");
  if (data.mv_size % sizeof(capnp::word) != 0) {
    return Error{"E_STORE_CORRUPT", "event " + std::to_string(sequence) + " is not whole words"};
  }
  StoredEvent out{sequence, kj::heapArray<capnp::word>(data.mv_size / sizeof(capnp::word))};
  std::memcpy(out.words.begin(), data.mv_data, data.mv_size);
  return out;
}

// ---------------------------------------------------------------------------------------------
// EventLog: opening

EventLog::EventLog(Options options) : options_(std::move(options)) {}

Result<std::unique_ptr<EventLog>> EventLog::open(Options options) {
  std::unique_ptr<EventLog> log(new EventLog(std::move(options)));
  if (auto s = log->openEnvironment(); !s.ok()) return s.error();
  if (auto s = log->loadHead(); !s.ok()) return s.error();
  if (!log->options_.readOnly) {
    if (auto s = log->loadTail(); !s.ok()) return s.error();
    log->open_ = std::make_unique<Batch>(log->head_, true);
    log->stager_ = std::thread([l = log.get()] {
      pthread_setname_np(pthread_self(), "log-stager");
      l->stagerLoop();
    });
    log->writer_ = std::thread([l = log.get()] {
      pthread_setname_np(pthread_self(), "log-writer");  // for top, perf and gdb
      l->writerLoop();
    });
    log->answerer_ = std::thread([l = log.get()] {
      pthread_setname_np(pthread_self(), "log-answer");
      l->answerLoop();
    });
  }
  return log;
}

Status EventLog::openEnvironment() {
  namespace fs = std::filesystem;
  const std::string& path = options_.path;
  std::error_code ec;
  if (options_.readOnly) {
    if (!fs::exists(fs::path(path) / "data.mdb", ec)) {
      return Error{"E_NOT_FOUND", "no event log at " + path};
    }
  } else {
    fs::create_directories(path, ec);
    if (ec) return Error{"E_STORAGE", "cannot create " + path + ": " + ec.message()};
  }

  int rc = mdb_env_create(&env_);
  if (rc != MDB_SUCCESS) return storageError(rc, "creating the LMDB environment");
  mdb_env_set_maxdbs(env_, 8);
  mdb_env_set_maxreaders(env_, options_.maxReaders);
  if (!options_.readOnly) mdb_env_set_mapsize(env_, options_.initialMapSize);
  // MDB_NOTLS: read transactions belong to ReadTxn objects, not to threads.
  const unsigned flags = MDB_NOTLS | (options_.readOnly ? MDB_RDONLY : 0u);
  rc = mdb_env_open(env_, path.c_str(), flags, 0600);
  if (rc != MDB_SUCCESS) return storageError(rc, "opening the event log at " + path);

  if (!options_.readOnly) clearStaleReaders();

  MDB_txn* txn = nullptr;
  rc = mdb_txn_begin(env_, nullptr, options_.readOnly ? MDB_RDONLY : 0, &txn);
  if (rc != MDB_SUCCESS) return storageError(rc, "opening the event log");
  const unsigned create = options_.readOnly ? 0 : MDB_CREATE;
  MDB_dbi dbis[4];
  const char* names[4] = {kEventsDb, kStreamsDb, kIdempotencyDb, kMetaDb};
  for (int i = 0; i < 4; ++i) {
    rc = mdb_dbi_open(txn, names[i], create, &dbis[i]);
    if (rc != MDB_SUCCESS) {
      mdb_txn_abort(txn);
      if (rc == MDB_NOTFOUND) return Error{"E_NOT_FOUND", "no event log at " + path};
      return storageError(rc, std::string("opening database ") + names[i]);
    }
  }
  eventsDbi_ = dbis[0];
  streamsDbi_ = dbis[1];
  idempotencyDbi_ = dbis[2];
  metaDbi_ = dbis[3];
  MDB_dbi main;
  rc = mdb_dbi_open(txn, nullptr, 0, &main);
  if (rc != MDB_SUCCESS) {
    mdb_txn_abort(txn);
    return storageError(rc, "opening the main database");
  }
  mainDbi_ = main;

  // The format version: written once when the store is created; a newer one is refused.
  MDB_val key = val(kMetaFormat), data;
  rc = mdb_get(txn, metaDbi_, &key, &data);
  // Sets meta.format to this program's, and meta.indexed to `indexed` when given.
  auto writeFormat = [&](std::optional<uint64_t> indexed) {
    if (indexed) {
      auto i = encodeU64(*indexed);
      MDB_val ik = val(kMetaIndexed), iv = val(i.data(), i.size());
      if (int prc = mdb_put(txn, metaDbi_, &ik, &iv, 0); prc != MDB_SUCCESS) return prc;
    }
    auto v = encodeU64(kFormatVersion);
    MDB_val fk = val(kMetaFormat), fv = val(v.data(), v.size());
    return mdb_put(txn, metaDbi_, &fk, &fv, 0);
  };
  if (rc == MDB_SUCCESS) {
    const uint64_t format = data.mv_size == 8 ? decodeU64(data.mv_data) : UINT64_MAX;
    if (format > kFormatVersion) {
      mdb_txn_abort(txn);
      return Error{
          "E_STORE_FORMAT",
          "the event log at " + path + " has format " +
              (format == UINT64_MAX ? std::string("(unreadable)") : std::to_string(format)) +
              ", newer than this program's " + std::to_string(kFormatVersion) +
              "; use a newer imaged (the log was left untouched)"};
    }
    if (format < kFormatVersion && !options_.readOnly) {
      // Formats 1 and 2 kept the head in `meta`: it moves to the main database. Format 1 had no
      // meta.indexed: its `streams` entries are runs of one event, and the whole log is indexed.
      MDB_val hk = val(kMetaHead), hd;
      const int hrc = mdb_get(txn, metaDbi_, &hk, &hd);
      rc = hrc == MDB_NOTFOUND ? MDB_SUCCESS : hrc;
      uint64_t last = 0;
      if (hrc == MDB_SUCCESS) {
        const std::string head(static_cast<const char*>(hd.mv_data), hd.mv_size);
        if (head.size() >= 8) last = decodeU64(head.data());
        MDB_val mk = val(kMainHead), mv = val(head);
        rc = mdb_put(txn, mainDbi_, &mk, &mv, 0);
        if (rc == MDB_SUCCESS) rc = mdb_del(txn, metaDbi_, &hk, nullptr);
      }
      if (rc == MDB_SUCCESS) {
        rc = writeFormat(format == 1 ? std::optional<uint64_t>(last) : std::nullopt);
      }
      if (rc != MDB_SUCCESS) {
        mdb_txn_abort(txn);
        return storageError(rc,
                            "upgrading the event log to format " + std::to_string(kFormatVersion));
      }
    }
  } else if (rc == MDB_NOTFOUND && !options_.readOnly) {
    rc = writeFormat(0);
    if (rc != MDB_SUCCESS) {
      mdb_txn_abort(txn);
      return storageError(rc, "initialising the event log");
    }
  } else if (rc != MDB_NOTFOUND) {
    mdb_txn_abort(txn);
    return storageError(rc, "reading the format version");
  }
  // Committing (even a read transaction) makes the database handles usable by later ones.
  rc = mdb_txn_commit(txn);
  if (rc != MDB_SUCCESS) return storageError(rc, "initialising the event log");
  return Ok{};
}

Status EventLog::loadHead() {
  auto txn = read();
  if (!txn.ok()) return txn.error();
  Head head;
  head.sequence = (*txn)->lastSequence();
  head.hash = (*txn)->headHash();
  if (head.sequence > 0) {
    // The head and the last record are written in one transaction: they must agree.
    auto last = (*txn)->get(head.sequence);
    if (!last.ok()) {
      return Error{"E_STORE_CORRUPT", "the log's head names event " +
                                          std::to_string(head.sequence) + ": " +
                                          last.error().message};
    }
    try {
      capnp::FlatArrayMessageReader reader(last->words);
      auto ev = reader.getRoot<schema::Event>();
      auto h = ev.getHash();
      if (h.size() != kHashSize || std::memcmp(h.begin(), head.hash.data(), kHashSize) != 0) {
        return Error{"E_STORE_CORRUPT", "the log's head hash does not match event " +
                                            std::to_string(head.sequence) +
                                            "; run a verify to find the damage"};
      }
      head.time = ev.getTime();
    } catch (const kj::Exception& e) {
      return Error{"E_STORE_CORRUPT", "the last event (" + std::to_string(head.sequence) +
                                          ") does not decode: " + e.getDescription().cStr()};
    }
  }
  std::lock_guard lk(mutex_);
  head_ = head;
  return Ok{};
}

Status EventLog::loadTail() {
  auto txn = read();
  if (!txn.ok()) return txn.error();
  auto t = (*txn)->tail();
  if (!t.ok()) return t.error();
  tail_ = std::make_unique<StreamTail>(**t);
  return Ok{};
}

EventLog::~EventLog() {
  {
    std::lock_guard lk(mutex_);
    closing_ = true;
  }
  queueCv_.notify_all();
  commitCv_.notify_all();
  if (stager_.joinable()) stager_.join();
  if (writer_.joinable()) writer_.join();
  {
    std::lock_guard lk(completionMutex_);
    writerDone_ = true;
  }
  completionCv_.notify_all();
  if (answerer_.joinable()) answerer_.join();
  if (env_) mdb_env_close(env_);
}

// ---------------------------------------------------------------------------------------------
// EventLog: reading

Result<std::unique_ptr<ReadTxn>> EventLog::read() const {
  for (int attempt = 0; attempt < 3; ++attempt) {
    std::shared_lock lk(resizeMutex_);
    MDB_txn* txn = nullptr;
    int rc = mdb_txn_begin(env_, nullptr, MDB_RDONLY, &txn);
    if (rc == MDB_SUCCESS) {
      std::unique_ptr<ReadTxn> r(new ReadTxn(*this, std::move(lk), txn));
      if (options_.readOnly) {
        std::lock_guard g(mutex_);
        head_.sequence = std::max(head_.sequence, r->lastSequence());
      }
      return r;
    }
    lk.unlock();
    if (rc == MDB_MAP_RESIZED) {
      // Another process grew the map: adopt its size (needs no live transaction here).
      std::unique_lock x(resizeMutex_);
      rc = mdb_env_set_mapsize(env_, 0);
      if (rc != MDB_SUCCESS) return storageError(rc, "adopting the grown map");
      continue;
    }
    if (rc == MDB_READERS_FULL && clearStaleReaders() > 0) continue;
    return storageError(rc, "starting a read transaction");
  }
  return Error{"E_STORAGE", "could not start a read transaction"};
}

uint64_t EventLog::lastSequence() const {
  std::lock_guard lk(mutex_);
  return head_.sequence;
}

uint64_t EventLog::waitForSequence(uint64_t after, std::chrono::milliseconds timeout) const {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  if (options_.readOnly) {
    // No commit reaches us from the writer's process: look at the file now and then.
    for (;;) {
      if (auto txn = read(); txn.ok() && (*txn)->lastSequence() > after) {
        return (*txn)->lastSequence();
      }
      auto now = std::chrono::steady_clock::now();
      if (now >= deadline) return lastSequence();
      std::this_thread::sleep_for(std::min<std::chrono::steady_clock::duration>(
          std::chrono::milliseconds(20), deadline - now));
    }
  }
  std::unique_lock lk(mutex_);
  commitCv_.wait_until(lk, deadline, [&] { return head_.sequence > after || closing_; });
  return head_.sequence;
}

void EventLog::setCommitListener(std::function<void(uint64_t)> listener) {
  std::lock_guard lk(mutex_);
  commitListener_ = std::move(listener);
}

int EventLog::clearStaleReaders() const {
  int dead = 0;
  mdb_reader_check(env_, &dead);
  return dead;
}

EventLog::Stats EventLog::stats() const {
  std::lock_guard lk(mutex_);
  return stats_;
}

size_t EventLog::mapSize() const {
  MDB_envinfo info;
  mdb_env_info(env_, &info);
  return info.me_mapsize;
}

Result<VerifyReport> EventLog::verify() const {
  auto txn = read();
  if (!txn.ok()) return txn.error();
  VerifyReport report;
  Hash prev{};
  uint64_t expected = 1;
  auto fail = [&](uint64_t seq, std::string problem) {
    report.intact = false;
    report.firstBad = seq;
    report.problem = std::move(problem);
    return false;
  };
  // What the index must say of each event up to meta.indexed: its stream (hashed) and version.
  std::vector<IndexedEvent> mustIndex;
  mustIndex.reserve((*txn)->indexed_);
  auto s = (*txn)->forEach(0, [&](const EventRef& e) {
    if (e.sequence() != expected) {
      return fail(expected, e.sequence() < expected
                                ? "sequence keys out of order at " + std::to_string(e.sequence())
                                : "missing events " + std::to_string(expected) + ".." +
                                      std::to_string(e.sequence() - 1) + " (a gap)");
    }
    Result<size_t> offset = Error{};
    try {
      capnp::FlatArrayMessageReader reader(e.words());
      auto ev = reader.getRoot<schema::Event>();
      offset = locateHash(e.words(), ev);
      if (!offset.ok()) return fail(e.sequence(), offset.error().message);
      if (ev.getSequence() != e.sequence()) {
        return fail(e.sequence(), "the record says sequence " + std::to_string(ev.getSequence()));
      }
      auto p = ev.getPrevHash();
      if (p.size() != kHashSize || std::memcmp(p.begin(), prev.data(), kHashSize) != 0) {
        return fail(e.sequence(), "chain broken: prevHash is not the previous event's hash");
      }
      if (e.sequence() <= (*txn)->indexed_) {
        auto id = ev.getStreamId();
        mustIndex.push_back({std::hash<std::string_view>{}(std::string_view(id.begin(), id.size())),
                             ev.getStreamVersion()});
      }
    } catch (const kj::Exception& ex) {
      return fail(e.sequence(),
                  std::string("the record does not decode: ") + ex.getDescription().cStr());
    }
    Hash computed = chainHash(prev, e.words(), *offset);
    const auto* stored = reinterpret_cast<const uint8_t*>(e.words().begin()) + *offset;
    if (std::memcmp(computed.data(), stored, kHashSize) != 0) {
      return fail(e.sequence(), "bytes changed: the hash does not match the record");
    }
    prev = computed;
    report.events = e.sequence();
    ++expected;
    return true;
  });
  if (!s.ok()) {
    if (s.error().code != "E_STORE_CORRUPT") return s.error();
    if (report.intact) fail(expected, s.error().message);
  }
  report.head = prev;
  if (report.intact) {
    if ((*txn)->lastSequence() != report.events) {
      fail(report.events + 1, "the head names event " + std::to_string((*txn)->lastSequence()) +
                                  " but the log ends at " + std::to_string(report.events));
    } else if ((*txn)->headHash() != prev) {
      fail(report.events, "the head hash does not match the last event");
    }
  }
  if (report.intact) verifyStreamIndex(**txn, mustIndex, &report);
  return report;
}

void EventLog::verifyStreamIndex(const ReadTxn& txn, std::vector<IndexedEvent>& mustIndex,
                                 VerifyReport* report) const {
  auto bad = [&](std::string problem) {
    report->indexIntact = false;
    report->indexProblem = std::move(problem);
  };
  if (mustIndex.size() != txn.indexed_) {
    return bad("meta.indexed names event " + std::to_string(txn.indexed_) + " of " +
               std::to_string(mustIndex.size()));
  }
  MDB_cursor* cursor = nullptr;
  if (mdb_cursor_open(txn.txn_, streamsDbi_, &cursor) != MDB_SUCCESS) {
    return bad("the streams index cannot be read");
  }
  std::unique_ptr<MDB_cursor, void (*)(MDB_cursor*)> guard(cursor, mdb_cursor_close);
  MDB_val key, data;
  uint64_t covered = 0;
  for (int rc = mdb_cursor_get(cursor, &key, &data, MDB_FIRST); rc == MDB_SUCCESS;
       rc = mdb_cursor_get(cursor, &key, &data, MDB_NEXT)) {
    const auto* k = static_cast<const char*>(key.mv_data);
    const auto* nul = static_cast<const char*>(std::memchr(k, '\0', key.mv_size));
    if (!nul || key.mv_size != static_cast<size_t>(nul - k) + 9) {
      return bad("a streams key is not stream id, NUL, version");
    }
    const std::string_view stream(k, nul - k);
    std::optional<StreamRun> run;
    try {
      run = decodeRun(key, data, stream);
    } catch (const CorruptIndex& c) {
      return bad(c.message);
    }
    const size_t hash = std::hash<std::string_view>{}(stream);
    for (uint64_t i = 0; i < run->count; ++i) {
      const uint64_t seq = run->firstSequence + i, version = run->firstVersion + i;
      const std::string where = std::string(stream) + " version " + std::to_string(version);
      if (seq > mustIndex.size()) {
        return bad(where + " names event " + std::to_string(seq) + ", past meta.indexed");
      }
      IndexedEvent& e = mustIndex[seq - 1];
      if (e.version == 0) return bad(where + " names event " + std::to_string(seq) + " again");
      if (e.stream != hash || e.version != version) {
        return bad(where + " names event " + std::to_string(seq) + ", which is another's");
      }
      e.version = 0;
      ++covered;
    }
  }
  if (covered != mustIndex.size()) {
    for (size_t i = 0; i < mustIndex.size(); ++i) {
      if (mustIndex[i].version != 0) {
        return bad("event " + std::to_string(i + 1) + " is in no run of the streams index");
      }
    }
  }
  report->indexed = covered;
}

// ---------------------------------------------------------------------------------------------
// EventLog: appending

int64_t EventLog::now() const {
  if (options_.clock) return options_.clock();
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

void EventLog::appendAsync(AppendRequest request, AppendCallback done) {
  if (options_.readOnly) {
    done(Error{"E_READ_ONLY", "the event log was opened read-only"});
    return;
  }
  // Checked here, on the caller's thread, so that the writer only copies payloads known to be
  // whole: a request can then not fail half-way through being written.
  if (auto s = validate(request); !s.ok()) {
    done(s.error());
    return;
  }
  if (auto s = checkPayloads(request); !s.ok()) {
    done(s.error());
    return;
  }
  {
    std::lock_guard lk(mutex_);
    if (closing_) {
      done(Error{"E_STORE_CLOSED", "the event log is closing"});
      return;
    }
    queue_.push_back(Pending{std::move(request), std::move(done)});
  }
  queueCv_.notify_one();
}

Result<AppendResult> EventLog::append(AppendRequest request) {
  std::promise<Result<AppendResult>> promise;
  auto future = promise.get_future();
  appendAsync(std::move(request),
              [&promise](Result<AppendResult> r) { promise.set_value(std::move(r)); });
  return future.get();
}

void EventLog::answerLoop() {
  for (;;) {
    std::deque<Completion> ready;
    {
      std::unique_lock lk(completionMutex_);
      completionCv_.wait(lk, [&] { return !completions_.empty() || writerDone_; });
      if (completions_.empty()) return;
      ready.swap(completions_);
    }
    std::function<void(uint64_t)> listener;
    {
      std::lock_guard lk(mutex_);
      listener = commitListener_;
    }
    for (Completion& c : ready) {
      Batch& b = *c.batch;
      for (size_t i = 0; i < b.pending.size(); ++i) {
        b.pending[i].done(c.failed ? Result<AppendResult>(*c.failed) : std::move(b.results[i]));
      }
      if (c.committed && listener) listener(c.lastSequence);
    }
  }
}

Error EventLog::writeError(int rc, std::string_view what) const {
  // LMDB reports a short write as EIO, which is what a full disk (or a file size limit) yields
  // part-way through a commit. Tell that case apart, so that the operator is told what to fix.
  if (rc == EIO) {
    struct statvfs fs {};
    const bool diskLow = statvfs(options_.path.c_str(), &fs) == 0 &&
                         static_cast<uint64_t>(fs.f_bavail) * fs.f_frsize < (uint64_t{64} << 20);
    rlimit limit{};
    std::error_code ec;
    const auto fileSize = std::filesystem::file_size(options_.path + "/data.mdb", ec);
    const bool overLimit = getrlimit(RLIMIT_FSIZE, &limit) == 0 &&
                           limit.rlim_cur != RLIM_INFINITY && !ec &&
                           fileSize + (uint64_t{64} << 20) > limit.rlim_cur;
    if (diskLow || overLimit) rc = ENOSPC;
  }
  return storageError(rc, what);
}

Status EventLog::growMap() {
  std::unique_lock x(resizeMutex_);  // no ReadTxn of this process may live across a resize
  const size_t current = mapSize();
  const size_t next = current * 2;
  int rc = mdb_env_set_mapsize(env_, next);
  if (rc != MDB_SUCCESS) return storageError(rc, "growing the map to " + std::to_string(next));
  return Ok{};
}

// ---------------------------------------------------------------------------------------------
// EventLog: staging and committing (docs/storage.md, "Writing")

namespace {

// Staged records are written into blocks of this size (or one of its own when larger).
constexpr size_t kBlockWords = (size_t{64} << 10) / sizeof(capnp::word);
// The stager waits for the writer when the open batch holds this many bytes.
constexpr size_t kMaxStagedBytes = size_t{64} << 20;

std::array<uint8_t, 24> encodeResult(const AppendResult& r) {
  std::array<uint8_t, 24> v;
  auto a = encodeU64(r.firstSequence), b = encodeU64(r.lastSequence),
       c = encodeU64(r.streamVersion);
  std::memcpy(v.data(), a.data(), 8);
  std::memcpy(v.data() + 8, b.data(), 8);
  std::memcpy(v.data() + 16, c.data(), 8);
  return v;
}

}  // namespace

void EventLog::stagerLoop() {
  for (;;) {
    std::vector<Pending> drained;
    {
      std::unique_lock lk(mutex_);
      queueCv_.wait(lk, [&] { return !queue_.empty() || closing_; });
      if (queue_.empty()) break;  // closing, and everything queued was staged
      drained.swap(queue_);
    }
    {
      std::unique_lock lk(stageMutex_);
      Snapshot snapshot(*this);
      for (auto& p : drained) {
        if (open_->bytes >= kMaxStagedBytes) {
          snapshot.end();  // the writer may have to grow the map before it can take the batch
          stageCv_.notify_all();
          stageCv_.wait(lk, [&] { return open_->bytes < kMaxStagedBytes; });
        }
        Result<AppendResult> r = stage(p.request, snapshot);
        open_->pending.push_back(std::move(p));
        open_->results.push_back(std::move(r));
      }
    }
    stageCv_.notify_all();
  }
  {
    std::lock_guard lk(stageMutex_);
    stagerDone_ = true;
  }
  stageCv_.notify_all();
}

Result<AppendResult> EventLog::stage(const AppendRequest& r, Snapshot& snapshot) {
  Batch& b = *open_;
  uint64_t current = 0;  // the stream's last version
  try {
    // A key already used (committed, in flight or staged): answer as the first time.
    if (!r.idempotencyKey.empty()) {
      for (const Batch* staged : {static_cast<const Batch*>(&b), inflight_}) {
        if (!staged) continue;
        if (auto it = staged->keys.find(r.idempotencyKey); it != staged->keys.end()) {
          AppendResult first = it->second;
          first.duplicate = true;
          return first;
        }
      }
      MDB_val k = val(r.idempotencyKey), d;
      const int grc = mdb_get(snapshot.txn(), idempotencyDbi_, &k, &d);
      if (grc == MDB_SUCCESS && d.mv_size == 24) {
        const auto* v = static_cast<const uint8_t*>(d.mv_data);
        return AppendResult{decodeU64(v), decodeU64(v + 8), decodeU64(v + 16), true};
      }
      if (grc != MDB_NOTFOUND && grc != MDB_SUCCESS) check(grc);
    }
    current = b.streams.lastVersion(r.streamId);
    if (current == 0 && inflight_) current = inflight_->streams.lastVersion(r.streamId);
    if (current == 0) current = tail_->lastVersion(r.streamId);
    if (current == 0) current = lastIndexedVersion(snapshot.txn(), streamsDbi_, r.streamId);
  } catch (const LmdbFailure& f) {
    return storageError(f.rc, "reading the log");
  } catch (const CorruptIndex& c) {
    return Error{"E_STORE_CORRUPT", c.message};
  }
  const auto& ex = r.expected;
  const bool expectedOk = ex.kind == ExpectedVersion::Kind::kAny ||
                          (ex.kind == ExpectedVersion::Kind::kNoStream && current == 0) ||
                          (ex.kind == ExpectedVersion::Kind::kExactly && current == ex.version);
  if (!expectedOk) {
    const std::string want = ex.kind == ExpectedVersion::Kind::kNoStream
                                 ? std::string("no stream")
                                 : "version " + std::to_string(ex.version);
    return Error{"E_VERSION_CONFLICT", "stream " + r.streamId + " is at version " +
                                           std::to_string(current) + ", expected " + want};
  }

  Head h = b.head;
  h.time = std::max(h.time, now());  // one time for the request's events
  if (r.payloads.size() >= EncodePipeline::kMinEvents) {
    b.deferred.push_back(
        Batch::Deferred{b.pending.size(), b.records.size(), h.sequence + 1, current + 1, h.time});
    for (const auto& payload : r.payloads) b.bytes += payload.size() * sizeof(capnp::word);
    h.sequence += r.payloads.size();
    b.chainKnown = false;
  } else {
    const size_t blocks = b.blocks.size(), records = b.records.size(), bytes = b.bytes,
                 sealed = b.sealed;
    const Hash sealedHash = b.sealedHash;
    try {
      for (size_t i = 0; i < r.payloads.size(); ++i) {
        size_t block = 0, at = 0;
        const auto layout =
            encodeEvent(r, r.payloads[i], h.sequence + 1, current + 1 + i, h.time, [&](size_t n) {
              const size_t words = n / sizeof(capnp::word);
              if (b.blocks.empty() || b.blocks.back().capacity() - b.blocks.back().size() < words) {
                b.blocks.emplace_back().reserve(std::max(kBlockWords, words));
              }
              block = b.blocks.size() - 1;
              at = b.blocks.back().size();
              b.blocks.back().resize(at + words);
              return reinterpret_cast<uint8_t*>(b.blocks.back().data() + at);
            });
        b.records.push_back(Batch::Record{block, at, layout});
        b.bytes += layout.bytes;
        h.sequence += 1;
        if (b.chainKnown) {
          h.hash = seal(reinterpret_cast<uint8_t*>(b.blocks[block].data() + at), layout, h.hash);
          b.sealed = b.records.size();
          b.sealedHash = h.hash;
        }
      }
    } catch (const kj::Exception& e) {
      // The payloads were checked on the caller's thread, so only a bug gets here. Nothing of
      // the request stays staged.
      b.blocks.resize(blocks);
      b.records.resize(records);
      b.bytes = bytes;
      b.sealed = sealed;
      b.sealedHash = sealedHash;
      return Error{
          "E_INVALID_ARGUMENT",
          std::string("an event of the request cannot be encoded: ") + e.getDescription().cStr()};
    }
  }
  AppendResult result{b.head.sequence + 1, h.sequence, current + r.payloads.size(), false};
  b.streams.add(r.streamId, current + 1, result.firstSequence, r.payloads.size());
  if (!r.idempotencyKey.empty()) b.keys.emplace(r.idempotencyKey, result);
  b.head = h;
  return result;
}

void EventLog::writerLoop() {
  Head committed;
  {
    std::lock_guard lk(mutex_);
    committed = head_;
  }
  for (;;) {
    std::unique_ptr<Batch> batch;
    {
      std::unique_lock lk(stageMutex_);
      stageCv_.wait(lk, [&] { return !open_->pending.empty() || stagerDone_; });
      if (open_->pending.empty()) break;  // the stager is done and everything was stored
      batch = std::move(open_);
      open_ = std::make_unique<Batch>(batch->head, batch->chainKnown);
      inflight_ = batch.get();
    }
    stageCv_.notify_all();  // room for the stager

    bool indexWritten = false;
    Hash hash = committed.hash;
    Status s = batch->empty() ? Status(Ok{}) : store(*batch, &hash, &indexWritten);
    std::unique_ptr<Batch> alsoFailed;
    {
      std::lock_guard lk(stageMutex_);
      if (s.ok()) {
        if (indexWritten) {
          tail_->clear();
        } else {
          tail_->merge(batch->streams);
        }
        committed = Head{batch->head.sequence, hash, batch->head.time};
        // The stager can seal again once it knows the hash its batch starts from.
        if (!open_->chainKnown && open_->empty()) open_->base = open_->head = committed;
        open_->chainKnown = open_->chainKnown || open_->empty();
      } else {
        // What was staged on top of the failed batch has void sequences and chain: it fails with
        // the same error (nothing of it is written), and staging starts again from the
        // committed log.
        if (!open_->pending.empty()) alsoFailed = std::move(open_);
        open_ = std::make_unique<Batch>(committed, true);
      }
      inflight_ = nullptr;
    }
    if (alsoFailed) stageCv_.notify_all();

    const bool wrote = s.ok() && !batch->empty();
    uint64_t last;
    {
      std::lock_guard lk(mutex_);
      if (wrote) {
        stats_.commits += 1;
        stats_.events += committed.sequence - head_.sequence;
        head_ = committed;
      }
      last = head_.sequence;
    }
    if (wrote) commitCv_.notify_all();
    auto complete = [&](std::unique_ptr<Batch> b, bool committedNow) {
      Completion c;
      c.batch = std::move(b);
      if (!s.ok()) c.failed = s.error();
      c.committed = committedNow;
      c.lastSequence = last;
      return c;
    };
    {
      std::lock_guard lk(completionMutex_);
      completions_.push_back(complete(std::move(batch), wrote));
      if (alsoFailed) completions_.push_back(complete(std::move(alsoFailed), false));
    }
    completionCv_.notify_one();
  }
}

Status EventLog::store(const Batch& batch, Hash* hash, bool* indexWritten) {
  const Hash base = *hash;
  if (batch.sealed > 0 && batch.base.hash != base) {  // never: the stager sealed on another head
    return Error{"E_STORAGE", "internal error: a batch was chained to another head; not written"};
  }
  for (int attempt = 0;; ++attempt) {
    *indexWritten = false;
    MDB_txn* txn = nullptr;
    int rc = mdb_txn_begin(env_, nullptr, 0, &txn);
    if (rc != MDB_SUCCESS) return storageError(rc, "starting a write transaction");
    try {
      // The chain after the records the stager sealed.
      Hash h = batch.sealed > 0 ? batch.sealedHash : base;
      uint64_t sequence = batch.base.sequence;
      auto put = [&](const uint8_t* record, const RecordLayout& layout, bool sealed) {
        auto key = encodeU64(++sequence);
        MDB_val k = val(key.data(), key.size()), d{layout.bytes, nullptr};
        check(mdb_put(txn, eventsDbi_, &k, &d, MDB_APPEND | MDB_RESERVE));
        auto* out = static_cast<uint8_t*>(d.mv_data);
        std::memcpy(out, record, layout.bytes);
        if (!sealed) h = seal(out, layout, h);
      };
      size_t next = 0;  // in batch.deferred
      for (size_t i = 0; i <= batch.records.size(); ++i) {
        for (; next < batch.deferred.size() && batch.deferred[next].beforeRecord == i; ++next) {
          const auto& d = batch.deferred[next];
          EncodePipeline pipeline(batch.pending[d.pending].request, d.firstSequence, d.firstVersion,
                                  d.time);
          while (auto chunk = pipeline.next()) {
            for (const auto& [at, layout] : chunk->records) {
              put(reinterpret_cast<const uint8_t*>(chunk->words.data() + at), layout, false);
            }
          }
        }
        if (i == batch.records.size()) break;
        const auto& r = batch.records[i];
        put(reinterpret_cast<const uint8_t*>(batch.blocks[r.block].data() + r.offset), r.layout,
            i < batch.sealed);
      }
      for (const auto& [key, result] : batch.keys) {
        auto v = encodeResult(result);
        MDB_val k = val(key), d = val(v.data(), v.size());
        check(mdb_put(txn, idempotencyDbi_, &k, &d, 0));
      }
      uint8_t meta[8 + kHashSize];
      auto s = encodeU64(batch.head.sequence);
      std::memcpy(meta, s.data(), 8);
      std::memcpy(meta + 8, h.data(), kHashSize);
      MDB_val mk = val(kMainHead), md = val(meta, sizeof meta);
      check(mdb_put(txn, mainDbi_, &mk, &md, 0));
      if (tail_->events + batch.streams.events >= options_.streamIndexEvery) {
        writeStreamIndex(txn, batch.streams, batch.head.sequence);
        *indexWritten = true;
      }
      *hash = h;
    } catch (const LmdbFailure& f) {
      mdb_txn_abort(txn);
      if (f.rc == MDB_MAP_FULL && attempt < 40) {
        if (auto g = growMap(); !g.ok()) return g.error();
        continue;
      }
      return writeError(f.rc, "writing events");
    }
    rc = mdb_txn_commit(txn);  // writes and fsyncs; frees txn whatever the outcome
    if (rc == MDB_MAP_FULL && attempt < 40) {
      if (auto g = growMap(); !g.ok()) return g.error();
      continue;
    }
    if (rc != MDB_SUCCESS) return writeError(rc, "committing events");
    return Ok{};
  }
}

void EventLog::writeStreamIndex(MDB_txn* txn, const StreamTail& staged, uint64_t upTo) {
  StreamTail all = *tail_;
  all.merge(staged);
  // In key order: LMDB then fills each page once, front to back.
  std::vector<std::pair<std::string, const StreamRun*>> entries;
  entries.reserve(all.streams.size());
  for (const auto& [id, runs] : all.streams) {
    for (const auto& run : runs) entries.emplace_back(streamKey(id, run.firstVersion), &run);
  }
  std::sort(entries.begin(), entries.end(),
            [](const auto& a, const auto& b) { return a.first < b.first; });
  for (const auto& [key, run] : entries) {
    uint8_t value[16];
    auto seq = encodeU64(run->firstSequence), count = encodeU64(run->count);
    std::memcpy(value, seq.data(), 8);
    std::memcpy(value + 8, count.data(), 8);
    MDB_val k = val(key), d = val(value, run->count == 1 ? 8 : 16);
    check(mdb_put(txn, streamsDbi_, &k, &d, MDB_NOOVERWRITE));
  }
  auto indexed = encodeU64(upTo);
  MDB_val ik = val(kMetaIndexed), iv = val(indexed.data(), indexed.size());
  check(mdb_put(txn, metaDbi_, &ik, &iv, 0));
}

}  // namespace imaged::store
