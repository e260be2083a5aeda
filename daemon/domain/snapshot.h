// Snapshots of the projection, so that start-up and replay apply only the events after the
// newest snapshot instead of the whole log.
//
// A snapshot is a cache, never a source of truth. It records the sequence it was taken at and
// the log's hash of that event; it is used only while the log still has that event with that
// hash, and any snapshot that does not match (the log was replaced, restored or damaged), does
// not decode, or fails its own checksum is ignored with a warning: the state is then replayed
// from the log, which costs time and nothing else.
//
// Files: <dir>/projection-<sequence, 20 digits>.snap, each
//   "imaged-snapshot\n" (16 bytes) ‖ SHA-256 of the message (32 bytes) ‖ a flat Cap'n Proto
//   message whose root is schema/snapshot.capnp's ProjectionSnapshot.
// Written to a temporary name, fsynced, then renamed, so a crash leaves whole files only.
#pragma once

#include <capnp/common.h>
#include <kj/array.h>

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "common/result.h"
#include "daemon/domain/projection.h"
#include "store/event_log.h"

namespace imaged::domain {

// The projection as a snapshot message; `eventHash` is the log's hash of the last event it
// applied.
kj::Array<capnp::word> encodeSnapshot(const Projection& projection, const store::Hash& eventHash);

// Writes a snapshot of `projection` (whose last applied event has `eventHash` in the log) into
// `dir` (created if needed), durably, and removes older snapshots beyond the newest `keep`.
// Encoding a large projection takes a while (about 0.6 s for 100,000 images): the daemon does
// it on the loop thread only at shutdown, and otherwise through takeSnapshot() on a worker.
Status writeSnapshot(const std::string& dir, const Projection& projection,
                     const store::Hash& eventHash, size_t keep = 2);

// A snapshot at `sequence` computed from the files alone, on the calling thread: the newest
// usable snapshot in `dir` before it, then the log's events up to it, as audit replay does; so
// the thread that owns the live projection never waits for it. Returns the sequence written.
Result<uint64_t> takeSnapshot(const std::string& dir, const store::EventLog& log, uint64_t sequence,
                              const std::function<void(const std::string&)>& warn);

// Applies the log's events after the projection's position, in order, up to `until` and
// stopping before the first event later than `maxTime` (what replay to a point in time means).
Status applyLog(const store::ReadTxn& txn, Projection& state, uint64_t until = UINT64_MAX,
                int64_t maxTime = INT64_MAX);

// The hash the log holds for the event at `sequence`.
Result<store::Hash> eventHashAt(const store::ReadTxn& txn, uint64_t sequence);

struct LoadedSnapshot {
  Projection projection;
  std::string path;
};

// The newest snapshot in `dir` that matches the log seen by `txn` and lies within the limits:
// taken at or before `maxSequence`, and with no event later than `maxTime`. Snapshots beyond the
// limits are passed over silently; unusable ones are passed to `warn` with the reason, and the
// next older one is tried. Reads only.
std::optional<LoadedSnapshot> loadSnapshot(const std::string& dir, const store::ReadTxn& txn,
                                           uint64_t maxSequence, int64_t maxTime,
                                           const std::function<void(const std::string&)>& warn);

// Removes what a writer killed mid-write left in `dir` (temporary files). Only for the one
// process that writes snapshots, before it writes any.
void removeSnapshotLeftovers(const std::string& dir);

// Every snapshot file in `dir`, newest first, checked against the log as loadSnapshot() checks
// it (for audit tools: which snapshots would be used and why others would not).
struct SnapshotCheck {
  std::string path;
  uint64_t sequence = 0;
  Status status;  // Ok when it matches the log
};
std::vector<SnapshotCheck> checkSnapshots(const std::string& dir, const store::ReadTxn& txn);

}  // namespace imaged::domain
