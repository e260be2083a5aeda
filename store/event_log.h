// The event log: an append-only, hash-chained sequence of Cap'n Proto `Event` messages in an
// LMDB environment. It knows bytes, sequence numbers, streams and hashes, not images.
//
// Guarantees (a process crash or power loss at any moment included):
//  - Durable on return. An append's callback runs (and `append` returns) only after the
//    transaction holding its events has been committed and fsynced. An acknowledged event is
//    never lost; an unacknowledged one is either wholly present or wholly absent, with its batch.
//  - Total order. Sequence numbers are global, 1-based, strictly increasing and gapless. Within a
//    stream, versions are 1-based and gapless. Event time (set by the store) never decreases.
//  - Atomic requests. The events of one AppendRequest are committed together or not at all; a
//    failed request (version conflict, invalid input, I/O error) writes nothing.
//  - Idempotent requests. A request whose idempotency key was already committed writes nothing and
//    returns the first request's result with `duplicate = true`.
//  - Chained. Every event carries SHA-256(previous hash ‖ its own bytes with the hash zeroed); the
//    head hash is kept beside them (docs/storage.md). verify() names the first event that does not
//    match.
//  - Snapshot reads. A ReadTxn sees a consistent prefix of the log, in this process or in another
//    one that opened the same directory read-only, and never blocks the writer.
//
// Threads: appends from any thread are queued. A stager thread checks each queued request
// (idempotency key, expected version), gives its events sequence numbers, encodes them and
// chains their hashes, into the open batch. One writer thread owns the write transaction: it
// takes the whole open batch, stores it and commits, one fsync for all of it (group commit),
// while the stager builds the next batch on top of the one being committed. An answer thread
// runs the callbacks, so that waking callers overlaps the next commit. Every method may be called
// from any thread.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <capnp/common.h>
#include <kj/array.h>

#include "common/result.h"
#include "schema/events.capnp.h"
#include "store/codec.h"

struct MDB_env;
struct MDB_txn;

namespace imaged::store {

// The newest on-disk format this code reads and writes. A store created with a newer one is
// refused (E_STORE_FORMAT), never rewritten. A format-1 or format-2 store opened for writing is
// upgraded to 3 in place (docs/storage.md, "Versions of the format").
inline constexpr uint64_t kFormatVersion = 3;

// Limits on what a caller may append; larger input fails with E_INVALID_ARGUMENT.
inline constexpr size_t kMaxStreamIdBytes = 256;
inline constexpr size_t kMaxIdempotencyKeyBytes = 256;
inline constexpr size_t kMaxEventBytes = 16 << 20;

struct ExpectedVersion {
  enum class Kind { kAny, kNoStream, kExactly };
  Kind kind = Kind::kAny;
  uint64_t version = 0;

  static ExpectedVersion any() { return {Kind::kAny, 0}; }
  // The stream must not exist yet (same as exactly(0)).
  static ExpectedVersion noStream() { return {Kind::kNoStream, 0}; }
  // The stream's last version must be `v` (0: no stream yet).
  static ExpectedVersion exactly(uint64_t v) { return {Kind::kExactly, v}; }
};

struct Actor {
  std::string tenant;
  uint32_t uid = 0;
  std::string client;
};

// One batch of events for one stream.
struct AppendRequest {
  std::string streamId;  // non-empty, no NUL byte, at most kMaxStreamIdBytes
  ExpectedVersion expected;
  std::string idempotencyKey;  // "" = none; at most kMaxIdempotencyKeyBytes
  Actor actor;
  std::string correlationId;
  // One flat Cap'n Proto message per event, each with a schema::Payload root. At least one.
  std::vector<kj::Array<capnp::word>> payloads;
};

struct AppendResult {
  uint64_t firstSequence = 0;
  uint64_t lastSequence = 0;
  uint64_t streamVersion = 0;  // the stream's version after this request (its last event's)
  bool duplicate = false;      // the idempotency key was used before; nothing was written

  bool operator==(const AppendResult&) const = default;
};

// Called on the store's answer thread once the request's outcome is durable (or has failed),
// in commit order. Keep it short (post the result to another thread): later answers wait for it.
using AppendCallback = std::function<void(Result<AppendResult>)>;

// A stored event inside a ReadTxn: zero-copy view into LMDB's map, valid until the ReadTxn ends.
class EventRef {
 public:
  EventRef(uint64_t sequence, kj::ArrayPtr<const capnp::word> words)
      : sequence_(sequence), words_(words) {}
  uint64_t sequence() const { return sequence_; }  // from the key
  // The stored message, exactly as hashed.
  kj::ArrayPtr<const capnp::word> words() const { return words_; }

