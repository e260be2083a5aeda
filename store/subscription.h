// A subscription delivers every event from a position on: first those already stored, then each
// one as it is committed, in sequence order, with no gap and no duplicate.
//
// It is pull-based, which is its back-pressure: the subscriber takes up to `max` events when it
// is ready for them and nothing is queued on its behalf, so a slow subscriber costs the writer
// and the other subscribers nothing; it simply reads older pages of the log's file.
#pragma once

#include <chrono>
#include <cstdint>
#include <vector>

#include "common/result.h"
#include "store/event_log.h"

namespace imaged::store {

class Subscription {
 public:
  // `log` must outlive the subscription. `fromSequence` 0 or 1: from the first event.
  Subscription(const EventLog& log, uint64_t fromSequence)
      : log_(log), next_(fromSequence == 0 ? 1 : fromSequence) {}

  // Up to `max` events starting at position(), copied out of the log. When none is stored yet,
  // waits up to `wait` for a commit; an empty vector means the wait passed.
  Result<std::vector<StoredEvent>> next(size_t max, std::chrono::milliseconds wait);

  // The sequence number of the next event it will deliver.
  uint64_t position() const { return next_; }

 private:
  const EventLog& log_;
  uint64_t next_;
};

}  // namespace imaged::store