 private:
  uint64_t sequence_;
  kj::ArrayPtr<const capnp::word> words_;
};

// A copy of a stored event that outlives any transaction (what subscriptions deliver).
struct StoredEvent {
  uint64_t sequence = 0;
  kj::Array<capnp::word> words;
};

class EventLog;
// The streams of the events not yet in the `streams` index (docs/storage.md): which versions of
// which stream lie at which sequences. Defined in event_log.cc.
struct StreamTail;

// A consistent snapshot of the log. Not copyable; end it soon (it pins the pages it sees and,
// in this process, delays map growth). Use from one thread at a time.
class ReadTxn {
 public:
  ~ReadTxn();
  ReadTxn(const ReadTxn&) = delete;
  ReadTxn& operator=(const ReadTxn&) = delete;

  uint64_t lastSequence() const { return lastSequence_; }
  const Hash& headHash() const { return head_; }

  // The stream's last version in this snapshot (0: no such stream).
  uint64_t streamVersion(std::string_view streamId) const;

  // Calls fn for each event with sequence >= from, in order, until fn returns false. The words
  // are zero-copy when LMDB's value is word-aligned (it is for every record the store writes)
  // and copied otherwise.
  Status forEach(uint64_t from, const std::function<bool(const EventRef&)>& fn) const;

  // Calls fn for each event of the stream with version >= fromVersion, in version order.
  Status forEachInStream(std::string_view streamId, uint64_t fromVersion,
                         const std::function<bool(const EventRef&)>& fn) const;

  // The event at `sequence`, copied; E_NOT_FOUND when there is none.
  Result<StoredEvent> get(uint64_t sequence) const;

 private:
  friend class EventLog;
  ReadTxn(const EventLog& log, std::shared_lock<std::shared_mutex> lock, MDB_txn* txn);
  Status visit(uint64_t sequence, const void* data, size_t size,
               const std::function<bool(const EventRef&)>& fn, bool* more) const;
  // The events after indexed_, read on first use.
  Result<const StreamTail*> tail() const;

  const EventLog& log_;
  std::shared_lock<std::shared_mutex> resizeLock_;
  MDB_txn* txn_;
  uint64_t lastSequence_ = 0;
  uint64_t indexed_ = 0;  // events up to here are in the streams index
  Hash head_{};
  mutable std::unique_ptr<StreamTail> tail_;
};

struct VerifyReport {
  uint64_t events = 0;  // events checked and found intact
  Hash head{};          // hash of the last intact event
  bool intact = true;
  uint64_t firstBad = 0;  // sequence of the first bad event (or of the gap) when !intact
  std::string problem;    // what is wrong there, for people
  // The `streams` index, checked when the records are intact: every event up to meta.indexed
  // lies in exactly one run, under its own stream and version, and no run names anything else.
  bool indexIntact = true;
  uint64_t indexed = 0;      // events the index covers
  std::string indexProblem;  // the first thing wrong with it, for people
};

class EventLog {
 public:
  struct Options {
    std::string path;       // a directory; created (with its parents) when writable and missing
    bool readOnly = false;  // for audit tooling: never writes, may run beside a writer
    size_t initialMapSize = size_t{1} << 30;  // virtual; the map doubles whenever it is full
    unsigned maxReaders = 512;
    // Source of event times (ns since the epoch); the store keeps them non-decreasing.
    std::function<int64_t()> clock;
    // The `streams` index is written once this many events are not in it yet (and they are
    // kept in memory until then): one index write for many appends, instead of a page of the
    // index per stream per commit. At most this many events are read again at open.
    uint64_t streamIndexEvery = 4096;
  };

  // Opens (or, when writable, creates) the log. Fails with E_STORE_FORMAT for a store written by
  // a newer format, E_STORE_CORRUPT when the stored head does not match the last event,
  // E_STORAGE for I/O and permission errors, E_NOT_FOUND for a read-only open of no store.
  static Result<std::unique_ptr<EventLog>> open(Options options);

  // Drains the queue (every queued append is committed and answered), then closes.
  ~EventLog();
  EventLog(const EventLog&) = delete;
  EventLog& operator=(const EventLog&) = delete;

  // Queues a request; `done` runs on the answer thread after the outcome is durable. Errors:
  // E_VERSION_CONFLICT, E_INVALID_ARGUMENT, E_STORAGE_FULL (disk full), E_STORAGE (I/O error),
  // E_READ_ONLY. A failed request wrote nothing.
  void appendAsync(AppendRequest request, AppendCallback done);

  // appendAsync, waiting for the outcome.
  Result<AppendResult> append(AppendRequest request);

  // A snapshot for reading. Fails only on an LMDB error (E_STORAGE).
  Result<std::unique_ptr<ReadTxn>> read() const;

  // The last committed sequence number (0 for an empty log). In a read-only log, as of the last
  // read() or waitForSequence().
  uint64_t lastSequence() const;

  // Blocks until lastSequence() > after, the timeout passes, or the log closes; returns
  // lastSequence(). A read-only log polls the file, as it hears no commits.
  uint64_t waitForSequence(uint64_t after, std::chrono::milliseconds timeout) const;

  // Called on the answer thread after every commit, once its appends are answered, with the new
  // last sequence. One listener; set it before appending. Keep it short.
  void setCommitListener(std::function<void(uint64_t lastSequence)> listener);

  // Walks the whole log in one snapshot: sequence keys without gaps, each record decodes, its
  // sequence matches its key, its prevHash is the previous hash, its hash matches its bytes, and
  // the stored head is the last hash. Then the streams index against the records.
  Result<VerifyReport> verify() const;

  // The current map size in bytes (grows on demand).
  size_t mapSize() const;

  // Frees the reader slots of processes that died inside a read transaction (done at open and
  // when the slots run out); returns how many it freed.
  int clearStaleReaders() const;

  struct Stats {
    uint64_t commits = 0;  // write transactions committed by this process
    uint64_t events = 0;   // events they wrote
  };
  Stats stats() const;
  const std::string& path() const { return options_.path; }
  bool readOnly() const { return options_.readOnly; }

 private:
  friend class ReadTxn;
  struct Pending {
    AppendRequest request;
    AppendCallback done;
  };
  struct Head {
    uint64_t sequence = 0;
    Hash hash{};
    int64_t time = 0;
  };

  explicit EventLog(Options options);
  Status openEnvironment();
  Status loadHead();
  // Reads the events after the streams index into tail_ (writable open).
  Status loadTail();
  // Requests staged by the stager, stored by the writer; defined in event_log.cc.
  struct Batch;
  class Snapshot;
  // The outcome of one transaction, answered by the answer thread so that waking callers
  // overlaps the writer's next transaction. That thread frees the batch too.
  struct Completion {
    std::unique_ptr<Batch> batch;
    std::optional<Error> failed;  // why nothing of the batch was written
    bool committed = false;       // events were written
    uint64_t lastSequence = 0;
  };

  void stagerLoop();
  void writerLoop();
  void answerLoop();
  // Stages one request into open_ (stageMutex_ held): its outcome, or its events added.
  Result<AppendResult> stage(const AppendRequest& r, Snapshot& snapshot);
  // Stores a staged batch and commits it: Ok, or why nothing of it was written. `hash` is the
  // committed head's hash, and then the batch's last.
  Status store(const Batch& batch, Hash* hash, bool* indexWritten);
  // What verify() learnt of an event up to meta.indexed: its stream (hashed) and version (0
  // once a run of the index has named it).
  struct IndexedEvent {
    size_t stream;
    uint64_t version;
  };
  void verifyStreamIndex(const ReadTxn& txn, std::vector<IndexedEvent>& mustIndex,
                         VerifyReport* report) const;
  // Writes tail_ and `staged` into the streams index, and meta.indexed = `upTo`.
  void writeStreamIndex(MDB_txn* txn, const StreamTail& staged, uint64_t upTo);
  Status growMap();
  Error writeError(int rc, std::string_view what) const;
  int64_t now() const;

  Options options_;
  MDB_env* env_ = nullptr;
  unsigned eventsDbi_ = 0, streamsDbi_ = 0, idempotencyDbi_ = 0, metaDbi_ = 0, mainDbi_ = 0;

  // Held shared by every ReadTxn of this process, exclusively while the map is resized
  // (LMDB requires no live transaction in the process then).
  mutable std::shared_mutex resizeMutex_;

  mutable std::mutex mutex_;                  // guards the fields below
  mutable std::condition_variable queueCv_;   // the stager waits for work
  mutable std::condition_variable commitCv_;  // waitForSequence waits for commits
  std::vector<Pending> queue_;
  bool closing_ = false;
  mutable Head head_;  // last committed (read-only: last seen)
  Stats stats_;
  std::function<void(uint64_t)> commitListener_;

  std::mutex completionMutex_;  // guards the two fields below
  std::condition_variable completionCv_;
  std::deque<Completion> completions_;
  bool writerDone_ = false;

  // Between the stager and the writer. Guards the fields below; the stager holds it while it
  // stages what it took from the queue, so that a batch is taken with whole queue drains.
  std::mutex stageMutex_;
  std::condition_variable stageCv_;  // the writer waits for a batch, the stager for room
  std::unique_ptr<Batch> open_;      // being staged, on top of inflight_ (or the committed log)
  const Batch* inflight_ = nullptr;  // taken by the writer, not yet committed (or failed)
  bool stagerDone_ = false;
  // The committed events not yet in the streams index, and how many. Written by the writer
  // only (stageMutex_ held), read by the stager under stageMutex_.
  std::unique_ptr<StreamTail> tail_;

  std::thread stager_;
  std::thread writer_;
  std::thread answerer_;
};

}  // namespace imaged::store
